"""The contract's numerical tools and the checks through the whole VAE (IW >= ELBO, stacked = alone,
compiled = eager). tests/test_flows.py and tests/test_priors.py use the same tools."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.autograd.functional import jacobian

from vae_core.distributions import std_normal_log_prob
from vae_core.probes import clip, functorch_problem
from vae_core.models import build_vae
from vae_core.vae import VAE

LOGDET_TOL = 1e-6  # claimed log-det vs log|det J| (float64)
Q_MASS_TOL = 1e-3  # |integral of q - 1|: the substituted integrand is smooth, the midpoint rule near exact
PRIOR_MASS_TOL = 0.01  # |integral of p - 1| on the 2-D grid (the grid's own error is ~1e-4 for sharp mixtures)
OUTER_MASS_TOL = 1e-4  # mass allowed in the grid's outer band (else the integral would be vacuous)
SE_BOUND = 5.0  # sampling checks: |error| / standard error
ROWS = 16_384  # points evaluated at once by the grid and sampling checks
RATIO_SE_MAX = 0.05  # E[r/q] = 1 is only conclusive when its standard error is below this
STACK_RTOL = 1e-9
COMPILE_RTOL, COMPILE_ATOL = 1e-10, 1e-8
B, K = 3, 4  # inputs, samples per input


@dataclass(frozen=True)
class Check:
    """One line of the contract: what, the measured number, the bound, pass (True), fail (False) or note (None)."""

    name: str
    value: str
    bound: str
    passed: bool | None


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def default_float64() -> Iterator[None]:
    """float64 as the default dtype inside the block (module inits draw float64 numbers); restored after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def perturbed_model(posterior: str = "mean-field", prior: str = "standard", latent_dim: int = 2, seed: int = 0,
                    std: float = 0.3, layers: int = 1) -> VAE:
    """A float64 VAE (data_dim 4, hidden [16]; `layers` 2: z1 and z2 both latent_dim) whose every parameter has seeded N(0, std^2) noise added; the
    caller's global random state is left as it was. A family adapted from another library whose initialisation
    is tuned (`contract_relative_perturbation`: zuko's flows, whose monotonic networks' weights are ~0.1) gets
    noise relative to each tensor's scale instead, std x max(rms, 0.05): an absolute 0.3 sends their samples
    to |z| ~ 400, far from any trained model."""
    with default_float64(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        two = {"layers": 2, "top_latent_dim": latent_dim} if layers == 2 else {}
        model = build_vae({"data_dim": 4, "latent_dim": latent_dim, "posterior": posterior, "prior": prior,
                           "hidden": [16], "prior_components": 5, **two})
        families = (model.posterior, model.prior, getattr(model, "bottom_posterior", model.posterior))
        relative = {id(p) for family in families
                    if getattr(family, "contract_relative_perturbation", False) for p in family.parameters()}
        g = gen(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                scale = relative_std(p, std) if id(p) in relative else std
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def relative_std(p: torch.Tensor, std: float) -> float:
    """The noise scale for a parameter of a family with `contract_relative_perturbation`: std x max(rms, 0.05)."""
    return std * max(p.square().mean().sqrt().item(), 0.05)


def inputs(seed: int = 0, n: int = B, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 4), 0.4, dtype=dtype), generator=gen(seed))  # [n, P]


# ---- numerical helpers ---------------------------------------------------------------------------------

def logdet_errors(fn: Callable, points: torch.Tensor) -> list[float]:
    """|claimed log-det - log|det J|| at each point; fn maps one point [D] -> (y [D], log_abs_det [])."""
    errors = []
    for p in points:
        J = jacobian(lambda v: fn(v)[0], p)  # [D, D]
        errors.append(abs(fn(p)[1].item() - torch.linalg.slogdet(J).logabsdet.item()))
    return errors


def grid(half_width: float, step: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Cell-centred 2-D grid points -L + h/2, ..., L - h/2 in each coordinate: [n*n, 2]."""
    n = round(2 * half_width / step)
    xs = -half_width + step * (torch.arange(n, dtype=dtype) + 0.5)  # [n]
    return torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)


@torch.no_grad()
def grid_mass(log_density: Callable[[torch.Tensor], torch.Tensor], half_width: float = 10.0, step: float = 0.025
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid points [G, 2], probability mass of each cell [G]) by the midpoint rule."""
    z = grid(half_width, step)
    return z, in_rows(log_density, z).exp() * step * step


def in_rows(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """fn(z) for z [N, ...], ROWS rows at a time (memory: a flow integrating by quadrature holds ~1000 floats
    per row and layer)."""
    return torch.cat([fn(rows) for rows in z.split(ROWS)])


def outer_mass(z: torch.Tensor, p: torch.Tensor, half_width: float) -> float:
    """Mass in the grid's outer band (|z|_inf > 0.8 L): must be ~0 or the grid is too narrow."""
    return p[z.abs().max(-1).values > 0.8 * half_width].sum().item()


def moment_errors(samples: torch.Tensor, z: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean error / SE [2], covariance error / SE [2, 2]): sample moments vs grid-integrated moments."""
    n = samples.shape[0]
    p = p / p.sum()
    mean = (p[:, None] * z).sum(0)  # [2]
    cov = ((z - mean).T * p) @ (z - mean)  # [2, 2]
    c = samples - samples.mean(0)  # [n, 2]
    products = c[:, :, None] * c[:, None, :]  # [n, 2, 2]
    mean_se = samples.std(0) / math.sqrt(n)
    cov_se = products.std(0) / math.sqrt(n)
    return (samples.mean(0) - mean).abs() / mean_se, (products.mean(0) - cov).abs() / cov_se


def histogram_z_scores(samples: torch.Tensor, z: torch.Tensor, p: torch.Tensor, half_width: float = 10.0,
                       cell: float = 0.5, min_expected: float = 25) -> torch.Tensor:
    """(observed - expected) / sqrt(expected) per cell x cell histogram cell with enough expected counts."""
    n_cells = round(2 * half_width / cell)

    def cell_index(points):
        ij = torch.floor((points + half_width) / cell).long()  # [N, 2]
        inside = ((ij >= 0) & (ij < n_cells)).all(-1)
        return ij[inside, 0] * n_cells + ij[inside, 1]

    expected = p.new_zeros(n_cells**2).index_add_(0, cell_index(z), p) * samples.shape[0]
    observed = torch.bincount(cell_index(samples), minlength=n_cells**2).to(expected.dtype)
    keep = expected >= min_expected
    return (observed[keep] - expected[keep]) / expected[keep].sqrt()


def ratio_mean(z: torch.Tensor, log_q: torch.Tensor) -> tuple[float, float]:
    """(mean, standard error) of r(z)/q(z) over samples z ~ q [n, D] with their claimed log q [n], r a Gaussian
    with the samples' mean and 0.7 x their full covariance's square root (so r/q stays bounded, with finite
    variance, also for the correlated q of rotating flows such as Householder reflections): 1 if log q is right."""
    loc = z.mean(0)
    chol = 0.7 * torch.linalg.cholesky(torch.cov(z.T))  # [D, D]
    white = torch.linalg.solve_triangular(chol, (z - loc).T, upper=False).T  # [n, D]
    log_r = std_normal_log_prob(white) - chol.diagonal().log().sum()  # [n]
    ratio = (log_r - log_q).exp()  # [n]
    return ratio.mean().item(), (ratio.std() / math.sqrt(z.shape[0])).item()


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest relative difference |a - b| / max(|b|, 1e-300)."""
    return ((a - b).abs() / b.abs().clamp(min=1e-300)).max().item()


# ---- the checks ----------------------------------------------------------------------------------------

def guarded(name: str, bound: str, fn: Callable[[], Check]) -> Check:
    """Run one check; an exception is that check's failure, in one line."""
    try:
        return fn()
    except Exception as err:
        text = (str(err).strip().splitlines() or [""])[0]
        return Check(name, clip(f"raised {type(err).__name__}: {text}", 160), bound, False)


def check_iw_above_elbo(model: VAE, name: str = "IW log p(x) >= ELBO (same 64 draws)") -> Check:
    x = inputs()
    with torch.no_grad():
        iw = model.iw_log_px(x, k=64, chunk=64, generator=gen(3))  # [B]
        elbo = model.elbo(x, k=64, generator=gen(3))  # [B], the same 64 draws
    gap = (iw - elbo).min().item()
    return Check(name, f"min gap {gap:.3g} nats", ">= 0", bool(torch.isfinite(iw).all()) and gap >= -1e-12)


def check_stacked(posterior: str, prior: str, layers: int = 1,
                  name: str = "stacked (vmap over 3 runs) = alone") -> Check:
    """3 runs' log-densities through one vmap over stacked parameters = each run alone (float64); a family that
    does not run under torch.func is a note: its runs are never stacked."""
    models = [perturbed_model(posterior, prior, seed=s, layers=layers) for s in range(3)]
    problem = functorch_problem(models[0].config)
    if problem:
        return Check(name, f"not stackable ({clip(problem, 60)}): runs train alone", f"<= {STACK_RTOL:g}", None)
    params, buffers = torch.func.stack_module_state(models)
    x, eps = inputs(), models[0].noise(K, inputs(), gen(4))  # [B, P], [K, B, D]

    def one(p, b):
        return torch.func.functional_call(models[0], (p, b), (x, eps), strict=False)

    with torch.no_grad():
        stacked = torch.func.vmap(one)(params, buffers)  # (reconstruction [R, B], kl [R, B])
        worst = max(_close(s[r], a) for r, m in enumerate(models) for s, a in zip(stacked, m(x, eps)))
    return Check(name, f"max rel diff {worst:.2g}", f"<= {STACK_RTOL:g}", worst <= STACK_RTOL)


def check_compiled(model: VAE, run: bool) -> Check:
    name, bound = "compiled = eager (torch.compile)", f"rel {COMPILE_RTOL:g}, abs {COMPILE_ATOL:g}"
    if not run:
        return Check(name, "not run (--compile; ~10-30 s on a CPU)", bound, None)
    x, eps = inputs(), model.noise(K, inputs(), gen(5))
    with torch.no_grad():
        eager = model.log_densities(x, eps)
        try:
            compiled = torch.compile(model.log_densities, dynamic=False)(x, eps)
        except Exception as err:
            text = (str(err).strip().splitlines() or [""])[0]
            return Check(name, f"cannot be compiled ({clip(f'{type(err).__name__}: {text}', 110)}); trains eagerly", bound,
                         None)
    worst = max((a - b).abs().max().item() for a, b in zip(compiled, eager))
    ok = all(torch.allclose(a, b, rtol=COMPILE_RTOL, atol=COMPILE_ATOL) for a, b in zip(compiled, eager))
    return Check(name, f"max abs diff {worst:.2g}", bound, ok)


def model_checks(posterior: str, prior: str, compile: bool) -> list[Check]:
    """The checks through the whole VAE: IW >= ELBO, stacked = alone, compiled = eager; IW >= ELBO and stacked =
    alone again on a two-layer model (the family on both layers, the prior on the top one)."""
    model = perturbed_model(posterior, prior)
    iw2, stacked2 = "two layers: IW log p(x) >= ELBO", "two layers: stacked = alone"
    return [guarded("IW log p(x) >= ELBO (same 64 draws)", ">= 0", lambda: check_iw_above_elbo(model)),
            guarded("stacked (vmap over 3 runs) = alone", f"<= {STACK_RTOL:g}",
                    lambda: check_stacked(posterior, prior)),
            guarded("compiled = eager (torch.compile)", "", lambda: check_compiled(model, compile)),
            guarded(iw2, ">= 0", lambda: check_iw_above_elbo(perturbed_model(posterior, prior, layers=2), iw2)),
            guarded(stacked2, f"<= {STACK_RTOL:g}", lambda: check_stacked(posterior, prior, 2, stacked2))]

