"""Command-line options of ``linewatch eval`` (kept apart so the CLI can list them without torch)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 0, got {text!r}")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e
    if 1.0 not in values or any(not 0.2 <= v <= 4 for v in values):
        raise argparse.ArgumentTypeError(f"scales must lie in 0.2..4 and include 1, got {text!r}")
    return values


def _gain_list(text: str) -> list[float]:
    if text.strip().lower() == "none":
        return []
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated gains or 'none', got {text!r}") from e
    if not values or any(not 0.1 <= v <= 10 for v in values):
        raise argparse.ArgumentTypeError(f"exposure gains must lie in 0.1..10, got {text!r}")
    return values


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, required=True, help="MVTec-AD layout root")
    parser.add_argument("--category", action="append", help="category to evaluate (repeatable)")
    parser.add_argument("--backbone", default="packaged:efficientnet-lite0", help="backbone spec")
    parser.add_argument(
        "--k",
        type=_int_list,
        default=None,
        help="reference counts, e.g. 1,4,16 (default 1,4; zero-shot: 0 = no references, the default)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="reference draws per k")
    parser.add_argument("--image-size", type=int, default=None, help="inspection size (longer side)")
    parser.add_argument("--no-augment", action="store_true", help="no mirrored reference views")
    parser.add_argument("--scales", type=_float_list, default=None, help="reference scales, e.g. 0.75,1,1.33")
    parser.add_argument(
        "--exposures",
        type=_gain_list,
        default=None,
        help="exposure gains of extra reference views, e.g. 0.5,2 (default), or none",
    )
    parser.add_argument(
        "--max-bank",
        type=_int_list,
        default=[1024],
        help="coreset size per level: one for every level, or one per level (e.g. 512,1024,1024)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--self-reference",
        type=float,
        default=0.0,
        help="also match patches of the frame itself beyond this radius (fraction of the side; 0 = off)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="test: the labelled test set; validation: held-out normal training images and synthetic "
        "anomalies on others (no test labels: use it to choose settings)",
    )
    parser.add_argument(
        "--mode",
        choices=("few-shot", "zero-shot", "both"),
        default="few-shot",
        help="few-shot memory bank, zero-shot text decoder (open_clip backbones), or both maps added",
    )
    parser.add_argument(
        "--decoder", type=Path, default=None, help="decoder checkpoint from train-decoder (zero-shot/both)"
    )
    parser.add_argument(
        "--synthetic",
        choices=("basic", "surface"),
        default="basic",
        help="validation split's defects: basic (patch, blob, line) or surface (those and uneven "
        "areas, broken edges, cracks)",
    )
    parser.add_argument(
        "--by-type",
        action="store_true",
        help="also print image and pixel AUROC per defect type (always in --json)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write k -> metric -> {mean, std}")
