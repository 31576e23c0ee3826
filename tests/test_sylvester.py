"""Householder and Sylvester flows: log-dets equal the autograd Jacobian's (float64), Q is orthogonal (the
iteration's tolerance is the official code's, its fixed count proven for the condition numbers it covers, and a
Q beyond them is flagged), Householder products are orthogonal, T-SNF's
permutation is the reversal matrix, and r_ii r̃_ii > -1 holds for any raw encoder output. The contract, quadrature
and E_q[p/q] = 1 tests and the stacked = alone tests pick the families up from `POSTERIORS`."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from tests.test_flows import TOL, assert_logdet_matches_jacobian, logdet_errors, random_points
from vae_core import build_vae
from vae_core.config import ConfigError
from vae_core.posteriors import (HouseholderPosterior, HouseholderSylvesterPosterior, OrthogonalSylvesterPosterior,
                                 TriangularSylvesterPosterior)
from vae_core.flows import sylvester as sylvester_module
from vae_core.flows.sylvester import (ORTHO_MAX_CONDITION, ORTHO_TOLERANCE, ORTHO_TOLERANCE_FULL, householder_product,
                                      ortho_iterations, orthogonality_error, orthogonality_threshold, orthogonalize,
                                      ortho_tolerance, sylvester, sylvester_householder, sylvester_triangular,
                                      triangular_pair)

pytestmark = pytest.mark.usefixtures("float64", "one_thread")

NEW_FAMILIES = ["householder", "sylvester-orthogonal", "sylvester-householder", "sylvester-triangular"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flow_fn(posterior, context: torch.Tensor):
    """One point [D] -> (flow(z) [D], log|det| []) for context [1, C]."""
    return lambda z: tuple(t[0] for t in posterior.flow(z[None], context))


POSTERIOR_CASES = {
    "householder": lambda: HouseholderPosterior(4, steps=3),
    "o-snf-m2": lambda: OrthogonalSylvesterPosterior(4, steps=3, m=2),
    "o-snf-full": lambda: OrthogonalSylvesterPosterior(4, steps=2, m=4),
    "h-snf": lambda: HouseholderSylvesterPosterior(4, steps=3, reflections=3),
    "t-snf": lambda: TriangularSylvesterPosterior(4, steps=3),
}


@pytest.mark.parametrize("case", list(POSTERIOR_CASES))
def test_posterior_flow_logdet_matches_the_jacobian(case):
    """Exact (1e-6) where Q is exactly orthogonal; O-SNF's Q is orthogonal to the paper's tolerance only
    (||QᵀQ - I||_F <= 1e-5 at M = D), and its log-det is then right to within 10 x that tolerance per flow."""
    post = POSTERIOR_CASES[case]()
    context = torch.randn(1, post.context_dim, generator=gen(1)) * 1.5  # [1, C]: far from the identity
    fn = flow_fn(post, context)
    points = random_points(5, 4, seed=2)
    tol = 10 * post.n_steps * ortho_tolerance(post.dim, post.m) if case.startswith("o-snf") else TOL
    errors = logdet_errors(fn, points)
    assert max(errors) < tol, f"log-det differs from log|det J| by up to {max(errors):.3g}"
    moved = max((fn(p)[0] - p).abs().max().item() for p in points)
    assert moved > 0.1, "the flow is (nearly) the identity: the check would be vacuous"


@pytest.mark.parametrize("dim, m", [(4, 2), (4, 4), (3, 1)])
def test_sylvester_logdet_with_an_exactly_orthogonal_q(dim, m):
    q, _ = torch.linalg.qr(torch.randn(dim, m, generator=gen(20 + m)))  # [D, M], QᵀQ = I to 1e-15
    r, r_tilde = triangular_pair(torch.randn(m, m, generator=gen(21)) * 1.5, torch.randn(m, generator=gen(22)) * 2,
                                 torch.randn(m, generator=gen(23)) * 2)
    b = torch.randn(m, generator=gen(24))
    assert_logdet_matches_jacobian(lambda z: sylvester(z, q, r, r_tilde, b), random_points(5, dim, seed=25))


def test_householder_flow_is_volume_preserving_and_not_the_identity():
    post = HouseholderPosterior(3, steps=2)
    context = torch.randn(1, post.context_dim, generator=gen(3))
    for p in random_points(4, 3, seed=4):
        J = jacobian(lambda v: flow_fn(post, context)(v)[0], p)  # [D, D]
        torch.testing.assert_close(J.T @ J, torch.eye(3), rtol=0, atol=1e-12)  # orthogonal
        assert not torch.allclose(J, torch.eye(3))


def test_posterior_flows_are_per_sample_on_batches():
    """flow on [k, B, D] with context [B, C] equals the flow of each (sample, input) pair on its own."""
    for case, make in POSTERIOR_CASES.items():
        post = make()
        z, context = torch.randn(3, 2, 4, generator=gen(5)), torch.randn(2, post.context_dim, generator=gen(6))
        y, ld = post.flow(z, context)  # [k, B, D], [k, B]
        assert y.shape == (3, 2, 4) and ld.shape == (3, 2), case
        for i in range(3):
            for b in range(2):
                y1, ld1 = post.flow(z[i, b][None], context[b][None])
                torch.testing.assert_close(y[i, b], y1[0], msg=case)
                torch.testing.assert_close(ld[i, b], ld1[0], msg=case)


# ---- Q -----------------------------------------------------------------------------------------------------

def test_orthogonalisation_tolerances_are_the_official_codes():
    assert ORTHO_TOLERANCE_FULL == 1e-5 and ORTHO_TOLERANCE == 1e-6
    assert ortho_tolerance(8, 8) == 1e-5 and ortho_tolerance(8, 3) == 1e-6


def with_condition(dim: int, m: int, condition: float, seed: int) -> torch.Tensor:
    """raw [D, M] with singular values spread log-uniformly over [1, condition], random singular vectors."""
    u, _ = torch.linalg.qr(torch.randn(dim, m, generator=gen(seed)))
    v, _ = torch.linalg.qr(torch.randn(m, m, generator=gen(seed + 1)))
    sigma = torch.logspace(0, torch.log10(torch.tensor(condition)).item(), m)
    return 3 * u @ torch.diag(sigma) @ v.T


@pytest.mark.parametrize("m", [1, 2, 16, 128])
def test_the_iteration_count_is_enough_for_the_worst_singular_value(m):
    """The proof's scalar recursion: the count takes x_min = 1 / (κ_max sqrt(m)) to within tolerance / 2, and one
    update fewer does not (the count is the least that works)."""
    for tolerance in (ORTHO_TOLERANCE, ORTHO_TOLERANCE_FULL):
        n = ortho_iterations(m, tolerance)
        x = 1 / (ORTHO_MAX_CONDITION * m ** 0.5)
        for i in range(n):
            before, x = x, x * (15 - 10 * x * x + 3 * x ** 4) / 8
        assert m ** 0.5 * (1 - x * x) <= tolerance / 2 < m ** 0.5 * (1 - before * before)


def test_one_update_maps_each_singular_value_by_the_scalar_update(monkeypatch):
    """The proof reasons on singular values: one matrix update must act on them as `singular_value_update`."""
    u, _ = torch.linalg.qr(torch.randn(7, 4, generator=gen(30)))
    v, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen(31)))
    x = torch.tensor([1e-3, 0.2, 0.7, 1.0])
    raw = u @ torch.diag(x) @ v.T  # [D, M], ||raw||_F = ||x||
    monkeypatch.setattr(sylvester_module, "ortho_iterations", lambda m, tolerance: 1)
    q, _ = orthogonalize(raw, ORTHO_TOLERANCE)
    expected = torch.tensor([sylvester_module.singular_value_update(v) for v in (x / x.norm()).tolist()])
    torch.testing.assert_close(torch.linalg.svdvals(q).flip(0), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dim, m, condition", [(6, 3, 10.0), (5, 5, 1e3), (8, 1, 1.0), (32, 16, ORTHO_MAX_CONDITION)])
def test_orthogonalize_reaches_its_tolerance_and_is_the_polar_factor(dim, m, condition):
    raw = torch.stack([with_condition(dim, m, condition, seed) for seed in range(0, 40, 2)])  # [B, D, M]
    q, converged = orthogonalize(raw, ortho_tolerance(dim, m))
    assert converged.all() and (orthogonality_error(q) <= ortho_tolerance(dim, m)).all()
    u, _, vh = torch.linalg.svd(raw, full_matrices=False)
    torch.testing.assert_close(q, u @ vh, rtol=0, atol=1e-5)  # raw (rawᵀraw)^(-1/2): the iteration's limit
    for i in (0, 7):  # each matrix on its own: its Q does not depend on the rest of the batch
        torch.testing.assert_close(orthogonalize(raw[i:i + 1], ortho_tolerance(dim, m))[0][0], q[i], rtol=0, atol=0)


def test_one_update_too_few_leaves_the_worst_matrix_unconverged(monkeypatch):
    """The check is live: with the count cut by a fifth, a raw at the proven condition number is flagged."""
    raw = with_condition(32, 16, ORTHO_MAX_CONDITION, 3)[None]  # [1, D, M]
    count = ortho_iterations(16, ORTHO_TOLERANCE)
    monkeypatch.setattr(sylvester_module, "ortho_iterations", lambda m, tolerance: count * 4 // 5)
    q, converged = orthogonalize(raw, ORTHO_TOLERANCE)
    assert not converged.any() and orthogonality_error(q).item() > ORTHO_TOLERANCE


def test_a_raw_beyond_the_proven_condition_gives_nan_log_q_not_a_wrong_log_det():
    post = OrthogonalSylvesterPosterior(8, steps=2, m=4)
    context = torch.randn(3, post.context_dim, generator=gen(5))  # [B, C]
    raw_at = post.context_dim // post.n_steps - post.q_size  # the first flow's raw Q
    context[1, raw_at:raw_at + post.q_size] = with_condition(8, 4, 1e12, 7).flatten()
    _, log_abs_det = post.flow(torch.randn(5, 3, 8, generator=gen(6)), context)  # [k, B]
    assert log_abs_det[:, [0, 2]].isfinite().all() and log_abs_det[:, 1].isnan().all()


def test_orthogonalize_gives_the_same_numbers_under_vmap():
    raw = torch.randn(3, 4, 6, 2, generator=gen(9))  # [R, B, D, M]
    eager = orthogonalize(raw, ORTHO_TOLERANCE)
    torch.testing.assert_close(torch.func.vmap(lambda r: orthogonalize(r, ORTHO_TOLERANCE))(raw), eager,
                               rtol=0, atol=0)


def test_the_threshold_is_the_tolerance_or_the_dtypes_rounding_floor():
    assert orthogonality_threshold(128, 16, torch.float64) == ORTHO_TOLERANCE
    assert orthogonality_threshold(128, 16, torch.float32) == pytest.approx(16 * 128 ** 0.5 * 2 ** -24)
    raw = torch.randn(64, 128, 16, generator=gen(11)).float()  # [B, D, M], the benchmark's O-SNF size in float32
    assert orthogonalize(raw, ORTHO_TOLERANCE)[1].all()


def test_householder_product_is_orthogonal_and_the_product_of_the_reflections():
    vs = torch.randn(5, 3, 4, generator=gen(10))  # [B, H, D]
    q = householder_product(vs)  # [B, D, D]
    torch.testing.assert_close(q.transpose(-1, -2) @ q, torch.eye(4).expand(5, 4, 4), rtol=0, atol=1e-12)
    for b in range(5):
        expected = torch.eye(4)
        for v in vs[b]:  # H_1 first: Q = H_3 H_2 H_1
            expected = (torch.eye(4) - 2 * torch.outer(v, v) / (v @ v)) @ expected
        torch.testing.assert_close(q[b], expected, rtol=0, atol=1e-12)


def test_reflections_applied_to_vectors_are_the_flow_with_q_formed():
    """H-SNF's fast path (reflections applied one by one) against `sylvester` with Q = householder_product."""
    vs = torch.randn(5, 3, 6, generator=gen(40))  # [B, H, D]
    r, r_tilde = triangular_pair(torch.randn(5, 6, 6, generator=gen(41)), torch.randn(5, 6, generator=gen(42)),
                                 torch.randn(5, 6, generator=gen(43)))
    b, z = torch.randn(5, 6, generator=gen(44)), torch.randn(4, 5, 6, generator=gen(45))  # [B, D], [k, B, D]
    units = vs / vs.norm(dim=-1, keepdim=True)
    fast = sylvester_householder(z, units, r, r_tilde, b)
    torch.testing.assert_close(fast, sylvester(z, householder_product(vs), r, r_tilde, b), rtol=1e-12, atol=1e-12)
    wrong_order = sylvester_householder(z, units.flip(-2), r, r_tilde, b)  # the reflections in reverse order
    assert (wrong_order[0] - fast[0]).abs().max() > 1e-3


def test_triangular_flow_reverse_is_the_reversal_permutation():
    r, r_tilde = triangular_pair(torch.randn(4, 4, generator=gen(11)), torch.randn(4, generator=gen(12)),
                                 torch.randn(4, generator=gen(13)))
    b, z = torch.randn(4, generator=gen(14)), torch.randn(6, 4, generator=gen(15))
    reversal = torch.eye(4).flip(0)
    for reverse, q in [(False, torch.eye(4)), (True, reversal)]:
        y, ld = sylvester_triangular(z, r, r_tilde, b, reverse)
        y_q, ld_q = sylvester(z, q, r, r_tilde, b)
        torch.testing.assert_close((y, ld), (y_q, ld_q), rtol=0, atol=1e-12)


def test_triangular_posterior_alternates_identity_and_reversal():
    """T-SNF: flow 0 with Q = I, flow 1 with Q = the reversal, flow 2 with Q = I (the official code's order)."""
    post = TriangularSylvesterPosterior(3, steps=3)
    context = torch.randn(2, post.context_dim, generator=gen(17))  # [B, C]
    z = torch.randn(4, 2, 3, generator=gen(18))  # [k, B, D]
    expected, total = z, torch.zeros(4, 2)
    for i, params in enumerate(context.unflatten(-1, (3, -1)).unbind(1)):  # [B, 9 + 9] each
        full, diag, diag_tilde, b = params.split([9, 3, 3, 3], dim=-1)
        r, r_tilde = triangular_pair(full.unflatten(-1, (3, 3)), diag, diag_tilde)
        expected, ld = sylvester(expected, torch.eye(3).flip(0) if i == 1 else torch.eye(3), r, r_tilde, b)
        total = total + ld
    torch.testing.assert_close(post.flow(z, context), (expected, total), rtol=0, atol=1e-12)


# ---- the invertibility constraint --------------------------------------------------------------------------

def test_diagonals_keep_the_map_invertible_for_any_raw_input():
    """r_ii r̃_ii > -1 for raw values up to |15| (strictly), >= -1 for any finite raw value (tanh saturates to
    exactly +-1 in floating point), and det J > 0 at the worst point (h' = 1) of a flow with r r̃ near -1."""
    grid = torch.linspace(-15, 15, 61)
    raw, raw_tilde = torch.meshgrid(grid, grid, indexing="ij")  # [61, 61]
    r, r_tilde = triangular_pair(torch.zeros(61, 61, 1, 1), raw.reshape(61, 61, 1), raw_tilde.reshape(61, 61, 1))
    product = (r * r_tilde).squeeze(-1).squeeze(-1)
    assert (product > -1).all()
    extreme = torch.tensor([-1e30, -1e3, -50.0, 50.0, 1e3, 1e30])
    r, r_tilde = triangular_pair(torch.zeros(6, 6, 1, 1), extreme.reshape(6, 1, 1).expand(6, 6, 1),
                                 extreme.reshape(1, 6, 1).expand(6, 6, 1))
    assert ((r * r_tilde) >= -1).all()
    # a T-SNF step with r r̃ = tanh(-4) tanh(4) ≈ -0.9987 and b = 0: at z = 0, h' = 1, det J = 1 + r r̃ > 0
    d = 3
    r, r_tilde = triangular_pair(torch.randn(d, d, generator=gen(16)), torch.full((d,), -4.0), torch.full((d,), 4.0))
    J = jacobian(lambda v: sylvester_triangular(v, r, r_tilde, torch.zeros(d), False)[0], torch.zeros(d))
    assert torch.linalg.det(J) > 0
    assert_logdet_matches_jacobian(lambda v: sylvester_triangular(v, r, r_tilde, torch.zeros(d), False),
                                   torch.zeros(1, d))


# ---- config ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_families_build_from_config_keys(family):
    model = build_vae({"data_dim": 6, "latent_dim": 5, "posterior": family, "hidden": [8], "posterior_flow_steps": 3,
                       **({"posterior_orthogonal_vectors": 2} if family == "sylvester-orthogonal" else {}),
                       **({"posterior_householder_reflections": 4} if family == "sylvester-householder" else {})})
    post = model.posterior
    assert post.n_steps == 3
    if family == "sylvester-orthogonal":
        assert post.m == 2 and post.context_dim == 3 * (4 + 6 + 5 * 2)
    if family == "sylvester-householder":
        assert post.reflections == 4 and post.context_dim == 3 * (25 + 15 + 4 * 5)
    if family == "sylvester-triangular":
        assert post.context_dim == 3 * (25 + 15)


def test_orthogonal_vectors_default_to_latent_dim_and_reflections_to_at_most_eight():
    model = build_vae({"data_dim": 6, "latent_dim": 5, "posterior": "sylvester-orthogonal", "hidden": [8]})
    assert model.posterior.m == 5
    for latent_dim, reflections in [(3, 3), (8, 8), (64, 8)]:
        model = build_vae({"data_dim": 6, "latent_dim": latent_dim, "posterior": "sylvester-householder",
                           "hidden": [8]})
        assert model.posterior.reflections == reflections


@pytest.mark.parametrize("keys, message", [
    ({"posterior": "sylvester-orthogonal", "posterior_orthogonal_vectors": 6},
     "'model.posterior_orthogonal_vectors' must be in 1..latent_dim = 5"),
    ({"posterior": "sylvester-orthogonal", "posterior_orthogonal_vectors": -1},
     "'model.posterior_orthogonal_vectors' must be in 1..latent_dim = 5"),
    ({"posterior": "planar", "posterior_orthogonal_vectors": 2},
     "'model.posterior_orthogonal_vectors' needs posterior 'sylvester-orthogonal'"),
    ({"posterior": "sylvester-householder", "posterior_householder_reflections": -1},
     "'model.posterior_householder_reflections' must be >= 1"),
])
def test_bad_flow_keys_are_one_line_config_errors(keys, message):
    with pytest.raises(ConfigError) as err:
        build_vae({"data_dim": 6, "latent_dim": 5, **keys})
    assert message in str(err.value) and "\n" not in str(err.value)
