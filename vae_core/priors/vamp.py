"""VampPrior (Tomczak & Welling 2018): a mixture of the encoder's Gaussians at learnable pseudo-inputs."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vae_core.config import ModelConfig
from vae_core.priors.mixture import mixture_floats_per_sample, mixture_log_prob, mixture_sample


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
        return mixture_floats_per_sample(self.raw_pseudo_inputs.shape[0], self.encoder.latent_dim)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return mixture_sample(n, *self.components(), generator=generator)
