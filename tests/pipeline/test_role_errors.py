"""Roles started with something missing say what, in one line, and exit 2 (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.demo_assets import ensure_demo


def test_worker_with_missing_clip_weights_explains_how_to_provide_them(tmp_path: Path) -> None:
    station = ensure_demo(tmp_path)
    clip = station.with_name("clip.yaml")
    clip.write_text(station.read_text().replace("packaged:efficientnet-lite0", "open_clip:ViT-B-16/openai"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LINEWATCH_REDIS_URL": "redis://127.0.0.1:1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "worker", "--config", str(clip), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "open_clip:ViT-B-16/openai" in proc.stderr and "weights" in proc.stderr
    assert "Traceback" not in proc.stderr
