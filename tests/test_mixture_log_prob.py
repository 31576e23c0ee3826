"""`mixture_log_prob` (matrix products, centred) against `mixture_log_prob_direct` (every sample against every
component): float64 values and gradients, float32 within the error bound stated in its docstring, stacked (vmap)
= alone with batched matmuls, compiled = eager, bf16 autocast left out, and the memory `floats_per_sample` claims.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, grad, vmap
from torch.utils._python_dispatch import TorchDispatchMode

from vae_core import build_vae
from vae_core.distributions import HALF_LOG_2PI, normal_log_prob
from vae_core.priors import mixture as mixture_module
from vae_core.priors import MixturePrior, mixture_floats_per_sample, mixture_log_prob, mixture_log_prob_direct

U32 = 2.0**-24  # float32 unit roundoff (torch.finfo(torch.float32).eps / 2)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixture_case(name: str) -> tuple[torch.Tensor, ...]:
    """(z [3, 4, D], log_weights [K], loc [K, D], scale [K, D]) in float64, each value a float32 number."""
    g = gen(sum(map(ord, name)))
    if name == "random":  # K = 7, D = 5
        k, d = 7, 5
        loc = torch.randn(k, d, generator=g, dtype=torch.float64)
        scale = 0.2 + torch.rand(k, d, generator=g, dtype=torch.float64)
        z = torch.randn(3, 4, d, generator=g, dtype=torch.float64) * 1.5
    elif name == "vamp-sized":  # K = 500, D = 40 (the VampPrior protocol's), scales 0.1 to 1
        k, d = 500, 40
        loc = torch.randn(k, d, generator=g, dtype=torch.float64)
        scale = 0.1 + 0.9 * torch.rand(k, d, generator=g, dtype=torch.float64)
        z = loc[torch.randint(k, (3, 4), generator=g)] + 0.3 * torch.randn(3, 4, d, generator=g, dtype=torch.float64)
    elif name == "far-cluster":  # 6 components around 1e3 (1e-2 apart), scales ~1e-3, z near them
        k, d = 6, 4
        loc = 1e3 + 1e-2 * torch.randn(k, d, generator=g, dtype=torch.float64)
        scale = 1e-3 * (1 + torch.rand(k, d, generator=g, dtype=torch.float64))
        pick = torch.randint(k, (3, 4), generator=g)
        z = loc[pick] + 2 * scale[pick] * torch.randn(3, 4, d, generator=g, dtype=torch.float64)
    elif name == "one-far-component":  # K = 1 at |mu| ~ 1e3, scale 1e-3
        k, d = 1, 3
        loc = 1e3 * torch.randn(k, d, generator=g, dtype=torch.float64)
        scale = torch.full((k, d), 1e-3, dtype=torch.float64)
        z = loc[0] + 1e-3 * torch.randn(3, 4, d, generator=g, dtype=torch.float64)
    elif name == "one-dim":  # D = 1, components at -3..3
        k, d = 5, 1
        loc = torch.linspace(-3, 3, k, dtype=torch.float64)[:, None]
        scale = 0.1 + torch.rand(k, d, generator=g, dtype=torch.float64)
        z = 4 * torch.randn(3, 4, d, generator=g, dtype=torch.float64)
    elif name == "z-far-from-all":  # z ~50 units (5e4 scales) from every component: one term dominates
        k, d = 4, 3
        loc = torch.randn(k, d, generator=g, dtype=torch.float64)
        scale = 1e-3 * (1 + torch.rand(k, d, generator=g, dtype=torch.float64))
        z = 50 + torch.randn(3, 4, d, generator=g, dtype=torch.float64)
    else:
        raise ValueError(name)
    log_weights = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)  # [K]
    return tuple(t.float().double() for t in (z, log_weights, loc, scale))


CASES = ["random", "vamp-sized", "far-cluster", "one-far-component", "one-dim", "z-far-from-all"]


@pytest.mark.parametrize("case", CASES)
def test_matmul_form_equals_the_direct_form_in_float64(case):
    z, log_weights, loc, scale = mixture_case(case)
    ours = mixture_log_prob(z, log_weights, loc, scale)  # [3, 4]
    reference = mixture_log_prob_direct(z, log_weights, loc, scale)  # [3, 4]
    assert ours.shape == reference.shape == z.shape[:-1]
    assert reference.abs().min() > 1  # no value near 0, so the relative tolerance is meaningful
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_gradients_equal_the_direct_forms_in_float64(case):
    inputs = [t.clone().requires_grad_() for t in mixture_case(case)]
    cotangent = torch.randn(3, 4, generator=gen(1), dtype=torch.float64)  # [3, 4]
    ours = torch.autograd.grad((mixture_log_prob(*inputs) * cotangent).sum(), inputs)
    reference = torch.autograd.grad((mixture_log_prob_direct(*inputs) * cotangent).sum(), inputs)
    for name, a, b in zip(("z", "log_weights", "loc", "scale"), ours, reference):
        assert ((a - b).norm() / b.norm()).item() < 1e-9, name


def float32_error_bound(z: torch.Tensor, log_weights: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
                        ) -> torch.Tensor:
    """The bound of `mixture_log_prob`'s docstring on |float32 result - exact| [...], computed in float64:
    log sum_k pi_k exp(Delta_k) + (K + 4 + log K) u + u |log p|, with
    Delta_k = (D + 8) u S_k + (D + 7) u N_k + u |a_k - max_j a_j|.

    Derivation (first order in u; x = z - c, m = mu_k - c, p = P_k per dim, A = sum x^2 p, B = sum x m p,
    C = sum m^2 p; a dot product of D terms errs by (D u) sum |terms|): x and m carry u each, p = 1/s^2 2u;
    A's terms x^2 p carry 2u + u + 2u, then the dot (D u): (D + 5) u A; B's x (m p): (D + 4) u sum |x m p|;
    C's m (m p): (D + 5) u C. log_norm = log w - sum log s - D log(2 pi)/2 - C/2: the logs and their sum
    (D + 1) u sum |log s|, the constant's cast and three subtractions u N each (the last also u C/2). The two
    addmm additions add u (N + C/2 + |B|) and u (N + C/2 + |B| + A/2). Summed: A/2 and C/2 get (D + 8) u,
    |x m p| 2 (D + 6) u, N (D + 7) u; A + 2 sum |x m p| + C <= 2 S gives (D + 8) u S. logsumexp: the shift
    a_k - max errs by u |a_k - max| (inside Delta_k), exp and the K-term sum by (K + 2) u relative, the log and
    adding the max back by u (log K + 1) and u |log p|. A term-wise error |delta_k| <= Delta_k moves
    logsumexp by at most log sum_k pi_k exp(Delta_k) (monotone in each a_k; Jensen for the lower side)."""
    k, d = loc.shape
    centre = loc.float().mean(0).double()  # [D], as float32 computes it
    precision = scale.pow(-2)  # [K, D]
    s = (((z[..., None, :] - centre) ** 2 + (loc - centre) ** 2) * precision).sum(-1)  # [..., K]
    n = log_weights.abs() + scale.log().abs().sum(-1) + d * HALF_LOG_2PI  # [K]
    a = normal_log_prob(z[..., None, :], loc, scale) + log_weights  # [..., K] exact log-terms
    log_p = torch.logsumexp(a, -1)  # [...]
    delta = (d + 8) * U32 * s + (d + 7) * U32 * n + U32 * (a - a.max(-1, keepdim=True).values).abs()
    log_pi = a - log_p[..., None]
    return torch.logsumexp(log_pi + delta, -1) + (k + 4 + math.log(k)) * U32 + U32 * log_p.abs()


@pytest.mark.parametrize("case", CASES)
def test_float32_stays_within_the_stated_bound(case):
    inputs = mixture_case(case)  # float32 values held in float64: the exact reference sees the same inputs
    ours = mixture_log_prob(*(t.float() for t in inputs)).double()  # [3, 4]
    exact = mixture_log_prob_direct(*inputs)  # [3, 4]
    bound = float32_error_bound(*inputs)  # [3, 4]
    assert ((ours - exact).abs() <= bound).all(), f"error {(ours - exact).abs().max():.3g} > bound {bound.min():.3g}"
    assert (bound / (1 + exact.abs())).max() < 1e-3  # a bound that says something: 1e-3 of 1 + |log p| at most


class OpRecorder(TorchDispatchMode):
    """Records each aten op called and the largest output (numel) it made."""

    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(func.overloadpacket.__name__)
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def stacked_priors(name: str, runs: int = 3):
    """`runs` VAEs (data_dim 6, latent 3, K = 4, perturbed) of prior family `name`; (models, params [R, ...])."""
    models = []
    for r in range(runs):
        torch.manual_seed(r)
        model = build_vae({"data_dim": 6, "latent_dim": 3, "hidden": [5], "prior": name, "prior_components": 4})
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen(10 + r), dtype=p.dtype))
        models.append(model)
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
              for n, _ in models[0].named_parameters()}  # name -> [R, ...]
    return models, params


@pytest.mark.parametrize("name", ["mog", "vamp"])
def test_a_stack_of_priors_computes_each_run_alone_with_batched_matmuls(float64, name):
    """vmap over R = 3 runs: log p(z) [R, k, B] and its gradient w.r.t. every parameter equal each run alone;
    the products are batched matmuls and no [R, N, K, D] term appears."""
    models, params = stacked_priors(name)
    z = torch.randn(3, 2, 5, 3, generator=gen(2))  # [R, k, B, D]

    def log_prob(p, zr):  # one run's params, zr [k, B, D] -> [k, B]
        return functional_call(_PriorLogProb(models[0]), {"model." + n: v for n, v in p.items()}, (zr,))

    recorder = OpRecorder()
    with recorder:
        stacked = vmap(log_prob)(params, z)  # [R, k, B]
    assert recorder.ops & {"bmm", "baddbmm"}, recorder.ops
    assert recorder.largest < 3 * 10 * 4 * 3  # R * N * K * D: the direct form's term never exists
    grads = vmap(grad(lambda p, zr: log_prob(p, zr).sum()))(params, z)  # name -> [R, ...]
    for r, model in enumerate(models):
        alone = model.prior.log_prob(z[r])  # [k, B]
        torch.testing.assert_close(stacked[r], alone, rtol=1e-12, atol=0)
        model.zero_grad()
        alone.sum().backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(grads[n][r], p.grad, rtol=1e-10, atol=1e-12)


class _PriorLogProb(torch.nn.Module):
    """A VAE's prior log_prob as a module's forward (for functional_call)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z):
        return self.model.prior.log_prob(z)


def test_compiled_equals_eager_forward_and_backward(float64):
    z, log_weights, loc, scale = (t.clone().requires_grad_() for t in mixture_case("far-cluster"))
    compiled = torch.compile(mixture_log_prob, fullgraph=True)
    eager_out, compiled_out = mixture_log_prob(z, log_weights, loc, scale), compiled(z, log_weights, loc, scale)
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-12, atol=0)
    eager_grads = torch.autograd.grad(eager_out.sum(), (z, loc, scale))
    compiled_grads = torch.autograd.grad(compiled_out.sum(), (z, loc, scale))
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * b.abs().max().item())


def test_bf16_autocast_leaves_the_mixture_in_float32():
    """The networks' matmuls run in bf16 under autocast; the prior's density is a log-density: float32."""
    z, log_weights, loc, scale = (t.float() for t in mixture_case("random"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = mixture_log_prob(z, log_weights, loc, scale)
    assert under.dtype == torch.float32
    assert torch.equal(under, mixture_log_prob(z, log_weights, loc, scale))


def peak_bytes(fn) -> int:
    """Peak CPU bytes allocated (and not yet freed) while fn() runs, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def test_floats_per_sample_is_what_log_prob_holds(one_thread):
    """Per extra sample, log_prob's peak memory (float32, no grad) grows by floats_per_sample floats: measured
    as the slope between N = 1000 and 3000 samples (constants like P [K, D] cancel), K = 50, D = 40."""
    prior = MixturePrior(40, 50)
    slopes = {}
    components = [t.detach() for t in prior.components()]
    z = {n: torch.randn(n, 40, generator=gen(n)) for n in (1000, 3000)}  # [N, D], allocated before profiling
    for name, fn in [("ours", mixture_log_prob), ("direct", mixture_log_prob_direct)]:
        peaks = [peak_bytes(lambda: fn(z[n], *components)) for n in (1000, 3000)]
        slopes[name] = (peaks[1] - peaks[0]) / 2000 / 4  # floats per sample
    claimed = prior.floats_per_sample
    assert claimed == mixture_floats_per_sample(50, 40) == 4 * 50 + 2 * 40
    assert 0.8 * claimed <= slopes["ours"] <= claimed, (slopes, claimed)
    assert slopes["direct"] >= 2 * 50 * 40  # the [N, K, D] terms the direct form holds


def test_the_mixture_makes_no_subnormal_floats_and_the_same_figures():
    """A mixture's far components: torch.logsumexp's responsibilities fall below float32's normal range (x86
    runs subnormals ~100x slower); `logsumexp_without_subnormals` leaves them out. No subnormal in log p(z) or
    its gradient, and float32 figures as close to float64's as torch.logsumexp's are, or closer."""
    g = torch.Generator().manual_seed(3)
    loc = torch.randn(500, 16, generator=g) * 3  # [K, D]
    scale = torch.rand(500, 16, generator=g) * 0.3 + 0.2
    log_weights = torch.log_softmax(torch.randn(500, generator=g), -1)
    z = torch.randn(64, 16, generator=g) * 3  # [B, D]
    tiny = torch.finfo(torch.float32).tiny

    def figures(logsumexp, dtype):
        loc_ = loc.to(dtype).clone().requires_grad_()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(mixture_module, "logsumexp_without_subnormals", logsumexp)
            log_p = mixture_log_prob(z.to(dtype), log_weights.to(dtype), loc_, scale.to(dtype))  # [B]
        (grad_loc,) = torch.autograd.grad(log_p.sum(), loc_)  # [K, D]
        return log_p, grad_loc

    def subnormals(t: torch.Tensor) -> int:
        return int(((t != 0) & (t.abs() < tiny)).sum())

    def errors(figs, reference):
        return [(a.double() - b).abs().max().item() for a, b in zip(figs, reference)]

    plain = lambda terms: torch.logsumexp(terms, dim=-1)  # noqa: E731
    reference = figures(plain, torch.float64)
    ours, theirs = figures(mixture_module.logsumexp_without_subnormals, torch.float32), figures(plain, torch.float32)
    assert subnormals(theirs[1]) > 0  # the case is real: torch.logsumexp makes them
    assert subnormals(ours[1]) == 0 and subnormals(ours[0]) == 0
    (ours_lp, ours_grad), (theirs_lp, theirs_grad) = errors(ours, reference), errors(theirs, reference)
    assert ours_lp <= theirs_lp * 1.01 + 1e-6 and ours_grad <= theirs_grad * 1.01, (ours_lp, theirs_lp, ours_grad,
                                                                                  theirs_grad)
    # float64: the same function as torch.logsumexp to the last bits, -inf, +inf and NaN terms included
    terms = torch.randn(7, 300, generator=g, dtype=torch.float64) * 200  # [N, K]
    terms[0] = -math.inf
    terms[1, 3] = math.inf
    terms[2, 5] = math.nan  # a broken run's NaN must reach the non-finite check
    torch.testing.assert_close(mixture_module.logsumexp_without_subnormals(terms), torch.logsumexp(terms, -1),
                               rtol=1e-15, atol=0, equal_nan=True)
