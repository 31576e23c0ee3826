"""One training step and the evaluation pieces, as pure functions of one run's tensors, and their stacked form.

A run is its flat parameter vector `flat [N]` (laid out by `FlatLayout`), its optimizer state and its
step count `t`. `train_step` maps those, a batch and the run's noise to the next ones: the gradient of
minus the training bound (the ELBO or the IWAE bound; `torch.func.grad` through `functional_call`),
per-run gradient clipping, the lr schedule and the optimizer update, in one function, so that compiled
they are one graph.

`StackFunctions` applies these to R runs at once: with R = 1 the functions run as written on row 0; with
R > 1 `torch.func.vmap` maps them over a leading run dimension (every weight batched, every matmul a
batched matmul), so run r of a stack computes exactly what it computes alone. Compiled, it is
`torch.compile(vmap(f))`. Noise and batches are drawn by the caller from each run's own generators:
generators do not trace, and drawing outside keeps eager, compiled and stacked runs on the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_map

from bench.training.optim import LrSchedule, Optimizer, State, clip_gradient, normalize_per_tensor
from vae_core import VAE
from vae_core.estimators import iw_bound
from vae_core.probes import functorch_problem


class FlatLayout:
    """Where each named parameter of a model lives in a run's flat vector (module.parameters() order)."""

    def __init__(self, model: nn.Module):
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]

    def params(self, flat: torch.Tensor, prefix: str = "") -> dict[str, torch.Tensor]:
        """flat [N] -> {prefix + name: view of flat with the parameter's shape}."""
        return {prefix + n: v.view(s) for n, v, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def flatten(self, model: nn.Module) -> torch.Tensor:
        """The model's current parameters as one new vector [N]."""
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class _Method(nn.Module):
    """Calls one method of `model` as its forward, so `functional_call` can substitute the model's parameters."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args):
        return getattr(self.model, self.method)(*args)


def kl_weight(t: torch.Tensor, warmup_steps: torch.Tensor) -> torch.Tensor:
    """Linear KL warm-up at step t (0-based): t / warmup_steps, capped at 1; 1 throughout when warmup is 0."""
    return torch.where(warmup_steps > 0, torch.clamp(t / warmup_steps.clamp(min=1), max=1.0),
                       torch.ones_like(t))


def iwae_bound(log_px_z: torch.Tensor, log_pz: torch.Tensor, log_q: torch.Tensor, beta: torch.Tensor
               ) -> torch.Tensor:
    """Per-example IWAE bound [B] from per-sample log-densities [k, B], the KL part weighted by beta:
    log mean_k exp(log w) with log w = log p(x|z) - beta (log q - log p(z))."""
    return iw_bound(log_px_z - beta * (log_q - log_pz))  # log w [k, B] -> [B]


@dataclass(frozen=True)
class StepOptions:
    """How a stack's runs train (the same for every run of a stack).

    objective: "elbo" or "iwae" (`run_loss`); schedule: the lr factor of step t; normalize: "per-tensor"
    scales each parameter tensor's gradient to unit norm; bf16: the networks' matmuls under bfloat16
    autocast while every log-density is computed in the input's dtype (nets cast their outputs back).
    functorch: False for a family that does not run under torch.func (`vae_core.probes.functorch_problem`).
    """

    objective: str = "elbo"
    schedule: LrSchedule = LrSchedule()
    normalize: str = "none"
    bf16: bool = False
    functorch: bool = True  # False: the gradient through torch.autograd (`autograd_gradient`), one run, no vmap


def run_loss(model: VAE, layout: FlatLayout, flat: torch.Tensor, batch: torch.Tensor, eps: torch.Tensor,
             beta: torch.Tensor, objective: str = "elbo", bf16: bool = False):
    """(loss [], (reconstruction sum [], kl sum [])) of one run's weights flat [N] on batch [B, P] with noise
    eps [k, B, D]: minus the `objective` bound averaged over the batch, the KL part weighted by beta.

    "elbo" is reconstruction - beta * kl averaged over the k samples (`elbo_terms`, the model's forward,
    so `model.kl` = "analytic" applies); "iwae" is `iwae_bound` over the k samples. The sums are the
    k-sample ELBO's terms either way (the training curve). `bf16`: matmuls under bfloat16 autocast,
    log-densities in batch's dtype.
    """
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
        if objective == "iwae":
            log_px_z, log_pz, log_q = functional_call(_Method(model, "log_densities"),
                                                      layout.params(flat, "model."), (batch, eps))  # [k, B] each
            bound = iwae_bound(log_px_z, log_pz, log_q, beta)
            reconstruction, kl = log_px_z.mean(0), (log_q - log_pz).mean(0)
        else:
            reconstruction, kl = elbo_terms(model, layout, flat, batch, eps)  # [B], [B]
            bound = reconstruction - beta * kl
    return -bound.mean(), (reconstruction.detach().sum(), kl.detach().sum())


def train_step(model: VAE, layout: FlatLayout, optimizer: Optimizer, flat: torch.Tensor, state: State,
               t: torch.Tensor, batch: torch.Tensor, eps: torch.Tensor, lr: torch.Tensor,
               warmup_steps: torch.Tensor, grad_clip: torch.Tensor, active: torch.Tensor,
               options: StepOptions = StepOptions()):
    """One run's step: (flat [N], state, t [], batch [B, P], eps [k, B, D], lr, warmup_steps, grad_clip,
    active: 0-d) -> (flat, state, t, reconstruction sum [], kl sum [], ok []).

    The gradient of `run_loss` with beta = kl_weight(t, warmup_steps), normalized per parameter tensor if
    options.normalize = "per-tensor", clipped, then the optimizer update at lr * options.schedule(t). A run
    that is not `active`, or whose loss is not finite at this step, keeps its parameters, state and t: it is
    frozen where it stood, and `ok` says so.
    """
    beta = kl_weight(t, warmup_steps)
    if options.functorch:
        gradient, (rec, kl) = grad(run_loss, argnums=2, has_aux=True)(model, layout, flat, batch, eps, beta,
                                                                      options.objective, options.bf16)  # [N]
    else:
        gradient, (rec, kl) = autograd_gradient(model, layout, flat, lambda own: run_loss(
            model, own, flat, batch, eps, beta, options.objective, options.bf16))  # [N]
    if options.normalize == "per-tensor":
        gradient = normalize_per_tensor(gradient, layout.sizes)
    t_next = t + 1
    new_flat, new_state = optimizer.update(flat, clip_gradient(gradient, grad_clip), state, t_next,
                                           lr * options.schedule(t))
    ok = active & torch.isfinite(rec) & torch.isfinite(kl)
    keep = lambda new, old: torch.where(ok, new, old)  # noqa: E731
    return keep(new_flat, flat), tuple(map(keep, new_state, state)), keep(t_next, t), rec, kl, ok


class OwnParameters(FlatLayout):
    """The layout of a model whose own parameters hold the run's values: `params` returns the parameters
    themselves (whatever flat vector it is given), so a custom `autograd.Function` whose backward re-evaluates
    the model (zuko's UNAF, SOSPF) sees in its backward the very tensors its forward saw."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.model = model

    def params(self, flat: torch.Tensor, prefix: str = "") -> dict[str, torch.Tensor]:
        return {prefix + n: p for n, p in self.model.named_parameters()}


def autograd_gradient(model: VAE, layout: FlatLayout, flat: torch.Tensor, loss: Callable):
    """(d loss / d flat [N], aux) for `loss(layout) -> (loss [], aux)`, by `torch.autograd` on the model's own
    parameters set to flat's values: the gradient `torch.func.grad` gives, for families whose log-density calls
    `torch.autograd.grad` or a custom `autograd.Function` without functorch support."""
    params = list(model.parameters())
    with torch.no_grad():
        for p, value in zip(params, layout.params(flat).values()):
            p.copy_(value)
    with torch.enable_grad():
        value, aux = loss(OwnParameters(model))
        grads = torch.autograd.grad(value, params, allow_unused=True)
    return torch.cat([(p.new_zeros(p.shape) if g is None else g).reshape(-1) for g, p in zip(grads, params)]), aux


def elbo_terms(model: VAE, layout: FlatLayout, flat: torch.Tensor, x: torch.Tensor, eps: torch.Tensor):
    """(reconstruction [B], kl [B]) of x [B, P] for noise eps [k, B, D], with the run's parameters flat [N]."""
    return functional_call(model, layout.params(flat), (x, eps))


def encode(model: VAE, layout: FlatLayout, flat: torch.Tensor, x: torch.Tensor):
    """The encoder's (loc [B, D], scale [B, D], context [B, C])."""
    return functional_call(_Method(model, "encoder"), layout.params(flat, "model."), (x,))


def log_weight(model: VAE, layout: FlatLayout, flat: torch.Tensor, x: torch.Tensor, loc: torch.Tensor,
               scale: torch.Tensor, context: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """`VAE.log_weight`: log p(x, z) - log q(z|x) [c, B] for noise eps [c, B, D]."""
    return functional_call(_Method(model, "log_weight"), layout.params(flat, "model."),
                           (x, loc, scale, context, eps))


def _on_rows(fn: Callable, in_dims: tuple, stack_problem: str = "") -> Callable:
    """`fn` over a leading run dimension of the arguments whose in_dim is 0 (None: shared by all runs).

    One run (R = 1) runs `fn` itself on row 0, without vmap: a stack of one is exactly the single run. With a
    `stack_problem` (the family does not run under vmap) more than one run is an error: such runs train alone."""
    batched = vmap(fn, in_dims=in_dims)

    def on_rows(*args):
        if args[0].shape[0] > 1:
            if stack_problem:
                raise ValueError(f"these runs cannot be stacked (the family fails under torch.func: {stack_problem})")
            return batched(*args)
        rows = [tree_map(lambda a: a[0], arg) if d == 0 else arg for arg, d in zip(args, in_dims)]
        return tree_map(lambda out: out.unsqueeze(0), fn(*rows))

    return on_rows


def compile_fn(fn: Callable, name: str, mode: str = "default") -> Callable:
    """How each of a stack's functions (`name`: train_step, elbo_terms, encode, log_weight) is compiled;
    mode "reduce-overhead" captures it in CUDA graphs (on CUDA tensors)."""
    return torch.compile(fn, dynamic=False, mode=mode)


class _Fallback:
    """A compiled function that, if a call fails (e.g. no C++ compiler for inductor), records why and runs
    `eager` from then on. Inputs are never mutated, so the failed call is simply made again eagerly."""

    def __init__(self, compiled: Callable, eager: Callable, owner: "StackFunctions", name: str):
        self.compiled, self.eager, self.owner, self.name, self.failed = compiled, eager, owner, name, False

    def __call__(self, *args):
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as err:  # compilation errors come in many types
                self.failed = True
                where = "" if self.name == "train_step" else "evaluation: "
                self.owner.compile_errors.append(f"{where}{type(err).__name__}: {err}".splitlines()[0][:300])
        return self.eager(*args)


class StackFunctions:
    """`train_step`, `elbo_terms`, `encode` and `log_weight` over the R runs of a stack (any R, one
    architecture), eager or compiled (one compiled graph per R and shape).

    Shapes: flat [R, N], state leaves [R, N], t/lr/warmup/clip/active [R], batch [R, B, P],
    eps [R, k, B, D] (k = the objective's samples); evaluation x [B, P] is shared, eval noise [R, k, B, D].
    """

    RECOMPILE_LIMIT = 64  # shapes per function: stack sizes as runs finish, last eval batch, last IW chunk

    def __init__(self, model: VAE, optimizer: Optimizer, compile: bool, options: StepOptions = StepOptions(),
                 cuda_graphs: bool = False):
        self.model = model
        self.cuda_graphs = compile and cuda_graphs  # the step replayed as CUDA graphs (one per stack size)
        layout = FlatLayout(model)
        self.layout = layout
        self.compile_errors: list[str] = []
        self.stack_problem = functorch_problem(model.config)
        options = replace(options, functorch=not self.stack_problem)
        if compile:
            torch._dynamo.reset()  # guards of earlier stacks must not pile up towards the recompile limit
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                       self.RECOMPILE_LIMIT)

        self.eager: dict[str, Callable] = {}  # the same functions uncompiled (what `bench.training.cost` counts)

        def wrap(name: str, fn: Callable, in_dims: tuple) -> Callable:
            eager = self.eager[name] = _on_rows(fn, in_dims, self.stack_problem)
            if not compile:
                return eager
            mode = "reduce-overhead" if name == "train_step" and self.cuda_graphs else "default"
            return _Fallback(compile_fn(_on_rows(fn, in_dims, self.stack_problem), name, mode), eager, self, name)

        step = partial(train_step, model, layout, optimizer, options=options)
        self.train_step = wrap("train_step", step, (0,) * 9)
        self.elbo_terms = wrap("elbo_terms", lambda f, x, e: elbo_terms(model, layout, f, x, e), (0, None, 0))
        self.encode = wrap("encode", lambda f, x: encode(model, layout, f, x), (0, None))
        self.log_weight = wrap("log_weight",
                               lambda f, x, lo, sc, co, e: log_weight(model, layout, f, x, lo, sc, co, e),
                               (0, None, 0, 0, 0, 0))
        self.compiled = compile

    @property
    def compile_error(self) -> str:
        return self.compile_errors[0] if self.compile_errors else ""

    @property
    def step_compiled(self) -> bool:
        """True while the training step runs compiled (False once it fell back to eager)."""
        return self.compiled and not getattr(self.train_step, "failed", True)
