"""The markdown report of `make gpu-check` (`bench.gpu_check.check`), from plain facts: pure, no torch, no I/O.

`GpuFacts` holds what the check measured: the machine, the overrides that shortened the grid, the test counts,
each phase's wall time and run table (the `runs/` rows of `vaebench run`), and the CPU-vs-CUDA differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

GRID_PHASES = ("grid-graphs-off", "grid-graphs-on")  # the whole shortened grid, --stack auto
ALONE_PHASES = ("alone-graphs-off", "alone-graphs-on")  # one run per variant, --stack 1
COMPARED = ("val_elbo", "test_elbo", "test_iw_log_px")  # figures of the tiny run compared between CPU and CUDA


@dataclass(frozen=True)
class SuiteCounts:
    passed: int
    failed: int
    errors: int
    skipped: int
    seconds: float
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Phase:
    """One `vaebench run` of the check: its command's exit code, wall time and run table (None: no rows)."""

    name: str
    returncode: int
    seconds: float
    runs: pd.DataFrame | None = None


@dataclass(frozen=True)
class GpuFacts:
    machine: dict[str, str]  # device, capability, memory, torch, CUDA, cuDNN, TF32, ...
    overrides: dict[str, tuple[object, object]]  # dotted key -> (value in configs/grid.toml, value in the check)
    tests: SuiteCounts | None = None
    phases: dict[str, Phase] = field(default_factory=dict)
    tiny_cpu: pd.DataFrame | None = None  # runs of the tiny grid on the CPU and on CUDA (same run ids)
    tiny_cuda: pd.DataFrame | None = None
    same_noise_max_abs: float = math.nan  # |log w CPU - log w CUDA|, same weights and noise (nats)
    notes: tuple[str, ...] = ()


def stacked_throughput(runs: pd.DataFrame) -> pd.Series:
    """Per variant: training examples/s of its stacks (a stack's rows sum to its throughput), mean over stacks."""
    ok = runs[runs["status"] == "completed"]
    per_stack = ok.groupby(["variant", "stack_id"])["train_examples_per_s"].sum()
    return per_stack.groupby(level="variant").mean()


def stack_sizes(runs: pd.DataFrame) -> pd.Series:
    return runs.groupby("variant")["stack_size"].max()


def largest_differences(cpu: pd.DataFrame, cuda: pd.DataFrame) -> dict[str, float]:
    """max over the runs both tables hold of |CUDA - CPU| for each compared figure (nats)."""
    a, b = cpu.set_index("run_id"), cuda.set_index("run_id")
    common = a.index.intersection(b.index)
    return {col: float((b.loc[common, col] - a.loc[common, col]).abs().max()) if len(common) else math.nan
            for col in COMPARED}


def seed_spread(runs: pd.DataFrame, column: str = "test_iw_log_px") -> float:
    """The largest max - min of `column` over the seeds of one variant: the scale a device difference is read on."""
    if "variant" not in runs or runs.empty:
        return math.nan
    spread = runs.groupby("variant")[column].agg(lambda v: v.max() - v.min())
    return float(spread.max())


def _num(x: float, digits: int = 0) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _phase_line(p: Phase) -> str:
    if p.runs is None or p.runs.empty:
        return f"| {p.name} | {p.seconds:.0f} | {p.returncode} | no rows |"
    done = int((p.runs["status"] == "completed").sum())
    compiled = int(p.runs["compiled"].sum()) if "compiled" in p.runs else 0
    graphs = int(p.runs["cuda_graphs"].sum()) if "cuda_graphs" in p.runs else 0
    errors = sorted({e for e in p.runs.get("compile_error", pd.Series(dtype=str)).fillna("") if e})
    stack_compile = p.runs.groupby("stack_id")["compile_seconds"].max().sum()
    line = (f"| {p.name} | {p.seconds:.0f} | {p.returncode} | {done}/{len(p.runs)} completed, {compiled} compiled, "
            f"{graphs} with CUDA graphs, {stack_compile:.0f} s compiling the step |")
    return line + "".join(f"\n|  |  |  | compile error: {e[:160]} |" for e in errors)


def throughput_table(phases: dict[str, Phase]) -> list[str]:
    """Per variant: ex/s alone and stacked, CUDA graphs off and on; the stacked/alone factor per setting."""
    cols: dict[str, pd.Series] = {}
    for name in ALONE_PHASES + GRID_PHASES:
        p = phases.get(name)
        if p is not None and p.runs is not None and not p.runs.empty:
            cols[name] = stacked_throughput(p.runs)
    if not cols:
        return ["(no training figures: the grid phases produced no completed runs)"]
    variants = sorted(set().union(*(c.index for c in cols.values())))
    sizes = next((stack_sizes(phases[n].runs) for n in GRID_PHASES if n in cols), pd.Series(dtype=int))
    lines = ["| variant | alone, graphs off | alone, graphs on | stacked, graphs off | stacked, graphs on | "
             "stacked / alone (off, on) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for v in variants:
        get = lambda name: float(cols[name].get(v, math.nan)) if name in cols else math.nan  # noqa: E731
        alone_off, alone_on, stack_off, stack_on = (get(n) for n in ALONE_PHASES + GRID_PHASES)
        size = f" (x{int(sizes[v])})" if v in sizes else ""
        lines.append(f"| {v}{size} | {_num(alone_off)} | {_num(alone_on)} | {_num(stack_off)} | {_num(stack_on)} | "
                     f"{_num(stack_off / alone_off, 2)}, {_num(stack_on / alone_on, 2)} |")
    return lines


def render_report(facts: GpuFacts) -> str:
    """The report's markdown text."""
    out = ["# vaebench GPU check", ""]
    out += [f"- {key}: {value}" for key, value in facts.machine.items()]
    out += ["", "## What ran", "",
            "`configs/grid.toml` shortened for the check (a derived grid file; `configs/grid.toml` is unchanged):", ""]
    out += [f"- `{key}`: {old!r} -> {new!r}" for key, (old, new) in facts.overrides.items()]
    out += [f"- {note}" for note in facts.notes]
    out += ["", "## Tests (`pytest -m cuda`)", ""]
    t = facts.tests
    if t is None:
        out.append("not run")
    else:
        out.append(f"{t.passed} passed, {t.failed} failed, {t.errors} errors, {t.skipped} skipped in {t.seconds:.0f} s")
        out += [f"- failed: `{name}`" for name in t.failures]
    out += ["", "## Phases", "", "| phase | wall s | exit | runs |", "| --- | ---: | ---: | --- |"]
    out += [_phase_line(p) for p in facts.phases.values()]
    grid_walls = [f"{n}: {facts.phases[n].seconds:.0f} s" for n in GRID_PHASES if n in facts.phases]
    out += ["", f"Grid wall time (the whole shortened grid, end to end): {', '.join(grid_walls) or 'not run'}"]
    out += ["", "## Training throughput (examples/s; a stack's figure is the sum over its runs)", ""]
    out += throughput_table(facts.phases)
    out += ["", "## CUDA vs CPU", ""]
    if facts.tiny_cpu is not None and facts.tiny_cuda is not None:
        diffs = largest_differences(facts.tiny_cpu, facts.tiny_cuda)
        out.append("The tiny grid (`configs/tiny.toml`, --stack 1) on both devices, largest |CUDA - CPU| over its "
                   "runs: " + ", ".join(f"{k} {_num(v, 3)} nats" for k, v in diffs.items()) + ". Batches and "
                   "noise are drawn on the run's device (different random streams), so these are differences of "
                   "another draw, not rounding: read them against the seeds' spread on the CPU, test_iw_log_px "
                   f"max - min over a variant's seeds = {_num(seed_spread(facts.tiny_cpu), 3)} nats.")
    else:
        out.append("The tiny grid did not run on both devices.")
    out += ["", f"Same weights and the same noise on both devices (float32): largest |log w CUDA - log w CPU| = "
                f"{_num(facts.same_noise_max_abs, 6)} nats (rounding only: more than ~1e-3 is a bug)."]
    return "\n".join(out) + "\n"
