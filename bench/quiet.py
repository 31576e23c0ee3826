"""Keep `vaebench` output to the project's own lines: torch's internal log records and warnings are silenced."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_torch() -> None:
    """Raise torch's log components to ERROR and ignore warnings raised inside torch (compilation chatter such
    as dynamo's 'Profiler record function ... will be ignored'). A user's own TORCH_LOGS is respected."""
    warnings.filterwarnings("ignore", module=r"torch(\.|$)")
    if "TORCH_LOGS" in os.environ:  # torch then ignores set_logs, and would say so in a log line
        return
    import torch._logging

    torch._logging.set_logs(all=logging.ERROR)
