"""IAF posterior (Kingma et al. 2016): the encoder's Gaussian through IAF steps conditioned on its context."""

from __future__ import annotations

import torch
import torch.nn as nn

from vae_core.config import ModelConfig
from vae_core.flows import IAFStep, alternating_orders
from vae_core.posteriors.base import FlowPosterior


class IAFPosterior(FlowPosterior):
    """Gaussian followed by `steps` IAF steps conditioned on the encoder context h, orderings alternating.

    h has latent_dim units (the reference protocol's encoder emits loc, scale and h, 3 x latent_dim).
    """

    def __init__(self, dim: int, steps: int, hidden: int, context_dim: int):
        super().__init__()
        self.context_dim = context_dim
        self.steps = nn.ModuleList(IAFStep(dim, hidden, context_dim, order)
                                   for order in alternating_orders(dim, steps))

    @property
    def floats_per_sample(self) -> int:
        return sum(step.made.floats_per_sample for step in self.steps)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "IAFPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps, cfg.made_hidden, context_dim=cfg.latent_dim)

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., B, D], context [B, C] -> (f(z), sum of log|det| [..., B])."""
        total = z.new_zeros(z.shape[:-1])
        for step in self.steps:
            z, log_abs_det = step(z, context)
            total = total + log_abs_det
        return z, total
