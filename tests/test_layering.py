"""Each process loads only what it needs (DESIGN.md §3): capture hosts, the recorder and the
dashboard run without a GPU stack, so none of them may import torch."""

import subprocess
import sys

import pytest

from tests.faults.harness import REPO


@pytest.mark.parametrize(
    "module",
    ["pipeline.capture_role", "pipeline.recorder", "pipeline.status", "dashboards.app", "config.loader"],
)
def test_roles_without_a_model_never_import_torch(module: str) -> None:
    code = (
        f"import sys, {module}; sys.exit(3 if 'torch' in sys.modules or 'torchvision' in sys.modules else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr or f"importing {module} loaded torch"
