"""Benchmark fixtures: data (real binarized MNIST, required), machine info, and the ours/baseline table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.conftest import _shared_data

SPEEDS: dict[tuple[str, str], float] = {}  # (case, "ours" | "ours-compiled" | "baseline") -> examples/s


def benchmark_mnist(data_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) binarized MNIST from `data_dir` (else $VAEBENCH_DATA, else the cache). Missing or corrupt
    data fails the benchmark: timing other data would be a different benchmark."""
    from vae_core.data import DataError, load_dataset

    try:
        ds = load_dataset("binarized-mnist", data_dir)
    except DataError as err:
        problem = str(err)
    else:
        return ds.train, ds.test
    pytest.fail(f"the benchmarks need binarized MNIST: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """(train [50000, 784], test [10000, 784]) binarized MNIST; an error if it is missing or corrupt."""
    return benchmark_mnist(_shared_data())


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
    base = SPEEDS.get((case, "baseline"))
    if side != "baseline" and base:
        benchmark.extra_info["ours_over_baseline"] = round(per_s / base, 2)
    alone = SPEEDS.get((case, "one-at-a-time"))
    if side == "stacked-9" and alone:
        benchmark.extra_info["stacked_over_one_at_a_time"] = round(per_s / alone, 2)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch_version"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["device"] = "cpu"


def pytest_terminal_summary(terminalreporter):
    cases = sorted({case for case, side in SPEEDS if side in ("ours", "ours-compiled", "baseline")})
    stacked = sorted({case for case, side in SPEEDS if side in ("one-at-a-time", "stacked-9")})
    tr = terminalreporter
    if stacked:
        tr.section("examples/s: 9 runs stacked vs one at a time (both compiled, same run)")
        tr.write_line(f"{'case':44s} {'one':>9s} {'stacked':>9s} {'ratio':>6s} {'gemm':>9s} {'one/gemm':>8s}")
        for case in stacked:
            one, many, gemm = (SPEEDS.get((case, side)) for side in ("one-at-a-time", "stacked-9", "gemm-bound"))
            tr.write_line(f"{case:44s} {one or 0:9.0f} {many or 0:9.0f} "
                          f"{(many / one if one and many else 0):6.2f} {gemm or 0:9.0f} "
                          f"{(one / gemm if one and gemm else 0):8.2f}")
    if not cases:
        return
    tr.section("examples/s: ours vs. plain baseline (same run, same threads)")
    tr.write_line(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu")
    tr.write_line(f"{'case':44s} {'ours':>9s} {'compiled':>9s} {'baseline':>9s} {'ratio':>6s} {'ratio c':>7s}")
    for case in cases:
        ours, comp, base = (SPEEDS.get((case, side)) for side in ("ours", "ours-compiled", "baseline"))
        fig = lambda v: f"{v:9.0f}" if v else "        -"  # noqa: E731
        ratio = lambda v, w: f"{v / w:.2f}" if v and w else "-"  # noqa: E731
        tr.write_line(f"{case:44s} {fig(ours)} {fig(comp)} {fig(base)} {ratio(ours, base):>6s} "
                      f"{ratio(comp, base):>7s}")
