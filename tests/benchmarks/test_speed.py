"""Speed checks (pytest-benchmark): one training step per family and IW evaluation, ours vs. the plain
baseline in the same run. `pytest --benchmark-only` times them; the plain test command runs each once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.grid.files import parse_grid
from bench.storage import ResultsLayout
from bench.training.evaluate import evaluate
from bench.training.optim import OPTIMIZERS
from bench.training.run import RunData
from bench.training.stack import Stack
from bench.training.step import FlatLayout, StackFunctions
from tests.benchmarks.baseline import (BaselineVAE, baseline_iw_log_px, baseline_loader, baseline_optimizer,
                                       baseline_train_step)
from tests.benchmarks.conftest import record
from vae_core import build_vae

STEPS = 50  # training steps per timed call
TRAIN_ROUNDS = 10  # timed calls per case; the minimum is reported (the machine's speed drifts)
BATCH = 128
REFERENCE = {"hidden": [256, 256], "latent_dim": 128, "flow_hidden": 256, "prior_components": 500}
SEED000 = {"hidden": [512], "latent_dim": 32}
FAMILIES = {
    "mean-field": {},
    "iaf": {"posterior": "iaf"},
    "planar": {"posterior": "planar"},
    "householder": {"posterior": "householder"},
    "sylvester-orthogonal": {"posterior": "sylvester-orthogonal", "posterior_orthogonal_vectors": 16},
    "sylvester-householder": {"posterior": "sylvester-householder"},
    "sylvester-triangular": {"posterior": "sylvester-triangular"},
    "mog-prior": {"prior": "mog"},
    "flow-prior": {"prior": "flow"},
    "vamp-prior": {"prior": "vamp"},
}


ZUKO_FAMILIES = {  # zuko's flows through the adapter (vae_core/posteriors/zuko.py), 2 transforms, hidden 2 x 256
    "nsf": {"posterior": "nsf"},
    "naf": {"posterior": "naf"},
    "bpf": {"posterior": "bpf"},
    "zuko-maf": {"posterior": "zuko-maf"},
    "nsf-prior": {"prior": "nsf"},
}
ZUKO_CI_CASE = ("nsf", "ours")  # the case the plain test command runs once (untimed)


def stack_configs(model: dict, optimizer: str, seeds=(0,), lrs=(1e-3,), compiled: bool = False):
    """Run configs of one architecture: seeds x lrs (a stack of 9 with 3 of each), as the runner gets them."""
    return parse_grid({"name": "bench", "model": model,
                       "train": {"optimizer": optimizer, "batch_size": BATCH, "compile": compiled,
                                 "check_every": 10**6},
                       "grid": {"train.seed": list(seeds), "train.lr": list(lrs)}})


def our_block(cfgs, images: torch.Tensor, tmp: Path, compile_may_fail: bool = False):
    """STEPS steps of a `Stack` the way the runner trains it (resident data, each run's own permutation and
    noise, the one-graph step; compiled if the configs say so, compilation in the untimed warm-up)."""
    data = RunData(train=images, valid=images[:1], test=images[:1], dynamic=False, digest="bench")
    stack = Stack(cfgs, data, ResultsLayout(tmp), torch.device("cpu"))
    stack.prepare()

    def block():  # each call continues through the epoch (fresh rows, as the runner and the DataLoader see)
        for _ in range(STEPS):
            stack.step()

    block()  # warm-up (compilation, allocator)
    assert compile_may_fail or not stack.fns.compile_error, stack.fns.compile_error
    block.compile_error = stack.fns.compile_error
    return block


def baseline_block(model, images: torch.Tensor):
    optimizer = baseline_optimizer(model)
    loader = baseline_loader(images, BATCH)

    def block():
        for i, (batch,) in enumerate(loader):
            if i == STEPS:
                break
            baseline_train_step(model, optimizer, batch)

    block()
    return block


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def baseline_model(family: str) -> BaselineVAE:
    """The baseline of a family, checked to have exactly our model's parameters (so both sides do the same
    matmuls: the ratio compares implementations, not models)."""
    model = BaselineVAE(iaf=family == "iaf")
    ours = build_vae({**REFERENCE, **FAMILIES[family]})
    assert parameter_count(model) == parameter_count(ours), (family, parameter_count(model), parameter_count(ours))
    return model


def run(benchmark, fn, case: str, side: str, examples: int, rounds: int = 5) -> None:
    benchmark.group = case
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
    record(benchmark, case, side, examples)


REFERENCE_CASES = [(family, side) for family in FAMILIES
                   for side in (["baseline"] if family in ("mean-field", "iaf") else []) + ["ours", "ours-compiled"]]


@pytest.mark.parametrize("family,side", REFERENCE_CASES, ids=[f"{f}-{s}" for f, s in REFERENCE_CASES])
def test_train_step_reference_arch(benchmark, train_images, tmp_path, family, side):
    """Each family's sides run back to back, so a drift in machine speed hits ours and the baseline alike."""
    torch.manual_seed(0)
    if side == "baseline":
        block = baseline_block(baseline_model(family), train_images)
    else:
        cfgs = stack_configs({**REFERENCE, **FAMILIES[family]}, "rmsprop-centered", compiled=side == "ours-compiled")
        block = our_block(cfgs, train_images, tmp_path)
    run(benchmark, block, f"train ref 784-256-256 z128 {family}", side, STEPS * BATCH, rounds=TRAIN_ROUNDS)


@pytest.mark.parametrize("side", ["ours", "ours-compiled"])
@pytest.mark.parametrize("family", list(ZUKO_FAMILIES))
def test_train_step_reference_arch_zuko(benchmark, request, train_images, tmp_path, family, side):
    """zuko's flows at the reference architecture, eager and compiled (a flow that cannot compile runs eager: its
    compile error is recorded); parameter counts in extra_info."""
    if request.config.getoption("benchmark_disable") and (family, side) != ZUKO_CI_CASE:
        pytest.skip("tens of seconds per case: timed with --benchmark-only, one case runs untimed")
    torch.manual_seed(0)
    model = {**REFERENCE, **ZUKO_FAMILIES[family]}
    cfgs = stack_configs(model, "rmsprop-centered", compiled=side == "ours-compiled")
    block = our_block(cfgs, train_images, tmp_path, compile_may_fail=True)
    run(benchmark, block, f"train ref 784-256-256 z128 {family}", side, STEPS * BATCH, rounds=TRAIN_ROUNDS)
    benchmark.extra_info.update(parameters=parameter_count(build_vae(model)), compile_error=block.compile_error)


@pytest.mark.parametrize("side", ["ours", "ours-compiled"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_train_step_seed000_arch(benchmark, train_images, tmp_path, family, side):
    cfgs = stack_configs({**SEED000, **FAMILIES[family]}, "rmsprop-centered", compiled=side == "ours-compiled")
    run(benchmark, our_block(cfgs, train_images, tmp_path), f"train seed000 784-512 z32 {family}",
        side, STEPS * BATCH, rounds=TRAIN_ROUNDS)


@pytest.mark.parametrize("side", ["ours", "ours-compiled", "baseline"])
def test_iw_log_px_k1000(benchmark, iw_test_images, side):
    torch.manual_seed(0)
    x = iw_test_images
    if side != "baseline":
        model = build_vae(REFERENCE)
        fns = StackFunctions(model, OPTIMIZERS["sgd"], compile=side == "ours-compiled")
        flat = FlatLayout(model).flatten(model)[None]  # [1, N]
        fn = lambda: evaluate(fns, flat, x, [0], 1, 1000, x.shape[0])  # noqa: E731
        fn()  # warm-up (compilation)
    else:
        model = baseline_model("mean-field")
        fn = lambda: baseline_iw_log_px(model, x, k=1000)  # noqa: E731
    run(benchmark, fn, "iw log p(x) k=1000, 512 images, mean-field", side, 512 * 1000, rounds=3)
