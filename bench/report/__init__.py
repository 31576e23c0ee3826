"""`vaebench report`: tables, plots and image grids from a results folder (see results/README.md).

`make_report(results, out, data_dir)` writes `out/report.md`, PNG (+ PDF for plots) figures, and prints the
main table. The table logic lives in `bench.report.tables` as pure functions on the run DataFrame.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.errors import UserError
from bench.report.datasets import dataset_groups, is_8bit, units_sentence
from bench.report.families import family_markdown
from bench.report.figures import (SkipFigure, plot_learning_curves, plot_log_px, plot_throughput, plot_tradeoff,
                                  plot_versus, plot_versus_by_lr, versus_cost_axis)
from bench.report.gaps import gaps_markdown
from bench.report.literature import literature_markdown
from bench.report.origins import origin_lines
from bench.report.reproductions import (benchmark_curves, plot_reproduction_progress, reproduction_markdown,
                                        reproduction_rows, reproduction_table)
from bench.report.tables import (best_lr_table, best_row, best_runs, completed, display_best_lr_table,
                                 display_main_table, failures, load_curves, load_results, main_table, normalize_runs,
                                 several_lrs, status_counts, to_markdown)
from bench.report.versus import (display_versus, no_lr_overlap, pick_baseline, versus_by_lr, versus_sentence,
                                 versus_table)
from bench.storage import atomic_write
from vae_core.data.paths import check_data_dir

__all__ = ["make_report", "main_table", "best_lr_table", "best_runs", "best_row", "failures", "status_counts",
           "to_markdown", "load_results", "pick_baseline", "versus_table", "versus_by_lr", "versus_sentence"]


def _counts(values: pd.Series, fmt=str) -> str:
    """'a (3 runs), b (1 run)' of the distinct non-empty values, or '–'."""
    c = Counter(fmt(v) for v in values if not (isinstance(v, float) and pd.isna(v)) and v != "")
    if not c:
        return "–"
    if len(c) == 1:
        return next(iter(c))
    return ", ".join(f"{k} ({n} run{'s' if n != 1 else ''})" for k, n in sorted(c.items()))


def _header(runs: pd.DataFrame, results_dir: Path, curves: pd.DataFrame, failures_section: bool = True) -> list[str]:
    statuses = Counter(runs["status"])
    status_text = ", ".join(f"{n} {s}" for s, n in
                            sorted(statuses.items(), key=lambda kv: (kv[0] != "completed", kv[0])))
    done = completed(runs)
    grids = sorted(g for g in runs["grid"].unique() if g)
    threads = runs["torch_threads"].map(lambda v: str(int(v)) if pd.notna(v) else "?")
    provenance = (runs["device"].replace("", "?") + ", " + threads + " threads, torch "
                  + runs["torch_version"].replace("", "?"))
    lines = [
        "# vaebench report",
        "",
        f"- Results folder: `{results_dir}`; generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"- Grid{'s' if len(grids) != 1 else ''}: {', '.join(f'`{g}`' for g in grids) or '–'}.",
        f"- Runs: {len(runs)} ({status_text}); variants: {runs['label'].nunique()}.",
        f"- Evaluation: {_counts(done['eval_images'], lambda v: str(int(v)))} test images per run "
        f"(a seeded random subset when below 10000), importance-weighted log p(x) with "
        f"k = {_counts(done['iw_samples'], lambda v: str(int(v)))} samples.",
        f"- Hardware/software: {_counts(provenance)}; git commit {_counts(runs['git_commit'])}; "
        f"data digest {_counts(runs['data_digest'])}.",
        "- Units: nats per image. log p(x) and ELBO are negative, higher is better; NLL = −log p(x) "
        "(lower is better). Gap = log p(x) − ELBO, per run, then mean ± sd.",
        "- Statistics use completed runs only (mean ± sample sd with ddof=1 over seeds; – when one seed); "
        + ("diverged and failed runs are counted and listed under Failures." if failures_section else
           "runs that did not complete are counted in the progress column."),
    ]
    if not curves.empty and "run_id" in curves.columns:
        orphans = sorted(set(curves["run_id"]) - set(runs["run_id"]))
        if orphans:
            lines.append(f"- {len(orphans)} curve file(s) without a run row (runs still in progress?) are not "
                         f"plotted: {', '.join(f'`{r}`' for r in orphans[:10])}{' …' if len(orphans) > 10 else ''}.")
    return lines


def _print_table(display: pd.DataFrame, bold: object, console: Console, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in display.columns:
        table.add_column(col, justify="left" if col in ("variant", "comparison", "seeds left out") else "right",
                         overflow="fold")
    for idx, row in display.iterrows():
        table.add_row(*map(str, row), style="bold" if idx == bold else None)
    console.print(table)


def _versus_section(runs: pd.DataFrame, baseline: str, show_lr: bool) -> tuple[list[str], pd.DataFrame, str,
                                                                              pd.DataFrame]:
    """Markdown of the versus-the-baseline section, with its table, sentence and per-lr table."""
    table = versus_table(runs, baseline)
    sentence = versus_sentence(table, baseline)
    md = [f"## Versus the baseline: `{baseline}`", "",
          to_markdown(display_versus(table, show_lr)).rstrip(), "",
          sentence, "",
          f"Each variant at its best lr on validation, against `{baseline}` at its own. Δ = variant − "
          f"{baseline} in nats per image (above 0: higher likelihood than {baseline}), mean ± standard error over "
          "seeds; 95% CI with Student t: paired by seed (dof = pairs − 1) where both ran the same seeds, "
          "Welch's unpaired test (Welch–Satterthwaite dof) where they did not; no interval with one seed. "
          "Cost columns: counted training FLOPs per example (the same on any machine), mean training seconds per "
          "step and mean wall seconds per run (a run of a stack charged its share: the stack's seconds / its "
          f"size), as ratios to {baseline}'s; GFLOP/s: the runs' achieved rate (FLOPs per example × examples/s, "
          "a stacked run's share of its stack's). Seeds left out of "
          "a comparison are named with the reason.", ""]
    by_lr = versus_by_lr(runs, baseline) if show_lr else pd.DataFrame()
    if show_lr:
        md += [f"### Per learning rate: each variant against `{baseline}` at the same lr", ""]
        if by_lr.empty:
            md += [f"No variant shares an lr with `{baseline}`.", ""]
        else:
            md += [to_markdown(display_versus(by_lr, True)).rstrip(), "",
                   versus_sentence(by_lr, baseline, per_lr=True), ""]
        missing = no_lr_overlap(runs, baseline)
        if missing and not by_lr.empty:
            md += [f"Not compared per lr (no lr in common with `{baseline}`): {', '.join(missing)}.", ""]
    return md, table, sentence, by_lr


def make_report(results: Path, out: Path, data_dir: Path | None = None, console: Console | None = None,
                baseline: str | None = None, download: bool = False, cost: str = "flops") -> Path:
    """Write `out/report.md` and the figures for the results folder `results`; returns the report path.

    `baseline` names the reference variant of the versus table (default: `mean-field` if present, else the
    first variant); `download` lets the image figures fetch a missing test set into the cache; `cost` ('flops' or
    'seconds') is the versus figures' cost axis (the tables show both). Reproduction runs
    are compared only with their published values; a folder of reproductions alone has no versus table.
    Raises UserError when `results` does not exist or holds no run rows (and no reproduction curves), or
    `baseline` is not a variant of the benchmark's runs.
    """
    results, out = Path(results), Path(out)
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: no terminal width to respect
            console = Console(width=160)
    check_data_dir(data_dir)
    try:
        runs, curves, read_notes = load_results(results)
    except UserError:
        curves = load_curves(results)
        progress = reproduction_table(pd.DataFrame(), curves)
        if progress.empty:
            raise
        return _reproductions_report(results, out, progress, curves, console)
    reproductions = reproduction_table(runs, curves)
    all_runs, reproducing = runs, reproduction_rows(runs)
    if reproducing.all():
        return _reproductions_report(results, out, reproductions, curves, console, runs, read_notes)
    if reproducing.any():  # other protocols: they meet their published values below, never these variants
        runs = normalize_runs(runs[~reproducing])
        read_notes = read_notes + [f"{int(reproducing.sum())} reproduction run(s) are reported only in the "
                                   "reproduction section, against their published values."]
    groups = dataset_groups(runs)
    references = _baselines(groups, baseline)
    out.mkdir(parents=True, exist_ok=True)
    md = _header(runs, results, benchmark_curves(curves, all_runs)) + [f"- {n}" for n in read_notes]
    md += origin_lines(runs)  # plugin families and where they came from
    if len(groups) > 1:
        md.append(f"- Datasets: {', '.join(f'`{name}`' for name, _ in groups)}. Each has its own section; variants "
                  "are compared only within a dataset, never across.")
    printed = []
    for (dataset, group), reference in zip(groups, references):
        section, shown = _dataset_sections(group, curves, reference, results, out, data_dir, download, dataset,
                                           len(groups) > 1, cost)
        md += section
        printed.append(shown)
    md += family_markdown(all_runs)  # hook: the family-by-dataset table (bench/report/families.py)
    if not reproductions.empty:
        md += reproduction_markdown(reproductions) + _progress_figure(curves, out, all_runs)
    md += [literature_markdown()]
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(md), encoding="utf-8")
    tmp.replace(path)

    for (dataset, _), (display, bold, versus_display, reference, sentence, _) in zip(groups, printed):
        of = f" on {dataset}" if len(groups) > 1 else ""
        _print_table(display, bold, console, f"test log p(x) and ELBO per variant{of}, nats (bold = best mean "
                     "validation ELBO)")
        _print_table(versus_display, None, console, f"versus {reference}{of} (each variant at its best lr on "
                     "validation; Δ = variant − reference, nats; cost as ratios)")
        console.print(sentence, highlight=False, markup=False)
    if not reproductions.empty:
        _print_table(reproductions.drop(columns=["source", "protocol differences"]), None, console,
                     "reproductions: measured vs published test log p(x), nats")
    console.print(f"wrote {path} and {sum(shown[-1] for shown in printed)} figure(s)", highlight=False)
    return path


def _baselines(groups: list[tuple[str, pd.DataFrame]], name: str | None) -> list[str]:
    """Each dataset's reference variant: `name` where that dataset has it, else its default; UserError when
    `name` is given and no dataset has it."""
    if len(groups) == 1:
        return [pick_baseline(groups[0][1], name)]
    found = []
    for _, group in groups:
        try:
            found.append(pick_baseline(group, name))
        except UserError:
            found.append(None)
    if name is not None and all(f is None for f in found):
        pick_baseline(groups[0][1], name)  # raises, naming the choices
    return [f if f is not None else pick_baseline(group, None) for f, (_, group) in zip(found, groups)]


def _dataset_sections(runs: pd.DataFrame, curves: pd.DataFrame, reference: str, results: Path, out: Path,
                      data_dir: Path | None, download: bool, dataset: str, several: bool,
                      cost: str = "flops") -> tuple[list[str], tuple]:
    """The markdown of one dataset's runs (versus, main and best-lr tables, failures, figures) and what the
    console shows of it: (display, bold, versus display, reference, sentence, figures written). With `several`
    datasets the section has a dataset heading and its figures go to `out/<dataset>/`."""
    from bench.report.images import image_figures, safe_name

    sub = safe_name(dataset) if several else ""
    fig_dir, link = (out / sub, f"{sub}/") if several else (out, "")
    bits = is_8bit(dataset)
    show_lr = several_lrs(runs)
    md = ["", f"# Dataset `{dataset}`", "", units_sentence(dataset)] if several else (
        ["", units_sentence(dataset)] if bits else [])
    md.append("")
    versus_md, versus, sentence, by_lr = _versus_section(runs, reference, show_lr)
    md += versus_md

    table = main_table(runs)
    bold = best_row(table)
    display = display_main_table(table, show_lr, bits)
    md += gaps_markdown(runs, reference, fig_dir, link)  # inference gaps: only runs that have them
    md += ["## Main table", "", to_markdown(display, bold).rstrip(), ""]
    rule = ("Bold: the row with the highest mean VALIDATION ELBO; rows are never chosen on test figures."
            if bold is not None else "No row has a validation ELBO, so none is marked best.")
    md += [rule + " `test log p(x)`: importance-weighted bound on the test set; `gap` = log p(x) − ELBO; "
           + ("`test bits/dim`: the same bound as −log p(x) / (pixels · ln 2); " if bits else "")
           + "`train ex/s`: training examples per second (evaluation excluded); `wall`: mean wall time per run; "
           "`diverged/failed`: runs of that row that did not complete (not in the statistics).", ""]

    md += ["## Best learning rate per variant (chosen on validation)", "",
           to_markdown(display_best_lr_table(best_lr_table(runs), bits)).rstrip(), "",
           "For each variant, the lr with the highest mean validation ELBO over its completed seeds; "
           "the test columns are that lr's figures.", ""]

    counts = status_counts(runs)
    bad = failures(runs)
    md += ["## Failures", "", to_markdown(counts).rstrip(), ""]
    if bad.empty:
        md += ["No run diverged or failed.", ""]
    else:
        shown = bad.assign(lr=bad["lr"].map(lambda v: f"{v:g}" if pd.notna(v) else "–"),
                           seed=bad["seed"].map(lambda v: str(int(v)) if pd.notna(v) else "–"),
                           run_id=bad["run_id"].map(lambda v: f"`{v}`"))
        md += [f"{len(bad)} run(s) did not complete; they are excluded from every statistic above.", "",
               to_markdown(shown).rstrip(), ""]

    md += ["## Figures", ""]
    cost, cost_note = versus_cost_axis(versus, cost)
    figure_notes: list[str] = [cost_note] if cost_note else []
    per = "counted FLOPs per example" if cost == "flops" else "seconds per step"
    written = 0
    plots = [
        (f"Versus {reference}: Δ nats with 95% CI against relative {per}",
         lambda: plot_versus(versus, reference, fig_dir, runs, cost)),
        ("Test IW log p(x) per variant (mean ± sd over seeds; dots = seeds)", lambda: plot_log_px(runs, fig_dir)),
        ("Validation ELBO vs training step (mean over seeds, band = sd)",
         lambda: plot_learning_curves(runs, curves, fig_dir)),
        ("Training throughput per variant", lambda: plot_throughput(runs, fig_dir)),
        ("Test log p(x) vs training throughput, each variant at its best lr on validation",
         lambda: plot_tradeoff(runs, fig_dir)),
    ]
    if show_lr:
        plots.insert(1, (f"Versus {reference} at each lr: Δ test IW log p(x) with 95% CI against relative {per}",
                         lambda: plot_versus_by_lr(by_lr, reference, fig_dir, runs, cost)))
    of = f", {dataset}" if several else ""
    for caption, draw in plots:
        try:
            png = link + draw()
        except SkipFigure as why:
            figure_notes.append(f"{caption}{of}: skipped ({why}).")
            continue
        written += 1
        md += [f"### {caption}{of}", "", f"![{caption}{of}]({png}) (also `{png[:-4]}.pdf`)", ""]
    images = image_figures(runs, results, fig_dir, data_dir, download)
    for caption, png, source in images.figures:
        written += 1
        md += [f"### {caption}{of}", "", f"![{caption}{of}]({link}{png})", "", source, ""]
    figure_notes += images.notes
    if figure_notes:
        md += ["### Figures not drawn", ""] + [f"- {n}" for n in figure_notes] + [""]
    return md, (display, bold, display_versus(versus, show_lr), reference, sentence, written)


def _progress_figure(curves: pd.DataFrame, out: Path, runs: pd.DataFrame | None = None) -> list[str]:
    try:
        png = plot_reproduction_progress(curves, out, runs)
    except SkipFigure as why:
        return [f"Reproduction progress figure skipped ({why}).", ""]
    return [f"![Reproductions: validation ELBO by epoch]({png}) (also `{png[:-4]}.pdf`)", ""]


def _reproductions_report(results: Path, out: Path, reproductions: pd.DataFrame, curves: pd.DataFrame,
                          console: Console, runs: pd.DataFrame | None = None, read_notes: list[str] = ()) -> Path:
    """The report of a folder holding only reproduction runs (`runs`; None when none has finished yet): each
    against its published value and how far the unfinished ones got; no benchmark comparison."""
    out.mkdir(parents=True, exist_ok=True)
    if runs is None:
        md = ["# vaebench report", "",
              f"- Results folder: `{results}`; generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
              "- No run has finished yet: only the reproductions' progress is shown."]
        title = "reproductions in progress (no run finished yet)"
    else:
        md = _header(runs, results, benchmark_curves(curves, runs), failures_section=False)
        md += [f"- {n}" for n in read_notes] + [
            "- Only reproduction runs: each is compared with its published value, not with the others "
            "(each follows its own paper's protocol)."]
        title = "reproductions: measured vs published test log p(x), nats"
    md += [""] + reproduction_markdown(reproductions) + _progress_figure(curves, out, runs)
    if runs is not None:
        md += family_markdown(runs)  # hook: the family-by-dataset table (bench/report/families.py)
    md += [literature_markdown()]
    path = out / "report.md"
    atomic_write(path, lambda tmp: tmp.write_text("\n".join(md), encoding="utf-8"))
    _print_table(reproductions.drop(columns=["source", "protocol differences"]), None, console, title)
    console.print(f"wrote {path}", highlight=False)
    return path
