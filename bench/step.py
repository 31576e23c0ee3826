"""One training step, and the functions of a run that may be compiled.

`train_step` is a plain function of (model, optimizer, batch, generator): the unit a later stacked
(torch.func) or remote executor reuses. Its gradient comes from one of two interchangeable functions:

- `autograd_gradients`: the ELBO, then `loss.backward()` into the parameters' `.grad` (any optimizer);
- `functional_gradients`: `torch.func.grad` of the same loss as a pure function of the flat parameter
  vector (`bench.optim.flatten_parameters`). Compiled, forward, backward and the loss reduction become
  one graph: no autograd-engine bookkeeping, no gradient zeroing or accumulation per tensor.

The noise is drawn by `train_step`, outside both, so eager and compiled steps consume the generator alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import functional_call, grad

from bench.optim import is_flat
from vae_core import VAE
from vae_core.vae import LogWeightFn

GradientFn = Callable[[VAE, torch.optim.Optimizer, torch.Tensor, torch.Tensor, torch.Tensor],
                      tuple[torch.Tensor, torch.Tensor]]


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def autograd_gradients(model: VAE, optimizer: torch.optim.Optimizer, batch: torch.Tensor, eps: torch.Tensor,
                       beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the `.grad` of the optimizer's parameters; returns the batch sums (reconstruction, kl)."""
    reconstruction, kl = model(batch, eps)  # [B], [B]
    loss = -(reconstruction - beta * kl).mean()
    optimizer.zero_grad(set_to_none=False)  # in place: gradients may live in a flat buffer (bench.optim)
    loss.backward()
    return reconstruction.detach().sum(), kl.detach().sum()


def functional_gradients(model: VAE, flat: torch.Tensor, batch: torch.Tensor, eps: torch.Tensor,
                         beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d loss / d flat [N], reconstruction sum, kl sum) with `model`'s parameters read from `flat` [N],
    laid out as `flatten_parameters` lays them out (module.parameters() order)."""
    names, shapes = zip(*((name, p.shape) for name, p in model.named_parameters()))

    def loss(values: torch.Tensor):
        params = {n: v.view(s) for n, v, s in zip(names, values.split([s.numel() for s in shapes]), shapes)}
        reconstruction, kl = functional_call(model, params, (batch, eps))  # [B], [B]
        return -(reconstruction - beta * kl).mean(), (reconstruction.detach().sum(), kl.detach().sum())

    gradient, (rec, kl) = grad(loss, has_aux=True)(flat)
    return gradient, rec, kl


def compiled_gradients() -> GradientFn:
    """`functional_gradients` compiled, behind the `autograd_gradients` signature (flat optimizer only)."""
    compiled = torch.compile(functional_gradients, dynamic=False)
    checked: set[tuple[int, int]] = set()  # (model, flat) pairs already seen linked

    def gradients(model, optimizer, batch, eps, beta):
        params = optimizer_params(optimizer)
        flat = params[0]
        if (id(model), id(flat)) not in checked:
            if len(params) != 1 or not is_flat(model, flat):
                raise ValueError("compiled training needs an optimizer over [flatten_parameters(model)]")
            checked.add((id(model), id(flat)))
        gradient, rec, kl = compiled(model, flat.detach(), batch, eps, beta)
        flat.grad.copy_(gradient)  # keeps every parameter's .grad a view of flat.grad
        return rec, kl

    return gradients


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    optimizer.step()


@dataclass(frozen=True)
class RunFunctions:
    """The pieces of a run worth compiling: the gradient, the optimizer update and one IW chunk's
    log-weights. `EAGER` runs them as written; `compile()` compiles each."""

    gradients: GradientFn
    optimizer_step: Callable[[torch.optim.Optimizer], object]
    log_weight: LogWeightFn
    compiled: bool

    @staticmethod
    def compile() -> "RunFunctions":
        return RunFunctions(compiled_gradients(), torch.compile(optimizer_step, dynamic=False),
                            torch.compile(VAE.log_weight, dynamic=False), compiled=True)


EAGER = RunFunctions(autograd_gradients, optimizer_step, VAE.log_weight, compiled=False)


def train_step(model: VAE, optimizer: torch.optim.Optimizer, batch: torch.Tensor, generator: torch.Generator,
               beta: float = 1.0, grad_clip: float = 0.0, fns: RunFunctions = EAGER
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on -(reconstruction - beta * kl), averaged over the batch.

    Returns the batch sums (reconstruction, kl), detached, left on the device.
    """
    eps = model.noise(1, batch, generator)  # [1, B, D]
    beta_t = batch.new_full((), beta)  # a tensor, so a changing KL weight never triggers a recompile
    reconstruction, kl = fns.gradients(model, optimizer, batch, eps, beta_t)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(optimizer_params(optimizer), grad_clip, foreach=True)
    fns.optimizer_step(optimizer)
    return reconstruction, kl
