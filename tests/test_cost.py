"""Counted cost (`bench.training.cost`): the FLOPs of a training step and of one importance sample, against
the count by hand for an MLP, and the columns every run's row carries."""

from __future__ import annotations

import math

import pytest
import torch

from bench.grid.files import parse_grid
from bench.storage import ResultsLayout
from bench.training.cost import OpCounter, counted
from bench.training.stack import Stack
from tests.families import PAIRS
from tests.test_stacking import synthetic_data
from vae_core import build_vae

P, H, D, B = 784, 8, 3, 8  # pixels, hidden width, latent dim, batch (synthetic_data has 784 pixels)


def grid(posterior: str = "mean-field", prior: str = "standard", k: int = 1, seeds=(0,)):
    return parse_grid({"name": "c", "model": {"hidden": [H], "latent_dim": D, "posterior": posterior,
                                              "prior": prior, "prior_components": 3},
                       "train": {"batch_size": B, "max_steps": 4, "eval_every": 4, "compile": False,
                                 "objective": "iwae" if k > 1 else "elbo", "objective_samples": k},
                       "eval": {"iw_samples": 4, "valid_iw_samples": 2}, "grid": {"train.seed": list(seeds)}})


def costs(cfgs, tmp_path) -> list[dict]:
    stack = Stack(cfgs, synthetic_data(), ResultsLayout(tmp_path), torch.device("cpu"))
    stack.prepare()
    stack.count_costs()
    return [run.cost for run in stack.runs]


def mlp_flops(k: int) -> tuple[float, float]:
    """(train FLOPs per example, IW FLOPs per sample) of the mean-field MLP VAE P-H-(2D) / D-H-P, by hand.

    Forward: the encoder on B rows, the decoder on k B rows, 2 FLOPs per multiply-add. Backward: each layer's
    weight gradient costs its forward again, and so does its input gradient, except the encoder's first layer
    (x needs none). The optimizer's update is element-wise. One more IW sample: the decoder on one row."""
    encoder = P * H + H * 2 * D
    decoder = D * H + H * P
    forward = 2 * (B * encoder + k * B * decoder)
    backward = 2 * forward - 2 * B * P * H
    return (forward + backward) / B, 2.0 * decoder


@pytest.mark.parametrize("k", [1, 4])
def test_mean_field_counts_equal_the_count_by_hand(float64, tmp_path, k):
    (cost,) = costs(grid(k=k), tmp_path)
    train, iw = mlp_flops(k)
    assert cost["train_flops_per_example"] == train
    assert cost["iw_flops_per_sample"] == iw
    assert cost["train_elementwise_per_example"] > 0 and cost["iw_elementwise_per_sample"] > 0


def test_a_forward_pass_alone_counts_as_the_hand_forward_not_as_a_training_step(float64):
    """The counter on the model's forward alone gives the hand count's forward part, which the training figure of
    `mlp_flops` exceeds: a step that lost its backward pass would fail the test above."""
    model = build_vae({"hidden": [H], "latent_dim": D})
    x, eps = torch.rand(B, P), torch.randn(1, B, D)  # [B, P], [k, B, D]
    with torch.no_grad():
        flops, _ = counted(model, x, eps)
    forward = 2 * B * (P * H + H * 2 * D + D * H + H * P)
    assert flops == forward and mlp_flops(1)[0] * B > 2.5 * forward


def test_elementwise_ops_count_outputs_and_reduction_inputs():
    x = torch.ones(3, 5)
    assert counted(lambda a: a.exp() + 1.0, x) == (0, 30)
    assert counted(lambda a: a.sum(-1), x) == (0, 15)
    assert counted(lambda a: a @ a.T, x) == (2 * 3 * 3 * 5, 0)
    with OpCounter() as c:
        x.view(15).clone()
    assert (c.flops, c.elementwise) == (0, 0)


@pytest.mark.parametrize("posterior,prior", PAIRS, ids=[f"{q}+{p}" for q, p in PAIRS])
def test_counts_are_deterministic_and_do_not_change_training(float64, tmp_path, posterior, prior):
    """Counting twice gives the same figures; a stack that counted trains to the same weights as one that did
    not (the count reads the step, it does not take it)."""
    cfgs = grid(posterior, prior)
    first, second = costs(cfgs, tmp_path / "a"), costs(cfgs, tmp_path / "b")
    assert first == second
    assert all(math.isfinite(v) and v > 0 for v in first[0].values()), first
    data = synthetic_data()
    counted_stack, plain = (Stack(cfgs, data, ResultsLayout(tmp_path / n), torch.device("cpu")) for n in "cd")
    counted_stack.prepare()
    counted_stack.count_costs()
    plain.prepare()
    for _ in range(2):
        counted_stack.step()
        plain.step()
    assert torch.equal(counted_stack.flat, plain.flat)


def test_stacked_runs_count_what_each_counts_alone(float64, tmp_path):
    cfgs = grid("iaf", "vamp", seeds=(0, 1))
    assert costs(cfgs, tmp_path / "s") == [costs([c], tmp_path / f"a{i}")[0] for i, c in enumerate(cfgs)]
