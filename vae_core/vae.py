"""The VAE: an encoder, a posterior family, a decoder with its likelihood and a prior, composed (never
combined into per-pair classes). Estimators are in nats per input; the config travels with the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from vae_core.config import ModelConfig, to_dict
from vae_core.distributions import kl_normal_std_normal
from vae_core.estimators import iw_chunk_size, streaming_iw_bound
from vae_core.likelihoods import likelihood_for
from vae_core.nets import Decoder, Encoder, image_shape
from vae_core.nets.gated_conv import gated_conv_decoder_floats
from vae_core.posteriors import standard_normal
from vae_core.registry import build_posterior, build_prior

CHECKPOINT_FORMAT = "vaebench-vae/1"


LogWeightFn = Callable[["VAE", torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class VAE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.posterior = build_posterior(config)
        self.encoder = Encoder(config, getattr(self.posterior, "context_dim", 0))
        self.likelihood = likelihood_for(config.likelihood)
        self.decoder = Decoder(config, self.likelihood.params_per_pixel)
        self.prior = build_prior(config, self.encoder)

    def noise(self, k: int, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The standard-normal noise [k, B, D] (`noise_dim`) behind k posterior samples for each row of x [B, P]."""
        return standard_normal(k, x.new_empty(x.shape[0], self.config.noise_dim), generator)

    def log_weights(self, x: torch.Tensor, k: int = 1, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, P] -> (log p(x|z), log p(z), log q(z|x)), each [k, B], for z ~ q(z|x)."""
        return self.log_densities(x, self.noise(k, x, generator))

    def log_densities(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log p(x|z), log p(z), log q(z|x)), each [k, B], for z = q's map of noise eps [k, B, D] (pure)."""
        return self._log_densities(x, *self.encoder(x), eps)

    def _log_densities(self, x, loc, scale, context, eps):
        z, log_q = self.posterior.from_noise(loc, scale, context, eps)  # [k, B, D], [k, B]
        return (*self.log_joint(x, z), log_q)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x|z), log p(z)), each [k, B], for latents z [k, B, D] from any proposal (pure): the model's
        side of every log-weight, e.g. of a Gaussian fitted per image (`vae_core.inference_gaps`)."""
        return self.log_px_z(x, z), self.prior.log_prob(z)

    def log_px_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) [...] nats for x [B, P] and z [..., B, D], through the likelihood."""
        return self.likelihood.log_prob(x, self.decoder(z))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's pixel means [..., P] of p(x|z) for z [..., D] (sample and reconstruction images)."""
        return self.likelihood.mean(self.decoder(z))

    def elbo_terms(self, x: torch.Tensor, k: int = 1, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction [B], kl [B]) with ELBO = reconstruction - kl; both averaged over k samples."""
        return self(x, self.noise(k, x, generator))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`elbo_terms` for given noise eps [k, B, D]: a pure function of its inputs (compilable, and what
        `torch.func.functional_call` calls).

        kl = "mc": E_q[log q - log p]; "analytic": closed form (mean-field posterior, standard prior).
        """
        loc, scale, context = self.encoder(x)
        if self.config.kl == "analytic":
            z, _ = self.posterior.from_noise(loc, scale, context, eps)
            return self.log_px_z(x, z).mean(0), kl_normal_std_normal(loc, scale)
        log_px_z, log_pz, log_q = self._log_densities(x, loc, scale, context, eps)
        return log_px_z.mean(0), (log_q - log_pz).mean(0)

    def elbo(self, x: torch.Tensor, k: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B] nats."""
        reconstruction, kl = self.elbo_terms(x, k, generator)
        return reconstruction - kl

    @torch.no_grad()
    def iw_log_px(self, x: torch.Tensor, k: int = 1000, chunk: int | None = None,
                  generator: torch.Generator | None = None, log_weight: LogWeightFn | None = None) -> torch.Tensor:
        """Importance-weighted log p(x) bound with k samples, [B] nats, drawn `chunk` samples at a time.

        `log_weight` computes one chunk's log-weights (default `VAE.log_weight`; pass a compiled one).
        """
        log_weight = log_weight or VAE.log_weight
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        loc, scale, context = self.encoder(x)
        chunk = chunk or iw_chunk_size(k, x.shape[0], self.floats_per_iw_sample, x.device)

        def chunks():
            for start in range(0, k, chunk):
                eps = self.noise(min(chunk, k - start), x, generator)  # [c, B, D]
                yield log_weight(self, x, loc, scale, context, eps)  # [c, B]

        return streaming_iw_bound(chunks())

    @property
    def floats_per_iw_sample(self) -> int:
        """Activations per image and sample of one IW chunk (sizes chunks to a memory budget): the decoder's
        outputs and the likelihood's per-pixel terms (`floats_per_pixel`), the Gaussian's, and what the
        posterior's flow and the prior's log_prob add (a VampPrior with K = 500 pseudo-inputs holds [chunk, B, K]
        terms: `mixture_floats_per_sample`)."""
        c = self.config
        per_hidden = 4 if c.activation == "gated" else 2  # gated: h, g, sigmoid(g) and their product
        decoder = (gated_conv_decoder_floats(image_shape(c)) if c.architecture == "gated-conv"
                   else per_hidden * sum(c.hidden))
        return (self.likelihood.floats_per_pixel * c.data_dim + decoder + 4 * c.latent_dim
                + getattr(self.posterior, "floats_per_sample", 0)
                + getattr(self.prior, "floats_per_sample", 0))

    def log_weight(self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, context: torch.Tensor,
                   eps: torch.Tensor) -> torch.Tensor:
        """log p(x, z) - log q(z|x) [k, B] for z = q's map of noise eps [k, B, D], given the encoder's outputs."""
        log_px_z, log_pz, log_q = self._log_densities(x, loc, scale, context, eps)
        return log_px_z + log_pz - log_q

    @torch.no_grad()
    def latent_code(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, P] -> the posterior's centre [B, D] (the mean for mean-field; the flow of the mean otherwise)."""
        loc, scale, context = self.encoder(x)
        return self.posterior.center(loc, scale, context)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, P] -> the likelihood's means [B, P] decoded from the posterior's centre."""
        return self.decode_mean(self.latent_code(x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n, P] the likelihood's means of p(x|z), z ~ p(z)."""
        return self.decode_mean(self.prior.sample(n, generator))

    def save(self, path: str | Path) -> None:
        """Weights and config in one file (read back with `load_vae`)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"format": CHECKPOINT_FORMAT, "config": to_dict(self.config), "state_dict": state}, path)
