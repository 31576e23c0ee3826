"""Planar-flow posterior (Rezende & Mohamed 2015), every flow amortized."""

from __future__ import annotations

import torch

from vae_core.config import ModelConfig
from vae_core.flows import planar
from vae_core.posteriors.base import FlowPosterior


class PlanarPosterior(FlowPosterior):
    """Gaussian followed by `steps` planar flows whose (u, w, b) are amortized: read from the encoder context."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.dim, self.n_steps = dim, steps
        self.context_dim = steps * (2 * dim + 1)

    @property
    def floats_per_sample(self) -> int:
        return 2 * self.n_steps * self.dim

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "PlanarPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps)

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = z.new_zeros(z.shape[:-1])
        for params in context.chunk(self.n_steps, dim=-1):  # [B, 2D + 1] each
            u, w, b = params.split([self.dim, self.dim, 1], dim=-1)
            z, log_abs_det = planar(z, u, w, b.squeeze(-1))
            total = total + log_abs_det
        return z, total
