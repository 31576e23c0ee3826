"""The fast training path computes the same numbers as the plain torch.distributions formulation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

from bench.train import make_optimizer, train_step
from vae_core import build_vae


def plain_elbo(model, x, eps):
    """ELBO of a mean-field/standard model written with torch.distributions, for given noise eps [B, D]."""
    loc, scale, _ = model.encoder(x)
    z = loc + scale * eps
    log_q = Normal(loc, scale).log_prob(z).sum(-1)
    log_p = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
    log_px = Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
    return log_px + log_p - log_q


def test_closed_form_elbo_equals_torch_distributions():
    torch.manual_seed(0)
    model = build_vae({"hidden": [32], "latent_dim": 5}).double()
    x = (torch.rand(7, 784, dtype=torch.float64) < 0.3).double()
    ours = model.elbo(x, 1, torch.Generator().manual_seed(3))
    eps = torch.randn((7, 5), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(ours, plain_elbo(model, x, eps), rtol=1e-12, atol=1e-10)


def test_bernoulli_log_prob_matches_bce_at_extreme_logits():
    from vae_core.distributions import bernoulli_log_prob

    logits = torch.tensor([[-80.0, -3.0, 0.0, 3.0, 80.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(bernoulli_log_prob(x, logits), expected)


def test_foreach_optimizer_step_equals_plain_step():
    """The runner's optimizers (foreach) move parameters exactly as the per-tensor implementation."""
    torch.manual_seed(0)
    a = build_vae({"hidden": [32], "latent_dim": 4, "posterior": "iaf"}).double()
    b = build_vae({"hidden": [32], "latent_dim": 4, "posterior": "iaf"}).double()
    b.load_state_dict(a.state_dict())
    x = (torch.rand(16, 784, dtype=torch.float64) < 0.3).double()
    for name in ("adam", "adamax", "rmsprop-centered", "sgd"):
        opt_a = make_optimizer(name, a.parameters(), 1e-3)
        opt_b = type(opt_a)(b.parameters(), **{**opt_a.defaults, "foreach": False})
        for _ in range(3):
            train_step(a, opt_a, x, torch.Generator().manual_seed(1))
            train_step(b, opt_b, x, torch.Generator().manual_seed(1))
        for pa, pb in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)
