"""Optimizers over one contiguous parameter buffer.

At the reference size (~630k parameters in 12 tensors) a per-tensor (even `foreach`) optimizer step on the
CPU costs about as much as a third of the step's matmuls: each of its ~6 elementwise passes is dispatched
per tensor and allocates. `flatten_parameters` re-homes a module's parameters and their gradients into
two flat buffers, so the optimizer runs each pass once over one tensor (≈4x cheaper here), and gradients
accumulate in place into a buffer that is zeroed, never reallocated.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def flatten_parameters(module: nn.Module) -> nn.Parameter:
    """Make every parameter of `module` a view into one buffer and return that buffer as a Parameter.

    The returned Parameter's `.grad` is a zeroed buffer of which every parameter's `.grad` is a view, so
    `loss.backward()` accumulates into it and an optimizer over `[flat]` updates the module in place.
    Values are unchanged. Call it after moving the module to its device and dtype: a later `.to()` gives
    the parameters new storage and silently breaks the link (`is_flat` checks it).
    """
    params = list(module.parameters())
    if not params:
        raise ValueError("module has no parameters")
    if len({(p.dtype, p.device) for p in params}) != 1:
        raise ValueError("flatten_parameters needs all parameters on one device and dtype")
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset:offset + n].view_as(p)
        p.grad = flat.grad[offset:offset + n].view_as(p)
        offset += n
    return flat


def is_flat(module: nn.Module, flat: torch.Tensor) -> bool:
    """True if every parameter (and gradient) of `module` still lives in `flat` (and `flat.grad`)."""
    if flat.grad is None:
        return False
    base, grad_base = flat.data_ptr(), flat.grad.data_ptr()
    offset, size = 0, flat.element_size()
    for p in module.parameters():
        if p.numel() and (p.data_ptr() != base + offset * size or p.grad is None
                          or p.grad.data_ptr() != grad_base + offset * size):
            return False
        offset += p.numel()
    return offset == flat.numel()


OPTIMIZERS = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr, foreach=True),
    "adamax": lambda params, lr: torch.optim.Adamax(params, lr=lr, foreach=True),
    "rmsprop-centered": lambda params, lr: torch.optim.RMSprop(params, lr=lr, centered=True, foreach=True),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, foreach=True),
}


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """One of `OPTIMIZERS` over `params` (pass `[flatten_parameters(model)]` for the fast path)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}")
    return OPTIMIZERS[name](params, lr)
