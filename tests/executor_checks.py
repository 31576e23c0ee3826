"""What the tests of the remote executors (Ray, Slurm) share: a small grid, the figures that must equal the local
executor's, the CLI, waiting, and finding the processes a command started."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from typer.testing import CliRunner

from bench.cli import app
from bench.grid.files import load_grid
from bench.progress import GridProgress
from bench.storage import ResultsLayout
from bench.tasks import RunTask, execute_run

SMALL = """
name = "r"
[model]
hidden = [16]
latent_dim = 4
[train]
batch_size = 32
max_steps = {steps}
eval_every = {every}
check_every = 3
compile = false
[data]
max_eval_images = 64
[eval]
iw_samples = 4
valid_iw_samples = 2
"""
TWO_VARIANTS = '[[variant]]\nname = "mf"\n[[variant]]\nname = "iaf"\nmodel.posterior = "iaf"\n'
FIGURES = ("status", "steps_done", "best_step", "val_elbo", "val_iw_log_px", "test_elbo", "test_iw_log_px",
           "test_reconstruction", "test_kl")


def grid_file(tmp_path: Path, steps: int = 12, every: int = 6, extra: str = TWO_VARIANTS, name: str = "g.toml") -> Path:
    path = tmp_path / name
    path.write_text(SMALL.format(steps=steps, every=every) + extra)
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["run", *args])


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def our_processes(matches: Callable[[list[str]], bool]) -> list[int]:
    """Pids of the processes in this process's tree whose command line (argv) `matches`."""
    children: dict[int, list[int]] = {}
    argvs: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argvs[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, stack = [], [os.getpid()]
    while stack:
        for child in children.get(stack.pop(), []):
            stack.append(child)
            if matches(argvs.get(child, [""])):
                found.append(child)
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def straight_run(grid: Path, results: Path, data_dir: Path, index: int = 0) -> dict:
    """The run as the local executor does it in this process, one torch thread (as a 1-CPU task or job)."""
    cfg = load_grid(grid)[index]
    return execute_run(RunTask((cfg,), str(results), str(data_dir), "cpu", 1, cfg.run_id))


def interrupted_after_the_first_row(executor: str, tmp_path: Path, data_dir: Path, monkeypatch) -> Path:
    """`vaebench run --executor EXECUTOR` of a short and a long run, Ctrl-C as soon as the short run's row is
    printed: checks exit 130, the short run's row kept and none for the long one; returns the results folder."""
    grid = grid_file(tmp_path, steps=3000, every=3000,
                     extra='[[variant]]\nname = "short"\ntrain.max_steps = 12\ntrain.eval_every = 6\n'
                           '[[variant]]\nname = "long"\n')
    short_id, long_id = (c.run_id for c in load_grid(grid))
    real_finished = GridProgress.finished

    def finished_then_ctrl_c(self, row):
        real_finished(self, row)
        raise KeyboardInterrupt

    monkeypatch.setattr(GridProgress, "finished", finished_then_ctrl_c)
    results = tmp_path / executor
    res = invoke("--grid", str(grid), "--results", str(results), "--data-dir", str(data_dir), "--executor", executor)
    assert res.exit_code == 130 and "interrupted: completed runs are kept" in res.output, res.output
    assert ResultsLayout(results).run(short_id).exists() and not ResultsLayout(results).run(long_id).exists()
    return results


def assert_bad_options_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    """`vaebench run` with executor options `args` that do not fit: exit 2, one line saying `expected`, nothing
    written."""
    res = invoke("--grid", str(grid_file(tmp_path)), "--results", str(tmp_path / "r"), *args)
    assert res.exit_code == 2, res.output
    assert len(lines(res.output)) == 1 and expected in " ".join(res.output.split())
    assert not (tmp_path / "r").exists()
