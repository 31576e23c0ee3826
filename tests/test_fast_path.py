"""The fast training path computes the same numbers as the plain torch.distributions formulation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

from bench.optim import OPTIMIZERS, flatten_parameters, is_flat, make_optimizer
from bench.step import EAGER, RunFunctions, autograd_gradients, functional_gradients, train_step
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


def twin_models(config: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    a, b = build_vae(config).double(), build_vae(config).double()
    b.load_state_dict(a.state_dict())
    return a, b


def test_foreach_optimizer_step_equals_plain_step():
    """The runner's optimizers (foreach) move parameters exactly as the per-tensor implementation."""
    a, b = twin_models({"hidden": [32], "latent_dim": 4, "posterior": "iaf"})
    x = (torch.rand(16, 784, dtype=torch.float64) < 0.3).double()
    for name in ("adam", "adamax", "rmsprop-centered", "sgd"):
        opt_a = make_optimizer(name, a.parameters(), 1e-3)
        opt_b = type(opt_a)(b.parameters(), **{**opt_a.defaults, "foreach": False})
        for _ in range(3):
            train_step(a, opt_a, x, torch.Generator().manual_seed(1))
            train_step(b, opt_b, x, torch.Generator().manual_seed(1))
        for pa, pb in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


def test_flatten_parameters_keeps_values_and_shares_storage():
    a, b = twin_models({"hidden": [32], "latent_dim": 4, "posterior": "iaf", "prior": "flow"})
    flat = flatten_parameters(b)
    assert is_flat(b, flat) and flat.numel() == sum(p.numel() for p in a.parameters())
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    with torch.no_grad():
        flat.add_(1.0)
    assert all(torch.equal(pa + 1.0, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    b.float()  # a cast re-homes the parameters: the check must notice
    assert not is_flat(b, flat)


def test_flat_optimizer_trains_exactly_like_per_tensor_optimizer():
    """Every optimizer over the one flat buffer moves every parameter as the per-tensor optimizer does,
    including gradient clipping (which then sees the global norm over the same numbers)."""
    x = (torch.rand(16, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) < 0.3).double()
    for name in OPTIMIZERS:
        a, b = twin_models({"hidden": [32], "latent_dim": 4, "posterior": "iaf", "prior": "mog"})
        opt_a = make_optimizer(name, a.parameters(), 1e-2)
        flat = flatten_parameters(b)
        opt_b = make_optimizer(name, [flat], 1e-2)
        ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        for step in range(4):
            out_a = train_step(a, opt_a, x, ga, beta=0.5, grad_clip=5.0)
            out_b = train_step(b, opt_b, x, gb, beta=0.5, grad_clip=5.0)
            torch.testing.assert_close(out_a, out_b, rtol=1e-12, atol=1e-9)
        assert is_flat(b, flat)
        for (pname, pa), pb in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12, msg=f"{name}: {pname}")
        assert not torch.equal(flat, torch.cat([p.detach().reshape(-1) for p in twin_models(
            {"hidden": [32], "latent_dim": 4, "posterior": "iaf", "prior": "mog"})[0].parameters()])), "no update"


@pytest.mark.parametrize("config", [{"hidden": [32], "latent_dim": 4},
                                    {"hidden": [32], "latent_dim": 4, "posterior": "iaf", "prior": "vamp",
                                     "prior_components": 3}], ids=["mean-field", "iaf-vamp"])
def test_compiled_step_trains_like_the_eager_step(config):
    """torch.compile'd ELBO and optimizer update (float64): same losses and parameters as eager, step by step."""
    x = (torch.rand(16, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) < 0.3).double()
    a, b = twin_models(config)
    opt_a = make_optimizer("rmsprop-centered", [flatten_parameters(a)], 1e-2)
    opt_b = make_optimizer("rmsprop-centered", [flatten_parameters(b)], 1e-2)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    fns = RunFunctions.compile()
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(3):
        out_a = train_step(a, opt_a, x, ga, beta=0.5, fns=EAGER)
        out_b = train_step(b, opt_b, x, gb, beta=0.5, fns=fns)
        torch.testing.assert_close(out_a, out_b, rtol=1e-10, atol=1e-8)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-9, atol=1e-11, msg=name)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # both pieces really were compiled


def test_compiled_iw_chunks_give_the_eager_bound():
    """IW log p(x) with a compiled chunk function (float64): the eager numbers, chunk by chunk."""
    torch.manual_seed(0)
    model = build_vae({"hidden": [32], "latent_dim": 4, "posterior": "iaf"}).double()
    x = (torch.rand(8, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) < 0.3).double()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = RunFunctions.compile().log_weight
    eager = model.iw_log_px(x, k=50, chunk=20, generator=torch.Generator().manual_seed(2))
    ours = model.iw_log_px(x, k=50, chunk=20, generator=torch.Generator().manual_seed(2), log_weight=compiled)
    torch.testing.assert_close(ours, eager, rtol=1e-12, atol=1e-10)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1


def test_functional_gradient_equals_autograd_gradient():
    """torch.func.grad over the flat parameter vector (uncompiled) = loss.backward() into the flat .grad."""
    config = {"hidden": [32], "latent_dim": 4, "posterior": "iaf", "prior": "vamp", "prior_components": 3}
    a, _ = twin_models(config)
    flat = flatten_parameters(a)
    optimizer = make_optimizer("sgd", [flat], 1e-2)
    x = (torch.rand(16, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) < 0.3).double()
    eps = a.noise(1, x, torch.Generator().manual_seed(1))
    beta = x.new_full((), 0.3)
    rec, kl = autograd_gradients(a, optimizer, x, eps, beta)
    gradient, rec_f, kl_f = functional_gradients(a, flat.detach(), x, eps, beta)
    torch.testing.assert_close((rec_f, kl_f), (rec, kl), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(gradient, flat.grad, rtol=1e-10, atol=1e-12)
    assert flat.grad.abs().sum() > 0


def test_compiled_step_refuses_an_optimizer_over_separate_tensors():
    torch.manual_seed(0)
    model = build_vae({"hidden": [8], "latent_dim": 2})
    optimizer = make_optimizer("sgd", model.parameters(), 1e-2)
    with pytest.raises(ValueError, match="flatten_parameters"):
        train_step(model, optimizer, torch.zeros(4, 784), torch.Generator().manual_seed(0),
                   fns=RunFunctions.compile())
