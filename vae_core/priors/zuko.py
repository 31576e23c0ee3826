"""Any zuko flow as a prior: `ZukoPrior.of(zuko.flows.NSF)` (the short names of `vae_core.flows.zuko.FLOWS`, and
any `zuko.flows.Flow` subclass named by its path).

p(z) is the unconditional flow: log p(z) = log p_base(T(z)) + log|det dT/dz|, T in zuko's density direction
(one parallel pass, what every bound needs); `sample` runs T's inverse (sequential for autoregressive
transforms, bisection for the monotonic ones), drawing the base noise from the caller's generator.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import zuko

from vae_core.config import ModelConfig
from vae_core.flows import zuko as zuko_flows


class ZukoPrior(nn.Module):
    """An unconditional zuko flow over the latents (module docstring)."""

    flow_class: type[zuko.flows.Flow] = zuko.flows.MAF
    SAMPLE_ROWS = 4096
    contract_relative_perturbation = True  # see vae_core.contract.tools.perturbed_model

    def __init__(self, flow: zuko.flows.Flow, dim: int):
        super().__init__()
        self.zuko_flow, self.dim = flow, dim
        self.round_trip_tolerance = zuko_flows.round_trip_tolerance(type(flow))  # the contract's round trip

    @classmethod
    def from_config(cls, cfg: ModelConfig, encoder: nn.Module) -> "ZukoPrior":
        return cls(zuko_flows.build(cls.flow_class, cfg, context=0, steps=cfg.prior_flow_steps), cfg.latent_dim)

    @classmethod
    @functools.cache
    def of(cls, flow_class: type[zuko.flows.Flow]) -> type["ZukoPrior"]:
        """The prior of one zuko flow class (one class per flow class, made once)."""
        return type(f"Zuko{flow_class.__name__}Prior", (cls,),
                    {"flow_class": flow_class, "__module__": __name__,
                     "__doc__": f"zuko's {flow_class.__name__} as an unconditional prior."})

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., D] -> (u = T(z), log|det du/dz| [...])."""
        return self.zuko_flow.transform(None).call_and_ladj(z)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u [..., D] -> (z = T^-1(u), log|det dz/du| [...])."""
        return self.zuko_flow.transform(None).inv.call_and_ladj(u)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.zuko_flow(None).log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws [n, D]: base noise from `generator`, through T's inverse SAMPLE_ROWS rows at a time (memory)."""
        loc, scale = zuko_flows.base_normal(self.zuko_flow(None))
        u = loc + scale * torch.randn((n, self.dim), generator=generator, device=loc.device, dtype=loc.dtype)
        with torch.no_grad():
            return torch.cat([self(rows)[0] for rows in u.split(self.SAMPLE_ROWS)])

    @functools.cached_property
    def floats_per_sample(self) -> int:
        p = next(self.parameters())
        return zuko_flows.floats_per_sample(lambda n: self.log_prob(p.new_zeros(n, self.dim)))


def adapt(obj: object) -> object:
    """The registry's hook: a zuko flow class becomes its prior; anything else is returned as it is."""
    return ZukoPrior.of(obj) if zuko_flows.is_zuko_flow(obj) else obj
