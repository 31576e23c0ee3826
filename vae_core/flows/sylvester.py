"""Householder reflections and Sylvester flows (van den Berg et al. 2018), as pure functions.

Same direction convention as `vae_core.flows`: each transform maps the base side to the sample side and
returns `(y, log_abs_det)`, log_abs_det = log|det dy/dz| summed over the event dim.

A Sylvester flow is z' = z + Q R h(R̃ Qᵀ z + b) with h = tanh, Q [D, M] with orthonormal columns, R and R̃
[M, M] upper triangular. By Sylvester's determinant identity det(I_D + Q R diag(h') R̃ Qᵀ) =
det(I_M + diag(h') R̃ R) = prod_i (1 + h'_i r̃_ii r_ii), since R̃ R is upper triangular with diagonal r̃_ii r_ii.
The map is invertible when r_ii r̃_ii > -1 (h' lies in (0, 1]); the diagonals are tanh of raw encoder outputs,
as in the official code, so their product lies in (-1, 1) (up to rounding: in float64 tanh saturates to
exactly +-1 once |raw| > ~19, in float32 once |raw| > ~9).

Three ways to get Q (the paper's three families):
- orthogonal (O-SNF): M <= D free columns made orthonormal by an iteration of the paper's family (`orthogonalize`),
  run a fixed, proven number of times (`ortho_iterations`);
- householder (H-SNF): M = D, Q a product of H Householder reflections, applied to vectors one reflection
  at a time (`sylvester_householder`; `householder_product` forms Q);
- triangular (T-SNF): M = D, Q the identity or the reversal permutation (`sylvester_triangular`).
"""

from __future__ import annotations

import functools
import math

import torch

ORTHO_TOLERANCE_FULL = 1e-5  # ||QᵀQ - I||_F tolerance when M = D (the official code's `cond`)
ORTHO_TOLERANCE = 1e-6  # ... and when M < D
ORTHO_MAX_CONDITION = 1e8  # the iteration count is proven for raw matrices up to this condition number


def ortho_tolerance(dim: int, m: int) -> float:
    """The convergence tolerance on ||QᵀQ - I||_F for M = m columns in dimension dim."""
    return ORTHO_TOLERANCE_FULL if m == dim else ORTHO_TOLERANCE


def householder_reflect(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(I - 2 v vᵀ / vᵀv) z: z [..., D], v [..., D] (broadcast) -> [..., D]. Orthogonal: log|det| = 0."""
    coef = 2 * (v * z).sum(-1, keepdim=True) / v.square().sum(-1, keepdim=True)
    return z - coef * v


def householder_product(vs: torch.Tensor) -> torch.Tensor:
    """Q = H_H ... H_2 H_1 with H_j the reflection along vs[..., j, :]: vs [..., H, D] -> Q [..., D, D]."""
    dim = vs.shape[-1]
    q = torch.eye(dim, dtype=vs.dtype, device=vs.device).expand(*vs.shape[:-2], dim, dim)
    for j in range(vs.shape[-2]):
        v = vs[..., j, :].unsqueeze(-1)  # [..., D, 1]
        q = q - (2 / v.square().sum(-2, keepdim=True)) * v * (v.transpose(-1, -2) @ q)  # H_j @ q
    return q


def householder_apply(z: torch.Tensor, units: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """Q z (or Qᵀ z) for Q = H_H ... H_1 = `householder_product(units)`, without forming Q: the reflections
    applied one by one, O(H D) per vector. z [..., D], units [..., H, D] unit vectors (broadcast) -> [..., D]."""
    order = range(units.shape[-2] - 1, -1, -1) if transpose else range(units.shape[-2])
    for j in order:
        u = units[..., j, :]
        z = z - 2 * (u * z).sum(-1, keepdim=True) * u
    return z


def sylvester_householder(z: torch.Tensor, units: torch.Tensor, r: torch.Tensor, r_tilde: torch.Tensor,
                          b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`sylvester` with Q = H_H ... H_1 given by its reflections' unit vectors units [..., H, D]."""
    shift, log_abs_det = _sylvester_core(householder_apply(z, units, transpose=True), r, r_tilde, b)
    return z + householder_apply(shift, units), log_abs_det


def orthogonality_error(q: torch.Tensor) -> torch.Tensor:
    """||QᵀQ - I||_F per matrix: q [..., D, M] -> [...]."""
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    return torch.linalg.matrix_norm(q.transpose(-1, -2) @ q - eye)


@functools.cache
def ortho_iterations(m: int, tolerance: float, max_condition: float = ORTHO_MAX_CONDITION) -> int:
    """How many updates `orthogonalize` makes: enough, in exact arithmetic, for ||QᵀQ - I||_F <= tolerance / 2
    for every raw [D, m] of condition number <= max_condition (docs/sylvester-flows.md has the proof).

    The update maps each singular value x of Q to g(x) = x (15 - 10 x² + 3 x⁴) / 8: g' = 15 (1 - x²)² / 8 >= 0,
    g(x) - x = x (1 - x²) (7 - 3 x²) / 8 >= 0 on [0, 1] and g(1) = 1; the start raw / ||raw||_F puts every x in
    (0, 1] and the smallest at >= 1 / (max_condition sqrt(m)), so after n updates
    ||QᵀQ - I||_F <= sqrt(m) (1 - g^n(x_min)²)."""
    x, n = 1 / (max_condition * math.sqrt(m)), 0
    while math.sqrt(m) * (1 - x * x) > tolerance / 2:
        x, n = singular_value_update(x), n + 1
    return n


def singular_value_update(x: float) -> float:
    """What one update of `orthogonalize` does to a singular value of Q."""
    return x * (15 - 10 * x * x + 3 * x ** 4) / 8


def orthogonality_threshold(dim: int, m: int, dtype: torch.dtype) -> float:
    """The largest ||QᵀQ - I||_F accepted: the tolerance, or the rounding floor of QᵀQ in `dtype` where that is
    larger (M sqrt(D) u: each of the M² entries is a D-term inner product of unit-norm columns)."""
    return max(ortho_tolerance(dim, m), m * math.sqrt(dim) * torch.finfo(dtype).eps / 2)


def orthogonalize(raw: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """raw [..., D, M] -> (Q [..., D, M] with QᵀQ ≈ I, converged [...]): the polar factor raw (rawᵀraw)^(-1/2).

    From the paper's start Q = raw / ||raw||_F, the order-5 member of its update's family (Newton-Schulz for
    the polar factor; the paper's Q (I + (I - QᵀQ) / 2) is the order-3 one): with A = QᵀQ,
    Q <- Q (15 I - 10 A + 3 A²) / 8, which needs 34 updates where the paper's needs 53 for the same bound.
    A fixed `ortho_iterations` count and no data-dependent stop: compiled, vmapped and eager are one graph,
    and a matrix's Q does not depend on the rest of its batch. Matrix products only, so rounding is
    corrected by the next update and the gradient is as stable as the forward. `converged` is
    ||QᵀQ - I||_F <= `orthogonality_threshold`: false only for a raw matrix beyond the proven condition number
    (or numerically rank-deficient); the caller must not use such a Q as orthogonal.
    """
    with torch.autocast(raw.device.type, enabled=False):  # bf16 matmuls could not reach the threshold
        m = raw.shape[-1]
        q = raw / torch.linalg.matrix_norm(raw)[..., None, None]
        eye = torch.eye(m, dtype=raw.dtype, device=raw.device)
        for _ in range(ortho_iterations(m, tolerance)):
            a = q.transpose(-1, -2) @ q  # [..., M, M]
            q = q @ (1.875 * eye - 1.25 * a + 0.375 * (a @ a))
        return q, orthogonality_error(q) <= orthogonality_threshold(raw.shape[-2], m, raw.dtype)


def triangular_pair(full: torch.Tensor, diag_raw: torch.Tensor, diag_tilde_raw: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, R̃) [..., M, M] upper triangular from one free matrix full [..., M, M] and raw diagonals [..., M]:
    R's strict upper triangle is full's, R̃'s is fullᵀ's (the official code shares one matrix this way), and
    r_ii = tanh(diag_raw), r̃_ii = tanh(diag_tilde_raw), so r_ii r̃_ii > -1."""
    r = torch.triu(full, 1) + torch.diag_embed(torch.tanh(diag_raw))
    r_tilde = torch.triu(full.transpose(-1, -2), 1) + torch.diag_embed(torch.tanh(diag_tilde_raw))
    return r, r_tilde


def _sylvester_core(zq: torch.Tensor, r: torch.Tensor, r_tilde: torch.Tensor, b: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """zq = Qᵀz [..., M] -> (R h(R̃ zq + b) [..., M], log|det| [...])."""
    a = (r_tilde @ zq.unsqueeze(-1)).squeeze(-1) + b  # [..., M]
    h = torch.tanh(a)
    shift = (r @ h.unsqueeze(-1)).squeeze(-1)
    diag = torch.diagonal(r, dim1=-2, dim2=-1) * torch.diagonal(r_tilde, dim1=-2, dim2=-1)
    return shift, torch.log(torch.abs(1 + (1 - h.square()) * diag)).sum(-1)


def sylvester(z: torch.Tensor, q: torch.Tensor, r: torch.Tensor, r_tilde: torch.Tensor, b: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """z' = z + Q R tanh(R̃ Qᵀ z + b): z [..., D]; q [..., D, M], r, r_tilde [..., M, M], b [..., M] broadcast
    against z's batch dims -> (z' [..., D], log|det| [...])."""
    zq = (z.unsqueeze(-2) @ q).squeeze(-2)  # Qᵀz [..., M]
    shift, log_abs_det = _sylvester_core(zq, r, r_tilde, b)
    return z + (q @ shift.unsqueeze(-1)).squeeze(-1), log_abs_det


def sylvester_triangular(z: torch.Tensor, r: torch.Tensor, r_tilde: torch.Tensor, b: torch.Tensor,
                         reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`sylvester` with Q = I, or Q = the reversal permutation when `reverse` (no matrix products with Q)."""
    zq = z.flip(-1) if reverse else z
    shift, log_abs_det = _sylvester_core(zq, r, r_tilde, b)
    return z + (shift.flip(-1) if reverse else shift), log_abs_det
