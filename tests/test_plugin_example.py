"""The example plugin (examples/vaebench-radial) end to end, as a user installs it: built and installed into a
temporary folder (offline, the venv untouched), found through its entry point by a subprocess whose PYTHONPATH
holds that folder; `vaebench check` passes; the tiny grid trains it beside mean-field, the rows and the report say
where each family came from; a copy with its log-det's sign flipped fails `vaebench check` on the right lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "vaebench-radial"
SIGN_LINE = "log_abs_det = (dim - 1) * torch.log1p(beta_h) + torch.log1p(beta_h - beta * r * h * h)"

pytestmark = pytest.mark.slow


def install(source: Path, tmp: Path, name: str, mutate: str = "") -> Path:
    """A copy of the example package (with `mutate` applied to its source) installed into tmp/name/site."""
    copy = tmp / name / "src"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    if mutate:
        module = copy / "src" / "vaebench_radial" / "__init__.py"
        text = module.read_text()
        assert SIGN_LINE in text
        module.write_text(text.replace(SIGN_LINE, mutate))
    site = tmp / name / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(copy)], check=True, capture_output=True, text=True)
    return site


def vaebench(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "OMP_NUM_THREADS": "1",
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def failing_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "FAIL" in line and line.startswith("│")]


def test_the_radial_plugin_checks_trains_and_is_caught_when_broken(tmp_path, shared_data_dir):
    site = install(EXAMPLE, tmp_path, "good")
    check = vaebench(site, "check", "posterior", "radial")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "vaebench-radial==0.1.0" in check.stdout and not failing_lines(check.stdout)

    results = tmp_path / "results"
    run = vaebench(site, "run", "--grid", str(EXAMPLE / "tiny.toml"), "--results", str(results), "--data-dir",
                   str(shared_data_dir), "--stack", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    rows = pd.read_parquet(results / "runs").set_index("variant")
    assert set(rows["status"]) == {"completed"}
    assert rows.loc["radial", "posterior_origin"] == "vaebench-radial==0.1.0"
    assert rows.loc["mean-field", "posterior_origin"] == "builtin" and set(rows["prior_origin"]) == {"builtin"}
    assert (rows["test_iw_log_px"] >= rows["test_elbo"]).all()
    report = vaebench(site, "report", "--results", str(results), "--data-dir", str(shared_data_dir), "--offline")
    assert report.returncode == 0, report.stdout + report.stderr
    assert "- Families from plugins: radial (posterior, vaebench-radial==0.1.0)." in \
        (results / "report" / "report.md").read_text()

    flipped = install(EXAMPLE, tmp_path, "flipped", mutate=SIGN_LINE.replace("log_abs_det = ", "log_abs_det = -("
                                                                           ) + ")")
    bad = vaebench(flipped, "check", "posterior", "radial")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    failed = failing_lines(bad.stdout)
    assert any("log q = log N(eps) - log|det dz/deps|" in line for line in failed), bad.stdout
    assert any("q normalised" in line for line in failed), bad.stdout
    assert not any(word in line for line in failed for word in ("shapes", "dtype", "stacked")), bad.stdout
