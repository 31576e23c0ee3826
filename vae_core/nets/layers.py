"""The networks that join two stochastic layers (`vae_core.hierarchical`): q(z1 | x, z2)'s encoder and the
conditional Gaussian p(z1 | z2), built from a ModelConfig (the wiring of the VampPrior paper's HVAE: z2 enters
the bottom encoder beside the image features)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vae_core.config import ModelConfig
from vae_core.nets.coders import CONV_CHANNELS, SCALES, conv_body, conv_grid, image_shape, init_linear_layers, mlp
from vae_core.nets.gated_conv import GATED_CONV_FEATURES, gated_conv_encoder


def image_features(cfg: ModelConfig) -> tuple[nn.Module, int]:
    """(x [B, P] -> features [B, F], F): the pixels for an MLP, the encoder's conv body otherwise."""
    if cfg.architecture == "conv":
        return conv_body(cfg.image_shape), CONV_CHANNELS[1] * math.prod(conv_grid(cfg.image_shape))
    if cfg.architecture == "gated-conv":
        return gated_conv_encoder(image_shape(cfg)), GATED_CONV_FEATURES
    return nn.Identity(), cfg.data_dim


class ConditionalEncoder(nn.Module):
    """(x [B, P], z2 [k, B, D2]) -> (loc [k, B, D], scale [k, B, D], context [k, B, C]) of q(z1 | x, z2).

    The first hidden layer is W_x f(x) + W_z z2 (+ bias), so the image features are computed once per image, not
    once per sample; then `activation` and the rest of `model.hidden`."""

    def __init__(self, cfg: ModelConfig, context_dim: int):
        super().__init__()
        self.latent_dim, self.context_dim = cfg.latent_dim, context_dim
        self.scale_fn = SCALES[cfg.scale]
        self.activation = cfg.activation
        self.features, width = image_features(cfg)
        first, *rest = cfg.hidden
        gates = 2 if cfg.activation == "gated" else 1
        self.from_x = nn.Linear(width, gates * first)
        self.from_z = nn.Linear(cfg.top_dim, gates * first, bias=False)
        self.head = mlp([first, *rest, 2 * cfg.latent_dim + context_dim], cfg.activation)
        init_linear_layers(self, cfg.init)

    def forward(self, x: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.from_x(self.features(x)).to(z2.dtype) + self.from_z(z2)  # [k, B, gates * H]
        if self.activation == "gated":
            a, g = h.chunk(2, dim=-1)
            h = a * torch.sigmoid(g)
        else:
            h = torch.tanh(h) if self.activation == "tanh" else F.relu(h)
        out = self.head(h).to(z2.dtype)
        loc, raw_scale, context = out.split([self.latent_dim, self.latent_dim, self.context_dim], dim=-1)
        return loc, self.scale_fn(raw_scale), context


class ConditionalGaussian(nn.Module):
    """z2 [..., D2] -> (loc, scale) [..., D] of p(z1 | z2) = N(loc, diag(scale^2)); hidden `model.top_hidden`
    (empty: `model.hidden`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.scale_fn = SCALES[cfg.scale]
        self.net = mlp([cfg.top_dim, *(cfg.top_hidden or cfg.hidden), 2 * cfg.latent_dim], cfg.activation)
        init_linear_layers(self.net, cfg.init)

    def forward(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(z2).to(z2.dtype).split(self.latent_dim, dim=-1)
        return loc, self.scale_fn(raw_scale)
