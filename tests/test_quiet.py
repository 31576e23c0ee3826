"""Clean output: torch's internal log records and warnings are silenced, the project's own are kept."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch._logging

from bench.quiet import quiet_torch

TORCH_LOGGERS = ("torch._dynamo.variables.ctx_manager", "torch._inductor.utils")


@pytest.fixture
def torch_logs_restored():
    torch._logging.set_logs()
    yield
    torch._logging.set_logs()


def _warns(name: str) -> bool:
    return logging.getLogger(name).isEnabledFor(logging.WARNING)


def test_torch_log_records_and_warnings_are_silenced(torch_logs_restored, monkeypatch):
    monkeypatch.delenv("TORCH_LOGS", raising=False)
    assert all(_warns(name) for name in TORCH_LOGGERS)  # torch's default: warnings are printed
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_torch()
        warnings.warn_explicit("torch internal", UserWarning, "x.py", 1, module="torch._dynamo.utils")
        warnings.warn_explicit("ours", RuntimeWarning, "y.py", 1, module="vae_core.data.cache")
    assert not any(_warns(name) for name in TORCH_LOGGERS)
    assert logging.getLogger("torch._dynamo").isEnabledFor(logging.ERROR)
    assert [str(w.message) for w in seen] == ["ours"]


def test_torch_logs_env_is_left_alone_without_a_line(torch_logs_restored, monkeypatch):
    """With TORCH_LOGS set, torch ignores set_logs and says so in a log line; quiet_torch must not trigger it."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("torch._logging._internal")
    logger.addHandler(handler)
    monkeypatch.setenv("TORCH_LOGS", "+dynamo")
    try:
        quiet_torch()
    finally:
        logger.removeHandler(handler)
    assert records == [] and all(_warns(name) for name in TORCH_LOGGERS)
