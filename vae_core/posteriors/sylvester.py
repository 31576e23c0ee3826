"""Sylvester-flow posteriors (van den Berg et al. 2018): orthogonal, Householder and triangular Q."""

from __future__ import annotations

import torch

from vae_core.config import ModelConfig
from vae_core.flows.sylvester import (ortho_tolerance, orthogonalize, sylvester, sylvester_householder,
                                      sylvester_triangular, triangular_pair)
from vae_core.posteriors.base import FlowPosterior


class SylvesterPosterior(FlowPosterior):
    """Gaussian followed by `steps` Sylvester flows (see `vae_core.flows.sylvester`), every parameter amortized.

    Per flow the context holds [M * M free entries of R and R̃ (upper / lower triangle), M raw diag(R), M raw
    diag(R̃), M bias, `q_size` raw entries of Q]; subclasses say how Q is made (`q_matrices`).
    """

    q_size = 0

    def __init__(self, dim: int, steps: int, m: int):
        super().__init__()
        self.dim, self.n_steps, self.m = dim, steps, m
        self.context_dim = steps * (m * m + 3 * m + self.q_size)

    @property
    def floats_per_sample(self) -> int:
        return self.n_steps * (6 * self.m + 2 * self.dim)

    def q_matrices(self, raw: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """raw [B, K, q_size] -> (what `transform` takes for Q, per flow on dim 1, or None; and None or a [B, K]
        mask of the Qs that are orthogonal: a data point with one that is not gets log q = NaN, so its run stops
        at that step as non-finite instead of reporting a wrong log-det)."""
        raise NotImplementedError

    def transform(self, z, q, r, r_tilde, b, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow i: z [..., B, D] -> (z', log|det| [..., B]); q is flow i's slice of `q_matrices`' first output."""
        return sylvester(z, q, r, r_tilde, b)

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., B, D], context [B, C] -> (f(z), sum of log|det| [..., B])."""
        m = self.m
        params = context.unflatten(-1, (self.n_steps, -1))  # [B, K, per flow]
        full, diag, diag_tilde, b, raw_q = params.split([m * m, m, m, m, self.q_size], dim=-1)
        r, r_tilde = triangular_pair(full.unflatten(-1, (m, m)), diag, diag_tilde)  # [B, K, M, M] each
        q, orthogonal = self.q_matrices(raw_q)
        total = z.new_zeros(z.shape[:-1])
        if orthogonal is not None:
            total = torch.where(orthogonal.all(-1), total, torch.nan)  # [..., B]
        for i in range(self.n_steps):
            z, log_abs_det = self.transform(z, None if q is None else q[:, i], r[:, i], r_tilde[:, i], b[:, i], i)
            total = total + log_abs_det
        return z, total


class OrthogonalSylvesterPosterior(SylvesterPosterior):
    """O-SNF: Q [D, M] with M <= D orthonormal columns, by the paper's iterative orthogonalisation."""

    def __init__(self, dim: int, steps: int, m: int):
        self.q_size = dim * m
        super().__init__(dim, steps, m)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "OrthogonalSylvesterPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps, cfg.orthogonal_vectors)

    def q_matrices(self, raw):
        return orthogonalize(raw.unflatten(-1, (self.dim, self.m)), ortho_tolerance(self.dim, self.m))


class HouseholderSylvesterPosterior(SylvesterPosterior):
    """H-SNF: M = D and Q the product of H Householder reflections."""

    def __init__(self, dim: int, steps: int, reflections: int):
        self.reflections, self.q_size = reflections, reflections * dim
        super().__init__(dim, steps, dim)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "HouseholderSylvesterPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps, cfg.householder_reflections)

    def q_matrices(self, raw):
        vs = raw.unflatten(-1, (self.reflections, self.dim))  # [B, K, H, D]
        return vs / vs.norm(dim=-1, keepdim=True), None

    def transform(self, z, q, r, r_tilde, b, i):
        return sylvester_householder(z, q, r, r_tilde, b)


class TriangularSylvesterPosterior(SylvesterPosterior):
    """T-SNF: M = D and Q the identity (even flows) or the reversal permutation (odd flows)."""

    def __init__(self, dim: int, steps: int):
        super().__init__(dim, steps, dim)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "TriangularSylvesterPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps)

    def q_matrices(self, raw):
        return None, None

    def transform(self, z, q, r, r_tilde, b, i):
        return sylvester_triangular(z, r, r_tilde, b, reverse=i % 2 == 1)
