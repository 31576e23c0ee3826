"""Typed, validated configuration objects built from plain dicts (TOML tables).

`from_dict(cls, raw, where)` turns a mapping into a frozen dataclass, rejecting unknown keys (with the
closest valid key suggested), wrong types and values outside a field's `choices` with one-line
`ConfigError`s that name the key. Classes add cross-field checks in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the cause in one line."""


def choice(default: Any, choices: tuple[Any, ...]) -> Any:
    """A dataclass field restricted to `choices`."""
    return field(default=default, metadata={"choices": choices})


def suggest(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (inner,) = typing.get_args(tp)
            return tuple(_coerce(v, inner, key) for v in value)
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config annotation {tp!r}")
    raise ConfigError(f"'{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def from_dict(cls: type, raw: Mapping[str, Any], where: str = "") -> Any:
    """Build the frozen dataclass `cls` from `raw`; `where` prefixes key names in messages (e.g. 'model.')."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"'{where.rstrip('.') or cls.__name__}' must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = field_names(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"unknown key '{where}{key}'{suggest(key, names)}")
        value = _coerce(value, hints[key], where + key)
        choices = next(f for f in dataclasses.fields(cls) if f.name == key).metadata.get("choices")
        if choices is not None and value not in choices:
            hint = suggest(value, map(str, choices)) if isinstance(value, str) else ""
            raise ConfigError(f"'{where}{key}' must be one of {', '.join(map(repr, choices))}; got {value!r}{hint}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}{err}" if where and not str(err).startswith("'") else str(err)) from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (tuples become lists, so it round-trips through TOML/JSON)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


@dataclass(frozen=True)
class ModelConfig:
    """The `[model]` table: architecture, posterior family, prior family (see docs/grid-files.md).

    `posterior` and `prior` are names that `vae_core.registry` resolves (built-in, plugin or
    'module.path:ClassName'); they are checked where they are resolved, not here, so this module imports no
    family."""

    data_dim: int = 784
    architecture: str = choice("mlp", ("mlp", "conv", "gated-conv"))
    hidden: list[int] = (256, 256)
    latent_dim: int = 32
    layers: int = choice(1, (1, 2))
    top_latent_dim: int = 0
    top_hidden: list[int] = ()
    top_posterior: str = ""
    posterior: str = "mean-field"
    posterior_flow_steps: int = 2
    posterior_orthogonal_vectors: int = 0
    posterior_householder_reflections: int = 0
    prior: str = "standard"
    prior_components: int = 10
    prior_flow_steps: int = 2
    flow_hidden: int = 0
    zuko_bins: int = 0
    zuko_signal: int = 0
    zuko_degree: int = 0
    zuko_polynomials: int = 0
    activation: str = choice("relu", ("relu", "tanh", "gated"))
    init: str = choice("torch", ("torch", "he", "glorot"))
    prior_pseudo_inputs: str = choice("sigmoid", ("sigmoid", "hardtanh"))
    scale: str = choice("softplus", ("softplus", "exp", "hardtanh-logvar", "softplus-variance"))
    kl: str = choice("mc", ("mc", "analytic"))
    likelihood: str = "bernoulli"
    image_shape: list[int] = (28, 28)

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, msg: str) -> None:
            if not ok:
                raise ConfigError(f"'model.{key}' {msg}")

        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        object.__setattr__(self, "top_hidden", tuple(self.top_hidden))
        need(self.data_dim >= 1, "data_dim", f"must be >= 1; got {self.data_dim}")
        need(len(self.image_shape) == 2 and min(self.image_shape) >= 1, "image_shape",
             f"must be [height, width] with both >= 1; got {list(self.image_shape)}")
        if self.image_shape == (28, 28) and self.data_dim != 784:
            object.__setattr__(self, "image_shape", (1, self.data_dim))  # left at its default: a flat vector
        height, width = self.image_shape
        need(height * width == self.data_dim, "image_shape",
             f"= {list(self.image_shape)} has {height * width} pixels but 'model.data_dim' is {self.data_dim}")
        need(self.latent_dim >= 1, "latent_dim", f"must be >= 1; got {self.latent_dim}")
        need(self.top_latent_dim >= 0, "top_latent_dim", f"must be >= 1 (0 = latent_dim); got {self.top_latent_dim}")
        need(all(h >= 1 for h in self.top_hidden), "top_hidden", f"sizes must be >= 1; got {list(self.top_hidden)}")
        need(self.layers == 2 or (self.top_latent_dim == 0 and not self.top_hidden and not self.top_posterior),
             "layers", "= 1: 'model.top_latent_dim', 'model.top_hidden' and 'model.top_posterior' need layers = 2")
        need(self.layers == 1 or self.kl == "mc", "kl", "= 'analytic' needs 'model.layers' = 1")
        need(all(h >= 1 for h in self.hidden), "hidden", f"sizes must be >= 1; got {list(self.hidden)}")
        need(self.posterior_flow_steps >= 1, "posterior_flow_steps", f"must be >= 1; got {self.posterior_flow_steps}")
        need(0 <= self.posterior_orthogonal_vectors <= self.latent_dim, "posterior_orthogonal_vectors",
             f"must be in 1..latent_dim = {self.latent_dim} (0 = latent_dim); got {self.posterior_orthogonal_vectors}")
        need(self.posterior_orthogonal_vectors == 0 or self.posterior == "sylvester-orthogonal",
             "posterior_orthogonal_vectors",
             f"needs posterior 'sylvester-orthogonal'; got posterior {self.posterior!r}")
        need(self.posterior_householder_reflections >= 0, "posterior_householder_reflections",
             f"must be >= 1 (0 = min(8, latent_dim)); got {self.posterior_householder_reflections}")
        need(self.prior_flow_steps >= 1, "prior_flow_steps", f"must be >= 1; got {self.prior_flow_steps}")
        need(self.prior_components >= 1, "prior_components", f"must be >= 1; got {self.prior_components}")
        for key in ("zuko_bins", "zuko_signal", "zuko_degree", "zuko_polynomials"):
            need(getattr(self, key) >= 0, key, f"must be >= 1 (0 = zuko's default for the flow); got {getattr(self, key)}")
        need(self.flow_hidden >= 0, "flow_hidden", f"must be >= 0 (0 = 2 * latent_dim); got {self.flow_hidden}")
        need(self.flow_hidden == 0 or self.flow_hidden >= self.latent_dim - 1, "flow_hidden",
             f"= {self.flow_hidden} is below latent_dim - 1 = {self.latent_dim - 1}: some inputs would reach no output")
        need(self.kl == "mc" or (self.posterior == "mean-field" and self.prior == "standard"), "kl",
             "= 'analytic' needs posterior 'mean-field' and prior 'standard'")
        need(self.prior_pseudo_inputs == "sigmoid" or self.prior == "vamp", "prior_pseudo_inputs",
             f"= {self.prior_pseudo_inputs!r} needs prior 'vamp'; got prior {self.prior!r}")
        need(self.architecture != "conv" or (height % 4 == 0 and width % 4 == 0), "architecture",
             f"= 'conv' needs image_shape sides divisible by 4 (two stride-2 convolutions); "
             f"got {list(self.image_shape)}")
        need(self.architecture != "gated-conv" or (height % 4 == 0 and width % 4 == 0), "architecture",
             f"= 'gated-conv' needs image_shape sides divisible by 4; got {list(self.image_shape)}")

    @property
    def orthogonal_vectors(self) -> int:
        """M, the orthonormal columns of an O-SNF's Q (posterior_orthogonal_vectors; 0 = latent_dim)."""
        return self.posterior_orthogonal_vectors or self.latent_dim

    @property
    def householder_reflections(self) -> int:
        """H, the reflections whose product is an H-SNF's Q (posterior_householder_reflections; 0 = min(8,
        latent_dim): the official code's 8, but never more than D, since any D x D orthogonal matrix is a product
        of at most D reflections and more only make Q's gradient worse conditioned)."""
        return self.posterior_householder_reflections or min(8, self.latent_dim)

    @property
    def top_dim(self) -> int:
        """D2, the top latent layer's size (two-layer models; top_latent_dim, 0 = latent_dim); 0 for one layer."""
        return (self.top_latent_dim or self.latent_dim) if self.layers == 2 else 0

    @property
    def noise_dim(self) -> int:
        """The standard-normal noise per sample that drives the posterior: z1's D, plus z2's D2 with two layers
        (noise [k, B, D + D2], split as [eps1, eps2])."""
        return self.latent_dim + self.top_dim

    @property
    def made_hidden(self) -> int:
        return self.flow_hidden or 2 * self.latent_dim

    @classmethod
    def parse(cls, raw: "ModelConfig | Mapping[str, Any]") -> "ModelConfig":
        return raw if isinstance(raw, ModelConfig) else from_dict(cls, raw, "model.")
