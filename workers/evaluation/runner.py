"""``linewatch eval``: few-shot, zero-shot or combined accuracy on an MVTec-AD-layout dataset, over draws."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from workers.backbones import load_backbone
from workers.calibration import PROBABILITY_CALIBRATION
from workers.errors import DatasetError, WorkerError
from workers.evaluation.dataset import (
    Category,
    draw_references,
    list_categories,
    load_category,
    read_mask,
)
from workers.evaluation.metrics import auroc, compute_metrics
from workers.evaluation.synthetic_anomalies import KINDS, SURFACE_MIX, synthesize
from workers.inspector import Inspector, inspection_shape
from workers.references import (
    DEFAULT_BANK_SIZE,
    DEFAULT_EXPOSURES,
    DEFAULT_SCALES,
    build_station_model,
    read_images,
)
from workers.station_model import StationModel

if TYPE_CHECKING:
    from workers.decoder.zero_shot import ZeroShotDecoder

logger = logging.getLogger(__name__)

METRICS = ("image_auroc", "pixel_auroc", "aupro", "f1_max", "accuracy")


@dataclass
class EvalSettings:
    backbone: str
    image_size: int
    augment: bool
    device: str
    self_reference: float = 0.0
    scales: tuple[float, ...] = DEFAULT_SCALES
    exposures: tuple[float, ...] = DEFAULT_EXPOSURES
    max_bank: int | tuple[int, ...] = DEFAULT_BANK_SIZE
    split: str = "test"
    seed: int = 0
    mode: str = "few-shot"
    decoder: Path | None = None
    synthetic: str = "basic"  # validation defects: "basic" (patch, blob, line) or "surface" (SURFACE_MIX)


def evaluate_draw(
    inspector: Inspector,
    cat: Category,
    refs: list[Path],
    cfg: EvalSettings,
    decoder: ZeroShotDecoder | None = None,
) -> dict[str, Any]:
    """All metrics for one category and one draw of references (none: zero-shot from text alone),
    and under ``"per_type"`` image and pixel AUROC of each defect type against the normal images."""
    if not refs:
        if decoder is None:
            raise DatasetError("k = 0 (no references) needs --mode zero-shot")
        model = StationModel("eval", None, PROBABILITY_CALIBRATION, cfg.image_size, 0.0, decoder)
    else:
        model = build_station_model(
            inspector,
            "eval",
            read_images(refs),
            cfg.image_size,
            min_area=0.0,
            augment=cfg.augment,
            scales=cfg.scales,
            exposures=cfg.exposures,
            max_bank=cfg.max_bank,
            decoder=decoder,
            bank=cfg.mode != "zero-shot",
        )
    inspector.add_station(model)
    model = inspector.stations["eval"]
    scores, labels, maps, masks, types = [], [], [], [], []
    samples = (
        test_samples(cat)
        if cfg.split == "test"
        else validation_samples(cat, refs, cfg.seed, mix=cfg.synthetic)
    )
    for image, label, mask, defect_type in tqdm(
        samples, desc=f"{cat.name} k={len(refs)}", leave=False, file=sys.stderr, mininterval=5
    ):
        shape = inspection_shape(image.shape[:2], cfg.image_size, inspector.backbone)
        m = inspector.full_maps(inspector.to_tensor([image], shape), model)[0, 0].cpu().numpy()
        scores.append(float(m.max()))
        labels.append(label)
        maps.append(m.astype(np.float32))
        masks.append(mask(shape))
        types.append(defect_type)
    metrics = compute_metrics(scores, labels, maps, masks, threshold=model.calibration.threshold)
    row: dict[str, Any] = {m: float(getattr(metrics, m)) for m in METRICS}
    row["per_type"] = per_type_metrics(scores, labels, maps, masks, types)
    return row


#: metrics reported per defect type (each type's images against all normal ones)
TYPE_METRICS = ("image_auroc", "pixel_auroc")


def per_type_metrics(
    scores: list[float],
    labels: list[int],
    maps: list[np.ndarray],
    masks: list[np.ndarray],
    types: list[str],
) -> dict[str, dict[str, float]]:
    """Per defect type: image AUROC of its images against the normal images, and pixel AUROC over
    the pixels of both. Shows which kind of defect a setup misses; the overall pixel AUROC is
    weighted by defect area, so large defects dominate it."""
    normal = [i for i, label in enumerate(labels) if label == 0]
    # every type is compared with the same normal pixels: sorted once, not once per type
    background = np.sort(np.concatenate([maps[i].ravel() for i in normal])) if normal else None
    out: dict[str, dict[str, float]] = {}
    for name in sorted({t for t, label in zip(types, labels, strict=True) if label == 1}):
        own = [i for i, t in enumerate(types) if t == name and labels[i] == 1]
        idx = normal + own
        truth = np.concatenate([masks[i].ravel() for i in own])
        pixels = np.concatenate([maps[i].ravel() for i in own])
        out[name] = {
            "image_auroc": auroc([scores[i] for i in idx], [labels[i] for i in idx]) if normal else math.nan,
            "pixel_auroc": auroc(pixels, truth, background) if truth.any() else math.nan,
            "images": float(len(own)),
        }
    return out


MaskFn = Callable[[tuple[int, int]], np.ndarray]
#: (image, label, mask at a given shape, defect type: "good" for normal images)
EvalSample = tuple[np.ndarray, int, MaskFn, str]


def test_samples(cat: Category) -> Iterator[EvalSample]:
    """The labelled test set, read lazily."""
    for sample in cat.test:
        image = read_images([sample.path])[0]
        path = sample.mask_path
        yield image, sample.label, (partial(read_mask, path) if path else _empty), sample.defect_type


#: normal images (and as many synthetic anomalies) in the validation split
VALIDATION_SIZE = 100


def validation_samples(
    cat: Category, refs: list[Path], seed: int, size: int = VALIDATION_SIZE, mix: str = "basic"
) -> list[EvalSample]:
    """A split without test labels: normal training images that are not references, and synthetic
    anomalies on further ones (patches of other normal images blended in, blobs, lines; with
    ``mix="surface"`` also uneven areas, broken edges and cracks, one kind each, evenly drawn)."""
    if mix not in ("basic", "surface"):
        raise DatasetError(f"unknown synthetic defect mix {mix!r}; known: basic, surface")
    rest = [p for p in cat.train_good if p not in set(refs)]
    size = min(size, len(rest) // 2)
    if size < 2:
        raise DatasetError(
            f"{cat.name}: the validation split needs at least 4 normal training images besides the "
            f"{len(refs)} references; train/good has {len(cat.train_good)}"
        )
    order = np.random.default_rng(1000 + seed).permutation(len(rest))
    normal = [rest[i] for i in order[:size]]
    bases = [rest[i] for i in order[size : 2 * size]]
    donors = read_images([rest[i] for i in order[2 * size : 2 * size + 20]] or refs or bases[:1])
    rng = np.random.default_rng(2000 + seed)
    out: list[EvalSample] = [(img, 0, _empty, "good") for img in read_images(normal)]
    base_images = read_images(bases)
    # one size unit for the whole split (the median shorter side): crops of one camera keep its scale
    unit = float(np.median([min(img.shape[:2]) for img in base_images]))
    for img in base_images:
        # drawn here as synthesize would draw it, so the split is the same as without the name
        kind = str(rng.choice(SURFACE_MIX if mix == "surface" else KINDS))
        bad, mask = synthesize(img, donors, rng, kind, unit=unit)
        out.append((bad, 1, partial(_resized_mask, mask), kind))
    return out


def _empty(shape: tuple[int, int]) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def _resized_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def evaluate(root: Path, categories: list[str], ks: list[int], seeds: int, cfg: EvalSettings) -> dict:
    """results[k][category][metric] = list over seeds, and results[k][category]["per_type"][defect
    type][metric] likewise for TYPE_METRICS."""
    backbone = load_backbone(cfg.backbone)
    inspector = Inspector(backbone, device=cfg.device, self_reference=cfg.self_reference)
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for name in categories:
        cat = load_category(root, name)
        decoder = category_decoder(inspector, name, cfg)
        for k in ks:
            per = results.setdefault(k, {}).setdefault(name, {m: [] for m in METRICS})
            for seed in range(seeds):
                t0 = time.perf_counter()
                cfg.seed = seed
                refs = draw_references(cat.train_good, k, seed) if k else []
                row = evaluate_draw(inspector, cat, refs, cfg, decoder)
                for m in METRICS:
                    per[m].append(row[m])
                by_type = per.setdefault("per_type", {})
                for defect_type, values in row["per_type"].items():
                    for m, v in values.items():
                        by_type.setdefault(defect_type, {}).setdefault(m, []).append(v)
                logger.info(
                    "%s k=%d seed=%d %s (%.0fs)",
                    name,
                    k,
                    seed,
                    " ".join(f"{m}={row[m]:.3f}" for m in METRICS),
                    time.perf_counter() - t0,
                )
    return results


def category_decoder(inspector: Inspector, name: str, cfg: EvalSettings) -> ZeroShotDecoder | None:
    """The zero-shot decoder for a category, its folder name as the product ("metal_nut" -> "metal nut")."""
    if cfg.mode == "few-shot":
        if cfg.decoder is not None:
            raise DatasetError("--decoder is used only with --mode zero-shot or both")
        return None
    from workers.decoder.builder import build_decoder
    from workers.decoder.prompts import PromptSet

    return build_decoder(inspector.backbone, PromptSet.for_product(name.replace("_", " ")), cfg.decoder)


def summarize(results: dict) -> dict:
    """k -> metric -> {mean, std} over seeds of the category-averaged metric, plus per_category."""
    out: dict[str, dict] = {}
    for k, cats in results.items():
        overall = {m: np.mean([cats[c][m] for c in cats], axis=0) for m in METRICS}
        entry: dict = {m: _mean_std(overall[m]) for m in METRICS}
        entry["per_category"] = {}
        for c in cats:
            entry["per_category"][c] = {m: _mean_std(cats[c][m]) for m in METRICS}
            entry["per_category"][c]["per_type"] = {
                t: {m: _mean_std(v) for m, v in metrics.items()}
                for t, metrics in cats[c].get("per_type", {}).items()
            }
        out[str(k)] = entry
    return out


def _mean_std(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.nanmean(a)), "std": float(np.nanstd(a))}


def markdown_table(summary: dict, seeds: int, mode: str = "few-shot", by_type: bool = False) -> str:
    header = "| category | k | image AUROC | pixel AUROC | AUPRO | F1-max | accuracy |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for k, entry in summary.items():
        rows = list(entry["per_category"].items())
        if len(rows) > 1:
            rows.append(("**mean**", {m: entry[m] for m in METRICS}))
        for cat, vals in rows:
            cells = " | ".join(f"{vals[m]['mean']:.3f} ± {vals[m]['std']:.3f}" for m in METRICS)
            lines.append(f"| {cat} | {k} | {cells} |")
    note = f"\nmode {mode}; mean ± std over {seeds} reference draw(s); accuracy at the calibrated threshold"
    if "0" in summary:
        note += " (k = 0: no references, threshold P(abnormal) = 0.5)"
    lines.append(note)
    if by_type:
        lines += ["", *type_table(summary)]
    return "\n".join(lines)


def type_table(summary: dict) -> list[str]:
    """Image and pixel AUROC per defect type (its images against every normal image)."""
    lines = [
        "| category | k | defect type | images | image AUROC | pixel AUROC |",
        "|---|---|---|---|---|---|",
    ]
    for k, entry in summary.items():
        for cat, vals in entry["per_category"].items():
            for t, m in vals.get("per_type", {}).items():
                cells = " | ".join(f"{m[name]['mean']:.3f} ± {m[name]['std']:.3f}" for name in TYPE_METRICS)
                lines.append(f"| {cat} | {k} | {t} | {m['images']['mean']:.0f} | {cells} |")
    return lines


def run_eval_command(args: argparse.Namespace) -> int:
    try:
        categories = args.category or list_categories(args.dataset)
        cfg = EvalSettings(
            backbone=args.backbone,
            image_size=args.image_size or _default_size(args.backbone),
            augment=not args.no_augment,
            device=args.device,
            self_reference=args.self_reference,
            scales=tuple(args.scales or DEFAULT_SCALES),
            exposures=tuple(DEFAULT_EXPOSURES if args.exposures is None else args.exposures),
            max_bank=args.max_bank[0] if len(args.max_bank) == 1 else tuple(args.max_bank),
            split=args.split,
            mode=args.mode,
            decoder=args.decoder,
            synthetic=args.synthetic,
        )
        ks = args.k or ([0] if args.mode == "zero-shot" else [1, 4])
        if 0 in ks and args.mode != "zero-shot":
            raise DatasetError(f"--k 0 (no references) works only with --mode zero-shot, not {args.mode}")
        torch.manual_seed(0)
        summary = summarize(evaluate(args.dataset, categories, ks, args.seeds, cfg))
    except WorkerError as e:
        print(f"linewatch eval: {e}", file=sys.stderr)
        return 2
    print(markdown_table(summary, args.seeds, args.mode, by_type=args.by_type))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


def _default_size(spec: str) -> int:
    from config.station import ModelSettings

    return ModelSettings(backbone=spec).image_size
