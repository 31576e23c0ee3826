"""Where a stack's training step spends its time, stacked against alone: torch.profiler over the compiled step of
R runs as one stack and of one run, the same architecture, batch 128, on binarized-MNIST-sized random data.

    python scripts/profile_stack_step.py --family iaf --arch quick --runs 9
    python scripts/profile_stack_step.py --family mean-field --arch reference --runs 9

Prints ms per step (R runs stacked vs one run, so the stacked step is compared with R single steps) and the top
operators by self CPU time of each. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grid.files import parse_grid  # noqa: E402
from bench.storage import ResultsLayout  # noqa: E402
from bench.training.run import RunData  # noqa: E402
from bench.training.stack import Stack  # noqa: E402

ARCHS = {"quick": ({"hidden": [256], "latent_dim": 32}, "adam"),
         "reference": ({"hidden": [256, 256], "latent_dim": 128}, "rmsprop-centered")}
FAMILIES = {"mean-field": {}, "iaf": {"posterior": "iaf", "posterior_flow_steps": 2}}


def stack_of(family: str, arch: str, runs: int, folder: Path) -> Stack:
    model, optimizer = ARCHS[arch]
    cfgs = parse_grid({"name": "p", "model": {**model, **FAMILIES[family]},
                       "train": {"optimizer": optimizer, "batch_size": 128, "max_steps": 10**6, "compile": True},
                       "grid": {"train.seed": list(range(runs))}})
    g = torch.Generator().manual_seed(0)
    bits = lambda n: (torch.rand(n, 784, generator=g) < 0.13).float()  # noqa: E731
    data = RunData(train=bits(10_000), valid=bits(100), test=bits(100), dynamic=False, digest="random")
    stack = Stack(cfgs, data, ResultsLayout(folder), torch.device("cpu"))
    stack.prepare()
    return stack


def measure(stack: Stack, steps: int, top: int) -> tuple[float, str]:
    for _ in range(10):  # compile and warm
        stack.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        stack.step()
    ms = (time.perf_counter() - t0) / steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            stack.step()
    return ms, prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="iaf", choices=list(FAMILIES))
    p.add_argument("--arch", default="quick", choices=list(ARCHS))
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="profile-step-"))
    alone_ms, alone_table = measure(stack_of(args.family, args.arch, 1, folder / "alone"), args.steps, args.top)
    stacked_ms, stacked_table = measure(stack_of(args.family, args.arch, args.runs, folder / "stacked"), args.steps,
                                        args.top)
    print(f"{args.family} {args.arch}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"one run: {alone_ms:.2f} ms/step; {args.runs} stacked: {stacked_ms:.2f} ms/step = "
          f"{stacked_ms / args.runs:.2f} ms per run-step; stacked / alone speed: {args.runs * alone_ms / stacked_ms:.2f}x")
    print("\none run, top operators by self CPU time:\n" + alone_table)
    print(f"\n{args.runs} runs stacked, top operators by self CPU time:\n" + stacked_table)


if __name__ == "__main__":
    main()
