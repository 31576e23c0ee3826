"""Building and loading models: `build_vae` picks the one-layer `VAE` or the two-layer `HierarchicalVAE` by
`model.layers`; `load_vae` reads what `VAE.save` wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from vae_core.config import ConfigError, ModelConfig
from vae_core.hierarchical import HierarchicalVAE
from vae_core.vae import CHECKPOINT_FORMAT, VAE


class CheckpointError(ValueError):
    """A model file is missing, corrupt or not a vaebench model."""


def build_vae(config: ModelConfig | Mapping[str, Any]) -> VAE:
    """A VAE from a ModelConfig or a plain dict of `[model]` keys (plus data_dim); bad keys raise ConfigError."""
    config = ModelConfig.parse(config)
    return HierarchicalVAE(config) if config.layers == 2 else VAE(config)


def load_vae(path: str | Path, map_location: str | torch.device = "cpu") -> VAE:
    """The model saved by `VAE.save`, loaded with `torch.load(weights_only=True)`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(err).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a vaebench model (format {CHECKPOINT_FORMAT!r} expected)")
    try:
        model = build_vae(blob["config"])
        # The model is built in the default dtype; cast it to the dtype it was saved in first, or load_state_dict
        # would silently copy float64 weights into float32 parameters.
        saved_dtypes = {v.dtype for v in blob["state_dict"].values() if v.is_floating_point()}
        if len(saved_dtypes) == 1:
            model.to(saved_dtypes.pop())
        model.load_state_dict(blob["state_dict"])
    except (ConfigError, RuntimeError, KeyError, AttributeError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} does not match its config: {str(err).splitlines()[0]}") from None
    return model.to(map_location)
