"""Mixture priors at the cost of one more layer (pytest-benchmark): on the VampPrior paper's one-layer protocol
(configs/reproduce/vampprior-*.toml, compiled), the VampPrior (K = 500) beside the standard prior, and the
VampPrior with the direct mixture form it replaced ("baseline"), for one training step and for the k = 5000 IW
test of 500 test images. Sides of a case run back to back in one process.

`--benchmark-only` times the full sizes; the plain test command (`--benchmark-disable`) runs each side once at
smoke sizes (2 steps, 20 images, k = 40) to check it executes, compiled only for the VampPrior's matrix-product
side (each compilation costs tens of seconds). `mixture_timing.py` prints the same comparison as
ratios.
"""

from __future__ import annotations

import pytest
import torch

from tests.benchmarks.conftest import record
from tests.benchmarks.mixture_timing import SIDES, iw_test_fn, mixture_form, prepared_stack, train_block

STEPS, TRAIN_ROUNDS = 20, 5  # steps per timed call, timed calls (the minimum is reported)
IMAGES, K = 500, 5000
BATCH = 100  # the protocol's batch size


def side_name(form: str) -> str:
    return "ours-compiled" if form == "matmul" else "baseline"


def compiled(smoke: bool, prior: str, form: str) -> bool:
    return not smoke or (prior, form) == ("vamp", "matmul")


@pytest.mark.parametrize("prior,form", SIDES, ids=[f"{p}-{f}" for p, f in SIDES])
def test_vampprior_protocol_train_step(benchmark, request, train_images, iw_test_images, tmp_path, prior, form):
    smoke = request.config.getoption("benchmark_disable")
    steps = 2 if smoke else STEPS
    torch.manual_seed(0)
    with mixture_form(form):
        stack = prepared_stack(prior, train_images, iw_test_images, tmp_path, compiled(smoke, prior, form))
        block = train_block(stack, steps)
        benchmark.group = f"train vampprior protocol {prior}"
        benchmark.pedantic(block, rounds=TRAIN_ROUNDS, iterations=1)
    record(benchmark, f"train vampprior protocol {prior}", side_name(form), steps * BATCH)


@pytest.mark.parametrize("prior,form", SIDES, ids=[f"{p}-{f}" for p, f in SIDES])
def test_vampprior_protocol_iw_test_k5000(benchmark, request, mnist, tmp_path, prior, form):
    smoke = request.config.getoption("benchmark_disable")
    images, k = (20, 40) if smoke else (IMAGES, K)
    test = mnist[1][torch.randperm(mnist[1].shape[0], generator=torch.Generator().manual_seed(0))[:images]]
    torch.manual_seed(0)
    with mixture_form(form):
        stack = prepared_stack(prior, mnist[0], test, tmp_path, compiled(smoke, prior, form))
        fn = iw_test_fn(stack, test, k)
        benchmark.group = f"iw k={k}, {images} images, vampprior protocol {prior}"
        benchmark.pedantic(fn, rounds=1, iterations=1)
    record(benchmark, f"iw k={k}, {images} images, vampprior protocol {prior}", side_name(form), images * k)
