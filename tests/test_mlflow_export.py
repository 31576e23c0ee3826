"""`vaebench export mlflow` against the real MLflow with a SQLite store in a temp folder, everything read back with
`MlflowClient`: one run per row with the row's values, curves by step, nesting under the grid's run, the config
file, idempotence (a second export adds and changes nothing), later exports adding only new rows, changed rows
replaced, the report on the parent run, and the one-line errors."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.storage import ResultsLayout, write_parquet
from bench.tracking.records import DIGEST_TAG, KEY_TAG, config_sections, native_row, run_metrics, run_params
from tests.executor_checks import grid_file, lines

mlflow = pytest.importorskip("mlflow")
from mlflow.entities import ViewType  # noqa: E402 (after the skip: MLflow is an optional extra)

def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory, shared_data_dir) -> Path:
    """A results folder with two finished runs, mean-field and IAF (trained once for the module)."""
    root = tmp_path_factory.mktemp("mlflow-grid")
    res = invoke("run", "--grid", str(grid_file(root)), "--results", str(root / "results"), "--data-dir",
                 str(shared_data_dir), "--jobs", "2")
    assert res.exit_code == 0, res.output
    return root / "results"


@pytest.fixture
def results(finished_grid, tmp_path) -> Path:
    return Path(shutil.copytree(finished_grid, tmp_path / "results"))


@pytest.fixture
def store(tmp_path) -> tuple[str, Path]:
    return f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts"


def export(results: Path, store: tuple[str, Path], *extra: str):
    uri, artifacts = store
    return invoke("export", "mlflow", "--results", str(results), "--tracking-uri", uri, "--artifacts", str(artifacts),
                  "--experiment", "bench", *extra)


def rows(results: Path) -> dict[str, dict]:
    return {p.stem: native_row(pd.read_parquet(p).iloc[0].to_dict()) for p in (results / "runs").glob("*.parquet")}


def tracked(uri: str) -> dict[str, object]:
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("bench")
    return {run.data.tags.get(KEY_TAG, run.info.run_name): run for run in client.search_runs([exp.experiment_id])}


def snapshot(uri: str) -> dict:
    """Everything an export could change: each active run's info, params, tags, metric histories, files."""
    client = mlflow.MlflowClient(uri)
    state = {}
    for key, run in tracked(uri).items():
        histories = {k: [(m.value, m.step, m.timestamp) for m in client.get_metric_history(run.info.run_id, k)]
                     for k in run.data.metrics}
        files = sorted(f.path for f in client.list_artifacts(run.info.run_id))
        state[key] = (run.info.run_id, run.info.status, run.info.start_time, run.info.end_time, run.data.params,
                      run.data.tags, histories, files)
    return state


def test_export_gives_one_run_per_row_with_the_rows_values(results, store):
    res = export(results, store)
    assert res.exit_code == 0, res.output
    assert "2 run(s) added, 0 replaced (their rows changed), 0 unchanged" in res.output
    table = rows(results)
    runs = tracked(store[0])
    assert sorted(runs) == sorted([*table, "grid r"])  # one per row, and the grid's parent run
    parent = runs["grid r"]
    client = mlflow.MlflowClient(store[0])
    for run_id, row in table.items():
        run = runs[run_id]
        assert run.info.run_name == run_id and run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.metrics["test_iw_log_px"] == row["test_iw_log_px"]  # the parquet's float, exactly
        assert run.data.metrics == run_metrics(row) | {k: run.data.metrics[k] for k in run.data.metrics if "/" in k}
        assert {"test_elbo", "test_iw_bits_per_dim", "val_elbo", "train_examples_per_s", "steps_done"} <= set(
            run.data.metrics)
        assert not {"lr", "seed", "train.lr"} & set(run.data.metrics)
        assert run.data.params == run_params(row) and run.data.params["model.posterior"] == row["posterior"]
        assert run.data.params["model.hidden"] == "[16]" and run.data.params["train.lr"] == "0.001"
        tags = run.data.tags
        assert (tags["dataset"], tags["variant"], tags["posterior_origin"], tags["device"]) == (
            "binarized-mnist", row["variant"], "builtin", "cpu")
        assert tags["git_commit"] == row["git_commit"] and tags[KEY_TAG] == run_id and tags["compiled"] == "false"
        assert "traceback" not in tags and "started_at" not in tags
        assert run.info.start_time == int(pd.Timestamp(row["started_at"]).timestamp() * 1000)
        curves = pd.read_parquet(ResultsLayout(results).curves(run_id))
        for split, key in (("train", "elbo"), ("valid", "elbo"), ("valid", "iw_log_px")):
            history = client.get_metric_history(run.info.run_id, f"{split}/{key}")
            expected = curves[curves["split"] == split].sort_values("step")
            assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
                zip(expected["step"], expected[key])), (split, key)
        assert "train/iw_log_px" not in run.data.metrics  # NaN in the curves: not computed, not logged
        config = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json", str(store[1] / "dl")))
                            .read_text())
        assert config == config_sections(row) and config["model"]["hidden"] == [16]


def test_a_second_export_adds_and_changes_nothing(results, store):
    assert export(results, store).exit_code == 0
    before = snapshot(store[0])
    res = export(results, store)
    assert res.exit_code == 0, res.output
    assert "0 run(s) added, 0 replaced (their rows changed), 2 unchanged" in res.output
    assert snapshot(store[0]) == before


def test_an_export_after_more_runs_finished_adds_only_those(results, store, tmp_path):
    table = sorted(rows(results))
    later = tmp_path / "later"
    later.mkdir()
    shutil.move(results / "runs" / f"{table[1]}.parquet", later)
    res = export(results, store)
    assert res.exit_code == 0 and "1 run(s) added" in res.output, res.output
    first = snapshot(store[0])[table[0]]
    shutil.move(later / f"{table[1]}.parquet", results / "runs")
    res = export(results, store)
    assert res.exit_code == 0 and "1 run(s) added, 0 replaced (their rows changed), 1 unchanged" in res.output
    after = snapshot(store[0])
    assert sorted(after) == sorted([*table, "grid r"]) and after[table[0]] == first


def test_a_changed_row_replaces_its_run_and_a_half_written_run_is_redone(results, store):
    assert export(results, store).exit_code == 0
    changed, cut_short = sorted(rows(results))
    path = ResultsLayout(results).run(changed)
    row = pd.read_parquet(path)
    row["approximation_gap"] = 0.25  # as `vaebench gaps` adds columns to a finished row
    write_parquet(row, path)
    client = mlflow.MlflowClient(store[0])
    client.delete_tag(tracked(store[0])[cut_short].info.run_id, DIGEST_TAG)  # an export killed mid-run
    old = {key: run.info.run_id for key, run in tracked(store[0]).items()}
    res = export(results, store)
    assert res.exit_code == 0 and "0 run(s) added, 2 replaced (their rows changed), 0 unchanged" in res.output
    runs = tracked(store[0])
    assert len(runs) == 3 and runs[changed].data.metrics["approximation_gap"] == 0.25
    assert runs[changed].info.run_id != old[changed] and runs["grid r"].info.run_id == old["grid r"]
    assert client.get_run(old[changed]).info.lifecycle_stage == "deleted"


def test_report_files_go_on_the_grids_parent_run_once(results, store):
    report = results / "report"
    report.mkdir()
    (report / "report.md").write_text("# report\n")
    (report / "versus.png").write_bytes(b"\x89PNG fake")
    res = export(results, store, "--report")
    assert res.exit_code == 0 and "report files logged" in res.output, res.output
    client = mlflow.MlflowClient(store[0])
    parent = tracked(store[0])["grid r"]
    assert sorted(f.path for f in client.list_artifacts(parent.info.run_id, "report")) == [
        "report/report.md", "report/versus.png"]
    before = snapshot(store[0])
    res = export(results, store, "--report")
    assert res.exit_code == 0 and "report unchanged" in res.output and snapshot(store[0]) == before


def test_without_mlflow_the_command_is_exit_2_naming_the_extra(results, store, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    res = export(results, store)
    assert res.exit_code == 2 and len(lines(res.output)) == 1, res.output
    assert "pip install 'vaebench[mlflow]'" in res.output and not Path(store[0][len("sqlite:///"):]).exists()


@pytest.mark.parametrize("case", ["no_runs", "report_missing", "unknown_scheme", "deleted_experiment"])
def test_bad_input_is_one_line_and_exit_2(results, store, tmp_path, case):
    if case == "no_runs":
        res, expected = export(tmp_path / "empty", store), "has no runs"
    elif case == "report_missing":
        res, expected = export(results, store, "--report"), "render it first: vaebench report"
    elif case == "unknown_scheme":
        res, expected = export(results, ("nosuch://x", store[1])), "MLflow at nosuch://x: "
    else:
        client = mlflow.MlflowClient(store[0])
        deleted = client.create_experiment("bench")
        client.delete_experiment(deleted)
        res, expected = export(results, store), "MLflow experiment 'bench' is deleted: restore it"
    assert res.exit_code == 2 and len(lines(res.output)) == 1 and expected in " ".join(res.output.split())
    if case != "deleted_experiment":
        assert not Path(store[0][len("sqlite:///"):]).exists()
    else:
        assert mlflow.MlflowClient(store[0]).search_runs([deleted], run_view_type=ViewType.ALL) == []


def test_records_leave_out_absent_and_non_finite_values():
    row = {"run_id": "r", "grid": "g", "data.dataset": "d", "status": "diverged", "val_elbo": -math.inf,
           "test_elbo": math.nan, "steps_done": 7, "compiled": True, "error": "", "lr": 0.1, "train.lr": 0.1,
           "torch_threads": 2}
    from bench.tracking.records import TAG_CHARS, run_tags

    assert len(run_tags({**row, "compile_error": "x" * 9000})["compile_error"]) == TAG_CHARS
    assert run_metrics(row) == {"steps_done": 7.0}
    assert run_params(row) == {"train.lr": "0.1", "data.dataset": "d"}
    assert run_tags(row) == {"run_id": "r", "grid": "g", "status": "diverged", "compiled": "true",
                             "torch_threads": "2", "dataset": "d", KEY_TAG: "r", "vaebench.grid": "g"}


def test_importing_the_cli_imports_neither_mlflow_nor_submitit():
    code = ("import sys, bench.cli, bench.commands.export, bench.tracking.mlflow_export, bench.runner, "
            "bench.executors.slurm; "
            "sys.exit(bool({'mlflow', 'submitit'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0
