"""Encoder and decoder networks (MLP for any pixel count; conv for images whose sides divide by 4; the gated
convs of `vae_core.nets.gated_conv`), built from a
ModelConfig."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vae_core.config import ModelConfig
from vae_core.nets.gated_conv import GATED_CONV_FEATURES, gated_conv_decoder, gated_conv_encoder

CONV_CHANNELS = (32, 64)
CONV_STRIDE = 4  # two stride-2 convs: 28x28 -> 7x7, 28x20 -> 7x5


def conv_grid(image_shape: tuple[int, int]) -> tuple[int, int]:
    """The feature grid after `conv_body` (ModelConfig checks both sides divide by CONV_STRIDE)."""
    return image_shape[0] // CONV_STRIDE, image_shape[1] // CONV_STRIDE


class GatedDense(nn.Module):
    """h(x) * sigmoid(g(x)) with h, g linear: the gated dense layer of Tomczak & Welling 2018 (VampPrior)."""

    def __init__(self, a: int, b: int):
        super().__init__()
        self.h, self.g = nn.Linear(a, b), nn.Linear(a, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


def mlp(sizes: list[int], activation: str = "relu") -> nn.Sequential:
    """Hidden layers a -> b with `activation` (relu, tanh: linear then the nonlinearity; gated: `GatedDense`),
    then a plain linear output layer."""
    if activation not in ("relu", "tanh", "gated"):
        raise ValueError(f"unknown activation {activation!r}")
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        if activation == "gated":
            layers.append(GatedDense(a, b))
        else:
            layers += [nn.Linear(a, b), nn.Tanh() if activation == "tanh" else nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def conv_body(image_shape: tuple[int, int]) -> nn.Sequential:
    """[N, H * W] -> [N, 64 * H/4 * W/4]: two stride-2 convolutions (32, 64 channels)."""
    c1, c2 = CONV_CHANNELS
    return nn.Sequential(
        nn.Unflatten(-1, (1, *image_shape)),
        nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
    )


def deconv_head(image_shape: tuple[int, int], channels: int) -> nn.Sequential:
    """[N, 64 * H/4 * W/4] -> [N, channels * H * W] (channel-major): the mirror of `conv_body`."""
    c1, c2 = CONV_CHANNELS
    return nn.Sequential(
        nn.Unflatten(-1, (c2, *conv_grid(image_shape))),
        nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(c1, channels, 4, stride=2, padding=1),
        nn.Flatten(),
    )


def init_linear_layers(module: nn.Module, scheme: str) -> None:
    """Re-draw the weights of every nn.Linear in `module`: "he" N(0, 2 / fan_in) (biases kept, as the VampPrior
    code does), "glorot" U(+-sqrt(6 / (fan_in + fan_out))) with zero biases (the IWAE code); "torch" keeps
    torch's default."""
    if scheme not in ("torch", "he", "glorot"):
        raise ValueError(f"unknown init scheme {scheme!r}")
    if scheme == "torch":
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            with torch.no_grad():
                if scheme == "he":
                    layer.weight.normal_(0.0, (2.0 / layer.in_features) ** 0.5)
                else:
                    nn.init.xavier_uniform_(layer.weight)
                    layer.bias.zero_()


def hardtanh_logvar_scale(raw: torch.Tensor) -> torch.Tensor:
    """scale = exp(logvar / 2) with logvar = hardtanh(raw) in [-6, 2] (the VampPrior paper's encoder)."""
    return torch.exp(0.5 * F.hardtanh(raw, -6.0, 2.0))


def softplus_variance_scale(raw: torch.Tensor) -> torch.Tensor:
    """scale = sqrt(softplus(raw)): the variance through a softplus (the Sylvester-flows code's encoder)."""
    return F.softplus(raw).sqrt()


SCALES = {"softplus": F.softplus, "exp": torch.exp, "hardtanh-logvar": hardtanh_logvar_scale,
          "softplus-variance": softplus_variance_scale}


def image_shape(cfg: ModelConfig) -> tuple[int, int]:
    """(height, width) of the images: `model.image_shape` where the config has it, else 28x28."""
    return tuple(getattr(cfg, "image_shape", (28, 28)))


class Encoder(nn.Module):
    """x [B, P] -> (loc [B, D], scale [B, D], context [B, C]); C is what the posterior family asks for."""

    def __init__(self, cfg: ModelConfig, context_dim: int):
        super().__init__()
        self.latent_dim, self.context_dim = cfg.latent_dim, context_dim
        self.scale_fn = SCALES[cfg.scale]
        out = 2 * cfg.latent_dim + context_dim
        if cfg.architecture == "conv":
            flat = CONV_CHANNELS[1] * math.prod(conv_grid(cfg.image_shape))
            self.net = nn.Sequential(conv_body(cfg.image_shape), mlp([flat, *cfg.hidden, out], cfg.activation))
        elif cfg.architecture == "gated-conv":  # the heads are one linear layer on the 256 features
            self.net = nn.Sequential(gated_conv_encoder(image_shape(cfg)), nn.Linear(GATED_CONV_FEATURES, out))
        else:
            self.net = mlp([cfg.data_dim, *cfg.hidden, out], cfg.activation)
        init_linear_layers(self.net, cfg.init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(x).to(x.dtype)  # float32 again under bf16 autocast: densities stay in x's dtype
        loc, raw_scale, context = out.split([self.latent_dim, self.latent_dim, self.context_dim], dim=-1)
        return loc, self.scale_fn(raw_scale), context

    def gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The diagonal-Gaussian head alone (before any flow): x [N, P] -> (loc, scale) [N, D]."""
        loc, scale, _ = self(x)
        return loc, scale


class Decoder(nn.Module):
    """z [..., D] -> the likelihood's parameters [..., k * P], k = params_per_pixel blocks of P (Bernoulli:
    logits [..., P])."""

    def __init__(self, cfg: ModelConfig, params_per_pixel: int = 1):
        super().__init__()
        hidden = list(reversed(cfg.hidden))
        if cfg.architecture == "conv":
            flat = CONV_CHANNELS[1] * math.prod(conv_grid(cfg.image_shape))
            self.net = nn.Sequential(mlp([cfg.latent_dim, *hidden, flat], cfg.activation), nn.ReLU(),
                                     deconv_head(cfg.image_shape, params_per_pixel))
        elif cfg.architecture == "gated-conv":
            self.net = gated_conv_decoder(cfg.latent_dim, image_shape(cfg), params_per_pixel)
        else:
            self.net = mlp([cfg.latent_dim, *hidden, params_per_pixel * cfg.data_dim], cfg.activation)
        init_linear_layers(self.net, cfg.init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        return self.net(z.reshape(-1, z.shape[-1])).reshape(*batch, -1).to(z.dtype)
