"""The contract every family and every (posterior, prior) pair must honour.

Per family (`vae_core.contract`, the same code as `vaebench check`): densities normalised, log q against the
autograd Jacobian, E[r/q] = 1, shapes, dtypes, seeded draws, IW >= ELBO, stacked = alone; and that contract
catching deliberate mistakes. Per pair: shapes, finite values, gradients to every parameter, exact save/load round
trips, CheckpointError for damaged files, float64. Families and pairs are read from the registry at collection
time, so a newly registered family (or an installed plugin) is tested without editing this file.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import DEVICES
from tests.families import PAIRS, ZUKO_POSTERIORS, ZUKO_PRIORS
from vae_core import CheckpointError, build_vae, contract, load_vae, registry
from vae_core.posteriors import PlanarPosterior
from vae_core.priors import StandardNormalPrior

B, K = 3, 4  # inputs, samples per input


class DeadParameters(AssertionError):
    """Some parameter received no gradient from the ELBO."""


def case(posterior, prior, latent_dim, architecture="mlp", data_dim=4, kl="mc"):
    name = f"{posterior}-{prior}-d{latent_dim}" + ("" if architecture == "mlp" else f"-{architecture}") + (
        "" if kl == "mc" else f"-kl_{kl}")
    return pytest.param(posterior, prior, latent_dim, architecture, data_dim, kl, id=name)


def flow_hidden(posterior: str, prior: str, latent_dim: int) -> int:
    """The flows' hidden width for a case: the default (2 x latent_dim), except that zuko's flows at D = 1 get 8.
    There zuko conditions an element-wise transform on the context through a ReLU MLP, 2 units wide by default:
    on the B = 3 inputs both units of a layer are often inactive, so the gradient check would report a width,
    not a defect."""
    zuko = {*ZUKO_POSTERIORS, *ZUKO_PRIORS}
    return 8 if latent_dim == 1 and (posterior in zuko or prior in zuko) else 0


CASES = [case(post, pri, d) for post, pri in PAIRS for d in (1, 3)]
CASES += [
    case("iaf", "vamp", 3, architecture="conv", data_dim=784),
    case("planar", "flow", 2, architecture="conv", data_dim=784),
    case("sylvester-orthogonal", "standard", 3, architecture="gated-conv", data_dim=784),
    case("householder", "vamp", 2, architecture="gated-conv", data_dim=784),
    case("mean-field", "standard", 3, kl="analytic"),
]


pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = [(kind, name) for kind in contract.CHECKS for name in registry.names(kind)]


def failures(checks: list[contract.Check]) -> list[str]:
    return [f"{c.name}: {c.value} (bound {c.bound})" for c in checks if c.passed is False]


@pytest.mark.parametrize("kind, name", FAMILIES, ids=[f"{k}-{n}" for k, n in FAMILIES])
def test_family_contract(kind, name):
    """Every check of `vaebench check KIND NAME` passes (compiled = eager is covered by tests/test_fast_path.py)."""
    checks = contract.CHECKS[kind](name)
    assert not failures(checks), "; ".join(failures(checks))
    notes = [c for c in checks if c.passed is None]
    stacked = [c for c in notes if "stacked" in c.name]
    assert all("not stackable" in c.value for c in stacked)  # a family outside torch.func: its runs train alone
    assert len(notes) - len(stacked) <= 2  # besides: at most the compile and n/a notes


class OffByConstantPrior(StandardNormalPrior):
    """A deliberate mistake: log p(z) + 0.05 (integrates to e^0.05 = 1.051)."""

    def log_prob(self, z):
        return super().log_prob(z) + 0.05


class FlippedPlanarPosterior(PlanarPosterior):
    """A deliberate mistake: the planar flows' log|det| with its sign flipped."""

    def flow(self, z, context):
        y, log_abs_det = super().flow(z, context)
        return y, -log_abs_det


def verdicts(checks: list[contract.Check]) -> dict[str, bool | None]:
    return {c.name.split(" (")[0].split(":")[0]: c.passed for c in checks}


def test_the_contract_catches_a_prior_off_by_a_constant():
    got = verdicts(contract.prior_checks(f"{__name__}:OffByConstantPrior"))
    assert got["p normalised"] is False and got["samples follow log_prob"] is False
    assert got["shapes"] and got["seeded draws reproducible"] and got["stacked"]


def test_the_contract_catches_a_flipped_log_det():
    got = verdicts(contract.posterior_checks(f"{__name__}:FlippedPlanarPosterior"))
    assert got["log q = log N(eps) - log|det dz/deps|"] is False and got["q normalised"] is False
    assert got["E_q[r/q] = 1"] is False
    assert got["shapes"] and got["stacked"] and got["IW log p(x) >= ELBO"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_shape_and_finite(t: torch.Tensor, shape: tuple, what: str) -> None:
    assert tuple(t.shape) == shape, f"{what}: shape {tuple(t.shape)}, expected {shape}"
    assert torch.isfinite(t).all(), f"{what}: non-finite values"


def check_shapes(model, x: torch.Tensor, data_dim: int, latent_dim: int) -> None:
    with torch.no_grad():
        loc, scale, context = model.encoder(x)
        assert_shape_and_finite(loc, (B, latent_dim), "loc")
        assert_shape_and_finite(scale, (B, latent_dim), "scale")
        assert (scale > 0).all()
        assert_shape_and_finite(context, (B, model.posterior.context_dim), "context")
        z, log_q = model.posterior.rsample(loc, scale, context, K, gen(1))
        assert_shape_and_finite(z, (K, B, latent_dim), "posterior.rsample z")  # [k, B, D]
        assert_shape_and_finite(log_q, (K, B), "posterior.rsample log_q")  # [k, B]
        assert_shape_and_finite(model.decoder(z), (K, B, data_dim), "decoder logits")  # [k, B, P]
        assert_shape_and_finite(model.prior.log_prob(z), (K, B), "prior.log_prob")
        assert_shape_and_finite(model.prior.sample(5, gen(2)), (5, latent_dim), "prior.sample")
        for name, t in zip(("log p(x|z)", "log p(z)", "log q(z|x)"), model.log_weights(x, K, gen(3))):
            assert_shape_and_finite(t, (K, B), name)
        reconstruction, kl = model.elbo_terms(x, K, gen(4))
        assert_shape_and_finite(reconstruction, (B,), "reconstruction")
        assert_shape_and_finite(kl, (B,), "kl")
        assert_shape_and_finite(model.elbo(x, K, gen(4)), (B,), "elbo")
    assert_shape_and_finite(model.iw_log_px(x, k=5, generator=gen(5)), (B,), "iw_log_px")
    samples = model.sample(6, gen(6))
    assert_shape_and_finite(samples, (6, data_dim), "sample")
    assert ((samples >= 0) & (samples <= 1)).all()
    assert_shape_and_finite(model.latent_code(x), (B, latent_dim), "latent_code")
    assert_shape_and_finite(model.reconstruct(x), (B, data_dim), "reconstruct")


@torch.no_grad()
def outputs(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Everything a seeded caller can observe, for exact comparisons between two models."""
    z = model.prior.sample(5, gen(7)).to(x.dtype)
    return {
        "elbo": model.elbo(x, K, gen(8)),
        "iw": model.iw_log_px(x, k=6, generator=gen(9)),
        "decoder": model.decoder(z),
        "log_prior": model.prior.log_prob(z),
        "sample": model.sample(4, gen(10)),
        "latent_code": model.latent_code(x),
    }


def assert_identical(a: dict, b: dict) -> None:
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), f"{key} differs after reload"


def check_save_load(model, x: torch.Tensor, tmp_path) -> None:
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = load_vae(path)
    assert loaded.config == model.config
    assert type(loaded.posterior) is type(model.posterior) and type(loaded.prior) is type(model.prior)
    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    assert all(torch.equal(original_state[k], loaded_state[k]) for k in original_state)
    if hasattr(model.prior, "encoder"):  # the VampPrior must use the loaded VAE's own encoder, not a copy
        assert loaded.prior.encoder is loaded.encoder
    assert_identical(outputs(model, x), outputs(loaded, x))


def check_damaged_checkpoints(tmp_path) -> None:
    blob = (tmp_path / "model.pt").read_bytes()
    damaged = {
        "truncated.pt": blob[: len(blob) // 2],
        "garbage.pt": bytes(torch.randint(0, 256, (4096,), generator=gen(11), dtype=torch.uint8).tolist()),
        "empty.pt": b"",
    }
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")  # a torch file, but not a vaebench model
    for name in [*damaged, "foreign.pt", "missing.pt"]:
        path = tmp_path / name
        with pytest.raises(CheckpointError) as err:
            load_vae(path)
        assert str(path) in str(err.value), f"{name}: message does not name the file: {err.value}"


def check_float64(model, x: torch.Tensor, tmp_path) -> None:
    model64 = copy.deepcopy(model).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model64.parameters())
    x64 = x.to(torch.float64)
    out32, out64 = outputs(model, x), outputs(model64, x64)
    for key in out32:
        assert out64[key].dtype == torch.float64 and torch.isfinite(out64[key]).all(), key
    # the same function: compare the deterministic parts only (torch draws different normals for float32 and
    # float64 from one seed once a draw has >= 16 elements, so seeded ELBOs need not agree across dtypes)
    with torch.no_grad():
        z = torch.randn(5, model.config.latent_dim, generator=gen(13))
        for name, f32, f64 in [("encoder", model.encoder(x), model64.encoder(x64)),
                               ("decoder", model.decoder(z), model64.decoder(z.double())),
                               ("prior.log_prob", model.prior.log_prob(z), model64.prior.log_prob(z.double())),
                               ("latent_code", model.latent_code(x), model64.latent_code(x64))]:
            for a, b in zip(f32 if isinstance(f32, tuple) else (f32,), f64 if isinstance(f64, tuple) else (f64,)):
                torch.testing.assert_close(b.float(), a, rtol=1e-4, atol=1e-4, msg=name)
    # a float64 model round-trips as float64 (not silently rounded to the default dtype)
    model64.save(tmp_path / "model64.pt")
    loaded = load_vae(tmp_path / "model64.pt")
    assert all(p.dtype == torch.float64 for p in loaded.parameters())
    assert_identical(outputs(model64, x64), outputs(loaded, x64))


def check_gradients(model, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    loss = -model.elbo(x, k=2, generator=gen(12)).mean()
    loss.backward()
    dead = [name for name, p in model.named_parameters()  # an empty weight (MADE at D = 1) holds nothing to train
            if p.numel() and (p.grad is None or not p.grad.abs().sum() > 0)]
    if dead:
        raise DeadParameters(f"no gradient reaches {dead}")


@pytest.mark.parametrize("posterior, prior, latent_dim, architecture, data_dim, kl", CASES)
def test_contract(posterior, prior, latent_dim, architecture, data_dim, kl, tmp_path):
    torch.manual_seed(0)
    model = build_vae({"data_dim": data_dim, "latent_dim": latent_dim, "posterior": posterior, "prior": prior,
                       "architecture": architecture, "hidden": [8], "prior_components": 3, "kl": kl,
                       "flow_hidden": flow_hidden(posterior, prior, latent_dim)})
    x = torch.bernoulli(torch.full((B, data_dim), 0.3), generator=gen(0))  # [B, P]

    check_shapes(model, x, data_dim, latent_dim)
    check_save_load(model, x, tmp_path)
    check_damaged_checkpoints(tmp_path)
    check_float64(model, x, tmp_path)
    check_gradients(model, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("posterior, prior", PAIRS)
def test_contract_on_device(posterior, prior, device):
    """Every family on the device: its deterministic parts give the CPU's numbers, the estimators are finite
    with generators on that device, and every parameter gets a gradient."""
    torch.manual_seed(0)
    model = build_vae({"data_dim": 6, "latent_dim": 3, "posterior": posterior, "prior": prior, "hidden": [8],
                       "prior_components": 3})
    on_device = copy.deepcopy(model).to(device)
    x = torch.bernoulli(torch.full((B, 6), 0.3), generator=gen(0))  # [B, P]
    z = torch.randn(5, 3, generator=gen(1))  # [5, D]
    with torch.no_grad():
        for name, a, b in [("encoder", model.encoder(x), on_device.encoder(x.to(device))),
                           ("decoder", (model.decoder(z),), (on_device.decoder(z.to(device)),)),
                           ("prior.log_prob", (model.prior.log_prob(z),), (on_device.prior.log_prob(z.to(device)),))]:
            for u, v in zip(a, b):
                assert v.device.type == device, name
                torch.testing.assert_close(v.cpu(), u, rtol=1e-4, atol=1e-4, msg=name)
        g = torch.Generator(device=device).manual_seed(2)
        assert_shape_and_finite(on_device.iw_log_px(x.to(device), k=5, generator=g), (B,), "iw_log_px")
        assert_shape_and_finite(on_device.sample(4, g), (4, 6), "sample")
    loss = -on_device.elbo(x.to(device), k=2, generator=torch.Generator(device=device).manual_seed(3)).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in on_device.parameters() if p.numel())
