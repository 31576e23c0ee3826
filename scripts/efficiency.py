"""The efficiency table of docs/speed.md: per family at the reference architecture (784-256-256, z = 128, batch
128, centered RMSprop, binarized MNIST), counted training FLOPs per example (`bench.training.cost`), measured
training examples/s of the stack's step (one run, best of `--rounds` timed blocks of `--steps` steps, after a
warm-up block that compiles), achieved GFLOP/s, and that as a fraction of mean-field's in the same process.

    python scripts/efficiency.py [--families mean-field,iaf,...] [--eager] [--data-dir DIR]

Time it alone: two torch processes on 2 cores distort every figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.grid.files import parse_grid
from bench.storage import ResultsLayout
from bench.training.run import RunData
from bench.training.stack import Stack
from vae_core.data import load_dataset

REFERENCE = {"hidden": [256, 256], "latent_dim": 128, "flow_hidden": 256, "prior_components": 500}
FAMILIES = {
    "mean-field": {},
    "iaf": {"posterior": "iaf"},
    "planar": {"posterior": "planar"},
    "householder": {"posterior": "householder"},
    "sylvester-orthogonal": {"posterior": "sylvester-orthogonal", "posterior_orthogonal_vectors": 16},
    "sylvester-householder": {"posterior": "sylvester-householder"},
    "sylvester-triangular": {"posterior": "sylvester-triangular"},
    "mog-prior": {"prior": "mog"},
    "flow-prior": {"prior": "flow"},
    "vamp-prior": {"prior": "vamp"},
    "nsf": {"posterior": "nsf"},
    "zuko-maf": {"posterior": "zuko-maf"},
    "nsf-prior": {"prior": "nsf"},
    "naf": {"posterior": "naf"},
    "bpf": {"posterior": "bpf"},
}


def measure(family: str, images: torch.Tensor, compiled: bool, steps: int, rounds: int) -> dict:
    """One family's row: FLOPs per example, best examples/s, whether the step really compiled."""
    cfg, = parse_grid({"name": "efficiency", "model": {**REFERENCE, **FAMILIES[family]},
                       "train": {"optimizer": "rmsprop-centered", "batch_size": 128, "compile": compiled,
                                 "check_every": 10**6}})
    data = RunData(train=images, valid=images[:1], test=images[:1], dynamic=False, digest="efficiency")
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack([cfg], data, ResultsLayout(Path(tmp)), torch.device("cpu"))
        stack.prepare()
        stack.count_costs()
        flops = stack.runs[0].cost["train_flops_per_example"]
        for _ in range(steps):  # warm-up: compilation, allocator
            stack.step()
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(steps):
                stack.step()
            best = min(best, time.perf_counter() - t0)
        ran_compiled = bool(stack.fns.step_compiled) and not stack.fns.compile_error
    ex_per_s = steps * cfg.train.batch_size / best
    return {"family": family, "flops": flops, "ex_per_s": ex_per_s, "gflop_per_s": flops * ex_per_s / 1e9,
            "compiled": ran_compiled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--eager", action="store_true", help="train.compile = false (default: the default, true)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = load_dataset("binarized-mnist", args.data_dir).train
    families = ["mean-field"] + [f for f in args.families.split(",") if f != "mean-field"]
    rows = [measure(f, images, not args.eager, args.steps, args.rounds) for f in families]
    reference = rows[0]["gflop_per_s"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, compile={not args.eager}")
    print("| family | train FLOPs per example | ex/s | GFLOP/s | fraction of mean-field's | step |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['family']} | {r['flops'] / 1e6:.2f} M | {r['ex_per_s']:,.0f} | {r['gflop_per_s']:.1f} | "
              f"{r['gflop_per_s'] / reference:.2f} | {'compiled' if r['compiled'] else 'eager'} |")


if __name__ == "__main__":
    main()
