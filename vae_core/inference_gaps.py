"""The inference-gap decomposition of Cremer, Li & Duvenaud (2018) and posterior diagnostics (pure functions).

For a trained model and images x:
- L[q]       the ELBO of the encoder's posterior (amortized);
- L[q*]      the ELBO after fitting the family's per-image variational parameters (everything the encoder
             emits for that image: loc, log scale, context) to each image separately, the decoder, the prior
             and the family's global weights (e.g. IAF's MADEs) frozen;
- L[q*_FFG]  the same fit for a fully factorised Gaussian (loc, log scale), whatever the model's family;
- approximation gap = log p(x) - L[q*], amortization gap = L[q*] - L[q]; they add to log p(x) - L[q].

log p(x) is estimated, as in the paper, by the best of several lower bounds per image: the IW bound with the
encoder's q and the IW bound with the fitted q* as proposal. The encoder's alone is not enough: where the
encoder generalises poorly (an overfitted model's test images) its IW bound can lie nats below L[q*], and
the approximation gap would come out negative.

The fit is one batched Adam optimisation over [B, ...] leaves (each image's parameters get their own
gradient and their own stopping state: its loss averaged over `check_every` steps, stopped after `patience`
checks without improvement, at most `max_steps`; a stopped image leaves the batch), with its noise from its
own generator. Gradients are taken with `torch.autograd.grad` with respect to those leaves only, so the
model's parameters are never written to, nor their `.grad`. Every figure goes through the VAE's own methods
(`log_weight`, `log_joint`, `encoder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from vae_core.estimators import streaming_iw_bound
from vae_core.posteriors import MeanFieldPosterior, gaussian_from_noise, standard_normal
from vae_core.vae import VAE

Params = tuple[torch.Tensor, ...]  # per-image variational parameters, each [B, ...]
LogWeightFn = Callable[[torch.Tensor, Params, torch.Tensor], torch.Tensor]  # (x, params, eps [k, B, D]) -> [k, B]

FIT_SEED, FFG_SEED, EVAL_SEED, IW_SEED, DIAG_SEED = 0, 1, 2, 3, 4  # offsets: one generator per purpose
FFG_INIT_SAMPLES = 100  # draws of q(z|x) whose moments start the FFG fit of a non-mean-field family
ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016: unit u is active when Cov_x(E_q[z_u]) > 0.01


@dataclass(frozen=True)
class LocalFit:
    """Adam settings and stopping rule of the per-image fit (the official code: lr 1e-3, 50 samples, loss
    averaged over 100 steps, stop after more than 10 checks without improvement)."""

    lr: float = 1e-3
    samples: int = 10  # Monte-Carlo samples per Adam step
    check_every: int = 50
    patience: int = 5
    max_steps: int = 2000


def family_log_weight(model: VAE) -> LogWeightFn:
    """log p(x, z) - log q(z|x) of the model's own family, params = (loc, log scale, context)."""
    def log_weight(x, params, eps):
        loc, log_scale, context = params
        return model.log_weight(x, loc, log_scale.exp(), context, eps)
    return log_weight


def ffg_log_weight(model: VAE) -> LogWeightFn:
    """log p(x, z) - log N(z; loc, diag(scale^2)), params = (loc, log scale): the fully factorised Gaussian."""
    def log_weight(x, params, eps):
        loc, log_scale = params
        z, log_q = gaussian_from_noise(loc, log_scale.exp(), eps)  # [k, B, D], [k, B]
        log_px_z, log_pz = model.log_joint(x, z)  # [k, B] each
        return log_px_z + log_pz - log_q
    return log_weight


@torch.no_grad()
def encoder_params(model: VAE, x: torch.Tensor) -> Params:
    """(loc [B, D], log scale [B, D], context [B, C]) the encoder emits for x [B, P]."""
    loc, scale, context = model.encoder(x)
    return loc, scale.log(), context


@torch.no_grad()
def moment_matched_gaussian(model: VAE, x: torch.Tensor, samples: int, generator: torch.Generator) -> Params:
    """(loc, log scale) [B, D] of the diagonal Gaussian with the per-dimension mean and sd of `samples` draws
    of the encoder's q(z|x): where the FFG fit starts (for mean-field: the encoder's own loc and scale, up to
    Monte-Carlo error; for a flow, its Gaussian head lives before the flow and would be a poor start)."""
    loc, scale, context = model.encoder(x)
    z, _ = model.posterior.from_noise(loc, scale, context, standard_normal(samples, loc, generator))  # [S, B, D]
    return z.mean(0), z.std(0).clamp_min(1e-6).log()


def fit_local(log_weight: LogWeightFn, x: torch.Tensor, init: Params, fit: LocalFit,
              generator: torch.Generator) -> tuple[Params, torch.Tensor]:
    """Maximise each image's ELBO over its own parameters, starting from `init`; returns (the parameters,
    each image's stopping step [B]). One batched optimisation over the images still running: an image that
    stopped keeps the parameters it had when it stopped and leaves the batch, so a fit costs the sum of its
    images' steps, not B times the slowest one's. The noise is drawn for all B images every step and the
    running ones take their own rows, so an image's fit does not depend on which other images share it."""
    leaves = [p.detach().clone().requires_grad_(True) for p in init]
    opt = torch.optim.Adam(leaves, lr=fit.lr)
    n = x.shape[0]
    like = init[0]  # [B, D]: the noise's shape per sample
    best = x.new_full((n,), float("inf"))
    worse = torch.zeros(n, dtype=torch.long, device=x.device)
    stopped_at = torch.full((n,), fit.max_steps, dtype=torch.long, device=x.device)
    kept = [p.detach().clone() for p in leaves]
    window = x.new_zeros(n)
    running = torch.arange(n, device=x.device)  # [A]: the images still fitting
    for step in range(1, fit.max_steps + 1):
        eps = standard_normal(fit.samples, like, generator)[:, running]  # [S, A, D]
        with torch.enable_grad():
            loss = -log_weight(x[running], tuple(leaf[running] for leaf in leaves), eps).mean(0)  # [A]
            grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True, materialize_grads=True)
        for leaf, g in zip(leaves, grads):
            leaf.grad = g
        opt.step()
        window[running] += loss.detach()
        if step % fit.check_every:
            continue
        mean = window[running] / fit.check_every  # [A]
        window.zero_()
        improved = mean < best[running]
        best[running] = torch.where(improved, mean, best[running])
        worse[running] = torch.where(improved, torch.zeros_like(mean, dtype=torch.long), worse[running] + 1)
        stop = running[worse[running] >= fit.patience]  # [s]
        for k, leaf in zip(kept, leaves):
            k[stop] = leaf.detach()[stop]
        stopped_at[stop] = step
        running = running[worse[running] < fit.patience]
        if running.numel() == 0:
            break
    final = [leaf.detach().clone() for leaf in leaves]
    stopped = stopped_at < fit.max_steps  # [B]
    for f, k in zip(final, kept):
        f[stopped] = k[stopped]
    return tuple(final), stopped_at


def _log_weight_chunks(log_weight: LogWeightFn, x: torch.Tensor, params: Params, samples: int,
                       generator: torch.Generator, chunk: int) -> Iterator[torch.Tensor]:
    """`samples` log-weights [c, B] of the proposal `params` defines, `chunk` samples at a time."""
    for start in range(0, samples, chunk):
        yield log_weight(x, params, standard_normal(min(chunk, samples - start), params[0], generator))


@torch.no_grad()
def mc_elbo(log_weight: LogWeightFn, x: torch.Tensor, params: Params, samples: int, generator: torch.Generator,
            chunk: int = 100) -> torch.Tensor:
    """The `samples`-sample Monte-Carlo ELBO [B] (drawn `chunk` samples at a time)."""
    return sum(w.sum(0) for w in _log_weight_chunks(log_weight, x, params, samples, generator, chunk)) / samples


@torch.no_grad()
def mc_iw(log_weight: LogWeightFn, x: torch.Tensor, params: Params, samples: int, generator: torch.Generator,
          chunk: int = 100) -> torch.Tensor:
    """The `samples`-sample IW bound [B] with the proposal `params` defines (drawn `chunk` samples at a time)."""
    return streaming_iw_bound(_log_weight_chunks(log_weight, x, params, samples, generator, chunk))


@dataclass(frozen=True)
class GapFigures:
    """Per-image figures [B], nats; the gaps are differences of these, so they add up by construction."""

    iw_encoder: torch.Tensor  # IW bound with the encoder's q as proposal
    iw_local_opt: torch.Tensor  # IW bound with the fitted q* as proposal
    elbo: torch.Tensor  # L[q]
    elbo_local_opt: torch.Tensor  # L[q*]
    elbo_local_opt_ffg: torch.Tensor  # L[q*_FFG]
    fit_steps: torch.Tensor  # steps each image's family fit ran
    fit_capped: torch.Tensor  # whether it ran to the cap (max_steps) rather than stopping by the rule

    @property
    def iw_log_px(self) -> torch.Tensor:
        """log p̂(x): the better of the two IW bounds, per image."""
        return torch.maximum(self.iw_encoder, self.iw_local_opt)

    @property
    def approximation_gap(self) -> torch.Tensor:
        return self.iw_log_px - self.elbo_local_opt

    @property
    def amortization_gap(self) -> torch.Tensor:
        return self.elbo_local_opt - self.elbo


def refuse_two_layers(model: VAE) -> None:
    """The decomposition and diagnostics here fit and read one latent layer: a two-layer model is refused."""
    if model.config.layers != 1:
        raise ValueError("inference gaps are defined here for one-layer models; got model.layers = "
                         f"{model.config.layers} (see vae_core.layer_diagnostics for its per-layer figures)")


def inference_gaps(model: VAE, x: torch.Tensor, fit: LocalFit, seed: int, iw_samples: int,
                   elbo_samples: int) -> GapFigures:
    """The decomposition for the images x [B, P]. Every ELBO is estimated with the same `elbo_samples`
    noise draws (common random numbers: their differences are less noisy). For a mean-field model the FFG fit
    is the family's fit (the same problem), so it is not run twice; otherwise it starts from the Gaussian with
    the mean and sd of the encoder's q(z|x)."""
    refuse_two_layers(model)
    gen = lambda offset: torch.Generator(device=x.device).manual_seed(seed + offset)  # noqa: E731
    family, ffg = family_log_weight(model), ffg_log_weight(model)
    init = encoder_params(model, x)
    fitted, steps = fit_local(family, x, init, fit, gen(FIT_SEED))
    if isinstance(model.posterior, MeanFieldPosterior):
        fitted_ffg = fitted[:2]
    else:
        start = moment_matched_gaussian(model, x, FFG_INIT_SAMPLES, gen(FFG_SEED))
        fitted_ffg, _ = fit_local(ffg, x, start, fit, gen(FFG_SEED))
    elbo_q = mc_elbo(family, x, init, elbo_samples, gen(EVAL_SEED))
    elbo_opt = mc_elbo(family, x, fitted, elbo_samples, gen(EVAL_SEED))
    elbo_ffg = mc_elbo(ffg, x, fitted_ffg, elbo_samples, gen(EVAL_SEED))
    iw = model.iw_log_px(x, iw_samples, generator=gen(IW_SEED))
    iw_opt = mc_iw(family, x, fitted, iw_samples, gen(IW_SEED))
    return GapFigures(iw, iw_opt, elbo_q, elbo_opt, elbo_ffg, steps, steps >= fit.max_steps)


def summarize(g: GapFigures) -> dict[str, float]:
    """Means over images (float64), with the identity approximation + amortization = log p̂ - L[q] asserted."""
    mean = lambda t: t.double().mean().item()  # noqa: E731
    out = {"gap_iw_log_px": mean(g.iw_log_px), "gap_iw_log_px_encoder": mean(g.iw_encoder), "gap_elbo": mean(g.elbo),
           "elbo_local_opt": mean(g.elbo_local_opt), "elbo_local_opt_ffg": mean(g.elbo_local_opt_ffg),
           "gap_fit_steps": mean(g.fit_steps), "gap_fit_capped": mean(g.fit_capped)}
    out["approximation_gap"] = out["gap_iw_log_px"] - out["elbo_local_opt"]
    out["amortization_gap"] = out["elbo_local_opt"] - out["gap_elbo"]
    out["inference_gap"] = out["gap_iw_log_px"] - out["gap_elbo"]
    total = out["approximation_gap"] + out["amortization_gap"]
    assert abs(total - out["inference_gap"]) <= 1e-9 * max(1.0, abs(out["inference_gap"])), (total, out)
    return out


@torch.no_grad()
def posterior_diagnostics(model: VAE, x: torch.Tensor, samples: int, seed: int, batch: int = 500
                          ) -> dict[str, object]:
    """Active units and KL per dimension over the images x [N, P].

    active_units: units u with Cov_x(E_q[z_u | x]) > 0.01 (Burda et al.); E_q[z | x] is the encoder's loc for
    a mean-field family, else the mean of `samples` draws of z, whose Monte-Carlo variance (sample variance /
    samples, averaged over x) is subtracted so noise alone does not make a unit active.
    kl_per_dim: E_x KL(N(loc_u, scale_u^2) || N(0, 1)) of the encoder's Gaussian head (before any flow),
    per unit; for a mean-field family and standard prior it sums to the ELBO's KL term.
    """
    refuse_two_layers(model)
    gen = torch.Generator(device=x.device).manual_seed(seed + DIAG_SEED)
    means, noise, kls = [], [], []
    for start in range(0, x.shape[0], batch):
        loc, scale, context = model.encoder(x[start:start + batch])  # [b, D] each, [b, C]
        kls.append(0.5 * (loc.square() + scale.square() - 1) - scale.log())  # [b, D]
        if isinstance(model.posterior, MeanFieldPosterior):
            means.append(loc)
            noise.append(torch.zeros_like(loc))
            continue
        z, _ = model.posterior.from_noise(loc, scale, context, standard_normal(samples, loc, gen))  # [S, b, D]
        means.append(z.mean(0))
        noise.append(z.var(0) / samples if samples > 1 else torch.zeros_like(loc))
    m = torch.cat(means).double()  # [N, D]
    variance = m.var(0, correction=0) - torch.cat(noise).double().mean(0)  # [D]
    kl = torch.cat(kls).double().mean(0)  # [D]
    return {"active_units": int((variance > ACTIVE_THRESHOLD).sum()), "unit_variance": variance.tolist(),
            "kl_per_dim": kl.tolist()}
