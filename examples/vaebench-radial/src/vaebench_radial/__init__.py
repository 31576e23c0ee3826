"""Radial-flow posteriors for vaebench (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows",
section 4.1 and appendix A.2).

One radial step maps z -> z + beta h(alpha, r) (z - z0), r = |z - z0|, h = 1 / (alpha + r), with

    log|det| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(alpha, r) r),  h' = -1 / (alpha + r)^2.

It is invertible when beta >= -alpha (appendix A.2): alpha = softplus(a) > 0 and beta = -alpha + softplus(b).
The parameters (z0, a, b) of every step are amortized: read from the encoder's context, D + 2 numbers per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vae_core.posteriors import FlowPosterior

__all__ = ["RadialPosterior", "radial"]


def radial(z: torch.Tensor, z0: torch.Tensor, a: torch.Tensor, b: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """One radial step: z [..., B, D]; z0 [B, D], a and b [B] (unconstrained) -> (y [..., B, D], log|det| [..., B])."""
    alpha = F.softplus(a)  # > 0
    beta = -alpha + F.softplus(b)  # >= -alpha: invertible
    diff = z - z0
    r = diff.norm(dim=-1)  # [..., B]
    h = 1 / (alpha + r)
    beta_h = beta * h
    y = z + (beta_h).unsqueeze(-1) * diff
    dim = z.shape[-1]
    log_abs_det = (dim - 1) * torch.log1p(beta_h) + torch.log1p(beta_h - beta * r * h * h)
    return y, log_abs_det


class RadialPosterior(FlowPosterior):
    """The encoder's Gaussian followed by `steps` radial flows whose (z0, alpha, beta) come from the context."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.dim, self.n_steps = dim, steps
        self.context_dim = steps * (dim + 2)

    @property
    def floats_per_sample(self) -> int:
        return 2 * self.n_steps * self.dim

    @classmethod
    def from_config(cls, cfg) -> "RadialPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps)

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = z.new_zeros(z.shape[:-1])
        for params in context.chunk(self.n_steps, dim=-1):  # [B, D + 2] each
            z0, a, b = params.split([self.dim, 1, 1], dim=-1)
            z, log_abs_det = radial(z, z0, a.squeeze(-1), b.squeeze(-1))
            total = total + log_abs_det
        return z, total
