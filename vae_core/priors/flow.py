"""The MAF flow prior over N(0, I)."""

from __future__ import annotations

import torch
import torch.nn as nn

from vae_core.config import ModelConfig
from vae_core.distributions import std_normal_log_prob
from vae_core.flows import MAFLayer, alternating_orders


class FlowPrior(nn.Module):
    """MAF over N(0, I): z = f_L(...f_1(u)); log p(z) = log N(f^-1(z)) + log|det df^-1/dz| (parallel)."""

    def __init__(self, dim: int, layers: int, hidden: int):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(MAFLayer(dim, hidden, order) for order in alternating_orders(dim, layers))

    @classmethod
    def from_config(cls, cfg: ModelConfig, encoder: nn.Module) -> "FlowPrior":
        return cls(cfg.latent_dim, cfg.prior_flow_steps, cfg.made_hidden)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., D] -> (u, log|det du/dz| [...])."""
        total = z.new_zeros(z.shape[:-1])
        for layer in reversed(self.layers):
            z, log_abs_det = layer.inverse(z)
            total = total + log_abs_det
        return z, total

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u [..., D] -> (z, log|det dz/du| [...])."""
        total = u.new_zeros(u.shape[:-1])
        for layer in self.layers:
            u, log_abs_det = layer(u)
            total = total + log_abs_det
        return u, total

    @property
    def floats_per_sample(self) -> int:
        return sum(layer.made.floats_per_sample for layer in self.layers)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        u, log_abs_det = self.inverse(z)
        return std_normal_log_prob(u) + log_abs_det

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.layers[0].made.layers[0].weight
        u = torch.randn((n, self.dim), generator=generator, device=p.device, dtype=p.dtype)
        with torch.no_grad():
            return self(u)[0]
