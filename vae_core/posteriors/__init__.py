"""Posterior families q(z|x). Each turns the encoder's output (loc, scale, context) and standard-normal noise
into reparameterized samples and their log-density: `from_noise(loc, scale, context, eps [k, B, D]) ->
(z [k, B, D], log_q [k, B])`; `rsample(..., k, generator)` draws the noise and calls it.

Every family starts from the encoder's diagonal Gaussian; flows then push its samples forward and subtract
their log-determinants (see `vae_core.flows` for the convention). A family declares how many extra encoder
outputs (`context_dim`) it consumes. A new family is one module here and one
entry in `POSTERIORS`; the registry (`vae_core.registry`) resolves names.
"""

from vae_core.flows.zuko import FLOWS as ZUKO_FLOWS
from vae_core.posteriors.base import FlowPosterior, MeanFieldPosterior, Posterior, gaussian_from_noise, standard_normal
from vae_core.posteriors.householder import HouseholderPosterior
from vae_core.posteriors.iaf import IAFPosterior
from vae_core.posteriors.planar import PlanarPosterior
from vae_core.posteriors.sylvester import (HouseholderSylvesterPosterior, OrthogonalSylvesterPosterior,
                                           SylvesterPosterior, TriangularSylvesterPosterior)
from vae_core.posteriors.zuko import ZukoPosterior

POSTERIORS: dict[str, type[Posterior]] = {
    "mean-field": MeanFieldPosterior,
    "iaf": IAFPosterior,
    "planar": PlanarPosterior,
    "householder": HouseholderPosterior,
    "sylvester-orthogonal": OrthogonalSylvesterPosterior,
    "sylvester-householder": HouseholderSylvesterPosterior,
    "sylvester-triangular": TriangularSylvesterPosterior,
    **{name: ZukoPosterior.of(flow) for name, flow in ZUKO_FLOWS.items()},
}

__all__ = ["POSTERIORS", "Posterior", "MeanFieldPosterior", "FlowPosterior", "IAFPosterior", "PlanarPosterior",
           "HouseholderPosterior", "SylvesterPosterior", "OrthogonalSylvesterPosterior",
           "HouseholderSylvesterPosterior", "TriangularSylvesterPosterior", "ZukoPosterior", "gaussian_from_noise",
           "standard_normal"]
