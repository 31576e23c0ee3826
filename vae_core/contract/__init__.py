"""The family contract: the checks a posterior family or a prior must pass for its numbers to mean anything.

One implementation, used by the test suite (tests/test_contract.py runs it on every registered built-in) and by
`vaebench check posterior|prior NAME` (any name the registry resolves). Each check is a `Check`: what is
checked, the measured number, the bound it is held to, and pass (True), fail (False) or a note (None: not run,
not applicable, cannot be compiled).

- posterior: shapes; dtype and device follow the inputs; seeded draws reproducible and `from_noise` pure;
  log q = log N(eps) - log|det dz/deps| with the Jacobian by autograd (float64: for a flow, its log-det);
  q(z|x) integrates to 1 on a 2-D latent (quadrature); E_q[r/q] = 1 on a 6-D latent;
- prior: shapes; dtype and device; seeded draws; p integrates to 1 on a 2-D grid; samples follow log_prob
  (moments and histogram); E_r[p/r] = 1 on a 6-D latent (r: 1/5 `sample`, 4/5 a Gaussian twice as wide); for a flow prior (one with `inverse`), log|det| of
  forward and inverse vs autograd and the round trip;
- both, through the whole VAE: IW log p(x) >= ELBO on the same draws; 3 runs stacked with vmap = each alone;
  compiled = eager (optional: `compile=True`, ~10-30 s on a CPU), or a "cannot be compiled" note.

The checks run on tiny models (data_dim 4, hidden [16], latent_dim 2, or 6 for E[r/q]) in float64, every
parameter perturbed by seeded noise, so that no check passes only because a family is at its near-identity
initialisation. For E_q[r/q], r is a diagonal Gaussian 0.7 x as wide as q's draws, so r/q is bounded.
"""

from vae_core.contract.families import posterior_checks, prior_checks
from vae_core.contract.tools import (Check, grid, grid_mass, histogram_z_scores, logdet_errors, moment_errors,
                                     outer_mass, perturbed_model, ratio_mean)

CHECKS = {"posterior": posterior_checks, "prior": prior_checks}

__all__ = ["CHECKS", "Check", "posterior_checks", "prior_checks", "logdet_errors", "grid", "grid_mass",
           "outer_mass", "moment_errors", "histogram_z_scores", "ratio_mean", "perturbed_model"]
