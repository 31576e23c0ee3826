"""Householder-flow posterior (Tomczak & Welling 2016): volume-preserving reflections, amortized."""

from __future__ import annotations

import torch

from vae_core.config import ModelConfig
from vae_core.flows.sylvester import householder_reflect
from vae_core.posteriors.base import FlowPosterior


class HouseholderPosterior(FlowPosterior):
    """Gaussian followed by `steps` Householder reflections (Tomczak & Welling 2016) whose vectors are read
    from the encoder context: volume-preserving, log|det| = 0, so q keeps the Gaussian's density at the
    pre-image but gains a full covariance."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.dim, self.n_steps = dim, steps
        self.context_dim = steps * dim

    @property
    def floats_per_sample(self) -> int:
        return 2 * self.n_steps * self.dim

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "HouseholderPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps)

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for v in context.chunk(self.n_steps, dim=-1):  # [B, D] each
            z = householder_reflect(z, v)
        return z, z.new_zeros(z.shape[:-1])
