"""Gaps in a grid (`eval.gaps = true`) and `vaebench gaps` for finished runs (synthetic data, a few steps):
the run's other figures and checkpoint do not change, a run's gaps are those of its checkpoint alone (so they
do not depend on the stack), the command fills in the same figures, skips runs that have them and resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.grid.config import EvalConfig
from bench.grid.files import load_grid
from bench.tasks import RunTask, execute_task
from bench.training.gaps import GAP_COLUMNS, gap_figures, gap_subset
from vae_core import load_vae

GRID = """
name = "g"
[model]
hidden = [16]
latent_dim = 3
[train]
batch_size = 32
max_steps = 12
eval_every = 6
check_every = 3
compile = false
[data]
max_eval_images = 40
[eval]
iw_samples = 8
valid_iw_samples = 2
{gaps}
[[variant]]
name = "mf"
[[variant]]
name = "iaf"
model.posterior = "iaf"
[grid]
"train.seed" = [0, 1]
"""
GAPS = """gaps = true
gap_images = 6
gap_max_steps = 40
gap_check_every = 10
gap_patience = 2
gap_elbo_samples = 30
gap_au_samples = 5"""
FIGURES = ("test_elbo", "test_iw_log_px", "test_kl", "val_elbo", "best_step", "steps_done")


@pytest.fixture
def data_dir(tmp_path, synth):
    synth.binarized_set(tmp_path / "data", rows=(100, 40, 40))
    return tmp_path / "data"


def run_grid(tmp_path: Path, data_dir: Path, gaps: str, stack: str, name: str) -> tuple[Path, pd.DataFrame]:
    grid = tmp_path / f"{name}.toml"
    grid.write_text(GRID.format(gaps=gaps))
    results = tmp_path / name
    res = CliRunner().invoke(app, ["run", "--grid", str(grid), "--results", str(results), "--data-dir",
                                   str(data_dir), "--stack", stack])
    assert res.exit_code == 0, res.output
    return results, pd.read_parquet(results / "runs").sort_values(["variant", "seed"]).reset_index(drop=True)


def test_gaps_in_a_grid_leave_the_run_as_it_was_and_equal_the_checkpoints_alone(tmp_path, data_dir):
    plain_dir, plain = run_grid(tmp_path, data_dir, "", "2", "plain")
    gaps_dir, gaps = run_grid(tmp_path, data_dir, GAPS, "2", "gaps")
    assert (gaps["stack_size"] == 2).all()  # the two seeds of each variant trained and were tested as a stack
    for col in FIGURES:
        assert gaps[col].tolist() == plain[col].tolist(), col
    for a, b in zip(plain["run_id"], gaps["run_id"]):
        sa = torch.load(plain_dir / "checkpoints" / f"{a}.pt")["state_dict"]
        sb = torch.load(gaps_dir / "checkpoints" / f"{b}.pt")["state_dict"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert set(GAP_COLUMNS) <= set(gaps.columns) and not set(GAP_COLUMNS) & set(plain.columns)
    assert (gaps["gap_images"] == 6).all()
    assert (gaps["approximation_gap"] + gaps["amortization_gap"] - gaps["inference_gap"]).abs().max() < 1e-9
    # each row's figures are its checkpoint's alone, computed afresh after other work and another global seed
    torch.manual_seed(123)
    test = _test_images(tmp_path, data_dir)
    for _, row in gaps.iterrows():
        alone = gap_figures(load_vae(gaps_dir / "checkpoints" / f"{row['run_id']}.pt"), test, _eval(row))
        for col in GAP_COLUMNS:
            if col != "gap_seconds":
                assert alone[col] == row[col], col


def _eval(row) -> EvalConfig:
    return EvalConfig(**{k[5:]: (v.item() if hasattr(v, "item") else v) for k, v in row.items()
                         if k.startswith("eval.")})


def _test_images(tmp_path: Path, data_dir: Path) -> torch.Tensor:
    from bench.tasks import prepare_data

    grid = tmp_path / "t.toml"
    grid.write_text(GRID.format(gaps=GAPS))
    return prepare_data(load_grid(grid)[0], str(data_dir), torch.device("cpu")).test


def test_gaps_command_fills_in_the_same_figures_skips_done_runs_and_resumes(tmp_path, data_dir, monkeypatch):
    results, rows = run_grid(tmp_path, data_dir, GAPS, "1", "r")
    stripped = tmp_path / "stripped"
    shutil.copytree(results, stripped)
    for path in (stripped / "runs").glob("*.parquet"):
        pd.read_parquet(path).drop(columns=list(GAP_COLUMNS)).to_parquet(path, index=False)

    import bench.finished_gaps as command

    calls = []
    real = command.gap_figures

    def interrupt_on_the_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(command, "gap_figures", interrupt_on_the_third)
    res = CliRunner().invoke(app, ["gaps", "--results", str(stripped), "--data-dir", str(data_dir)])
    assert res.exit_code == 130, res.output
    partial = pd.read_parquet(stripped / "runs")
    assert partial["approximation_gap"].notna().sum() == 2  # the two written rows are kept
    monkeypatch.setattr(command, "gap_figures", real)
    res = CliRunner().invoke(app, ["gaps", "--results", str(stripped), "--data-dir", str(data_dir)])
    assert res.exit_code == 0 and "gaps written for 2 run(s); 2 skipped" in res.output, res.output
    filled = pd.read_parquet(stripped / "runs").sort_values(["variant", "seed"]).reset_index(drop=True)
    for col in GAP_COLUMNS:
        if col != "gap_seconds":
            assert filled[col].tolist() == rows[col].tolist(), col
    for col in FIGURES:
        assert filled[col].tolist() == rows[col].tolist(), col


def test_gap_subset_is_seeded_random_not_the_first_rows():
    x = torch.arange(100.0)[:, None]  # [100, 1]
    ev = EvalConfig(gap_images=10)
    a, b = gap_subset(x, ev), gap_subset(x, ev)
    assert torch.equal(a, b) and a.shape == (10, 1) and not torch.equal(a, x[:10])
    assert not torch.equal(gap_subset(x, EvalConfig(gap_images=10, gap_seed=1)), a)
    assert torch.equal(gap_subset(x, EvalConfig(gap_images=500)), x)


def test_bad_gap_keys_are_config_errors():
    from vae_core.config import ConfigError

    for bad in ({"gap_images": 0}, {"gap_lr": 0.0}, {"gap_patience": 0}):
        with pytest.raises(ConfigError, match="eval.gap_"):
            EvalConfig(**bad)
