"""The contract of one posterior family (`posterior_checks`) or one prior (`prior_checks`), by registry name."""

from __future__ import annotations

import math

import torch

from vae_core.contract.tools import (LOGDET_TOL, OUTER_MASS_TOL, PRIOR_MASS_TOL, Q_MASS_TOL, RATIO_SE_MAX, ROWS,
                                     SE_BOUND, B, Check, K, gen, grid, grid_mass, guarded, histogram_z_scores, in_rows,
                                     inputs, logdet_errors, model_checks, moment_errors, outer_mass, perturbed_model,
                                     ratio_mean)
from vae_core.distributions import normal_log_prob, std_normal_log_prob
from vae_core.registry import resolve

RATIO_DIM, RATIO_DRAWS = 6, 20_000
Q_GRID_HALF_WIDTH, Q_GRID_STEP = 8.0, 0.04  # noise grid for the q quadrature: [-8, 8]^2, 400 x 400 points
PRIOR_SAMPLES = 100_000
PRIOR_RATIO_DRAWS, DEFENSIVE_SHARE = 40_000, 0.2


def _ratio_check(what: str, stats: list[tuple[float, float]]) -> Check:
    """Importance-sampling means that must be 1, each (mean, standard error); the worst |mean - 1| / SE decides."""
    worst = max(abs(m - 1) / se for m, se in stats)
    shown = ", ".join(f"{m:.4f} ± {se:.4f}" for m, se in stats)
    ok = worst < SE_BOUND and max(se for _, se in stats) < RATIO_SE_MAX
    return Check(what, f"{shown} ({worst:.1f} SE)", f"|mean - 1| < {SE_BOUND:g} SE, SE < {RATIO_SE_MAX:g}", ok)


# ---- posterior families ------------------------------------------------------------------------------------

def q_shapes(model) -> Check:
    x = inputs()
    with torch.no_grad():
        loc, scale, context = model.encoder(x)
        z, log_q = model.posterior.from_noise(loc, scale, context, model.noise(K, x, gen(1)))
    d = model.config.latent_dim
    ok = tuple(z.shape) == (K, B, d) and tuple(log_q.shape) == (K, B) and bool(torch.isfinite(log_q).all())
    return Check("shapes: eps [k, B, D] -> z [k, B, D], log q [k, B]",
                 f"z {list(z.shape)}, log q {list(log_q.shape)}", f"[{K}, {B}, {d}], [{K}, {B}], finite", ok)


def q_dtype(name: str) -> Check:
    seen, ok = [], True
    for dtype in (torch.float32, torch.float64):
        model = perturbed_model(name).to(dtype)
        x = inputs(dtype=dtype)
        with torch.no_grad():
            z, log_q = model.posterior.from_noise(*model.encoder(x), model.noise(K, x, gen(1)))
        ok &= z.dtype == log_q.dtype == dtype and z.device == log_q.device == x.device
        seen.append(f"{str(dtype)[6:]} -> {str(z.dtype)[6:]}/{str(log_q.dtype)[6:]}")
    return Check("dtype and device follow the inputs", ", ".join(seen) + f", {x.device}", "same as the input", ok)


def q_seeded(model) -> Check:
    x = inputs()
    with torch.no_grad():
        a = model.log_weights(x, K, gen(2))
        b = model.log_weights(x, K, gen(2))
        eps = model.noise(K, x, gen(3))
        c, d = (model.posterior.from_noise(*model.encoder(x), eps) for _ in range(2))
    ok = all(torch.equal(u, v) for u, v in zip(a, b)) and all(torch.equal(u, v) for u, v in zip(c, d))
    return Check("seeded draws reproducible, from_noise pure", "identical" if ok else "differ", "bit for bit", ok)


def q_jacobian(model) -> Check:
    """log q(z) = log N(eps) - log|det dz/deps| at 4 noise points for each input, dz/deps by autograd."""
    x = inputs()
    with torch.no_grad():
        loc, scale, context = model.encoder(x)  # [B, D], [B, D], [B, C]
    points = torch.randn(4, B, model.config.latent_dim, generator=gen(4), dtype=loc.dtype) * 1.5
    errors = []
    for b in range(B):
        def one(v, b=b):  # [D] -> (z [D], log q [])
            z, log_q = model.posterior.from_noise(loc[b:b + 1], scale[b:b + 1], context[b:b + 1], v[None, None])
            return z[0, 0], log_q[0, 0]

        # log q = log N(eps) - log|det J|  <=>  log N(eps) - log q is the map's log|det J|
        errors += logdet_errors(lambda v: (one(v)[0], std_normal_log_prob(v) - one(v)[1]), points[:, b])
    worst = max(errors)
    return Check("log q = log N(eps) - log|det dz/deps| (autograd, float64)", f"max err {worst:.2g}",
                 f"< {LOGDET_TOL:g}", worst < LOGDET_TOL)


def q_mass(model) -> Check:
    """The integral of q(z|x) over z (D = 2), substituting z = T(eps) on a noise grid: the sum of
    q(T(eps)) |det dT/deps| h^2, with the Jacobian by autograd (two backward passes: samples are independent)."""
    x = inputs(n=2)
    with torch.no_grad():
        loc, scale, context = model.encoder(x)
    mass = loc.new_zeros(2)
    for points in grid(Q_GRID_HALF_WIDTH, Q_GRID_STEP, loc.dtype).split(ROWS):  # memory: ROWS points at a time
        eps = points[:, None, :].expand(-1, 2, -1).clone().requires_grad_(True)  # [G, 2, 2]
        z, log_q = model.posterior.from_noise(loc, scale, context, eps)  # [G, 2, 2], [G, 2]
        rows = [torch.autograd.grad(z[..., d].sum(), eps, retain_graph=True)[0] for d in range(2)]  # dz_d/deps
        log_det = torch.linalg.slogdet(torch.stack(rows, -2)).logabsdet  # [G, 2]
        mass += (log_q + log_det).detach().exp().sum(0) * Q_GRID_STEP ** 2  # [2]
    worst = (mass - 1).abs().max().item()
    return Check("q normalised: integral of q(z|x) dz (2-D quadrature)",
                 ", ".join(f"{m:.6f}" for m in mass.tolist()), f"|1 - integral| < {Q_MASS_TOL:g}",
                 worst < Q_MASS_TOL)


def q_ratio(name: str) -> Check:
    model = perturbed_model(name, latent_dim=RATIO_DIM, seed=5)
    x = inputs(n=2)
    g, parts = gen(6), []
    with torch.no_grad():
        encoded = model.encoder(x)
        for start in range(0, RATIO_DRAWS, ROWS // 8):  # memory; the same draws as one call (drawn one at a time)
            parts.append(model.posterior.from_noise(*encoded, model.noise(min(ROWS // 8, RATIO_DRAWS - start), x, g)))
    z, log_q = (torch.cat(t) for t in zip(*parts))  # [n, 2, D], [n, 2]
    return _ratio_check(f"E_q[r/q] = 1 (D = {RATIO_DIM}, {RATIO_DRAWS} draws)",
                        [ratio_mean(z[:, b], log_q[:, b]) for b in range(2)])


def posterior_checks(name: str, compile: bool = False) -> list[Check]:
    """Every check of posterior family `name` (with the standard prior); a bad name raises ConfigError."""
    resolve("posterior", name)
    model = perturbed_model(name)
    return [guarded("shapes", "", lambda: q_shapes(model)),
            guarded("dtype and device follow the inputs", "", lambda: q_dtype(name)),
            guarded("seeded draws reproducible, from_noise pure", "", lambda: q_seeded(model)),
            guarded("log q = log N(eps) - log|det dz/deps|", "", lambda: q_jacobian(model)),
            guarded("q normalised (2-D quadrature)", "", lambda: q_mass(model)),
            guarded(f"E_q[r/q] = 1 (D = {RATIO_DIM})", "", lambda: q_ratio(name)),
            *model_checks(name, "standard", compile)]


# ---- priors ------------------------------------------------------------------------------------------------

def p_shapes(prior) -> Check:
    d = 2
    with torch.no_grad():
        s = prior.sample(7, generator=gen(5))
        a, b = prior.log_prob(s), prior.log_prob(s.new_zeros(3, 4, d))
    ok = tuple(s.shape) == (7, d) and tuple(a.shape) == (7,) and tuple(b.shape) == (3, 4)
    return Check("shapes: sample(n) [n, D], log_prob [..., D] -> [...]",
                 f"{list(s.shape)}, {list(a.shape)}, {list(b.shape)}", f"[7, {d}], [7], [3, 4]", ok)


def p_dtype(name: str) -> Check:
    seen, ok = [], True
    for dtype in (torch.float32, torch.float64):
        prior = perturbed_model(prior=name).to(dtype).prior
        with torch.no_grad():
            s = prior.sample(3, generator=gen(1))
            lp = prior.log_prob(s)
        ok &= s.dtype == lp.dtype == dtype and s.device.type == lp.device.type == "cpu"
        seen.append(f"{str(dtype)[6:]} -> {str(s.dtype)[6:]}/{str(lp.dtype)[6:]}")
    return Check("dtype and device follow the module", ", ".join(seen) + ", cpu", "same as the module", ok)


def p_seeded(prior) -> Check:
    with torch.no_grad():
        ok = torch.equal(prior.sample(7, generator=gen(5)), prior.sample(7, generator=gen(5)))
    return Check("seeded draws reproducible", "identical" if ok else "differ", "bit for bit", ok)


def p_mass(name: str, seeds: tuple[int, ...] = (0, 1)) -> Check:
    masses, outer = [], []
    for seed in seeds:
        prior = perturbed_model(prior=name, seed=seed).prior
        z, p = grid_mass(prior.log_prob)
        masses.append(p.sum().item())
        outer.append(outer_mass(z, p, 10.0))
    worst = max(abs(m - 1) for m in masses)
    return Check("p normalised: 2-D grid integral (2 random inits)",
                 ", ".join(f"{m:.5f}" for m in masses) + f"; outer band {max(outer):.1g}",
                 f"|1 - integral| < {PRIOR_MASS_TOL:g}, outer < {OUTER_MASS_TOL:g}",
                 worst < PRIOR_MASS_TOL and max(outer) < OUTER_MASS_TOL)


def p_samples(name: str) -> Check:
    prior = perturbed_model(prior=name, seed=2).prior
    z, p = grid_mass(prior.log_prob)
    with torch.no_grad():
        samples = prior.sample(PRIOR_SAMPLES, generator=gen(3))  # [n, 2]
    mean_z, cov_z = moment_errors(samples, z, p)
    scores = histogram_z_scores(samples, z, p)
    moments = max(mean_z.max().item(), cov_z.max().item())
    worst_cell = scores.abs().max().item()
    outer = outer_mass(z, p, 10.0)  # the grid holds the mass, or the comparison would be vacuous
    return Check(f"samples follow log_prob ({PRIOR_SAMPLES} draws)",
                 f"moments {moments:.1f} SE, worst of {len(scores)} cells {worst_cell:.1f} SE",
                 f"< {SE_BOUND:g} SE, >= 10 cells, outer < {OUTER_MASS_TOL:g}",
                 moments < SE_BOUND and worst_cell < SE_BOUND and len(scores) >= 10 and outer < OUTER_MASS_TOL)


def p_ratio(name: str) -> Check:
    """The integral of p in D = 6 by importance sampling from the defensive mixture r = a p + (1 - a) g, g a
    diagonal Gaussian twice as wide as p's draws, a = 0.2: a n draws from `sample`, the rest from g, weights
    p/r <= 1/a (bounded whatever p's shape). The mean is 1 when log_prob is normalised and `sample` draws from it."""
    prior = perturbed_model(prior=name, latent_dim=RATIO_DIM, seed=5).prior
    sizes = (round(DEFENSIVE_SHARE * PRIOR_RATIO_DRAWS), round((1 - DEFENSIVE_SHARE) * PRIOR_RATIO_DRAWS))
    with torch.no_grad():
        from_p = prior.sample(sizes[0], generator=gen(6))  # [a n, D]
        loc, scale = from_p.mean(0), 2 * from_p.std(0)
        from_g = loc + scale * torch.randn((sizes[1], RATIO_DIM), generator=gen(7), dtype=from_p.dtype)
        weights = []
        for z in (from_p, from_g):
            log_p = in_rows(prior.log_prob, z)
            log_r = torch.logaddexp(log_p + math.log(DEFENSIVE_SHARE),
                                    normal_log_prob(z, loc, scale) + math.log(1 - DEFENSIVE_SHARE))
            weights.append((log_p - log_r).exp())  # p/r
    shares = (DEFENSIVE_SHARE, 1 - DEFENSIVE_SHARE)
    mean = sum(a * w.mean().item() for a, w in zip(shares, weights))  # stratified: exact shares of r
    se = math.sqrt(sum(a * a * w.var().item() / w.shape[0] for a, w in zip(shares, weights)))
    return _ratio_check(f"E_r[p/r] = 1 (D = {RATIO_DIM}, r = p/5 + 4/5 wide Gaussian, {PRIOR_RATIO_DRAWS} draws)",
                        [(mean, se)])


def p_flow(prior) -> Check:
    name, bound = "flow: log|det| vs autograd Jacobian, round trip", f"< {LOGDET_TOL:g}"
    if not callable(getattr(prior, "inverse", None)):
        return Check(name, "n/a (no inverse(z) -> (u, log|det|))", bound, None)
    points = torch.randn(3, 2, generator=gen(7), dtype=torch.float64) * 1.5
    with torch.no_grad():
        u, _ = prior.inverse(points)
        back = prior(u)[0]
    worst = max(logdet_errors(prior.forward, points) + logdet_errors(prior.inverse, points))
    trip = (back - points).abs().max().item()
    trip_tol = getattr(prior, "round_trip_tolerance", 1e-8)  # a bisection inverse declares its own
    return Check(name, f"max err {worst:.2g}, round trip {trip:.2g}", f"{bound}, round trip < {trip_tol:g}",
                 worst < LOGDET_TOL and trip < trip_tol)


def prior_checks(name: str, compile: bool = False) -> list[Check]:
    """Every check of prior `name` (with the mean-field posterior); a bad name raises ConfigError."""
    resolve("prior", name)
    prior = perturbed_model(prior=name).prior
    return [guarded("shapes", "", lambda: p_shapes(prior)),
            guarded("dtype and device follow the module", "", lambda: p_dtype(name)),
            guarded("seeded draws reproducible", "", lambda: p_seeded(prior)),
            guarded("p normalised (2-D grid)", "", lambda: p_mass(name)),
            guarded("samples follow log_prob", "", lambda: p_samples(name)),
            guarded(f"E_r[p/r] = 1 (D = {RATIO_DIM})", "", lambda: p_ratio(name)),
            guarded("flow: log|det| vs autograd Jacobian", "", lambda: p_flow(prior)),
            *model_checks("mean-field", name, compile)]
