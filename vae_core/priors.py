"""Priors p(z): each has an exact `log_prob(z) [..., D] -> [...]` and `sample(n, generator) -> [n, D]`.

Register a new family in `PRIORS`; `from_config(cfg, encoder)` receives the encoder so that priors defined
through it (VampPrior) can use its Gaussian heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vae_core.config import ModelConfig
from vae_core.distributions import normal_log_prob, std_normal_log_prob
from vae_core.flows import MAFLayer, alternating_orders


class StandardNormalPrior(nn.Module):
    """N(0, I)."""

    floats_per_sample = 0  # activations per latent sample in log_prob (sizes IW chunks)

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("anchor", torch.zeros(()), persistent=False)  # carries device and dtype

    @classmethod
    def from_config(cls, cfg: ModelConfig, encoder: nn.Module) -> "StandardNormalPrior":
        return cls(cfg.latent_dim)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return std_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, self.dim), generator=generator, device=self.anchor.device, dtype=self.anchor.dtype)


def mixture_log_prob(z: torch.Tensor, log_weights: torch.Tensor, loc: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """log sum_k w_k N(z; loc_k, scale_k): z [..., D], log_weights [K] normalized, loc/scale [K, D] -> [...]."""
    per_component = normal_log_prob(z.unsqueeze(-2), loc, scale)  # [..., K]
    return torch.logsumexp(per_component + log_weights, dim=-1)


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
        return 2 * self.loc.numel()  # the [..., K, D] terms of mixture_log_prob

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return mixture_log_prob(z, *self.components())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return mixture_sample(n, *self.components(), generator=generator)


class FlowPrior(nn.Module):
    """MAF over N(0, I): z = f_L(...f_1(u)); log p(z) = log N(f^-1(z)) + log|det df^-1/dz| (parallel)."""

    def __init__(self, dim: int, layers: int, hidden: int):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(MAFLayer(dim, hidden, order) for order in alternating_orders(dim, layers))

    @classmethod
    def from_config(cls, cfg: ModelConfig, encoder: nn.Module) -> "FlowPrior":
        return cls(cfg.latent_dim, cfg.prior_flow_steps, cfg.made_hidden)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., D] -> (u, log|det du/dz| [...])."""
        total = z.new_zeros(z.shape[:-1])
        for layer in reversed(self.layers):
            z, log_abs_det = layer.inverse(z)
            total = total + log_abs_det
        return z, total

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u [..., D] -> (z, log|det dz/du| [...])."""
        total = u.new_zeros(u.shape[:-1])
        for layer in self.layers:
            u, log_abs_det = layer(u)
            total = total + log_abs_det
        return u, total

    @property
    def floats_per_sample(self) -> int:
        return sum(layer.made.floats_per_sample for layer in self.layers)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        u, log_abs_det = self.inverse(z)
        return std_normal_log_prob(u) + log_abs_det

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.layers[0].made.layers[0].weight
        u = torch.randn((n, self.dim), generator=generator, device=p.device, dtype=p.dtype)
        with torch.no_grad():
            return self(u)[0]


class VampPrior(nn.Module):
    """VampPrior (Tomczak & Welling 2018): (1/K) sum_k q0(z | u_k), with q0 the encoder's Gaussian head and
    K learnable pseudo-inputs u_k in [0, 1]: sigmoid(raw_k), raw ~ N(-2, 0.5^2) ("sigmoid"), or
    hardtanh(raw_k, 0, 1), raw ~ N(0.05, 0.01^2) (the paper's code for MNIST: "hardtanh"). The encoder is
    shared, not owned."""

    def __init__(self, encoder: nn.Module, components: int, data_dim: int, squash: str = "sigmoid"):
        super().__init__()
        self.__dict__["encoder"] = encoder  # shared with the VAE: not a submodule, so no duplicate parameters
        self.squash = squash
        mean, std = (-2.0, 0.5) if squash == "sigmoid" else (0.05, 0.01)
        self.raw_pseudo_inputs = nn.Parameter(torch.randn(components, data_dim) * std + mean)

    @classmethod
    def from_config(cls, cfg: ModelConfig, encoder: nn.Module) -> "VampPrior":
        return cls(encoder, cfg.prior_components, cfg.data_dim, cfg.prior_pseudo_inputs)

    def pseudo_inputs(self) -> torch.Tensor:
        if self.squash == "hardtanh":
            return F.hardtanh(self.raw_pseudo_inputs, 0.0, 1.0)
        return torch.sigmoid(self.raw_pseudo_inputs)

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, scale = self.encoder.gaussian(self.pseudo_inputs())  # [K, D] each
        k = loc.shape[0]
        return loc.new_full((k,), -math.log(k)), loc, scale

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return mixture_log_prob(z, *self.components())

    @property
    def floats_per_sample(self) -> int:
        return 2 * self.raw_pseudo_inputs.shape[0] * self.encoder.latent_dim  # [..., K, D] as for the mixture

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return mixture_sample(n, *self.components(), generator=generator)


PRIORS: dict[str, type[nn.Module]] = {
    "standard": StandardNormalPrior,
    "mog": MixturePrior,
    "flow": FlowPrior,
    "vamp": VampPrior,
}
