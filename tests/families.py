"""The (posterior, prior) pairs the parametrized tests run: every hand-written posterior with every hand-written
prior (they interact: the VampPrior reads the encoder, flows meet mixtures), and each family adapted from zuko
with the plainest partner (the standard prior, the mean-field posterior). A new hand-written family joins the
full product; a new zuko short name joins its own line."""

from vae_core.posteriors import POSTERIORS, ZukoPosterior
from vae_core.priors import PRIORS, ZukoPrior

OWN_POSTERIORS = [q for q, cls in POSTERIORS.items() if not issubclass(cls, ZukoPosterior)]
OWN_PRIORS = [p for p, cls in PRIORS.items() if not issubclass(cls, ZukoPrior)]
ZUKO_POSTERIORS = [q for q in POSTERIORS if q not in OWN_POSTERIORS]
ZUKO_PRIORS = [p for p in PRIORS if p not in OWN_PRIORS]

PAIRS = ([(q, p) for q in OWN_POSTERIORS for p in OWN_PRIORS] + [(q, "standard") for q in ZUKO_POSTERIORS]
         + [("mean-field", p) for p in ZUKO_PRIORS])
