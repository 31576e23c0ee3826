"""What a model config can do, found by building it once: whether its families accept it (`check_model`) and
whether a stack of it can train (`functorch_problem`). Each is computed once per distinct config and resolved
family classes, on the CPU, without disturbing the global random state."""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from vae_core.config import ModelConfig
from vae_core.registry import resolve
from vae_core.models import build_vae

_CHECKED: set[tuple] = set()
_FUNCTORCH: dict[tuple, str] = {}


def clip(text: str, n: int) -> str:
    """`text` cut to at most about n characters at a word boundary, marked with '...' where cut."""
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " ..."


def _key(cfg: ModelConfig) -> tuple:
    top = resolve("posterior", cfg.top_posterior).obj if cfg.top_posterior else None
    return cfg, resolve("posterior", cfg.posterior).obj, resolve("prior", cfg.prior).obj, top


def check_model(cfg: ModelConfig) -> None:
    """Both family names resolve and their `from_config` accept `cfg` (the registry's one-line ConfigError)."""
    key = _key(cfg)
    if key in _CHECKED:
        return
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        build_vae(cfg)
    _CHECKED.add(key)


def functorch_problem(cfg: ModelConfig) -> str:
    """'' if the model's ELBO has a gradient under `torch.func.grad`, vmapped over two copies of its parameters
    (what a stacked training step computes); else the first line of the error. A family whose log-density
    calls `torch.autograd.grad` or an `autograd.Function` without functorch support (zuko's NAF, UNAF, BPF,
    SOSPF) fails here: its runs train alone, with the gradient from `torch.autograd`."""
    key = _key(cfg)
    if key not in _FUNCTORCH:
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            model = build_vae(cfg)
            stacked = {n: torch.stack([p.detach(), p.detach()]) for n, p in model.named_parameters()}
            x, eps = torch.zeros(2, cfg.data_dim), torch.zeros(1, 2, cfg.noise_dim)  # [B, P], [k, B, D]

            def elbo(params: dict[str, torch.Tensor]) -> torch.Tensor:
                reconstruction, kl = functional_call(model, params, (x, eps))  # [B] each
                return (reconstruction - kl).sum()

            try:
                vmap(grad(elbo))(stacked)
                _FUNCTORCH[key] = ""
            except Exception as err:  # whatever the family raises under torch.func, in one line
                text = (str(err).strip().splitlines() or [""])[0]
                _FUNCTORCH[key] = clip(f"{type(err).__name__}: {text}", 200)
    return _FUNCTORCH[key]
