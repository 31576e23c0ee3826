"""Grid files (TOML) -> a list of frozen RunConfigs: variants x the product of axes. Pure, no I/O but reading.

A grid file has fixed tables `[model]`, `[train]`, `[data]`, `[eval]`; named `[[variant]]` tables that
override keys by dotted path; and `[grid]`, mapping dotted keys to lists of values (the axes). Quoted
("train.seed") and unquoted (train.seed) dotted keys mean the same.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from pathlib import Path
from typing import Any, Mapping

from bench.errors import UserError
from bench.grid.config import EPOCH_KEYS, SECTIONS, RunConfig
from vae_core.config import ConfigError, field_names, from_dict, suggest

TOP_LEVEL = ("name", "model", "train", "data", "eval", "variant", "grid")
VALID_KEYS = [f"{s}.{k}" for s, cls in SECTIONS.items() for k in field_names(cls)]


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'posterior': 'iaf'}, 'train.seed': 0} -> {'model.posterior': 'iaf', 'train.seed': 0}."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_key(key: str, where: str) -> None:
    if key not in VALID_KEYS:
        raise ConfigError(f"{where}: unknown key '{key}'{suggest(key, VALID_KEYS)}")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-") or "x"


def axis_label(key: str, value: Any) -> str:
    return f"{key.rsplit('.', 1)[-1]}{slug(value)}"


def parse_grid(raw: Mapping[str, Any], default_name: str = "grid") -> list[RunConfig]:
    """Expand a parsed grid table into run configs; raises ConfigError naming the key at fault."""
    for key in raw:
        if key not in TOP_LEVEL:
            raise ConfigError(f"unknown top-level key '{key}'{suggest(key, TOP_LEVEL)}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"'name' must be a non-empty string; got {name!r}")
    base: dict[str, Any] = {}
    for section in SECTIONS:
        table = raw.get(section, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"'{section}' must be a table")
        for key, value in flatten(table, f"{section}.").items():
            check_key(key, f"[{section}]")
            base[key] = value

    axes = flatten(raw.get("grid", {}))
    for key, values in axes.items():
        check_key(key, "[grid]")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"[grid]: '{key}' must be a non-empty list of values; got {values!r}")

    variants = raw.get("variant", [{"name": name}])
    if not isinstance(variants, list):
        raise ConfigError("'variant' must be an array of tables ([[variant]])")
    seen: set[str] = set()
    runs: list[RunConfig] = []
    for i, variant in enumerate(variants):
        overrides = flatten(variant)
        vname = overrides.pop("name", None)
        if not isinstance(vname, str) or not vname:
            raise ConfigError(f"variant #{i + 1}: 'name' must be a non-empty string")
        if vname in seen:
            raise ConfigError(f"variant '{vname}' is defined twice")
        seen.add(vname)
        for key in overrides:
            check_key(key, f"variant '{vname}'")
            if key in axes:
                raise ConfigError(f"variant '{vname}': '{key}' is set by the variant and by the [grid] axis")
        for combo in itertools.product(*axes.values()):
            point = dict(zip(axes, combo))
            merged = {**base, **overrides, **point}
            label = "-".join([slug(name), slug(vname), *(axis_label(k, v) for k, v in point.items())])
            runs.append(resolve(merged, name, vname, label))
    first: dict[str, RunConfig] = {}
    for run in runs:
        other = first.setdefault(run.config_hash, run)
        if other is not run:
            raise ConfigError(f"runs {other.label} and {run.label} resolve to the same config: make variants differ")
    return runs


def resolve(flat: Mapping[str, Any], grid: str, variant: str, label: str) -> RunConfig:
    for epochs, steps in EPOCH_KEYS.items():
        if f"train.{epochs}" in flat and f"train.{steps}" in flat:
            raise ConfigError(f"variant '{variant}': give 'train.{epochs}' or 'train.{steps}', not both")
    tables: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in flat.items():
        section, field = key.split(".", 1)
        tables[section][field] = value
    try:
        parsed = {s: from_dict(cls, tables[s], f"{s}.") for s, cls in SECTIONS.items()}
        return RunConfig(grid=grid, variant=variant, label=label, **parsed)
    except ConfigError as err:
        raise ConfigError(f"variant '{variant}': {err}") from None


def load_grid(path: str | Path) -> list[RunConfig]:
    """Read and expand a grid file; every problem is a one-line UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file {path} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: invalid TOML: {err}") from None
    try:
        return parse_grid(raw, default_name=path.stem)
    except ConfigError as err:
        raise UserError(f"{path}: {err}") from None
