"""The base of every posterior family (`Posterior`), the noise it is driven by and the mean-field Gaussian."""

from __future__ import annotations

import torch
import torch.nn as nn

from vae_core.config import ModelConfig
from vae_core.distributions import std_normal_log_prob


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
