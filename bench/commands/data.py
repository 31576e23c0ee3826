"""`vaebench data`: every dataset (split sizes, pixel mean, where found, status) and the files behind them;
optional download of whatever is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from bench.commands import DataDir, user_errors
from vae_core.data import sources
from vae_core.data.inventory import Entry, Summary, fetch_missing, inventory, summaries
from vae_core.data.paths import check_data_dir, data_dirs, describe_dirs

_STYLE = {"ok": "green", "unverified": "yellow", "missing": "yellow", "mismatch": "red", "corrupt": "red"}
_HINT = ("hint: binarized MNIST is missing or corrupt (searched: {dirs}): run `vaebench data --download` (needs "
         "internet), or pass --data-dir / set VAEBENCH_DATA to a folder holding "
         "binarized_mnist/binarized_mnist_{{train,valid,test}}.amat[.gz]")


def _status(status: str) -> str:
    return f"[{_STYLE.get(status, 'white')}]{status}[/]"


def _row(e: Entry) -> list[str]:
    shape = "x".join(map(str, e.shape)) if e.shape else "-"
    mean = f"{e.mean:.4f}" if e.mean is not None else "-"
    where = "missing" if e.status == "missing" else str(e.path.parent) if e.path is not None else "-"
    return [e.dataset, e.item, where, shape, mean, _status(e.status)]


def _summary_row(s: Summary) -> list[str]:
    spec = s.spec
    sizes = " / ".join(map(str, s.splits)) if s.splits else " / ".join(map(str, spec.splits)) + " (expected)"
    mean = f"{s.mean:.4f}" if s.mean is not None else "-"
    where = s.source or ("missing" if s.status == "missing" else "-")
    return [spec.name, spec.kind, "x".join(map(str, spec.image_shape)), ", ".join(spec.likelihoods), sizes, mean,
            where, _status(s.status)]


def _table(title: str, columns: tuple[str, ...], right: tuple[str, ...], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def show_data(data_dir: Path | None, download: bool) -> int:
    """Print the dataset and file tables; 0 when binarized MNIST is complete and verified, else 2 with a one-line
    hint. Other datasets missing is no error (they are listed as missing)."""
    check_data_dir(data_dir)
    out, err = Console(), Console(stderr=True)
    if not out.is_terminal:
        out = Console(width=max(out.width, 160))
    failed_downloads = fetch_missing(data_dir) if download else []
    for failure in failed_downloads:
        err.print(f"[bold red]download failed:[/] {failure}", highlight=False, soft_wrap=True)
    datasets = summaries(data_dir)
    out.print(_table("vaebench datasets", ("dataset", "kind", "image", "likelihoods", "train / valid / test",
                                           "train pixel mean", "found in", "status"),
                     ("train / valid / test", "train pixel mean"), [_summary_row(s) for s in datasets]))
    entries = inventory(data_dir)
    out.print(_table("files (binarized and IDX datasets)", ("dataset", "file / split", "found in", "shape",
                                                            "pixel mean", "checksum"),
                     ("shape", "pixel mean"), [_row(e) for e in entries]))
    for s in datasets:
        if s.status in ("mismatch", "corrupt") and s.spec.name != "binarized-mnist":
            err.print(f"[red]{s.spec.name}:[/] {s.detail}", highlight=False, soft_wrap=True)
    train_images = next(e for e in entries if e.item == sources.IDX_FILES["train-images"].filename)
    if train_images.status in ("ok", "unverified"):
        out.print("mnist-dynamic: available (train-images present)")
    else:
        out.print(f"mnist-dynamic: unavailable: {train_images.item}(.gz) is {train_images.status} "
                  f"(needs `vaebench data --download` with internet)", soft_wrap=True)
    binarized_ok = all(e.status == "ok" for e in entries if e.dataset == "binarized-mnist" and e.item != "test labels")
    if binarized_ok:
        out.print("binarized-mnist: ready")
        return 0
    for e in entries:
        if e.dataset == "binarized-mnist" and e.status in ("mismatch", "corrupt"):
            err.print(f"[red]{e.item}:[/] {e.detail}", highlight=False, soft_wrap=True)
    err.print(_HINT.format(dirs=describe_dirs(data_dirs(data_dir))), highlight=False, soft_wrap=True)
    return 2


def command(
    data_dir: Optional[Path] = DataDir,
    download: bool = typer.Option(False, "--download", help="Download what is missing (needs internet)."),
) -> None:
    """List the datasets: where each was found, split sizes, pixel means, checksum status."""
    with user_errors():
        code = show_data(data_dir, download)
    raise typer.Exit(code)
