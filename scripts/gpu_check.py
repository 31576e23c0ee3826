#!/usr/bin/env python3
"""`make gpu-check`: the GPU path proven on a CUDA machine (tests, the benchmark grid shortened, a report).

See docs/gpu.md; the logic is `bench.gpu_check.check`. Exit 2 without a CUDA device.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout works without `pip install -e .`

from bench.gpu_check.check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
