"""`linewatch run` starts the explainer only for stations that enable one; `linewatch explain` errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from config.loader import load_station
from config.service import load_settings
from pipeline.demo_assets import ensure_demo
from pipeline.launcher import children


def _with_explainer(station_file: Path, section: str) -> Path:
    path = station_file.with_name("explained.yaml")
    path.write_text(station_file.read_text() + "explainer:\n" + section)
    return path


def test_run_starts_explain_only_when_a_station_enables_it(tmp_path: Path) -> None:
    demo = ensure_demo(tmp_path)
    settings = load_settings(data_dir=tmp_path, device="cpu")
    plain = children(["--config", str(demo)], settings, "127.0.0.1", 8080, [load_station(demo)])
    assert "explain" not in [c.name for c in plain]

    explained = _with_explainer(demo, "  backend: openai\n  model: m\n  base_url: http://127.0.0.1:9/v1\n")
    kids = children(["--config", str(explained)], settings, "127.0.0.1", 8080, [load_station(explained)])
    explain = next(c for c in kids if c.name == "explain")
    assert explain.argv[:4] == [sys.executable, "-m", "pipeline.cli", "explain"]


def _explain(config: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LINEWATCH_REDIS_URL": "redis://127.0.0.1:1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "explain",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_explain_without_any_explainer_says_so(tmp_path: Path) -> None:
    proc = _explain(ensure_demo(tmp_path), tmp_path)
    assert proc.returncode == 2 and "no station enables an explainer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_explain_with_missing_model_weights_names_the_model(tmp_path: Path) -> None:
    station = _with_explainer(
        ensure_demo(tmp_path), "  backend: transformers\n  model: Qwen/Qwen2.5-VL-3B-Instruct\n"
    )
    proc = _explain(station, tmp_path)
    assert proc.returncode == 2
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in proc.stderr and "hf download" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_starts_one_single_threaded_worker_per_core_without_a_gpu(tmp_path: Path) -> None:
    demo = ensure_demo(tmp_path)
    station = load_station(demo)
    settings = load_settings(data_dir=tmp_path, device="cpu", cpu_workers=3, metrics_port=9100)
    workers = [
        c for c in children(["--config", str(demo)], settings, "h", 1, [station]) if "worker" in c.name
    ]
    assert [c.name for c in workers] == ["worker-cpu-0", "worker-cpu-1", "worker-cpu-2"]
    for i, c in enumerate(workers):
        assert c.argv[c.argv.index("--threads") + 1] == "1"
        assert c.argv[c.argv.index("--metrics-port") + 1] == str(9104 + i)  # no two on one port
    default = load_settings(data_dir=tmp_path, device="cpu")
    count = len([c for c in children([], default, "h", 1, [station]) if "worker" in c.name])
    assert count == (os.cpu_count() or 1)
