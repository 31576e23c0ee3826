"""Likelihoods p(x|z): how the decoder's outputs parameterize a distribution over an image.

A likelihood declares `params_per_pixel` (the decoder emits that many values per pixel, laid out as
`params_per_pixel` blocks of P: [..., k * P]), `floats_per_pixel` (activations per pixel and sample, for
sizing IW chunks), `log_prob(x, params)` (nats, summed over pixels) and
`mean(params)` (the pixel means shown as sample and reconstruction images). Pure functions; the registry
`LIKELIHOODS` is the one place the `model.likelihood` names resolve.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vae_core.distributions import bernoulli_log_prob

LEVELS = 256  # 8-bit pixels: integer values v in 0..255, held as x = v / 255
HALF_BIN = 0.5 / (LEVELS - 1)  # half the distance between neighbouring values of x
LOG_2 = math.log(2.0)
LOG_SCALE_MIN, LOG_SCALE_MAX = -4.5, 0.0  # the VampPrior code's clamp of the decoder's log-scale


class Bernoulli:
    """One logit per pixel; log p(x|z) = sum x * l - softplus(l) (x in [0, 1]); the mean is sigmoid(l)."""

    params_per_pixel = 1
    floats_per_pixel = 1  # activations per pixel and sample in log_prob: the logit

    @staticmethod
    def log_prob(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """x [..., P], logits [..., P] -> [...] nats."""
        return bernoulli_log_prob(x, params)

    @staticmethod
    def mean(params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, accurate for small and large d (Maechler 2012); each branch sees only its
    own range, so the unused one cannot put a NaN into the gradient."""
    small = torch.log(-torch.expm1(-d.clamp(max=LOG_2)))
    large = torch.log1p(-torch.exp(-d.clamp(min=LOG_2)))
    return torch.where(d < LOG_2, small, large)


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(v) per pixel for 8-bit x = v / 255 under a logistic(mean, exp(log_scale)) discretized into 256 bins:
    [..., P] (broadcasting) -> [..., P] nats.

    Bin v covers [x - 1/510, x + 1/510] (width 1/255, centred on x); the edge bins take the tails: v = 0 covers
    (-inf, 1/510], v = 255 covers [1 - 1/510, inf), so the 256 probabilities sum to 1. With a = (x + 1/510 -
    mean) / s and b = (x - 1/510 - mean) / s, sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)),
    so log P(v) = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(-(a - b))) with a - b = 1 / (255 s): no difference
    of nearly equal numbers, stable for any mean and scale, no epsilon. v = 0: logsigmoid(a);
    v = 255: logsigmoid(-b). x is rounded to the nearest v / 255 first.
    """
    v = torch.round(x * (LEVELS - 1))
    centre = v / (LEVELS - 1)
    inv_scale = torch.exp(-log_scale)
    a = (centre + HALF_BIN - mean) * inv_scale
    b = (centre - HALF_BIN - mean) * inv_scale
    interior = F.logsigmoid(a) + F.logsigmoid(-b) + _log1mexp((2 * HALF_BIN) * inv_scale)
    return torch.where(v <= 0, F.logsigmoid(a), torch.where(v >= LEVELS - 1, F.logsigmoid(-b), interior))


class DiscretizedLogistic:
    """Two decoder outputs per pixel for 8-bit data (x = v / 255): a mean, sigmoid(first block), and a log-scale,
    the second block clamped to [-4.5, 0] (scale in [0.011, 1]) as in the VampPrior code (which calls it
    `logvar` and uses it as log s); per-pixel `discretized_logistic_log_prob`, summed over pixels.

    Deviations from the VampPrior code (`log_Logistic_256`): bins of width 1/255 centred on v / 255 (theirs:
    width 1/256, [floor(256 x) / 256, + 1/256), which puts x = 1 in a bin above 1), edge bins that take the
    tails (theirs: none, so the 256 probabilities sum to less than 1, and a +1e-7 inside the log), and an
    unclamped sigmoid mean (theirs: clamped to [1/512, 1 - 1/512]). The mean image is the logistic's location,
    already in (0, 1). (The Sylvester-flow code models Frey Faces with a 256-way softmax instead.)
    """

    params_per_pixel = 2
    floats_per_pixel = 10  # the two outputs, mean, log-scale, a, b and the log-sigmoid / where terms

    @staticmethod
    def split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """params [..., 2P] -> (mean [..., P] in (0, 1), log-scale [..., P] in [-4.5, 0])."""
        raw_mean, raw_log_scale = params.chunk(2, dim=-1)
        return torch.sigmoid(raw_mean), raw_log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)

    @classmethod
    def log_prob(cls, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """x [..., P] (values v / 255), params [..., 2P] -> [...] nats."""
        return discretized_logistic_log_prob(x, *cls.split(params)).sum(-1)

    @classmethod
    def mean(cls, params: torch.Tensor) -> torch.Tensor:
        return cls.split(params)[0]


LIKELIHOODS: dict[str, type] = {"bernoulli": Bernoulli, "discretized-logistic": DiscretizedLogistic}


def likelihood_for(name: str) -> type:
    """The likelihood `name` (a key of LIKELIHOODS); a one-line ConfigError naming the key otherwise."""
    from vae_core.config import ConfigError

    if name not in LIKELIHOODS:
        raise ConfigError(f"'model.likelihood' must be one of {', '.join(map(repr, LIKELIHOODS))}; got {name!r}")
    return LIKELIHOODS[name]
