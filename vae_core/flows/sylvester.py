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
- orthogonal (O-SNF): M <= D free columns made orthonormal by the iteration Q <- Q (I + (I - QᵀQ) / 2)
  (`orthogonalize`), from Q / ||Q||_F, until ||QᵀQ - I||_F <= tolerance or ORTHO_MAX_ITERATIONS;
- householder (H-SNF): M = D, Q a product of H Householder reflections (`householder_product`);
- triangular (T-SNF): M = D, Q the identity or the reversal permutation (`sylvester_triangular`).
"""

from __future__ import annotations

import torch

ORTHO_MAX_ITERATIONS = 100  # the official code's cap (OrthogonalSylvesterVAE.steps)
ORTHO_TOLERANCE_FULL = 1e-5  # ||QᵀQ - I||_F tolerance when M = D (the official code's `cond`)
ORTHO_TOLERANCE = 1e-6  # ... and when M < D


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


def _all_true(done: torch.Tensor) -> bool:
    """Whether every matrix has converged, when that can be asked: under torch.compile or vmap a data-dependent
    stop does not trace, and the loop then runs to its cap (the converged matrices stay frozen, so the numbers
    are the same as with the early stop)."""
    if torch.compiler.is_compiling():
        return False
    try:
        return bool(done.all())
    except RuntimeError:  # vmap: data-dependent control flow
        return False


def orthogonality_error(q: torch.Tensor) -> torch.Tensor:
    """||QᵀQ - I||_F per matrix: q [..., D, M] -> [...]."""
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    return torch.linalg.matrix_norm(q.transpose(-1, -2) @ q - eye)


def orthogonalize(raw: torch.Tensor, tolerance: float, max_iterations: int = ORTHO_MAX_ITERATIONS
                  ) -> torch.Tensor:
    """raw [..., D, M] -> Q [..., D, M] with QᵀQ ≈ I: Q = raw / ||raw||_F, then Q <- Q (I + (I - QᵀQ) / 2).

    Each matrix stops on its own once ||QᵀQ - I||_F <= tolerance (it is then left unchanged), so a matrix's
    Q does not depend on the others in its batch; the loop ends when all have stopped or after
    `max_iterations` updates.
    """
    q = raw / torch.linalg.matrix_norm(raw).unsqueeze(-1).unsqueeze(-1)
    eye = torch.eye(raw.shape[-1], dtype=raw.dtype, device=raw.device)
    for _ in range(max_iterations):
        gram = q.transpose(-1, -2) @ q  # [..., M, M]
        done = torch.linalg.matrix_norm(gram - eye) <= tolerance  # [...]
        if _all_true(done):
            break
        q = torch.where(done.unsqueeze(-1).unsqueeze(-1), q, q @ (eye + 0.5 * (eye - gram)))
    return q


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
