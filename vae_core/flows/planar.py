"""Planar flows (Rezende & Mohamed 2015), forward only, in the direction convention of `vae_core.flows`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def planar_constrain(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """u_hat with w.u_hat >= -1, which makes the planar map invertible (Rezende & Mohamed 2015, App. A)."""
    wu = (w * u).sum(-1, keepdim=True)
    return u + (F.softplus(wu) - 1 - wu) * w / w.square().sum(-1, keepdim=True)


def planar(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y = z + u_hat tanh(w.z + b); log|det| = log|1 + tanh'(w.z + b) u_hat.w|.

    z [..., D]; u, w [..., D] and b [...] broadcast against z.
    """
    u_hat = planar_constrain(u, w)
    a = (w * z).sum(-1) + b  # [...]
    t = torch.tanh(a)
    y = z + u_hat * t.unsqueeze(-1)
    return y, torch.log(torch.abs(1 + (1 - t.square()) * (w * u_hat).sum(-1)))
