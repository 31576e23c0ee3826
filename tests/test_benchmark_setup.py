"""The speed benchmarks measure what they claim: real data or an error, and baselines of our models' size."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.conftest import benchmark_mnist
from tests.benchmarks.test_speed import baseline_model, parameter_count


def test_benchmark_data_missing_is_an_error_not_noise(tmp_path: Path, isolated: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(pytest.fail.Exception, match="the benchmarks need binarized MNIST: .*not found"):
        benchmark_mnist(tmp_path / "empty")


def test_benchmark_data_corrupt_is_an_error(synth, tmp_path: Path, isolated: Path) -> None:
    splits = synth.binarized_set(tmp_path)
    synth.write_amat(tmp_path / "binarized_mnist" / "binarized_mnist_train.amat.gz", 1 - splits["train"])
    with pytest.raises(pytest.fail.Exception, match="the benchmarks need binarized MNIST: .*mismatch"):
        benchmark_mnist(tmp_path)


def test_benchmark_data_is_the_dataset(synth, tmp_path: Path, isolated: Path) -> None:
    splits = synth.binarized_set(tmp_path)
    train, test = benchmark_mnist(tmp_path)
    assert train.numpy().tolist() == splits["train"].tolist() and test.numpy().tolist() == splits["test"].tolist()


@pytest.mark.parametrize("family,count", [("mean-field", 632_848), ("iaf", 1_126_032)])
def test_baselines_have_our_parameter_count(family: str, count: int) -> None:
    assert parameter_count(baseline_model(family)) == count
