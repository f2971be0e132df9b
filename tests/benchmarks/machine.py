"""The machine a benchmark ran on, for the tables in docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """CPU model and core count (and the torch version when it is loaded), e.g. for a JSON report."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    out = f"{model}, {os.cpu_count()} cores"
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        out += f", torch {torch.__version__}"
    return out
