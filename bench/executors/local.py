"""The default executor: tasks one after another in this process (live progress), or in worker processes."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Sequence


class LocalExecutor:
    """In this process (jobs = 1: `fn(task, on_progress(task))`, live progress) or in `jobs` worker processes
    (`fn(task)`)."""

    def __init__(self, jobs: int = 1, on_progress: Callable[[Any], Any] | None = None):
        self.jobs, self.on_progress = jobs, on_progress

    def map(self, fn: Callable[..., Any], tasks: Sequence[Any]) -> Iterator[Any]:
        if self.jobs == 1:
            for task in tasks:
                yield fn(task, self.on_progress(task) if self.on_progress else None)
            return
        with ProcessPoolExecutor(self.jobs) as pool:
            futures = [pool.submit(fn, task) for task in tasks]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except KeyboardInterrupt:
                for f in futures:
                    f.cancel()
                raise
