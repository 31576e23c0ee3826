"""Ctrl-C that always stops a grid: inside `catching()`, SIGINT raises KeyboardInterrupt as usual and also sets a
flag that every host check of a training loop reads (`check`), so an interrupt that Python swallowed (one that
arrived inside a `__del__` or a callback, where exceptions are only printed) still stops the run at its next
check instead of letting it train on."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_requested = False


def _on_sigint(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def catching() -> Iterator[None]:
    """SIGINT sets the flag (and raises) within the block; the previous handler is restored after. Outside the
    main thread, where no handler can be installed, the block runs unchanged."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _requested = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested = False


def check() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived since `catching()` began (whether or not it was swallowed)."""
    if _requested:
        raise KeyboardInterrupt
