"""Task functions the Ray and Slurm tests send to workers and jobs (a light module: they import it by name)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.executors.ray import probe_node


def counted(task: tuple[str, str]) -> list[str]:
    """Appends a line to the task's count file, then: 'ok' returns two results, 'die' ends its worker or job
    process at once (as an out-of-memory kill would), 'raise' raises."""
    kind, count_file = task
    with open(count_file, "a") as fh:
        fh.write("x\n")
    if kind == "die":
        os._exit(1)
    if kind == "raise":
        raise ValueError("raised on purpose")
    return [kind, kind]


def unmounted_probe(probe: str, token: str, reply: str, node_check) -> tuple[str, str]:
    """A node on which the results folder is not mounted: the same paths, under another root."""
    elsewhere = Path("/nonexistent-mount")
    return probe_node(str(elsewhere / probe.lstrip("/")), token, str(elsewhere / reply.lstrip("/")), node_check)
