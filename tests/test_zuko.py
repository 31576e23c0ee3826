"""zuko's flows as posterior and prior families (vae_core.flows.zuko, posteriors/zuko.py, priors/zuko.py): the
wiring (the encoder's Gaussian is the base, its context conditions the flow), the names, the options, and the
gradient of the families that torch.func cannot transform (float64, fixed seeds). The contract and the stacked
= alone checks run on them from tests/test_contract.py and tests/test_stacking.py (tests/families.py)."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad

from bench.grid.files import parse_grid
from bench.grid.stacks import plan_stacks
from bench.training.step import FlatLayout, autograd_gradient, run_loss
from vae_core import POSTERIORS, PRIORS, ConfigError, ModelConfig, build_vae, registry
from vae_core.contract.tools import perturbed_model
from vae_core.flows.zuko import FLOWS
from vae_core.posteriors import MeanFieldPosterior
from vae_core.probes import functorch_problem

ZUKO_NAMES = list(FLOWS)
BY_PATH = ["zuko.flows:UNAF", "zuko.flows:SOSPF"]  # no short names (docs/families/zuko.md); the gradient is checked


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def encoded(model, n: int = 3):
    x = torch.bernoulli(torch.full((n, 4), 0.4, dtype=torch.float64), generator=gen(0))  # [B, P]
    with torch.no_grad():
        return model.encoder(x)  # loc, scale [B, D], context [B, C]


def test_a_zuko_flow_at_its_identity_is_the_mean_field_family(float64):
    """zuko's MAF with its hyper networks zeroed (shift 0, log-scale 0) is the identity: then q is exactly the
    encoder's Gaussian, so loc and scale are the base and nothing else enters it."""
    model = build_vae({"data_dim": 4, "hidden": [8], "latent_dim": 3, "posterior": "zuko-maf"})
    with torch.no_grad():
        for p in model.posterior.parameters():
            p.zero_()
    loc, scale, context = encoded(model)
    eps = torch.randn(5, 3, 3, generator=gen(1), dtype=torch.float64)  # [k, B, D]
    z, log_q = model.posterior.from_noise(loc, scale, context, eps)
    z_mf, log_q_mf = MeanFieldPosterior().from_noise(loc, scale, context, eps)
    torch.testing.assert_close(z, z_mf, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_q, log_q_mf, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["nsf", "zuko-maf", "naf"])
def test_log_q_matches_zukos_inverse_direction_and_the_context_conditions_the_flow(float64, name):
    """z = T(z0 | h), z0 = loc + scale eps: zuko's own inverse gives z0 back from z, and log q computed in that
    direction, log N(T^-1(z); loc, scale) + log|det dT^-1/dz|, is the family's log q. Another context h moves z;
    another loc moves z0, not the flow."""
    model = perturbed_model(name, latent_dim=3, seed=3)
    loc, scale, context = encoded(model)
    eps = torch.randn(4, 3, 3, generator=gen(2), dtype=torch.float64)  # [k, B, D]
    with torch.no_grad():
        z, log_q = model.posterior.from_noise(loc, scale, context, eps)  # [k, B, D], [k, B]
        inverse = model.posterior.zuko_flow.transform(context).inv
        z0 = inverse(z)  # [k, B, D]
        log_q_inverse = (torch.distributions.Normal(loc, scale).log_prob(z0).sum(-1)
                         + inverse.log_abs_det_jacobian(z, z0))
        moved, _ = model.posterior.from_noise(loc, scale, context + 0.5, eps)
    tol = 1e-5 if name == "naf" else 1e-9  # NAF's inverse is a bisection to 1e-6
    torch.testing.assert_close(z0, loc + scale * eps, rtol=0, atol=tol)
    torch.testing.assert_close(log_q_inverse, log_q, rtol=0, atol=100 * tol)
    assert (moved - z).abs().max() > 1e-3


def test_dotted_zuko_paths_resolve_to_the_short_names_family():
    for kind, table in (("posterior", POSTERIORS), ("prior", PRIORS)):
        for path in ("zuko.flows:NSF", "zuko.flows.spline:NSF"):
            resolved = registry.resolve(kind, path)
            assert resolved.obj is table["nsf"] and resolved.origin == path
    gf = registry.resolve("posterior", "zuko.flows:GF")
    assert gf.obj.__name__ == "ZukoGFPosterior" and gf.obj.flow_class.__name__ == "GF"
    model = build_vae({"data_dim": 4, "hidden": [8], "latent_dim": 2, "posterior": "zuko.flows:GF"})
    assert torch.isfinite(model.elbo(torch.ones(2, 4), k=2)).all()
    with pytest.raises(ConfigError, match="does not implement the posterior interface"):
        registry.resolve("posterior", "zuko.flows.autoregressive:MaskedAutoregressiveTransform")


def test_zuko_options_reach_the_flow_and_are_refused_where_they_do_not_apply():
    """NSF's hyper network emits 3 bins - 1 spline values per feature, so each extra bin adds (H + 1) * 3 * D
    weights to each of its transforms' last layer."""
    def count(**keys):
        cfg = {"data_dim": 4, "hidden": [8], "latent_dim": 3, "posterior": "nsf", "posterior_flow_steps": 2,
               "flow_hidden": 10, **keys}
        return sum(p.numel() for p in build_vae(cfg).posterior.parameters())

    assert count(zuko_bins=5) - count(zuko_bins=4) == 2 * (10 + 1) * 3 * 3
    assert count() == count(zuko_bins=8)  # 0: zuko's default, 8 bins
    assert count(posterior_flow_steps=4) == 2 * count()  # the steps reach NSF's transforms (through MAF)
    with pytest.raises(ConfigError, match=r"'model.zuko_bins' does not apply to zuko's NAF \(it takes: zuko_signal\)"):
        build_vae({"data_dim": 4, "latent_dim": 3, "posterior": "naf", "zuko_bins": 4})
    with pytest.raises(ConfigError, match="'model.zuko_degree' must be >= 1"):
        ModelConfig(zuko_degree=-1)
    with pytest.raises(ConfigError, match="did you mean 'zuko_bins'"):
        ModelConfig.parse({"zuko_binz": 4})


def family_config(name: str, kind: str, data_dim: int = 4) -> dict:
    other = "standard" if kind == "posterior" else "mean-field"
    return {"data_dim": data_dim, "hidden": [8], "latent_dim": 3, "posterior_flow_steps": 1, "prior_flow_steps": 1,
            "posterior": name if kind == "posterior" else other, "prior": name if kind == "prior" else other}


@pytest.mark.parametrize("kind", ["posterior", "prior"])
@pytest.mark.parametrize("name", ZUKO_NAMES + BY_PATH)
def test_the_training_gradient_is_the_derivative_of_the_loss(float64, name, kind):
    """The gradient a step uses (torch.func where the family allows it, else torch.autograd on the model's own
    parameters) against a central difference of the loss along a random direction; where torch.func works, the
    autograd path gives its gradient too."""
    torch.manual_seed(0)
    model = build_vae(family_config(name, kind))
    layout = FlatLayout(model)
    flat = layout.flatten(model) + 0.05 * torch.randn(sum(layout.sizes), generator=gen(1), dtype=torch.float64)
    batch = torch.bernoulli(torch.full((5, 4), 0.4, dtype=torch.float64), generator=gen(2))  # [B, P]
    eps = torch.randn(2, 5, 3, generator=gen(3), dtype=torch.float64)  # [k, B, D]
    beta = torch.tensor(1.0, dtype=torch.float64)

    def loss(f):
        return run_loss(model, layout, f, batch, eps, beta)[0].item()

    by_autograd, _ = autograd_gradient(model, layout, flat, lambda own: run_loss(model, own, flat, batch, eps, beta))
    v = torch.randn(flat.shape, generator=gen(4), dtype=torch.float64)
    h = 1e-5
    slope = (loss(flat + h * v) - loss(flat - h * v)) / (2 * h)
    # UNAF and SOSPF integrate by 32-point Gauss-Legendre quadrature and take the integrand itself as the
    # derivative (not the quadrature's derivative): their gradient differs from the loss's slope by the
    # quadrature's error, ~1e-6 here
    tol = 1e-5 if name in BY_PATH else 1e-7
    assert abs(by_autograd @ v - slope) < tol * max(1.0, abs(slope))
    if not functorch_problem(model.config):
        by_func, _ = grad(run_loss, argnums=2, has_aux=True)(model, layout, flat, batch, eps, beta)
        torch.testing.assert_close(by_autograd, by_func, rtol=1e-10, atol=1e-12)


def test_only_the_families_torch_func_cannot_transform_train_alone():
    stackable = {name for name in ZUKO_NAMES if not functorch_problem(ModelConfig.parse(family_config(name, "posterior")))}
    assert stackable == {"nsf", "zuko-maf"}
    for name in ("nsf", "naf"):
        runs = parse_grid({"name": "z", "model": family_config(name, "posterior", 784), "train": {"max_steps": 5},
                           "grid": {"train.seed": [0, 1, 2]}})
        plans = plan_stacks(runs, 3, "cpu")
        if name == "nsf":
            assert [len(p.configs) for p in plans] == [3]
        else:
            assert [len(p.configs) for p in plans] == [1, 1, 1]
            assert all(p.reason.startswith("alone: the family does not run under torch.func") for p in plans)


def test_prior_samples_are_seeded_and_do_not_depend_on_the_sampling_chunk(float64, monkeypatch):
    prior = perturbed_model(prior="nsf", latent_dim=3, seed=1).prior
    whole = prior.sample(10, generator=gen(5))  # [10, D]
    monkeypatch.setattr(type(prior), "SAMPLE_ROWS", 3)
    torch.testing.assert_close(prior.sample(10, generator=gen(5)), whole, rtol=0, atol=1e-12)
    u, log_det = prior.inverse(whole)
    torch.testing.assert_close(prior(u)[0], whole, rtol=0, atol=1e-9)  # forward(inverse(z)) = z
