"""The allocator setting for CPU inference: a freed big block stays with the process for reuse."""

import subprocess
import sys

import pytest

PROBE = """
import sys
import numpy as np
if sys.argv[1] == "tuned":
    from workers.memory_tuning import keep_freed_memory
    assert keep_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss_mb()
a = np.ones(256 << 20, np.uint8)  # 256 MB, touched: far above glibc's largest mmap threshold
del a
print(rss_mb() - before)
"""


def _kept_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_freed_big_blocks_stay_mapped_for_the_next_batch() -> None:
    # default: the block was mmapped and is unmapped on free, so the next batch faults it in again
    assert _kept_mb("default") < 32
    # tuned: it came from the heap and stays there, ready for the next allocation
    assert _kept_mb("tuned") > 200
