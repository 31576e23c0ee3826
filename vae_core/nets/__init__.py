"""Networks: the encoder and decoder (`coders`), the gated convs (`gated_conv`) and MADE (`made`)."""

from vae_core.nets.coders import Decoder, Encoder, image_shape
from vae_core.nets.made import MADE

__all__ = ["Decoder", "Encoder", "MADE", "image_shape"]
