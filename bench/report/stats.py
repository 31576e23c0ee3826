"""Small-sample statistics for the report: Student t quantiles and differences of means with 95% intervals.

Pure functions on plain floats, no scipy: the t distribution function is computed from the regularized
incomplete beta function (continued fraction) and inverted by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NAN = math.nan


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), valid for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"betainc needs a, b > 0 and 0 <= x <= 1; got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` > 0 degrees of freedom (non-integer allowed)."""
    if not dof > 0:
        raise ValueError(f"degrees of freedom must be > 0; got {dof}")
    if math.isinf(dof):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    tail = 0.5 * betainc(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, dof: float) -> float:
    """The p-quantile of Student's t with `dof` > 0 degrees of freedom (non-integer allowed), to ~1e-12."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1); got {p}")
    if not dof > 0:
        raise ValueError(f"degrees of freedom must be > 0; got {dof}")
    if p < 0.5:
        return -t_quantile(1.0 - p, dof)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Difference:
    """A difference of means with its standard error, degrees of freedom and 95% interval (NaN when n is too
    small for an interval). `n` is the number of pairs (paired) or the smaller group size (Welch)."""

    mean: float
    se: float
    dof: float
    lo: float
    hi: float
    n: int

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.lo)

    @property
    def excludes_zero(self) -> bool:
        return self.has_interval and (self.lo > 0 or self.hi < 0)


def _mean(x: Sequence[float]) -> float:
    return sum(x) / len(x)


def _var(x: Sequence[float]) -> float:
    m = _mean(x)
    return sum((v - m) ** 2 for v in x) / (len(x) - 1)


def _interval(mean: float, se: float, dof: float, n: int, level: float) -> Difference:
    half = t_quantile(0.5 + level / 2.0, dof) * se
    return Difference(mean, se, dof, mean - half, mean + half, n)


def paired_difference(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Difference:
    """Mean of x_i - y_i over pairs; se = sd(d) / sqrt(n); interval with Student t, n - 1 dof (none when n < 2)."""
    if len(x) != len(y) or not x:
        raise ValueError(f"paired_difference needs two non-empty sequences of equal length; got {len(x)}, {len(y)}")
    d = [a - b for a, b in zip(x, y)]
    n = len(d)
    if n < 2:
        return Difference(_mean(d), NAN, NAN, NAN, NAN, n)
    return _interval(_mean(d), math.sqrt(_var(d) / n), n - 1.0, n, level)


def welch_difference(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Difference:
    """mean(x) - mean(y), se = sqrt(s_x^2/n_x + s_y^2/n_y), Welch-Satterthwaite dof (no interval when a group
    has fewer than 2 values)."""
    if not x or not y:
        raise ValueError("welch_difference needs two non-empty sequences")
    mean, n = _mean(x) - _mean(y), min(len(x), len(y))
    if len(x) < 2 or len(y) < 2:
        return Difference(mean, NAN, NAN, NAN, NAN, n)
    vx, vy = _var(x) / len(x), _var(y) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return Difference(mean, 0.0, len(x) + len(y) - 2.0, mean, mean, n)
    dof = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    return _interval(mean, se, dof, n, level)
