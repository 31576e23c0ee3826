"""Speed checks (pytest-benchmark): one training step per family and IW evaluation, ours vs. the plain
baseline in the same run. `pytest --benchmark-only` times them; the plain test command runs each once."""

from __future__ import annotations

import pytest
import torch

from bench.optim import flatten_parameters, make_optimizer
from bench.step import EAGER, RunFunctions, train_step
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
    "mog-prior": {"prior": "mog"},
    "flow-prior": {"prior": "flow"},
    "vamp-prior": {"prior": "vamp"},
}


def our_block(model, images: torch.Tensor, compiled: bool):
    """STEPS steps the way the runner trains: resident data, index slices of a permutation, flat parameters,
    optionally compiled (the shipped grids' setting; compilation happens in the untimed warm-up)."""
    optimizer = make_optimizer("rmsprop-centered", [flatten_parameters(model)], 1e-3)
    if compiled:
        torch._dynamo.reset()
    fns = RunFunctions.compile() if compiled else EAGER
    gen = torch.Generator().manual_seed(0)
    batches_per_epoch = images.shape[0] // BATCH
    state = {"perm": torch.randperm(images.shape[0], generator=gen), "next": 0}

    def block():  # each call continues through the epoch (fresh rows, as the runner and the DataLoader see)
        for _ in range(STEPS):
            if state["next"] == batches_per_epoch:
                state["perm"], state["next"] = torch.randperm(images.shape[0], generator=gen), 0
            i = state["next"]
            train_step(model, optimizer, images[state["perm"][i * BATCH:(i + 1) * BATCH]], gen, fns=fns)
            state["next"] += 1

    block()  # warm-up (compilation, allocator, optimizer state)
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
def test_train_step_reference_arch(benchmark, train_images, family, side):
    """Each family's sides run back to back, so a drift in machine speed hits ours and the baseline alike."""
    torch.manual_seed(0)
    if side == "baseline":
        block = baseline_block(baseline_model(family), train_images)
    else:
        block = our_block(build_vae({**REFERENCE, **FAMILIES[family]}), train_images, side == "ours-compiled")
    run(benchmark, block, f"train ref 784-256-256 z128 {family}", side, STEPS * BATCH, rounds=TRAIN_ROUNDS)


@pytest.mark.parametrize("side", ["ours", "ours-compiled"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_train_step_seed000_arch(benchmark, train_images, family, side):
    torch.manual_seed(0)
    model = build_vae({**SEED000, **FAMILIES[family]})
    run(benchmark, our_block(model, train_images, side == "ours-compiled"), f"train seed000 784-512 z32 {family}",
        side, STEPS * BATCH, rounds=TRAIN_ROUNDS)


@pytest.mark.parametrize("side", ["ours", "ours-compiled", "baseline"])
def test_iw_log_px_k1000(benchmark, iw_test_images, side):
    torch.manual_seed(0)
    x = iw_test_images
    if side != "baseline":
        model = build_vae(REFERENCE)
        torch._dynamo.reset()
        fns = RunFunctions.compile() if side == "ours-compiled" else EAGER
        fn = lambda: model.iw_log_px(x, k=1000, log_weight=fns.log_weight)  # noqa: E731
        fn()  # warm-up (compilation)
    else:
        model = baseline_model("mean-field")
        fn = lambda: baseline_iw_log_px(model, x, k=1000)  # noqa: E731
    run(benchmark, fn, "iw log p(x) k=1000, 512 images, mean-field", side, 512 * 1000, rounds=3)
