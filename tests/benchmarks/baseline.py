"""The plain reference loop the benchmarks compare against (the reference implementation's style):
DataLoader batches, nn.Sequential nets, torch.distributions densities, summed loss, centered RMSprop."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal
from torch.utils.data import DataLoader, TensorDataset


class MaskedLinear(nn.Linear):
    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.float())

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class BaselineMADEStep(nn.Module):
    """One gated IAF step: 2-layer MADE with the context added to the first hidden layer and to the outputs
    (the same work as `vae_core.nets.made.MADE`: one unbiased context matmul to hidden + 2 x dim units)."""

    def __init__(self, dim: int, hidden: int, reverse: bool):
        super().__init__()
        deg_in = torch.arange(1, dim + 1).flip(0) if reverse else torch.arange(1, dim + 1)
        deg_h = torch.arange(hidden) % (dim - 1) + 1
        self.hidden = hidden
        self.l1 = MaskedLinear(dim, hidden, deg_h[:, None] >= deg_in[None, :])
        self.ctx = nn.Linear(dim, hidden + 2 * dim, bias=False)
        self.l2 = MaskedLinear(hidden, hidden, deg_h[:, None] >= deg_h[None, :])
        self.out = MaskedLinear(hidden, 2 * dim, deg_in.repeat(2)[:, None] > deg_h[None, :])
        nn.init.constant_(self.out.bias[dim:], 2.0)

    def forward(self, z, h):
        c_hidden, c_out = self.ctx(h).split([self.hidden, z.shape[-1] * 2], -1)
        a = F.elu(self.l1(z) + c_hidden)
        m, s = (self.out(F.elu(self.l2(a))) + c_out).chunk(2, -1)
        gate = torch.sigmoid(s)
        return gate * z + (1 - gate) * m, torch.log(gate).sum(-1)


class BaselineVAE(nn.Module):
    def __init__(self, iaf: bool, data_dim: int = 784, hidden: int = 256, latent: int = 128):
        super().__init__()
        self.latent, self.iaf = latent, iaf
        self.encoder = nn.Sequential(nn.Linear(data_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, (3 if iaf else 2) * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, data_dim))
        self.steps = nn.ModuleList(BaselineMADEStep(latent, hidden, i % 2 == 1) for i in range(2)) if iaf else []

    def log_weights(self, x, k=None):
        out = self.encoder(x).chunk(3 if self.iaf else 2, -1)
        loc, scale = out[0], F.softplus(out[1])
        q = Normal(loc, scale)
        z = q.rsample() if k is None else q.rsample((k,))
        log_q = q.log_prob(z).sum(-1)
        for step in self.steps:
            z, log_det = step(z, out[2])
            log_q = log_q - log_det
        log_p = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
        log_px = Bernoulli(logits=self.decoder(z)).log_prob(x.expand(*z.shape[:-1], x.shape[-1])).sum(-1)
        return log_px + log_p - log_q


def baseline_loader(x: torch.Tensor, batch_size: int = 128) -> DataLoader:
    return DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=True, drop_last=True)


def baseline_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(model.parameters(), lr=1e-3, centered=True)


def baseline_train_step(model: BaselineVAE, optimizer, batch: torch.Tensor) -> float:
    loss = -model.log_weights(batch).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def baseline_iw_log_px(model: BaselineVAE, x: torch.Tensor, k: int, chunk: int = 100) -> torch.Tensor:
    log_w = torch.cat([model.log_weights(x, chunk) for _ in range(k // chunk)])  # [k, B]
    return torch.logsumexp(log_w, 0) - torch.log(torch.tensor(float(k)))
