"""Counted cost of a run: FLOPs per training example and per importance sample, from one real step.

A shared machine distorts seconds; counted operations it cannot. Each run's cost is counted once, on its own
initial weights, by running its training step and its IW log-weight eagerly (the same functions the stack
trains and evaluates with, alone: R = 1) under torch's FLOP formulas (those of
`torch.utils.flop_counter.FlopCounterMode`, see `OpCounter`):

- `train_flops_per_example`: the step's matrix products and convolutions (forward, backward and the
  optimizer's update), 2 FLOPs per multiply-add, / batch_size;
- `iw_flops_per_sample`: what one more importance sample costs per test image (the posterior's sample and
  log q, the prior, the decoder and the likelihood; the encoder runs once per image and is not in it):
  (count at k = 2 - count at k = 1) / B;
- `train_elementwise_per_example`, `iw_elementwise_per_sample`: the same for the element-wise operations
  (`torch.Tag.pointwise`) and reductions the FLOP counter leaves out, one per output element (reductions:
  per input element), whatever the operation (an `exp` counts as an `add`).

The FLOP counter counts `mm`, `addmm`, `bmm`, `baddbmm` and convolutions (the full list:
`torch.utils.flop_counter.flop_registry`); nothing in vaebench's families calls a matrix routine outside it
(no triangular solve, decomposition or determinant on the training path). The counts depend on shapes only
(O-SNF's orthogonalisation runs a fixed number of updates); they are the same on every machine.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

COST_COLUMNS = ("train_flops_per_example", "train_elementwise_per_example", "iw_flops_per_sample",
                "iw_elementwise_per_sample")
COST_SEED = 0  # the counting step's noise: the counts do not depend on it (shapes only)

REDUCTIONS = {"sum", "mean", "amax", "amin", "max", "min", "logsumexp", "prod", "norm", "linalg_vector_norm",
              "std", "var", "any", "all", "argmax", "argmin", "cumsum"}


COPIES = {"clone", "copy_", "copy", "_to_copy", "lift_fresh", "detach", "alias"}  # tagged pointwise, no arithmetic


class OpCounter(TorchDispatchMode):
    """Counts every aten call made under it: FLOPs of the operations torch's FLOP counter knows, with its own
    formulas (`torch.utils.flop_counter.flop_registry`, what `FlopCounterMode` sums; used directly, without
    `FlopCounterMode`'s module hooks, which zuko's NAF and BPF, calling `torch.autograd.grad` in their
    forward, do not allow), and element-wise operations: one per output element of a pointwise op, one per
    input element of a reduction. Views, copies and factory functions are free."""

    def __init__(self):
        super().__init__()
        self.flops = self.elementwise = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        name = packet.__name__
        if packet in flop_registry:
            self.flops += flop_registry[packet](*args, **kwargs, out_val=out)
        elif torch.Tag.pointwise in func.tags and name not in COPIES:
            self.elementwise += sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        elif name in REDUCTIONS and args and isinstance(args[0], torch.Tensor):
            self.elementwise += args[0].numel()
        return out


def counted(fn: Callable, *args) -> tuple[int, int]:
    """(FLOPs of matrix products and convolutions, element-wise operations) of one call `fn(*args)`."""
    with OpCounter() as counter:
        fn(*args)
    return counter.flops, counter.elementwise


def step_cost(train_step: Callable, log_weight: Callable, encode: Callable, args: tuple, x: torch.Tensor,
              noise_dim: int) -> dict[str, float]:
    """The cost columns of one run. `args` are the stack's train-step arguments for that run alone (R = 1:
    flat, state, t, batch [1, B, P], eps [1, k, B, D], lr, warmup, clip, active); x [B', P] test-like images.
    The functions are the stack's eager ones; their inputs are not modified."""
    batch = args[3].shape[1]
    train_flops, train_elementwise = counted(train_step, *args)
    flat = args[0]
    g = torch.Generator(device=x.device).manual_seed(COST_SEED)
    with torch.no_grad():
        loc, scale, context = encode(flat, x)

        def weights(k: int) -> tuple[int, int]:
            eps = torch.randn(1, k, x.shape[0], noise_dim, generator=g, device=x.device, dtype=x.dtype)
            return counted(log_weight, flat, x, loc, scale, context, eps)

        (one_f, one_e), (two_f, two_e) = weights(1), weights(2)
    n = x.shape[0]
    return {"train_flops_per_example": train_flops / batch, "train_elementwise_per_example": train_elementwise / batch,
            "iw_flops_per_sample": (two_f - one_f) / n, "iw_elementwise_per_sample": (two_e - one_e) / n}
