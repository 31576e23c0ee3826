"""`vaebench report`: table numbers against hand computations, validation-only choices, failures, partial and
empty folders, image figures from checkpoints, and the CLI end to end."""

from __future__ import annotations

import io
import math
import statistics
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UserError
from bench.report import best_lr_table, best_row, best_runs, failures, main_table, make_report, status_counts
from bench.report.images import pick_indices
from bench.report.literature import HEADING, LITERATURE
from bench.report.tables import display_main_table, normalize_runs, to_markdown



def quiet() -> Console:
    """A console that records into a string instead of the terminal."""
    return Console(file=io.StringIO(), width=200)


def row(variant: str, lr: float, seed: int, *, val: float, test_px: float, test_elbo: float, status: str = "completed",
        ex_s: float = 1000.0, wall: float = 10.0, grid: str = "g", latent_dim: int = 8, **extra) -> dict:
    """One run row with the schema's main columns (results/README.md)."""
    run_id = f"{grid}-{variant}-seed{seed}-lr{lr:g}-{zlib.crc32(f'{grid}{variant}{lr}{seed}'.encode()):08x}"
    base = {
        "run_id": run_id, "grid": grid, "variant": variant, "posterior": "mean-field", "prior": "standard",
        "architecture": "mlp", "latent_dim": latent_dim, "lr": lr, "seed": seed, "optimizer": "adam",
        "batch_size": 128, "max_steps": 100, "steps_done": 100, "best_step": 100,
        "val_elbo": val, "val_iw_log_px": val + 2, "test_elbo": test_elbo, "test_iw_log_px": test_px,
        "train_examples_per_s": ex_s, "train_seconds": wall * 0.8, "eval_seconds": wall * 0.1,
        "wall_seconds": wall, "eval_images": 500, "iw_samples": 20, "status": status, "error": "",
        "first_bad_step": math.nan, "device": "cpu", "torch_threads": 2, "torch_version": "2.x",
        "git_commit": "abc", "data_digest": "d1", "data.dataset": "binarized-mnist",
        "started_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=len(variant) * 100 + seed),
    }
    base.update(extra)
    return base


def write_results(root: Path, rows: list[dict], curves: bool = True) -> Path:
    (root / "runs").mkdir(parents=True, exist_ok=True)
    (root / "curves").mkdir(parents=True, exist_ok=True)
    for r in rows:
        pd.DataFrame([r]).to_parquet(root / "runs" / f"{r['run_id']}.parquet", index=False)
        if curves:
            steps = [25, 50, 75, 100]
            final = r["val_elbo"] if not math.isnan(r["val_elbo"]) else -300.0
            pd.DataFrame({"run_id": r["run_id"], "step": steps * 2, "split": ["valid"] * 4 + ["train"] * 4,
                          "elbo": [final - 40, final - 20, final - 5, final] * 2,
                          "reconstruction": np.nan, "kl": np.nan, "iw_log_px": np.nan,
                          "train_examples_per_s": 1000.0, "wall_seconds": 1.0}
                         ).to_parquet(root / "curves" / f"{r['run_id']}.parquet", index=False)
    return root


# Variant "a": two lrs, three seeds each. Test prefers lr 1e-3, validation prefers lr 3e-3: validation must win.
A_LR1 = [(-110.0, -100.0, -105.0), (-111.0, -102.0, -106.0), (-112.0, -104.5, -110.0)]  # (val, test_px, test_elbo)
A_LR3 = [(-104.0, -103.0, -108.0), (-105.0, -104.0, -109.0), (-106.0, -105.0, -107.0)]
# Variant "b": one lr, two completed seeds and one diverged run with tempting (never to be used) figures.
B = [(-108.0, -101.0, -104.0), (-109.0, -103.0, -105.0)]


def grid_rows() -> list[dict]:
    rows = [row("a", 1e-3, s, val=v, test_px=t, test_elbo=e, ex_s=1000.0 + 100 * s, wall=10.0 + s)
            for s, (v, t, e) in enumerate(A_LR1)]
    rows += [row("a", 3e-3, s, val=v, test_px=t, test_elbo=e, ex_s=1200.0, wall=12.0)
             for s, (v, t, e) in enumerate(A_LR3)]
    rows += [row("b", 1e-3, s, val=v, test_px=t, test_elbo=e, ex_s=500.0, wall=30.0) for s, (v, t, e) in enumerate(B)]
    rows.append(row("b", 1e-3, 2, val=-1.0, test_px=-1.0, test_elbo=-2.0, status="diverged", first_bad_step=40.0,
                    ex_s=1e9, wall=1.0))
    return rows


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return write_results(tmp_path / "results", grid_rows())


def test_main_table_matches_hand_computation():
    table = main_table(pd.DataFrame(grid_rows()))
    a1 = table[(table["variant"] == "a") & (table["lr"] == 1e-3)].iloc[0]
    px, elbo = [t for _, t, _ in A_LR1], [e for _, _, e in A_LR1]
    gaps = [p - e for p, e in zip(px, elbo)]  # 5.0, 4.0, 5.5
    assert a1["n"] == 3
    assert a1["log_px_mean"] == pytest.approx(-102.1666667)
    assert a1["log_px_sd"] == pytest.approx(statistics.stdev(px)) and a1["log_px_sd"] == pytest.approx(2.2546249)
    assert a1["elbo_mean"] == pytest.approx(statistics.mean(elbo))
    assert a1["elbo_sd"] == pytest.approx(statistics.stdev(elbo))
    assert a1["gap_mean"] == pytest.approx(14.5 / 3) and a1["gap_sd"] == pytest.approx(statistics.stdev(gaps))
    assert a1["examples_per_s"] == pytest.approx(1100.0) and a1["wall_seconds"] == pytest.approx(11.0)
    assert a1["val_elbo_mean"] == pytest.approx(-111.0)

    # The diverged run of "b" is counted but enters no statistic (its tempting figures would shift every mean).
    b = table[table["variant"] == "b"].iloc[0]
    assert b["n"] == 2 and b["n_not_completed"] == 1
    assert b["log_px_mean"] == pytest.approx(-102.0) and b["log_px_sd"] == pytest.approx(math.sqrt(2.0))
    assert b["examples_per_s"] == pytest.approx(500.0) and b["val_elbo_mean"] == pytest.approx(-108.5)


def test_single_seed_sd_is_a_dash():
    runs = pd.DataFrame([row("solo", 1e-3, 0, val=-100.0, test_px=-90.0, test_elbo=-95.0)])
    table = main_table(runs)
    assert table.loc[0, "n"] == 1 and math.isnan(table.loc[0, "log_px_sd"])
    shown = display_main_table(table, show_lr=False)
    assert shown.loc[0, "test log p(x)"] == "-90.00 ± –"


def test_best_choices_use_validation_not_test():
    runs = pd.DataFrame(grid_rows())
    best = best_lr_table(runs).set_index("variant")
    # lr 1e-3 has the better test log p(x) (-102.17 vs -104.00), lr 3e-3 the better validation ELBO (-105 vs -111).
    assert best.loc["a", "lr"] == 3e-3
    assert best.loc["a", "log_px_mean"] == pytest.approx(-104.0)
    assert best.loc["b", "lr"] == 1e-3 and best.loc["b", "n"] == 2

    table = main_table(runs)
    bold = best_row(table)
    # Best mean validation ELBO among rows: a@3e-3 (-105); the best test row would be b (-102.0) or a@1e-3.
    assert (table.loc[bold, "variant"], table.loc[bold, "lr"]) == ("a", 3e-3)
    md = to_markdown(display_main_table(table, show_lr=True), bold)
    bold_lines = [line for line in md.splitlines() if "**" in line]
    assert len(bold_lines) == 1 and "**a**" in bold_lines[0] and "**0.003**" in bold_lines[0]

    # The checkpoint for images: at a's best lr, seed 0 has the best validation ELBO; seed 2 would win on test.
    rows = grid_rows()
    rows[3]["test_iw_log_px"], rows[5]["test_iw_log_px"] = -110.0, -50.0
    picks = best_runs(pd.DataFrame(rows)).set_index("variant")
    assert picks.loc["a", "seed"] == 0 and picks.loc["a", "lr"] == 3e-3


def test_failures_are_counted_and_listed():
    rows = grid_rows() + [row("c", 1e-3, 0, val=math.nan, test_px=math.nan, test_elbo=math.nan, status="failed",
                              error="RuntimeError: boom")]
    runs = pd.DataFrame(rows)
    bad = failures(runs)
    assert list(bad["status"]) == ["diverged", "failed"]
    assert bad.loc[0, "detail"] == "non-finite loss at step 40" and bad.loc[1, "detail"] == "RuntimeError: boom"
    counts = status_counts(runs).set_index("variant")
    assert counts.loc["b", "completed"] == 2 and counts.loc["b", "diverged"] == 1
    assert counts.loc["c", "failed"] == 1 and counts.loc["c", "completed"] == 0
    table = main_table(runs).set_index("variant")
    assert table.loc["c", "n"] == 0 and table.loc["c", "n_not_completed"] == 1  # kept visible, no statistics
    assert math.isnan(table.loc["c", "log_px_mean"])


def test_report_on_partial_results(tmp_path: Path):
    rows = grid_rows() + [row("c", 1e-3, 0, val=math.nan, test_px=math.nan, test_elbo=math.nan, status="failed",
                              error="RuntimeError: boom")]
    root = write_results(tmp_path / "res", rows)
    orphan = pd.read_parquet(next((root / "curves").glob("*.parquet")))
    orphan.assign(run_id="g-running-seed0-00000000").to_parquet(root / "curves" / "g-running-seed0.parquet")
    out = tmp_path / "out"
    console = quiet()
    make_report(root, out, None, console=console)
    text = (out / "report.md").read_text()
    assert "RuntimeError: boom" in text and "non-finite loss at step 40" in text
    assert "g-running-seed0-00000000" in text  # the curve without a run row is reported, not silently dropped
    assert "| c |" in text  # the failed-only variant keeps its row
    assert "checkpoint" in text and "is missing" in text  # images skipped with a note
    assert f"## {HEADING}" in text
    for model, nll, protocol, source in LITERATURE:
        assert f"| {model} | {nll} | {protocol} | {source} |" in text
    assert text.index("## Main table") < text.index(f"## {HEADING}")
    for name in ("log_px_by_variant", "learning_curves", "throughput", "tradeoff"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").stat().st_size > 0
    assert "test log p(x)" in console.file.getvalue()  # the main table went to the console


def test_empty_and_missing_folders_raise_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        make_report(tmp_path / "nope", tmp_path / "out", None)
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    with pytest.raises(UserError, match=str(tmp_path / "empty")):
        make_report(tmp_path / "empty", tmp_path / "out", None)


def test_cli_end_to_end(results: Path):
    cli = CliRunner()
    res = cli.invoke(app, ["report", "--results", str(results)])
    assert res.exit_code == 0, res.output
    out = results / "report"
    text = (out / "report.md").read_text()
    assert "**a**" in text and "NLL = −log p(x)" in text
    assert "Grid: `g`" in text and "8 completed, 1 diverged" in text and "k = 20" in text
    for name in ("log_px_by_variant", "learning_curves", "throughput", "tradeoff"):
        assert (out / f"{name}.png").is_file() and (out / f"{name}.pdf").is_file()
    assert "-104.00 ± 1.00" in res.output  # the main table printed to the terminal


def test_cli_empty_folder_exits_2(tmp_path: Path):
    (tmp_path / "runs").mkdir()
    res = CliRunner().invoke(app, ["report", "--results", str(tmp_path)])
    assert res.exit_code == 2
    assert "no runs" in res.output and len(res.output.strip().splitlines()) == 1


def test_random_test_images_not_the_first_rows():
    idx = pick_indices(10000, 16, 0)
    assert len(set(idx.tolist())) == 16 and idx.max() > 100
    assert torch.equal(idx, pick_indices(10000, 16, 0))


def _two_d_results(tmp_path: Path) -> Path:
    from vae_core import build_vae

    rows = [row("z2", 1e-3, s, val=-100.0 - s, test_px=-95.0, test_elbo=-98.0, latent_dim=2) for s in range(2)]
    root = write_results(tmp_path / "res", rows, curves=False)
    (root / "checkpoints").mkdir()
    torch.manual_seed(0)
    build_vae({"latent_dim": 2, "hidden": [16]}).save(root / "checkpoints" / f"{rows[0]['run_id']}.pt")
    return root


def test_image_figures_from_checkpoint_and_real_data(tmp_path: Path, shared_data_dir: Path):
    root = _two_d_results(tmp_path)
    make_report(root, root / "report", shared_data_dir, console=quiet())
    out = root / "report"
    for name in ("samples_z2", "reconstructions_z2", "latent_manifold_z2", "latent_scatter_z2"):
        assert (out / f"{name}.png").stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "seed 0" in text and "learning curves" in text.lower()  # no curves: that plot is skipped with a note


def test_image_figures_without_labels_or_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import vae_core.data as data
    from vae_core.data import DataError, Dataset

    root = _two_d_results(tmp_path)
    fake = torch.bernoulli(torch.full((50, 784), 0.2), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(data, "load_dataset", lambda name, data_dir=None, download=False: Dataset(
        name, fake, fake, fake, None, False, "x", "fake"))
    make_report(root, tmp_path / "o1", None, console=quiet())
    assert (tmp_path / "o1" / "latent_manifold_z2.png").is_file()
    assert not (tmp_path / "o1" / "latent_scatter_z2.png").exists()
    assert "has no test labels" in (tmp_path / "o1" / "report.md").read_text()

    def missing(*args, **kwargs):
        raise DataError("no data here")

    monkeypatch.setattr(data, "load_dataset", missing)
    make_report(root, tmp_path / "o2", None, console=quiet())
    assert (tmp_path / "o2" / "samples_z2.png").is_file()  # samples need only the checkpoint
    assert not (tmp_path / "o2" / "reconstructions_z2.png").exists()
    assert "no data here" in (tmp_path / "o2" / "report.md").read_text()


def test_several_grids_are_labelled():
    runs = normalize_runs(pd.DataFrame([row("v", 1e-3, 0, val=-1.0, test_px=-1.0, test_elbo=-1.0, grid="g1"),
                                        row("v", 1e-3, 0, val=-2.0, test_px=-2.0, test_elbo=-2.0, grid="g2")]))
    assert sorted(main_table(runs)["variant"]) == ["g1/v", "g2/v"]


def test_the_report_names_plugin_families_and_their_origin():
    from bench.report.origins import origin_lines

    runs = pd.DataFrame({"posterior": ["mean-field", "radial", "radial"], "prior": ["standard"] * 3,
                         "posterior_origin": ["builtin", "vaebench-radial==0.1.0", "vaebench-radial==0.1.0"],
                         "prior_origin": ["builtin"] * 3})
    assert origin_lines(runs) == ["- Families from plugins: radial (posterior, vaebench-radial==0.1.0)."]
    assert origin_lines(runs.iloc[:1]) == [] and origin_lines(runs.drop(columns=["posterior_origin"]).iloc[:1]) == []
