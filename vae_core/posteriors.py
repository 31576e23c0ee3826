"""Posterior families q(z|x). Each turns the encoder's output (loc, scale, context) into k reparameterized
samples and their log-density: `rsample(...) -> (z [k, B, D], log_q [k, B])`.

Every family starts from the encoder's diagonal Gaussian; flows then push its samples forward and subtract
their log-determinants (see `vae_core.flows` for the convention). A family declares how many extra encoder
outputs (`context_dim`) it consumes. Register a new family in `POSTERIORS`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vae_core.config import ModelConfig
from vae_core.distributions import std_normal_log_prob
from vae_core.flows import IAFStep, alternating_orders, planar


def gaussian_rsample(loc: torch.Tensor, scale: torch.Tensor, k: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """z = loc + scale * eps for k draws: loc, scale [B, D] -> (z [k, B, D], log N(z; loc, scale) [k, B]).

    The k draws are made one [B, D] block at a time: torch's vectorized `randn` gives different numbers for
    one [k1 + k2, ...] call than for a [k1, ...] call followed by a [k2, ...] call, so drawing per sample is
    what makes `VAE.iw_log_px` independent of its `chunk` size for a given generator seed.
    """
    eps = torch.stack([torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
                       for _ in range(k)])  # [k, B, D]
    return loc + scale * eps, std_normal_log_prob(eps) - scale.log().sum(-1)


class MeanFieldPosterior(nn.Module):
    """Diagonal Gaussian q(z|x) = N(loc, diag(scale^2))."""

    context_dim = 0

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "MeanFieldPosterior":
        return cls()

    def rsample(self, loc, scale, context, k, generator=None):
        return gaussian_rsample(loc, scale, k, generator)

    def center(self, loc, scale, context):
        return loc


class FlowPosterior(nn.Module):
    """The encoder's Gaussian pushed through `self.flow(z, context) -> (z', log|det|)`; subclasses define flow."""

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def rsample(self, loc, scale, context, k, generator=None):
        z, log_q = gaussian_rsample(loc, scale, k, generator)
        z, log_abs_det = self.flow(z, context)
        return z, log_q - log_abs_det

    def center(self, loc, scale, context):
        return self.flow(loc, context)[0]


class IAFPosterior(FlowPosterior):
    """Gaussian followed by `steps` IAF steps conditioned on the encoder context h, orderings alternating."""

    def __init__(self, dim: int, steps: int, hidden: int, context_dim: int):
        super().__init__()
        self.context_dim = context_dim
        self.steps = nn.ModuleList(IAFStep(dim, hidden, context_dim, order)
                                   for order in alternating_orders(dim, steps))

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "IAFPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps, cfg.made_hidden, context_dim=cfg.made_hidden)

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., B, D], context [B, C] -> (f(z), sum of log|det| [..., B])."""
        total = z.new_zeros(z.shape[:-1])
        for step in self.steps:
            z, log_abs_det = step(z, context)
            total = total + log_abs_det
        return z, total


class PlanarPosterior(FlowPosterior):
    """Gaussian followed by `steps` planar flows whose (u, w, b) are amortized: read from the encoder context."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.dim, self.n_steps = dim, steps
        self.context_dim = steps * (2 * dim + 1)

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


POSTERIORS: dict[str, type[nn.Module]] = {
    "mean-field": MeanFieldPosterior,
    "iaf": IAFPosterior,
    "planar": PlanarPosterior,
}
