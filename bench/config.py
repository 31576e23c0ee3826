"""Run configuration: the `[train]`, `[data]`, `[eval]` tables and one fully-resolved, frozen run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bench.optim import OPTIMIZERS
from vae_core.config import ConfigError, ModelConfig, choice, to_dict


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = choice("adam", tuple(OPTIMIZERS))
    lr: float = 1e-3
    batch_size: int = 128
    max_steps: int = 10000
    eval_every: int = 1000
    patience: int = 0
    kl_warmup_steps: int = 0
    seed: int = 0
    grad_clip: float = 0.0
    check_every: int = 100
    compile: bool = True

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "max_steps": self.max_steps, "eval_every": self.eval_every,
                    "check_every": self.check_every}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"'train.{key}' must be >= 1; got {value}")
        if not self.lr > 0:
            raise ConfigError(f"'train.lr' must be > 0; got {self.lr}")
        for key in ("patience", "kl_warmup_steps", "grad_clip"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'train.{key}' must be >= 0; got {getattr(self, key)}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = choice("binarized-mnist", ("binarized-mnist", "mnist-dynamic"))
    max_eval_images: int = 0
    eval_subset_seed: int = 1234
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        if self.max_eval_images < 0:
            raise ConfigError(f"'data.max_eval_images' must be >= 0 (0 = full sets); got {self.max_eval_images}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"'data.eval_batch_size' must be >= 1; got {self.eval_batch_size}")


@dataclass(frozen=True)
class EvalConfig:
    iw_samples: int = 1000
    valid_iw_samples: int = 5
    elbo_samples: int = 1

    def __post_init__(self) -> None:
        if self.iw_samples < 1:
            raise ConfigError(f"'eval.iw_samples' must be >= 1; got {self.iw_samples}")
        if self.valid_iw_samples < 0:
            raise ConfigError(f"'eval.valid_iw_samples' must be >= 0 (0 = off); got {self.valid_iw_samples}")
        if self.elbo_samples < 1:
            raise ConfigError(f"'eval.elbo_samples' must be >= 1; got {self.elbo_samples}")


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig, "eval": EvalConfig}


@dataclass(frozen=True)
class RunConfig:
    """One run: plain data, fully resolved. `run_id` = readable prefix + hash of the resolved sections."""

    grid: str
    variant: str
    label: str
    model: ModelConfig
    train: TrainConfig
    data: DataConfig
    eval: EvalConfig

    def sections(self) -> dict[str, dict[str, Any]]:
        return {name: to_dict(getattr(self, name)) for name in SECTIONS}

    def flat(self) -> dict[str, Any]:
        """Every resolved key under its dotted name, e.g. {'model.latent_dim': 32, ...}."""
        return {f"{s}.{k}": v for s, table in self.sections().items() for k, v in table.items()}

    @property
    def config_hash(self) -> str:
        canonical = json.dumps(self.sections(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def run_id(self) -> str:
        return f"{self.label}-{self.config_hash[:8]}"
