"""Closed-form log-densities and divergences (pure functions, nats, summed over the last dim where stated)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def std_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) summed over the last dim: [..., D] -> [...]."""
    return -0.5 * x.square().sum(-1) - x.shape[-1] * HALF_LOG_2PI


def normal_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(x; loc, diag(scale^2)) summed over the last dim (broadcasting): [..., D] -> [...]."""
    return std_normal_log_prob((x - loc) / scale) - scale.log().sum(-1)


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over the last dim, x in [0, 1]: [..., P] -> [...].

    Computed as x * l - softplus(l), the stable form of -BCE-with-logits.
    """
    return (x * logits - F.softplus(logits)).sum(-1)


def kl_normal_std_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, diag(scale^2)) || N(0, I)) summed over the last dim: [..., D] -> [...]."""
    return 0.5 * (loc.square() + scale.square() - 1).sum(-1) - scale.log().sum(-1)
