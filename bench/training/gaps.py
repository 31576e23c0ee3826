"""A run's inference gaps and posterior diagnostics (`vae_core.inference_gaps`) as the columns of its result row.

Computed from the run's checkpoint on a seeded random subset of its test images, with `[eval]` gap settings;
the same function serves a grid's test (`eval.gaps = true`) and `vaebench gaps` for finished runs, so the
figures of a run do not depend on how (or in which stack) it was trained or when its gaps were computed.
"""

from __future__ import annotations

import json
import math
import time

import torch

from bench.grid.config import EvalConfig
from vae_core import VAE
from vae_core.inference_gaps import LocalFit, inference_gaps, posterior_diagnostics, summarize

GAP_COLUMNS = ("gap_iw_log_px", "gap_iw_log_px_encoder", "gap_elbo", "elbo_local_opt", "elbo_local_opt_ffg",
               "approximation_gap", "amortization_gap", "inference_gap", "gap_fit_steps", "gap_fit_capped",
               "active_units", "mean_kl", "kl_per_dim", "gap_images", "gap_seconds")


TWO_LAYER_NOTE = ("not computed for a two-layer model: the decomposition fits a local q* over one latent layer; "
                  "a joint fit over (z1, z2) is not implemented")


def local_fit(ev: EvalConfig) -> LocalFit:
    return LocalFit(lr=ev.gap_lr, samples=ev.gap_samples, check_every=ev.gap_check_every,
                    patience=ev.gap_patience, max_steps=ev.gap_max_steps)


def gap_subset(test: torch.Tensor, ev: EvalConfig) -> torch.Tensor:
    """`gap_images` rows of the run's test images [M, P], a random subset seeded by `gap_seed` (the binarized
    MNIST test file is sorted by digit: never the first rows)."""
    if ev.gap_images >= test.shape[0]:
        return test
    idx = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(ev.gap_seed))[:ev.gap_images]
    return test[idx.to(test.device)]


def gap_figures(model: VAE, test: torch.Tensor, ev: EvalConfig) -> dict:
    """The gap columns (GAP_COLUMNS) of a trained model on its run's test images [M, P]: the decomposition on
    the gap subset, the active units and the KL per dimension (a JSON list) over all M test images. A two-layer
    model gets only `gap_note` (TWO_LAYER_NOTE): no gap figure rather than a wrong one."""
    if model.config.layers != 1:
        return {**{c: math.nan for c in GAP_COLUMNS}, "kl_per_dim": "", "gap_note": TWO_LAYER_NOTE}
    t0 = time.perf_counter()
    x = gap_subset(test, ev)
    figures = summarize(inference_gaps(model, x, local_fit(ev), ev.gap_seed, ev.iw_samples, ev.gap_elbo_samples))
    figures["mean_kl"] = _mean_kl(model, x, ev)
    diag = posterior_diagnostics(model, test, ev.gap_au_samples, ev.gap_seed)
    figures.update(active_units=diag["active_units"], kl_per_dim=json.dumps(diag["kl_per_dim"]),
                   gap_images=x.shape[0], gap_seconds=time.perf_counter() - t0, gap_note="")
    return figures


@torch.no_grad()
def _mean_kl(model: VAE, x: torch.Tensor, ev: EvalConfig) -> float:
    """E_x KL(q(z|x) || p(z)) of the encoder's posterior against the model's prior, Monte Carlo with
    `gap_elbo_samples` samples (the ELBO's KL term, whatever the family and prior)."""
    gen = torch.Generator(device=x.device).manual_seed(ev.gap_seed)
    total = 0.0
    for start in range(0, ev.gap_elbo_samples, 100):
        _, log_pz, log_q = model.log_weights(x, min(100, ev.gap_elbo_samples - start), gen)  # [k, B] each
        total += (log_q - log_pz).double().sum().item()
    return total / (ev.gap_elbo_samples * x.shape[0])
