"""Diagonal-Gaussian mixtures: their log-density (matrix form, with its float32 error bound), sampling, and
the learnable mixture prior."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vae_core.config import ModelConfig
from vae_core.distributions import HALF_LOG_2PI, normal_log_prob


def mixture_log_prob(z: torch.Tensor, log_weights: torch.Tensor, loc: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """log sum_k w_k N(z; loc_k, diag(scale_k^2)): z [..., D], log_weights [K] normalized, loc/scale [K, D]
    -> [...], through matrix products (no [..., K, D] term; under vmap they are batched matmuls).

    With precision P = 1/scale^2 and a shared centre c, the squared distances Q_k(z) are
    sum_d (z_d - mu_kd)^2 P_kd = (z'^2) P^T - 2 z' (mu' * P)^T + sum_d mu'_kd^2 P_kd   ([N, D] x [D, K] -> [N, K])
    with z' = z - c and mu' = mu - c: any c gives the same value in exact arithmetic. Expanded, the square
    cancels: its terms are as large as S_k(z) = sum_d ((z_d - c_d)^2 + (mu_kd - c_d)^2) P_kd while their sum
    is only Q_k. Centring on c = the component means' centre (their mean over k, without gradient: c cancels)
    makes S independent of where the mixture sits: components and codes together far from the origin (a
    latent offset) cost nothing, where uncentred they would cost |z|^2 P. The direct form is not kept as a
    fallback: choosing per sample would split the one graph that vmap and torch.compile make fast.

    float32 error bound (first order in u = eps / 2 = 2^-24; IEEE arithmetic, dot products and GEMMs within
    the standard gamma_D bound, so no TF32 or bf16 matmuls: autocast is off in here). The computed log-term
    a_k = log w_k - sum_d log s_kd - D log(2 pi) / 2 - Q_k / 2 of component k is off by at most
        Delta_k(z) = (D + 8) u S_k(z) + (D + 7) u N_k + u |a_k - max_j a_j|,
        N_k = |log w_k| + sum_d |log s_kd| + D log(2 pi) / 2,
    and the result by |log p^ - log p| <= log sum_k pi_k exp(Delta_k) + (K + 4 + log K) u + u |log p|, with
    pi_k(z) the exact responsibilities (tests/test_mixture_log_prob.py asserts it). Where one component
    dominates this is about (D + 8) u S_k(z), i.e. (D / 2 + 4) eps sum_d (|z_d - c_d|^2 + |mu_kd - c_d|^2)
    / s_kd^2 nats for float32 eps. The direct form's error scales with Q_k instead: the two are alike while
    codes and components lie within a few scales of c (K = 500, D = 40, scales 0.1 to 1: 2e-4 nats at most
    against the direct form's 4e-5; the VampPrior protocol at init: 6e-6 for both); the matrix form's error
    grows where components lie far apart relative to their scales (mu ~ +-1e3 with scales 1e-3 defeats
    float32: such mixtures need float64). `mixture_log_prob_direct` is the reference.
    """
    dim = z.shape[-1]
    with torch.autocast(z.device.type, enabled=False):
        centre = loc.detach().mean(0)  # [D]
        zc = (z - centre).reshape(-1, dim)  # [N, D]
        mc = loc - centre  # [K, D]
        precision = scale.square().reciprocal()  # [K, D]
        weighted = mc * precision  # [K, D]
        log_norm = log_weights - scale.log().sum(-1) - dim * HALF_LOG_2PI - 0.5 * (mc * weighted).sum(-1)  # [K]
        terms = torch.addmm(torch.addmm(log_norm, zc, weighted.T), zc.square(), precision.T, alpha=-0.5)  # [N, K]
        return logsumexp_without_subnormals(terms).reshape(z.shape[:-1])


def logsumexp_without_subnormals(terms: torch.Tensor) -> torch.Tensor:
    """torch.logsumexp over the last dim, [..., K] -> [...], leaving out the terms more than log(tiny) / 2 below
    the largest (-43.7 in float32, -354 in float64): their exp, and the responsibilities in the gradient,
    would be near or below the smallest normal float, and subnormal arithmetic runs ~100x slower on x86
    (docs/speed.md, "Subnormals"). What they leave out is at most K e^(log(tiny) / 2) relative (5.5e-17 in
    float32 at K = 500), far below the dtype's resolution; their gradient is then exactly 0."""
    top = terms.detach().amax(-1, keepdim=True)  # [..., 1]
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    shifted = terms - top
    floor = math.log(torch.finfo(terms.dtype).tiny) / 2
    kept = torch.where(shifted <= floor, torch.full_like(shifted, -math.inf), shifted)  # NaN stays NaN
    return kept.exp().sum(-1).log() + top.squeeze(-1)


def mixture_log_prob_direct(z: torch.Tensor, log_weights: torch.Tensor, loc: torch.Tensor,
                            scale: torch.Tensor) -> torch.Tensor:
    """`mixture_log_prob` computed directly, every sample against every component ([..., K, D] terms): the
    reference for tests and benchmarks (float64), not a production path."""
    per_component = normal_log_prob(z.unsqueeze(-2), loc, scale)  # [..., K]
    return torch.logsumexp(per_component + log_weights, dim=-1)


def mixture_floats_per_sample(components: int, dim: int) -> int:
    """Floats `mixture_log_prob` holds per sample at its peak (sizes IW chunks): up to four [N, K] terms (the
    GEMMs' output, then `logsumexp_without_subnormals`' shifted, kept and exponentiated copies; measured 3.5)
    and the centred z and its square [N, D]."""
    return 4 * components + 2 * dim


def mixture_sample(n: int, log_weights: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws from the diagonal-Gaussian mixture -> [n, D]."""
    idx = torch.multinomial(log_weights.exp(), n, replacement=True, generator=generator)  # [n]
    eps = torch.randn((n, loc.shape[-1]), generator=generator, device=loc.device, dtype=loc.dtype)
    return loc[idx] + scale[idx] * eps


class MixturePrior(nn.Module):
    """Learnable mixture of K diagonal Gaussians; scales through softplus, weights through softmax."""

    def __init__(self, dim: int, components: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, dim))
        self.raw_scale = nn.Parameter(torch.full((components, dim), math.log(math.e - 1)))  # softplus -> 1

    @classmethod
    def from_config(cls, cfg: ModelConfig, encoder: nn.Module) -> "MixturePrior":
        return cls(cfg.latent_dim, cfg.prior_components)

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return F.log_softmax(self.logits, dim=0), self.loc, F.softplus(self.raw_scale)

    @property
    def floats_per_sample(self) -> int:
        return mixture_floats_per_sample(*self.loc.shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return mixture_log_prob(z, *self.components())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return mixture_sample(n, *self.components(), generator=generator)
