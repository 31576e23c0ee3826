"""Any zuko flow as a posterior family: `ZukoPosterior.of(zuko.flows.NSF)` (the short names of
`vae_core.flows.zuko.FLOWS`, and any `zuko.flows.Flow` subclass named by its path).

q(z|x) is the encoder's Gaussian pushed through the flow's transform T(. | h), conditioned on the encoder's
context h [B, latent_dim] (extra encoder outputs, as IAF's): z0 = loc + scale * eps, z = T(z0 | h),
log q(z|x) = log N(z0; loc, scale) - log|det dT/dz0|. So loc and scale enter as the base, h as the flow's
context, and the flow's own base distribution is not used: a flow at the identity is the mean-field family.
T is used in zuko's density direction (its one parallel pass), as IAF uses a MADE: a sample and its log q come
from one pass; scoring a z that is not one's own sample (which no bound here needs) would take T's inverse.
"""

from __future__ import annotations

import functools

import torch
import zuko

from vae_core.config import ModelConfig
from vae_core.flows import zuko as zuko_flows
from vae_core.posteriors.base import FlowPosterior


class ZukoPosterior(FlowPosterior):
    """The encoder's Gaussian through a zuko flow conditioned on the encoder's context (module docstring)."""

    flow_class: type[zuko.flows.Flow] = zuko.flows.MAF
    contract_relative_perturbation = True  # see vae_core.contract.tools.perturbed_model

    def __init__(self, flow: zuko.flows.Flow, dim: int, context_dim: int):
        super().__init__()
        self.zuko_flow, self.dim, self.context_dim = flow, dim, context_dim

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "ZukoPosterior":
        flow = zuko_flows.build(cls.flow_class, cfg, context=cfg.latent_dim, steps=cfg.posterior_flow_steps)
        return cls(flow, cfg.latent_dim, cfg.latent_dim)

    @classmethod
    @functools.cache
    def of(cls, flow_class: type[zuko.flows.Flow]) -> type["ZukoPosterior"]:
        """The family of one zuko flow class (one class per flow class, made once)."""
        return type(f"Zuko{flow_class.__name__}Posterior", (cls,),
                    {"flow_class": flow_class, "__module__": __name__,
                     "__doc__": f"The encoder's Gaussian through zuko's {flow_class.__name__}, conditioned on the "
                                "encoder's context."})

    def flow(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., B, D], context [B, C] -> (T(z | context), log|det dT/dz| [..., B])."""
        return self.zuko_flow.transform(context).call_and_ladj(z)

    @functools.cached_property
    def floats_per_sample(self) -> int:
        p = next(self.parameters())

        def run(n: int) -> None:
            self.flow(p.new_zeros(1, n, self.dim), p.new_zeros(n, self.context_dim))

        return zuko_flows.floats_per_sample(run)


def adapt(obj: object) -> object:
    """The registry's hook for names that resolve to something else than a family: a zuko flow class becomes
    its posterior family; anything else is returned as it is."""
    return ZukoPosterior.of(obj) if zuko_flows.is_zuko_flow(obj) else obj
