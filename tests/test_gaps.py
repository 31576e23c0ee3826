"""Inference gaps (vae_core.inference_gaps) on 2-D-latent models where every ELBO is computed exactly: Gauss-Hermite
quadrature over the base noise eps ~ N(0, I_2) (z = T(eps) for every reparameterised family) and the grid
quadrature of tests/test_estimators for log p(x).

- the batched Adam fit of a mean-field q reaches the best mean-field ELBO found by L-BFGS on the exact ELBO;
- exact L[q] <= L[q*] <= log p(x) per image for every family, and the Monte-Carlo figures are within
  5 standard errors of their exact values;
- approximation and amortization gaps match their exact counterparts (so swapping them is caught) and add up;
- the model's weights, their grads and requires_grad flags are untouched; same seed, same figures, whatever
  the global RNG.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.test_estimators import ALL_X, quadrature_log_px, quadrature_model
from vae_core.inference_gaps import (LocalFit, encoder_params, family_log_weight, ffg_log_weight, fit_local,
                           inference_gaps, posterior_diagnostics, summarize)

pytestmark = pytest.mark.usefixtures("float64", "one_thread")

FIT = LocalFit(lr=1e-2, samples=20, check_every=50, patience=8, max_steps=3000)  # a careful fit for the tests
ELBO_SAMPLES = 4000
GH_POINTS = 40


def gh_noise(n: int = GH_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Hermite nodes eps [n*n, 1, 2] and weights [n*n] for E over N(0, I_2)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    e = torch.tensor(nodes)
    w = torch.tensor(weights) / math.sqrt(2 * math.pi)
    eps = torch.stack(torch.meshgrid(e, e, indexing="ij"), -1).reshape(-1, 1, 2)
    return eps, (w[:, None] * w[None, :]).reshape(-1)


def exact_elbo(log_weight, x, params, moment: int = 1) -> torch.Tensor:
    """E_eps[log w^moment] [B] by quadrature (the ELBO for moment 1)."""
    eps, w = gh_noise()
    log_w = log_weight(x, params, eps.expand(-1, x.shape[0], -1))  # [G, B]
    return (w[:, None] * log_w.pow(moment)).sum(0)


def exact_sd(log_weight, x, params) -> torch.Tensor:
    return (exact_elbo(log_weight, x, params, 2) - exact_elbo(log_weight, x, params).square()).clamp_min(0).sqrt()


def brute_force_mean_field(model, x) -> torch.Tensor:
    """The best mean-field ELBO per image [B]: L-BFGS over (loc, log scale) on the exact (quadrature) ELBO."""
    fn = ffg_log_weight(model)
    loc, log_scale, _ = encoder_params(model, x)
    loc, log_scale = loc.clone().requires_grad_(True), log_scale.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([loc, log_scale], lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -exact_elbo(fn, x, (loc, log_scale)).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    with torch.no_grad():
        return exact_elbo(fn, x, (loc, log_scale))


def test_mean_field_fit_reaches_the_brute_force_optimum():
    model = quadrature_model("mean-field", "standard", widen=2.0)  # encoder far too wide: much to gain
    fn = family_log_weight(model)
    init = encoder_params(model, ALL_X)
    fitted, steps = fit_local(fn, ALL_X, init, FIT, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, start = exact_elbo(fn, ALL_X, fitted), exact_elbo(fn, ALL_X, init)  # [16]
    best = brute_force_mean_field(model, ALL_X)  # [16]
    assert (best - start).mean() > 1.0  # the fit had something to do
    assert (ours <= best + 1e-6).all()  # nothing beats the optimum
    assert (best - ours).max() < 0.02, (best - ours).max()
    assert (steps < FIT.max_steps).all()  # every image stopped by the rule, not by the cap


@pytest.mark.parametrize("posterior", ["mean-field", "iaf", "planar"])
def test_bounds_are_ordered_per_image_and_the_estimates_match_the_exact_values(posterior):
    model = quadrature_model(posterior, "standard", widen=2.0)
    fn = family_log_weight(model)
    init = encoder_params(model, ALL_X)
    fitted, _ = fit_local(fn, ALL_X, init, FIT, torch.Generator().manual_seed(0))
    with torch.no_grad():
        elbo_q, elbo_opt = exact_elbo(fn, ALL_X, init), exact_elbo(fn, ALL_X, fitted)  # [16] each
        sd_q, sd_opt = exact_sd(fn, ALL_X, init), exact_sd(fn, ALL_X, fitted)
    log_px, _ = quadrature_log_px(model, ALL_X)  # [16]
    assert (elbo_q < elbo_opt).all() and (elbo_opt < log_px).all()

    g = inference_gaps(model, ALL_X, FIT, seed=0, iw_samples=2000, elbo_samples=ELBO_SAMPLES)
    # Monte-Carlo ELBOs within 5 standard errors of the exact ELBOs of the same parameters (L[q*] with the
    # parameters this fit found: the same seed and settings give the same fit)
    assert ((g.elbo - elbo_q).abs() <= 5 * sd_q / math.sqrt(ELBO_SAMPLES)).all()
    assert ((g.elbo_local_opt - elbo_opt).abs() <= 5 * sd_opt / math.sqrt(ELBO_SAMPLES)).all()
    # per image, the estimates keep the order up to the noise bound
    assert (g.elbo <= g.elbo_local_opt + 5 * (sd_q + sd_opt) / math.sqrt(ELBO_SAMPLES)).all()
    assert (g.elbo_local_opt <= log_px + 5 * sd_opt / math.sqrt(ELBO_SAMPLES)).all()
    # the FFG fit is the family's for mean-field
    if posterior == "mean-field":
        assert torch.equal(g.elbo_local_opt_ffg, g.elbo_local_opt)
    else:  # the FFG fit of a flow model reaches the best diagonal Gaussian too (up to its Monte-Carlo noise)
        assert ((brute_force_mean_field(model, ALL_X) - g.elbo_local_opt_ffg).abs() < 0.1).all()


@pytest.mark.parametrize("posterior", ["mean-field", "iaf"])
def test_an_images_fit_does_not_depend_on_the_other_images_in_the_batch(posterior):
    """Stopped images leave the batch: an image's fitted parameters and stopping step are the same whichever
    images share the batch (and whenever those stop), up to float64 rounding of the changed batch."""
    model = quadrature_model(posterior, "standard", widen=2.0)
    fn = family_log_weight(model)
    fit = LocalFit(lr=1e-2, samples=5, check_every=20, patience=3, max_steps=1000)
    other = ALL_X.clone()
    other[:8] = ALL_X[torch.tensor([11, 8, 14, 9, 15, 10, 13, 12])]  # [16, 4]: images 0-7 replaced, 8-15 kept
    a, steps_a = fit_local(fn, ALL_X, encoder_params(model, ALL_X), fit, torch.Generator().manual_seed(0))
    b, steps_b = fit_local(fn, other, encoder_params(model, other), fit, torch.Generator().manual_seed(0))
    assert not torch.equal(steps_a[:8], steps_b[:8])  # the other images did stop at other steps
    assert torch.equal(steps_a[8:], steps_b[8:]) and (steps_a < fit.max_steps).all()
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa[8:], pb[8:], rtol=0, atol=1e-9)


def test_the_gaps_are_the_exact_gaps_and_add_up():
    model = quadrature_model("mean-field", "standard", widen=2.0)
    fn = family_log_weight(model)
    init = encoder_params(model, ALL_X)
    g = inference_gaps(model, ALL_X, FIT, seed=0, iw_samples=2000, elbo_samples=ELBO_SAMPLES)
    fitted, _ = fit_local(fn, ALL_X, init, FIT, torch.Generator().manual_seed(0))
    with torch.no_grad():
        elbo_q, elbo_opt = exact_elbo(fn, ALL_X, init), exact_elbo(fn, ALL_X, fitted)
        variance = exact_sd(fn, ALL_X, init).square() + exact_sd(fn, ALL_X, fitted).square()  # [16]
    se = math.sqrt(variance.sum().item() / ELBO_SAMPLES) / ALL_X.shape[0]  # of the mean gap over 16 images
    log_px, _ = quadrature_log_px(model, ALL_X)
    s = summarize(g)
    exact_approximation = (log_px - elbo_opt).mean().item()  # ~0.04 nats: the posterior is nearly Gaussian
    exact_amortization = (elbo_opt - elbo_q).mean().item()  # ~2 nats: the encoder is far too wide
    assert abs(s["approximation_gap"] - exact_approximation) < 0.05
    assert exact_amortization > 1.0 and abs(s["amortization_gap"] - exact_amortization) < 5 * se
    assert s["approximation_gap"] + s["amortization_gap"] == pytest.approx(s["inference_gap"], abs=1e-12)
    assert s["inference_gap"] == pytest.approx(s["gap_iw_log_px"] - s["gap_elbo"], abs=1e-12)


def test_log_px_takes_the_fitted_proposal_where_the_encoder_is_off():
    """An encoder whose loc is far off (as on an overfitted model's test images): its IW bound alone lies nats
    below L[q*] for many images (a negative approximation gap); the fitted q*'s IW bound lies between L[q*] and
    log p(x), so log p̂ (the better bound per image) gives a non-negative approximation gap."""
    model = quadrature_model("mean-field", "standard", widen=2.0)
    with torch.no_grad():
        model.encoder.net[-1].bias[:2] += 3.0  # loc of both units shifted by 3
    g = inference_gaps(model, ALL_X, FIT, seed=0, iw_samples=20, elbo_samples=ELBO_SAMPLES)
    log_px, _ = quadrature_log_px(model, ALL_X)  # [16]
    assert (g.iw_encoder < g.elbo_local_opt - 1.0).sum() >= 4  # the encoder's bound alone: negative gaps
    assert (g.iw_local_opt >= g.elbo_local_opt - 0.1).all() and (g.iw_local_opt <= log_px + 0.2).all()  # k = 20: noisy
    assert torch.equal(g.iw_log_px, torch.maximum(g.iw_encoder, g.iw_local_opt))
    assert summarize(g)["approximation_gap"] > 0


def test_the_model_is_never_changed():
    model = quadrature_model("iaf", "mog")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    inference_gaps(model, ALL_X, LocalFit(max_steps=200, check_every=20), seed=1, iw_samples=50, elbo_samples=50)
    posterior_diagnostics(model, ALL_X, 20, seed=1)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags


def test_same_seed_same_figures_whatever_the_global_rng():
    model = quadrature_model("planar", "standard")
    fit = LocalFit(max_steps=300, check_every=20, patience=3)
    torch.manual_seed(1)
    a = summarize(inference_gaps(model, ALL_X, fit, seed=5, iw_samples=100, elbo_samples=200))
    torch.manual_seed(2)
    torch.randn(10)
    b = summarize(inference_gaps(model, ALL_X, fit, seed=5, iw_samples=100, elbo_samples=200))
    c = summarize(inference_gaps(model, ALL_X, fit, seed=6, iw_samples=100, elbo_samples=200))
    assert a == b and a != c


def test_common_noise_makes_the_gap_zero_when_nothing_is_fitted():
    """With zero fit steps' worth of change (lr ~ 0) L[q*] and L[q] use the same noise: the amortization gap is
    ~0 to rounding, not to Monte-Carlo noise."""
    model = quadrature_model("iaf", "standard")
    g = inference_gaps(model, ALL_X, LocalFit(lr=1e-300, max_steps=20, check_every=10), seed=0, iw_samples=10,
                       elbo_samples=100)
    assert (g.amortization_gap.abs() < 1e-9).all()


def test_active_units_and_kl_per_dim():
    model = quadrature_model("mean-field", "standard")
    with torch.no_grad():
        last = model.encoder.net[-1]
        last.weight[1] = 0.0  # unit 1's loc is constant over x: inactive
        last.bias[1] = 0.7
    d = posterior_diagnostics(model, ALL_X, samples=10, seed=0)
    loc, scale, _ = model.encoder(ALL_X)
    assert d["active_units"] == 1 and d["unit_variance"][1] == pytest.approx(0.0, abs=1e-15)
    assert d["unit_variance"][0] == pytest.approx(loc[:, 0].var(correction=0).item())
    kl = 0.5 * (loc.square() + scale.square() - 1) - scale.log()  # [16, 2]
    assert d["kl_per_dim"] == pytest.approx(kl.mean(0).tolist())
    # a flow family estimates E_q[z] by sampling: its noise is subtracted, so an inactive unit stays inactive
    iaf = quadrature_model("iaf", "standard")
    with torch.no_grad():
        iaf.encoder.net[-1].weight.zero_()  # every output constant over x: q(z|x) is the same for every image
    assert posterior_diagnostics(iaf, ALL_X, samples=10, seed=0)["active_units"] == 0
