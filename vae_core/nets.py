"""Encoder and decoder networks (MLP or conv for 28x28), built from a ModelConfig."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vae_core.config import ModelConfig

CONV_CHANNELS = (32, 64)
CONV_GRID = 7  # 28 -> 14 -> 7 after two stride-2 convs


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def conv_body() -> nn.Sequential:
    """[N, 784] -> [N, 64 * 7 * 7]: two stride-2 convolutions (32, 64 channels)."""
    c1, c2 = CONV_CHANNELS
    return nn.Sequential(
        nn.Unflatten(-1, (1, 28, 28)),
        nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
    )


def deconv_head() -> nn.Sequential:
    """[N, 64 * 7 * 7] -> [N, 784] logits: the mirror of `conv_body`."""
    c1, c2 = CONV_CHANNELS
    return nn.Sequential(
        nn.Unflatten(-1, (c2, CONV_GRID, CONV_GRID)),
        nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),
        nn.Flatten(),
    )


class Encoder(nn.Module):
    """x [B, P] -> (loc [B, D], scale [B, D], context [B, C]); C is what the posterior family asks for."""

    def __init__(self, cfg: ModelConfig, context_dim: int):
        super().__init__()
        self.latent_dim, self.context_dim = cfg.latent_dim, context_dim
        self.scale_fn = F.softplus if cfg.scale == "softplus" else torch.exp
        out = 2 * cfg.latent_dim + context_dim
        if cfg.architecture == "conv":
            self.net = nn.Sequential(conv_body(), mlp([CONV_CHANNELS[1] * CONV_GRID**2, *cfg.hidden, out]))
        else:
            self.net = mlp([cfg.data_dim, *cfg.hidden, out])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(x)
        loc, raw_scale, context = out.split([self.latent_dim, self.latent_dim, self.context_dim], dim=-1)
        return loc, self.scale_fn(raw_scale), context

    def gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The diagonal-Gaussian head alone (before any flow): x [N, P] -> (loc, scale) [N, D]."""
        loc, scale, _ = self(x)
        return loc, scale


class Decoder(nn.Module):
    """z [..., D] -> Bernoulli logits [..., P]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = list(reversed(cfg.hidden))
        if cfg.architecture == "conv":
            flat = CONV_CHANNELS[1] * CONV_GRID**2
            self.net = nn.Sequential(mlp([cfg.latent_dim, *hidden, flat]), nn.ReLU(), deconv_head())
        else:
            self.net = mlp([cfg.latent_dim, *hidden, cfg.data_dim])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        return self.net(z.reshape(-1, z.shape[-1])).reshape(*batch, -1)
