"""A stack: R runs of one architecture trained together as one stacked model (R = 1: a run alone).

`Stack` holds the runs' parameters as one [R, N] tensor (row r = run r's flat vector), their optimizer
states and step counts, and calls `bench.training.step.StackFunctions` once per step for all of them; each
run's own lifecycle is a `bench.training.run.Run`.

A run leaves the stack when it stops (max_steps, patience, divergence); the stack shrinks to the rest.
A run whose loss goes non-finite is frozen on the device at that step (its update is not applied) and
removed at the next host check (`train.check_every`): rows of a stack never mix, so its NaNs reach no
other run. Finished runs are tested together (their checkpoints, memory-bounded IW chunks).
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import torch

from bench import interrupts
from bench.grid.config import RunConfig
from bench.storage import ResultsLayout, atomic_write
from bench.training.cost import COST_SEED, step_cost
from bench.training.evaluate import TEST_SEED_OFFSET, VALID_SEED_OFFSET, evaluate, sync
from bench.training.optim import OPTIMIZERS, LrSchedule, flatten_parameters
from bench.training.run import Run, RunData
from bench.training.step import StackFunctions, StepOptions
from vae_core import VAE, build_vae
from vae_core.posteriors import standard_normal

ProgressFn = Callable[[int, int, float, float], None]  # (step, max_steps, train ELBO, examples/s)


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
        self._initial_flat: torch.Tensor | None = self.flat.clone()  # [R, N], each run's cost is counted at it
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
        like = batch.new_empty(batch.shape[1], self.template.config.noise_dim)  # [B, D]
        k = live[0].cfg.train.objective_samples
        eps = torch.stack([standard_normal(k, like, run.gen_noise) for run in live])  # [R, k, B, D]
        args = (self.flat, self.opt_state, self.t, batch, eps, self.lr, self.warmup, self.clip, self.active)
        if self.fns.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are this step's inputs
        if self.fns.compiled and len(live) not in self._compiled_sizes:  # compile time is not training time
            sync(self.device)
            c0 = time.perf_counter()
            out = self.fns.train_step(*args)
            sync(self.device)
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

    def count_costs(self) -> None:
        """Each run's counted cost (`bench.training.cost`), at its initial weights (after `prepare`)."""
        if self._initial_flat is None:
            return
        b = self.runs[0].cfg.train.batch_size
        batch = self.data.train[:b][None]  # [1, B, P]
        k = self.runs[0].cfg.train.objective_samples
        g = torch.Generator(device=self.device).manual_seed(COST_SEED)
        eps = torch.randn(1, k, batch.shape[1], self.template.config.noise_dim, generator=g, device=self.device,
                          dtype=batch.dtype)  # [1, k, B, D]
        x = self.data.test[:b] if self.data.test.shape[0] else self.data.train[:b]  # [B', P]
        eager = self.fns.eager
        for r, run in enumerate(self.runs):
            one = slice(r, r + 1)
            flat = self._initial_flat[one]  # [1, N]
            args = (flat, self.optimizer.init(flat), self.t.new_zeros(1), batch, eps, self.lr[one], self.warmup[one],
                    self.clip[one], self.active[one])
            run.cost = step_cost(eager["train_step"], eager["log_weight"], eager["encode"], args, x,
                                 self.template.config.noise_dim)
        self._initial_flat = None

    def run(self) -> Iterator[tuple[Run, dict | None]]:
        """Train every run to its end and test it; yields (run, test figures or None if diverged)."""
        self.prepare()
        self.count_costs()
        yield from self._retire()  # runs resumed after they had finished training
        train = self.runs[0].cfg.train
        sync(self.device)
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
            sync(self.device)
            self._timer0 = time.perf_counter()

    def _check(self) -> None:
        """Host check: a frozen (non-finite) row ends its run as diverged; training time is booked; progress; a
        Ctrl-C that was swallowed on its way (`bench.interrupts`) stops the loop here."""
        interrupts.check()
        sync(self.device)
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
