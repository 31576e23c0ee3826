"""Affine autoregressive transforms on a MADE: `IAFStep` (parallel forward) and `MAFLayer` (parallel inverse),
in the direction convention of `vae_core.flows`."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vae_core.nets.made import MADE

GATE_BIAS_INIT = 2.0
MAF_LOG_SCALE_BOUND = 3.0


class IAFStep(nn.Module):
    """y = sigma * z + (1 - sigma) * m with (m, s) = MADE(z, h), sigma = sigmoid(s); log|det| = sum log sigma."""

    def __init__(self, dim: int, hidden: int, context_dim: int, order: torch.Tensor):
        super().__init__()
        self.made = MADE(dim, hidden, n_params=2, context_dim=context_dim, order=order)
        with torch.no_grad():
            self.made.layers[-1].bias[dim:].fill_(GATE_BIAS_INIT)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = self.made(z, context)  # [..., D] each
        gate = torch.sigmoid(s)
        return gate * z + (1 - gate) * m, F.logsigmoid(s).sum(-1)


class MAFLayer(nn.Module):
    """z = u * exp(s) + m with (m, s) = MADE(z) autoregressive; s bounded to (-3, 3) by a scaled tanh."""

    def __init__(self, dim: int, hidden: int, order: torch.Tensor):
        super().__init__()
        self.dim = dim
        self.made = MADE(dim, hidden, n_params=2, order=order)

    def _shift_log_scale(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = self.made(z)
        return m, MAF_LOG_SCALE_BOUND * torch.tanh(s / MAF_LOG_SCALE_BOUND)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., D] -> (u, log|det du/dz|), one parallel pass."""
        m, s = self._shift_log_scale(z)
        return (z - m) * torch.exp(-s), -s.sum(-1)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u [..., D] -> (z, log|det dz/du|), D sequential passes (output i is fixed after pass i)."""
        z = torch.zeros_like(u)
        for _ in range(self.dim):
            m, s = self._shift_log_scale(z)
            z = u * torch.exp(s) + m
        return z, s.sum(-1)



def alternating_orders(dim: int, n: int) -> list[torch.Tensor]:
    """Orderings for n stacked autoregressive steps: identity, reversed, identity, ..."""
    fwd = torch.arange(dim)
    return [fwd if i % 2 == 0 else fwd.flip(0) for i in range(n)]
