"""Optimizers as pure functions of one run's flat parameter vector.

A run's parameters live in one flat vector `flat [N]` (module.parameters() order, see `FlatLayout` in
`bench.step`). An optimizer here is `init(flat) -> state` and `update(flat, grad, state, t, lr) -> (flat,
state)`, with `t` the 1-based step number and `lr` a 0-d tensor: no Python scalars that differ between
runs and no in-place mutation, so the same function runs alone, under `torch.func.vmap` over a stack of
runs (each with its own lr and moments), and inside one compiled graph with the gradient.

The update rules and constants are torch.optim's defaults (Adam, Adamax, centered RMSprop, plain SGD),
written in the order torch's foreach kernels use; `tests/test_optim.py` holds them to torch.optim.
Over one flat tensor each elementwise pass runs once (a per-tensor optimizer dispatches every pass per
parameter tensor, which at the reference size costs about a third of the step's matmuls on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

State = tuple[torch.Tensor, ...]

BETAS = (0.9, 0.999)  # Adam, Adamax
EPS = 1e-8
RMSPROP_ALPHA = 0.99


def _adam(flat, grad, state, t, lr):
    beta1, beta2 = BETAS
    exp_avg, exp_avg_sq = state
    exp_avg = torch.lerp(exp_avg, grad, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * (grad * grad)
    step_size = -(lr / (1 - beta1 ** t))
    denom = exp_avg_sq.sqrt() / (1 - beta2 ** t).sqrt() + EPS
    return flat + step_size * (exp_avg / denom), (exp_avg, exp_avg_sq)


def _adamax(flat, grad, state, t, lr):
    beta1, beta2 = BETAS
    exp_avg, exp_inf = state
    exp_avg = torch.lerp(exp_avg, grad, 1 - beta1)
    exp_inf = torch.maximum(exp_inf * beta2, grad.abs() + EPS)
    step_size = -(lr / (1 - beta1 ** t))
    return flat + step_size * (exp_avg / exp_inf), (exp_avg, exp_inf)


def _rmsprop_centered(flat, grad, state, t, lr):
    square_avg, grad_avg = state
    square_avg = square_avg * RMSPROP_ALPHA + (1 - RMSPROP_ALPHA) * (grad * grad)
    grad_avg = torch.lerp(grad_avg, grad, 1 - RMSPROP_ALPHA)
    avg = (square_avg - grad_avg * grad_avg).sqrt() + EPS
    return flat + (-lr) * (grad / avg), (square_avg, grad_avg)


def _sgd(flat, grad, state, t, lr):
    return flat + (-lr) * grad, state


@dataclass(frozen=True)
class Optimizer:
    """`n_state` zero-initialised moment vectors shaped like the parameters, and the pure update."""

    name: str
    n_state: int
    update: Callable[[torch.Tensor, torch.Tensor, State, torch.Tensor, torch.Tensor],
                     tuple[torch.Tensor, State]]

    def init(self, flat: torch.Tensor) -> State:
        return tuple(torch.zeros_like(flat) for _ in range(self.n_state))


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
