"""Where tasks run. An executor maps a picklable function over tasks (each a stack of one or more runs) and
yields each task's result as it completes; the runner decides what to run, executors decide where. Executors
know nothing of what a task is (no import of the runner)."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence


class Executor(Protocol):
    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Any]: ...
