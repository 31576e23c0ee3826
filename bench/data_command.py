"""`vaebench data`: a table of every dataset file (where found, sizes, pixel means, checksum), optional download."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from vae_core.data import sources
from vae_core.data.paths import check_data_dir, data_dirs, describe_dirs
from vae_core.data.inventory import Entry, fetch_missing, inventory

_STYLE = {"ok": "green", "unverified": "yellow", "missing": "yellow", "mismatch": "red", "corrupt": "red"}
_HINT = ("hint: binarized MNIST is missing or corrupt (searched: {dirs}): run `vaebench data --download` (needs "
         "internet), or pass --data-dir / set VAEBENCH_DATA to a folder holding "
         "binarized_mnist/binarized_mnist_{{train,valid,test}}.amat[.gz]")


def _row(e: Entry) -> list[str]:
    shape = "x".join(map(str, e.shape)) if e.shape else "-"
    mean = f"{e.mean:.4f}" if e.mean is not None else "-"
    where = str(e.path.parent) if e.path is not None and e.status not in ("missing",) else "missing"
    status = f"[{_STYLE.get(e.status, 'white')}]{e.status}[/]"
    return [e.dataset, e.item, where, shape, mean, status]


def show_data(data_dir: Path | None, download: bool) -> int:
    """Print the dataset table; 0 when binarized MNIST is complete and verified, else 2 with a one-line hint."""
    check_data_dir(data_dir)
    out, err = Console(), Console(stderr=True)
    if not out.is_terminal:
        out = Console(width=max(out.width, 160))
    failed_downloads = fetch_missing(data_dir) if download else []
    for failure in failed_downloads:
        err.print(f"[bold red]download failed:[/] {failure}", highlight=False, soft_wrap=True)
    entries = inventory(data_dir)
    table = Table(title="vaebench datasets")
    for column in ("dataset", "file / split", "found in", "shape", "pixel mean", "checksum"):
        table.add_column(column, justify="right" if column in ("shape", "pixel mean") else "left", overflow="fold")
    for entry in entries:
        table.add_row(*_row(entry))
    out.print(table)
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
