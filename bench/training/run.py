"""One run's lifecycle, exactly what it has when trained alone: its own initial weights (seeded by its seed),
its own batch order and noise (its own generators), lr, warm-up, clipping norm and patience; validation every
`eval_every` steps, its checkpoint (best on validation, or the last: `train.select`), early stopping,
divergence, its resumable state. Its parameters live in a row of its `bench.training.stack.Stack`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd
import torch

from bench.grid.config import RunConfig
from bench.storage import ResultsLayout, write_parquet, write_torch
from vae_core.data import binarize

DATA_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class RunData:
    """Splits resident on the run's device; `dynamic` means train pixels are re-binarized every batch."""

    train: torch.Tensor  # [N, P]
    valid: torch.Tensor  # [M, P], binarized
    test: torch.Tensor  # [M, P], binarized
    dynamic: bool
    digest: str


class Run:
    """One run's lifecycle and bookkeeping; its parameters live in a row of its `Stack`."""

    STATE_KEYS = ("status", "step", "pos", "perm", "best", "best_flat", "evals_since_best", "curves",
                  "train_seconds", "eval_seconds", "compile_seconds", "first_bad_step", "interval_start")

    def __init__(self, cfg: RunConfig, data: RunData, layout: ResultsLayout, device: torch.device,
                 started: float | None = None):
        self.cfg, self.data, self.layout, self.device = cfg, data, layout, device
        self.started = time.perf_counter() if started is None else started  # this session's clock origin
        self.earlier_wall_seconds = 0.0  # wall time of earlier sessions, up to their last saved state
        seed = cfg.train.seed
        self.gen_noise = torch.Generator(device=device).manual_seed(seed)
        self.gen_data = torch.Generator(device=device).manual_seed(seed + DATA_SEED_OFFSET)
        self.status = "training"  # -> "trained" (max_steps or patience) | "diverged"
        self.step = self.pos = self.interval_start = 0
        self.perm = self._new_perm()
        self.best = {"step": 0, "elbo": -math.inf, "iw_log_px": math.nan}
        self.best_flat: torch.Tensor | None = None
        self.evals_since_best = 0
        self.curves: list[dict] = []
        self.train_seconds = self.eval_seconds = self.compile_seconds = 0.0
        self.first_bad_step: int | None = None
        self.resumed_from_step = 0
        self.cost: dict[str, float] = {}  # counted FLOPs (bench.training.cost), set by the stack

    @property
    def wall_seconds(self) -> float:
        """Wall time of the run so far, summed over the sessions it was resumed in."""
        return self.earlier_wall_seconds + time.perf_counter() - self.started

    def _new_perm(self) -> torch.Tensor:
        return torch.randperm(self.data.train.shape[0], generator=self.gen_data, device=self.device)

    def next_indices(self) -> torch.Tensor:
        """The next batch's row indices [B]: slices of a per-epoch permutation, drawn from the run's generator."""
        bs = self.cfg.train.batch_size
        if self.pos + bs > self.perm.shape[0]:
            self.perm, self.pos = self._new_perm(), 0
        idx = self.perm[self.pos:self.pos + bs]
        self.pos += bs
        return idx

    def next_batch(self) -> torch.Tensor:
        """[B, P]; re-binarized with the run's data generator when the dataset is dynamic."""
        batch = self.data.train[self.next_indices()]
        return binarize(batch, self.gen_data) if self.data.dynamic else batch

    @property
    def at_eval(self) -> bool:
        t = self.cfg.train
        return self.step % t.eval_every == 0 or self.step == t.max_steps

    def record_validation(self, figures: dict, interval: dict, flat: torch.Tensor) -> None:
        """Curves, checkpoint, patience and divergence after one validation of the weights `flat` [N]. The
        checkpoint (tested at the end) is the best on validation ELBO, or the latest (`train.select` = "last")."""
        t = self.cfg.train
        common = {"run_id": self.cfg.run_id, "step": self.step,
                  "epoch": self.step / self.cfg.steps_per_epoch,
                  "train_examples_per_s": self.step * t.batch_size / max(self.train_seconds, 1e-9),
                  "wall_seconds": self.train_seconds + self.eval_seconds}
        self.curves.append({**common, "split": "train", **interval, "iw_log_px": math.nan})
        self.curves.append({**common, "split": "valid", **figures})
        write_parquet(pd.DataFrame(self.curves), self.layout.curves(self.cfg.run_id))
        if not math.isfinite(figures["elbo"]):  # non-finite weights: divergence, never "not better"
            self.status, self.first_bad_step = "diverged", self.first_bad_step or self.step
            return
        if figures["elbo"] > self.best["elbo"] or t.select == "last":
            self.best = {"step": self.step, "elbo": figures["elbo"], "iw_log_px": figures["iw_log_px"]}
            self.best_flat = flat.clone()
            self.evals_since_best = 0
        elif not (t.patience_after_warmup and self.step < t.kl_warmup_steps):  # counted after the warm-up only
            self.evals_since_best += 1
        if self.step >= t.max_steps or (t.patience and self.evals_since_best >= t.patience):
            self.status = "trained"

    def save_state(self, flat: torch.Tensor, opt_state: tuple[torch.Tensor, ...], t: torch.Tensor) -> None:
        state = {k: getattr(self, k) for k in self.STATE_KEYS}
        state.update(config_hash=self.cfg.config_hash, wall_seconds=self.wall_seconds, flat=flat.clone(),
                     opt_state=[s.clone() for s in opt_state], t=t.clone(),
                     gen_noise=self.gen_noise.get_state(), gen_data=self.gen_data.get_state())
        write_torch(state, self.layout.state(self.cfg.run_id))

    def load_state(self, n_params: int, n_state: int) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor] | None:
        """The saved (flat, optimizer state, t) and this run's restored bookkeeping; None (and nothing
        changed) if there is no usable state for this config."""
        path = self.layout.state(self.cfg.run_id)
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            if state["config_hash"] != self.cfg.config_hash:
                return None
            values = {k: state[k] for k in self.STATE_KEYS}
            flat, opt_state, t = state["flat"], list(state["opt_state"]), state["t"]
            if flat.shape != (n_params,) or len(opt_state) != n_state or any(s.shape != flat.shape for s in opt_state):
                return None
            gens = []
            for key in ("gen_noise", "gen_data"):  # a state saved on another device type holds another RNG's
                gen = torch.Generator(device=self.device)  # state (CPU vs CUDA): it fails here, a restart
                gen.set_state(state[key].cpu())
                gens.append(gen)
            earlier_wall = float(state.get("wall_seconds", values["train_seconds"] + values["eval_seconds"]
                                           + values["compile_seconds"]))  # older states: a lower bound
        except Exception:  # a damaged state file costs a restart, never a wrong result
            return None
        for k, v in values.items():
            setattr(self, k, v)
        self.gen_noise, self.gen_data = gens
        self.earlier_wall_seconds = earlier_wall
        self.resumed_from_step = self.step
        return flat, opt_state, t
