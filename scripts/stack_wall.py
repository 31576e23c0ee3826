"""Stacked vs one at a time, measured from outside: the wall time of a short and a long grid (Δwall, fixed costs
cancel) against what the rows say (their training seconds), and where a stack's time goes.

    python scripts/stack_wall.py --family iaf --arch quick          # 9 runs (3 seeds x 3 lrs), 200 vs 1000 steps
    python scripts/stack_wall.py --family mean-field --arch reference --stack 1 --stack 9

Each (stack size, steps) grid runs once to warm the compile caches, then is timed in a fresh results folder;
validation runs only at the last step (eval_every = max_steps) and the test set is small, so Δwall is training.
The phase spans wrap the stack's methods (batch gathering, noise, the step function, host checks, validation,
test, everything else in the loop); nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.runner import run_grid_command  # noqa: E402
from bench.storage import read_table  # noqa: E402
from bench.training import stack as stack_module  # noqa: E402

ARCHS = {"quick": ("hidden = [256]\nlatent_dim = 32", "adam"),
         "reference": ("hidden = [256, 256]\nlatent_dim = 128", "rmsprop-centered")}
FAMILIES = {"mean-field": "", "iaf": 'posterior = "iaf"\nposterior_flow_steps = 2'}


def grid_text(family: str, arch: str, steps: int) -> str:
    model, optimizer = ARCHS[arch]
    return f"""name = "wall"
[model]
architecture = "mlp"
{model}
{FAMILIES[family]}
[train]
compile = true
optimizer = "{optimizer}"
batch_size = 128
max_steps = {steps}
eval_every = {steps}
[data]
dataset = "binarized-mnist"
max_eval_images = 256
[eval]
iw_samples = 10
valid_iw_samples = 2
[grid]
"train.seed" = [0, 1, 2]
"train.lr" = [3e-4, 1e-3, 3e-3]
"""


SPANS = defaultdict(float)


def timed(fn, label: str):
    """fn, adding its wall seconds to SPANS[label] at every call."""
    def call(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPANS[label] += time.perf_counter() - t0

    return call


@contextlib.contextmanager
def spans():
    """Time the stack's phases: each wrapped method adds its wall seconds to SPANS[name]."""
    patches = []

    def wrap(owner, name, label):
        original = getattr(owner, name)
        setattr(owner, name, timed(original, label))
        patches.append((owner, name, original))

    S = stack_module.Stack
    wrap(S, "step", "step (all)")
    wrap(S, "_check", "host check")
    wrap(S, "_validate", "validation")
    wrap(S, "test", "test")
    wrap(S, "count_costs", "FLOP count")
    wrap(stack_module.Run, "next_indices", "step: batch indices")
    wrap(stack_module.Run, "next_batch", "step: batch (dynamic)")
    wrap(stack_module, "standard_normal", "step: noise")
    original_init = stack_module.StackFunctions.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.train_step = timed(self.train_step, "step: step function")

    stack_module.StackFunctions.__init__ = init
    patches.append((stack_module.StackFunctions, "__init__", original_init))
    try:
        yield
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)


def run_once(grid: Path, results: Path, data_dir: Path | None, stack: str) -> float:
    t0 = time.perf_counter()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        code = run_grid_command(grid, results, data_dir, "cpu", 1, False, stack)
    if code:
        raise SystemExit(f"grid {grid} failed (exit {code}), see {results}")
    return time.perf_counter() - t0


def train_seconds(results: Path) -> tuple[float, int]:
    """(The grid's training seconds by its rows: per stack, the stack's (shared by its rows), summed; the training
    examples its runs took: a run that stopped early (diverged, patience) took fewer than max_steps)."""
    rows = read_table(results / "runs")
    return (float(rows.groupby("stack_id")["train_seconds"].max().sum()),
            int((rows["steps_done"] * rows["batch_size"]).sum()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="iaf", choices=list(FAMILIES))
    p.add_argument("--arch", default="quick", choices=list(ARCHS))
    p.add_argument("--stack", action="append", help="stack sizes to compare (default: 1 and 9)")
    p.add_argument("--short", type=int, default=200)
    p.add_argument("--long", type=int, default=1000)
    p.add_argument("--data-dir", type=Path, default=None)
    args = p.parse_args()
    sizes = args.stack or ["1", "9"]
    tmp = Path(tempfile.mkdtemp(prefix="stack-wall-"))
    grids = {}
    for steps in (args.short, args.long):
        grids[steps] = tmp / f"g{steps}.toml"
        grids[steps].write_text(grid_text(args.family, args.arch, steps))
    nominal = 9 * (args.long - args.short) * 128
    print(f"{args.family} {args.arch}: 9 runs, {args.short} vs {args.long} steps, batch 128")
    print("| stack | Δwall s | wall ex/s | Δ rows' train s | rows' ex/s | wall / rows |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    breakdown = {}
    for size in sizes:
        run_once(grids[args.short], tmp / f"warm-{size}", args.data_dir, size)  # compile caches
        walls, trains, took = {}, {}, {}
        for steps in (args.short, args.long):
            SPANS.clear()
            results = tmp / f"r-{size}-{steps}"
            with spans():
                walls[steps] = run_once(grids[steps], results, args.data_dir, size)
            trains[steps], took[steps] = train_seconds(results)
            breakdown[(size, steps)] = dict(SPANS, wall=walls[steps])
        d_wall, d_train = walls[args.long] - walls[args.short], trains[args.long] - trains[args.short]
        examples = took[args.long] - took[args.short]
        if examples != nominal:
            print(f"(stack {size}: runs stopped early: {examples:,} examples instead of {nominal:,})")
        print(f"| {size} | {d_wall:.1f} | {examples / d_wall:,.0f} | {d_train:.1f} | {examples / d_train:,.0f} | "
              f"{d_wall / d_train:.2f} |", flush=True)
    print("\nphase seconds, long grid minus short grid (per 9 x", args.long - args.short, "steps):")
    labels = sorted({k for b in breakdown.values() for k in b})
    print("| phase | " + " | ".join(f"stack {s}" for s in sizes) + " |")
    print("| --- | " + " | ".join("---:" for _ in sizes) + " |")
    for label in labels:
        cells = [breakdown[(s, args.long)].get(label, 0.0) - breakdown[(s, args.short)].get(label, 0.0)
                 for s in sizes]
        print(f"| {label} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
