"""Stacked training (pytest-benchmark): 9 runs of one architecture (3 seeds x 3 lrs) as one stacked model
against the same runs one at a time, both compiled, aggregated training examples/s; and the GEMM bound.

Runs one after another all have the shapes of one run, so one-at-a-time throughput is that of one compiled
run (a stack of one: the runner's path for `--stack 1`). Both sides of a case run back to back.
"""

from __future__ import annotations

import pytest
import torch

from tests.benchmarks.conftest import record
from tests.benchmarks.test_speed import BATCH, FAMILIES, REFERENCE, STEPS, our_block, stack_configs

QUICK = {"hidden": [256], "latent_dim": 32, "prior_components": 50}
ARCHS = {"ref 784-256-256 z128": (REFERENCE, "rmsprop-centered"), "quick 784-256 z32": (QUICK, "adam")}
SEEDS, LRS = (0, 1, 2), (3e-4, 1e-3, 3e-3)
SIDES = {"one-at-a-time": 1, "stacked-9": 9}
ROUNDS = 6
CI_CASE = ("quick 784-256 z32", "iaf")  # the case the plain test command runs once (untimed)


@pytest.mark.parametrize("side", list(SIDES))
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_stacked_training(benchmark, request, train_images, tmp_path, arch, family, side):
    if request.config.getoption("benchmark_disable") and (arch, family) != (CI_CASE):
        pytest.skip("each case compiles for tens of seconds: timed with --benchmark-only, one case runs untimed")
    model, optimizer = ARCHS[arch]
    if SIDES[side] == 1:
        cfgs = stack_configs({**model, **FAMILIES[family]}, optimizer, compiled=True)
    else:
        cfgs = stack_configs({**model, **FAMILIES[family]}, optimizer, SEEDS, LRS, compiled=True)
    block = our_block(cfgs, train_images, tmp_path)
    benchmark.group = f"stack {arch} {family}"
    benchmark.pedantic(block, rounds=ROUNDS, iterations=1)
    record(benchmark, f"stack {arch} {family}", side, len(cfgs) * STEPS * BATCH)


def gemm_block(sizes: list[int], latent: int):
    """The matmuls of one mean-field MLP step alone (forward, and backward without the input's gradient):
    the step's speed limit on this machine, whatever else it does."""
    enc = [*sizes, 2 * latent]
    dec = [latent, *reversed(sizes[1:]), sizes[0]]
    layers = list(zip(enc[:-1], enc[1:])) + list(zip(dec[:-1], dec[1:]))
    gen = torch.Generator().manual_seed(0)
    acts = [torch.randn(BATCH, a, generator=gen) for a, _ in layers]
    weights = [torch.randn(b, a, generator=gen) for a, b in layers]
    outs = [torch.randn(BATCH, b, generator=gen) for _, b in layers]

    def block():
        for _ in range(STEPS):
            for i, (x, w, g) in enumerate(zip(acts, weights, outs)):
                torch.mm(x, w.t())  # forward
                torch.mm(g.t(), x)  # weight gradient
                if i not in (0, len(enc) - 1):  # no gradient w.r.t. the data or the latent noise's input
                    torch.mm(g, w)

    block()
    return block


def test_gemm_bound_reference_mean_field(benchmark):
    block = gemm_block([784, 256, 256], 128)
    benchmark.group = "stack ref 784-256-256 z128 mean-field"
    benchmark.pedantic(block, rounds=ROUNDS, iterations=1)
    record(benchmark, "stack ref 784-256-256 z128 mean-field", "gemm-bound", STEPS * BATCH)
