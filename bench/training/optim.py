"""Optimizers as pure functions of one run's flat parameter vector.

A run's parameters live in one flat vector `flat [N]` (module.parameters() order, see `FlatLayout` in
`bench.training.step`). An optimizer here is `init(flat) -> state` and `update(flat, grad, state, t, lr) -> (flat,
state)`, with `t` the 1-based step number and `lr` a 0-d tensor (the run's lr times `LrSchedule(t)`): no
Python scalars that differ between runs and no in-place mutation, so the same function runs alone, under
`torch.func.vmap` over a stack of runs (each with its own lr and moments), and inside one compiled graph
with the gradient.

The update rules and constants are torch.optim's defaults (Adam, Adamax, centered RMSprop, plain SGD),
written in the order torch's foreach kernels use; `tests/test_fast_path.py` holds them to torch.optim.
Over one flat tensor each elementwise pass runs once (a per-tensor optimizer dispatches every pass per
parameter tensor, which at the reference size costs about a third of the step's matmuls on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn as nn

State = tuple[torch.Tensor, ...]

BETAS = (0.9, 0.999)  # Adam, Adamax
EPS = 1e-8
RMSPROP_ALPHA = 0.99


def _adam(flat, grad, state, t, lr, eps):
    beta1, beta2 = BETAS
    exp_avg, exp_avg_sq = state
    exp_avg = torch.lerp(exp_avg, grad, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * (grad * grad)
    step_size = -(lr / (1 - beta1 ** t))
    denom = exp_avg_sq.sqrt() / (1 - beta2 ** t).sqrt() + eps
    return flat + step_size * (exp_avg / denom), (exp_avg, exp_avg_sq)


def _adamax(flat, grad, state, t, lr, eps):
    beta1, beta2 = BETAS
    exp_avg, exp_inf = state
    exp_avg = torch.lerp(exp_avg, grad, 1 - beta1)
    exp_inf = torch.maximum(exp_inf * beta2, grad.abs() + eps)
    step_size = -(lr / (1 - beta1 ** t))
    return flat + step_size * (exp_avg / exp_inf), (exp_avg, exp_inf)


def _rmsprop_centered(flat, grad, state, t, lr, eps):
    square_avg, grad_avg = state
    square_avg = square_avg * RMSPROP_ALPHA + (1 - RMSPROP_ALPHA) * (grad * grad)
    grad_avg = torch.lerp(grad_avg, grad, 1 - RMSPROP_ALPHA)
    avg = (square_avg - grad_avg * grad_avg).sqrt() + eps
    return flat + (-lr) * (grad / avg), (square_avg, grad_avg)


def _sgd(flat, grad, state, t, lr, eps):
    return flat + (-lr) * grad, state


@dataclass(frozen=True)
class Optimizer:
    """`n_state` zero-initialised moment vectors shaped like the parameters, and the pure update with the
    denominator's epsilon `eps` (torch.optim's `eps`; unused by sgd)."""

    name: str
    n_state: int
    rule: Callable[..., tuple[torch.Tensor, State]] = field(repr=False)
    eps: float = EPS

    def init(self, flat: torch.Tensor) -> State:
        return tuple(torch.zeros_like(flat) for _ in range(self.n_state))

    def update(self, flat: torch.Tensor, grad: torch.Tensor, state: State, t: torch.Tensor,
               lr: torch.Tensor) -> tuple[torch.Tensor, State]:
        return self.rule(flat, grad, state, t, lr, self.eps)

    def with_eps(self, eps: float) -> "Optimizer":
        return replace(self, eps=eps)


OPTIMIZERS: dict[str, Optimizer] = {
    o.name: o for o in (Optimizer("adam", 2, _adam), Optimizer("adamax", 2, _adamax),
                        Optimizer("rmsprop-centered", 2, _rmsprop_centered), Optimizer("sgd", 0, _sgd))
}


def clip_gradient(grad: torch.Tensor, max_norm: torch.Tensor) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ over one run's gradient [N]; max_norm <= 0 leaves it unchanged.

    Per run: under vmap every run's gradient is scaled by its own norm, never by a norm over the stack.
    """
    coef = torch.clamp(max_norm / (torch.linalg.vector_norm(grad) + 1e-6), max=1.0)
    return torch.where(max_norm > 0, grad * coef, grad)


def normalize_per_tensor(grad: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Each parameter tensor's slice of one run's gradient [N] scaled to unit L2 norm, g / (|g| + 1e-7): the
    "Adam with normalized gradients" of the VampPrior code (`sizes`: the tensors' element counts, in order)."""
    return torch.cat([g / (torch.linalg.vector_norm(g) + 1e-7) for g in grad.split(sizes)])


def flatten_parameters(module: nn.Module) -> nn.Parameter:
    """Make every parameter of `module` a view into one buffer and return that buffer as a Parameter.

    Loading a run's flat vector into a module is then one `copy_` (checkpoints, images). Values are
    unchanged. Call it after moving the module to its device and dtype: a later `.to()` gives the
    parameters new storage and silently breaks the link (`is_flat` checks it).
    """
    params = list(module.parameters())
    if not params:
        raise ValueError("module has no parameters")
    if len({(p.dtype, p.device) for p in params}) != 1:
        raise ValueError("flatten_parameters needs all parameters on one device and dtype")
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset:offset + n].view_as(p)
        offset += n
    return flat


def is_flat(module: nn.Module, flat: torch.Tensor) -> bool:
    """True if every parameter of `module` still lives in `flat`, in order."""
    base, offset, size = flat.data_ptr(), 0, flat.element_size()
    for p in module.parameters():
        if p.numel() and p.data_ptr() != base + offset * size:
            return False
        offset += p.numel()
    return offset == flat.numel()


IWAE_STAGES = 8  # Burda et al. 2016: stage i = 0..7 lasts 3**i epochs at lr * 10**(-i / 7); 3280 epochs in all
IWAE_STAGE_ENDS = [sum(3 ** j for j in range(i + 1)) for i in range(IWAE_STAGES - 1)]  # epochs 1, 4, 13, ..., 1093


@dataclass(frozen=True)
class LrSchedule:
    """The factor on a run's lr at the step after `t` steps were taken, as a tensor function of t (so it
    runs inside the compiled step and resumes with t). Epochs are `steps_per_epoch` steps.

    constant: 1. step: decay ** floor(epoch / decay_epochs). exponential: decay ** (t / steps_per_epoch),
    smooth. iwae: the IWAE paper's staged decay, 10 ** (-i / 7) in stage i (3**i epochs each; the last,
    10**-1, also holds beyond epoch 3280).
    """

    kind: str = "constant"
    steps_per_epoch: int = 1
    decay: float = 1.0
    decay_epochs: int = 1

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        epoch = torch.floor(t / self.steps_per_epoch)
        if self.kind == "constant":
            return torch.ones_like(t)
        if self.kind == "step":
            return self.decay ** torch.floor(epoch / self.decay_epochs)
        if self.kind == "exponential":
            return self.decay ** (t / self.steps_per_epoch)
        if self.kind != "iwae":
            raise ValueError(f"unknown lr schedule {self.kind!r}; one of {', '.join(LR_SCHEDULES)}")
        stage = sum((epoch >= end).to(t.dtype) for end in IWAE_STAGE_ENDS)
        return torch.pow(10.0, -stage / (IWAE_STAGES - 1))


LR_SCHEDULES = ("constant", "step", "exponential", "iwae")
