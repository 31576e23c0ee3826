"""Grid progress: rich bars (grid and current run) on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

PLAIN_EVERY_S = 30.0


class GridProgress:
    def __init__(self, stream: IO[str]):
        self.console = Console(file=stream, highlight=False, soft_wrap=True, width=None if stream.isatty() else 200)
        self.live = self.console.is_terminal
        self.bars: Progress | None = None
        self.grid_task = self.run_task = None
        self.last_plain = 0.0

    def run_table(self, runs, done_ids: set[str], plans) -> None:
        """The expanded runs, then the stacks the runs still to do will train in, with each stack's reason."""
        table = Table(title=f"{len(runs)} runs ({len(done_ids)} already finished)")
        for col in ("run_id", "variant", "posterior", "prior", "latent_dim", "optimizer", "lr", "seed",
                    "max_steps", "status"):
            table.add_column(col)
        for c in runs:
            table.add_row(c.run_id, c.variant, c.model.posterior, c.model.prior, str(c.model.latent_dim),
                          c.train.optimizer, f"{c.train.lr:g}", str(c.train.seed), str(c.train.max_steps),
                          "done" if c.run_id in done_ids else "to run")
        self.console.print(table)
        stacks = Table(title=f"{len(plans)} stacks for the {sum(len(p.configs) for p in plans)} runs to do")
        for col in ("stack", "runs", "seeds", "lrs", "why this size"):
            stacks.add_column(col)
        for p in plans:
            stacks.add_row(p.stack_id, str(len(p.configs)), " ".join(str(c.train.seed) for c in p.configs),
                           " ".join(f"{c.train.lr:g}" for c in p.configs), p.reason)
        self.console.print(stacks)

    def say(self, text: str) -> None:
        self.console.print(text)

    def start(self, total: int, skipped: int, stacks: int) -> None:
        self.say(f"{total} runs: {skipped} already finished (skipped), {total - skipped} to run in {stacks} "
                 f"stack{'s' if stacks != 1 else ''}")
        if self.live:
            self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console)
            self.grid_task = self.bars.add_task("grid", total=total, completed=skipped, info="")
            self.bars.start()

    def run_callback(self, task):
        """A progress function for one task (a stack; called at check intervals with step, ELBO of its first
        run, examples/s of the whole stack)."""
        run_id, max_steps = task.stack_id, task.max_steps
        if self.bars:
            if self.run_task is not None:
                self.bars.remove_task(self.run_task)
            self.run_task = self.bars.add_task(run_id, total=max_steps, info="")
        else:
            self.say(f"start {run_id}")

        def update(step: int, total: int, elbo: float, ex_per_s: float) -> None:
            info = f"ELBO {elbo:8.2f}  {ex_per_s:7.0f} ex/s"
            if self.bars:
                self.bars.update(self.run_task, completed=step, info=info)
            elif time.monotonic() - self.last_plain > PLAIN_EVERY_S or step == total:
                self.last_plain = time.monotonic()
                self.say(f"  {run_id} step {step}/{total}  {info}")

        return update

    def finished(self, row: dict) -> None:
        msg = (f"{row['status']:9s} {row['run_id']}  test IW log p(x) {row['test_iw_log_px']:.2f}  "
               f"ELBO {row['test_elbo']:.2f}  {row['train_examples_per_s']:.0f} ex/s  {row['wall_seconds']:.0f} s")
        if row["status"] == "failed":
            msg = f"failed    {row['run_id']}: {row['error']}"
        elif row["status"] == "diverged":
            msg = f"diverged  {row['run_id']}: non-finite loss at step {row['first_bad_step']}"
        if row.get("executor", "local") != "local" and row.get("hostname"):
            msg += f"  on {row['hostname']}"
        if row.get("compile_error"):
            msg += f"\n          cannot be compiled, ran eager ({row['compile_error']})"
        if self.bars:
            self.bars.advance(self.grid_task)
            self.bars.console.print(msg)
        else:
            self.say(msg)

    def stop(self) -> None:
        if self.bars:
            self.bars.stop()
            self.bars = None

    def summary(self, failed: int) -> None:
        if failed:
            self.say(f"{failed} run(s) failed: see the 'error' column in runs/")

    def where(self, results) -> None:
        """Where the results are and the command that renders the report (as this program was invoked)."""
        program = sys.argv[0] if Path(sys.argv[0]).name == "vaebench" else "vaebench"
        option = "" if str(results) == "results" else f" --results {results}"
        self.say(f"results: {results}/runs (one parquet row per run); report: {program} report{option}")
