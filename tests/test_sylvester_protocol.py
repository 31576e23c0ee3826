"""The Sylvester paper's protocol parts: the gated convolutional encoder/decoder (28x28 and Frey's 28x20) with
the official code's layer specs, the variance-softplus scale, and early stopping counted after the warm-up."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from bench.grid.files import parse_grid
from bench.storage import ResultsLayout
from bench.training.run import Run
from tests.test_stacking import synthetic_data
from vae_core import build_vae
from vae_core.config import ConfigError
from vae_core.nets.coders import softplus_variance_scale
from vae_core.nets.gated_conv import GatedConv2d, GatedConvTranspose2d, gated_conv_decoder, gated_conv_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


def conv_specs(net: nn.Module, kind: type) -> list[tuple]:
    """(in, out, kernel, stride, padding, output_padding) of the h-convolution of every gated layer."""
    return [(m.h.in_channels, m.h.out_channels, m.h.kernel_size, m.h.stride[0], m.h.padding[0],
             getattr(m.h, "output_padding", (0,))[0]) for m in net.modules() if isinstance(m, kind)]


def test_gated_conv_layers_are_the_official_codes():
    assert conv_specs(gated_conv_encoder(), GatedConv2d) == [
        (1, 32, (5, 5), 1, 2, 0), (32, 32, (5, 5), 2, 2, 0), (32, 64, (5, 5), 1, 2, 0), (64, 64, (5, 5), 2, 2, 0),
        (64, 64, (5, 5), 1, 2, 0), (64, 256, (7, 7), 1, 0, 0)]
    assert conv_specs(gated_conv_decoder(64), GatedConvTranspose2d) == [
        (64, 64, (7, 7), 1, 0, 0), (64, 64, (5, 5), 1, 2, 0), (64, 32, (5, 5), 2, 2, 1), (32, 32, (5, 5), 1, 2, 0),
        (32, 32, (5, 5), 2, 2, 1), (32, 32, (5, 5), 1, 2, 0)]
    assert conv_specs(gated_conv_encoder((28, 20)), GatedConv2d)[-1][2] == (7, 5)  # Frey Faces' last kernel


@pytest.mark.parametrize("shape", [(28, 28), (28, 20)])
def test_gated_conv_shapes(shape):
    x = torch.rand(3, shape[0] * shape[1])  # [N, H * W]
    assert gated_conv_encoder(shape)(x).shape == (3, 256)
    assert gated_conv_decoder(5, shape)(torch.randn(3, 5)).shape == (3, shape[0] * shape[1])
    with pytest.raises(ValueError, match="divisible by 4"):
        gated_conv_encoder((30, 30))


def test_gated_conv_vae_gate_multiplies_and_the_model_config_checks_the_size():
    layer = GatedConv2d(1, 2, 3, 1, 1)
    x = torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(layer(x), layer.h(x) * torch.sigmoid(layer.g(x)))
    model = build_vae({"architecture": "gated-conv", "latent_dim": 4, "posterior": "sylvester-triangular"})
    assert model.encoder.net[-1].in_features == 256
    assert model.decoder(torch.randn(2, 3, 4)).shape == (2, 3, 784)  # [k, B, P]
    with pytest.raises(ConfigError,
                       match=r"'model.architecture' = 'gated-conv' needs image_shape sides divisible by 4; got \[1, 100\]"):
        build_vae({"architecture": "gated-conv", "data_dim": 100})


def test_softplus_variance_scale():
    raw = torch.tensor([-3.0, 0.0, 2.5], dtype=torch.float64)
    torch.testing.assert_close(softplus_variance_scale(raw) ** 2, torch.log1p(torch.exp(raw)))


def record(run: Run, elbos: list[float], every: int) -> None:
    """Feed validation ELBOs at steps every, 2 * every, ... until the run stops."""
    for i, elbo in enumerate(elbos):
        run.step = every * (i + 1)
        run.record_validation({"elbo": elbo, "iw_log_px": math.nan}, {}, torch.zeros(3))
        if run.status != "training":
            return


@pytest.mark.parametrize("after_warmup, stop", [(False, 30), (True, 40)])
def test_patience_is_counted_after_the_warmup_when_asked(tmp_path, after_warmup, stop):
    """Best at step 10, warm-up 30 steps, patience 2: counted from the start the run stops at step 30; counted
    from step 30 on (the official code's `epoch >= warmup`), evaluations 30 and 40 count and it stops at 40."""
    (cfg,) = parse_grid({"train": {"patience": 2, "kl_warmup_steps": 30, "eval_every": 10, "max_steps": 100,
                                   "patience_after_warmup": after_warmup}})
    run = Run(cfg, synthetic_data(), ResultsLayout(tmp_path), torch.device("cpu"))
    record(run, [-100.0, -101.0, -102.0, -103.0, -104.0, -105.0], every=10)
    assert run.status == "trained" and run.step == stop and run.best["step"] == 10


def test_patience_after_warmup_needs_patience():
    with pytest.raises(ConfigError, match="'train.patience_after_warmup' needs"):
        parse_grid({"train": {"patience_after_warmup": True}})
