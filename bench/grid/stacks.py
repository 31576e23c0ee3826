"""Which runs train together: runs whose resolved configs differ only in per-run keys form a group, and a
group is cut into stacks of at most the chosen size (`vaebench run --stack auto|N`).

Per-run keys (each run of a stack keeps its own value): `train.seed`, `train.lr`, `train.kl_warmup_steps`,
`train.grad_clip`, `train.patience` (and `train.kl_warmup_epochs`, `train.patience_epochs`, which set them).
Everything else (architecture, families, optimizer, batch size, steps, objective, lr schedule, evaluation
protocol, data, compile) must be equal. A family that does not run under torch.func (vmap, grad) never
shares a stack, whatever `--stack` says: its runs train alone, and `--dry-run` says why.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch

from bench.errors import UserError
from bench.grid.config import RunConfig
from vae_core.probes import clip, functorch_problem

PER_RUN_KEYS = ("train.seed", "train.lr", "train.kl_warmup_steps", "train.grad_clip", "train.patience",
                "train.kl_warmup_epochs", "train.patience_epochs",  # the epoch keys resolve to the step keys
                "train.patience_after_warmup")

# `--stack auto` on the CPU: stack only where stacking was measured to pay >= 1.3x by the wall clock
# (scripts/stack_wall.py: 9 runs, Δwall of a 1000- and a 200-step grid, compile caches warmed, 2-core CPU):
# autoregressive flows at the quick width (IAF posterior at 784-256 z32, ~0.45M parameters per run: 1.36x; step
# only 1.38-1.42x, MAF prior 1.19x step only); mean-field at the reference width gains 1.17x (0.96x step only) and
# every other family at either width gains less or loses (step only 0.43-0.98x).
CPU_AUTO_MAX_PARAMS = 500_000
CPU_AUTO_SIZE = 9
CUDA_AUTO_SIZE = 64  # one run is launch-bound on a GPU: stack a whole group (memory permitting)


@dataclass(frozen=True)
class StackPlan:
    """One stack: its runs (one or more) and why it has this size."""

    configs: tuple[RunConfig, ...]
    reason: str

    @property
    def stack_id(self) -> str:
        """The run id for a stack of one; else grid-variant-xR-hash of the member run ids."""
        if len(self.configs) == 1:
            return self.configs[0].run_id
        first = self.configs[0]
        digest = hashlib.sha256(",".join(c.run_id for c in self.configs).encode()).hexdigest()[:8]
        return f"{first.grid}-{first.variant}-x{len(self.configs)}-{digest}"


def stack_key(cfg: RunConfig) -> str:
    """Equal for configs that may share a stack: the resolved config without the per-run keys."""
    shared = {k: v for k, v in cfg.flat().items() if k not in PER_RUN_KEYS}
    return json.dumps(shared, sort_keys=True, default=str)


def parse_stack(value: str) -> int | None:
    """`--stack`: 'auto' -> None, else a whole number >= 1."""
    if value == "auto":
        return None
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise UserError(f"--stack must be 'auto' or a whole number >= 1; got {value!r}")
    return size


def auto_size(cfg: RunConfig, n_params: int, device: str) -> tuple[int, str]:
    """The stack size `--stack auto` picks for a group, and why."""
    if device == "cuda":
        return CUDA_AUTO_SIZE, "auto: GPU, one run is launch-bound"
    flow = cfg.model.posterior == "iaf" or cfg.model.prior == "flow"
    if flow and n_params <= CPU_AUTO_MAX_PARAMS:
        return CPU_AUTO_SIZE, (f"auto: CPU, autoregressive flow, {n_params:,} parameters per run: stacked measured "
                               "1.36x by the wall clock (docs/speed.md)")
    return 1, (f"auto: CPU, {n_params:,} parameters per run: stacking measured under the 1.3x that pays "
               "(docs/speed.md; --stack N forces it)")


def plan_stacks(runs: list[RunConfig], size: int | None, device: str) -> list[StackPlan]:
    """Group stackable runs (grid order kept) and cut each group into near-equal stacks of <= size runs
    (size None: `auto_size` per group)."""
    groups: dict[str, list[RunConfig]] = {}
    for cfg in runs:
        groups.setdefault(stack_key(cfg), []).append(cfg)
    plans = []
    for members in groups.values():
        problem = stack_problem(members[0])
        if problem and (size is None or size > 1):
            limit, reason = 1, f"alone: the family does not run under torch.func ({clip(problem, 90)})"
        elif size is None:
            limit, reason = auto_size(members[0], parameter_count(members[0]), device)
        else:
            limit, reason = size, f"--stack {size}"
        n_stacks = math.ceil(len(members) / limit)
        base, extra = divmod(len(members), n_stacks)
        start = 0
        for i in range(n_stacks):
            end = start + base + (i < extra)
            plans.append(StackPlan(tuple(members[start:end]), reason))
            start = end
    return plans


def stack_problem(cfg: RunConfig) -> str:
    """'' if runs of this model can share a stack, else why not (`vae_core.probes.functorch_problem`)."""
    return functorch_problem(cfg.model)


def parameter_count(cfg: RunConfig) -> int:
    """Parameters of one run's model, built on the meta device (no memory, no draws from the global RNG), or on
    the CPU with the random state restored where a family's constructor has no meta kernel (zuko's masks)."""
    from vae_core import ConfigError, build_vae

    try:
        with torch.device("meta"):
            return sum(p.numel() for p in build_vae(cfg.model).parameters())
    except ConfigError:  # the registry's one line for the constructor's NotImplementedError; a real one recurs
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            return sum(p.numel() for p in build_vae(cfg.model).parameters())
