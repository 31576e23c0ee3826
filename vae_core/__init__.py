"""vae_core: VAE parts (networks, posterior families, priors, flows, likelihoods) and likelihood estimators."""

from vae_core.config import ConfigError, ModelConfig
from vae_core.likelihoods import LIKELIHOODS
from vae_core.posteriors import POSTERIORS
from vae_core.priors import PRIORS
from vae_core.models import CheckpointError, build_vae, load_vae
from vae_core.vae import VAE

__all__ = ["VAE", "ModelConfig", "ConfigError", "CheckpointError", "POSTERIORS", "PRIORS", "LIKELIHOODS",
           "build_vae", "load_vae"]
