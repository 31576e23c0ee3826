"""Posterior families q(z|x). Each turns the encoder's output (loc, scale, context) and standard-normal noise
into reparameterized samples and their log-density: `from_noise(loc, scale, context, eps [k, B, D]) ->
(z [k, B, D], log_q [k, B])`; `rsample(..., k, generator)` draws the noise and calls it.

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
from vae_core.sylvester import (householder_product, householder_reflect, ortho_tolerance, orthogonalize, sylvester,
                                sylvester_triangular, triangular_pair)


def standard_normal(k: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """k draws of N(0, I) shaped like `like` [B, D] -> [k, B, D], on its device and dtype.

    The draws are made one [B, D] block at a time: torch's vectorized `randn` gives different numbers for
    one [k1 + k2, ...] call than for a [k1, ...] call followed by a [k2, ...] call, so drawing per sample is
    what makes `VAE.iw_log_px` independent of its `chunk` size for a given generator seed.
    """
    def draw(shape):
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)

    if k == 1:
        return draw((1, *like.shape))
    return torch.stack([draw(like.shape) for _ in range(k)])


def gaussian_from_noise(loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """z = loc + scale * eps: loc, scale [B, D], eps [k, B, D] -> (z [k, B, D], log N(z; loc, scale) [k, B])."""
    return loc + scale * eps, std_normal_log_prob(eps) - scale.log().sum(-1)


class Posterior(nn.Module):
    """Base of every family: `from_noise` maps standard-normal noise to (z, log_q); `rsample` draws the noise.

    Keeping the noise an argument lets a compiled or stacked training step take it as an input (random
    generators do not trace) while the numbers stay those of `rsample` with the same generator.
    """

    context_dim = 0
    floats_per_sample = 0  # activations per sample beyond the Gaussian's (sizes IW chunks)

    def from_noise(self, loc: torch.Tensor, scale: torch.Tensor, context: torch.Tensor, eps: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """loc, scale [B, D], context [B, C], eps [k, B, D] -> (z [k, B, D], log q(z|x) [k, B])."""
        raise NotImplementedError

    def rsample(self, loc, scale, context, k, generator=None):
        """k reparameterized samples: (z [k, B, D], log q(z|x) [k, B])."""
        return self.from_noise(loc, scale, context, standard_normal(k, loc, generator))

    def center(self, loc: torch.Tensor, scale: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The posterior's centre [B, D] (used for reconstructions and latent codes)."""
        raise NotImplementedError


class MeanFieldPosterior(Posterior):
    """Diagonal Gaussian q(z|x) = N(loc, diag(scale^2))."""

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "MeanFieldPosterior":
        return cls()

    def from_noise(self, loc, scale, context, eps):
        return gaussian_from_noise(loc, scale, eps)

    def center(self, loc, scale, context):
        return loc


class FlowPosterior(Posterior):
    """The encoder's Gaussian pushed through `self.flow(z, context) -> (z', log|det|)`; subclasses define flow."""

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def from_noise(self, loc, scale, context, eps):
        z, log_q = gaussian_from_noise(loc, scale, eps)
        z, log_abs_det = self.flow(z, context)
        return z, log_q - log_abs_det

    def center(self, loc, scale, context):
        return self.flow(loc, context)[0]


class IAFPosterior(FlowPosterior):
    """Gaussian followed by `steps` IAF steps conditioned on the encoder context h, orderings alternating.

    h has latent_dim units (the reference protocol's encoder emits loc, scale and h, 3 x latent_dim).
    """

    def __init__(self, dim: int, steps: int, hidden: int, context_dim: int):
        super().__init__()
        self.context_dim = context_dim
        self.steps = nn.ModuleList(IAFStep(dim, hidden, context_dim, order)
                                   for order in alternating_orders(dim, steps))

    @property
    def floats_per_sample(self) -> int:
        return sum(step.made.floats_per_sample for step in self.steps)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "IAFPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps, cfg.made_hidden, context_dim=cfg.latent_dim)

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


class SylvesterPosterior(FlowPosterior):
    """Gaussian followed by `steps` Sylvester flows (see `vae_core.sylvester`), every parameter amortized.

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

    def q_matrices(self, raw: torch.Tensor) -> torch.Tensor | None:
        """raw [B, K, q_size] -> Q [B, K, D, M] (None: a permutation, applied by indexing)."""
        raise NotImplementedError

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., B, D], context [B, C] -> (f(z), sum of log|det| [..., B])."""
        m = self.m
        params = context.unflatten(-1, (self.n_steps, -1))  # [B, K, per flow]
        full, diag, diag_tilde, b, raw_q = params.split([m * m, m, m, m, self.q_size], dim=-1)
        r, r_tilde = triangular_pair(full.unflatten(-1, (m, m)), diag, diag_tilde)  # [B, K, M, M] each
        q = self.q_matrices(raw_q)
        total = z.new_zeros(z.shape[:-1])
        for i in range(self.n_steps):
            if q is None:
                z, log_abs_det = sylvester_triangular(z, r[:, i], r_tilde[:, i], b[:, i], reverse=i % 2 == 1)
            else:
                z, log_abs_det = sylvester(z, q[:, i], r[:, i], r_tilde[:, i], b[:, i])
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
        return householder_product(raw.unflatten(-1, (self.reflections, self.dim)))


class TriangularSylvesterPosterior(SylvesterPosterior):
    """T-SNF: M = D and Q the identity (even flows) or the reversal permutation (odd flows)."""

    def __init__(self, dim: int, steps: int):
        super().__init__(dim, steps, dim)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "TriangularSylvesterPosterior":
        return cls(cfg.latent_dim, cfg.posterior_flow_steps)

    def q_matrices(self, raw):
        return None


POSTERIORS: dict[str, type[Posterior]] = {
    "mean-field": MeanFieldPosterior,
    "iaf": IAFPosterior,
    "planar": PlanarPosterior,
    "householder": HouseholderPosterior,
    "sylvester-orthogonal": OrthogonalSylvesterPosterior,
    "sylvester-householder": HouseholderSylvesterPosterior,
    "sylvester-triangular": TriangularSylvesterPosterior,
}
