"""`vaebench export mlflow`: one MLflow run per result row, found again by its `vaebench.run_id` tag, so an
export is idempotent: a row exported before with the same values is left alone, a row whose values changed (a
re-run, gaps added) replaces its MLflow run, a new row adds one. Each grid has a parent run that its runs nest
under and that carries the report's files (`--report`). MLflow is imported only here, and only when called.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import UserError
from bench.storage import ResultsLayout
from bench.tracking.records import (DIGEST_TAG, GRID_TAG, KEY_TAG, config_sections, curve_metrics, millis,
                                    native_row, present, row_digest, run_metrics, run_params, run_tags)

INSTALL_HINT = "pip install 'vaebench[mlflow]'"
DEFAULT_EXPERIMENT = "vaebench"
GRID_RUN_TAG = "vaebench.grid_run"  # the parent run of a grid
REPORT_TAG = "vaebench.report_digest"
PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # the UI opens a model-training experiment on its runs table
PARAMS_TAGS_PER_BATCH, METRICS_PER_BATCH = 100, 1000  # MLflow's limits for one log_batch call
PAGE = 1000


def import_mlflow():
    try:
        import mlflow
    except ImportError:
        raise UserError(f"vaebench export mlflow needs MLflow, which is not installed: {INSTALL_HINT}") from None
    for name in ("mlflow", "alembic"):  # their INFO lines (database migrations) are not the command's output
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


@dataclass(frozen=True)
class ExportSummary:
    tracking_uri: str
    experiment: str
    experiment_id: str
    added: int
    replaced: int
    unchanged: int
    report: str  # "" (not asked for), "logged" or "unchanged"

    def describe(self) -> str:
        report = {"": "", "logged": "; report files logged", "unchanged": "; report unchanged"}[self.report]
        return (f"mlflow: {self.added} run(s) added, {self.replaced} replaced (their rows changed), "
                f"{self.unchanged} unchanged{report}; experiment {self.experiment!r} (id {self.experiment_id}) "
                f"at {self.tracking_uri}")


def read_rows(results: Path) -> list[dict]:
    """Every result row of the folder, each read from its own file (its own dtypes, no columns of others)."""
    paths = sorted((ResultsLayout(results).root / "runs").glob("*.parquet"))
    if not paths:
        raise UserError(f"results folder {results} has no runs ({Path(results) / 'runs'}/*.parquet)")
    return [native_row(pd.read_parquet(path).iloc[0].to_dict()) for path in paths]


def folder_digest(folder: Path) -> str:
    """A hash of every file's relative path and bytes under `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def experiment_id(client, name: str, artifacts: Path | None) -> str:
    """The experiment's id, created when missing (a model-training experiment, `artifacts` its artifact
    location if given)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri() if artifacts else None,
                                        tags={EXPERIMENT_KIND_TAG: "custom_model_development"})
    if found.lifecycle_stage == "deleted":
        raise UserError(f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore "
                        f"--experiment-id {found.experiment_id}) or export with another --experiment")
    return found.experiment_id


def tracked_runs(client, exp_id: str) -> list:
    """Every active run of the experiment."""
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], max_results=PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def grid_run(client, exp_id: str, grid: str, rows: list[dict], existing: list) -> str:
    """The id of the grid's parent run, created (finished, spanning its runs' times) when missing."""
    for run in existing:
        if run.data.tags.get(GRID_RUN_TAG) == grid:
            return run.info.run_id
    mine = [r for r in rows if r["grid"] == grid]
    run = client.create_run(exp_id, start_time=min(millis(r["started_at"]) for r in mine), run_name=f"grid {grid}",
                            tags={GRID_RUN_TAG: grid, GRID_TAG: grid,
                                  "dataset": ", ".join(sorted({str(r["data.dataset"]) for r in mine}))})
    client.set_terminated(run.info.run_id, "FINISHED", end_time=max(millis(r["finished_at"]) for r in mine))
    return run.info.run_id


def log_row(client, exp_id: str, parent_id: str, row: dict, curves: pd.DataFrame | None, digest: str) -> None:
    """One MLflow run for the row: params, tags, metrics (results at step 0, curves by step), the config and a
    failed run's traceback as files; the digest tag last, so a run cut short is replaced by the next export."""
    from mlflow.entities import Metric, Param, RunTag

    started, finished = millis(row["started_at"]), millis(row["finished_at"])
    run = client.create_run(exp_id, start_time=started, run_name=row["run_id"],
                            tags={KEY_TAG: row["run_id"], PARENT_TAG: parent_id})
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in run_params(row).items()]
    tags = [RunTag(k, v) for k, v in run_tags(row).items()]
    metrics = [Metric(k, v, finished, 0) for k, v in run_metrics(row).items()]
    if curves is not None:
        metrics += [Metric(k, v, stamp, step) for k, v, step, stamp in curve_metrics(curves, started)]
    for batch in chunks(params, PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=batch)
    for batch in chunks(tags, PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=batch)
    for batch in chunks(metrics, METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch)
    client.log_dict(run_id, config_sections(row), "config.json")
    if present(row.get("traceback")):
        client.log_text(run_id, row["traceback"], "traceback.txt")
    client.set_terminated(run_id, "FAILED" if row["status"] == "failed" else "FINISHED", end_time=finished)
    client.set_tag(run_id, DIGEST_TAG, digest)


def export_results(results: Path, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                   report: bool = False, artifacts: Path | None = None) -> ExportSummary:
    """Export the rows of `results` (and with `report` the files of `results/report`) to the experiment at
    `tracking_uri` (None: MLflow's own default, `MLFLOW_TRACKING_URI` or `sqlite:///mlflow.db`)."""
    results = Path(results)
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    rows = read_rows(results)
    report_dir = results / "report"
    if report and not (report_dir / "report.md").is_file():
        raise UserError(f"--report: {report_dir} has no report.md; render it first: vaebench report --results "
                        f"{results}")
    uri = tracking_uri or mlflow.get_tracking_uri()
    layout = ResultsLayout(results)
    added = replaced = unchanged = 0
    report_state = ""
    try:
        client = mlflow.MlflowClient(uri)
        exp_id = experiment_id(client, experiment, artifacts)
        existing = tracked_runs(client, exp_id)
        parents = {grid: grid_run(client, exp_id, grid, rows, existing) for grid in sorted({r["grid"] for r in rows})}
        by_key: dict[str, list] = {}
        for run in existing:
            if KEY_TAG in run.data.tags:
                by_key.setdefault(run.data.tags[KEY_TAG], []).append(run)
        for row in rows:
            digest = row_digest(row)
            earlier = by_key.get(row["run_id"], [])
            keep = next((r for r in earlier if r.data.tags.get(DIGEST_TAG) == digest), None)
            for run in earlier:
                if run is not keep:
                    client.delete_run(run.info.run_id)
            if keep is not None:
                unchanged += 1
                continue
            curves_path = layout.curves(row["run_id"])
            curves = pd.read_parquet(curves_path) if curves_path.exists() else None
            log_row(client, exp_id, parents[row["grid"]], row, curves, digest)
            replaced += bool(earlier)
            added += not earlier
        if report:
            digest = folder_digest(report_dir)
            report_state = "unchanged"
            for parent_id in parents.values():
                if client.get_run(parent_id).data.tags.get(REPORT_TAG) != digest:
                    client.log_artifacts(parent_id, str(report_dir), "report")
                    client.set_tag(parent_id, REPORT_TAG, digest)
                    report_state = "logged"
    except MlflowException as err:
        raise UserError(f"MLflow at {uri}: {str(err).strip().splitlines()[0]}") from None
    return ExportSummary(uri, experiment, exp_id, added, replaced, unchanged, report_state)
