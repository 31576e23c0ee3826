"""Estimators: the importance-weighted log p(x) converges to the exact log p(x) (2-D quadrature) for every
posterior family and prior; bound orderings (IW >= ELBO, IW rising with k, IW_1 = ELBO_1); the streaming
bound is exact and overflow-free; iw_log_px does not depend on its chunk size; analytic KL = Monte-Carlo KL;
ELBO = reconstruction - KL.

Run with `-s` to see |IW - quadrature| and the standard error per family.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Bernoulli

from tests.families import PAIRS
from vae_core import POSTERIORS, build_vae
from vae_core.contract.tools import perturbed_model, relative_std
from vae_core.estimators import elbo_from_log_weights, iw_bound, streaming_iw_bound

DATA_DIM, LATENT = 4, 2
ALL_X = torch.tensor(list(itertools.product([0.0, 1.0], repeat=DATA_DIM)), dtype=torch.float64)  # [16, 4]
K_IW = 50_000  # samples for the IW-vs-quadrature comparison
GRID_L, GRID_N = 12.0, 481  # quadrature grid: [-L, L]^2, N x N points (step 0.05)


pytestmark = pytest.mark.usefixtures("float64", "one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def log_w_of(model, x: torch.Tensor, k: int, seed: int, chunk: int = 10_000) -> torch.Tensor:
    """log p(x, z) - log q(z|x) for k draws with a seeded generator: [k, B].

    Drawn `chunk` samples at a time from one generator (to bound memory), which gives the same numbers as
    one call with k samples (see test_iw_log_px_does_not_depend_on_the_chunk_size).
    """
    g, parts = gen(seed), []
    for start in range(0, k, chunk):
        log_px_z, log_pz, log_q = model.log_weights(x, min(chunk, k - start), g)
        parts.append(log_px_z + log_pz - log_q)
    return torch.cat(parts)


# ---- the test model: random weights, posterior not the prior, proposal wider than the prior ------------------

def inv_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def grid() -> tuple[torch.Tensor, float]:
    xs = torch.linspace(-GRID_L, GRID_L, GRID_N)
    z = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, LATENT)  # [G, 2]
    return z, (xs[1] - xs[0]).item()


def prior_covariance(prior) -> torch.Tensor:
    z, h = grid()
    p = prior.log_prob(z).exp() * h * h  # [G]
    mean = (p[:, None] * z).sum(0)
    return ((z - mean).T * p) @ (z - mean)  # [2, 2]


@torch.no_grad()
def quadrature_model(posterior: str, prior: str, seed: int = 0, kl: str = "mc", widen: float = 1.0):
    """A VAE (4 -> 2) with perturbed random weights whose Gaussian head is wider than the prior.

    Importance weights from a proposal narrower than the prior (in its tails) have infinite variance and
    the IW estimate would converge erratically; so the encoder's scale is set to a constant >= 1.5 x the
    prior's largest standard deviation (computed on the grid), x 1.3 for IAF, whose gates (sigmoid ~ 0.88
    at init) contract the Gaussian. The location still depends on x, so q(z|x) is neither the prior nor
    the posterior (the ELBO gap is ~0.5-5 nats).
    """
    torch.manual_seed(seed)
    model = build_vae({"data_dim": DATA_DIM, "latent_dim": LATENT, "posterior": posterior, "prior": prior,
                       "hidden": [16], "kl": kl})
    # the prior's init is that of the mean-field model with this seed, whatever the posterior (the encoder, built
    # first, draws as many numbers as its family's context needs): every family is checked against one prior
    torch.manual_seed(seed)
    model.prior.load_state_dict(build_vae({"data_dim": DATA_DIM, "latent_dim": LATENT, "prior": prior,
                                           "hidden": [16]}).prior.state_dict())
    g = gen(seed + 100)
    noise = lambda shape, std: torch.randn(shape, generator=g) * std  # noqa: E731
    for p in model.decoder.parameters():
        p.add_(noise(p.shape, 0.4))
    relative = getattr(model.posterior, "contract_relative_perturbation", False)  # zuko's tuned initialisation
    for p in model.posterior.parameters():  # IAF's MADEs (planar has none: its flows come from the context)
        p.add_(noise(p.shape, relative_std(p, 0.2) if relative else 0.2))
    last = model.encoder.net[-1]  # rows: loc [D], raw scale [D], context [C]
    last.weight[:LATENT] = noise((LATENT, last.in_features), 0.5)
    last.bias[:LATENT] = noise(LATENT, 0.3)
    last.bias[2 * LATENT:] += noise(last.out_features - 2 * LATENT, 0.5)  # non-trivial flows
    if prior == "mog":
        k = model.prior.logits.shape[0]
        model.prior.logits.copy_(noise(k, 1.0))
        model.prior.loc.copy_(noise((k, LATENT), 0.8))
        model.prior.raw_scale.copy_(torch.rand((k, LATENT), generator=g) * 0.8 - 0.3)  # scales 0.55-0.91
    elif prior == "flow":
        for p in model.prior.parameters():
            p.add_(noise(p.shape, 0.15))
    elif prior == "vamp":
        model.prior.raw_pseudo_inputs.copy_(noise(model.prior.raw_pseudo_inputs.shape, 2.0))
    if prior == "vamp":  # its components are this same Gaussian head: q is exactly as wide as each of them
        sd = 1.0
    else:  # the prior's largest standard deviation (along its principal axis)
        sd = torch.linalg.eigvalsh(prior_covariance(model.prior)).max().sqrt().item()
    scale = max(1.5, 1.5 * sd) * (1.3 if posterior == "iaf" else 1.0) * widen
    last.weight[LATENT:2 * LATENT] = 0.0
    last.bias[LATENT:2 * LATENT] = inv_softplus(scale)
    return model


@torch.no_grad()
def quadrature_log_px(model, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(log of the integral of p(x|z) p(z) over the grid [B], prior mass on the grid), using the model's own
    decoder and prior.log_prob but torch.distributions for the Bernoulli likelihood."""
    z, h = grid()
    log_pz = model.prior.log_prob(z)  # [G]
    likelihood = Bernoulli(logits=model.decoder(z))  # batch [G, P]
    log_px_z = torch.stack([likelihood.log_prob(xi).sum(-1) for xi in x])  # [B, G]
    mass = (torch.logsumexp(log_pz, 0).exp() * h * h).item()
    return torch.logsumexp(log_px_z + log_pz, dim=1) + 2 * math.log(h), mass


def iw_standard_error(log_w: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log mean(w) from the weights themselves: [k, B] -> [B]."""
    w = (log_w - log_w.max(0).values).exp()
    return w.std(0) / math.sqrt(log_w.shape[0]) / w.mean(0)


@pytest.mark.parametrize("posterior, prior", PAIRS)  # a new prior gets the generic set-up (no perturbation)
def test_iw_estimate_matches_quadrature(posterior, prior):
    model = quadrature_model(posterior, prior)
    exact, mass = quadrature_log_px(model, ALL_X)  # [16]
    # the quadrature itself: (nearly) all the prior mass is on the grid (so the missing part is < 0.001 nats
    # of every p(x)), the grid integrates the prior to 1 within 1e-3 (a density with kinks, NSF's splines at
    # their bound, is integrated with an O(h^2) error: 2.5e-4 at this step, 5.7e-5 at half of it), and the p(x)
    # of the 16 binary x sum to that mass
    assert 1 - mass < 1e-3 * exact.exp().min()
    assert abs(mass - 1) < 1e-3
    assert abs(exact.exp().sum().item() - mass) < 1e-9

    estimate = model.iw_log_px(ALL_X, k=K_IW, generator=gen(1))  # [16], drawn in chunks
    log_w = log_w_of(model, ALL_X, K_IW, seed=1)  # [k, 16]: the same random numbers, via model.log_weights
    torch.testing.assert_close(estimate, iw_bound(log_w), rtol=0, atol=1e-9)
    se = iw_standard_error(log_w)  # [16]
    err = (estimate - exact).abs()
    tol = torch.clamp(5 * se, min=0.02)
    worst = (err / tol).argmax()
    print(f"\n[IW vs quadrature] {posterior:>10} x {prior:<8}: max |IW - exact| = {err.max():.4f} nats "
          f"(worst input: err {err[worst]:.4f}, SE {se[worst]:.4f}); max SE {se.max():.4f}; "
          f"mean ELBO gap {(exact - elbo_from_log_weights(log_w)).mean():.3f}")
    assert (err <= tol).all(), f"IW off by {err.tolist()} with SE {se.tolist()}"
    # ... and the comparison can fail: the ELBO (same weights) is far below the exact value
    assert ((exact - elbo_from_log_weights(log_w)) > tol).all()


# ---- orderings between bounds ------------------------------------------------------------------------------

def test_iw_bound_is_above_the_elbo_on_the_same_weights():
    model = quadrature_model("iaf", "mog")
    log_w = log_w_of(model, ALL_X, k=64, seed=2)  # [64, 16]
    gap = iw_bound(log_w) - elbo_from_log_weights(log_w)  # [16]
    assert (gap > 0).all()  # strictly, since the weights are not all equal
    equal = torch.full((5, 3), -2.5)  # equal weights: IW bound = ELBO = the common value
    torch.testing.assert_close(iw_bound(equal), torch.full((3,), -2.5))
    torch.testing.assert_close(elbo_from_log_weights(equal), torch.full((3,), -2.5))


def test_iw_bound_against_its_definition():
    log_w = torch.randn(37, 5, generator=gen(3)) * 3  # moderate values: the naive formula is exact
    torch.testing.assert_close(iw_bound(log_w), log_w.exp().mean(0).log())


def random_model(posterior: str, prior: str, seed: int = 0):
    """A small VAE (data_dim 4, latent 2) with noise added to every parameter, as the contract checks perturb
    one (any registered families; relative noise for zuko's tuned initialisation)."""
    return perturbed_model(posterior, prior, latent_dim=LATENT, seed=seed)


@pytest.mark.parametrize("posterior, prior", PAIRS)
def test_iw_with_one_sample_is_the_elbo(posterior, prior):
    model = random_model(posterior, prior)
    iw1 = model.iw_log_px(ALL_X, k=1, generator=gen(4))  # [16]
    with torch.no_grad():
        elbo1 = model.elbo(ALL_X, k=1, generator=gen(4))  # [16]
        other = model.elbo(ALL_X, k=1, generator=gen(5))
    torch.testing.assert_close(iw1, elbo1, rtol=0, atol=1e-10)
    assert not torch.allclose(iw1, other)  # the seed matters, so the equality above is not vacuous


def test_iw_bound_rises_with_k():
    """E[IW_k] rises with k towards log p(x). IW_k for nested k share their first samples (same seed), so
    the differences are paired; averaged over 128 inputs (the 16 binary x, 8 times each) x 40 repeats, each
    step must rise by > 4 SE. A proposal 3x too wide keeps the bound below log p(x) up to k = 1000."""
    model = quadrature_model("mean-field", "standard", widen=3.0)
    x = ALL_X.repeat(8, 1)  # [128, 4]
    exact, _ = quadrature_log_px(model, ALL_X)  # [16]
    ks, repeats = (1, 10, 100, 1000), 40
    iw = torch.stack([torch.stack([model.iw_log_px(x, k=k, generator=gen(1000 + r)) for k in ks])
                      for r in range(repeats)])  # [R, len(ks), 128]
    means = iw.mean((0, 2))
    print(f"\n[IW rises with k] k={ks}: mean IW {[round(m, 4) for m in means.tolist()]}, "
          f"mean exact {exact.mean().item():.4f}")
    for i in range(len(ks) - 1):
        step = (iw[:, i + 1] - iw[:, i]).flatten()  # [R * 128]
        se = step.std() / math.sqrt(step.numel())
        assert step.mean() > 4 * se, f"k {ks[i]} -> {ks[i + 1]}: mean rise {step.mean():.4f}, SE {se:.4f}"
    assert means[-1] < exact.mean()  # still below log p(x) on average


# ---- streaming and chunking --------------------------------------------------------------------------------

def extreme_log_weights() -> torch.Tensor:
    """[40, 7] log-weights where a naive log(mean(exp(.))) over- or underflows."""
    log_w = torch.randn(40, 7, generator=gen(6))
    log_w[:, 0] += 1e4  # all huge: exp overflows
    log_w[:, 1] -= 1e4  # all tiny: exp underflows to 0
    log_w[::2, 2] = -1e4  # mixed extremes
    log_w[1::2, 2] = 1e4
    log_w[:, 3] = -1e4
    log_w[-1, 3] = 1e4  # the maximum arrives in the last chunk only
    log_w[0, 4] = float("-inf")  # a zero weight, alone in a chunk of size 1
    log_w[:, 5] = float("-inf")  # all weights zero: the bound is -inf, not nan
    return log_w  # column 6: ordinary values


def test_streaming_iw_bound_equals_the_one_shot_bound():
    log_w = extreme_log_weights()
    with torch.no_grad():
        naive = log_w.exp().mean(0).log()
    assert not torch.isfinite(naive[:4]).any()  # these values do break a naive implementation
    one_shot = iw_bound(log_w)  # [7]
    assert torch.isfinite(one_shot[:5]).all() and torch.isfinite(one_shot[6])
    assert one_shot[5] == float("-inf")
    torch.testing.assert_close(one_shot[1], torch.logsumexp(log_w[:, 1], 0) - math.log(40))
    torch.testing.assert_close(one_shot[2], torch.tensor(1e4 - math.log(2)), rtol=0, atol=1e-9)
    torch.testing.assert_close(one_shot[3], torch.tensor(1e4 - math.log(40)), rtol=0, atol=1e-9)
    for sizes in ([40], [1] * 40, [1, 5, 10, 24], [24, 10, 5, 1], [7, 7, 7, 7, 7, 5]):
        streamed = streaming_iw_bound(log_w.split(sizes))
        torch.testing.assert_close(streamed, one_shot, rtol=0, atol=1e-9)


def test_streaming_iw_bound_needs_a_chunk():
    with pytest.raises(ValueError):
        streaming_iw_bound([])


@pytest.mark.parametrize("posterior", list(POSTERIORS))
@pytest.mark.parametrize("batch", [3, 5, 16])
def test_iw_log_px_does_not_depend_on_the_chunk_size(posterior, batch):
    """Batches whose B * D is not a multiple of 16 matter: torch's CPU randn only splits consistently across
    calls when every call draws a multiple of 16 numbers (so B = 16, D = 2 alone would not catch a
    chunk-dependent sampler; B = 3 and 5 do)."""
    model = quadrature_model(posterior, "mog")
    x = ALL_X[torch.randperm(16, generator=gen(16))[:batch]]  # [B, 4]
    k = 200
    results = {chunk: model.iw_log_px(x, k=k, chunk=chunk, generator=gen(7))
               for chunk in (None, 1, 3, 64, 199, 200, 1000)}
    for chunk, value in results.items():
        torch.testing.assert_close(value, results[None], rtol=0, atol=1e-10, msg=f"chunk={chunk}")
    torch.testing.assert_close(results[None], iw_bound(log_w_of(model, x, k, seed=7)), rtol=0, atol=1e-10)
    assert not torch.allclose(results[None], model.iw_log_px(x, k=k, generator=gen(8)))


# ---- the reparameterization gradient ------------------------------------------------------------------------

def directional_derivative_errors(model, x: torch.Tensor, steps: tuple[float, ...] = (1e-5, 2e-6, 4e-7)
                                  ) -> dict[str, float]:
    """For a random direction over each part's parameters: |autograd - central finite difference| / scale of the
    seeded ELBO (a deterministic function of the parameters once the generator seed is fixed), the smallest over
    the step sizes `steps`. ReLU decoders and ELU monotonic networks (zuko's NAF) make the ELBO smooth only
    piecewise: a stencil that straddles a kink is off by a share of the gradient's jump whatever its step, and a
    smaller step straddles fewer; a cut path or a double count is off at every step."""
    f = lambda: model.elbo(x, k=3, generator=gen(14)).sum()  # noqa: E731
    model.zero_grad(set_to_none=True)
    f().backward()
    errors = {}
    g = gen(15)
    for part in ("encoder", "decoder", "posterior", "prior"):
        params = [p for p in getattr(model, part).parameters() if p.numel()]
        if not params:
            continue
        direction = [torch.randn(p.shape, generator=g) for p in params]
        autograd = sum((p.grad * d).sum() for p, d in zip(params, direction)).item()
        errors[part] = min(abs(autograd - finite_difference(f, params, direction, eps)) / max(1.0, abs(autograd))
                           for eps in steps)
    return errors


@torch.no_grad()
def finite_difference(f, params: list[torch.Tensor], direction: list[torch.Tensor], eps: float) -> float:
    """The derivative of f() along `direction`, fourth-order central difference (truncation error O(eps^4), so a
    strongly curved map, a Householder product of short vectors, neither passes for a wrong gradient nor fails
    for a right one); the parameters are restored."""
    values = {}
    for step in (2, 1, -1, -2):  # f at theta + step * eps * direction
        for p, d in zip(params, direction):
            p.add_(step * eps * d)
        values[step] = f().item()
        for p, d in zip(params, direction):
            p.sub_(step * eps * d)
    return (8 * (values[1] - values[-1]) - (values[2] - values[-2])) / (12 * eps)


@pytest.mark.parametrize("posterior, prior", PAIRS)
def test_elbo_gradient_is_the_derivative_of_the_seeded_elbo(posterior, prior):
    """No path is cut (a stray detach) or double-counted: autograd = finite differences, part by part."""
    model = random_model(posterior, prior)
    errors = directional_derivative_errors(model, ALL_X)
    assert max(errors.values()) < 1e-6, errors


def test_gradient_check_detects_a_detached_path():
    model = random_model("mean-field", "mog")
    model.prior.log_prob = lambda z, lp=model.prior.log_prob: lp(z.detach())  # cut z -> log p(z)
    assert directional_derivative_errors(model, ALL_X)["encoder"] > 1e-3


# ---- KL and the ELBO decomposition -------------------------------------------------------------------------

@torch.no_grad()
def test_analytic_kl_equals_monte_carlo_kl():
    model = build_vae({"data_dim": DATA_DIM, "latent_dim": LATENT, "hidden": [16], "kl": "analytic"})
    g = gen(9)
    for p in model.encoder.parameters():  # locations and scales that vary with x, scales far from 1
        p.add_(torch.randn(p.shape, generator=g) * 0.7)
    loc, scale, _ = model.encoder(ALL_X)
    assert scale.min() < 0.6 and scale.max() > 1.3
    _, kl_analytic = model.elbo_terms(ALL_X, k=1, generator=gen(10))  # [16]
    g = gen(11)
    kl_samples = torch.cat([(lambda _, log_pz, log_q: log_q - log_pz)(*model.log_weights(ALL_X, 20_000, g))
                            for _ in range(5)])  # [k = 100000, 16]
    kl_mc, se = kl_samples.mean(0), kl_samples.std(0) / math.sqrt(kl_samples.shape[0])
    assert ((kl_analytic - kl_mc).abs() < 5 * se).all(), f"analytic {kl_analytic} vs MC {kl_mc} +- {se}"
    # the comparison is sharp enough to catch a formula that forgets the -log(scale) term
    forgetful = 0.5 * (loc.square() + scale.square() - 1).sum(-1)
    assert ((forgetful - kl_mc).abs() > 5 * se).any()


@pytest.mark.parametrize("posterior, prior", PAIRS)
@torch.no_grad()
def test_elbo_decomposition(posterior, prior):
    """elbo = reconstruction - kl, with reconstruction = E log p(x|z) and kl = E[log q - log p] on the same z."""
    model = random_model(posterior, prior)
    k = 7
    reconstruction, kl = model.elbo_terms(ALL_X, k=k, generator=gen(12))  # [16] each
    elbo = model.elbo(ALL_X, k=k, generator=gen(12))
    log_px_z, log_pz, log_q = model.log_weights(ALL_X, k, gen(12))  # [k, 16] each
    torch.testing.assert_close(elbo, reconstruction - kl)
    torch.testing.assert_close(reconstruction, log_px_z.mean(0))
    torch.testing.assert_close(kl, (log_q - log_pz).mean(0))
    torch.testing.assert_close(elbo, elbo_from_log_weights(log_px_z + log_pz - log_q))


@torch.no_grad()
def test_elbo_decomposition_analytic():
    model = build_vae({"data_dim": DATA_DIM, "latent_dim": LATENT, "hidden": [16], "kl": "analytic"})
    reconstruction, kl = model.elbo_terms(ALL_X, k=3, generator=gen(13))
    torch.testing.assert_close(model.elbo(ALL_X, k=3, generator=gen(13)), reconstruction - kl)
    loc, scale, _ = model.encoder(ALL_X)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale),
                                                 torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl, expected)


def test_iw_chunks_are_sized_with_the_families_own_activations():
    """A chunk's memory counts what the posterior's flow and the prior's log_prob hold per sample: a VampPrior
    with K = 500 pseudo-inputs and D = 40 holds up to four [chunk, B, K] terms and two [chunk, B, D] (matrix-product
    form and its subnormal-free log-sum-exp; tests/test_mixture_log_prob.py measures it)."""
    base = {"hidden": [300, 300], "latent_dim": 40}
    plain = build_vae(base).floats_per_iw_sample
    vamp = build_vae({**base, "prior": "vamp", "prior_components": 500}).floats_per_iw_sample
    assert vamp - plain == 4 * 500 + 2 * 40
    iaf = build_vae({**base, "posterior": "iaf", "flow_hidden": 64, "posterior_flow_steps": 3}).floats_per_iw_sample
    maf = build_vae({**base, "prior": "flow", "flow_hidden": 64, "prior_flow_steps": 2}).floats_per_iw_sample
    assert iaf - plain >= 3 * (64 + 2 * 40) and maf - plain >= 2 * (64 + 2 * 40)
    assert build_vae({**base, "prior": "mog", "prior_components": 7}).floats_per_iw_sample - plain == 4 * 7 + 2 * 40
