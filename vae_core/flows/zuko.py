"""zuko's flows (Rozet et al., `zuko.flows`) built from a ModelConfig, for the zuko posterior and prior families.

zuko is the dependency and vaebench the harness: no flow code is copied here. A zuko `Flow` is a lazy
distribution: `flow(c)` builds the distribution given a context c, and `flow.transform(c)` the transform T
that maps a sample to the base side (zuko's density direction, the parallel pass): `T.call_and_ladj(x)`
returns `(T(x), log|det dT/dx|)`, the `(y, log_abs_det)` convention of `vae_core.flows`.

The options a grid file sets (`model.zuko_bins`, `zuko_signal`, `zuko_degree`, `zuko_polynomials`; 0 = zuko's
default for the flow) go to the flow's constructor where it declares them; set for a flow that does not take
them, they are a ConfigError naming the key. Steps (`transforms`) and the hyper network's hidden widths (two
layers of `flow_hidden`, 0 = 2 * latent_dim) are the keys every flow family shares; NAF's and UNAF's univariate monotonic network keeps zuko's default (two layers of 64:
it runs once per latent dimension, so widths that grow with latent_dim would make it quadratic in it).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch
import zuko
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vae_core.config import ConfigError, ModelConfig

FLOWS: dict[str, type[zuko.flows.Flow]] = {
    "nsf": zuko.flows.NSF,  # neural spline flow (Durkan et al. 2019), rational-quadratic splines
    "naf": zuko.flows.NAF,  # neural autoregressive flow (Huang et al. 2018)
    "bpf": zuko.flows.BPF,  # Bernstein-polynomial flow (Ramasinghe et al. 2021)
    "zuko-maf": zuko.flows.MAF,  # zuko's affine masked autoregressive flow (Papamakarios et al. 2017)
}
"""The short names; any other zuko flow class is named by its path, e.g. 'zuko.flows:UNAF', 'zuko.flows:SOSPF' (not
short names: their 32-point quadrature makes the contract check take minutes, see docs/families/zuko.md)."""

BISECTION_INVERSES = (zuko.flows.NAF, zuko.flows.UNAF, zuko.flows.SOSPF, zuko.flows.BPF, zuko.flows.GF)
"""Flows whose monotonic transforms zuko inverts by bisection to 1e-6 (`zuko.transforms.MonotonicTransform`):
their samples (a prior's `sample`) are exact to ~1e-6, their log-densities to rounding."""


def round_trip_tolerance(flow_class: type) -> float:
    """How close T^-1(T(z)) comes back to z: 1e-5 for a bisection inverse, rounding (1e-8) otherwise."""
    return 1e-5 if issubclass(flow_class, BISECTION_INVERSES) else 1e-8


OPTIONS = {"bins": "zuko_bins", "signal": "zuko_signal", "degree": "zuko_degree", "polynomials": "zuko_polynomials"}
"""zuko constructor argument -> `model.` key."""


def is_zuko_flow(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, zuko.flows.Flow)


def constructor_arguments(flow_class: type) -> set[str]:
    """The named arguments of a flow's constructor, and of the constructors its **kwargs reach up the MRO (zuko's
    NSF takes `bins` and hands `transforms` on to MAF)."""
    names: set[str] = set()
    for cls in flow_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


def build(flow_class: type[zuko.flows.Flow], cfg: ModelConfig, context: int, steps: int) -> zuko.flows.Flow:
    """`flow_class` over latent_dim features with `context` context features and `steps` transforms."""
    accepted = constructor_arguments(flow_class)
    kwargs: dict[str, Any] = {"features": cfg.latent_dim, "context": context}
    if "transforms" in accepted:
        kwargs["transforms"] = steps
    kwargs["hidden_features"] = (cfg.made_hidden, cfg.made_hidden)
    for arg, key in OPTIONS.items():
        value = getattr(cfg, key)
        if not value:
            continue
        if arg not in accepted:
            takes = [OPTIONS[a] for a in OPTIONS if a in accepted]
            raise ConfigError(f"'model.{key}' does not apply to zuko's {flow_class.__name__} (it takes: "
                              f"{', '.join(takes) or 'none of the zuko_* keys'})")
        kwargs[arg] = value
    return flow_class(**kwargs)


class _Outputs(TorchDispatchMode):
    """Counts the elements of every tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.floats = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.floats += sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out


def floats_per_sample(run: Callable[[int], Any]) -> int:
    """An upper bound on the floats one more sample costs `run(n)` under no_grad (what sizes IW chunks): the
    elements of every tensor its operations return (freed or not, views included) at n = 4 minus n = 2, / 2.
    It counts what autograd would not save, e.g. a Gauss-Legendre integrand at its nodes (UNAF, SOSPF)."""
    def outputs(n: int) -> int:
        with torch.no_grad(), _Outputs() as counter:
            run(n)
        return counter.floats

    return max(0, math.ceil((outputs(4) - outputs(2)) / 2))


def base_normal(distribution: torch.distributions.Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) of a zuko flow's diagonal-Normal base (every flow of `FLOWS` has one)."""
    base = distribution.base
    inner = getattr(base, "base_dist", base)
    if not isinstance(inner, torch.distributions.Normal):
        raise ConfigError(f"zuko flow base {type(base).__name__} is not a diagonal Normal: cannot sample it "
                          "from a generator")
    return inner.loc, inner.scale
