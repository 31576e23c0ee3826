"""Run configuration: the `[train]`, `[data]`, `[eval]` tables and one fully-resolved, frozen run."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any

from bench.training.optim import EPS, LR_SCHEDULES, OPTIMIZERS
from vae_core.config import ConfigError, ModelConfig, choice, to_dict
from vae_core.data.catalog import DEFAULT_SPLIT_SEED, get_spec, train_examples
from vae_core.data.errors import DataError
from vae_core.likelihoods import likelihood_for
from vae_core.probes import check_model

TRAIN_EXAMPLES = train_examples()
"""Training-set size of each built-in dataset, from the registry (code asks `get_spec(name).splits[0]`, which
also covers dataset plugins)."""


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
    objective: str = choice("elbo", ("elbo", "iwae"))
    objective_samples: int = 1
    optimizer_eps: float = EPS
    grad_normalize: str = choice("none", ("none", "per-tensor"))
    select: str = choice("best-valid", ("best-valid", "last"))
    autocast: str = choice("none", ("none", "bf16"))
    cuda_graphs: bool = False
    lr_schedule: str = choice("constant", tuple(LR_SCHEDULES))
    lr_decay: float = 1.0
    lr_decay_epochs: int = 1
    max_epochs: int = 0
    eval_every_epochs: int = 0
    kl_warmup_epochs: int = 0
    patience_epochs: int = 0
    patience_after_warmup: bool = False

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "max_steps": self.max_steps, "eval_every": self.eval_every,
                    "check_every": self.check_every, "objective_samples": self.objective_samples,
                    "lr_decay_epochs": self.lr_decay_epochs}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"'train.{key}' must be >= 1; got {value}")
        for key in ("lr", "optimizer_eps"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"'train.{key}' must be > 0; got {getattr(self, key)}")
        for key in ("patience", "kl_warmup_steps", "grad_clip", "max_epochs", "eval_every_epochs",
                    "kl_warmup_epochs", "patience_epochs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'train.{key}' must be >= 0; got {getattr(self, key)}")
        if self.cuda_graphs and not self.compile:
            raise ConfigError("'train.cuda_graphs' needs 'train.compile' = true (the graphs capture the compiled step)")
        if self.patience_after_warmup and not (self.patience or self.patience_epochs):
            raise ConfigError("'train.patience_after_warmup' needs 'train.patience' or 'train.patience_epochs' > 0")
        if self.select == "last" and (self.patience or self.patience_epochs):
            raise ConfigError("'train.patience' needs 'train.select' = 'best-valid' (early stopping watches the "
                              "best validation)")
        decays = self.lr_schedule in ("step", "exponential")
        if decays and not 0 < self.lr_decay < 1:
            raise ConfigError(f"'train.lr_decay' must be in (0, 1) for lr_schedule {self.lr_schedule!r}; "
                              f"got {self.lr_decay}")
        if not decays and self.lr_decay != 1.0:
            raise ConfigError(f"'train.lr_decay' is used by lr_schedule 'step' or 'exponential' only; "
                              f"lr_schedule is {self.lr_schedule!r}")
        if self.lr_schedule != "step" and self.lr_decay_epochs != 1:
            raise ConfigError(f"'train.lr_decay_epochs' is used by lr_schedule 'step' only; "
                              f"lr_schedule is {self.lr_schedule!r}")

    @property
    def counts_epochs(self) -> bool:
        """True when a duration or the lr schedule is counted in epochs of the training set."""
        return self.lr_schedule != "constant" or any(getattr(self, k) for k in EPOCH_KEYS)

    def steps_per_epoch(self, dataset: str) -> int:
        """Optimizer steps in one pass over the training set (the last partial batch is dropped)."""
        return max(1, get_spec(dataset).splits[0] // self.batch_size)

    def in_steps(self, dataset: str) -> "TrainConfig":
        """The config with every duration given in epochs (key `*_epochs` > 0) also set in steps: max_steps,
        eval_every and kl_warmup_steps = epochs x steps per epoch; patience = validations spanning
        patience_epochs."""
        spe = self.steps_per_epoch(dataset)
        changes = {}
        for epochs_key, key in EPOCH_KEYS.items():
            epochs = getattr(self, epochs_key)
            if not epochs or key == "patience":  # patience counts validations: set below
                continue
            if getattr(self, key) not in (TrainConfig.__dataclass_fields__[key].default, epochs * spe):
                raise ConfigError(f"give 'train.{epochs_key}' or 'train.{key}', not both")
            changes[key] = epochs * spe
        if self.patience_epochs:
            changes["patience"] = math.ceil(self.patience_epochs * spe / changes.get("eval_every", self.eval_every))
        return replace(self, **changes) if changes else self


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "binarized-mnist"
    max_eval_images: int = 0
    eval_subset_seed: int = 1234
    eval_batch_size: int = 500
    split_seed: int = DEFAULT_SPLIT_SEED  # orders the images of datasets without a published split (frey, omniglot)

    def __post_init__(self) -> None:
        try:
            get_spec(self.dataset)  # a built-in, a `vaebench.datasets` plugin or 'module.path:NAME'
        except DataError as err:
            raise ConfigError(f"'data.dataset': {err}") from None
        if self.max_eval_images < 0:
            raise ConfigError(f"'data.max_eval_images' must be >= 0 (0 = full sets); got {self.max_eval_images}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"'data.eval_batch_size' must be >= 1; got {self.eval_batch_size}")


@dataclass(frozen=True)
class EvalConfig:
    iw_samples: int = 1000
    valid_iw_samples: int = 5
    elbo_samples: int = 1
    gaps: bool = False  # inference gaps and posterior diagnostics at test time (docs/gaps.md)
    gap_images: int = 50  # test images the per-image fits run on (a seeded random subset)
    gap_seed: int = 4321  # picks the subset and seeds the fits' noise
    gap_lr: float = 1e-3  # Adam lr of the per-image fits
    gap_samples: int = 10  # Monte-Carlo samples per fit step
    gap_check_every: int = 50  # fit steps per loss check (the loss is averaged over them)
    gap_patience: int = 5  # checks without improvement before an image's fit stops
    gap_max_steps: int = 2000  # cap on fit steps
    gap_elbo_samples: int = 1000  # samples of every ELBO of the decomposition (L[q], L[q*], L[q*_FFG])
    gap_au_samples: int = 100  # samples of E_q[z] for the active units of a flow family

    def __post_init__(self) -> None:
        for key in ("gap_images", "gap_samples", "gap_check_every", "gap_patience", "gap_max_steps",
                    "gap_elbo_samples", "gap_au_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'eval.{key}' must be >= 1; got {getattr(self, key)}")
        if not self.gap_lr > 0:
            raise ConfigError(f"'eval.gap_lr' must be > 0; got {self.gap_lr}")
        if self.iw_samples < 1:
            raise ConfigError(f"'eval.iw_samples' must be >= 1; got {self.iw_samples}")
        if self.valid_iw_samples < 0:
            raise ConfigError(f"'eval.valid_iw_samples' must be >= 0 (0 = off); got {self.valid_iw_samples}")
        if self.elbo_samples < 1:
            raise ConfigError(f"'eval.elbo_samples' must be >= 1; got {self.elbo_samples}")


EPOCH_KEYS = {"max_epochs": "max_steps", "eval_every_epochs": "eval_every", "kl_warmup_epochs": "kl_warmup_steps",
              "patience_epochs": "patience"}  # a duration is given in epochs or in steps, never both

SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig, "eval": EvalConfig}
HASH_VERSION = 1


@functools.cache
def defaults() -> dict[str, dict[str, Any]]:
    """Every section's default values, as plain data (computed once: read, never modify)."""
    return {name: to_dict(cls()) for name, cls in SECTIONS.items()}


def model_for_dataset(model: ModelConfig, dataset: str) -> ModelConfig:
    """The model with data_dim and image_shape taken from the dataset (where left at their 28x28 defaults), or a
    ConfigError when its shape or likelihood does not fit the dataset (Bernoulli on 8-bit data, say)."""
    spec = get_spec(dataset)
    likelihood_for(model.likelihood)  # an unknown name first, then whether it fits
    height, width = spec.image_shape
    default = ModelConfig.__dataclass_fields__
    if model.data_dim == default["data_dim"].default and model.image_shape == default["image_shape"].default:
        model = replace(model, data_dim=height * width, image_shape=spec.image_shape)
    if model.image_shape != spec.image_shape:
        raise ConfigError(f"'model.image_shape' = {list(model.image_shape)} does not fit dataset {dataset!r} "
                          f"({height}x{width} images)")
    if model.likelihood not in spec.likelihoods:
        raise ConfigError(f"'model.likelihood' = {model.likelihood!r} does not fit dataset {dataset!r} "
                          f"({spec.kind} data); use {' or '.join(map(repr, spec.likelihoods))}")
    return model


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", model_for_dataset(self.model, self.data.dataset))
        object.__setattr__(self, "train", self.train.in_steps(self.data.dataset))
        if self.train.objective == "iwae" and self.model.kl != "mc":
            raise ConfigError("'train.objective' = 'iwae' needs 'model.kl' = 'mc' (the bound needs per-sample "
                              "log-weights)")
        check_model(self.model)  # the families resolve and accept the config, before anything runs

    @property
    def steps_per_epoch(self) -> int:
        return self.train.steps_per_epoch(self.data.dataset)

    def sections(self) -> dict[str, dict[str, Any]]:
        return {name: to_dict(getattr(self, name)) for name in SECTIONS}

    def flat(self) -> dict[str, Any]:
        """Every resolved key under its dotted name, e.g. {'model.latent_dim': 32, ...}."""
        return {f"{s}.{k}": v for s, table in self.sections().items() for k, v in table.items()}

    @property
    def config_hash(self) -> str:
        """Hash of the keys that differ from their defaults (`defaults()`), so adding a new key with a default
        that keeps today's behaviour leaves every existing run id, and its resumable state, valid. Changing a
        default changes what runs mean: bump HASH_VERSION (tests/test_runner.py holds the defaults)."""
        default = defaults()
        changed = {s: {k: v for k, v in table.items() if default[s][k] != v}
                   for s, table in self.sections().items()}
        canonical = json.dumps({"version": HASH_VERSION, **changed}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def run_id(self) -> str:
        return f"{self.label}-{self.config_hash[:8]}"
