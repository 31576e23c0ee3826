"""Priors p(z): each has an exact `log_prob(z) [..., D] -> [...]` and `sample(n, generator) -> [n, D]`.

A new prior is one module here and one entry in
`PRIORS`; `from_config(cfg, encoder)` receives the encoder so that priors defined
through it (VampPrior) can use its Gaussian heads.
"""

import torch.nn as nn

from vae_core.flows.zuko import FLOWS as ZUKO_FLOWS
from vae_core.priors.flow import FlowPrior
from vae_core.priors.mixture import (MixturePrior, mixture_floats_per_sample, mixture_log_prob, mixture_log_prob_direct,
                                     mixture_sample)
from vae_core.priors.standard import StandardNormalPrior
from vae_core.priors.vamp import VampPrior
from vae_core.priors.zuko import ZukoPrior

PRIORS: dict[str, type[nn.Module]] = {
    "standard": StandardNormalPrior,
    "mog": MixturePrior,
    "flow": FlowPrior,
    "vamp": VampPrior,
    **{name: ZukoPrior.of(flow) for name, flow in ZUKO_FLOWS.items()},
}

__all__ = ["PRIORS", "StandardNormalPrior", "MixturePrior", "FlowPrior", "VampPrior", "mixture_log_prob",
           "mixture_log_prob_direct", "mixture_floats_per_sample", "mixture_sample", "ZukoPrior"]
