"""Invertible transforms with exact log-determinants.

Direction convention, for every transform here: `forward` maps the base side to the sample side,
y = f(x), and returns `(y, log_abs_det)` with log_abs_det = log|det df/dx| summed over the event dim,
shape = batch shape. `inverse` (where it exists) returns `(x, log|det df^-1/dy|)`. So a density pushed
forward is log p(y) = log p_base(x) - log_abs_det, and a density pulled back (a flow prior) is
log p(y) = log p_base(f^-1(y)) + log|det df^-1/dy|.

- `IAFStep` (Kingma et al. 2016, Eq. 14): parallel forward (sampling and scoring one's own samples),
  used on the posterior side.
- `MAFLayer`: the same MADE, affine, with a parallel inverse (density evaluation) and a sequential
  forward (sampling), used for the flow prior.
- `planar` (Rezende & Mohamed 2015): forward only (no closed-form inverse), so posterior side only.
- Sylvester flows and Householder reflections: `vae_core.flows.sylvester`.
"""

from __future__ import annotations

from vae_core.flows.autoregressive import IAFStep, MAFLayer, alternating_orders
from vae_core.flows.planar import planar, planar_constrain

__all__ = ["IAFStep", "MAFLayer", "alternating_orders", "planar", "planar_constrain"]
