"""Priors: each density integrates to 1 and its samples follow it (vae_core.contract: the grid, moment and
histogram checks live there and run for every registered prior in tests/test_contract.py), the sampling checks
catch a mismatched sampler, and the mixture priors equal their brute-force definitions. At latent_dim = 2 on a
fine grid, after randomly perturbing all learnable parameters so the checks do not just test the init.
"""

from __future__ import annotations


import pytest
import torch
from torch.distributions import Normal

from vae_core import PRIORS, contract
from vae_core.contract.families import p_mass, p_samples

L = 10.0  # grid half-width
H = 0.025  # grid step; cell-centred points: -L + H/2, ..., L - H/2
CELL = 0.5  # histogram cell width (20 x 20 grid points)
N_SAMPLES = 100_000


pytestmark = pytest.mark.usefixtures("float64", "one_thread")


def perturbed_model(prior: str, seed: int = 0, std: float = 0.3):
    """A VAE (data_dim 4, latent 2) whose every parameter, prior included, has random noise added."""
    return contract.perturbed_model(prior=prior, seed=seed, std=std)


def grid_probabilities(prior) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid points [G, 2], probability mass of each grid cell [G]) by the midpoint rule."""
    return contract.grid_mass(prior.log_prob, L, H)


def moment_errors(samples, z, p):
    return contract.moment_errors(samples, z, p)


def histogram_z_scores(samples, z, p):
    return contract.histogram_z_scores(samples, z, p, L, CELL)


@pytest.mark.parametrize("name", list(PRIORS))
def test_density_integrates_to_one_and_samples_follow_it(name):
    """The contract's checks (also run by tests/test_contract.py for every registered prior, plugins included)."""
    for check in (p_mass(name), p_samples(name)):
        assert check.passed, f"{name}: {check.name}: {check.value}"


def test_sample_checks_detect_a_mismatched_sampler():
    """Samples of the flow prior pushed through its layers in the wrong order must fail both checks."""
    prior = perturbed_model("flow", seed=2).prior
    z, p = grid_probabilities(prior)
    u = torch.randn(N_SAMPLES, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for layer in reversed(prior.layers):
            u = layer(u)[0]
    mean_z, cov_z = moment_errors(u, z, p)
    assert max(mean_z.max(), cov_z.max()) > 5
    assert histogram_z_scores(u, z, p).abs().max() > 5


@pytest.mark.parametrize("name", list(PRIORS))
def test_sample_shape_dtype_device_and_seed(name):
    prior = perturbed_model(name).prior
    s1 = prior.sample(7, generator=torch.Generator().manual_seed(5))
    s2 = prior.sample(7, generator=torch.Generator().manual_seed(5))
    assert s1.shape == (7, 2) and s1.dtype == torch.float64 and s1.device.type == "cpu"
    assert torch.equal(s1, s2)
    assert prior.log_prob(s1).shape == (7,)
    assert prior.log_prob(torch.zeros(3, 4, 2)).shape == (3, 4)  # [..., D] -> [...]
    prior_f32 = perturbed_model(name).to(torch.float32).prior
    assert prior_f32.sample(3).dtype == torch.float32


def brute_force_mixture(z: torch.Tensor, weights: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
                        ) -> torch.Tensor:
    """log sum_k w_k prod_d N(z_d; loc_kd, scale_kd), one component at a time (no logsumexp): [N, D] -> [N]."""
    total = torch.zeros(z.shape[0])
    for w_k, loc_k, scale_k in zip(weights, loc, scale):
        total = total + w_k * Normal(loc_k, scale_k).log_prob(z).sum(-1).exp()
    assert (total > 0).all(), "probe points too far out for a brute-force sum"
    return total.log()


def probe_points(prior) -> torch.Tensor:
    """Points where the density is not negligible (so the brute-force sum does not underflow): [N, 2]."""
    g = torch.Generator().manual_seed(0)
    return torch.cat([prior.sample(100, generator=g), torch.rand(100, 2, generator=g) * 4 - 2])


def test_mog_log_prob_is_the_mixture():
    prior = perturbed_model("mog", seed=4, std=0.5).prior
    weights = torch.softmax(prior.logits, 0)
    scale = torch.nn.functional.softplus(prior.raw_scale)
    assert weights.std() > 0.05 and scale.std() > 0.05  # perturbed away from uniform weights and unit scales
    z = probe_points(prior)  # [N, 2]
    with torch.no_grad():
        torch.testing.assert_close(prior.log_prob(z), brute_force_mixture(z, weights, prior.loc, scale),
                                   rtol=1e-10, atol=1e-10)


def test_vamp_pseudo_inputs_lie_in_the_unit_interval():
    model = perturbed_model("vamp", seed=5)
    with torch.no_grad():
        model.prior.raw_pseudo_inputs.copy_(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)) * 40)
        u = model.prior.pseudo_inputs()
    assert u.shape == (5, 4)
    assert u.min() >= 0 and u.max() <= 1 and u.min() < 0.01 and u.max() > 0.99  # saturated, still inside


def test_vamp_log_prob_is_the_mean_of_encoder_gaussians():
    model = perturbed_model("vamp", seed=6)
    z = probe_points(model.prior)  # [N, 2]
    with torch.no_grad():
        pseudo = torch.sigmoid(model.prior.raw_pseudo_inputs)  # [K, P]
        loc, scale, _ = model.encoder(pseudo)  # [K, 2] each: the encoder's own Gaussians
        k = pseudo.shape[0]
        expected = brute_force_mixture(z, torch.full((k,), 1 / k), loc, scale)
        torch.testing.assert_close(model.prior.log_prob(z), expected, rtol=1e-10, atol=1e-10)
        # the prior follows the (shared) encoder: change the encoder, the prior changes with it
        model.encoder.net[-1].bias.add_(0.5)
        assert not torch.allclose(model.prior.log_prob(z), expected)
