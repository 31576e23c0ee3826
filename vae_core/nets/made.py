"""MADE (Germain et al. 2015): a masked MLP whose output i depends only on inputs that precede i.

Used by the IAF posterior and the MAF prior. An optional context (e.g. the encoder's h) enters the
first hidden layer and, through an unmasked linear term, every output: so the first output of the
ordering, which sees no input, still depends on the context.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


def degrees(order: torch.Tensor) -> torch.Tensor:
    """Input degree of each dimension (1-based rank in `order`): order[j] is the j-th dim to be modelled."""
    deg = torch.empty_like(order)
    deg[order] = torch.arange(1, len(order) + 1)
    return deg


class MADE(nn.Module):
    """z [..., D] (+ context [..., C]) -> `n_params` tensors [..., D], autoregressive in `order`.

    Hidden degrees cycle through 1..D-1, so a width below D-1 would leave some inputs unused (rejected).
    With D = 1 the hidden units see no input (the first layer has zero input width) and every output is a
    function of the context alone.
    """

    def __init__(self, dim: int, hidden: int, n_params: int = 2, context_dim: int = 0, n_hidden_layers: int = 2,
                 order: torch.Tensor | None = None):
        super().__init__()
        if dim > 1 and hidden < dim - 1:
            raise ValueError(f"MADE hidden width {hidden} < dim - 1 = {dim - 1}: some inputs would reach no output")
        self.dim, self.n_params = dim, n_params
        order = torch.arange(dim) if order is None else order
        in_deg = degrees(order)  # [D]
        hid_deg = torch.arange(hidden) % (dim - 1) + 1 if dim > 1 else torch.zeros(hidden, dtype=torch.long)
        out_deg = in_deg.repeat(n_params)  # [P*D], parameter-major
        self.register_buffer("in_deg", in_deg, persistent=False)
        self.n_inputs = dim if dim > 1 else 0  # at D = 1 no hidden unit may see z: no z -> hidden weights at all
        masks = [hid_deg[:, None] >= in_deg[None, : self.n_inputs]]
        masks += [hid_deg[:, None] >= hid_deg[None, :]] * (n_hidden_layers - 1)
        masks += [out_deg[:, None] > hid_deg[None, :]]
        sizes = [self.n_inputs] + [hidden] * n_hidden_layers + [n_params * dim]
        with warnings.catch_warnings():  # the zero-width first layer at D = 1 warns that its init is a no-op
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if not self.n_inputs:  # zero fan-in leaves the default bias init at 0, where ELU passes no gradient on
            nn.init.uniform_(self.layers[0].bias, -1.0, 1.0)
        for i, m in enumerate(masks):
            self.register_buffer(f"mask{i}", m.float(), persistent=False)
        self.hidden = hidden
        # one matmul for both context paths: rows [:hidden] feed the first hidden layer, the rest the outputs
        self.context = nn.Linear(context_dim, hidden + n_params * dim, bias=False) if context_dim else None

    def masks(self) -> list[torch.Tensor]:
        return [getattr(self, f"mask{i}") for i in range(len(self.layers))]

    @property
    def floats_per_sample(self) -> int:
        """Activations per input row (every layer's outputs)."""
        return sum(layer.out_features for layer in self.layers)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """z [..., D], context [..., C] broadcastable to z's batch dims -> n_params x [..., D]."""
        h = z[..., : self.n_inputs]
        if self.context is not None:
            context_in, context_out = self.context(context).split([self.hidden, self.n_params * self.dim], dim=-1)
        for i, (layer, mask) in enumerate(zip(self.layers, self.masks())):
            h = F.linear(h, layer.weight * mask, layer.bias)
            if i == 0 and self.context is not None:
                h = h + context_in
            if i < len(self.layers) - 1:
                h = F.elu(h)
        if self.context is not None:
            h = h + context_out
        return h.to(z.dtype).chunk(self.n_params, dim=-1)  # z's dtype again under bf16 autocast
