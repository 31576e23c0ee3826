"""Ctrl-C always stops a grid (`bench.interrupts`): an interrupt that Python swallows on its way (delivered where
exceptions are only printed, as in a `__del__`) still stops the run at its next host check."""

from __future__ import annotations

import os
import signal
import time

from tests.test_runner_promises import Seams, run_grid, synth_dir, wrap, write_grid  # noqa: F401 (synth_dir: fixture)

MAX_STEPS, AT, CHECK_EVERY = 300, 4, 3


def test_a_swallowed_ctrl_c_still_stops_the_grid_at_the_next_host_check(
        tmp_path, synth_dir, monkeypatch):  # noqa: F811 (the imported fixture)
    calls = {"n": 0}

    def make(step):
        def swallowing(stack):
            calls["n"] += 1
            if calls["n"] == AT:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.2)  # the handler runs here; its KeyboardInterrupt is dropped
                except KeyboardInterrupt:
                    pass
            return step(stack)
        return swallowing

    wrap(monkeypatch, Seams.step, make)
    grid = write_grid(tmp_path, {"train.max_steps": MAX_STEPS, "train.eval_every": MAX_STEPS,
                                 "train.check_every": CHECK_EVERY})
    code, out = run_grid(grid, tmp_path / "results", synth_dir, 1)
    assert code == 130 and "interrupted" in out, out
    assert calls["n"] <= AT + CHECK_EVERY  # stopped at the next check, not after MAX_STEPS steps
    assert not list((tmp_path / "results" / "runs").glob("*.parquet"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
