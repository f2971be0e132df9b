"""``linewatch demo``: the offline demo — generated parts, the packaged backbone, a scored run."""

from __future__ import annotations

import argparse
import json
import sys
import time

from config.errors import ConfigError
from config.service import load_settings
from workers.evaluation.runner import EvalSettings, evaluate, markdown_table, summarize
from workers.evaluation.synthetic import write_dataset


def run_demo_command(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    except ConfigError as e:
        print(f"linewatch demo: {e}", file=sys.stderr)
        return 2
    root = settings.data_dir / "demo-dataset"
    if not (root / "train" / "good").is_dir():
        write_dataset(root)
        print(f"generated demo dataset in {root}")
    cfg = EvalSettings(
        backbone="packaged:efficientnet-lite0", image_size=128, augment=True, device=settings.device
    )
    t0 = time.perf_counter()
    summary = summarize(evaluate(root, ["demo-dataset"], [1, 4], 2, cfg))
    print(markdown_table(summary, 2))
    out = settings.data_dir / "demo-eval.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nfinished in {time.perf_counter() - t0:.0f}s; results in {out}")
    print("For the live pipeline and dashboard on the demo station: linewatch run")
    return 0
