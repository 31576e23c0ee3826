"""Where tasks run. An executor maps `execute_task` over tasks (each a stack of one or more runs) and yields
each task's result rows as it completes; the runner decides what to run, executors decide where."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence

if TYPE_CHECKING:
    from bench.runner import RunTask


class Executor(Protocol):
    def map(self, fn: Callable[[RunTask], list[dict]], tasks: Sequence[RunTask]) -> Iterator[list[dict]]: ...
