"""The gated convolutional encoder and decoder of the Sylvester-flows code (van den Berg et al. 2018, their
`models/VAE.py` and `models/layers.py`, binary inputs), for images of shape (height, width) with both
divisible by 4: 28x28 (MNIST, Caltech-101 Silhouettes, Omniglot) and 28x20 (Frey Faces).

Every layer is gated, h(x) * sigmoid(g(x)) with h and g convolutions of the same shape (no activation on
h). Encoder: 5x5 convolutions 1 -> 32 -> 32 (stride 2) -> 64 -> 64 (stride 2) -> 64, then one convolution
with kernel (height / 4, width / 4) to 256 features; the VAE's heads are linear layers on those 256. Decoder:
the mirror with transposed convolutions (z as a 1x1 image) to 32 channels at full size, then a 1x1
convolution to one logit per pixel.
"""

from __future__ import annotations

import torch
import torch.nn as nn

GATED_CONV_FEATURES = 256  # the encoder's output width (the official code's q_z_nn_output_dim)
KERNEL = 5


class GatedConv2d(nn.Module):
    """conv_h(x) * sigmoid(conv_g(x)), two convolutions with the same arguments."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: int, padding: int):
        super().__init__()
        self.h = nn.Conv2d(c_in, c_out, kernel, stride, padding)
        self.g = nn.Conv2d(c_in, c_out, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedConvTranspose2d(nn.Module):
    """convT_h(x) * sigmoid(convT_g(x)), two transposed convolutions with the same arguments."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: int, padding: int, output_padding: int = 0):
        super().__init__()
        self.h = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, output_padding)
        self.g = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, output_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


def last_kernel(image_shape: tuple[int, int]) -> tuple[int, int]:
    """The kernel that maps the encoder's quarter-size grid to 1x1: (height / 4, width / 4)."""
    height, width = image_shape
    if height % 4 or width % 4 or height < 4 or width < 4:
        raise ValueError(f"the gated-conv architecture needs height and width divisible by 4; got {height}x{width}")
    return height // 4, width // 4


def gated_conv_encoder(image_shape: tuple[int, int] = (28, 28)) -> nn.Sequential:
    """[N, H * W] -> [N, 256] features."""
    k, p = KERNEL, KERNEL // 2
    return nn.Sequential(
        nn.Unflatten(-1, (1, *image_shape)),
        GatedConv2d(1, 32, k, 1, p), GatedConv2d(32, 32, k, 2, p),
        GatedConv2d(32, 64, k, 1, p), GatedConv2d(64, 64, k, 2, p),
        GatedConv2d(64, 64, k, 1, p), GatedConv2d(64, GATED_CONV_FEATURES, last_kernel(image_shape), 1, 0),
        nn.Flatten(),
    )


def gated_conv_decoder(latent_dim: int, image_shape: tuple[int, int] = (28, 28),
                       channels: int = 1) -> nn.Sequential:
    """[N, D] -> [N, channels * H * W] (channel-major): the likelihood's parameters per pixel."""
    k, p = KERNEL, KERNEL // 2
    return nn.Sequential(
        nn.Unflatten(-1, (latent_dim, 1, 1)),
        GatedConvTranspose2d(latent_dim, 64, last_kernel(image_shape), 1, 0),
        GatedConvTranspose2d(64, 64, k, 1, p), GatedConvTranspose2d(64, 32, k, 2, p, 1),
        GatedConvTranspose2d(32, 32, k, 1, p), GatedConvTranspose2d(32, 32, k, 2, p, 1),
        GatedConvTranspose2d(32, 32, k, 1, p),
        nn.Conv2d(32, channels, 1, 1, 0),
        nn.Flatten(),
    )


def gated_conv_decoder_floats(image_shape: tuple[int, int] = (28, 28)) -> int:
    """Activations per decoded sample (h, g, sigmoid(g) and their product per gated layer), for IW chunks."""
    height, width = image_shape
    quarter, half, full = height * width // 16, height * width // 4, height * width
    return 4 * (64 * quarter * 2 + 32 * half * 2 + 32 * full * 2) + full
