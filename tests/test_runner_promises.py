"""The runner's promises (README: Results, train.*), each under a run where breaking it changes the outcome:
the validation ELBO peaks mid-run, data wraps epochs, divergence comes from the parameters, a kill is SIGKILL.

Runs go through `vaebench run` (`run_grid`, `spawn_grid`) and are read back from the results folder, so the
same tests cover the single-run and the stacked path: every test takes `stack_size`. Injection (interrupts,
delays, failures) goes through the seams named in `Seams`, nowhere else. Data is synthetic (`synth_dir`,
`dynamic_dir`): these tests run without the MNIST folder.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import bench.training.evaluate
import bench.training.stack
import bench.training.step
from bench.cli import app
from bench.grid.files import load_grid
from bench.runner import pending_runs
from bench.storage import ResultsLayout
from bench.training.optim import OPTIMIZERS, flatten_parameters
from bench.training.step import FlatLayout, StackFunctions
from vae_core import load_vae
from vae_core.data import load_dataset, sources

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- seams
class Seams:
    """The internals the tests wrap, as (owner, attribute). Retarget them here when the training code moves.
    (The child process of `spawn_grid` wraps one more: `bench.storage.atomic_write`, see CHILD.)"""

    step = (bench.training.stack.Stack, "step")  # one step of every live run of a stack: (stack) -> (rec, kl) [R]
    evaluate = (bench.training.stack, "evaluate")  # one evaluation of a split, all runs given -> [{"elbo", ...}]
    compile = (bench.training.step, "compile_fn")  # (fn, name) -> fn compiled; name: train_step, log_weight, ...
    test_seed_offset = bench.training.evaluate.TEST_SEED_OFFSET  # test evaluation noise: generator seed train.seed + this


def wrap(monkeypatch: pytest.MonkeyPatch, seam: tuple[object, str], make: Callable[[Callable], Callable]) -> None:
    """Replace seam by make(original) for one test."""
    owner, name = seam
    original = getattr(owner, name)
    replacement = make(original)
    if isinstance(inspect.getattr_static(owner, name), staticmethod):
        replacement = staticmethod(replacement)
    monkeypatch.setattr(owner, name, replacement)


def fake_compile(first_call_delay: float = 0.0, log_weight: Callable | None = None) -> Callable[[Callable], Callable]:
    """A stand-in maker for `Seams.compile`: functions stay eager (but the run counts as compiled), the first
    training-step call takes `first_call_delay` seconds longer (compilation time), and the IW function is
    replaced by `log_weight` if given."""

    def make(_original: Callable) -> Callable:
        def compile_fn(fn: Callable, name: str, mode: str = "default") -> Callable:
            if name == "log_weight" and log_weight is not None:
                return log_weight
            if name != "train_step":
                return fn
            calls = {"n": 0}

            def step(*args):
                calls["n"] += 1
                if calls["n"] == 1:
                    time.sleep(first_call_delay)
                return fn(*args)

            return step

        return compile_fn

    return make


# ---------------------------------------------------------------------------------------------------- runner
@pytest.fixture(autouse=True)
def one_core(monkeypatch: pytest.MonkeyPatch):
    """The runner gives each run os.cpu_count() // jobs torch threads; tiny models on a shared 2-core machine
    run several times faster on one. Torch's thread count is restored afterwards."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=[1, 3], ids=lambda n: f"stack{n}")
def stack_size(request) -> int:
    """Runs trained together as one stacked model (1 = the single-run path)."""
    return request.param


def run_args(grid: Path, results: Path, data_dir: Path, stack_size: int, *extra: str) -> list[str]:
    args = ["run", "--grid", str(grid), "--results", str(results), "--data-dir", str(data_dir), "--device", "cpu"]
    return args + (["--stack", str(stack_size)] if stack_size > 1 else []) + list(extra)


def run_grid(grid: Path, results: Path, data_dir: Path, stack_size: int, *extra: str) -> tuple[int, str]:
    """`vaebench run` in this process; (exit code, output). An exception escaping the CLI is re-raised."""
    res = CliRunner().invoke(app, run_args(grid, results, data_dir, stack_size, *extra))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


CHILD = r"""
import json, os, sys, time
from pathlib import Path
os.cpu_count = lambda: 1  # as `one_core`
from vae_core.data import sources
for split, spec in json.loads(os.environ["PROMISES_SPLITS"]).items():
    sources.BINARIZED_SPLITS[split] = sources.AmatSpec(split, *spec)
freeze = os.environ.get("PROMISES_FREEZE")
if freeze:  # half-write the temp file of this path, say so, and hang until killed
    import bench.storage
    real_atomic_write = bench.storage.atomic_write
    def atomic_write(path, write):
        def half_then_hang(tmp):
            write(tmp)
            if Path(path) == Path(freeze):
                os.truncate(tmp, tmp.stat().st_size // 2)
                Path(os.environ["PROMISES_SIGNAL"]).write_text(str(tmp))
                time.sleep(600)
        real_atomic_write(path, half_then_hang)
    bench.storage.atomic_write = atomic_write
from bench.cli import app
app(sys.argv[1:], prog_name="vaebench")
"""


def spawn_grid(grid: Path, results: Path, data_dir: Path, stack_size: int, env: dict[str, str]) -> subprocess.Popen:
    """`vaebench run` in a child process that expects the synthetic registry entries (`synth_dir`)."""
    splits = {s: [spec.filename, spec.rows, spec.cols, spec.sha256] for s, spec in sources.BINARIZED_SPLITS.items()}
    child_env = {**os.environ, "PYTHONPATH": str(REPO), "PROMISES_SPLITS": json.dumps(splits), **env}
    return subprocess.Popen([sys.executable, "-c", CHILD, *run_args(grid, results, data_dir, stack_size)],
                            env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"child exited ({proc.returncode}) before {path.name} appeared:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.05)


def rows(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results / "runs").set_index("run_id", drop=False).sort_index()


def curves(results: Path, run_id: str, split: str | None = None) -> pd.DataFrame:
    c = pd.read_parquet(ResultsLayout(results).curves(run_id))
    return (c if split is None else c[c["split"] == split]).sort_values(["step", "split"]).reset_index(drop=True)


FIGURES = ("status", "steps_done", "best_step", "val_elbo", "val_iw_log_px", "test_elbo", "test_iw_log_px",
           "test_reconstruction", "test_kl", "first_bad_step", "eval_images", "data_digest", "compiled",
           "compile_error")
CURVE_FIGURES = ("run_id", "step", "split", "reconstruction", "kl", "elbo", "iw_log_px")
TEST_FIGURES = {"elbo": "test_elbo", "iw_log_px": "test_iw_log_px", "reconstruction": "test_reconstruction",
                "kl": "test_kl"}


def same(a, b) -> bool:
    """Exact equality, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def train_seconds_of(row: pd.Series) -> float:
    """Training time as the throughput figure implies it."""
    return row["steps_done"] * row["batch_size"] / row["train_examples_per_s"]


# ---------------------------------------------------------------------------------------------------- grids
BASE: dict[str, object] = {
    "model.hidden": [16], "model.latent_dim": 4,
    "train.batch_size": 32, "train.max_steps": 48, "train.eval_every": 6, "train.check_every": 3,
    "train.lr": 3e-3, "train.compile": False,
    "data.max_eval_images": 0,
    "eval.iw_samples": 4, "eval.valid_iw_samples": 2,
}


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    return repr(v)


def write_grid(folder: Path, settings: dict[str, object] | None = None, axes: dict[str, list] | None = None,
               variants: dict[str, dict[str, object]] | None = None, name: str = "p") -> Path:
    """A grid file: BASE updated by `settings` (dotted keys), then [[variant]] tables and [grid] axes."""
    lines = [f"name = {json.dumps(name)}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in {**BASE, **(settings or {})}.items()]
    for vname, overrides in (variants or {}).items():
        lines += ["[[variant]]", f"name = {json.dumps(vname)}"]
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in overrides.items()]
    if axes:
        lines += ["[grid]"] + [f"{json.dumps(k)} = {toml_value(v)}" for k, v in axes.items()]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------- data
TRAIN_P, EVAL_P = 0.02, 0.2  # pixel-on probabilities
TRAIN_ROWS, EVAL_ROWS = 96, 40  # 3 batches of 32 per epoch; 40 = 3 x 13 + 1


@pytest.fixture
def synth_dir(synth, tmp_path: Path) -> Path:
    """Synthetic binarized MNIST: sparse train images, denser validation and test images, each evaluation split
    ending in one blank image.

    Training moves the decoder's pixel means from 0.5 towards TRAIN_P, through EVAL_P: the validation ELBO
    rises, peaks mid-run and falls (lr 3e-3, 48 steps). The blank last image (>100 nats likelier than the
    others) weighs 1/40 of a per-image mean and 1/4 of a per-batch one at eval_batch_size 13.
    """
    rng = np.random.default_rng(0)

    def split(rows: int, p: float, odd: bool) -> np.ndarray:
        x = rng.random((rows, 784)) < p
        if odd:
            x[-1] = False
        return x.astype(np.uint8)

    splits = {"train": split(TRAIN_ROWS, TRAIN_P, False), "valid": split(EVAL_ROWS, EVAL_P, True),
              "test": split(EVAL_ROWS, EVAL_P, True)}
    root = tmp_path / "data"
    for name, x in splits.items():
        synth.write_amat(root / "binarized_mnist" / f"binarized_mnist_{name}.amat", x)
    synth.patch_binarized(splits)
    return root


@pytest.fixture
def dynamic_dir(synth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Synthetic grayscale MNIST for `mnist-dynamic`: 96 train, 40 validation, 40 test images."""
    raw = tmp_path / "gray" / "MNIST" / "raw"
    train, test = synth.pixels(TRAIN_ROWS + EVAL_ROWS, 28, 28), synth.pixels(EVAL_ROWS, 28, 28)
    labels = (np.arange(EVAL_ROWS) % 10).astype(np.uint8)
    for key, x in (("train-images", train), ("t10k-images", test), ("t10k-labels", labels)):
        synth.patch_idx(key, x, synth.write_idx(raw / f"{sources.IDX_FILES[key].filename}.gz", x))
    monkeypatch.setattr(sources, "MNIST_VALID_SIZE", EVAL_ROWS)
    return tmp_path / "gray"


def images_tested(data_dir: Path, row: pd.Series) -> torch.Tensor:
    """The test images a run was evaluated on (binarized-mnist, full split)."""
    assert row["data.max_eval_images"] == 0
    return load_dataset(row["data.dataset"], data_dir).test


def evaluate_as_test(model, x: torch.Tensor, row: pd.Series) -> dict[str, float]:
    """Evaluate `model` on x exactly as the run's test evaluation does alone (same k, batches and seed)."""
    fns = StackFunctions(model, OPTIMIZERS["sgd"], compile=False)
    flat = FlatLayout(model).flatten(model)[None]  # [1, N]
    seed = int(row["train.seed"]) + Seams.test_seed_offset
    return bench.training.evaluate.evaluate(fns, flat, x, [seed], int(row["eval.elbo_samples"]), int(row["eval.iw_samples"]),
                                int(row["data.eval_batch_size"]))[0]


def same_figure(stack_size: int, a: float, b: float) -> bool:
    """Equal to the bit for a run alone; within float32 rounding when it trained in a vmapped stack."""
    return a == b if stack_size == 1 else a == pytest.approx(b, rel=1e-5)


# ======================================================================== 1. test figures: best validation checkpoint
def test_test_figures_are_the_best_validation_checkpoints(tmp_path, synth_dir, stack_size):
    grid = write_grid(tmp_path, axes={"train.seed": [0, 1]})
    results = tmp_path / "results"
    code, out = run_grid(grid, results, synth_dir, stack_size)
    assert code == 0, out
    layout = ResultsLayout(results)
    for run_id, row in rows(results).iterrows():
        assert row["status"] == "completed"
        valid = curves(results, run_id, "valid")
        assert list(valid["step"]) == list(range(6, 49, 6))
        best = valid.loc[valid["elbo"].idxmax()]
        assert valid["step"].iloc[0] < best["step"] < row["steps_done"] == 48, "the peak must be mid-run"
        assert row["best_step"] == best["step"] and row["val_elbo"] == best["elbo"]
        assert row["val_iw_log_px"] == best["iw_log_px"]

        x = images_tested(synth_dir, row)
        checkpoint = evaluate_as_test(load_vae(layout.checkpoint(run_id)), x, row)
        for key, col in TEST_FIGURES.items():
            assert same_figure(stack_size, row[col], checkpoint[key]), col
        for nats, bits in (("test_iw_log_px", "test_iw_bits_per_dim"), ("test_elbo", "test_elbo_bits_per_dim")):
            assert row[bits] == pytest.approx(-row[nats] / (784 * math.log(2)), rel=1e-12)  # -nats / (P ln 2)
        final_model = load_vae(layout.checkpoint(run_id))
        with torch.no_grad():
            flatten_parameters(final_model).copy_(torch.load(layout.state(run_id), weights_only=True)["flat"])
        final = evaluate_as_test(final_model, x, row)
        assert final["elbo"] != row["test_elbo"] and final["iw_log_px"] != row["test_iw_log_px"]


# ======================================================================== 2. early stopping and KL warm-up
def patience_stop(valid_elbos: list[float], steps: list[int], patience: int) -> int | None:
    """The step at which `patience` evaluations without a better validation ELBO have passed, if any."""
    best, since = -math.inf, 0
    for step, elbo in zip(steps, valid_elbos):
        best, since = (elbo, 0) if elbo > best else (best, since + 1)
        if since >= patience:
            return step
    return None


def test_early_stopping_stops_after_patience_evaluations(tmp_path, synth_dir, stack_size):
    """Patience 0 and 2 train identically until the stop, so the full curve says where patience 2 stops."""
    grid = write_grid(tmp_path, axes={"train.seed": [0, 1], "train.patience": [0, 2]})
    results = tmp_path / "results"
    code, out = run_grid(grid, results, synth_dir, stack_size)
    assert code == 0, out
    runs = rows(results)
    assert set(runs["status"]) == {"completed"}
    for seed in (0, 1):
        full = runs[(runs["train.seed"] == seed) & (runs["train.patience"] == 0)].iloc[0]
        patient = runs[(runs["train.seed"] == seed) & (runs["train.patience"] == 2)].iloc[0]
        full_valid = curves(results, full["run_id"], "valid")
        stop = patience_stop(list(full_valid["elbo"]), list(full_valid["step"]), 2)
        assert stop is not None and stop < 48, "the grid must make patience 2 stop early"
        assert patient["steps_done"] == stop and full["steps_done"] == 48
        assert patient["best_step"] == full["best_step"] and patient["val_elbo"] == full["val_elbo"]
        stopped = curves(results, patient["run_id"])
        upto = curves(results, full["run_id"]).query("step <= @stop")
        cols = [c for c in CURVE_FIGURES if c != "run_id"]
        assert stopped[cols].equals(upto[cols].reset_index(drop=True))


def test_kl_warmup_follows_its_schedule_and_curves_report_beta_one(tmp_path, synth_dir, stack_size, monkeypatch):
    betas: list[float] = []

    def spy(step):
        def recorded(stack):
            betas.append(float(bench.training.step.kl_weight(stack.t, stack.warmup)[0]))
            return step(stack)
        return recorded

    wrap(monkeypatch, Seams.step, spy)
    grid = write_grid(tmp_path, {"train.kl_warmup_steps": 4, "train.max_steps": 8, "train.eval_every": 2})
    results = tmp_path / "results"
    code, out = run_grid(grid, results, synth_dir, stack_size)
    assert code == 0, out
    assert betas == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]  # step s (1-based) uses min(1, (s - 1) / 4)
    train = curves(results, rows(results)["run_id"].iloc[0], "train")
    assert (train["kl"] > 0).all()
    assert (train["elbo"] == train["reconstruction"] - train["kl"]).all()  # reported with beta = 1


# ======================================================================== 3. resume is bit-for-bit
def interrupt_at(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """Ctrl-C once, at the `at`-th step of the first stack trained, before that step runs."""
    seen: dict[str, object] = {"stack": None, "calls": 0, "fired": False}

    def make(step):
        def interrupted(stack):
            if seen["stack"] is None:
                seen["stack"] = stack
            if stack is seen["stack"] and not seen["fired"]:
                seen["calls"] += 1
                if seen["calls"] == at:
                    seen["fired"] = True
                    raise KeyboardInterrupt
            return step(stack)
        return interrupted

    wrap(monkeypatch, Seams.step, make)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dataset", ["binarized-mnist", "mnist-dynamic"])
def test_resume_after_interrupt_is_bit_for_bit(tmp_path, synth_dir, dynamic_dir, stack_size, monkeypatch, dataset,
                                               compiled):
    """Interrupted at step 8 (state saved at step 5, mid-epoch; the data wrapped at steps 3 and 6), resumed, the
    rows and curves equal an uninterrupted run's exactly."""
    data = synth_dir if dataset == "binarized-mnist" else dynamic_dir
    grid = write_grid(tmp_path, {"data.dataset": dataset, "train.compile": compiled, "train.max_steps": 16,
                                 "train.eval_every": 5}, axes={"train.seed": [0, 1]})
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    code, out = run_grid(grid, straight, data, stack_size)
    assert code == 0, out
    expected = rows(straight)
    assert set(expected["status"]) == {"completed"} and set(expected["compiled"]) == {compiled}

    interrupt_at(monkeypatch, 8)
    code, out = run_grid(grid, resumed, data, stack_size)
    assert code == 130, out
    first = load_grid(grid)[0].run_id
    assert not ResultsLayout(resumed).run(first).exists() and ResultsLayout(resumed).state(first).exists()
    before = curves(resumed, first)
    assert sorted(set(before["step"])) == [5]

    code, out = run_grid(grid, resumed, data, stack_size)
    assert code == 0, out
    got = rows(resumed)
    assert got.loc[first, "resumed_from_step"] == 5
    assert list(got.index) == list(expected.index)
    for run_id in expected.index:
        for col in FIGURES:
            assert same(got.loc[run_id, col], expected.loc[run_id, col]), (run_id, col)
        after, reference = curves(resumed, run_id), curves(straight, run_id)
        assert after[list(CURVE_FIGURES)].equals(reference[list(CURVE_FIGURES)]), run_id
    after = curves(resumed, first)
    assert after.iloc[:len(before)].equals(before)  # rows written before the interruption, timings included


# ======================================================================== 4. a real kill, and Ctrl-C
def test_sigkill_while_writing_leaves_only_ignored_temp_files_and_rerun_completes(tmp_path, synth_dir, stack_size):
    """The child is SIGKILLed while the second run's row is half-written in its temp file."""
    grid = write_grid(tmp_path, {"train.max_steps": 12}, axes={"train.seed": [0, 1]})
    results, signal_file = tmp_path / "results", tmp_path / "frozen"
    first, second = (c.run_id for c in load_grid(grid))
    layout = ResultsLayout(results)
    proc = spawn_grid(grid, results, synth_dir, stack_size,
                      {"PROMISES_FREEZE": str(layout.run(second)), "PROMISES_SIGNAL": str(signal_file)})
    wait_for(signal_file, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    leftover = Path(signal_file.read_text())
    assert leftover.exists() and leftover.parent == layout.run(second).parent and not layout.run(second).exists()

    todo, done = pending_runs(load_grid(grid), layout)
    assert [c.run_id for c in done] == [first] and [c.run_id for c in todo] == [second]
    report = CliRunner().invoke(app, ["report", "--results", str(results), "--out", str(tmp_path / "report"),
                                      "--data-dir", str(synth_dir)])
    assert report.exit_code == 0, report.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Runs: 1 (1 completed)" in text and "could not be read" not in text

    code, out = run_grid(grid, results, synth_dir, stack_size)
    assert code == 0, out
    assert "1 already finished (skipped), 1 to run" in " ".join(out.split())
    runs = rows(results)
    assert list(runs.index) == sorted([first, second]) and set(runs["status"]) == {"completed"}
    assert runs.loc[second, "resumed_from_step"] == 12  # trained to the end before the kill; only tested now


def test_sigint_exits_130_and_keeps_completed_rows(tmp_path, synth_dir, stack_size):
    grid = write_grid(tmp_path, {"train.max_steps": 12},
                      variants={"short": {}, "long": {"train.max_steps": 10_000_000, "train.eval_every": 5_000_000}})
    results = tmp_path / "results"
    short, long = (c.run_id for c in load_grid(grid))
    layout = ResultsLayout(results)
    proc = spawn_grid(grid, results, synth_dir, stack_size, {})
    wait_for(layout.run(short), proc)
    before = pd.read_parquet(layout.run(short))
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "interrupted" in out
    kept = pd.read_parquet(layout.run(short))
    assert kept.equals(before) and kept["status"].iloc[0] == "completed"
    assert not layout.run(long).exists()


# ======================================================================== 5. throughput accounting
EVAL_DELAY, COMPILE_DELAY = 0.5, 1.0  # seconds; 18 training steps of the tiny model take well under 0.5 s


def test_evaluation_and_compile_time_are_not_training_time(tmp_path, synth_dir, stack_size, monkeypatch):
    """Three validations (two between training intervals) and one test evaluation each EVAL_DELAY longer, or a
    first compiled call COMPILE_DELAY longer: train_examples_per_s implies the same training time as without;
    eval_seconds and compile_seconds take the delays."""
    grid = write_grid(tmp_path, {"train.max_steps": 18})
    assert run_grid(grid, tmp_path / "plain", synth_dir, stack_size)[0] == 0
    plain = rows(tmp_path / "plain").iloc[0]

    with monkeypatch.context() as m:
        wrap(m, Seams.evaluate, lambda evaluate: lambda *a, **k: (time.sleep(EVAL_DELAY), evaluate(*a, **k))[1])
        assert run_grid(grid, tmp_path / "slow-eval", synth_dir, stack_size)[0] == 0
    slow = rows(tmp_path / "slow-eval").iloc[0]
    assert slow["eval_seconds"] >= 4 * EVAL_DELAY
    assert slow["eval_seconds"] - plain["eval_seconds"] > 3.5 * EVAL_DELAY
    assert abs(train_seconds_of(slow) - train_seconds_of(plain)) < EVAL_DELAY  # counted: >= 2 x EVAL_DELAY more
    last_train = curves(tmp_path / "slow-eval", slow["run_id"], "train").iloc[-1]
    assert 18 * 32 / last_train["train_examples_per_s"] < train_seconds_of(plain) + EVAL_DELAY

    compiled_grid = write_grid(tmp_path, {"train.max_steps": 18, "train.compile": True}, name="c")
    with monkeypatch.context() as m:
        wrap(m, Seams.compile, fake_compile(first_call_delay=COMPILE_DELAY))
        assert run_grid(compiled_grid, tmp_path / "slow-compile", synth_dir, stack_size)[0] == 0
    comp = rows(tmp_path / "slow-compile").iloc[0]
    assert comp["compiled"] and comp["compile_error"] == "" and comp["compile_seconds"] >= COMPILE_DELAY
    assert abs(train_seconds_of(comp) - train_seconds_of(plain)) < COMPILE_DELAY / 2
    first_train = curves(tmp_path / "slow-compile", comp["run_id"], "train").iloc[0]
    assert 6 * 32 / first_train["train_examples_per_s"] < COMPILE_DELAY / 2


# ======================================================================== 6. evaluation over several batches
def test_evaluation_in_uneven_batches_averages_per_image(tmp_path, synth_dir, stack_size):
    """40 images in batches of 13 (the blank last image alone in the 4th) give the one-batch means: per image,
    not per batch. Both runs train identically and validate once, so they evaluate the same weights.

    Noise is drawn batch by batch, so the two agree to Monte-Carlo precision, not to the bit: with 64 samples
    their difference has sd <= 1 nat (0.3 for the KL) over evaluation seeds, while a mean of batch means is off
    by 13-27 nats (KL: 4.5) here.
    """
    grid = write_grid(tmp_path, {"train.max_steps": 24, "train.eval_every": 24, "eval.elbo_samples": 64,
                                 "eval.iw_samples": 64, "eval.valid_iw_samples": 64},
                      axes={"data.eval_batch_size": [13, 500]})
    code, out = run_grid(grid, tmp_path / "results", synth_dir, stack_size)
    assert code == 0, out
    runs = rows(tmp_path / "results").set_index("data.eval_batch_size")
    assert runs.loc[13, "best_step"] == runs.loc[500, "best_step"] == 24
    tolerance = {"val_elbo": 4.0, "val_iw_log_px": 4.0, "test_elbo": 4.0, "test_iw_log_px": 4.0,
                 "test_reconstruction": 4.0, "test_kl": 1.5}
    for col, tol in tolerance.items():
        assert runs.loc[13, col] == pytest.approx(runs.loc[500, col], abs=tol), col


# ======================================================================== 7. real divergence
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_huge_learning_rate_diverges_with_nan_test_figures(tmp_path, synth_dir, stack_size, compiled):
    """SGD at lr 1e38 makes the parameters infinite in its first step; the next loss is NaN."""
    grid = write_grid(tmp_path, {"train.optimizer": "sgd", "train.compile": compiled, "train.max_steps": 12},
                      axes={"train.lr": [3e-3, 1e38]})
    code, out = run_grid(grid, tmp_path / "results", synth_dir, stack_size)
    assert code == 0, out
    runs = rows(tmp_path / "results").set_index("train.lr")
    bad, good = runs.loc[1e38], runs.loc[3e-3]
    assert good["status"] == "completed" and math.isfinite(good["test_elbo"])
    assert bad["status"] == "diverged" and bad["compiled"] == compiled
    assert bad["first_bad_step"] == 2 and bad["steps_done"] == 3  # noticed at the next check
    for col in TEST_FIGURES.values():
        assert math.isnan(bad[col]), col
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_non_finite_validation_elbo_is_divergence(tmp_path, synth_dir, stack_size, compiled):
    """The one step's loss is finite (initial weights); the weights it leaves are not, so validation is the
    first to see them: the run is diverged, never 'completed' with the initial weights tested."""
    grid = write_grid(tmp_path, {"train.optimizer": "sgd", "train.compile": compiled, "train.max_steps": 1,
                                 "train.eval_every": 1, "train.check_every": 1}, axes={"train.lr": [3e-3, 1e38]})
    code, out = run_grid(grid, tmp_path / "results", synth_dir, stack_size)
    assert code == 0, out
    runs = rows(tmp_path / "results").set_index("train.lr")
    bad = runs.loc[1e38]
    assert runs.loc[3e-3, "status"] == "completed"
    assert bad["status"] == "diverged" and bad["first_bad_step"] == 1 and bad["steps_done"] == 1
    assert not math.isfinite(curves(tmp_path / "results", bad["run_id"], "valid")["elbo"].iloc[0])
    for col in TEST_FIGURES.values():
        assert math.isnan(bad[col]), col


# ======================================================================== 8. compile fallback in evaluation
def test_compiled_evaluation_failure_falls_back_to_eager(tmp_path, synth_dir, stack_size, monkeypatch):
    def broken_log_weight(*args, **kwargs):
        raise RuntimeError("inductor: IW chunk failed to compile\nsecond line")

    wrap(monkeypatch, Seams.compile, fake_compile(log_weight=broken_log_weight))
    grid = write_grid(tmp_path, {"train.max_steps": 12}, axes={"train.compile": [False, True]})
    code, out = run_grid(grid, tmp_path / "results", synth_dir, stack_size)
    assert code == 0, out
    runs = rows(tmp_path / "results").set_index("train.compile")
    eager, fallback = runs.loc[False], runs.loc[True]
    assert fallback["status"] == "completed", fallback["error"]
    assert fallback["compile_error"] == "evaluation: RuntimeError: inductor: IW chunk failed to compile"
    assert ("cannot be compiled, ran eager (evaluation: RuntimeError: inductor: IW chunk failed to compile)"
            in out), out
    for col in ("val_elbo", "val_iw_log_px", "test_elbo", "test_iw_log_px", "test_reconstruction", "test_kl"):
        assert fallback[col] == eager[col], col
