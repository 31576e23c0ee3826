"""Stacked runs: run r of a stack computes what it computes alone (float64, every family and optimizer),
keeps its own lifecycle (divergence, early stopping, checkpoints), and resumes after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import bench.training.step
from bench.cli import app
from bench.grid.files import parse_grid
from bench.grid.stacks import PER_RUN_KEYS, plan_stacks, stack_key
from bench.storage import ResultsLayout
from bench.training.optim import OPTIMIZERS
from bench.training.run import RunData
from bench.training.stack import Stack
from tests.conftest import DEVICES
from tests.families import PAIRS
from vae_core.probes import functorch_problem

REPO = Path(__file__).resolve().parents[1]
FAMILIES = PAIRS
# per run: seed, lr, KL warm-up, clipping norm[, patience] (all differ between the runs of a stack)
# Small lrs keep 50 steps well conditioned: after one step a stacked run differs from the run alone by ~1e-16
# (last-bit rounding of batched vs plain matmuls); at lr >= 1e-2 planar flows under centered RMSprop amplify that
# chaotically (1e-16 -> 2e-4 in 50 steps), as any change of summation order would, stacked or not.
PER_RUN = [(0, 1e-4, 0, 0.0), (1, 3e-4, 20, 0.0), (2, 1e-3, 0, 0.5)]


# H-SNF with 3 reflections of a 3-D latent (its default there) is chaotic under centered RMSprop at lr 1e-3: the
# 2e-16 difference of the first step grows to 9e-6 in 50 steps (vamp prior; with 8 reflections to 6e-4), as a
# reflection's direction v / |v| is ill-conditioned for short v. Two reflections stay at 2e-16 throughout.
# O-SNF with M = D = 3 (square raw Q) is chaotic the same way: at lr 1e-3 a raw Q reaches condition number 1.6e6
# by step 3, where the gradient of its polar factor moves by 1e-9 (relative) under a 1e-16 change of the raw
# matrix (the early-stopping and the fixed-count iteration alike). With two columns (3 x 2) the runs stay within
# 3.6e-10 of alone over 50 steps (measured 2026-12-08; the early-stopping iteration reached 4e-9 there).
FAMILY_MODEL_KEYS = {"sylvester-householder": {"posterior_householder_reflections": 2},
                     "sylvester-orthogonal": {"posterior_orthogonal_vectors": 2}}


def configs(posterior: str, prior: str, optimizer: str, per_run=PER_RUN, model_keys: dict | None = None, **train):
    model = {"hidden": [8], "latent_dim": 3, "posterior": posterior, "prior": prior, "prior_components": 3,
             **FAMILY_MODEL_KEYS.get(posterior, {}), **(model_keys or {})}
    keys = ("train.seed", "train.lr", "train.kl_warmup_steps", "train.grad_clip", "train.patience")
    variants = [{"name": f"r{i}", **dict(zip(keys, values))} for i, values in enumerate(per_run)]
    return parse_grid({"name": "s", "model": model,
                       "train": {"optimizer": optimizer, "batch_size": 8, "max_steps": 50, "eval_every": 25,
                                 "check_every": 5, "compile": False, **train},
                       "data": {"eval_batch_size": 7}, "eval": {"iw_samples": 6, "valid_iw_samples": 3},
                       "variant": variants})


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| over the whole vector (batched and plain matmuls round differently in the last bits)."""
    return ((a - b).norm() / b.norm()).item()


def synthetic_data(device: str = "cpu") -> RunData:
    gen = torch.Generator().manual_seed(0)
    bits = lambda n: (torch.rand(n, 784, generator=gen) < 0.25).to(torch.get_default_dtype()).to(device)  # noqa: E731
    return RunData(train=bits(40), valid=bits(10), test=bits(9), dynamic=False, digest="synthetic")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("posterior,prior", FAMILIES, ids=[f"{q}+{p}" for q, p in FAMILIES])
def test_run_k_of_a_stack_trains_exactly_as_alone(float64, one_thread, tmp_path, posterior, prior, optimizer,
                                                  device):
    """Same training ELBO at every step and the same weights and optimizer state after 50 steps (relative 1e-9), with
    per-run seeds (init, batches, noise), lrs, KL warm-ups and clipping norms; batches wrap the epoch."""
    assert_stack_trains_as_alone(configs(posterior, prior, optimizer), tmp_path, device)


@pytest.mark.parametrize("posterior,prior", [("iaf", "vamp"), ("planar", "flow")])
def test_iwae_objective_and_lr_schedule_train_in_a_stack_exactly_as_alone(float64, one_thread, tmp_path, posterior,
                                                                          prior):
    """The IWAE bound over 4 samples with a decaying lr (synthetic data: 50000 // 8 steps an epoch, so the
    exponential factor falls smoothly every step), Adam's eps of the IWAE paper and per-tensor gradient
    normalization (each run's tensors normalized by their own norms)."""
    cfgs = configs(posterior, prior, "adam", objective="iwae", objective_samples=4, lr_schedule="exponential",
                   lr_decay=1e-3, optimizer_eps=1e-4, grad_normalize="per-tensor")
    assert_stack_trains_as_alone(cfgs, tmp_path, "cpu")


@pytest.mark.parametrize("posterior,prior", [("mean-field", "vamp"), ("iaf", "standard"), ("sylvester-orthogonal", "mog"),
                                           ("nsf", "flow")])
def test_two_layer_runs_train_in_a_stack_exactly_as_alone(float64, one_thread, tmp_path, posterior, prior):
    """A hierarchical model (z1: 3, z2: 2) is one more flat parameter vector: stacked = alone as for one layer."""
    cfgs = configs(posterior, prior, "adam", model_keys={"layers": 2, "top_latent_dim": 2})
    assert cfgs[0].model.noise_dim == 5 and functorch_problem(cfgs[0].model) == ""  # really stacked
    assert_stack_trains_as_alone(cfgs, tmp_path, "cpu")


def assert_stack_trains_as_alone(cfgs, tmp_path, device):
    """Run k of the stack trains as alone; a family that cannot run under torch.func is never stacked: the
    planner puts each run alone (whatever --stack says) and a stack of it refuses to step."""
    data, layout = synthetic_data(device), ResultsLayout(tmp_path)
    stack = Stack(cfgs, data, layout, torch.device(device))
    if stack.fns.stack_problem:
        assert [len(p.configs) for p in plan_stacks(cfgs, 3, device)] == [1, 1, 1]
        stack.prepare()
        with pytest.raises(ValueError, match="cannot be stacked"):
            stack.step()
        return
    alone = [Stack([cfg], data, layout, torch.device(device)) for cfg in cfgs]
    for s in (stack, *alone):
        s.prepare()
    for _ in range(50):
        rec, kl = stack.step()  # [3], [3]
        for r, single in enumerate(alone):
            rec_1, kl_1 = single.step()  # [1], [1]
            torch.testing.assert_close(rec[r] - kl[r], rec_1[0] - kl_1[0], rtol=1e-9, atol=0)  # training ELBO
    for r, single in enumerate(alone):
        for ours, theirs in [(stack.flat[r], single.flat[0]), *((s[r], s_1[0]) for s, s_1 in
                                                                zip(stack.opt_state, single.opt_state))]:
            assert relative_distance(ours, theirs) < 1e-9
    assert torch.isfinite(stack.flat).all() and bool(stack.active.all())
    assert not torch.allclose(stack.flat[0], stack.flat[1])  # different seeds: different runs


def test_a_stack_of_one_is_the_plain_function_without_vmap(float64, tmp_path):
    """R = 1 calls `bench.training.step.train_step` itself on the run's tensors: bit for bit, no batching."""
    (cfg, *_) = configs("iaf", "vamp", "adam")
    stack = Stack([cfg], synthetic_data(), ResultsLayout(tmp_path), torch.device("cpu"))
    stack.prepare()
    flat, state, t = stack.flat.clone(), tuple(s.clone() for s in stack.opt_state), stack.t.clone()
    gen = torch.Generator().manual_seed(cfg.train.seed)
    stack.step()
    batch_gen = torch.Generator().manual_seed(cfg.train.seed + 1_000_003)
    idx = torch.randperm(40, generator=batch_gen)[:8]
    eps = torch.randn((1, 8, 3), generator=gen)
    out = bench.training.step.train_step(stack.template, stack.fns.layout, OPTIMIZERS["adam"], flat[0],
                                tuple(s[0] for s in state), t[0], stack.data.train[idx], eps, stack.lr[0],
                                stack.warmup[0], stack.clip[0], torch.tensor(True))
    assert torch.equal(stack.flat[0], out[0]) and torch.equal(stack.t[0], out[2])


def test_a_bf16_stack_trains_its_runs_as_alone_up_to_bf16_rounding(tmp_path):
    """float32 weights, bf16 matmuls: run k of a stack of 3 stays within bf16 rounding of the run alone over
    10 steps (vmap's batched matmuls round differently), and far from the other runs."""
    cfgs = configs("iaf", "mog", "adam", autocast="bf16")
    data = synthetic_data()
    stack = Stack(cfgs, data, ResultsLayout(tmp_path), torch.device("cpu"))
    alone = [Stack([cfg], data, ResultsLayout(tmp_path), torch.device("cpu")) for cfg in cfgs]
    for s in (stack, *alone):
        s.prepare()
        for _ in range(10):
            s.step()
    for r, single in enumerate(alone):
        assert relative_distance(stack.flat[r], single.flat[0]) < 1e-3
        assert relative_distance(stack.flat[(r + 1) % 3], single.flat[0]) > 1e-1
    assert stack.flat.dtype == torch.float32 and torch.isfinite(stack.flat).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_replay_the_compiled_step_with_its_numbers(tmp_path):
    """On CUDA, a stack of 3 compiled with and without CUDA graphs: same training ELBO every step and the same
    weights after 30 steps (float32, one graph replayed), through a shrink to 2 runs."""
    results = {}
    for graphs in (False, True):
        cfgs = configs("iaf", "vamp", "adam", compile=True, cuda_graphs=graphs)
        stack = Stack(cfgs, synthetic_data("cuda"), ResultsLayout(tmp_path / str(graphs)), torch.device("cuda"))
        assert stack.fns.cuda_graphs == graphs
        stack.prepare()

        def step_elbo():
            rec, kl = stack.step()
            return rec - kl  # a new tensor: a replay's own outputs are overwritten by the next replay

        elbos = [step_elbo() for _ in range(20)]
        stack._keep([0, 2])
        elbos += [step_elbo() for _ in range(10)]
        assert not stack.fns.compile_error, stack.fns.compile_error
        results[graphs] = (torch.cat(elbos).cpu(), stack.flat.clone().cpu())
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-3)
    assert relative_distance(results[True][1], results[False][1]) < 1e-5


def test_cuda_graphs_are_off_on_the_cpu(tmp_path):
    (cfg, *_) = configs("mean-field", "standard", "adam", cuda_graphs=True, compile=True)
    assert not Stack([cfg], synthetic_data(), ResultsLayout(tmp_path), torch.device("cpu")).fns.cuda_graphs


def test_a_stack_draws_the_objectives_k_samples_from_each_runs_generator(float64, tmp_path):
    """IWAE with k = 3: the stack's step is `train_step` on the run's batch and k noise draws [k, B, D]."""
    (cfg, *_) = configs("planar", "mog", "adam", objective="iwae", objective_samples=3)
    stack = Stack([cfg], synthetic_data(), ResultsLayout(tmp_path), torch.device("cpu"))
    stack.prepare()
    flat, state, t = stack.flat.clone(), tuple(s.clone() for s in stack.opt_state), stack.t.clone()
    stack.step()
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(cfg.train.seed + 1_000_003))[:8]
    gen = torch.Generator().manual_seed(cfg.train.seed)
    eps = torch.stack([torch.randn((8, 3), generator=gen) for _ in range(3)])  # one [B, D] block per sample
    out = bench.training.step.train_step(stack.template, stack.fns.layout, OPTIMIZERS["adam"], flat[0],
                                tuple(s[0] for s in state), t[0], stack.data.train[idx], eps, stack.lr[0],
                                stack.warmup[0], stack.clip[0], torch.tensor(True), bench.training.step.StepOptions("iwae"))
    assert torch.equal(stack.flat[0], out[0])


def lifecycle(stack: Stack) -> dict[str, dict]:
    """Each run's outcome from `Stack.run()`: status, steps, best step, validation and test figures, curves."""
    out = {}
    for run, test in stack.run():
        out[run.cfg.variant] = {"status": run.status, "step": run.step, "first_bad_step": run.first_bad_step,
                                "best": dict(run.best), "test": test, "curves": pd.DataFrame(run.curves)}
    return out


def test_divergence_and_early_stopping_stay_inside_their_run(float64, tmp_path):
    """A stack of 4: a healthy run, one at lr 1e30 (its weights go non-finite), one whose lr is too small to
    move the weights (patience 1: stops at the second validation) and another healthy run. Each ends as it
    ends alone and the healthy ones give the figures they give alone (relative 1e-9): NaNs reach no other run."""
    per_run = [(0, 3e-3, 0, 0.0), (1, 1e30, 0, 0.0), (2, 1e-30, 0, 0.0, 1), (3, 1e-2, 10, 1.0)]
    cfgs = configs("iaf", "mog", "sgd", per_run=per_run, max_steps=60, eval_every=15, check_every=5)
    data = synthetic_data()
    stacked = lifecycle(Stack(cfgs, data, ResultsLayout(tmp_path / "stack"), torch.device("cpu")))
    alone = {}
    for cfg in cfgs:
        alone.update(lifecycle(Stack([cfg], data, ResultsLayout(tmp_path / cfg.variant), torch.device("cpu"))))
    assert stacked["r1"]["status"] == "diverged" and stacked["r1"]["first_bad_step"] >= 1
    assert stacked["r2"]["status"] == "trained" and stacked["r2"]["step"] == 30  # stopped at the 2nd validation
    assert stacked["r0"]["status"] == stacked["r3"]["status"] == "trained" and stacked["r0"]["step"] == 60
    for name, a in alone.items():
        s = stacked[name]
        assert (s["status"], s["step"], s["first_bad_step"], s["best"]["step"]) == \
            (a["status"], a["step"], a["first_bad_step"], a["best"]["step"]), name
        if a["status"] == "trained":
            for key in ("elbo", "iw_log_px", "reconstruction", "kl"):
                assert s["test"][key] == pytest.approx(a["test"][key], rel=1e-9), (name, key)
            pd.testing.assert_frame_equal(s["curves"].drop(columns=["train_examples_per_s", "wall_seconds"]),
                                          a["curves"].drop(columns=["train_examples_per_s", "wall_seconds"]),
                                          rtol=1e-9)


def test_select_last_tests_the_final_weights_not_the_best(float64, tmp_path):
    per_run = [(0, 3e-3, 0, 0.0), (1, 1e-2, 0, 0.0)]
    best = lifecycle(Stack(configs("mean-field", "standard", "adam", per_run=per_run, eval_every=10),
                           synthetic_data(), ResultsLayout(tmp_path / "best"), torch.device("cpu")))
    last = lifecycle(Stack(configs("mean-field", "standard", "adam", per_run=per_run, eval_every=10, select="last"),
                           synthetic_data(), ResultsLayout(tmp_path / "last"), torch.device("cpu")))
    for name in ("r0", "r1"):
        valid = best[name]["curves"].query("split == 'valid'").set_index("step")["elbo"]
        assert best[name]["best"]["step"] == valid.idxmax()
        assert last[name]["best"]["step"] == 50 and last[name]["best"]["elbo"] == valid[50]
    assert any(best[name]["best"]["step"] != 50 for name in ("r0", "r1")), "the test needs a run whose best is earlier"


def test_grouping_keeps_only_per_run_keys_apart():
    runs = parse_grid({"name": "g", "model": {"hidden": [8], "latent_dim": 2},
                       "variant": [{"name": "mf"}, {"name": "iaf", "model.posterior": "iaf"}],
                       "grid": {"train.seed": [0, 1, 2], "train.lr": [1e-3, 3e-3], "train.patience": [0, 2]}})
    plans = plan_stacks(runs, 5, "cpu")
    assert sorted(len(p.configs) for p in plans) == [4, 4, 4, 4, 4, 4]  # 12 per variant, cut near-equally
    for plan in plans:
        assert len({c.variant for c in plan.configs}) == 1 and len({stack_key(c) for c in plan.configs}) == 1
    assert set(PER_RUN_KEYS) >= {"train.seed", "train.lr"}
    assert len(plan_stacks(runs, 1, "cpu")) == 24 and len({p.stack_id for p in plans}) == 6
    different_steps = parse_grid({"name": "g", "grid": {"train.max_steps": [10, 20]}})
    assert len(plan_stacks(different_steps, 9, "cpu")) == 2
    warmups_in_epochs = parse_grid({"name": "g", "grid": {"train.kl_warmup_epochs": [1, 2],
                                                          "train.patience_epochs": [3, 4]}})
    assert len(plan_stacks(warmups_in_epochs, 9, "cpu")) == 1
    for key, values in (("train.objective_samples", [1, 2]), ("train.lr_schedule", ["constant", "iwae"]),
                        ("train.max_epochs", [1, 2]), ("train.autocast", ["none", "bf16"])):
        runs = parse_grid({"name": "g", "grid": {key: values}})  # the step's shapes, recipe and length
        assert len(plan_stacks(runs, 9, "cpu")) == 2, key


# -- through the runner ----------------------------------------------------------------------------------
def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_grid_stacked_and_unstacked_agree(tmp_path, shared_data_dir, device):
    """configs/tiny.toml (float32, real MNIST), --stack 2 vs --stack 1: test IW log p(x) within 0.1 nats run
    by run, same files and columns, plus the stack's columns."""
    out = {}
    for size in ("1", "2"):
        res = invoke("run", "--grid", str(REPO / "configs" / "tiny.toml"), "--results", str(tmp_path / size),
                     "--data-dir", str(shared_data_dir), "--stack", size, "--device", device)
        assert res.exit_code == 0, res.output
        out[size] = pd.read_parquet(tmp_path / size / "runs").set_index("run_id").sort_index()
    single, stacked = out["1"], out["2"]
    assert list(single.index) == list(stacked.index) and set(stacked["status"]) == {"completed"}
    assert set(single.columns) == set(stacked.columns)
    assert (single["stack_size"] == 1).all() and (stacked["stack_size"] == 2).all()
    assert stacked.groupby("stack_id").size().tolist() == [2, 2]
    assert (stacked["test_iw_log_px"] - single["test_iw_log_px"]).abs().max() < 0.1
    assert (stacked["best_step"] == single["best_step"]).all()
    # per-run throughput = its examples / the stack's training seconds: equal within a stack
    assert stacked.groupby("stack_id")["train_examples_per_s"].nunique().eq(1).all()
    for size in ("1", "2"):
        for folder in ("curves", "checkpoints", "state"):
            assert len(list((tmp_path / size / folder).iterdir())) == 4, (size, folder)


KILL_GRID = """
name = "k"
[model]
hidden = [16]
latent_dim = 4
posterior = "iaf"
[train]
batch_size = 32
max_steps = 300
eval_every = 50
check_every = 10
compile = false
[data]
max_eval_images = 64
[eval]
iw_samples = 4
valid_iw_samples = 2
[grid]
"train.seed" = [0, 1, 2]
"""


def test_kill_9_mid_stack_then_resume(tmp_path, shared_data_dir):
    """A stack of 3 killed with SIGKILL after its first saved state: re-running resumes every run, finishes
    with no duplicate rows or curve points, and matches an uninterrupted run."""
    grid = tmp_path / "k.toml"
    grid.write_text(KILL_GRID)
    args = ["run", "--grid", str(grid), "--data-dir", str(shared_data_dir), "--stack", "3"]
    results = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args, "--results", str(results)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    layout = ResultsLayout(results)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            states = list((results / "state").glob("*.pt")) if (results / "state").exists() else []
            if len(states) == 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the grid finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (results / "runs").exists() or not list((results / "runs").glob("*.parquet"))
    res = invoke(*args, "--results", str(results))
    assert res.exit_code == 0, res.output
    straight = invoke(*args, "--results", str(tmp_path / "straight"))
    assert straight.exit_code == 0, straight.output
    resumed = pd.read_parquet(results / "runs").set_index("run_id").sort_index()
    reference = pd.read_parquet(tmp_path / "straight" / "runs").set_index("run_id").sort_index()
    assert len(resumed) == 3 and (resumed["resumed_from_step"] > 0).all() and (resumed["steps_done"] == 300).all()
    for key in ("val_elbo", "test_elbo", "test_iw_log_px", "best_step"):
        pd.testing.assert_series_equal(resumed[key], reference[key], rtol=1e-5)
    curves = pd.read_parquet(results / "curves")
    assert curves.groupby(["run_id", "step", "split"]).size().max() == 1
    assert sorted(curves["step"].unique()) == list(range(50, 301, 50))
    assert not list(layout.root.rglob("*.tmp"))


def test_rerun_trains_only_what_is_left_of_a_stack(tmp_path, shared_data_dir):
    grid = tmp_path / "k.toml"
    grid.write_text(KILL_GRID.replace("max_steps = 300", "max_steps = 50"))
    args = ["run", "--grid", str(grid), "--data-dir", str(shared_data_dir), "--stack", "3",
            "--results", str(tmp_path / "r")]
    assert invoke(*args).exit_code == 0
    runs = pd.read_parquet(tmp_path / "r" / "runs").set_index("run_id")
    lost = runs.index[1]
    layout = ResultsLayout(tmp_path / "r")
    for path in (layout.run(lost), layout.state(lost), layout.curves(lost)):
        path.unlink()
    dry = invoke(*args, "--dry-run")
    assert "1 stacks for the 1 runs to do" in " ".join(dry.output.split())
    again = invoke(*args)
    assert again.exit_code == 0 and "2 already finished (skipped), 1 to run" in again.output
    rerun = pd.read_parquet(layout.run(lost)).iloc[0]
    assert rerun["stack_size"] == 1
    assert rerun["test_iw_log_px"] == pytest.approx(runs.loc[lost, "test_iw_log_px"], abs=1e-3)
