"""ModelConfig: unknown keys, wrong types and bad values are one-line ConfigErrors that name the key (with a
"did you mean" for typos); the defaults build; every registered family is accepted; configs round-trip.
"""

from __future__ import annotations

import pytest
import torch

from tests.families import PAIRS
from vae_core import POSTERIORS, ConfigError, ModelConfig, build_vae
from vae_core.config import to_dict


def config_error(raw: dict) -> str:
    """The message of the ConfigError that build_vae(raw) must raise (one line)."""
    with pytest.raises(ConfigError) as err:
        build_vae(raw)
    message = str(err.value)
    assert "\n" not in message, f"multi-line message: {message!r}"
    assert isinstance(err.value, ValueError)
    return message


@pytest.mark.parametrize("typo, key", [("latnt_dim", "latent_dim"), ("hiden", "hidden"),
                                       ("posteror", "posterior"), ("prior_component", "prior_components")])
def test_unknown_key_suggests_the_closest(typo, key):
    message = config_error({typo: 1})
    assert f"'model.{typo}'" in message and f"did you mean '{key}'" in message


def test_unknown_key_without_a_close_match():
    message = config_error({"learning_rate": 0.1})
    assert "'model.learning_rate'" in message and "did you mean" not in message


@pytest.mark.parametrize("key, value", [
    ("latent_dim", "8"), ("latent_dim", 8.0), ("latent_dim", True), ("data_dim", None),
    ("hidden", 5), ("hidden", ["64"]), ("hidden", [64, 2.5]),
    ("posterior", 1), ("kl", False), ("flow_hidden", "16"),
])
def test_wrong_type_names_the_key(key, value):
    message = config_error({key: value})
    assert f"'model.{key}'" in message and "must be" in message


@pytest.mark.parametrize("raw, key", [
    ({"latent_dim": 0}, "latent_dim"),
    ({"data_dim": 0}, "data_dim"),
    ({"hidden": [64, 0]}, "hidden"),
    ({"posterior": "nope"}, "posterior"),
    ({"prior": "nope"}, "prior"),
    ({"posterior_flow_steps": 0}, "posterior_flow_steps"),
    ({"prior_flow_steps": 0}, "prior_flow_steps"),
    ({"prior_components": 0}, "prior_components"),
    ({"flow_hidden": -1}, "flow_hidden"),
    ({"latent_dim": 8, "flow_hidden": 6}, "flow_hidden"),  # below latent_dim - 1 = 7
    ({"kl": "analytic", "posterior": "iaf"}, "kl"),
    ({"kl": "analytic", "prior": "mog"}, "kl"),
    ({"kl": "closed-form"}, "kl"),
    ({"scale": "relu"}, "scale"),
    ({"architecture": "rnn"}, "architecture"),
    ({"architecture": "conv", "data_dim": 4}, "architecture"),
])
def test_bad_value_names_the_key(raw, key):
    message = config_error(raw)
    assert f"'model.{key}'" in message, message


def test_bad_choice_lists_the_valid_ones():
    message = config_error({"posterior": "nope"})
    assert all(repr(name) in message for name in POSTERIORS) and "'nope'" in message


def test_boundary_values_are_accepted():
    build_vae({"data_dim": 4, "latent_dim": 8, "flow_hidden": 7, "posterior": "iaf", "hidden": [4]})  # = D - 1
    build_vae({"data_dim": 1, "latent_dim": 1, "hidden": [1], "kl": "analytic"})
    build_vae({"data_dim": 4, "hidden": []})  # no hidden layer: linear encoder and decoder


def test_defaults_build_and_run():
    model = build_vae({})
    assert model.config == ModelConfig()
    assert model.config.data_dim == 784 and model.config.latent_dim == 32
    x = torch.bernoulli(torch.full((2, 784), 0.3), generator=torch.Generator().manual_seed(0))
    elbo = model.elbo(x)
    assert elbo.shape == (2,) and torch.isfinite(elbo).all()


@pytest.mark.parametrize("posterior, prior", PAIRS)
def test_every_registered_family_is_accepted(posterior, prior):
    config = ModelConfig.parse({"data_dim": 4, "posterior": posterior, "prior": prior})
    assert config.posterior == posterior and config.prior == prior


def test_config_round_trips_through_plain_data():
    config = ModelConfig.parse({"data_dim": 4, "hidden": [32, 16], "latent_dim": 3, "posterior": "planar",
                                "prior": "vamp", "scale": "exp"})
    assert config.hidden == (32, 16)
    plain = to_dict(config)
    assert plain["hidden"] == [32, 16]
    assert ModelConfig.parse(plain) == config
    assert ModelConfig.parse(config) is config
    with pytest.raises(ConfigError, match="must be a table"):
        ModelConfig.parse([("latent_dim", 3)])


def test_activations_compute_what_they_name(float64):
    """relu / tanh hidden layers, and the gated layer h(x) * sigmoid(g(x)); the output layer stays linear."""
    torch.manual_seed(0)
    x = torch.rand(5, 784, dtype=torch.float64)  # [B, P]
    for activation, nonlinearity in [("relu", torch.relu), ("tanh", torch.tanh)]:
        net = build_vae({"hidden": [7], "latent_dim": 2, "activation": activation}).double().encoder.net
        first, last = net[0], net[-1]
        torch.testing.assert_close(net(x), last(nonlinearity(first(x))))
    net = build_vae({"hidden": [7, 6], "latent_dim": 2, "activation": "gated"}).double().encoder.net
    g1, g2, last = net
    h = g1.h(x) * torch.sigmoid(g1.g(x))
    torch.testing.assert_close(net(x), last(g2.h(h) * torch.sigmoid(g2.g(h))))


def test_hardtanh_logvar_scale_clamps_the_log_variance_to_minus_6_and_2(float64):
    from vae_core.nets.coders import hardtanh_logvar_scale

    raw = torch.tensor([-10.0, -6.0, 0.0, 1.0, 2.0, 5.0], dtype=torch.float64)
    expected = torch.exp(0.5 * torch.tensor([-6.0, -6.0, 0.0, 1.0, 2.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(hardtanh_logvar_scale(raw), expected)
