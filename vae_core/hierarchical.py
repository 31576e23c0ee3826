"""Two stochastic layers (`model.layers = 2`): generative p(z2) p(z1 | z2) p(x | z1, z2), inference
q(z2 | x) q(z1 | x, z2), the HVAE of Tomczak & Welling (2018).

The top prior p(z2) is any registered prior (a VampPrior's pseudo-inputs go through q(z2 | x)'s encoder), and
both posteriors are registered families: `model.posterior` for z1, `model.top_posterior` for z2 (empty: the same),
so every family and prior runs unchanged on a hierarchical model. A sample is z = [z1, z2] [k, B, D + D2], driven by noise
[eps1, eps2] of the same shape; every VAE method (ELBO, IW bound, objectives, stacking, compilation) sees the
one-layer interface, with log p(z) = log p(z2) + log p(z1 | z2) and log q = log q(z2 | x) + log q(z1 | x, z2).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from vae_core.config import ModelConfig
from vae_core.distributions import normal_log_prob
from vae_core.likelihoods import likelihood_for
from vae_core.nets import Decoder, Encoder
from vae_core.nets.layers import ConditionalEncoder, ConditionalGaussian
from vae_core.registry import build_posterior, build_prior
from vae_core.vae import VAE


def one_layer(cfg: ModelConfig, latent_dim: int, posterior: str = "") -> ModelConfig:
    """cfg as a one-layer model of latent size `latent_dim` (what a layer's family, prior or net is built from),
    with posterior family `posterior` where given (the O-SNF's column count stays only with its own family)."""
    family = posterior or cfg.posterior
    vectors = cfg.posterior_orthogonal_vectors if family == cfg.posterior else 0
    return dataclasses.replace(cfg, latent_dim=latent_dim, layers=1, top_latent_dim=0, top_hidden=(),
                               top_posterior="", posterior=family, posterior_orthogonal_vectors=vectors)


class HierarchicalVAE(VAE):
    """`encoder`, `posterior` and `prior` are the top layer's (z2); `bottom_encoder`, `bottom_posterior` and
    `conditional_prior` the bottom layer's (z1); the decoder reads [z1, z2]."""

    def __init__(self, config: ModelConfig):
        nn.Module.__init__(self)
        self.config = config
        top, joint = one_layer(config, config.top_dim, config.top_posterior), one_layer(config, config.noise_dim)
        self.posterior = build_posterior(top)
        self.encoder = Encoder(top, getattr(self.posterior, "context_dim", 0))
        self.bottom_posterior = build_posterior(one_layer(config, config.latent_dim))
        self.bottom_encoder = ConditionalEncoder(config, getattr(self.bottom_posterior, "context_dim", 0))
        self.likelihood = likelihood_for(config.likelihood)
        self.decoder = Decoder(joint, self.likelihood.params_per_pixel)
        self.prior = build_prior(top, self.encoder)
        self.conditional_prior = ConditionalGaussian(config)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., D + D2] -> (z1 [..., D], z2 [..., D2]); also splits noise into (eps1, eps2)."""
        return z.split([self.config.latent_dim, self.config.top_dim], dim=-1)

    def bottom(self, x: torch.Tensor, z2: torch.Tensor, eps1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z1 | x, z2): x [B, P], z2 and eps1 [k, B, *] -> (z1 [k, B, D], log q(z1 | x, z2) [k, B]).

        Each of the k x B conditionals is its own posterior, so the family sees them as k * B inputs with one
        sample each (its from_noise contract: loc [B', D], eps [1, B', D])."""
        k, b = z2.shape[:2]
        loc, scale, context = (t.reshape(k * b, -1) for t in self.bottom_encoder(x, z2))
        z1, log_q = self.bottom_posterior.from_noise(loc, scale, context, eps1.reshape(1, k * b, -1))
        return z1.reshape(k, b, -1), log_q.reshape(k, b)

    def layer_terms(self, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """log p(x | z1, z2), log p(z1 | z2), log p(z2), log q(z1 | x, z2), log q(z2 | x), each [k, B], and the
        sample itself (z1 [k, B, D], z2 [k, B, D2]), driven by noise eps [k, B, D + D2] (pure): the terms behind
        the per-layer KLs and active units (`vae_core.layer_diagnostics`)."""
        return self._layer_terms(x, *self.encoder(x), eps)

    def _layer_terms(self, x, loc, scale, context, eps) -> dict[str, torch.Tensor]:
        eps1, eps2 = self.split(eps)
        z2, log_q2 = self.posterior.from_noise(loc, scale, context, eps2)  # [k, B, D2], [k, B]
        z1, log_q1 = self.bottom(x, z2, eps1)  # [k, B, D], [k, B]
        log_pz1 = normal_log_prob(z1, *self.conditional_prior(z2))  # [k, B]
        return {"log_px_z": self.log_px_z(x, torch.cat([z1, z2], -1)), "log_pz1": log_pz1,
                "log_pz2": self.prior.log_prob(z2), "log_q1": log_q1, "log_q2": log_q2, "z1": z1, "z2": z2}

    def _log_densities(self, x, loc, scale, context, eps):
        t = self._layer_terms(x, loc, scale, context, eps)
        return t["log_px_z"], t["log_pz1"] + t["log_pz2"], t["log_q1"] + t["log_q2"]

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x | z1, z2), log p(z1 | z2) + log p(z2)), each [k, B], for z = [z1, z2] [k, B, D + D2]."""
        z1, z2 = self.split(z)
        return self.log_px_z(x, z), normal_log_prob(z1, *self.conditional_prior(z2)) + self.prior.log_prob(z2)

    @property
    def floats_per_iw_sample(self) -> int:
        c = self.config
        per_hidden = 4 if c.activation == "gated" else 2
        return (super().floats_per_iw_sample + per_hidden * (sum(c.hidden) + sum(c.top_hidden or c.hidden))
                + 6 * c.top_dim + getattr(self.bottom_posterior, "floats_per_sample", 0))

    @torch.no_grad()
    def latent_code(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, P] -> [z1, z2] [B, D + D2]: z2 at q(z2 | x)'s centre, z1 at q(z1 | x, z2)'s centre given it."""
        loc, scale, context = self.encoder(x)
        z2 = self.posterior.center(loc, scale, context)[None]  # [1, B, D2]
        loc1, scale1, context1 = (t[0] for t in self.bottom_encoder(x, z2))
        return torch.cat([self.bottom_posterior.center(loc1, scale1, context1), z2[0]], -1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n, P] the likelihood's means of p(x | z1, z2), z2 ~ p(z2), z1 ~ p(z1 | z2)."""
        z2 = self.prior.sample(n, generator)  # [n, D2]
        loc, scale = self.conditional_prior(z2)
        z1 = loc + scale * torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
        return self.decode_mean(torch.cat([z1, z2], -1))
