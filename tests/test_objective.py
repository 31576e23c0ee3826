"""The training objectives: the IWAE bound (Burda et al. 2016) and the k-sample ELBO, against the model's
own log-weights and plain autograd (float64, fixed seeds), and the learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import grad

from bench.training.optim import LrSchedule
from bench.training.step import FlatLayout, run_loss
from vae_core import build_vae
from vae_core.estimators import iw_bound

FAMILIES = [("mean-field", "standard"), ("iaf", "vamp"), ("planar", "flow"), ("mean-field", "mog")]


def setup(posterior: str, prior: str, k: int, seed: int = 0):
    """A small model, its flat weights [N], a binary batch [B, P] and noise [k, B, D]."""
    torch.manual_seed(seed)
    model = build_vae({"hidden": [16], "latent_dim": 3, "posterior": posterior, "prior": prior,
                       "prior_components": 4, "activation": "tanh"}).double()
    layout = FlatLayout(model)
    gen = torch.Generator().manual_seed(seed + 1)
    x = (torch.rand(6, 784, generator=gen, dtype=torch.float64) < 0.3).double()  # [B, P]
    eps = torch.randn((k, 6, 3), generator=gen, dtype=torch.float64)  # [k, B, D]
    return model, layout, layout.flatten(model), x, eps


def gradient(model, layout, flat, x, eps, beta, objective):
    return grad(run_loss, argnums=2, has_aux=True)(model, layout, flat, x, eps, beta, objective)


@pytest.mark.parametrize("posterior,prior", FAMILIES)
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_iwae_with_one_sample_is_the_elbo_loss_and_gradient(float64, posterior, prior, beta):
    model, layout, flat, x, eps = setup(posterior, prior, k=1)
    beta = torch.tensor(beta, dtype=torch.float64)
    elbo_loss, elbo_terms = run_loss(model, layout, flat, x, eps, beta, "elbo")
    iwae_loss, iwae_terms = run_loss(model, layout, flat, x, eps, beta, "iwae")
    torch.testing.assert_close(iwae_loss, elbo_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(iwae_terms, elbo_terms, rtol=1e-12, atol=0)
    g_elbo, _ = gradient(model, layout, flat, x, eps, beta, "elbo")
    g_iwae, _ = gradient(model, layout, flat, x, eps, beta, "iwae")
    torch.testing.assert_close(g_iwae, g_elbo, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("posterior,prior", FAMILIES)
def test_iwae_loss_is_the_iw_bound_of_the_models_log_weights_and_its_gradient_is_autograds(float64, posterior,
                                                                                          prior):
    """k = 5: the loss is -mean_B log mean_k w for the same noise (via `VAE.log_weight`, a separate path),
    and its gradient is plain autograd's of that bound through the module's own parameters."""
    model, layout, flat, x, eps = setup(posterior, prior, k=5)
    one = torch.tensor(1.0, dtype=torch.float64)
    loss, _ = run_loss(model, layout, flat, x, eps, one, "iwae")
    log_w = model.log_weight(x, *model.encoder(x), eps)  # [k, B]
    expected = -iw_bound(log_w).mean()
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=0)
    assert loss < -log_w.mean()  # the IW bound is above the k-sample ELBO: its negative is below
    expected.backward()
    autograd = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    ours, _ = gradient(model, layout, flat, x, eps, one, "iwae")
    torch.testing.assert_close(ours, autograd, rtol=1e-9, atol=1e-11)


def test_elbo_with_k_samples_averages_the_log_weights(float64):
    model, layout, flat, x, eps = setup("iaf", "mog", k=4)
    loss, (rec, kl) = run_loss(model, layout, flat, x, eps, torch.tensor(1.0, dtype=torch.float64), "elbo")
    log_w = model.log_weight(x, *model.encoder(x), eps)  # [k, B]
    torch.testing.assert_close(loss, -log_w.mean().detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(rec - kl, log_w.mean(0).sum().detach(), rtol=1e-12, atol=0)


def test_iwae_warm_up_weights_the_kl_part_of_each_log_weight(float64):
    model, layout, flat, x, eps = setup("planar", "vamp", k=3)
    beta = torch.tensor(0.25, dtype=torch.float64)
    loss, _ = run_loss(model, layout, flat, x, eps, beta, "iwae")
    log_px_z, log_pz, log_q = model.log_densities(x, eps)  # [k, B] each
    expected = -(torch.logsumexp(log_px_z + 0.25 * (log_pz - log_q), 0) - math.log(3)).mean()
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=0)


def factors(schedule: LrSchedule, epochs: list[float]) -> list[float]:
    t = torch.tensor([e * schedule.steps_per_epoch for e in epochs], dtype=torch.float64)
    return schedule(t).tolist()


def test_the_iwae_schedule_is_3_to_the_i_epochs_at_10_to_the_minus_i_over_7():
    schedule = LrSchedule("iwae", steps_per_epoch=2500)
    ends = [1, 4, 13, 40, 121, 364, 1093, 3280]  # cumulative sum of 3**i, i = 0..7
    got = factors(schedule, [0, 0.9996] + [e for end in ends for e in (end - 0.0004, end)])
    expected = [1.0, 1.0]
    for i in range(8):
        expected += [10 ** (-i / 7), 10 ** (-min(i + 1, 7) / 7)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_step_and_exponential_schedules():
    step = LrSchedule("step", steps_per_epoch=10, decay=0.5, decay_epochs=3)
    assert factors(step, [0, 2.9, 3, 5.9, 6, 9]) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.125])
    smooth = LrSchedule("exponential", steps_per_epoch=10, decay=0.5)
    assert factors(smooth, [0, 0.5, 1, 2.5]) == pytest.approx([1, 0.5 ** 0.5, 0.5, 0.5 ** 2.5])
    assert factors(LrSchedule(), [0, 7, 1e5]) == [1.0, 1.0, 1.0]
