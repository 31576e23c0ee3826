"""The standard-normal prior N(0, I)."""

from __future__ import annotations

import torch
import torch.nn as nn

from vae_core.config import ModelConfig
from vae_core.distributions import std_normal_log_prob


class StandardNormalPrior(nn.Module):
    """N(0, I)."""

    floats_per_sample = 0  # activations per latent sample in log_prob (sizes IW chunks)

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("anchor", torch.zeros(()), persistent=False)  # carries device and dtype

    @classmethod
    def from_config(cls, cfg: ModelConfig, encoder: nn.Module) -> "StandardNormalPrior":
        return cls(cfg.latent_dim)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return std_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, self.dim), generator=generator, device=self.anchor.device, dtype=self.anchor.dtype)
