"""`make gpu-check` (`scripts/gpu_check.py`): prove the GPU path on a CUDA machine in about ten minutes.

Phases, each a subprocess, timed (a crash in one is reported and the others still run):
1. `tests`: `pytest -m cuda` (every CUDA-parametrized and CUDA-only test).
2. `tiny-cpu`, `tiny-cuda`: `configs/tiny.toml` on each device (--stack 1): the same runs' figures compared.
3. `grid-graphs-off`, `grid-graphs-on`: `configs/grid.toml`, shortened (`GRID_OVERRIDES`, written as a derived
   grid file), end to end with `--device cuda --stack auto`, `train.cuda_graphs` false, then true.
4. `alone-graphs-off`, `alone-graphs-on`: one run per variant of the shortened grid (the first seed and lr),
   `--stack 1`: the one-at-a-time figures the stacked ones are compared with.
Then the same weights and noise on both devices (one tiny checkpoint), and `report.md` (`bench.gpu_check.report`).
Without CUDA it prints one line and exits 2 (`--dry-run` prints the plan instead, on any machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from bench.gpu_check.report import ALONE_PHASES, GRID_PHASES, GpuFacts, Phase, SuiteCounts, render_report
from bench.grid.config import defaults
from bench.grid.files import flatten

REPO = Path(__file__).resolve().parents[2]
GRID = REPO / "configs" / "grid.toml"
TINY = REPO / "configs" / "tiny.toml"
MARKER = ".gpu-check"  # marks an output folder as this check's, so a re-run may clear it
# What shortens the benchmark grid to minutes: fewer steps, one validation, a 1000-image evaluation subset.
# The model, optimizer, batch size, IW samples (k = 1000: the chunk sizing on CUDA) and stacking are the grid's.
GRID_OVERRIDES: dict[str, Any] = {"train.max_steps": 500, "train.eval_every": 500, "data.max_eval_images": 1000}


@dataclass(frozen=True)
class Step:
    """One phase: a command, the results folder it fills (None for the tests)."""

    name: str
    argv: tuple[str, ...]
    results: Path | None = None


def no_cuda_line() -> str | None:
    """None if torch sees a CUDA device, else the one line that says it does not."""
    import torch

    if torch.cuda.is_available():
        return None
    return (f"gpu-check: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False); "
            f"run it on a machine with an NVIDIA GPU")


# -- the derived grid --------------------------------------------------------------------------------------
def _get(raw: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def override(raw: Mapping[str, Any], changes: Mapping[str, Any], axes: Mapping[str, list] | None = None
             ) -> dict[str, Any]:
    """A copy of a parsed grid with `changes` (dotted `section.key` -> value) set in its tables and, if given,
    its `[grid]` axes replaced by `axes`. Variants that set a changed key keep their own value."""
    out = json.loads(json.dumps(raw))  # a deep copy of plain TOML data
    for key, value in changes.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    if axes is not None:
        out["grid"] = dict(axes)
    return out


def to_toml(raw: Mapping[str, Any]) -> str:
    """TOML text of a parsed grid: top-level values, tables of values, `[[variant]]` and `[grid]` (dotted keys)."""
    def value(v: Any) -> str:
        return json.dumps(v)  # strings, numbers, booleans and lists of them read back as TOML

    def table(d: Mapping[str, Any], prefix: str = "") -> list[str]:
        lines = []
        for k, v in d.items():
            if isinstance(v, Mapping):
                lines += table(v, f"{prefix}{k}.")
            else:
                lines.append(f"{json.dumps(prefix + k)} = {value(v)}")
        return lines

    lines = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, (Mapping, list))]
    for k, v in raw.items():
        if k == "variant":
            for variant in v:
                lines += ["", "[[variant]]", *table(variant)]
        elif isinstance(v, Mapping):
            lines += ["", f"[{k}]", *table(v)]
    return "\n".join(lines) + "\n"


def derived_grids(out: Path, steps: int | None = None) -> tuple[dict[str, Path], dict[str, tuple[Any, Any]]]:
    """Write the shortened grid (graphs off and on) and its one-run-per-variant subset into `out`;
    returns ({phase name: grid file}, {dotted key: (value in grid.toml, value in the check)})."""
    raw = tomllib.loads(GRID.read_text())
    changes = dict(GRID_OVERRIDES)
    if steps is not None:
        changes.update({"train.max_steps": steps, "train.eval_every": steps})
    first_point = {key: values[:1] for key, values in flatten(raw.get("grid", {})).items()}
    files = {}
    for name, graphs, axes in (("grid-graphs-off", False, None), ("grid-graphs-on", True, None),
                               ("alone-graphs-off", False, first_point), ("alone-graphs-on", True, first_point)):
        path = out / f"{name}.toml"
        path.write_text(to_toml(override(raw, {**changes, "train.cuda_graphs": graphs}, axes)))
        files[name] = path
    summary = {key: (_get(raw, key, defaults()[key.split(".")[0]][key.split(".", 1)[1]]), value)
               for key, value in changes.items()}
    return files, summary


# -- the plan ------------------------------------------------------------------------------------------------
def vaebench(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "bench.cli", *args)


def pytest_command(out: Path) -> tuple[str, ...]:
    """`pytest -m cuda` over the repo's tests, results as JUnit XML (pytest-benchmark's flag where it is installed)."""
    benchmark = ("--benchmark-disable",) if importlib.util.find_spec("pytest_benchmark") else ()
    return (sys.executable, "-m", "pytest", "-q", "-m", "cuda", *benchmark, "-p", "no:cacheprovider",
            f"--junitxml={out / 'tests.xml'}", str(REPO / "tests"))


def plan(out: Path, grids: Mapping[str, Path], data_dir: str | None, phases: set[str]) -> list[Step]:
    data = ("--data-dir", data_dir) if data_dir else ()
    steps = [Step("tests", pytest_command(out))]
    for device in ("cpu", "cuda"):
        results = out / f"tiny-{device}"
        steps.append(Step(f"tiny-{device}", vaebench("run", "--grid", str(TINY), "--results", str(results),
                                                     "--device", device, "--stack", "1", *data), results))
    for name in GRID_PHASES + ALONE_PHASES:
        results = out / name
        stack = "auto" if name in GRID_PHASES else "1"
        steps.append(Step(name, vaebench("run", "--grid", str(grids[name]), "--results", str(results),
                                         "--device", "cuda", "--stack", stack, *data), results))
    return [s for s in steps if s.name.split("-")[0] in phases]


def read_tests(xml: Path, seconds: float) -> SuiteCounts:
    """The counts of pytest's JUnit XML; no file (pytest missing or crashed) counts as one error."""
    if not xml.exists():
        why = "pytest wrote no report" + ("" if importlib.util.find_spec("pytest") else
                                           ": pytest is not installed (pip install -e '.[dev]')")
        return SuiteCounts(0, 0, 1, 0, seconds, (why,))
    root = ElementTree.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = lambda key: sum(int(s.get(key, 0)) for s in suites)  # noqa: E731
    failures = tuple(f"{case.get('classname')}::{case.get('name')}" for s in suites for case in s.iter("testcase")
                     if case.find("failure") is not None or case.find("error") is not None)
    tests, failed, errors, skipped = total("tests"), total("failures"), total("errors"), total("skipped")
    return SuiteCounts(tests - failed - errors - skipped, failed, errors, skipped, seconds, failures)


def read_runs(results: Path | None) -> pd.DataFrame | None:
    folder = results / "runs" if results else None
    if folder is None or not folder.is_dir() or not any(folder.glob("*.parquet")):
        return None
    return pd.read_parquet(folder)


# -- measuring ------------------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    import torch

    info = {"torch": torch.__version__, "CUDA (torch build)": str(torch.version.cuda),
            "cuDNN": str(torch.backends.cudnn.version()), "python": sys.version.split()[0],
            "TF32 matmuls": str(torch.backends.cuda.matmul.allow_tf32)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info = {"device": props.name, "compute capability": f"{props.major}.{props.minor}",
                "memory": f"{props.total_memory / 2**30:.0f} GiB", "GPUs visible": str(torch.cuda.device_count()),
                **info}
    return info


def same_noise_max_abs(tiny_cuda: Path, data_dir: str | None, images: int = 256, k: int = 16) -> float:
    """The first tiny run's checkpoint on the CPU and on CUDA, the same test images and the same noise
    (drawn on the CPU): max |log w CUDA - log w CPU| over [k, B] log-weights, float32 (rounding only)."""
    import torch

    from bench.grid.files import load_grid
    from vae_core import load_vae
    from vae_core.data import load_dataset

    cfg = load_grid(TINY)[0]
    checkpoint = tiny_cuda / "checkpoints" / f"{cfg.run_id}.pt"
    if not checkpoint.exists():
        return math.nan
    x = load_dataset(cfg.data.dataset, data_dir).test[:images]  # [B, P]
    eps = torch.randn((k, x.shape[0], cfg.model.noise_dim), generator=torch.Generator(device="cpu").manual_seed(0),
                      device="cpu")  # [k, B, D]
    weights = []
    with torch.no_grad():
        for device in ("cpu", "cuda"):
            model, xd = load_vae(checkpoint, device), x.to(device)
            weights.append(model.log_weight(xd, *model.encoder(xd), eps.to(device)).cpu())  # [k, B]
    return float((weights[1] - weights[0]).abs().max())


def run_step(step: Step, log: Path, data_dir: str | None) -> tuple[int, float]:
    """Run one phase's command, its output to `log` and a line to stdout; (exit code, wall seconds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if data_dir:
        env["VAEBENCH_DATA"] = data_dir  # the tests that need the real datasets find them
    print(f"gpu-check: {step.name} ...", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.run(step.argv, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    print(f"gpu-check: {step.name} exit {code} in {seconds:.0f} s (log: {log})", flush=True)
    return code, seconds


def prepare_out(out: Path) -> None:
    """An empty output folder: a previous check's is cleared, anything else is refused (UserError)."""
    from bench.errors import UserError

    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise UserError(f"{out} exists and is not a gpu-check folder; pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by scripts/gpu_check.py; cleared by the next check\n")


PHASE_GROUPS = ("tests", "tiny", "grid", "alone")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-check"), help="output folder (report.md, logs, results)")
    ap.add_argument("--data-dir", default=os.environ.get("VAEBENCH_DATA") or None,
                    help="datasets folder (default $VAEBENCH_DATA, else the cache; missing data is downloaded)")
    ap.add_argument("--steps", type=int, default=None,
                    help=f"training steps per grid run (default {GRID_OVERRIDES['train.max_steps']})")
    ap.add_argument("--only", default=",".join(PHASE_GROUPS), help="phases to run, comma-separated: "
                    + ", ".join(PHASE_GROUPS))
    ap.add_argument("--dry-run", action="store_true", help="print the plan (commands, overrides) and exit")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bench.errors import UserError

    args = parse_args(argv)
    phases = set(args.only.split(","))
    unknown = phases - set(PHASE_GROUPS)
    if unknown or (args.steps is not None and args.steps < 1):
        print(f"gpu-check: --only takes {', '.join(PHASE_GROUPS)}; --steps >= 1", file=sys.stderr)
        return 2
    missing = no_cuda_line()
    if missing and not args.dry_run:
        print(missing, file=sys.stderr)
        return 2
    out = args.out.resolve()
    try:
        prepare_out(out)
    except UserError as err:
        print(f"gpu-check: {err}", file=sys.stderr)
        return 2
    grids, overrides = derived_grids(out, args.steps)
    steps = plan(out, grids, args.data_dir, phases)
    if args.dry_run:
        print(f"gpu-check plan ({'no CUDA device here' if missing else 'CUDA present'}):")
        for key, (old, new) in overrides.items():
            print(f"  override {key}: {old!r} -> {new!r}")
        for step in steps:
            print(f"  {step.name}: {' '.join(step.argv)}")
        return 0
    results: dict[str, Phase] = {}
    tests = None
    started = time.perf_counter()
    for step in steps:
        code, seconds = run_step(step, out / f"{step.name}.log", args.data_dir)
        if step.name == "tests":
            tests = read_tests(out / "tests.xml", seconds)
        else:
            results[step.name] = Phase(step.name, code, seconds, read_runs(step.results))
    tiny = {d: results.get(f"tiny-{d}") for d in ("cpu", "cuda")}
    same_noise = same_noise_max_abs(out / "tiny-cuda", args.data_dir) if tiny["cuda"] is not None else math.nan
    facts = GpuFacts(
        machine=machine(), overrides=overrides, tests=tests,
        phases=results,
        tiny_cpu=tiny["cpu"].runs if tiny["cpu"] else None, tiny_cuda=tiny["cuda"].runs if tiny["cuda"] else None,
        same_noise_max_abs=same_noise,
        notes=(f"derived grid files: {', '.join(str(p.relative_to(out)) for p in grids.values())} in {out}",
               "alone phases: one run per variant (the first value of each [grid] axis), --stack 1",
               f"the whole check took {time.perf_counter() - started:.0f} s"))
    (out / "report.md").write_text(render_report(facts))
    print(f"gpu-check: report written to {out / 'report.md'}")
    failed = (tests is not None and (tests.failed or tests.errors)) or any(p.returncode for p in results.values())
    return 1 if failed else 0
