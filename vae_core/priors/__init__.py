"""Priors p(z): each has an exact `log_prob(z) [..., D] -> [...]` and `sample(n, generator) -> [n, D]`.

A new prior is one module here and one entry in
`PRIORS`; `from_config(cfg, encoder)` receives the encoder so that priors defined
through it (VampPrior) can use its Gaussian heads.
"""

import torch.nn as nn

from vae_core.priors.flow import FlowPrior
from vae_core.priors.mixture import (MixturePrior, mixture_floats_per_sample, mixture_log_prob, mixture_log_prob_direct,
                                     mixture_sample)
from vae_core.priors.standard import StandardNormalPrior
from vae_core.priors.vamp import VampPrior

PRIORS: dict[str, type[nn.Module]] = {
    "standard": StandardNormalPrior,
    "mog": MixturePrior,
    "flow": FlowPrior,
    "vamp": VampPrior,
}

__all__ = ["PRIORS", "StandardNormalPrior", "MixturePrior", "FlowPrior", "VampPrior", "mixture_log_prob",
           "mixture_log_prob_direct", "mixture_floats_per_sample", "mixture_sample"]
