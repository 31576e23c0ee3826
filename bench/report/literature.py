"""Published binarized-MNIST numbers, shown apart from the measured tables: they were NOT measured here."""

from __future__ import annotations

HEADING = "Published numbers — not measured here"

# (model, NLL in nats on the test set (lower is better), protocol, source)
LITERATURE: tuple[tuple[str, str, str, str], ...] = (
    ("VAE (IWAE paper's k=1 model)", "88.71", "static binarized MNIST, MLP 2×200 tanh, z=50",
     "Burda et al. 2016, Appendix D"),
    ("IWAE k=5 / k=50", "87.63 / 87.10", "same", "same"),
    ("DLGM, diagonal Gaussian posterior", "≤ 89.9", "binarized MNIST, MLP 1×400, z=40", "Rezende & Mohamed 2015"),
    ("VampPrior, K=500 pseudo-inputs", "85.57", "static binarized MNIST, MLP, z=40", "Tomczak & Welling 2018"),
    ("pythae reproductions: VAE / VAMP / IWAE-50", "89.78 / 85.79 / 86.82", "same protocols",
     "pythae reproducibility README"),
    ("Sylvester-flows paper: no flow / planar / IAF / O-SNF / H-SNF / T-SNF",
     "82.14 / 81.91 / 80.79 / 80.22 / 80.29 / 80.28 (recalled, unverified)",
     "static binarized MNIST, gated convs, z=64, 16 flows, k=5000", "van den Berg et al. 2018, Table 1"),
    ("reference PyTorch script, mean-field, 30k steps", "100.31 (its README); 97.87 measured on our data",
     "static, MLP 2×256, z=128, k=1000", "jaanli/variational-autoencoder"),
)


def literature_markdown() -> str:
    lines = [
        f"## {HEADING}",
        "",
        "Values copied from the cited sources, for orientation only: different architectures, training lengths "
        "and estimators, so they are not a ranking against the measured tables above. "
        "NLL = −log p(x) in nats on the test set (lower is better); NLL 88.71 corresponds to log p(x) = −88.71 "
        "in the tables above.",
        "",
        "| model | NLL | protocol | source |",
        "|---|---|---|---|",
    ]
    lines += [f"| {m} | {nll} | {protocol} | {source} |" for m, nll, protocol, source in LITERATURE]
    return "\n".join(lines) + "\n"
