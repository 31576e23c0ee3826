"""Per-layer figures of a two-layer model (`vae_core.hierarchical`): the ELBO's KL term split by layer and the
active units of each layer.

kl_z2 = E_x E_q[log q(z2 | x) - log p(z2)], kl_z1 = E_x E_q[log q(z1 | x, z2) - log p(z1 | z2)]: they sum to the
ELBO's KL term. Active units of a layer: units u with Cov_x(E_q[z_u | x]) > 0.01 (Burda et al.), E_q[z | x]
estimated by the mean of `samples` joint draws (for z1 that is E_q(z2|x) E_q(z1|x,z2)[z1]), with the Monte-Carlo
variance of that mean subtracted so noise alone does not make a unit active.
"""

from __future__ import annotations

import torch

from vae_core.inference_gaps import ACTIVE_THRESHOLD

LAYER_COLUMNS = ("test_kl_z1", "test_kl_z2", "active_units_z1", "active_units_z2")


@torch.no_grad()
def layer_figures(model, x: torch.Tensor, samples: int, generator: torch.Generator, batch: int = 500
                  ) -> dict[str, float]:
    """The LAYER_COLUMNS of a two-layer model over the images x [N, P], from `samples` draws per image."""
    if model.config.layers != 2:
        raise ValueError(f"per-layer figures need a two-layer model; got model.layers = {model.config.layers}")
    sums = {"kl_z1": 0.0, "kl_z2": 0.0}
    means: dict[str, list[torch.Tensor]] = {"z1": [], "z2": []}
    noise: dict[str, list[torch.Tensor]] = {"z1": [], "z2": []}
    for start in range(0, x.shape[0], batch):
        xb = x[start:start + batch]  # [b, P]
        t = model.layer_terms(xb, model.noise(samples, xb, generator))  # each [S, b] or [S, b, D]
        sums["kl_z1"] += (t["log_q1"] - t["log_pz1"]).double().mean(0).sum().item()
        sums["kl_z2"] += (t["log_q2"] - t["log_pz2"]).double().mean(0).sum().item()
        for layer in ("z1", "z2"):
            z = t[layer].double()  # [S, b, D]
            means[layer].append(z.mean(0))
            noise[layer].append(z.var(0) / samples if samples > 1 else torch.zeros_like(z[0]))
    figures = {f"test_kl_{layer}": sums[f"kl_{layer}"] / x.shape[0] for layer in ("z1", "z2")}
    for layer in ("z1", "z2"):
        m = torch.cat(means[layer])  # [N, D]
        variance = m.var(0, correction=0) - torch.cat(noise[layer]).mean(0)  # [D]
        figures[f"active_units_{layer}"] = int((variance > ACTIVE_THRESHOLD).sum())
    return figures
