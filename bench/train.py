"""One run: train with periodic validation, keep the best-on-validation checkpoint, evaluate it on test.

The step itself is `bench.step.train_step`. Non-finite losses are detected on the device and checked only
every `train.check_every` steps, so the loop makes no host sync per step.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch

from bench.config import RunConfig
from bench.optim import flatten_parameters, make_optimizer
from bench.step import EAGER, RunFunctions, train_step
from bench.storage import ResultsLayout, atomic_write, write_parquet, write_torch
from vae_core import VAE, build_vae
from vae_core.data import binarize
from vae_core.vae import LogWeightFn

ProgressFn = Callable[[int, int, float, float], None]  # (step, max_steps, train ELBO, examples/s)


@dataclass(frozen=True)
class RunData:
    """Splits resident on the run's device; `dynamic` means train pixels are re-binarized every batch."""

    train: torch.Tensor  # [N, P]
    valid: torch.Tensor  # [M, P], binarized
    test: torch.Tensor  # [M, P], binarized
    dynamic: bool
    digest: str


def kl_weight(step: int, warmup_steps: int) -> float:
    """Linear KL warm-up: 0 -> 1 over `warmup_steps` (1 throughout when 0)."""
    return min(1.0, step / warmup_steps) if warmup_steps else 1.0


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, elbo_samples: int, iw_samples: int, batch_size: int,
             seed: int, log_weight: LogWeightFn | None = None) -> dict[str, float]:
    """Mean ELBO, its terms and (iw_samples > 0) the IW log p(x) over the rows of x, in nats per image."""
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    sums = {"reconstruction": 0.0, "kl": 0.0, "iw_log_px": 0.0}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        reconstruction, kl = model.elbo_terms(xb, elbo_samples, gen)
        sums["reconstruction"] += reconstruction.sum().item()
        sums["kl"] += kl.sum().item()
        if iw_samples:
            sums["iw_log_px"] += model.iw_log_px(xb, iw_samples, generator=gen, log_weight=log_weight).sum().item()
    model.train()
    out = {k: v / x.shape[0] for k, v in sums.items()}
    out["elbo"] = out["reconstruction"] - out["kl"]
    if not iw_samples:
        out["iw_log_px"] = math.nan
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Run:
    """State of one run in progress; `execute()` trains, evaluates and returns the result row's figures."""

    def __init__(self, cfg: RunConfig, data: RunData, layout: ResultsLayout, device: torch.device,
                 on_progress: ProgressFn | None = None):
        self.cfg, self.data, self.layout, self.device = cfg, data, layout, device
        self.on_progress = on_progress or (lambda *a: None)
        t = cfg.train
        torch.manual_seed(t.seed)
        self.model = build_vae(cfg.model).to(device)
        self.optimizer = make_optimizer(t.optimizer, [flatten_parameters(self.model)], t.lr)
        if t.compile:
            torch._dynamo.reset()  # one run's guards must not pile up towards dynamo's recompile limit
        self.fns = RunFunctions.compile() if t.compile else EAGER
        self.compile_error, self.compile_checked, self.compile_seconds = "", False, 0.0
        self.gen_noise = torch.Generator(device=device).manual_seed(t.seed)
        self.gen_data = torch.Generator(device=device).manual_seed(t.seed + 1_000_003)
        self.step, self.pos = 0, 0
        self.perm = self._new_perm()
        self.best = {"step": 0, "elbo": -math.inf, "iw_log_px": math.nan}
        self.best_state = copy.deepcopy(self.model.state_dict())
        self.evals_since_best = 0
        self.curves: list[dict] = []
        self.train_seconds = self.eval_seconds = 0.0
        self.first_bad_step: int | None = None

    def _new_perm(self) -> torch.Tensor:
        return torch.randperm(self.data.train.shape[0], generator=self.gen_data, device=self.device)

    def _next_batch(self) -> torch.Tensor:
        bs = self.cfg.train.batch_size
        if self.pos + bs > self.perm.shape[0]:
            self.perm, self.pos = self._new_perm(), 0
        batch = self.data.train[self.perm[self.pos:self.pos + bs]]  # [B, P]
        self.pos += bs
        return binarize(batch, self.gen_data) if self.data.dynamic else batch

    # -- resumable state --------------------------------------------------------------------------------
    STATE_KEYS = ("step", "pos", "perm", "best", "best_state", "evals_since_best", "curves", "train_seconds",
                  "eval_seconds", "first_bad_step")

    def save_state(self) -> None:
        state = {k: getattr(self, k) for k in self.STATE_KEYS}
        state.update(config_hash=self.cfg.config_hash, model=self.model.state_dict(),
                     optimizer=self.optimizer.state_dict(), gen_noise=self.gen_noise.get_state(),
                     gen_data=self.gen_data.get_state())
        write_torch(state, self.layout.state(self.cfg.run_id))

    def load_state(self) -> bool:
        """Resume from the saved training state; False (fresh start) if there is none or it is unusable."""
        path = self.layout.state(self.cfg.run_id)
        if not path.exists():
            return False
        fresh_model = copy.deepcopy(self.model.state_dict())
        fresh_optimizer = copy.deepcopy(self.optimizer.state_dict())
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            if state["config_hash"] != self.cfg.config_hash:
                return False
            values = {k: state[k] for k in self.STATE_KEYS}
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.gen_noise.set_state(state["gen_noise"].cpu())
            self.gen_data.set_state(state["gen_data"].cpu())
        except Exception:  # a damaged state file costs a restart, never a wrong result
            self.model.load_state_dict(fresh_model)  # in place: the flat parameter buffer stays linked
            self.optimizer.load_state_dict(fresh_optimizer)
            return False
        for k, v in values.items():
            setattr(self, k, v)
        return True

    def _train_step(self, batch: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """`train_step` with this run's functions; a compile failure (first call) falls back to eager.

        The first compiled call's time is booked as `compile_seconds` and taken off `train_seconds`.
        """
        args = (self.model, self.optimizer, batch, self.gen_noise, beta, self.cfg.train.grad_clip)
        if not self.fns.compiled or self.compile_checked:
            return train_step(*args, fns=self.fns)
        noise_state, t0 = self.gen_noise.get_state(), time.perf_counter()
        try:
            out = train_step(*args, fns=self.fns)
        except Exception as err:  # e.g. no C++ compiler for inductor: record why, train eagerly
            self.compile_error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            self.fns, out = EAGER, None
            self.gen_noise.set_state(noise_state)
        self.compile_checked = True
        self.compile_seconds = time.perf_counter() - t0  # a failed attempt is not training time either
        self.train_seconds -= self.compile_seconds
        return out if out is not None else train_step(*args, fns=self.fns)

    def _evaluate(self, x: torch.Tensor, iw_samples: int, seed: int) -> dict[str, float]:
        """`evaluate` with this run's IW function; if the compiled one fails, record why and redo it eagerly
        (the evaluation seeds its own generator, so the redo draws the same noise)."""
        args = (self.model, x, self.cfg.eval.elbo_samples, iw_samples, self.cfg.data.eval_batch_size, seed)
        try:
            return evaluate(*args, log_weight=self.fns.log_weight)
        except Exception as err:
            if self.fns.log_weight is EAGER.log_weight:
                raise
            self.compile_error = f"evaluation: {type(err).__name__}: {err}".splitlines()[0][:300]
            self.fns = dataclasses.replace(self.fns, log_weight=EAGER.log_weight)
            return evaluate(*args, log_weight=self.fns.log_weight)

    # -- the loop ---------------------------------------------------------------------------------------
    def _evaluate_valid(self, interval: dict) -> bool:
        """Record validation (and the training interval's averages); returns True if patience ran out or the
        validation ELBO is not finite (then `first_bad_step` is set)."""
        t0 = time.perf_counter()
        e = self.cfg
        figures = self._evaluate(self.data.valid, e.eval.valid_iw_samples, seed=e.train.seed + 17)
        self.eval_seconds += time.perf_counter() - t0
        ex_per_s = self.step * e.train.batch_size / max(self.train_seconds, 1e-9)
        common = {"run_id": e.run_id, "step": self.step, "train_examples_per_s": ex_per_s,
                  "wall_seconds": self.train_seconds + self.eval_seconds}
        self.curves.append({**common, "split": "train", **interval, "iw_log_px": math.nan})
        self.curves.append({**common, "split": "valid", **figures})
        write_parquet(self.curves_frame(), self.layout.curves(e.run_id))
        if not math.isfinite(figures["elbo"]):  # the last step left non-finite weights: divergence
            self.first_bad_step = self.step
            return True
        if figures["elbo"] > self.best["elbo"]:
            self.best = {"step": self.step, "elbo": figures["elbo"], "iw_log_px": figures["iw_log_px"]}
            self.best_state = copy.deepcopy(self.model.state_dict())
            atomic_write(self.layout.checkpoint(e.run_id), self.model.save)
            self.evals_since_best = 0
        else:
            self.evals_since_best += 1
        return bool(e.train.patience) and self.evals_since_best >= e.train.patience

    def curves_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.curves)

    def train(self) -> str:
        """Train until max_steps, early stop or divergence; returns 'completed' or 'diverged'."""
        t = self.cfg.train
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        rec_sum = next(self.model.parameters()).new_zeros(())
        kl_sum = rec_sum.clone()
        interval_start = self.step
        _sync(self.device)
        t0 = time.perf_counter()
        while self.step < t.max_steps:
            batch = self._next_batch()
            rec, kl = self._train_step(batch, kl_weight(self.step, t.kl_warmup_steps))
            self.step += 1
            ok = torch.isfinite(rec) & torch.isfinite(kl)
            first_bad = torch.where(finite & ~ok, self.step, first_bad)
            finite = finite & ok
            rec_sum, kl_sum = rec_sum + rec, kl_sum + kl
            at_eval = self.step % t.eval_every == 0 or self.step == t.max_steps
            if self.step % t.check_every == 0 or at_eval:
                if not bool(finite):
                    self.first_bad_step = int(first_bad)
                    self.train_seconds += time.perf_counter() - t0
                    return "diverged"
                n = (self.step - interval_start) * t.batch_size
                elapsed = self.train_seconds + time.perf_counter() - t0
                self.on_progress(self.step, t.max_steps, (rec_sum - kl_sum).item() / n,
                                 self.step * t.batch_size / max(elapsed, 1e-9))
            if at_eval:
                _sync(self.device)
                self.train_seconds += time.perf_counter() - t0
                interval = {"reconstruction": rec_sum.item() / n, "kl": kl_sum.item() / n}
                interval["elbo"] = interval["reconstruction"] - interval["kl"]
                stop = self._evaluate_valid(interval)
                if self.first_bad_step is not None:
                    return "diverged"
                self.save_state()
                rec_sum, kl_sum, interval_start = rec_sum.new_zeros(()), kl_sum.new_zeros(()), self.step
                if stop:
                    break
                _sync(self.device)
                t0 = time.perf_counter()
        return "completed"

    def test(self) -> dict[str, float]:
        """Test figures of the best-on-validation weights."""
        self.model.load_state_dict(self.best_state)
        t0 = time.perf_counter()
        figures = self._evaluate(self.data.test, self.cfg.eval.iw_samples, seed=self.cfg.train.seed + 29)
        self.eval_seconds += time.perf_counter() - t0
        return figures
