"""Evaluation of stacked runs: ELBO, its terms and the IW log p(x) of every run's weights, each with its own
seeded noise, so a run's figures do not depend on the stack it is evaluated in."""

from __future__ import annotations

import math

import torch

from bench.training.step import StackFunctions
from vae_core.estimators import iw_chunk_size, streaming_iw_bound
from vae_core.posteriors import standard_normal

VALID_SEED_OFFSET, TEST_SEED_OFFSET = 17, 29  # evaluation noise: seeded per run, apart from training noise


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings exclude nothing queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(fns: StackFunctions, params: torch.Tensor, x: torch.Tensor, seeds: list[int], elbo_samples: int,
             iw_samples: int, batch_size: int) -> list[dict[str, float]]:
    """Per run r of params [R, N]: mean ELBO, its terms and (iw_samples > 0) the IW log p(x) over the rows
    of x [M, P], in nats per image, with noise from a generator seeded `seeds[r]`.

    Each run draws, per batch, its ELBO noise and then its IW chunks, in the order a run alone draws them,
    so its figures do not depend on the stack it is evaluated in. IW chunks are sized to a memory budget.
    """
    n_runs, model = params.shape[0], fns.model
    gens = [torch.Generator(device=x.device).manual_seed(s) for s in seeds]
    sums = x.new_zeros(3, n_runs, dtype=torch.float64)  # reconstruction, kl, iw_log_px; on the device: no sync
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]  # [B, P]
        like = xb.new_empty(xb.shape[0], model.config.noise_dim)  # [B, D]
        eps = torch.stack([standard_normal(elbo_samples, like, g) for g in gens])  # [R, k, B, D]
        reconstruction, kl = fns.elbo_terms(params, xb, eps)  # [R, B] each
        sums[0] += reconstruction.sum(-1).double()
        sums[1] += kl.sum(-1).double()
        if iw_samples:
            loc, scale, context = fns.encode(params, xb)  # [R, B, D], [R, B, D], [R, B, C]
            chunk = iw_chunk_size(iw_samples, n_runs * xb.shape[0], model.floats_per_iw_sample, x.device)

            def chunks():
                for k0 in range(0, iw_samples, chunk):
                    c = min(chunk, iw_samples - k0)
                    eps_iw = torch.stack([standard_normal(c, like, g) for g in gens])  # [R, c, B, D]
                    yield fns.log_weight(params, xb, loc, scale, context, eps_iw).transpose(0, 1)  # [c, R, B]

            sums[2] += streaming_iw_bound(chunks()).sum(-1).double()
    means = (sums / x.shape[0]).tolist()
    return [{"reconstruction": means[0][r], "kl": means[1][r], "elbo": means[0][r] - means[1][r],
             "iw_log_px": means[2][r] if iw_samples else math.nan} for r in range(n_runs)]
