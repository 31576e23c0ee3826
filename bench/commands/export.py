"""`vaebench export`: finished runs into an experiment tracker (`bench.tracking`); `export mlflow` is the one
tracker so far."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.commands import user_errors

app = typer.Typer(no_args_is_help=True, help="Export finished runs to an experiment tracker.")


@app.command("mlflow")
def mlflow_command(
    results: Path = typer.Option(Path("results"), "--results", help="Results folder."),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI, e.g. sqlite:///mlflow.db or http://host:5000 (default: "
                                     "MLflow's: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)."),
    experiment: str = typer.Option("vaebench", "--experiment", help="MLflow experiment (created when missing)."),
    report: bool = typer.Option(False, "--report", help="Also log RESULTS/report (vaebench report) on the grid's "
                                                        "parent run."),
    artifacts: Optional[Path] = typer.Option(
        None, "--artifacts", help="Artifact folder of a new experiment (default: MLflow's, ./mlruns)."),
) -> None:
    """One MLflow run per result row (params: the config; tags: variant, origins, commit, device; metrics:
    every numeric column and the curves by step). Idempotent: runs exported before are left alone."""
    from bench.tracking.mlflow_export import export_results

    with user_errors():
        summary = export_results(results, tracking_uri, experiment, report, artifacts)
    typer.echo(summary.describe())
