"""Training runs: R runs of one architecture trained together as one stacked model (R = 1: a run alone).

`Stack` holds the runs' parameters as one [R, N] tensor (row r = run r's flat vector), their optimizer
states and step counts, and calls `bench.step.StackFunctions` once per step for all of them. `Run` is one
run's lifecycle, exactly what it has when trained alone: its own initial weights (seeded by its seed), its
own batch order and noise (its own generators), lr, warm-up, clipping norm and patience; validation every
`eval_every` steps, its checkpoint (best on validation, or the last: `train.select`), early stopping,
divergence, its resumable state.

A run leaves the stack when it stops (max_steps, patience, divergence); the stack shrinks to the rest.
A run whose loss goes non-finite is frozen on the device at that step (its update is not applied) and
removed at the next host check (`train.check_every`): rows of a stack never mix, so its NaNs reach no
other run. Finished runs are tested together (their checkpoints, memory-bounded IW chunks).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import pandas as pd
import torch

from bench.config import RunConfig
from bench.optim import OPTIMIZERS, LrSchedule, flatten_parameters
from bench.step import StackFunctions, StepOptions
from bench.storage import ResultsLayout, atomic_write, write_parquet, write_torch
from vae_core import VAE, build_vae
from vae_core.data import binarize
from vae_core.estimators import iw_chunk_size, streaming_iw_bound
from vae_core.posteriors import standard_normal

ProgressFn = Callable[[int, int, float, float], None]  # (step, max_steps, train ELBO, examples/s)

VALID_SEED_OFFSET, TEST_SEED_OFFSET = 17, 29  # evaluation noise: seeded per run, apart from training noise
DATA_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class RunData:
    """Splits resident on the run's device; `dynamic` means train pixels are re-binarized every batch."""

    train: torch.Tensor  # [N, P]
    valid: torch.Tensor  # [M, P], binarized
    test: torch.Tensor  # [M, P], binarized
    dynamic: bool
    digest: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(fns: StackFunctions, params: torch.Tensor, x: torch.Tensor, seeds: list[int], elbo_samples: int,
             iw_samples: int, batch_size: int) -> list[dict[str, float]]:
    """Per run r of params [R, N]: mean ELBO, its terms and (iw_samples > 0) the IW log p(x) over the rows
    of x [M, P], in nats per image, with noise from a generator seeded `seeds[r]`.

    Each run draws, per batch, its ELBO noise and then its IW chunks, in the order a run alone draws them,
    so its figures do not depend on the stack it is evaluated in. IW chunks are sized to a memory budget.
    """
    n_runs, model = params.shape[0], fns.model
    gens = [torch.Generator(device=x.device).manual_seed(s) for s in seeds]
    sums = x.new_zeros(3, n_runs, dtype=torch.float64)  # reconstruction, kl, iw_log_px; on the device: no sync
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]  # [B, P]
        like = xb.new_empty(xb.shape[0], model.config.latent_dim)  # [B, D]
        eps = torch.stack([standard_normal(elbo_samples, like, g) for g in gens])  # [R, k, B, D]
        reconstruction, kl = fns.elbo_terms(params, xb, eps)  # [R, B] each
        sums[0] += reconstruction.sum(-1).double()
        sums[1] += kl.sum(-1).double()
        if iw_samples:
            loc, scale, context = fns.encode(params, xb)  # [R, B, D], [R, B, D], [R, B, C]
            chunk = iw_chunk_size(iw_samples, n_runs * xb.shape[0], model.floats_per_iw_sample, x.device)

            def chunks():
                for k0 in range(0, iw_samples, chunk):
                    c = min(chunk, iw_samples - k0)
                    eps_iw = torch.stack([standard_normal(c, like, g) for g in gens])  # [R, c, B, D]
                    yield fns.log_weight(params, xb, loc, scale, context, eps_iw).transpose(0, 1)  # [c, R, B]

            sums[2] += streaming_iw_bound(chunks()).sum(-1).double()
    means = (sums / x.shape[0]).tolist()
    return [{"reconstruction": means[0][r], "kl": means[1][r], "elbo": means[0][r] - means[1][r],
             "iw_log_px": means[2][r] if iw_samples else math.nan} for r in range(n_runs)]


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


class Stack:
    """R runs of one architecture and optimizer (configs differing only in per-run keys), trained as one
    stacked model. `run()` yields each run with its test figures (None if diverged) as it finishes."""

    def __init__(self, cfgs: list[RunConfig], data: RunData, layout: ResultsLayout, device: torch.device,
                 on_progress: ProgressFn | None = None, started: float | None = None):
        self.cfgs, self.data, self.layout, self.device = cfgs, data, layout, device
        self.on_progress = on_progress or (lambda *a: None)
        first = cfgs[0]
        train = first.train
        self.optimizer = OPTIMIZERS[train.optimizer].with_eps(train.optimizer_eps)
        models = []
        for cfg in cfgs:  # each run's init is the one it gets alone: seeded by its seed, drawn on the CPU
            torch.manual_seed(cfg.train.seed)  # so that a run starts from the same weights on every device
            with torch.device("cpu"):
                model = build_vae(cfg.model)
            models.append(model.to(device))
        self.template: VAE = models[0]  # its own parameter values are never used for training: rows are
        schedule = LrSchedule(train.lr_schedule, first.steps_per_epoch, train.lr_decay, train.lr_decay_epochs)
        options = StepOptions(train.objective, schedule, train.grad_normalize, train.autocast == "bf16")
        self.fns = StackFunctions(self.template, self.optimizer, compile=train.compile, options=options,
                                  cuda_graphs=train.cuda_graphs and device.type == "cuda")
        self.flat = torch.stack([self.fns.layout.flatten(m) for m in models])  # [R, N]
        self.template_flat = flatten_parameters(self.template)
        self.runs = [Run(cfg, data, layout, device, started) for cfg in cfgs]
        self.opt_state = self.optimizer.init(self.flat)  # leaves [R, N]
        self.t = self.flat.new_zeros(len(cfgs))  # [R] optimizer steps taken
        self.compile_seconds = 0.0
        self._compiled_sizes: set[int] = set()

    # -- state ------------------------------------------------------------------------------------------
    def load_states(self) -> None:
        """Resume every run that has a usable saved state; the others start fresh."""
        for r, run in enumerate(self.runs):
            loaded = run.load_state(self.flat.shape[1], len(self.opt_state))
            if loaded is None:
                continue
            flat, opt_state, t = loaded
            self.flat[r], self.t[r] = flat, t
            for leaf, saved in zip(self.opt_state, opt_state):
                leaf[r] = saved

    def save_checkpoint(self, run: Run) -> None:
        """`checkpoints/<run_id>.pt`: the weights the run will be tested with, loadable with `load_vae`."""
        self.template_flat.data.copy_(run.best_flat)
        atomic_write(self.layout.checkpoint(run.cfg.run_id), self.template.save)

    # -- evaluation -------------------------------------------------------------------------------------
    def _evaluate(self, runs: list[Run], params: torch.Tensor, split: str) -> list[dict]:
        t0 = time.perf_counter()
        cfg = runs[0].cfg
        ev = cfg.eval
        x, offset, k = ((self.data.valid, VALID_SEED_OFFSET, ev.valid_iw_samples) if split == "valid"
                        else (self.data.test, TEST_SEED_OFFSET, ev.iw_samples))
        figures = evaluate(self.fns, params, x, [r.cfg.train.seed + offset for r in runs], ev.elbo_samples, k,
                           cfg.data.eval_batch_size)
        seconds = time.perf_counter() - t0
        for run in runs:
            run.eval_seconds += seconds
        return figures

    def test(self, runs: list[Run]) -> list[dict]:
        """Test figures of each run's checkpoint weights (`Run.best_flat`), all runs evaluated at once."""
        return self._evaluate(runs, torch.stack([r.best_flat for r in runs]), "test")

    # -- training ---------------------------------------------------------------------------------------
    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every live run (after `prepare`); returns the batch sums (reconstruction, kl) [R_live]."""
        live = self.live
        if self.data.dynamic:
            batch = torch.stack([run.next_batch() for run in live])  # [R, B, P]
        else:
            batch = self.data.train[torch.stack([run.next_indices() for run in live])]  # [R, B, P]
        like = batch.new_empty(batch.shape[1], self.template.config.latent_dim)  # [B, D]
        k = live[0].cfg.train.objective_samples
        eps = torch.stack([standard_normal(k, like, run.gen_noise) for run in live])  # [R, k, B, D]
        args = (self.flat, self.opt_state, self.t, batch, eps, self.lr, self.warmup, self.clip, self.active)
        if self.fns.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are this step's inputs
        if self.fns.compiled and len(live) not in self._compiled_sizes:  # compile time is not training time
            _sync(self.device)
            c0 = time.perf_counter()
            out = self.fns.train_step(*args)
            _sync(self.device)
            seconds = time.perf_counter() - c0
            self._compiled_sizes.add(len(live))
            self.compile_seconds += seconds
            self._timer0 += seconds
        else:
            out = self.fns.train_step(*args)
        self.flat, self.opt_state, t_next, rec, kl, ok = out
        self.first_bad = torch.where(self.active & ~ok & (self.first_bad < 0), self.t.long() + 1, self.first_bad)
        self.t, self.active = t_next, ok
        return rec, kl

    def _keep(self, keep: list[int]) -> None:
        """Shrink the stack to the live rows `keep`."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.live = [self.live[i] for i in keep]
        self.flat, self.t, self.active, self.first_bad = (self.flat[idx], self.t[idx], self.active[idx],
                                                          self.first_bad[idx])
        self.opt_state = tuple(s[idx] for s in self.opt_state)
        self.lr, self.warmup, self.clip = self.lr[idx], self.warmup[idx], self.clip[idx]
        self.rec_sum, self.kl_sum = self.rec_sum[idx], self.kl_sum[idx]

    def prepare(self) -> None:
        """Per-run hyperparameters and flags on the device, every run live (call after `load_states`)."""
        runs = self.runs
        self.lr = self.flat.new_tensor([r.cfg.train.lr for r in runs])
        self.warmup = self.flat.new_tensor([float(r.cfg.train.kl_warmup_steps) for r in runs])
        self.clip = self.flat.new_tensor([r.cfg.train.grad_clip for r in runs])
        self.active = torch.ones(len(runs), dtype=torch.bool, device=self.device)
        self.first_bad = torch.full((len(runs),), -1, dtype=torch.long, device=self.device)
        self.rec_sum, self.kl_sum = self.flat.new_zeros(len(runs)), self.flat.new_zeros(len(runs))
        self.live = list(runs)
        self._timer0 = time.perf_counter()

    def run(self) -> Iterator[tuple[Run, dict | None]]:
        """Train every run to its end and test it; yields (run, test figures or None if diverged)."""
        self.prepare()
        yield from self._retire()  # runs resumed after they had finished training
        train = self.runs[0].cfg.train
        _sync(self.device)
        self._timer0 = time.perf_counter()
        while self.live:
            rec, kl = self.step()
            self.rec_sum, self.kl_sum = self.rec_sum + rec, self.kl_sum + kl
            for run in self.live:
                run.step += 1
            due = [i for i, run in enumerate(self.live) if run.at_eval]
            if not due and self.live[0].step % train.check_every:
                continue
            self._check()
            self._validate([i for i in due if self.live[i].status == "training"])
            yield from self._retire()
            _sync(self.device)
            self._timer0 = time.perf_counter()

    def _check(self) -> None:
        """Host check: a frozen (non-finite) row ends its run as diverged; training time is booked; progress."""
        _sync(self.device)
        now = time.perf_counter()
        for run, ok, bad in zip(self.live, self.active.tolist(), self.first_bad.tolist()):
            run.train_seconds += now - self._timer0
            if not ok:
                run.status, run.first_bad_step = "diverged", bad
        self._timer0 = now
        run0 = self.live[0]
        bs = run0.cfg.train.batch_size
        examples = sum(run.step for run in self.live if run.status == "training") * bs
        elbo = (self.rec_sum[0] - self.kl_sum[0]).item() / (max(run0.step - run0.interval_start, 1) * bs)
        self.on_progress(run0.step, run0.cfg.train.max_steps, elbo, examples / max(run0.train_seconds, 1e-9))

    def _validate(self, due: list[int]) -> None:
        """Validate the due live rows together; record, checkpoint and save each run's state."""
        if not due:
            return
        runs = [self.live[i] for i in due]
        idx = torch.tensor(due, dtype=torch.long, device=self.device)
        figures = self._evaluate(runs, self.flat[idx], "valid")
        rec, kl = self.rec_sum[idx].tolist(), self.kl_sum[idx].tolist()
        for i, run, fig, r, k in zip(due, runs, figures, rec, kl):
            n = (run.step - run.interval_start) * run.cfg.train.batch_size
            interval = {"reconstruction": r / n, "kl": k / n, "elbo": (r - k) / n}
            best_step = run.best["step"]
            run.record_validation(fig, interval, self.flat[i])
            if run.best["step"] != best_step:
                self.save_checkpoint(run)
            run.interval_start = run.step
            run.compile_seconds = self.compile_seconds
            run.save_state(self.flat[i], tuple(s[i] for s in self.opt_state), self.t[i])
        self.rec_sum[idx] = 0.0
        self.kl_sum[idx] = 0.0

    def _retire(self) -> Iterator[tuple[Run, dict | None]]:
        """Remove the runs that stopped from the stack, test those that trained (together), yield them all."""
        done = [run for run in self.live if run.status != "training"]
        if not done:
            return
        self._keep([i for i, run in enumerate(self.live) if run.status == "training"])
        for run in done:
            if run.status == "trained" and run.best_flat is None:
                run.status = "diverged"
        tested = [run for run in done if run.status == "trained"]
        figures = dict(zip(map(id, tested), self.test(tested))) if tested else {}
        for run in done:
            run.compile_seconds = self.compile_seconds
            yield run, figures.get(id(run))
