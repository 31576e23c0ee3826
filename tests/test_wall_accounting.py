"""The rows' training seconds are the time a user waits for training: measured from outside as the wall-clock
difference of a long and a short grid (fixed costs - data, model building, evaluation, writing - cancel), stacked
and alone, they agree with the Δ of the rows' own training seconds within 10% (docs/speed.md: "Stacked vs one at a
time by the wall clock"). A phase of the step loop left out of the booking is caught.

Timing test: like the benchmarks it wants a quiet machine; it compares two figures measured in this one process.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.training.stack import Stack
from tests.test_runner_promises import rows, run_grid, synth_dir, write_grid  # noqa: F401  (synth_dir: fixture)

SHORT, LONG = 40, 1540  # steps per run; the tiny model's eager step takes 1-3 ms: Δ is seconds
SEEDS = [0, 1, 2]
AGREE = 0.10  # |Δ rows / Δ wall - 1|
UNTIMED_SECONDS = 0.004  # per host check (every 3 steps): a third or more of the loop's time


def grid_wall_and_rows(tmp_path: Path, data: Path, stack_size: int, steps: int, tag: str) -> tuple[float, float]:
    """(wall seconds of `vaebench run`, the grid's training seconds by its rows: each stack's once, summed)."""
    grid = write_grid(tmp_path, {"train.max_steps": steps, "train.eval_every": steps}, axes={"train.seed": SEEDS},
                      name=f"g{steps}")
    t0 = time.perf_counter()
    code, out = run_grid(grid, tmp_path / f"{tag}-{stack_size}-{steps}", data, stack_size)
    wall = time.perf_counter() - t0
    assert code == 0, out
    runs = rows(tmp_path / f"{tag}-{stack_size}-{steps}")
    assert len(runs) == len(SEEDS) and set(runs["stack_size"]) == {stack_size}
    return wall, float(runs.groupby("stack_id")["train_seconds"].max().sum())


def rows_over_wall(tmp_path: Path, data: Path, stack_size: int, tag: str) -> float:
    """Δ rows' training seconds / Δ wall seconds, long grid minus short grid (after one warm-up grid)."""
    grid_wall_and_rows(tmp_path, data, stack_size, SHORT, f"{tag}-warm")
    short_wall, short_rows = grid_wall_and_rows(tmp_path, data, stack_size, SHORT, tag)
    long_wall, long_rows = grid_wall_and_rows(tmp_path, data, stack_size, LONG, tag)
    assert long_wall - short_wall > 1.0, "too short to time: Δwall under a second"
    return (long_rows - short_rows) / (long_wall - short_wall)


@pytest.mark.slow
@pytest.mark.parametrize("stack_size", [1, 3], ids=["alone", "stack3"])
def test_rows_training_seconds_agree_with_the_wall_clock(tmp_path, synth_dir, stack_size):  # noqa: F811
    ratio = rows_over_wall(tmp_path, synth_dir, stack_size, "plain")
    assert abs(ratio - 1) <= AGREE, f"Δ rows' training seconds / Δ wall = {ratio:.3f}"


@pytest.mark.slow
def test_an_untimed_phase_of_the_step_loop_is_caught(tmp_path, synth_dir, monkeypatch):  # noqa: F811
    """Work at every host check after the booking (here: before validation) is training time the rows miss."""
    validate = Stack._validate

    def slow_validate(self, due):
        time.sleep(UNTIMED_SECONDS)
        return validate(self, due)

    monkeypatch.setattr(Stack, "_validate", slow_validate)
    ratio = rows_over_wall(tmp_path, synth_dir, 3, "untimed")
    assert ratio < 1 - AGREE, f"Δ rows / Δ wall = {ratio:.3f} with an untimed phase"
