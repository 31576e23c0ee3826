"""Benchmark fixtures: data (real binarized MNIST when available), machine info, and the ours/baseline table."""

from __future__ import annotations

import os

import pytest
import torch

SPEEDS: dict[tuple[str, str], dict[str, float]] = {}  # (case, "ours"|"baseline") -> examples/s


@pytest.fixture(scope="session")
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """(train [50000, 784], test [10000, 784]) binarized MNIST; Bernoulli(0.13) noise of the same shapes if absent."""
    try:
        from vae_core.data import load_dataset

        ds = load_dataset("binarized-mnist")
        return ds.train, ds.test
    except Exception:
        gen = torch.Generator().manual_seed(0)
        return tuple((torch.rand(n, 784, generator=gen) < 0.13).float() for n in (50000, 10000))


@pytest.fixture(scope="session")
def train_images(mnist) -> torch.Tensor:
    return mnist[0]


@pytest.fixture(scope="session")
def iw_test_images(mnist) -> torch.Tensor:
    """512 test images, a seeded random subset (the test file is sorted by digit)."""
    idx = torch.randperm(mnist[1].shape[0], generator=torch.Generator().manual_seed(0))[:512]
    return mnist[1][idx]


def record(benchmark, case: str, side: str, examples_per_call: int) -> None:
    """Store examples/s of a finished benchmark (min time over rounds) and machine info in extra_info."""
    stats = benchmark.stats
    if stats is None:  # --benchmark-disable: nothing was timed
        return
    per_s = examples_per_call / stats.stats.min
    SPEEDS[(case, side)] = per_s
    benchmark.extra_info.update(examples_per_s=round(per_s), torch_version=torch.__version__,
                                torch_threads=torch.get_num_threads(), device="cpu")
    other = SPEEDS.get((case, "baseline" if side == "ours" else "ours"))
    if other:
        ratio = per_s / other if side == "ours" else other / per_s
        benchmark.extra_info["ours_over_baseline"] = round(ratio, 2)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch_version"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["device"] = "cpu"


def pytest_terminal_summary(terminalreporter):
    cases = sorted({case for case, _ in SPEEDS})
    if not cases:
        return
    tr = terminalreporter
    tr.section("examples/s: ours vs. plain baseline (same run, same threads)")
    tr.write_line(f"{'case':44s} {'ours':>10s} {'baseline':>10s} {'ratio':>7s}")
    for case in cases:
        ours, base = SPEEDS.get((case, "ours")), SPEEDS.get((case, "baseline"))
        ratio = f"{ours / base:7.2f}" if ours and base else "      -"
        tr.write_line(f"{case:44s} {ours or 0:10.0f} {base or 0:10.0f} {ratio}")
