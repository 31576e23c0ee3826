"""Likelihood estimators from log-weights log w = log p(x, z) - log q(z|x), z ~ q (pure functions).

ELBO = E_q[log w] (mean over samples); IW bound (Burda et al. 2016) = log (1/k) sum_k w_k, which is
>= the ELBO for the same weights and rises with k towards log p(x).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch


def elbo_from_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """[k, B] -> [B]: the k-sample Monte-Carlo ELBO."""
    return log_w.mean(0)


def iw_bound(log_w: torch.Tensor) -> torch.Tensor:
    """[k, B] -> [B]: log mean_k exp(log_w), computed stably."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def streaming_iw_bound(chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """The IW bound over the concatenation of `chunks` ([k_i, B] each) without holding them together.

    Keeps a running max and a rescaled running sum per input, so it never overflows or underflows where
    one logsumexp over all samples would not.
    """
    running_max = running_sum = None
    count = 0
    for log_w in chunks:
        chunk_max = log_w.max(0).values  # [B]
        if running_max is None:
            running_max, running_sum = chunk_max, torch.zeros_like(chunk_max)
        new_max = torch.maximum(running_max, chunk_max)
        # running_sum is kept relative to _shift(running_max): a max of -inf (all weights zero so far, e.g. a
        # planar step whose det underflowed) would otherwise give -inf - -inf = nan and poison the bound
        running_sum = (running_sum * torch.exp(_shift(running_max) - _shift(new_max))
                       + torch.exp(log_w - _shift(new_max)).sum(0))
        running_max = new_max
        count += log_w.shape[0]
    if running_max is None:
        raise ValueError("streaming_iw_bound needs at least one chunk of samples")
    return _shift(running_max) + running_sum.log() - math.log(count)


def _shift(m: torch.Tensor) -> torch.Tensor:
    """The max itself where finite, else 0 (what torch.logsumexp subtracts)."""
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def iw_chunk_size(k: int, batch: int, floats_per_sample: int, device: torch.device,
                  budget_bytes: int | None = None) -> int:
    """Samples per chunk so that a chunk's activations ([chunk, B, floats_per_sample] float32, ~4 live copies)
    fit a memory budget: 512 MiB on CPU, a quarter of the free memory on CUDA."""
    if budget_bytes is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget_bytes = free // 4
        else:
            budget_bytes = 512 * 2**20
    per_sample = 4 * 4 * batch * floats_per_sample
    return max(1, min(k, budget_bytes // max(per_sample, 1)))
