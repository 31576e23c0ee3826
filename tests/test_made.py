"""MADE: the autoregressive structure is exact (forbidden Jacobian entries are exactly zero, allowed ones are
non-zero), the context reaches every output, and the width rule (>= D - 1) is enforced.

The checking helpers return the violations rather than asserting, so the tests can also show that they
detect deliberately broken networks (an over-masked, an under-masked and a context-blind MADE).
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from vae_core.nets.made import MADE


pytestmark = pytest.mark.usefixtures("float64", "one_thread")


def make_order(kind: str, dim: int) -> torch.Tensor:
    """order[j] = the j-th dimension to be modelled."""
    if kind == "identity":
        return torch.arange(dim)
    if kind == "reversed":
        return torch.arange(dim).flip(0)
    return torch.randperm(dim, generator=torch.Generator().manual_seed(100 + dim))


def reinit(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial random weights and biases (the default init is small and biases are near zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = max(p.shape[1], 1) if p.dim() == 2 else 1
            p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in**0.5 if p.dim() == 2 else 0.5))


def allowed_matrix(order: torch.Tensor) -> torch.Tensor:
    """[D, D] bool: output i may depend on input j iff j comes strictly before i in `order`.

    Computed from the ordering alone (not from vae_core.nets.made.degrees) so the test is independent of it.
    """
    rank = torch.argsort(order)  # rank[d] = position of dim d in the ordering
    return rank[None, :] < rank[:, None]


def made_jacobians(made: MADE, z: torch.Tensor, context: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """At one point z [D] (context [C]): d outputs / d z [P, D, D] and d outputs / d context [P, D, C]."""
    jz = jacobian(lambda v: torch.stack(made(v, context)), z)  # [P, D, D]
    jc = None if context is None else jacobian(lambda c: torch.stack(made(z, c)), context)  # [P, D, C]
    return jz, jc


def autoregressive_violations(jz: torch.Tensor, order: torch.Tensor) -> tuple[list, list]:
    """(forbidden entries that are non-zero, allowed entries that are zero) as (param, out, in) triples."""
    allowed = allowed_matrix(order).expand_as(jz)  # [P, D, D]
    forbidden_nonzero = [tuple(i) for i in ((jz != 0) & ~allowed).nonzero().tolist()]
    allowed_zero = [tuple(i) for i in ((jz == 0) & allowed).nonzero().tolist()]
    return forbidden_nonzero, allowed_zero


def context_unreached(jc: torch.Tensor) -> list:
    """(param, out) pairs whose output does not depend on the context at all."""
    return [tuple(i) for i in (jc == 0).all(-1).nonzero().tolist()]


def check_made(made: MADE, order: torch.Tensor, context_dim: int, n_points: int = 3, seed: int = 0
               ) -> tuple[list, list, list]:
    """All violations over a few random points: (forbidden non-zero, allowed zero, outputs without context)."""
    g = torch.Generator().manual_seed(seed)
    forbidden, allowed_zero, blind = set(), set(), set()
    for _ in range(n_points):
        z = torch.randn(made.dim, generator=g)  # [D]
        context = torch.randn(context_dim, generator=g) if context_dim else None  # [C]
        jz, jc = made_jacobians(made, z, context)
        f, a = autoregressive_violations(jz, order)
        forbidden.update(f)
        allowed_zero.update(a)
        if jc is not None:
            blind.update(context_unreached(jc))
    return sorted(forbidden), sorted(allowed_zero), sorted(blind)


@pytest.mark.parametrize("context_dim", [0, 3])
@pytest.mark.parametrize("order_kind", ["identity", "reversed", "random"])
@pytest.mark.parametrize("dim", [1, 2, 5, 8])
@pytest.mark.parametrize("width", ["minimal", "wide"])
def test_made_jacobian_is_exactly_autoregressive(dim, order_kind, context_dim, width):
    order = make_order(order_kind, dim)
    hidden = max(dim - 1, 1) if width == "minimal" else 2 * dim + 3  # minimal: each degree has one unit
    made = MADE(dim, hidden, n_params=2, context_dim=context_dim, order=order)
    reinit(made, seed=dim * 10 + context_dim)

    forbidden, allowed_zero, blind = check_made(made, order, context_dim)
    assert forbidden == [], f"outputs depend on inputs the ordering forbids: (param, out, in) = {forbidden}"
    assert allowed_zero == [], f"allowed dependencies missing: (param, out, in) = {allowed_zero}"
    assert blind == [], f"outputs not reached by the context: (param, out) = {blind}"
    if dim == 1 and context_dim:
        # D = 1: the only output sees no input, but it must still move with the context.
        g = torch.Generator().manual_seed(1)
        jz, jc = made_jacobians(made, torch.randn(1, generator=g), torch.randn(context_dim, generator=g))
        assert (jz == 0).all() and (jc != 0).any(-1).all()


@pytest.mark.parametrize("n_hidden_layers", [1, 3])
@pytest.mark.parametrize("n_params", [1, 3])
def test_made_other_depths_and_param_counts(n_hidden_layers, n_params):
    dim, context_dim = 5, 2
    order = make_order("random", dim)
    made = MADE(dim, dim - 1, n_params=n_params, context_dim=context_dim, n_hidden_layers=n_hidden_layers,
                order=order)
    reinit(made, seed=7)
    outs = made(torch.randn(4, dim), torch.randn(4, context_dim))
    assert len(outs) == n_params and all(o.shape == (4, dim) for o in outs)  # n_params x [B, D]
    assert check_made(made, order, context_dim) == ([], [], [])


def test_made_width_rule():
    with pytest.raises(ValueError, match="dim - 1"):
        MADE(5, 3)  # width below D - 1: input of degree 4 would reach no output
    MADE(5, 4)  # exactly D - 1 is fine (and its full structure is checked above, width="minimal")
    MADE(1, 1)  # D = 1: no width constraint


def test_made_batched_and_broadcast_context():
    """The module works on batched inputs [k, B, D] with a per-input context [B, C] (the IAF use)."""
    made = MADE(3, 6, context_dim=4)
    reinit(made, seed=3)
    z, context = torch.randn(5, 2, 3), torch.randn(2, 4)  # [k, B, D], [B, C]
    m, s = made(z, context)
    assert m.shape == s.shape == (5, 2, 3)
    m0, s0 = made(z[1], context)  # one sample at a time gives the same numbers
    torch.testing.assert_close(m[1], m0)
    torch.testing.assert_close(s[1], s0)


# The helpers must be able to fail: break one mask entry at a time and check each break is reported.

def minimal_made(context_dim: int = 0) -> tuple[MADE, torch.Tensor]:
    """D = 5, width D - 1 = 4 (hidden degrees 1, 2, 3, 4: one unit per degree), identity order."""
    order = torch.arange(5)
    made = MADE(5, 4, n_params=2, context_dim=context_dim, order=order)
    reinit(made, seed=11)
    assert check_made(made, order, context_dim) == ([], [], [])  # intact network passes
    return made, order


def test_helper_detects_an_over_masked_network():
    made, order = minimal_made()
    with torch.no_grad():
        made.mask0[0, 0] = 0.0  # cut input 0 (degree 1) from the only degree-1 hidden unit of layer 0
    forbidden, allowed_zero, _ = check_made(made, order, 0)
    assert forbidden == []
    # output 1 (degree 2) can only reach input 0 through degree-1 units: both of its parameters lose it
    assert allowed_zero == [(0, 1, 0), (1, 1, 0)]


def test_helper_detects_an_under_masked_network():
    made, order = minimal_made()
    with torch.no_grad():
        made.mask2[0, 3] = 1.0  # output 0 (param 0, degree 1) now reads the degree-4 unit (inputs 0..3)
    forbidden, allowed_zero, _ = check_made(made, order, 0)
    assert allowed_zero == []
    assert forbidden == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3)]


def test_helper_detects_a_context_blind_output():
    made, order = minimal_made(context_dim=3)
    with torch.no_grad():
        made.context.weight[made.hidden].zero_()  # output 0 has degree 1: no hidden unit reaches it
    assert check_made(made, order, 3)[2] == [(0, 0)]
