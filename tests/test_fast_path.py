"""The fast training path computes the numbers of the plain formulation: closed-form densities = torch.distributions,
the functional one-graph step = autograd + torch.optim + clip_grad_norm_, compiled = eager."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

from bench.training.evaluate import evaluate
from bench.training.optim import OPTIMIZERS, LrSchedule, flatten_parameters, is_flat
from bench.training.step import FlatLayout, StackFunctions, StepOptions, kl_weight
from vae_core import build_vae
from vae_core.nets import Decoder, Encoder
from vae_core.nets.made import MADE

TORCH_OPTIMIZERS = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr, foreach=False),
    "adamax": lambda params, lr: torch.optim.Adamax(params, lr=lr, foreach=False),
    "rmsprop-centered": lambda params, lr: torch.optim.RMSprop(params, lr=lr, centered=True, foreach=False),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, foreach=False),
}


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


def binary(shape, seed):
    return (torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) < 0.3).double()


def one_run_args(model, lr, warmup, clip):
    """Row tensors of one run (R = 1) for `StackFunctions.train_step`: flat [1, N], its state, t, hypers."""
    flat = FlatLayout(model).flatten(model)[None]
    return flat, flat.new_tensor([lr]), flat.new_tensor([float(warmup)]), flat.new_tensor([clip])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_functional_step_trains_like_autograd_and_torch_optim(float64, name):
    """The one-graph step (eager) = loss.backward(), clip_grad_norm_ and the torch.optim optimizer over the
    module's separate parameters, with a KL warm-up: same losses every step, same parameters after 6 steps."""
    config = {"hidden": [32], "latent_dim": 4, "posterior": "iaf", "prior": "mog"}
    torch.manual_seed(0)
    plain = build_vae(config)
    ours = build_vae(config)
    ours.load_state_dict(plain.state_dict())
    lr, warmup, clip = 1e-2, 4, 5.0
    reference = TORCH_OPTIMIZERS[name](plain.parameters(), lr)
    fns = StackFunctions(ours, OPTIMIZERS[name], compile=False)
    flat, lr_t, warmup_t, clip_t = one_run_args(ours, lr, warmup, clip)
    state, t, active = OPTIMIZERS[name].init(flat), flat.new_zeros(1), torch.ones(1, dtype=torch.bool)
    x = binary((16, 784), 5)
    for step in range(6):
        eps = torch.randn((1, 16, 4), generator=torch.Generator().manual_seed(step), dtype=torch.float64)
        reconstruction, kl = plain(x, eps)
        beta = min(1.0, step / warmup)
        reference.zero_grad()
        (-(reconstruction - beta * kl).mean()).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), clip, foreach=False)
        reference.step()
        flat, state, t, rec, kl_sum, ok = fns.train_step(flat, state, t, x[None], eps[None], lr_t, warmup_t,
                                                         clip_t, active)
        torch.testing.assert_close((rec[0], kl_sum[0]), (reconstruction.sum(), kl.sum()), rtol=1e-11, atol=1e-9)
    assert bool(ok) and t.item() == 6
    expected = FlatLayout(plain).flatten(plain)
    torch.testing.assert_close(flat[0], expected, rtol=1e-9, atol=1e-12)
    assert not torch.equal(flat[0], FlatLayout(ours).flatten(ours)), "no update happened"


def test_protocol_options_train_like_autograd_and_torch_optim(float64):
    """The IWAE objective (k = 3, KL warm-up inside each log-weight), per-tensor gradient normalization, Adam
    with eps 1e-4 and a step lr schedule (halved every 2 steps) = the same recipe written with autograd,
    torch.optim.Adam and LambdaLR over the module's parameters: same parameters after 6 steps."""
    config = {"hidden": [16], "latent_dim": 3, "posterior": "planar", "prior": "vamp", "prior_components": 4,
              "activation": "gated", "scale": "hardtanh-logvar", "init": "he", "prior_pseudo_inputs": "hardtanh"}
    torch.manual_seed(0)
    plain, ours = build_vae(config), build_vae(config)
    ours.load_state_dict(plain.state_dict())
    lr, warmup = 1e-2, 4
    reference = torch.optim.Adam(plain.parameters(), lr=lr, eps=1e-4, foreach=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(reference, lambda s: 0.5 ** (s // 2))
    options = StepOptions("iwae", LrSchedule("step", steps_per_epoch=2, decay=0.5), "per-tensor")
    fns = StackFunctions(ours, OPTIMIZERS["adam"].with_eps(1e-4), compile=False, options=options)
    flat, lr_t, warmup_t, clip_t = one_run_args(ours, lr, warmup, 0.0)
    state, t, active = OPTIMIZERS["adam"].init(flat), flat.new_zeros(1), torch.ones(1, dtype=torch.bool)
    x = binary((8, 784), 5)
    for step in range(6):
        eps = torch.randn((3, 8, 3), generator=torch.Generator().manual_seed(step), dtype=torch.float64)
        log_px_z, log_pz, log_q = plain.log_densities(x, eps)  # [k, B] each
        beta = min(1.0, step / warmup)
        bound = torch.logsumexp(log_px_z - beta * (log_q - log_pz), 0) - math.log(3)
        reference.zero_grad()
        (-bound.mean()).backward()
        for p in plain.parameters():
            p.grad /= p.grad.norm() + 1e-7
        reference.step()
        scheduler.step()
        flat, state, t, *_ = fns.train_step(flat, state, t, x[None], eps[None], lr_t, warmup_t, clip_t, active)
    torch.testing.assert_close(flat[0], FlatLayout(plain).flatten(plain), rtol=1e-9, atol=1e-12)
    assert not torch.equal(flat[0], FlatLayout(ours).flatten(ours)), "no update happened"


def test_init_schemes_draw_what_they_name():
    torch.manual_seed(0)
    he = build_vae({"hidden": [400], "latent_dim": 4, "init": "he"}).encoder.net[0]
    assert he.weight.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.02)
    glorot = build_vae({"hidden": [400], "latent_dim": 4, "init": "glorot"}).decoder.net[0]
    bound = (6 / (4 + 400)) ** 0.5
    assert glorot.weight.abs().max().item() <= bound and glorot.weight.abs().max().item() > 0.95 * bound
    assert torch.equal(glorot.bias, torch.zeros_like(glorot.bias))
    vamp = build_vae({"hidden": [8], "latent_dim": 2, "prior": "vamp", "prior_pseudo_inputs": "hardtanh"}).prior
    u = vamp.pseudo_inputs()
    assert u.min().item() >= 0 and u.max().item() <= 1 and u.mean().item() == pytest.approx(0.05, abs=0.002)


def test_clipping_is_per_run_and_zero_means_off(float64):
    from bench.training.optim import clip_gradient

    g = torch.tensor([3.0, 4.0])
    torch.testing.assert_close(clip_gradient(g, torch.tensor(1.0)), g / (5 + 1e-6))
    assert torch.equal(clip_gradient(g, torch.tensor(0.0)), g)
    assert torch.equal(clip_gradient(g, torch.tensor(10.0)), g)


def test_kl_weight_schedule():
    steps = torch.tensor([0.0, 1.0, 50.0, 99.0, 100.0, 5000.0])
    torch.testing.assert_close(kl_weight(steps, torch.tensor(100.0)), torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0, 1.0]))
    assert torch.equal(kl_weight(steps, torch.tensor(0.0)), torch.ones(6))


def test_a_frozen_or_non_finite_run_keeps_its_parameters(float64):
    """`active` False, or a non-finite loss at this step: parameters, optimizer state and t stay as they were."""
    torch.manual_seed(0)
    model = build_vae({"hidden": [8], "latent_dim": 3})
    fns = StackFunctions(model, OPTIMIZERS["adam"], compile=False)
    flat, lr, warmup, clip = one_run_args(model, 1e-2, 0, 0.0)
    state, t = OPTIMIZERS["adam"].init(flat), flat.new_zeros(1)
    x, eps = binary((1, 4, 784), 1), torch.randn(1, 1, 4, 3)
    out = fns.train_step(flat, state, t, x, eps, lr, warmup, clip, torch.zeros(1, dtype=torch.bool))
    assert torch.equal(out[0], flat) and torch.equal(out[2], t) and not bool(out[5])
    out = fns.train_step(flat, state, t, x, eps * math.nan, lr, warmup, clip, torch.ones(1, dtype=torch.bool))
    assert torch.equal(out[0], flat) and torch.equal(out[2], t) and not bool(out[5])
    out = fns.train_step(flat, state, t, x, eps, lr, warmup, clip, torch.ones(1, dtype=torch.bool))
    assert not torch.equal(out[0], flat) and out[2].item() == 1 and bool(out[5])


def test_flatten_parameters_keeps_values_and_shares_storage():
    torch.manual_seed(0)
    a = build_vae({"hidden": [32], "latent_dim": 4, "posterior": "iaf", "prior": "flow"}).double()
    b = build_vae({"hidden": [32], "latent_dim": 4, "posterior": "iaf", "prior": "flow"}).double()
    b.load_state_dict(a.state_dict())
    flat = flatten_parameters(b)
    assert is_flat(b, flat) and flat.numel() == sum(p.numel() for p in a.parameters())
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    with torch.no_grad():
        flat.add_(1.0)
    assert all(torch.equal(pa + 1.0, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    b.float()  # a cast re-homes the parameters: the check must notice
    assert not is_flat(b, flat)


@pytest.mark.parametrize("config", [{"hidden": [32], "latent_dim": 4},
                                    {"hidden": [32], "latent_dim": 4, "posterior": "iaf", "prior": "vamp",
                                     "prior_components": 3},
                                    {"hidden": [32], "latent_dim": 4, "posterior": "sylvester-orthogonal",
                                     "posterior_orthogonal_vectors": 2},
                                    {"hidden": [32], "latent_dim": 4, "posterior": "sylvester-householder",
                                     "posterior_householder_reflections": 2},
                                    {"hidden": [32], "latent_dim": 4, "posterior": "sylvester-triangular",
                                     "prior": "mog"},
                                    {"hidden": [32], "latent_dim": 4, "posterior": "householder"}],
                         ids=["mean-field", "iaf-vamp", "o-snf", "h-snf", "t-snf-mog", "householder"])
def test_compiled_step_trains_like_the_eager_step(float64, config):
    """torch.compile of the one-graph step (float64) is the eager step: from the same weights, optimizer state
    and batch, the same losses, weights and state, at each of 3 steps (docs/speed.md, "Compiled = eager").

    Each step starts both paths from the eager path's outputs: over a trajectory, centered RMSprop multiplies a
    last-bit difference of a near-zero gradient by up to lr / eps = 1e6 per step (d update / d g at g = 0), so
    a multi-step comparison measures that amplification, not the two step functions. One step's difference
    is |d update / d g| |δg| + u |w|: measured at most 2.1e-13 (H-SNF), against the tolerance 1e-11 + 1e-9 |w|."""
    assert_compiled_step_is_eager(config, lambda fns: None)


def assert_compiled_step_is_eager(config: dict, break_eager) -> None:
    torch.manual_seed(0)
    model = build_vae(config)
    eager = StackFunctions(model, OPTIMIZERS["rmsprop-centered"], compile=False)
    torch._dynamo.utils.counters.clear()
    compiled = StackFunctions(model, OPTIMIZERS["rmsprop-centered"], compile=True)
    flat, lr, warmup, clip = one_run_args(model, 1e-2, 3, 5.0)
    state, t = OPTIMIZERS["rmsprop-centered"].init(flat), flat.new_zeros(1)
    x, active = binary((1, 16, 784), 5), torch.ones(1, dtype=torch.bool)
    for step in range(3):
        eps = torch.randn((1, 1, 16, 4), generator=torch.Generator().manual_seed(step), dtype=torch.float64)
        out_c = compiled.train_step(flat, state, t, x, eps, lr, warmup, clip, active)
        with break_eager(model) or contextlib.nullcontext():
            out_e = eager.train_step(flat, state, t, x, eps, lr, warmup, clip, active)
        torch.testing.assert_close(out_c[3:5], out_e[3:5], rtol=1e-10, atol=1e-8)  # reconstruction, kl sums
        torch.testing.assert_close(out_c[0], out_e[0], rtol=1e-9, atol=1e-11)  # weights
        torch.testing.assert_close(out_c[1], out_e[1], rtol=1e-9, atol=1e-11)  # optimizer state
        flat, state, t = out_e[0], out_e[1], out_e[2]
    assert compiled.compile_error == "" and compiled.step_compiled
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it really was compiled


def test_the_compiled_step_check_catches_a_wrong_reflection_order(float64, monkeypatch):
    """The tolerance above is tight enough to see a real error: H-SNF's eager step with Q's reflections applied
    in the reverse order (Qᵀ where Q belongs) fails it."""
    from vae_core.flows import sylvester as flows

    apply = flows.householder_apply

    @contextlib.contextmanager
    def reversed_order(model):
        monkeypatch.setattr(flows, "householder_apply", lambda z, units, transpose=False: apply(z, units, not transpose))
        yield
        monkeypatch.setattr(flows, "householder_apply", apply)

    with pytest.raises(AssertionError, match="not close"):
        assert_compiled_step_is_eager({"hidden": [32], "latent_dim": 4, "posterior": "sylvester-householder",
                                       "posterior_householder_reflections": 2}, reversed_order)


def test_compiled_evaluation_gives_the_eager_figures_and_the_model_methods(float64):
    """Validation/test figures (ELBO terms and IW log p(x) over several batches and chunks): compiled = eager
    = the model's own `elbo_terms` / `iw_log_px` with the same generator."""
    torch.manual_seed(0)
    model = build_vae({"hidden": [32], "latent_dim": 4, "posterior": "iaf"})
    x = binary((10, 784), 5)
    flat = FlatLayout(model).flatten(model)[None]
    eager = evaluate(StackFunctions(model, OPTIMIZERS["sgd"], compile=False), flat, x, [3], 1, 50, 4)[0]
    compiled = evaluate(StackFunctions(model, OPTIMIZERS["sgd"], compile=True), flat, x, [3], 1, 50, 4)[0]
    gen = torch.Generator().manual_seed(3)
    sums = {"reconstruction": 0.0, "kl": 0.0, "iw_log_px": 0.0}
    for start in range(0, 10, 4):
        xb = x[start:start + 4]
        rec, kl = model.elbo_terms(xb, 1, gen)
        sums["reconstruction"] += rec.sum().item()
        sums["kl"] += kl.sum().item()
        sums["iw_log_px"] += model.iw_log_px(xb, 50, chunk=7, generator=gen).sum().item()
    for key in sums:
        assert eager[key] == pytest.approx(sums[key] / 10, rel=1e-12), key
        assert compiled[key] == pytest.approx(eager[key], rel=1e-10), key


@pytest.mark.parametrize("posterior,prior", [("iaf", "flow"), ("planar", "vamp"), ("mean-field", "mog")])
def test_bf16_autocast_runs_matmuls_in_bf16_and_every_log_density_in_float32(posterior, prior):
    """Training under bf16 autocast: the nets' linear layers compute in bfloat16, but log p(x|z), log p(z) and
    log q come out float32, and the loss and gradient stay close to float32's (same weights, same noise)."""
    from torch.func import grad

    from bench.training.step import run_loss

    torch.manual_seed(0)
    model = build_vae({"hidden": [64], "latent_dim": 4, "posterior": posterior, "prior": prior,
                       "prior_components": 5})
    layout = FlatLayout(model)
    flat = layout.flatten(model)
    x = binary((32, 784), 3).float()
    eps = torch.randn((2, 32, 4), generator=torch.Generator().manual_seed(1))
    seen, returned = [], []
    hooks = [model.decoder.net[0].register_forward_hook(lambda m, i, out: seen.append(out.dtype))]
    nets = [m for m in model.modules() if isinstance(m, (Encoder, Decoder, MADE))]  # what densities read
    hooks += [m.register_forward_hook(lambda m, i, out: returned.extend(o.dtype for o in torch.utils._pytree.
                                                                           tree_leaves(out))) for m in nets]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        densities = model.log_densities(x, eps)
    for hook in hooks:
        hook.remove()
    assert seen == [torch.bfloat16] and all(d.dtype == torch.float32 for d in densities)
    assert returned and set(returned) == {torch.float32}  # every net hands float32 to the density code
    beta = torch.tensor(1.0)
    (loss32, g32), (loss16, g16) = [
        (run_loss(model, layout, flat, x, eps, beta, "iwae", bf16)[0],
         grad(run_loss, argnums=2, has_aux=True)(model, layout, flat, x, eps, beta, "iwae", bf16)[0])
        for bf16 in (False, True)]
    assert loss16.dtype == torch.float32
    assert abs(loss16.item() - loss32.item()) < 1e-2 * abs(loss32.item())
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0).item() > 0.99
