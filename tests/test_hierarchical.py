"""Two-layer models (`vae_core.hierarchical`): on a model with 1-D z1, 1-D z2 and 4 binary pixels the IW log p(x)
matches log p(x) by 2-D quadrature over (z1, z2), and the ELBO's two KL terms match an independent float64
evaluation; each comparison is shown to fail when p(z1 | z2) is conditioned on the wrong sample. Plus: the KL
terms sum to the ELBO's, checkpoints round-trip, every architecture builds, and a gap is never computed.

Run with `-s` to see the figures.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from tests.test_runner_promises import FIGURES, interrupt_at, rows, run_grid, same, synth_dir, write_grid  # noqa: F401
from vae_core import ConfigError, build_vae, load_vae
from vae_core.estimators import elbo_from_log_weights, iw_bound
from vae_core.inference_gaps import posterior_diagnostics
from vae_core.layer_diagnostics import layer_figures

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_X = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)  # [16, 4]
K_IW = 50_000
GRID_L, GRID_N = 12.0, 481  # [-L, L]^2 over (z1, z2), step 0.05
KL_SAMPLES = 40_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inv_softplus(y: float) -> float:
    return math.log(math.expm1(y))


@torch.no_grad()
def tiny_model(seed: int = 0, posterior: str = "mean-field"):
    """4 pixels, z1 and z2 1-D, random weights; both proposals wider than their targets (constant scales 1.6 for
    q(z2 | x), 1.4 for q(z1 | x, z2); p(z1 | z2) has scale 0.8 and a mean that moves with z2), so the importance
    weights have finite variance, while the locations depend on x (and z2): q is not the posterior."""
    torch.manual_seed(seed)
    model = build_vae({"data_dim": 4, "latent_dim": 1, "layers": 2, "top_latent_dim": 1, "hidden": [16],
                       "posterior": posterior})
    g = gen(seed + 100)
    for p in model.decoder.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.5)
    for head, scale in ((model.encoder.net[-1], 1.6), (model.bottom_encoder.head[-1], 1.4),
                        (model.conditional_prior.net[-1], 0.8)):  # rows: loc [1], raw scale [1], context
        head.weight[0] = torch.randn(head.in_features, generator=g) * 0.4
        head.weight[1] = 0.0
        head.bias[1] = inv_softplus(scale)
    return model


@torch.no_grad()
def quadrature_log_px(model, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(log of the integral of p(x | z1, z2) p(z1 | z2) p(z2) over the grid [B], the prior's mass on it), with the
    model's networks but torch.distributions' densities."""
    xs = torch.linspace(-GRID_L, GRID_L, GRID_N)
    h = (xs[1] - xs[0]).item()
    z = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)  # [G, 2]: (z1, z2)
    z1, z2 = z[:, :1], z[:, 1:]
    log_prior = Normal(0.0, 1.0).log_prob(z2[:, 0]) + Normal(*model.conditional_prior(z2)).log_prob(z1)[:, 0]  # [G]
    likelihood = Bernoulli(logits=model.decoder(z))  # batch [G, P]
    log_px_z = torch.stack([likelihood.log_prob(xi).sum(-1) for xi in x])  # [B, G]
    mass = (torch.logsumexp(log_prior, 0).exp() * h * h).item()
    return torch.logsumexp(log_px_z + log_prior, dim=1) + 2 * math.log(h), mass


def iw_error(model, exact: torch.Tensor, chunks_agree: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(|IW - exact| [16], the tolerance max(5 SE, 0.02) [16], exact - ELBO [16]) with K_IW seeded samples."""
    with torch.no_grad():
        estimate = model.iw_log_px(ALL_X, k=K_IW, generator=gen(1))  # [16], in chunks
        log_px_z, log_pz, log_q = model.log_weights(ALL_X, K_IW, gen(1))  # the same draws at once
    log_w = log_px_z + log_pz - log_q  # [k, 16]
    if chunks_agree:
        torch.testing.assert_close(estimate, iw_bound(log_w), rtol=0, atol=1e-9)
    w = (log_w - log_w.max(0).values).exp()
    se = w.std(0) / math.sqrt(K_IW) / w.mean(0)  # delta method
    return (estimate - exact).abs(), torch.clamp(5 * se, min=0.02), exact - elbo_from_log_weights(log_w)


def condition_on_another_sample(model, monkeypatch) -> None:
    """The deliberate break: p(z1 | z2) reads the z2 of the next sample (rolled along k) when k > 1."""
    conditional = model.conditional_prior.forward

    def wrong(z2):
        return conditional(z2.roll(1, dims=0) if z2.dim() == 3 and z2.shape[0] > 1 else z2)

    monkeypatch.setattr(model.conditional_prior, "forward", wrong)


def test_iw_log_px_of_a_two_layer_model_matches_2d_quadrature(float64, monkeypatch):
    model = tiny_model()
    exact, mass = quadrature_log_px(model, ALL_X)  # [16]
    assert abs(mass - 1) < 1e-3 and 1 - mass < 1e-3 * exact.exp().min()
    assert abs(exact.exp().sum().item() - mass) < 1e-9  # the 16 binary images' p(x) sum to the mass
    err, tol, elbo_gap = iw_error(model, exact)
    print(f"\n[2-layer IW vs quadrature] max |IW - exact| {err.max():.4f} nats, tolerance {tol.min():.3f}-"
          f"{tol.max():.3f}, mean ELBO gap {elbo_gap.mean():.3f}")
    assert (err <= tol).all(), f"IW off by {err.tolist()}, tolerance {tol.tolist()}"
    assert (elbo_gap > tol).all()  # the comparison can fail: the ELBO on the same draws is far below

    condition_on_another_sample(model, monkeypatch)
    broken, tol, _ = iw_error(model, exact, chunks_agree=False)  # (the roll depends on the chunk)
    print(f"[2-layer IW, p(z1 | z2) on the wrong sample] max |IW - exact| {broken.max():.4f} nats")
    assert (broken > tol).any()


def kl_terms(model, x: torch.Tensor, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's per-sample KL terms (log q1 - log p(z1|z2), log q2 - log p(z2)) [S, B] each."""
    with torch.no_grad():
        t = model.layer_terms(x, model.noise(samples, x, gen(seed)))
    return t["log_q1"] - t["log_pz1"], t["log_q2"] - t["log_pz2"]


@torch.no_grad()
def independent_kls(model, x: torch.Tensor, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image [B]: KL(q(z2|x) || N(0, I)) in closed form, and E_{z2 ~ q(z2|x)} KL(q(z1|x,z2) || p(z1|z2)) with
    the inner KL closed form (torch.distributions) and z2 drawn independently of the model's noise."""
    loc2, scale2, _ = model.encoder(x)  # [B, 1] each
    kl2 = kl_divergence(Normal(loc2, scale2), Normal(0.0, 1.0)).sum(-1)  # [B]
    z2 = loc2 + scale2 * torch.randn((samples, *loc2.shape), generator=gen(seed))  # [S, B, 1]
    loc1, scale1, _ = model.bottom_encoder(x, z2)  # [S, B, 1]
    kl1 = kl_divergence(Normal(loc1, scale1), Normal(*model.conditional_prior(z2))).sum(-1)  # [S, B]
    return kl1, kl2


def test_the_two_kl_terms_match_an_independent_float64_evaluation(float64, monkeypatch):
    model = tiny_model(seed=3)
    kl1, kl2 = kl_terms(model, ALL_X, KL_SAMPLES, seed=11)  # [S, 16] each
    ref1, ref2 = independent_kls(model, ALL_X, KL_SAMPLES, seed=12)  # [S, 16], [16]

    def z_scores(kl1, kl2):
        se1 = (kl1.var(0) / KL_SAMPLES + ref1.var(0) / KL_SAMPLES).sqrt()
        return (kl1.mean(0) - ref1.mean(0)).abs() / se1, (kl2.mean(0) - ref2).abs() / (kl2.std(0) / KL_SAMPLES ** 0.5)

    z1, z2 = z_scores(kl1, kl2)
    print(f"\n[2-layer KL] KL(z1) {kl1.mean():.4f} vs {ref1.mean():.4f}, KL(z2) {kl2.mean():.4f} vs {ref2.mean():.4f}; "
          f"max z-scores {z1.max():.2f}, {z2.max():.2f}")
    assert (z1 < 5).all() and (z2 < 5).all()
    assert (kl1.mean(0) > 0.05).all() and (ref2 > 0.05).all()  # both layers carry information

    condition_on_another_sample(model, monkeypatch)
    z1, _ = z_scores(*kl_terms(model, ALL_X, KL_SAMPLES, seed=11))
    print(f"[2-layer KL, p(z1 | z2) on the wrong sample] max z-score {z1.max():.1f}")
    assert (z1 > 5).any()


def test_layer_kls_sum_to_the_elbos_kl_and_units_are_counted_per_layer(float64):
    model = build_vae({"data_dim": 4, "latent_dim": 3, "layers": 2, "top_latent_dim": 2, "hidden": [16],
                       "posterior": "iaf", "prior": "vamp", "prior_components": 3})
    eps = model.noise(64, ALL_X, gen(0))  # [64, 16, 5]
    with torch.no_grad():
        _, kl = model(ALL_X, eps)  # [16]
        figures = layer_figures(model, ALL_X, 64, gen(0), batch=16)
    assert figures["test_kl_z1"] + figures["test_kl_z2"] == pytest.approx(kl.mean().item(), rel=1e-12)
    assert 0 <= figures["active_units_z1"] <= 3 and 0 <= figures["active_units_z2"] <= 2
    with pytest.raises(ValueError, match="one-layer models"):
        posterior_diagnostics(model, ALL_X, 4, 0)  # one-layer diagnostics never read a two-layer model


@pytest.mark.parametrize("architecture", ["mlp", "conv", "gated-conv"])
def test_every_architecture_builds_two_layers_and_round_trips_a_checkpoint(float64, tmp_path, architecture):
    model = build_vae({"architecture": architecture, "latent_dim": 4, "layers": 2, "top_latent_dim": 3,
                       "hidden": [16], "posterior": "iaf"})
    x = (torch.rand(3, 784, generator=gen(0)) < 0.3).double()
    with torch.no_grad():
        elbo, iw = model.elbo(x, 2, gen(1)), model.iw_log_px(x, 2, generator=gen(1))  # the same two draws
        assert elbo.shape == iw.shape == (3,) and (iw >= elbo - 1e-9).all()
        assert model.sample(2, gen(2)).shape == (2, 784) and model.latent_code(x).shape == (3, 7)
        model.save(tmp_path / "m.pt")
        again = load_vae(tmp_path / "m.pt")
        assert type(again) is type(model)
        torch.testing.assert_close(again.elbo(x, 2, gen(1)), elbo, rtol=0, atol=0)


def test_a_two_layer_grid_runs_stacked_resumes_bit_for_bit_and_never_reports_a_gap(
        tmp_path, synth_dir, monkeypatch):  # noqa: F811 (synth_dir: the imported fixture)
    """`vaebench run` on synthetic MNIST, 2 seeds stacked, gaps asked for: interrupted at step 8 and resumed, the
    rows equal an uninterrupted run's; two-layer rows carry per-layer KL and active units and a gap note instead
    of gap figures."""
    grid = write_grid(tmp_path, {"model.layers": 2, "model.top_latent_dim": 2, "model.posterior": "iaf",
                                 "train.max_steps": 16, "train.eval_every": 5, "eval.gaps": True,
                                 "eval.gap_au_samples": 8}, axes={"train.seed": [0, 1]})
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    code, out = run_grid(grid, straight, synth_dir, 2)
    assert code == 0, out
    expected = rows(straight)
    assert set(expected["status"]) == {"completed"} and set(expected["stack_size"]) == {2}
    assert expected["test_kl_z1"].notna().all() and expected["test_kl_z2"].notna().all()
    assert expected["active_units_z1"].between(0, 4).all() and expected["active_units_z2"].between(0, 2).all()
    assert expected["approximation_gap"].isna().all() and expected["gap_note"].str.contains("two-layer").all()

    interrupt_at(monkeypatch, 8)
    assert run_grid(grid, resumed, synth_dir, 2)[0] == 130
    code, out = run_grid(grid, resumed, synth_dir, 2)
    assert code == 0, out
    got = rows(resumed)
    assert (got["resumed_from_step"] == 5).all()
    for col in (*FIGURES, "test_kl_z1", "test_kl_z2", "active_units_z1", "active_units_z2"):
        for run_id in expected.index:
            assert same(got.loc[run_id, col], expected.loc[run_id, col]), (run_id, col)


def test_the_top_layer_takes_its_own_family_and_bad_keys_are_one_line_errors(float64):
    model = build_vae({"data_dim": 4, "latent_dim": 3, "layers": 2, "top_latent_dim": 2, "hidden": [8],
                       "posterior": "sylvester-orthogonal", "posterior_orthogonal_vectors": 3,
                       "top_posterior": "iaf", "prior": "mog", "prior_components": 2})
    assert type(model.posterior).__name__ == "IAFPosterior"
    assert type(model.bottom_posterior).__name__ == "OrthogonalSylvesterPosterior" and model.bottom_posterior.m == 3
    with torch.no_grad():
        assert torch.isfinite(model.iw_log_px(ALL_X, 4, generator=gen(0))).all()
    for bad, match in (({"top_latent_dim": 2}, "need layers = 2"), ({"top_posterior": "iaf"}, "need layers = 2"),
                       ({"layers": 3}, "must be one of"), ({"layers": 2, "kl": "analytic"}, "needs 'model.layers' = 1"),
                       ({"layers": 2, "top_posterior": "iaff"}, "iaf")):
        with pytest.raises(ConfigError, match=match):
            build_vae({"data_dim": 4, "latent_dim": 2, **bad})
