"""`vaebench bench`: the speed checks (pytest-benchmark, `tests/benchmarks`)."""

from __future__ import annotations

import typer


def command() -> None:
    """Speed checks: train-step and IW-evaluation throughput per family vs. a plain baseline."""
    import pytest

    raise typer.Exit(pytest.main(["-q", "--benchmark-only", "tests/benchmarks"]))
