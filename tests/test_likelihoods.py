"""Likelihoods: the discretized logistic is a distribution over the 256 values of a pixel with finite gradients
everywhere, Bernoulli keeps today's numbers, and models of any image shape use the likelihood on every path."""

from __future__ import annotations

import pytest
import torch

from bench.grid.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from vae_core.config import ConfigError, ModelConfig
from vae_core.distributions import bernoulli_log_prob
from vae_core.likelihoods import LIKELIHOODS, DiscretizedLogistic, discretized_logistic_log_prob
from vae_core.models import build_vae

VALUES = torch.arange(256, dtype=torch.float64) / 255  # every 8-bit value of a pixel, [256]
MEANS = (-3.0, 0.0, 1e-9, 0.3, 0.5, 1.0, 4.0)
LOG_SCALES = (-50.0, -30.0, -4.5, -2.0, 0.0, 3.0, 30.0, 50.0)
FREY = {"data_dim": 560, "image_shape": [28, 20], "likelihood": "discretized-logistic", "latent_dim": 3,
        "hidden": [16]}


def frey_like(batch: int, seed: int) -> torch.Tensor:
    """Synthetic 8-bit images v / 255 [batch, 560], v uniform in 0..255 (every value, edges included)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 560), generator=gen, dtype=torch.float64) / 255


@pytest.mark.parametrize("log_scale", LOG_SCALES)
@pytest.mark.parametrize("mean", MEANS)
def test_discretized_logistic_sums_to_one_over_the_256_values(mean, log_scale):
    log_p = discretized_logistic_log_prob(VALUES, torch.tensor(mean, dtype=torch.float64),
                                          torch.tensor(log_scale, dtype=torch.float64))  # [256]
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    assert abs(log_p.exp().sum().item() - 1.0) < 1e-12


@pytest.mark.parametrize("log_scale", (-4.5, -2.0, 0.0))
@pytest.mark.parametrize("mean", (0.0, 0.3, 0.5, 1.0))
def test_discretized_logistic_is_the_logistic_mass_of_each_bin(mean, log_scale):
    """Against plain CDF differences (float64): bin v is [v/255 - 1/510, v/255 + 1/510], bin 0 reaches down to
    -inf and bin 255 up to +inf. Above the mean the reference uses the survival function 1 - F(t) = F(-t)
    (no cancellation of values near 1)."""
    s = torch.tensor(log_scale, dtype=torch.float64).exp()
    lo = torch.where(VALUES <= 0, torch.full_like(VALUES, -torch.inf), VALUES - 0.5 / 255)  # [256]
    hi = torch.where(VALUES >= 1, torch.full_like(VALUES, torch.inf), VALUES + 0.5 / 255)  # [256]
    cdf = lambda t: torch.sigmoid((t - mean) / s)  # noqa: E731
    survival = lambda t: torch.sigmoid((mean - t) / s)  # noqa: E731
    above = VALUES > mean
    upper = torch.where(above, survival(lo), cdf(hi))
    lower = torch.where(above, survival(hi), cdf(lo))
    got = discretized_logistic_log_prob(VALUES, torch.tensor(mean, dtype=torch.float64),
                                        torch.tensor(log_scale, dtype=torch.float64))  # [256]
    torch.testing.assert_close(got.exp(), upper - lower, rtol=1e-10, atol=1e-300)


def test_discretized_logistic_gradients_are_finite_at_the_edges_and_extreme_parameters():
    x = torch.tensor([0.0, 1 / 255, 128 / 255, 254 / 255, 1.0], dtype=torch.float64)  # [5]
    for mean in MEANS:
        for log_scale in LOG_SCALES:
            m = torch.full((5,), mean, dtype=torch.float64, requires_grad=True)
            ls = torch.full((5,), log_scale, dtype=torch.float64, requires_grad=True)
            discretized_logistic_log_prob(x, m, ls).sum().backward()
            assert torch.isfinite(m.grad).all() and torch.isfinite(ls.grad).all(), (mean, log_scale)
    raw = torch.tensor([[-1e4] * 5 + [-1e4] * 5, [1e4] * 5 + [1e4] * 5, [0.0] * 5 + [-1e4] * 5],
                       dtype=torch.float64, requires_grad=True)  # decoder outputs [3, 2 * 5]
    log_p = DiscretizedLogistic.log_prob(x, raw)  # [3]
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(raw.grad).all()


def test_discretized_logistic_layout_and_clamp():
    """Decoder outputs [..., 2P]: first block the mean's logit, second the log-scale, clamped to [-4.5, 0]."""
    raw = torch.tensor([[0.0, 2.0, -9.0, 0.5]], dtype=torch.float64)  # [1, 2 * 2]
    mean, log_scale = DiscretizedLogistic.split(raw)
    torch.testing.assert_close(mean, torch.sigmoid(torch.tensor([[0.0, 2.0]], dtype=torch.float64)))
    torch.testing.assert_close(log_scale, torch.tensor([[-4.5, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(DiscretizedLogistic.mean(raw), mean)


def test_bernoulli_is_todays_log_prob_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((3, 7), 0.4, dtype=torch.float64), generator=gen)  # [B, P]
    logits = torch.randn(4, 3, 7, dtype=torch.float64, generator=gen) * 5  # [k, B, P]
    assert torch.equal(LIKELIHOODS["bernoulli"].log_prob(x, logits), bernoulli_log_prob(x, logits))
    model = build_vae({"data_dim": 7, "latent_dim": 2, "hidden": [5]}).double()
    eps = torch.randn(4, 3, 2, dtype=torch.float64, generator=gen)  # [k, B, D]
    log_px_z, _, _ = model.log_densities(x, eps)  # [k, B]
    z, _ = model.posterior.from_noise(*model.encoder(x), eps)
    assert torch.equal(log_px_z, bernoulli_log_prob(x, model.decoder(z)))
    assert model.decoder(z).shape == (4, 3, 7)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("posterior, prior", [("mean-field", "standard"), ("iaf", "vamp")])
def test_iw_log_px_is_at_least_the_elbo_on_a_frey_shaped_model(architecture, posterior, prior):
    """28x20 8-bit synthetic data: IW log p(x) with k = 2000 >= the ELBO averaged over 2000 other samples
    (the gap is positive per image, well above the ELBO estimate's noise), on MLP and conv nets."""
    torch.manual_seed(0)
    model = build_vae({**FREY, "architecture": architecture, "posterior": posterior, "prior": prior,
                       "prior_components": 3}).double()
    x = frey_like(4, seed=1)  # [B, 560]
    iw = model.iw_log_px(x, k=2000, generator=torch.Generator().manual_seed(2))  # [B]
    with torch.no_grad():
        elbo = model.elbo(x, k=2000, generator=torch.Generator().manual_seed(3))  # [B]
        log_px_z, _, _ = model.log_weights(x, k=3, generator=torch.Generator().manual_seed(4))  # [k, B]
    assert torch.isfinite(iw).all() and torch.isfinite(elbo).all()
    assert (iw > elbo).all(), (iw, elbo)
    assert (log_px_z < 0).all() and (log_px_z > 560 * -10).all()  # nats per image of a normalized pmf


def test_frey_shaped_model_decodes_images_of_its_shape():
    model = build_vae({**FREY, "architecture": "conv"}).double()
    x = frey_like(2, seed=0)  # [B, 560]
    assert model.decoder(torch.zeros(5, 2, 3, dtype=torch.float64)).shape == (5, 2, 2 * 560)  # [k, B, 2P]
    for images in (model.sample(6, torch.Generator().manual_seed(0)), model.reconstruct(x)):
        assert images.shape[1] == 560 and ((images > 0) & (images < 1)).all()
    assert model.floats_per_iw_sample > build_vae({**FREY, "likelihood": "bernoulli"}).floats_per_iw_sample


@pytest.mark.parametrize("keys, message", [
    ({"image_shape": [28, 18], "data_dim": 504, "architecture": "conv"},
     "'model.architecture' = 'conv' needs image_shape sides divisible by 4"),
    ({"image_shape": [28, 20], "data_dim": 784}, "'model.image_shape' = [28, 20] has 560 pixels but "
                                                 "'model.data_dim' is 784"),
    ({"image_shape": [28]}, "'model.image_shape' must be [height, width]"),
    ({"likelihood": "gaussian"}, "'model.likelihood' must be one of 'bernoulli', 'discretized-logistic'"),
])
def test_shape_and_likelihood_errors_are_one_line(keys, message):
    with pytest.raises(ConfigError) as err:
        build_vae(keys)  # the config's own checks, then the names the model resolves (the likelihood)
    assert message in str(err.value) and "\n" not in str(err.value)


def run_config(model: dict, dataset: str) -> RunConfig:
    """A RunConfig built directly: DataConfig's `dataset` choices (checked when parsed from TOML) list only the
    MNIST names on this branch, the dataset registry has them all."""
    return RunConfig("g", "v", "l", ModelConfig.parse(model), TrainConfig(), DataConfig(dataset=dataset),
                     EvalConfig())


def test_run_config_takes_the_shape_from_the_dataset_and_refuses_a_likelihood_that_does_not_fit():
    run = run_config({"likelihood": "discretized-logistic"}, "frey-faces")
    assert (run.model.data_dim, run.model.image_shape) == (560, (28, 20))
    assert run_config({}, "caltech101-silhouettes").model == ModelConfig()  # 28x28: nothing changes
    with pytest.raises(ConfigError) as err:
        run_config({}, "frey-faces")
    assert str(err.value) == ("'model.likelihood' = 'bernoulli' does not fit dataset 'frey-faces' (8bit data); "
                              "use 'discretized-logistic'")
    with pytest.raises(ConfigError, match="'model.likelihood' = 'discretized-logistic' does not fit dataset "
                                          "'fashion-mnist'"):
        run_config({"likelihood": "discretized-logistic"}, "fashion-mnist")


@pytest.mark.parametrize("posterior, prior", [("mean-field", "standard"), ("iaf", "vamp")])
def test_frey_shaped_runs_train_in_a_stack_exactly_as_alone(float64, one_thread, tmp_path, monkeypatch, posterior,
                                                            prior):
    """The training step through the discretized logistic (28x20, 8-bit synthetic data) is vmapped over a stack
    like the Bernoulli one: each run of a stack of 3 trains as it does alone (tests/test_stacking.py's check)."""
    from dataclasses import replace

    from bench.training.run import RunData
    from tests import test_stacking

    cfgs = [replace(cfg, model=replace(cfg.model, likelihood="discretized-logistic"),
                    data=replace(cfg.data, dataset="frey-faces"))
            for cfg in test_stacking.configs(posterior, prior, "adam")]  # data_dim, image_shape from the dataset
    assert {(c.model.data_dim, c.model.image_shape) for c in cfgs} == {(560, (28, 20))}
    data = RunData(train=frey_like(40, 0), valid=frey_like(10, 1), test=frey_like(9, 2), dynamic=False,
                   digest="synthetic")  # [N, 560] each
    monkeypatch.setattr(test_stacking, "synthetic_data", lambda device="cpu": data)
    test_stacking.assert_stack_trains_as_alone(cfgs, tmp_path, "cpu")
