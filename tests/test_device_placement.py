"""Device placement, checked on the CPU: a tiny grid (every posterior and prior family of the registries, stacked
and alone, training, validation, test, checkpoints, an interrupted run resumed, and the compiled path) runs
under `tests.device_guard.no_implicit_device`, which fails wherever project code creates a tensor or a
generator without naming its device: the CPU-vs-CUDA mix a GPU run would hit, found without a GPU.

Why a TorchFunctionMode rather than `torch.set_default_device("meta")`: see `tests/device_guard.py` (it fails
at the call site, also sees generators and 0-d tensors, and leaves torch's own internals alone).
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import bench.training.step
from bench.grid.files import load_grid
from bench.grid.stacks import plan_stacks
from bench.runner import run_grid_command
from bench.storage import ResultsLayout
from bench.tasks import RunTask, execute_task
from bench.training.run import RunData
from bench.training.stack import Stack
from tests.device_guard import REPO, ImplicitDeviceError, no_implicit_device
from vae_core import load_vae
from vae_core.posteriors import POSTERIORS
from vae_core.priors import PRIORS

FAMILIES = ([(q, "standard") for q in POSTERIORS]
            + [("mean-field", p) for p in PRIORS if p != "standard"])  # every family, as registered
MAX_STEPS, EVAL_EVERY, STOP_AT = 4, 2, 3  # the first session is interrupted at step 3, after its state of step 2


def tiny_grid(families: list[tuple[str, str]], compile: bool = False, eval_batch_size: int = 4,
              likelihood: str = "bernoulli", dataset: str = "binarized-mnist") -> str:
    variants = "".join(f'[[variant]]\nname = "{q}-{p}"\nmodel.posterior = "{q}"\nmodel.prior = "{p}"\n'
                       for q, p in families)
    return f"""
name = "dev"
[model]
hidden = [8]
latent_dim = 2
prior_components = 3
likelihood = "{likelihood}"
[train]
batch_size = 8
max_steps = {MAX_STEPS}
eval_every = {EVAL_EVERY}
check_every = 1
compile = {str(compile).lower()}
[data]
dataset = "{dataset}"
eval_batch_size = {eval_batch_size}
max_eval_images = 6
[eval]
iw_samples = 3
valid_iw_samples = 2
{variants}
[grid]
"train.seed" = [0, 1]
"""


class Interrupted(Exception):
    """Raised by the progress callback: the session ends mid-training, as a kill would end it."""


def interrupt_at(step: int):
    def on_progress(done: int, max_steps: int, elbo: float, examples_per_s: float) -> None:
        if done >= step:
            raise Interrupted(f"stopped at step {done}")

    return on_progress


def run_guarded_grid(grid_text: str, tmp_path, synth, stack: int) -> pd.DataFrame:
    """Session 1 (every stack interrupted after its first saved state), then `vaebench run` resuming every
    run to the end, all under the guard. Returns the run table."""
    data_dir = tmp_path / "data"
    synth.binarized_set(data_dir, rows=(24, 8, 8))  # evaluation: a seeded subset of 6
    grid = tmp_path / "dev.toml"
    grid.write_text(grid_text)
    results = tmp_path / f"results-{stack}"
    with no_implicit_device() as violations:
        plan_stacks(load_grid(grid), None, "cpu")  # --stack auto builds each variant's model to count parameters
        plans = plan_stacks(load_grid(grid), stack, "cpu")
        for plan in plans:
            task = RunTask(plan.configs, str(results), str(data_dir), "cpu", 1, plan.stack_id)
            rows = execute_task(task, on_progress=interrupt_at(STOP_AT))
            assert {row["status"] for row in rows} == {"failed"}, [row["error"] for row in rows]
            assert all("Interrupted" in row["error"] for row in rows), [row["error"] for row in rows]
        code = run_grid_command(grid, results, data_dir, "cpu", 1, False, str(stack))
    assert not violations, "\n".join(violations)
    runs = pd.read_parquet(results / "runs")
    assert code == 0, runs[["run_id", "status", "error"]].to_string()
    assert set(runs["status"]) == {"completed"}, runs[["run_id", "status", "error"]].to_string()
    assert (runs["resumed_from_step"] == EVAL_EVERY).all() and (runs["steps_done"] == MAX_STEPS).all()
    alone = {cfg.run_id for plan in plans if plan.reason.startswith("alone:") for cfg in plan.configs}
    expected = runs["run_id"].map(lambda run_id: 1 if run_id in alone else stack)  # torch.func-less families
    assert (runs["stack_size"] == expected).all(), runs[["run_id", "stack_size"]].to_string()
    assert stack == 1 or (expected == stack).any()
    for run_id in runs["run_id"]:
        load_vae(ResultsLayout(results).checkpoint(run_id))  # a loadable checkpoint per run
    return runs


@pytest.mark.parametrize("stack", [1, 2], ids=["alone", "stacked"])
def test_every_family_trains_evaluates_and_resumes_with_explicit_devices(tmp_path, synth, one_thread, stack):
    """All posterior x prior pairs, 2 seeds each; alone (--stack 1) and in stacks of 2 (vmap)."""
    runs = run_guarded_grid(tiny_grid(FAMILIES), tmp_path, synth, stack)
    assert len(runs) == 2 * len(FAMILIES)
    assert (runs["test_iw_log_px"] < 0).all()


def test_the_compiled_path_creates_no_implicit_device(tmp_path, one_thread, monkeypatch):
    """`train.compile` = true (the default), a stack of 2 (vmap): dynamo traces every stack function under the
    guard (backend "eager": the trace without inductor's C++ build, minutes here; one evaluation batch shape),
    and no guard error hides in an eager fallback. The grids above cover the eager paths, alone and stacked."""
    monkeypatch.setattr(bench.training.step, "compile_fn", lambda fn, name, mode="default": torch.compile(
        fn, dynamic=False, backend="eager"))
    cfgs = load_grid_text(tmp_path, tiny_grid([("iaf", "vamp")], compile=True, eval_batch_size=6))
    outcomes, fns = train_guarded(cfgs, synthetic_data(dynamic=False), tmp_path)
    assert fns.step_compiled and fns.compile_errors == [], fns.compile_errors
    assert [status for status, _ in outcomes] == ["trained", "trained"]


def test_dynamic_binarization_draws_on_the_runs_device(tmp_path, one_thread):
    """Dynamically binarized data (train pixels re-drawn every batch from the run's data generator), stacked."""
    outcomes, _ = train_guarded(load_grid_text(tmp_path, tiny_grid([("planar", "flow")])),
                                synthetic_data(dynamic=True), tmp_path)
    assert [status for status, _ in outcomes] == ["trained", "trained"]
    assert all(test is not None and test["iw_log_px"] < 0 for _, test in outcomes)


def test_the_8bit_likelihood_trains_on_the_runs_device(tmp_path, one_thread):
    """The discretized-logistic likelihood on 28x20 8-bit data (Frey-shaped), stacked: its decoder parameters and
    bins are made on the run's device."""
    gen = torch.Generator().manual_seed(0)
    pixels = lambda n: torch.randint(0, 256, (n, 560), generator=gen).float() / 255  # noqa: E731  [n, P]
    data = RunData(train=pixels(24), valid=pixels(6), test=pixels(6), dynamic=False, digest="synthetic")
    cfgs = load_grid_text(tmp_path, tiny_grid([("iaf", "vamp")], likelihood="discretized-logistic",
                                              dataset="frey-faces"))
    outcomes, _ = train_guarded(cfgs, data, tmp_path)
    assert [status for status, _ in outcomes] == ["trained", "trained"]
    assert all(test is not None and test["iw_log_px"] < 0 for _, test in outcomes)


def synthetic_data(dynamic: bool) -> RunData:
    """24 training images ([24, P]: intensities in [0, 1] if dynamic, else bits), 6 validation and 6 test."""
    gen = torch.Generator().manual_seed(0)
    pixels = lambda n: torch.rand(n, 784, generator=gen)  # noqa: E731  [n, P]
    train = pixels(24) if dynamic else pixels(24).round()
    return RunData(train=train, valid=pixels(6).round(), test=pixels(6).round(), dynamic=dynamic, digest="synthetic")


def train_guarded(cfgs, data: RunData, results):
    """`Stack.run()` of the configs under the guard: ([(status, test figures)], the stack's functions)."""
    with no_implicit_device() as violations:
        stack = Stack(list(cfgs), data, ResultsLayout(results), torch.device("cpu"))
        outcomes = [(run.status, test) for run, test in stack.run()]
    assert not violations, "\n".join(violations)
    return outcomes, stack.fns


def load_grid_text(tmp_path, text: str):
    path = tmp_path / "g.toml"
    path.write_text(text)
    return load_grid(path)


def test_the_guard_catches_a_tensor_without_device():
    """The guard itself: `torch.zeros(3)` and `torch.Generator()` without a device in project code raise with their
    call site (code compiled under a project file name); the same calls outside project code, or with a device
    (explicit, or from `with torch.device(...)`), pass."""
    probe = compile("import torch\n"
                    "def zeros():\n    return torch.zeros(3)\n"
                    "def generator():\n    return torch.Generator()\n"
                    "def explicit():\n    return torch.zeros(3, device='cpu'), torch.Generator(device='cpu')\n",
                    str(REPO / "vae_core" / "_probe.py"), "exec")
    code: dict = {}
    exec(probe, code)
    with no_implicit_device() as violations:
        torch.zeros(3), torch.Generator()  # this test file is not project code
        code["explicit"]()
        with torch.device("cpu"):
            code["zeros"]()
        assert violations == []
        with pytest.raises(ImplicitDeviceError, match=r"torch.zeros called without device= at vae_core/_probe.py:3"):
            code["zeros"]()
        with pytest.raises(ImplicitDeviceError, match=r"torch.Generator\(\) without device= at vae_core/_probe.py:5"):
            code["generator"]()
    assert len(violations) == 2


def test_a_state_saved_on_another_device_type_restarts_the_run(tmp_path, synth, one_thread):
    """A CUDA generator's state (16 bytes: seed and offset) cannot seed a CPU generator, nor a CPU state a CUDA
    one: resuming on the other device type is a fresh start of the run (its state is unusable), not a crash."""
    data_dir = tmp_path / "data"
    synth.binarized_set(data_dir, rows=(24, 8, 8))
    (cfg, *_) = load_grid_text(tmp_path, tiny_grid([("mean-field", "standard")]))
    task = RunTask((cfg,), str(tmp_path / "results"), str(data_dir), "cpu", 1, cfg.run_id)
    (row,) = execute_task(task, on_progress=interrupt_at(STOP_AT))
    assert row["status"] == "failed" and "Interrupted" in row["error"]
    path = ResultsLayout(tmp_path / "results").state(cfg.run_id)
    state = torch.load(path, weights_only=True)
    state["gen_noise"] = torch.zeros(16, dtype=torch.uint8)  # what a CUDA generator's get_state() returns
    torch.save(state, path)
    with no_implicit_device() as violations:
        (row,) = execute_task(task)
    assert not violations, "\n".join(violations)
    assert row["status"] == "completed", row["error"]
    assert row["resumed_from_step"] == 0 and row["steps_done"] == MAX_STEPS
