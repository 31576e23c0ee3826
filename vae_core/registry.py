"""The one place family names resolve: posterior families, priors and datasets.

A name is, in this order of lookup:
- a built-in: a key of `POSTERIORS` (vae_core.posteriors), `PRIORS` (vae_core.priors) or `DATASETS`
  (vae_core.data.catalog); origin "builtin";
- an entry point of an installed distribution, in the group `vaebench.posteriors`, `vaebench.priors` or
  `vaebench.datasets`; origin "dist==version";
- "module.path:ClassName", imported on first use (the module must be importable wherever the runs execute);
  origin the name itself.

A plugin's or dotted path's class that is not a family but can be made one (a zuko flow class:
`Kind.adapt`) is wrapped into its family.

Resolution is by name, in the process that builds the model (a worker resolves the names of its run's config
itself), so no class is ever pickled. Every problem is a one-line `ConfigError` naming the key: an unknown
name (with the closest suggested), a module that does not import (its exception's first line), a class that
does not implement the interface, an entry point that shadows a built-in, a `from_config` that rejects the
config (`vae_core.probes.check_model`, run when a run config is resolved, so before anything runs).
The built-in tables are found by name too (`Kind.builtins`), so this module imports no family: it sits below
the families and the data layer, which may use it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from vae_core.config import ConfigError, ModelConfig, suggest

BUILTIN = "builtin"


@dataclass(frozen=True)
class Kind:
    """What is resolved: its config key, entry-point group, built-in table and interface. The table and the base
    class are 'module:NAME' paths, imported on first use by the same lookup as a plugin's, so the registry
    imports no family module and every family module may import the registry's layer below it."""

    key: str
    group: str
    builtins: str  # 'module:TABLE', a name -> object mapping
    methods: tuple[str, ...]  # callables a class must have (unless it subclasses `base`)
    base: str | None = None  # 'module:Class'
    adapt: str | None = None  # 'module:function' turning a foreign class (e.g. a zuko flow) into a family


KINDS: dict[str, Kind] = {
    "posterior": Kind("model.posterior", "vaebench.posteriors", "vae_core.posteriors:POSTERIORS",
                      ("from_noise", "from_config"), "vae_core.posteriors.base:Posterior",
                      "vae_core.posteriors.zuko:adapt"),
    "prior": Kind("model.prior", "vaebench.priors", "vae_core.priors:PRIORS", ("log_prob", "sample", "from_config"),
                  adapt="vae_core.priors.zuko:adapt"),
    "dataset": Kind("data.dataset", "vaebench.datasets", "vae_core.data.catalog:DATASETS", ()),
}


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def builtins(kind: str) -> Mapping[str, Any]:
    """The built-in table of a kind (name -> class or dataset spec)."""
    return _load(KINDS[kind].builtins)


@dataclass(frozen=True)
class Resolved:
    """A resolved name: the class (or dataset spec) and where it came from (`builtin`, `dist==version` or
    `module:Class`)."""

    kind: str
    name: str
    obj: Any
    origin: str


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


@functools.cache
def entry_points(kind: str) -> dict[str, tuple[importlib.metadata.EntryPoint, ...]]:
    """Installed entry points of a kind's group, by name (a name may come from more than one distribution)."""
    found: dict[str, list] = {}
    for ep in importlib.metadata.entry_points(group=KINDS[kind].group):
        found.setdefault(ep.name, []).append(ep)
    return {name: tuple(eps) for name, eps in found.items()}


def names(kind: str) -> list[str]:
    """Built-in names, then installed plugin names (dotted paths are not listed)."""
    builtin = list(builtins(kind))
    return builtin + [n for n in sorted(entry_points(kind)) if n not in builtin]


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name}=={dist.version}" if dist is not None else f"entry point {ep.value}"


def _import(kind: str, name: str, module: str, attr: str, origin: str) -> Any:
    where = f"'{KINDS[kind].key}' = {name!r}"
    try:
        loaded = importlib.import_module(module)
    except Exception as err:  # the plugin's own failure, whatever it is, reported in one line
        raise ConfigError(f"{where}: module '{module}' ({origin}) does not import: {_first_line(err)}") from None
    obj = loaded
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: module '{module}' ({origin}) has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


def check_interface(kind: str, name: str, obj: Any, origin: str) -> None:
    """A posterior is a `Posterior` subclass or has `from_noise` and `from_config`; a prior has `log_prob`,
    `sample` and `from_config`."""
    spec = KINDS[kind]
    if not spec.methods:
        return
    where = f"'{spec.key}' = {name!r} ({origin})"
    if not isinstance(obj, type):
        raise ConfigError(f"{where} is a {type(obj).__name__}, not a class implementing the {kind} interface")
    if spec.base is not None and issubclass(obj, _load(spec.base)):
        return
    missing = [m for m in spec.methods if not callable(getattr(obj, m, None))]
    if missing:
        raise ConfigError(f"{where}: {obj.__name__} does not implement the {kind} interface: no "
                          f"{', '.join(missing)}")


@functools.cache
def resolve(kind: str, name: str) -> Resolved:
    """The class behind a name (see the module docstring); cached per process."""
    spec = KINDS[kind]
    table = builtins(kind)
    plugins = entry_points(kind)
    if name in plugins:
        eps = plugins[name]
        if name in table:
            raise ConfigError(f"'{spec.key}' = {name!r}: the plugin from {_distribution(eps[0])} shadows the "
                              f"built-in {kind} {name!r}; the plugin must use another name")
        if len(eps) > 1:
            raise ConfigError(f"'{spec.key}' = {name!r} is declared by several distributions "
                              f"({', '.join(_distribution(ep) for ep in eps)}); uninstall all but one")
    if name in table:
        resolved = Resolved(kind, name, table[name], BUILTIN)
    elif name in plugins:
        ep = plugins[name][0]
        origin = _distribution(ep)
        module, _, attr = ep.value.partition(":")
        resolved = Resolved(kind, name, _import(kind, name, module.strip(), attr.strip(), origin), origin)
    elif ":" in name:
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ConfigError(f"'{spec.key}' = {name!r}: a dotted path is 'module.path:ClassName'")
        resolved = Resolved(kind, name, _import(kind, name, module, attr, name), name)
    else:
        valid = names(kind)
        raise ConfigError(f"'{spec.key}' must be one of {', '.join(map(repr, valid))} or 'module.path:ClassName'; "
                          f"got {name!r}{suggest(name, valid)}")
    if spec.adapt is not None and resolved.origin != BUILTIN:
        resolved = Resolved(kind, name, _load(spec.adapt)(resolved.obj), resolved.origin)
    check_interface(kind, name, resolved.obj, resolved.origin)
    return resolved


def clear_cache() -> None:
    """Forget resolved names and installed entry points (after installing a plugin in this process)."""
    resolve.cache_clear()
    entry_points.cache_clear()


def origins(cfg: ModelConfig) -> dict[str, str]:
    """The row's provenance columns: {'posterior_origin': ..., 'prior_origin': ...}."""
    return {"posterior_origin": resolve("posterior", cfg.posterior).origin,
            "prior_origin": resolve("prior", cfg.prior).origin}


def _construct(resolved: Resolved, build: Callable[[], Any]) -> Any:
    """`build()` (the family's `from_config`); an exception there is a one-line ConfigError naming the family."""
    try:
        return build()
    except ConfigError as err:
        raise ConfigError(f"'{KINDS[resolved.kind].key}' = {resolved.name!r}: {err}") from None
    except Exception as err:  # a plugin may reject a config with any exception; report it in one line
        raise ConfigError(f"'{KINDS[resolved.kind].key}' = {resolved.name!r} ({resolved.origin}): from_config "
                          f"rejects the config: {_first_line(err)}") from None


def build_posterior(cfg: ModelConfig) -> Any:
    """The posterior family `cfg.posterior`, built by its `from_config(cfg)`."""
    resolved = resolve("posterior", cfg.posterior)
    return _construct(resolved, lambda: resolved.obj.from_config(cfg))


def build_prior(cfg: ModelConfig, encoder: Any) -> Any:
    """The prior `cfg.prior`, built by its `from_config(cfg, encoder)`."""
    resolved = resolve("prior", cfg.prior)
    return _construct(resolved, lambda: resolved.obj.from_config(cfg, encoder))
