"""The grid runner: expansion, validation (exit 2, nothing written), resume, atomic writes, divergence, CLI."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import bench.training.step
from bench.cli import app
from bench.grid.files import load_grid, parse_grid
from bench.storage import ResultsLayout, atomic_write
from bench.tasks import RunTask, eval_subset, execute_run, execute_task
from vae_core import load_vae
from vae_core.config import ConfigError

REPO = Path(__file__).resolve().parents[1]

SMALL = """
name = "t"
[model]
hidden = [16]
latent_dim = 4
[train]
batch_size = 32
max_steps = 12
eval_every = 6
check_every = 3
compile = false
[data]
max_eval_images = 64
[eval]
iw_samples = 4
valid_iw_samples = 2
"""


def write(tmp_path: Path, text: str, name: str = "g.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


# -- expansion -----------------------------------------------------------------------------------------
def test_shipped_tiny_grid_expands_to_four_resolved_runs():
    runs = load_grid(REPO / "configs" / "tiny.toml")
    assert [(r.variant, r.train.seed) for r in runs] == [("mean-field", 0), ("mean-field", 1), ("iaf", 0), ("iaf", 1)]
    assert runs[2].model.posterior == "iaf" and runs[0].model.posterior == "mean-field"
    assert len({r.run_id for r in runs}) == 4
    assert runs[0].run_id == load_grid(REPO / "configs" / "tiny.toml")[0].run_id  # stable
    assert runs[0].flat()["model.latent_dim"] == 8 and runs[0].flat()["eval.iw_samples"] == 20


@pytest.mark.parametrize("name", ["grid", "quick", "reference-cpu", "seed000", "seed001", "seed002", "speed"])
def test_every_shipped_config_validates(name):
    runs = load_grid(REPO / "configs" / f"{name}.toml")
    assert runs
    if name == "grid":
        assert len(runs) == 5 * 3 * 3
        assert {r.train.lr for r in runs} == {3e-4, 1e-3, 3e-3}


def test_durations_in_epochs_resolve_to_steps_of_the_training_set():
    """binarized MNIST has 50000 training images: batch 100 is 500 steps an epoch (batch 128: 390, the last
    partial batch dropped); patience in epochs becomes the validations that span it."""
    (run,) = parse_grid({"train": {"batch_size": 100, "max_epochs": 2000, "eval_every_epochs": 1,
                                   "kl_warmup_epochs": 100, "patience_epochs": 50}})
    t = run.train
    assert (t.max_steps, t.eval_every, t.kl_warmup_steps, t.patience) == (1_000_000, 500, 50_000, 50)
    (run,) = parse_grid({"train": {"batch_size": 128, "max_epochs": 3, "eval_every": 1000, "patience_epochs": 5}})
    assert (run.train.max_steps, run.train.eval_every, run.train.patience) == (1170, 1000, 2)
    assert run.train.max_epochs == 3  # the epoch keys stay in the resolved config (and its hash)
    (dynamic,) = parse_grid({"data": {"dataset": "mnist-dynamic"}, "train": {"batch_size": 100, "max_epochs": 2}})
    assert dynamic.train.max_steps == 1000  # 60000 - 10000 held out for validation
    from bench.grid.config import TrainConfig
    with pytest.raises(ConfigError, match="give 'train.max_epochs' or 'train.max_steps', not both"):
        TrainConfig(max_epochs=2, max_steps=77).in_steps("binarized-mnist")


# Every default as of HASH_VERSION 1. Run ids hash only the keys that differ from their defaults: a changed
# default would silently change what an existing run id means.
DEFAULTS_SNAPSHOT = {'model': {'data_dim': 784,
           'architecture': 'mlp',
           'hidden': [256, 256],
           'latent_dim': 32,
           'posterior': 'mean-field',
           'posterior_flow_steps': 2,
           'posterior_orthogonal_vectors': 0,
           'posterior_householder_reflections': 0,
           'prior': 'standard',
           'prior_components': 10,
           'prior_flow_steps': 2,
           'flow_hidden': 0,
           'activation': 'relu',
           'init': 'torch',
           'prior_pseudo_inputs': 'sigmoid',
           'scale': 'softplus',
           'kl': 'mc',
           'likelihood': 'bernoulli',
           'image_shape': [28, 28]},
 'train': {'optimizer': 'adam',
           'lr': 0.001,
           'batch_size': 128,
           'max_steps': 10000,
           'eval_every': 1000,
           'patience': 0,
           'kl_warmup_steps': 0,
           'seed': 0,
           'grad_clip': 0.0,
           'check_every': 100,
           'compile': True,
           'objective': 'elbo',
           'objective_samples': 1,
           'optimizer_eps': 1e-08,
           'grad_normalize': 'none',
           'select': 'best-valid',
           'autocast': 'none',
           'lr_schedule': 'constant',
           'lr_decay': 1.0,
           'lr_decay_epochs': 1,
           'max_epochs': 0,
           'eval_every_epochs': 0,
           'kl_warmup_epochs': 0,
           'patience_epochs': 0,
           'patience_after_warmup': False},
 'data': {'dataset': 'binarized-mnist', 'max_eval_images': 0, 'eval_subset_seed': 1234, 'eval_batch_size': 500,
          'split_seed': 123},
 'eval': {'iw_samples': 1000, 'valid_iw_samples': 5, 'elbo_samples': 1}}


def test_defaults_keep_their_values_so_run_ids_keep_their_meaning():
    from bench.grid.config import HASH_VERSION, defaults

    now = defaults()
    changed = [f"{s}.{k}" for s, table in DEFAULTS_SNAPSHOT.items() for k, v in table.items() if now[s].get(k) != v]
    assert not changed, f"defaults changed ({changed}): bump HASH_VERSION (now {HASH_VERSION}) and this snapshot"


def test_a_key_left_at_its_default_does_not_change_the_run_id():
    """Setting a key to its default, explicitly or not at all, is the same run: adding a key with a default
    that keeps today's behaviour keeps every existing run id (and its resumable state)."""
    (implicit,) = parse_grid({"train": {"lr": 3e-4}})
    (explicit,) = parse_grid({"train": {"lr": 3e-4, "autocast": "none", "objective": "elbo"},
                              "model": {"activation": "relu"}})
    (other,) = parse_grid({"train": {"lr": 3e-4, "objective_samples": 2}})
    assert implicit.run_id == explicit.run_id and other.run_id != implicit.run_id


def test_quoted_and_unquoted_dotted_keys_mean_the_same():
    quoted = parse_grid({"variant": [{"name": "a", "model.posterior": "iaf"}], "grid": {"train.seed": [0, 1]}})
    nested = parse_grid({"variant": [{"name": "a", "model": {"posterior": "iaf"}}],
                         "grid": {"train": {"seed": [0, 1]}}})
    assert [r.run_id for r in quoted] == [r.run_id for r in nested]


def test_variants_cross_the_product_of_axes():
    runs = parse_grid({"variant": [{"name": "a"}, {"name": "b", "model.prior": "mog"}],
                       "grid": {"train.seed": [0, 1, 2], "train.lr": [1e-3, 3e-3]}})
    assert len(runs) == 2 * 3 * 2
    assert {(r.variant, r.model.prior) for r in runs} == {("a", "standard"), ("b", "mog")}
    assert len({r.config_hash for r in runs}) == 12


# -- validation: exit 2, one line naming file and key, nothing written -----------------------------------
BAD = {
    "unknown_key": ('[model]\nlatent_dims = 3\n', "unknown key 'model.latent_dims' (did you mean 'model.latent_dim'?)"),
    "unknown_section": ('[modle]\nlatent_dim = 3\n', "unknown top-level key 'modle' (did you mean 'model'?)"),
    "wrong_type": ('[model]\nlatent_dim = "8"\n', "'model.latent_dim' must be int"),
    "lr_not_positive": ('[train]\nlr = 0\n', "'train.lr' must be > 0"),
    "unknown_posterior": ('[model]\nposterior = "nope"\n', "'model.posterior' must be one of"),
    "k_below_one": ('[eval]\niw_samples = 0\n', "'eval.iw_samples' must be >= 1"),
    "bad_toml": ('[model\nlatent_dim = 3\n', "invalid TOML"),
    "variant_and_axis": ('[[variant]]\nname = "a"\ntrain.seed = 1\n[grid]\n"train.seed" = [0, 1]\n',
                         "'train.seed' is set by the variant and by the [grid] axis"),
    "axis_not_list": ('[grid]\n"train.seed" = 3\n', "must be a non-empty list"),
    "axis_bad_value": ('[grid]\n"train.lr" = [1e-3, -1.0]\n', "'train.lr' must be > 0"),
    "unknown_objective": ('[train]\nobjective = "vimco"\n', "'train.objective' must be one of 'elbo', 'iwae'"),
    "objective_samples": ('[train]\nobjective_samples = 0\n', "'train.objective_samples' must be >= 1"),
    "iwae_analytic_kl": ('[model]\nkl = "analytic"\n[train]\nobjective = "iwae"\n',
                         "'train.objective' = 'iwae' needs 'model.kl' = 'mc'"),
    "unknown_activation": ('[model]\nactivation = "gelu"\n', "'model.activation' must be one of"),
    "unknown_scale": ('[model]\nscale = "sigmoid"\n', "'model.scale' must be one of"),
    "unknown_schedule": ('[train]\nlr_schedule = "cosine"\n', "'train.lr_schedule' must be one of"),
    "decay_without_schedule": ('[train]\nlr_decay = 0.5\n', "'train.lr_decay' is used by lr_schedule"),
    "decay_not_below_one": ('[train]\nlr_schedule = "step"\nlr_decay = 1.5\n', "'train.lr_decay' must be in (0, 1)"),
    "pseudo_inputs_without_vamp": ('[model]\nprior_pseudo_inputs = "hardtanh"\n',
                                   "'model.prior_pseudo_inputs' = 'hardtanh' needs prior 'vamp'"),
    "decay_epochs_without_step": ('[train]\nlr_schedule = "exponential"\nlr_decay = 0.5\nlr_decay_epochs = 3\n',
                                  "'train.lr_decay_epochs' is used by lr_schedule 'step' only"),
    "warmup_epochs_and_steps": ('[train]\nkl_warmup_steps = 10\nkl_warmup_epochs = 2\n',
                                "give 'train.kl_warmup_epochs' or 'train.kl_warmup_steps', not both"),
    "eval_epochs_and_steps": ('[train]\neval_every = 10\n[grid]\n"train.eval_every_epochs" = [1, 2]\n',
                              "give 'train.eval_every_epochs' or 'train.eval_every', not both"),
    "patience_epochs_and_validations": ('[train]\npatience = 3\npatience_epochs = 2\n',
                                        "give 'train.patience_epochs' or 'train.patience', not both"),
    "epochs_and_steps": ('[train]\nmax_steps = 100\n[[variant]]\nname = "a"\ntrain.max_epochs = 3\n',
                         "give 'train.max_epochs' or 'train.max_steps', not both"),
    "negative_epochs": ('[train]\nkl_warmup_epochs = -1\n', "'train.kl_warmup_epochs' must be >= 0"),
    "select_last_with_patience": ('[train]\nselect = "last"\npatience = 3\n',
                                  "'train.patience' needs 'train.select' = 'best-valid'"),
    "cuda_graphs_without_compile": ('[train]\ncompile = false\ncuda_graphs = true\n',
                                    "'train.cuda_graphs' needs 'train.compile' = true"),
    "optimizer_eps": ('[train]\noptimizer_eps = 0\n', "'train.optimizer_eps' must be > 0"),
    "likelihood_not_for_dataset": ('[model]\nlikelihood = "discretized-logistic"\n',
                                   "'model.likelihood' = 'discretized-logistic' does not fit dataset "
                                   "'binarized-mnist' (binary data); use 'bernoulli'"),
    "unknown_likelihood": ('[model]\nlikelihood = "gaussian"\n', "'model.likelihood' must be one of"),
    "image_shape_not_for_dataset": ('[model]\ndata_dim = 560\nimage_shape = [28, 20]\n',
                                    "'model.image_shape' = [28, 20] does not fit dataset 'binarized-mnist'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_grid_is_exit_2_with_one_line_and_nothing_written(tmp_path, case):
    text, expected = BAD[case]
    grid = write(tmp_path, text)
    results = tmp_path / "results"
    res = invoke("run", "--grid", str(grid), "--results", str(results))
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert expected in message and str(grid.name) in message
    assert not results.exists()


def test_bad_toml_names_line_and_column(tmp_path):
    res = invoke("run", "--grid", str(write(tmp_path, 'name = "x"\n[model\n')), "--results", str(tmp_path / "r"))
    assert res.exit_code == 2 and "line 2" in res.output and "column" in res.output


def test_missing_grid_file_is_exit_2(tmp_path):
    res = invoke("run", "--grid", str(tmp_path / "nope.toml"), "--results", str(tmp_path / "r"))
    assert res.exit_code == 2 and "nope.toml not found" in res.output
    assert not (tmp_path / "r").exists()


def test_missing_data_is_exit_2_before_anything_is_written(tmp_path, isolated):
    (tmp_path / "empty").mkdir()
    res = invoke("run", "--grid", str(write(tmp_path, SMALL)), "--results", str(tmp_path / "r"),
                 "--data-dir", str(tmp_path / "empty"), "--offline")
    assert res.exit_code == 2 and "not found" in res.output
    assert not (tmp_path / "r").exists()


def test_dry_run_prints_the_table_and_writes_nothing(tmp_path):
    res = invoke("run", "--grid", str(REPO / "configs" / "tiny.toml"), "--results", str(tmp_path / "r"), "--dry-run")
    assert res.exit_code == 0 and "4 runs" in res.output and "tiny-iaf-seed1" in res.output
    assert not (tmp_path / "r").exists()


def test_duplicate_run_configs_are_rejected():
    with pytest.raises(ConfigError, match="same config"):
        parse_grid({"variant": [{"name": "a"}, {"name": "b"}]})


# -- storage --------------------------------------------------------------------------------------------
def test_atomic_write_leaves_old_file_intact_when_writer_dies(tmp_path):
    target = tmp_path / "x.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(target)

    def dies(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies)
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]  # no temp file left


def test_eval_subset_is_seeded_random_not_the_first_rows():
    x = torch.arange(1000.0)[:, None]
    a, b = eval_subset(x, 100, 7), eval_subset(x, 100, 7)
    assert torch.equal(a, b) and not torch.equal(a, x[:100])
    assert a.flatten().max() > 500  # reaches into the later (other-digit) part of a sorted file
    assert eval_subset(x, 0, 7) is x


# -- running (a few steps; synthetic data, and real binarized MNIST end to end) ------------------------------
SMALL_VARIANTS = '[[variant]]\nname = "mf"\n[[variant]]\nname = "iaf"\nmodel.posterior = "iaf"\n'


@pytest.fixture
def small_grid(tmp_path, synth):
    """(grid, results, data folder): the two-variant SMALL grid over synthetic binarized data."""
    synth.binarized_set(tmp_path / "data", rows=(200, 80, 80))
    return write(tmp_path, SMALL + SMALL_VARIANTS), tmp_path / "results", tmp_path / "data"


@pytest.fixture
def real_small_grid(tmp_path, shared_data_dir):
    """The same grid over the real binarized MNIST."""
    return write(tmp_path, SMALL + SMALL_VARIANTS), tmp_path / "results", shared_data_dir


def run_cli(grid, results, data_dir):
    return invoke("run", "--grid", str(grid), "--results", str(results), "--data-dir", str(data_dir))


def test_cli_end_to_end_then_rerun_skips_everything(real_small_grid):
    grid, results, data_dir = real_small_grid
    res = run_cli(grid, results, data_dir)
    assert res.exit_code == 0, res.output
    runs = pd.read_parquet(results / "runs")
    assert len(runs) == 2 and set(runs["status"]) == {"completed"}
    for col in ("run_id", "grid", "variant", "posterior", "prior", "architecture", "latent_dim", "lr", "seed",
                "optimizer", "batch_size", "max_steps", "steps_done", "status", "best_step", "val_elbo",
                "test_elbo", "test_iw_log_px", "iw_samples", "train_examples_per_s", "eval_seconds",
                "wall_seconds", "device", "torch_threads", "torch_version", "git_commit", "config_hash",
                "started_at", "finished_at", "eval_images", "data_digest", "model.posterior", "train.lr",
                "posterior_origin", "prior_origin"):
        assert col in runs.columns, col
    assert set(runs["posterior_origin"]) == set(runs["prior_origin"]) == {"builtin"}
    assert (runs["test_iw_log_px"] < 0).all() and (runs["test_iw_log_px"] >= runs["test_elbo"] - 1.0).all()
    assert (runs["steps_done"] == 12).all() and (runs["eval_images"] == 64).all()
    assert (runs["train_examples_per_s"] > 0).all()
    curves = pd.read_parquet(results / "curves")
    valid = curves[curves["split"] == "valid"]
    assert sorted(valid["step"].unique()) == [6, 12] and len(valid) == 4
    model = load_vae(results / "checkpoints" / f"{runs['run_id'][0]}.pt")
    assert model.config.latent_dim == 4

    again = run_cli(grid, results, data_dir)
    assert again.exit_code == 0 and "2 already finished (skipped), 0 to run" in again.output
    assert len(pd.read_parquet(results / "runs")) == 2


def _task(grid: Path, results: Path, data_dir: Path, index: int = 0) -> RunTask:
    cfg = load_grid(grid)[index]
    return RunTask((cfg,), str(results), str(data_dir), "cpu", 1, cfg.run_id)


def test_interrupted_run_resumes_to_the_same_result(small_grid, tmp_path):
    grid, _, data_dir = small_grid
    straight = execute_run(_task(grid, tmp_path / "a", data_dir))

    def interrupt(step, total, elbo, ex_per_s):
        if step == 9:  # after the evaluation (and saved state) at step 6
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute_run(_task(grid, tmp_path / "b", data_dir), on_progress=interrupt)
    layout = ResultsLayout(tmp_path / "b")
    run_id = straight["run_id"]
    assert layout.state(run_id).exists() and not layout.run(run_id).exists()
    resumed = execute_run(_task(grid, tmp_path / "b", data_dir))
    assert resumed["resumed_from_step"] == 6 and resumed["steps_done"] == 12
    for key in ("val_elbo", "test_elbo", "test_iw_log_px", "best_step"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-6), key
    curves = pd.read_parquet(layout.curves(run_id))
    assert curves.groupby(["step", "split"]).size().max() == 1  # no duplicated evaluation rows


@pytest.mark.parametrize("earlier_wall", [1000.0, None], ids=["saved", "state-without-wall"])
def test_resumed_run_wall_time_adds_the_earlier_sessions(small_grid, tmp_path, earlier_wall):
    """The row's wall_seconds is the run's whole wall time: the state's saved wall plus this session's. A
    state written before states kept their wall time still resumes, its earlier wall counted as its training,
    evaluation and compile seconds (a lower bound)."""
    grid, _, data_dir = small_grid

    def interrupt(step, total, elbo, ex_per_s):
        if step == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute_run(_task(grid, tmp_path, data_dir), on_progress=interrupt)
    path = ResultsLayout(tmp_path).state(load_grid(grid)[0].run_id)
    state = torch.load(path, weights_only=True)
    assert 0 < state["wall_seconds"] < 600
    if earlier_wall is None:
        del state["wall_seconds"]
        state["compile_seconds"] = 500.0
        earlier_wall = state["train_seconds"] + state["eval_seconds"] + 500.0
    else:
        state["wall_seconds"] = earlier_wall
    atomic_write(path, lambda p: torch.save(state, p))
    t0 = time.perf_counter()
    row = execute_run(_task(grid, tmp_path, data_dir))
    session = time.perf_counter() - t0
    assert row["resumed_from_step"] == 6
    assert row["train_seconds"] + row["eval_seconds"] <= row["wall_seconds"]
    assert earlier_wall < row["wall_seconds"] <= earlier_wall + session


def test_corrupt_training_state_restarts_cleanly(small_grid, tmp_path):
    grid, _, data_dir = small_grid
    layout = ResultsLayout(tmp_path / "c")
    cfg = load_grid(grid)[0]
    layout.state(cfg.run_id).parent.mkdir(parents=True)
    layout.state(cfg.run_id).write_bytes(b"garbage")
    row = execute_run(_task(grid, tmp_path / "c", data_dir))
    assert row["status"] == "completed" and row["resumed_from_step"] == 0


def test_divergence_is_recorded_with_first_bad_step_and_grid_goes_on(small_grid):
    """A real divergence (lr 1e4 drives the weights to non-finite values): `diverged`, the first bad step,
    noticed at the next check, NaN test figures; the other variant completes."""
    grid, results, data_dir = small_grid
    grid.write_text(grid.read_text().replace('name = "mf"', 'name = "mf"\ntrain.lr = 1e4'))
    res = run_cli(grid, results, data_dir)
    assert res.exit_code == 0, res.output
    runs = pd.read_parquet(results / "runs").set_index("variant")
    assert runs.loc["mf", "status"] == "diverged" and runs.loc["mf", "first_bad_step"] == 2
    assert runs.loc["mf", "steps_done"] == 3  # noticed at the next check (check_every = 3), not later
    assert math.isnan(runs.loc["mf", "test_iw_log_px"]) and math.isnan(runs.loc["mf", "test_elbo"])
    assert runs.loc["iaf", "status"] == "completed"


def test_failed_run_is_recorded_and_exit_code_is_nonzero(small_grid, monkeypatch):
    grid, results, data_dir = small_grid

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    with monkeypatch.context() as m:
        m.setattr(bench.training.step, "train_step", boom)
        res = run_cli(grid, results, data_dir)
    assert res.exit_code == 1
    runs = pd.read_parquet(results / "runs")
    assert set(runs["status"]) == {"failed"} and runs["error"].str.contains("boom").all()
    assert run_cli(grid, results, data_dir).exit_code == 0  # failed runs are retried
    assert set(pd.read_parquet(results / "runs")["status"]) == {"completed"}


def test_compiled_run_records_its_flags_and_matches_eager(small_grid, tmp_path):
    grid, _, data_dir = small_grid
    eager = execute_run(_task(grid, tmp_path / "eager", data_dir))
    compiled_grid = write(tmp_path, SMALL.replace("compile = false", "compile = true"), "c.toml")
    compiled = execute_run(_task(compiled_grid, tmp_path / "compiled", data_dir))
    assert compiled["status"] == "completed", compiled.get("traceback")
    assert compiled["compiled"] and compiled["train.compile"] and compiled["compile_error"] == ""
    assert compiled["compile_seconds"] > 0 and not eager["compiled"] and eager["compile_seconds"] == 0
    for key in ("val_elbo", "test_elbo", "test_iw_log_px"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4), key


def test_compile_failure_falls_back_to_eager_with_the_same_numbers(small_grid, tmp_path, monkeypatch):
    grid, _, data_dir = small_grid
    eager = execute_run(_task(grid, tmp_path / "eager", data_dir))

    def broken_compile(fn, name, mode="default"):
        def fail(*args):
            raise RuntimeError("inductor: no working C++ compiler\nsecond line")
        return fail

    monkeypatch.setattr(bench.training.step, "compile_fn", broken_compile)
    compiled_grid = write(tmp_path, SMALL.replace("compile = false", "compile = true"), "c.toml")
    row = execute_run(_task(compiled_grid, tmp_path / "fallback", data_dir))
    assert row["status"] == "completed" and not row["compiled"]
    assert row["compile_error"] == "RuntimeError: inductor: no working C++ compiler"
    for key in ("val_elbo", "test_elbo", "test_iw_log_px"):  # the failed attempt consumed no noise
        assert row[key] == eager[key], key


def test_unusable_state_restarts_the_run_fresh(small_grid, tmp_path):
    """A state file that loads but does not fit (optimizer state of the wrong size) restarts the run from its
    fresh initialisation, with fresh counters: the result equals a run that never had a state file."""
    grid, _, data_dir = small_grid
    cfg = load_grid(grid)[0]
    straight = execute_run(_task(grid, tmp_path / "a", data_dir))
    layout = ResultsLayout(tmp_path / "h")
    execute_run(_task(grid, tmp_path / "h", data_dir))
    state = torch.load(layout.state(cfg.run_id), weights_only=True)
    state["opt_state"] = [s[:-1] for s in state["opt_state"]]
    torch.save(state, layout.state(cfg.run_id))
    layout.run(cfg.run_id).unlink()
    row = execute_run(_task(grid, tmp_path / "h", data_dir))
    assert row["resumed_from_step"] == 0 and row["steps_done"] == 12
    for key in ("val_elbo", "test_elbo", "test_iw_log_px", "best_step"):
        assert row[key] == straight[key], key
