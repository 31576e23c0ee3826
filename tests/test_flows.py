"""Flows: every returned log-determinant equals log|det J| of the map (autograd Jacobian, float64), MAF and the
flow prior invert exactly in both directions, the planar constraint keeps the map invertible, and the IAF gate
starts open (bias +2).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from vae_core import build_vae
from vae_core.contract import logdet_errors
from vae_core.contract.tools import LOGDET_TOL
from vae_core.flows import IAFStep, MAFLayer, planar, planar_constrain
from vae_core.flows.autoregressive import GATE_BIAS_INIT
from vae_core.posteriors import IAFPosterior, PlanarPosterior
from vae_core.priors import FlowPrior

TOL = LOGDET_TOL  # log-det vs log|det J|
ROUND_TRIP_TOL = 1e-8  # stricter than the 1e-5 asked for: float64 round trips are exact to ~1e-13


pytestmark = pytest.mark.usefixtures("float64", "one_thread")


def perturb(module: torch.nn.Module, seed: int, std: float = 0.5) -> None:
    """Add noise to every parameter so the transforms are far from their (near-identity) init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def random_points(n: int, dim: int, seed: int, scale: float = 1.5) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * scale  # [n, D]


def assert_logdet_matches_jacobian(fn, points: torch.Tensor) -> None:
    errors = logdet_errors(fn, points)
    assert max(errors) < TOL, f"log-det differs from log|det J| by up to {max(errors):.3g}"


# ---- IAF ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
def test_iaf_step_logdet(order):
    dim, context_dim = 4, 5
    step = IAFStep(dim, hidden=8, context_dim=context_dim, order=torch.tensor(order))
    perturb(step, seed=sum(order) + order[0])
    h = torch.randn(context_dim, generator=torch.Generator().manual_seed(1))  # [C]
    assert_logdet_matches_jacobian(lambda z: step(z, h), random_points(4, dim, seed=2))


def test_iaf_logdet_check_detects_a_leaky_made():
    """The same claimed log-det (sum log sigma) is wrong once the shift m_0 reads z_0: the check must notice."""
    dim = 4
    step = IAFStep(dim, hidden=dim - 1, context_dim=3, order=torch.arange(dim))
    perturb(step, seed=5, std=1.0)
    h = torch.randn(3, generator=torch.Generator().manual_seed(1))
    points = random_points(3, dim, seed=2)
    assert max(logdet_errors(lambda z: step(z, h), points)) < TOL
    with torch.no_grad():
        step.made.mask2[0, dim - 2] = 1.0  # output m_0 now reads the top-degree unit, which sees z_0
    assert min(logdet_errors(lambda z: step(z, h), points)) > 10 * TOL  # caught at every point


def test_iaf_posterior_flow_logdet():
    dim, context_dim = 3, 6
    post = IAFPosterior(dim, steps=3, hidden=6, context_dim=context_dim)
    perturb(post, seed=3, std=0.3)
    h = torch.randn(1, context_dim, generator=torch.Generator().manual_seed(4))  # [B=1, C]
    fn = lambda z: tuple(t[0] for t in post.flow(z[None], h))  # noqa: E731  [D] -> ([D], [])
    assert_logdet_matches_jacobian(fn, random_points(4, dim, seed=5))


def test_iaf_posterior_flow_is_per_sample_on_batches():
    """flow on [k, B, D] with context [B, C] equals the flow of each (sample, input) pair on its own."""
    dim, context_dim = 3, 6
    post = IAFPosterior(dim, steps=2, hidden=6, context_dim=context_dim)
    perturb(post, seed=6, std=0.3)
    g = torch.Generator().manual_seed(7)
    z, h = torch.randn(4, 2, dim, generator=g), torch.randn(2, context_dim, generator=g)  # [k, B, D], [B, C]
    y, ld = post.flow(z, h)  # [k, B, D], [k, B]
    assert y.shape == (4, 2, dim) and ld.shape == (4, 2)
    for i in range(4):
        for b in range(2):
            y1, ld1 = post.flow(z[i, b][None], h[b][None])
            torch.testing.assert_close(y[i, b], y1[0])
            torch.testing.assert_close(ld[i, b], ld1[0])


def test_iaf_gate_bias_starts_at_plus_two():
    dim, context_dim = 4, 8
    step = IAFStep(dim, hidden=8, context_dim=context_dim, order=torch.arange(dim))
    bias = step.made.layers[-1].bias  # [2D]: (m, s), parameter-major
    assert GATE_BIAS_INIT == 2.0
    assert torch.equal(bias[dim:], torch.full((dim,), 2.0))  # the gate half ...
    assert (bias[:dim] != 2.0).all()  # ... and only the gate half
    g = torch.Generator().manual_seed(0)
    z, h = torch.randn(2000, dim, generator=g), torch.randn(2000, context_dim, generator=g)
    _, s = step.made(z, h)  # the gate pre-activation, as IAFStep.forward reads it
    assert abs(torch.sigmoid(s).mean().item() - torch.sigmoid(torch.tensor(2.0)).item()) < 0.03  # ~0.88
    # log|det| = sum log sigma(s): near D * log sigmoid(2) at init
    _, log_abs_det = step(z, h)
    assert abs(log_abs_det.mean().item() / dim - math.log(torch.sigmoid(torch.tensor(2.0)).item())) < 0.05

    model = build_vae({"data_dim": 4, "latent_dim": 3, "posterior": "iaf", "hidden": [8],
                       "posterior_flow_steps": 3})
    for st in model.posterior.steps:
        assert torch.equal(st.made.layers[-1].bias[3:], torch.full((3,), 2.0))


# ---- planar ------------------------------------------------------------------------------------------------

def contracting_uw(dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (u, w) with w.u < -1, so the unconstrained planar map would not be invertible."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g)
    noise = torch.randn(dim, generator=g)
    noise -= (noise @ w) / (w @ w) * w  # orthogonal to w
    u = -(1.5 + torch.rand((), generator=g)) * w / (w @ w) + noise  # w.u in (-2.5, -1.5)
    assert (w @ u) < -1
    return u, w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planar_constraint(seed):
    u, w = contracting_uw(4, seed)
    u_hat = planar_constrain(u, w)
    assert (w @ u_hat) >= -1 and not torch.allclose(u, u_hat)  # the constraint is active and satisfied
    # on a batch of random (u, w) of both signs too
    g = torch.Generator().manual_seed(10 + seed)
    U, W = torch.randn(500, 4, generator=g) * 3, torch.randn(500, 4, generator=g)
    assert ((W * planar_constrain(U, W)).sum(-1) >= -1).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planar_logdet_and_invertibility(seed):
    dim = 3
    u, w = contracting_uw(dim, seed)
    b = torch.tensor(0.3)
    points = random_points(4, dim, seed=seed + 20)
    # also the point on the hyperplane w.z + b = 0, where tanh' = 1 and the raw map would fold (1 + w.u < 0)
    on_plane = points[0] - ((w @ points[0]) + b) / (w @ w) * w
    points = torch.cat([points, on_plane[None]])
    assert 1 + (w @ u) < 0  # without the constraint det J would be negative here
    assert_logdet_matches_jacobian(lambda z: planar(z, u, w, b), points)
    for p in points:
        assert torch.linalg.det(jacobian(lambda v: planar(v, u, w, b)[0], p)) > 0  # orientation-preserving


def test_planar_posterior_flow_logdet():
    dim, steps = 3, 3
    post = PlanarPosterior(dim, steps)
    assert post.context_dim == steps * (2 * dim + 1)
    g = torch.Generator().manual_seed(8)
    params = []
    for i in range(steps):  # step 0 contracting (w.u < -1), the others random
        u, w = contracting_uw(dim, seed=30 + i) if i == 0 else (torch.randn(dim, generator=g),
                                                               torch.randn(dim, generator=g))
        params += [u, w, torch.randn(1, generator=g)]
    context = torch.cat(params)[None]  # [B=1, steps * (2D + 1)]
    fn = lambda z: tuple(t[0] for t in post.flow(z[None], context))  # noqa: E731
    assert_logdet_matches_jacobian(fn, random_points(5, dim, seed=9, scale=1.0))


# ---- MAF and the flow prior --------------------------------------------------------------------------------

def maf_layer(dim: int, order: list[int], seed: int) -> MAFLayer:
    layer = MAFLayer(dim, hidden=2 * dim, order=torch.tensor(order))
    perturb(layer, seed)
    return layer


def flow_prior(seed: int, dim: int = 3, layers: int = 3) -> FlowPrior:
    prior = FlowPrior(dim, layers, hidden=2 * dim)
    perturb(prior, seed, std=0.4)
    return prior


def check_round_trips(forward, inverse, u: torch.Tensor, z: torch.Tensor) -> None:
    """inverse(forward(u)) == u, forward(inverse(z)) == z, and the log-dets are opposite at matching points."""
    z_of_u, ld_fwd = forward(u)  # [N, D], [N]
    u_back, ld_inv = inverse(z_of_u)
    torch.testing.assert_close(u_back, u, atol=ROUND_TRIP_TOL, rtol=0)
    torch.testing.assert_close(ld_fwd, -ld_inv, atol=ROUND_TRIP_TOL, rtol=0)
    u_of_z, ld_inv = inverse(z)
    z_back, ld_fwd = forward(u_of_z)
    torch.testing.assert_close(z_back, z, atol=ROUND_TRIP_TOL, rtol=0)
    torch.testing.assert_close(ld_fwd, -ld_inv, atol=ROUND_TRIP_TOL, rtol=0)


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]])
def test_maf_layer(order):
    layer = maf_layer(4, order, seed=order[0] * 7 + order[1])
    u, z = random_points(6, 4, seed=1), random_points(6, 4, seed=2)
    _, s = layer._shift_log_scale(z)
    assert s.abs().max() > 0.5  # the perturbation makes the scales non-trivial
    assert_logdet_matches_jacobian(layer.forward, u[:3])
    assert_logdet_matches_jacobian(layer.inverse, z[:3])
    check_round_trips(layer.forward, layer.inverse, u, z)


def test_maf_layer_one_dim():
    layer = maf_layer(1, [0], seed=3)
    u, z = random_points(5, 1, seed=1), random_points(5, 1, seed=2)
    assert_logdet_matches_jacobian(layer.forward, u)
    check_round_trips(layer.forward, layer.inverse, u, z)


@pytest.mark.parametrize("seed", [0, 1])
def test_flow_prior_forward_inverse(seed):
    prior = flow_prior(seed)
    u, z = random_points(3, 3, seed=seed + 1), random_points(3, 3, seed=seed + 2)
    assert_logdet_matches_jacobian(prior.forward, u)
    assert_logdet_matches_jacobian(prior.inverse, z)
    # sample -> inverse -> forward, and random base points -> forward -> inverse
    samples = prior.sample(200, generator=torch.Generator().manual_seed(seed))  # [n, D]
    base = random_points(200, 3, seed=seed + 3, scale=1.0)
    check_round_trips(prior.forward, prior.inverse, base, samples)
    # the density is the pulled-back one: log N(f^-1(z)) + log|det df^-1/dz|
    u_of_z, ld = prior.inverse(samples)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(u_of_z).sum(-1) + ld
    torch.testing.assert_close(prior.log_prob(samples), expected)


def test_flow_prior_round_trip_detects_a_wrong_layer_order():
    """A forward that applied the layers in the inverse's order would not round-trip: the check must see it."""
    prior = flow_prior(seed=4)
    u = random_points(50, 3, seed=1, scale=1.0)

    def wrong_forward(v):
        total = v.new_zeros(v.shape[:-1])
        for layer in reversed(prior.layers):
            v, ld = layer(v)
            total = total + ld
        return v, total

    with pytest.raises(AssertionError):
        check_round_trips(wrong_forward, prior.inverse, u, prior.sample(50))
