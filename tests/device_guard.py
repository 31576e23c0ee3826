"""`no_implicit_device()`: fail wherever project code creates a tensor or a generator without naming its device.

On a GPU run, `torch.zeros(n)` or `torch.Generator()` inside the training or evaluation path lands on the CPU
while the run's tensors live on CUDA: the op that mixes them fails (or a CPU generator meets a CUDA tensor).
On a CPU-only machine the same line is silently right, because the default device is the run's device. The
guard makes it wrong here too: inside it, every factory function (`torch.zeros`, `randn`, `arange`, `tensor`,
...) called *from a file of the project* (`bench/`, `vae_core/`) without `device=`, and every
`torch.Generator()` made there without a device, is recorded with its call site and raises.

Why a TorchFunctionMode and not `torch.set_default_device("meta")`:
- the mode fails at the call site (file:line in the message); a meta tensor fails later, far away, at the
  first `.item()` or copy, or not at all: a 0-d meta tensor mixes silently with CPU tensors (scalar promotion)
  and `torch.Generator()` ignores the default device, so generators would go unchecked;
- the mode looks only at project code: torch's own internals (dynamo tracing, `torch.load`, module
  initialisation helpers) create host tensors legitimately and would break under a meta default;
- violations are also recorded, so one swallowed by a broad `except` (a damaged state file costs a restart,
  a failed compilation falls back to eager) still fails the test.
What it cannot see: a device named explicitly but wrongly (`device="cpu"` for a run tensor) and placements
decided inside compiled kernels; those need the CUDA run (`make gpu-check`).

Exempt by design: calls whose device comes from an argument tensor (`x.new_zeros`, `torch.zeros_like`,
`torch.as_tensor(tensor)`), calls under `with torch.device(...)` (the context supplies `device=`), and
`torch.from_numpy` (host data by definition, moved with `.to(device)` by the data path).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

REPO = Path(__file__).resolve().parents[1]
PROJECT_DIRS = tuple(str(REPO / name) + "/" for name in ("bench", "vae_core"))

FACTORIES = {
    torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint, torch.randperm,
    torch.arange, torch.linspace, torch.logspace, torch.tensor, torch.as_tensor, torch.asarray, torch.eye,
    torch.empty_strided, torch.scalar_tensor, torch.tril_indices, torch.triu_indices, torch.normal,
}


class ImplicitDeviceError(RuntimeError):
    """A tensor or generator created in project code without an explicit device."""


def _project_call_site(depth: int) -> str | None:
    """'file:line' of the frame `depth` levels up if it is project code, else None."""
    frame = sys._getframe(depth + 1)
    path = frame.f_code.co_filename
    return f"{Path(path).relative_to(REPO)}:{frame.f_lineno}" if path.startswith(PROJECT_DIRS) else None


class _Guard(TorchFunctionMode):
    def __init__(self, violations: list[str]):
        super().__init__()
        self.violations = violations

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None and not any(isinstance(a, torch.Tensor) for a in args):
            where = _project_call_site(1)
            if where is not None:
                message = (f"torch.{func.__name__} called without device= at {where}: on a CUDA run it makes a "
                           f"CPU tensor; pass device= or derive it (x.new_zeros, torch.zeros_like)")
                self.violations.append(message)
                raise ImplicitDeviceError(message)
        return func(*args, **kwargs)


@contextmanager
def no_implicit_device() -> Iterator[list[str]]:
    """Inside: implicit devices in project code raise `ImplicitDeviceError`; yields the list of violations."""
    violations: list[str] = []
    real = torch.Generator

    class CheckedGenerator(real):
        def __new__(cls, device=None):
            where = _project_call_site(1)
            if device is None and where is not None:
                message = (f"torch.Generator() without device= at {where}: a CPU generator cannot draw "
                           f"CUDA tensors; pass device=")
                violations.append(message)
                raise ImplicitDeviceError(message)
            return real.__new__(cls, device="cpu" if device is None else device)

    torch.Generator = CheckedGenerator
    try:
        with _Guard(violations):
            yield violations
    finally:
        torch.Generator = real
