"""Building a station model from normal reference images: views, memory bank, leave-one-out calibration."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from workers.backbones.base import Backbone
from workers.calibration import Calibration, calibrate, suspect_references, suspect_warning
from workers.errors import ReferenceImagesError
from workers.evaluation.synthetic_anomalies import synthesize
from workers.inspector import Inspector, inspection_shape
from workers.localization import image_scores
from workers.memory_bank import MemoryBank, greedy_coreset
from workers.station_model import StationModel

if TYPE_CHECKING:
    from workers.decoder.zero_shot import ZeroShotDecoder

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
#: at most this many references are held out in turn for calibration (each costs one bank build)
MAX_HELD_OUT = 8
#: synthetic defects drawn on each held-out reference: what a defect scores against this bank
CALIBRATION_DEFECTS = ("blob", "line", "patch")


def list_reference_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ReferenceImagesError(f"reference folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ReferenceImagesError(
            f"reference folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def read_images(paths: Sequence[Path]) -> list[np.ndarray]:
    images = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ReferenceImagesError(f"reference image {p} cannot be read as an image")
        images.append(img)
    return images


#: coreset size per level (half at fine levels, ``bank_sizes``): on Magnetic-Tile (k = 4) 1,024
#: scored as well as 4,096 (image AUROC 0.813 vs 0.811) and the search then costs a fraction of
#: the CPU backbone (docs/benchmarks.md)
DEFAULT_BANK_SIZE = 1024
#: levels at this stride or finer get half the coreset: a CNN's stride-8 level has 4x the patches
#: per frame of its stride-16 one (and a third of its channels), so its search is the largest part
#: of the Inspector's cost beyond the backbone; on Magnetic-Tile's validation splits 512 scored as
#: 1,024 did at k = 4 and 16 (docs/benchmarks.md)
FINE_STRIDE = 8


def bank_sizes(backbone: Backbone, size: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """Coreset size per level: ``size`` for each (half of it at levels of stride ``FINE_STRIDE`` or
    finer), or the given per-level sizes; None keeps every patch."""
    if size is None:
        return None
    if isinstance(size, Sequence):
        if len(size) != len(backbone.levels):
            raise ValueError(f"{len(size)} bank sizes for {len(backbone.levels)} levels of {backbone.spec}")
        return tuple(size)
    strides = backbone.level_strides or (0,) * len(backbone.levels)
    return tuple(size // 2 if 0 < s <= FINE_STRIDE else size for s in strides)


#: reference views at these scales cover parts seen a little nearer or farther than the references
DEFAULT_SCALES = (0.75, 1.0, 1.33)
#: exposure-bracketed views (intensity gains) of the camera-scale views cover a part lit a little
#: darker or brighter than the references; on Magnetic-Tile (k = 4) they raised the validation
#: split's image AUROC and the test set's (docs/benchmarks.md)
DEFAULT_EXPOSURES = (0.5, 2.0)

Patches = list[torch.Tensor]  # per level, (N, C) L2-normalised patch descriptors


def views(image: np.ndarray, augment: bool) -> list[np.ndarray]:
    """The image and, with ``augment``, its mirror images (horizontal, vertical, both)."""
    if not augment:
        return [image]
    return [image, image[:, ::-1].copy(), image[::-1].copy(), image[::-1, ::-1].copy()]


def exposed(image: np.ndarray, gain: float) -> np.ndarray:
    """The image as a camera would see it with ``gain`` times the exposure (saturating at 255)."""
    return cv2.convertScaleAbs(image, alpha=gain)


def build_station_model(
    inspector: Inspector,
    station_id: str,
    references: Sequence[np.ndarray],
    image_size: int,
    min_area: float,
    augment: bool = True,
    scales: Sequence[float] = DEFAULT_SCALES,
    max_bank: int | Sequence[int] | None = DEFAULT_BANK_SIZE,
    decoder: ZeroShotDecoder | None = None,
    bank: bool = True,
    exposures: Sequence[float] = DEFAULT_EXPOSURES,
) -> StationModel:
    """Bank of all reference views, threshold from scoring each reference against the others.

    With a ``decoder`` the map also holds the zero-shot part (mode both); with ``bank=False``
    there is no bank (mode zero-shot) and the references only calibrate the threshold.
    """
    if not references:
        raise ReferenceImagesError(f"station {station_id}: no reference images")
    if not bank:
        if decoder is None:
            raise ValueError("a station model without a bank needs a decoder")
        return _zero_shot_model(inspector, station_id, references, image_size, min_area, decoder)
    if 1.0 not in scales:
        raise ValueError(f"reference scales must include 1.0, got {tuple(scales)}")
    _refuse_duplicates(station_id, references)
    if any(g <= 0 for g in exposures):
        raise ValueError(f"exposure gains must be positive, got {tuple(exposures)}")
    exposures = exposures if augment else ()
    per_ref = [_embed_views(inspector, ref, image_size, augment, scales, exposures) for ref in references]
    owners = [i for i, ref in enumerate(per_ref) for _ in ref]
    sizes = bank_sizes(inspector.backbone, max_bank)
    memory, bank_owners = _bank([v for ref in per_ref for v in ref], owners, sizes)
    if len(references) > 1:  # leave-one-out over references
        held_out = list(range(min(len(references), MAX_HELD_OUT)))
        calibration = _calibrate(inspector, references, memory, bank_owners, held_out, image_size, decoder)
    else:
        calibration = _calibrate_one(
            inspector, references[0], image_size, augment, scales, exposures, sizes, decoder
        )
    suspects = suspect_references(calibration)
    if suspects:
        logger.warning("%s", suspect_warning(station_id, suspects))
    logger.info(
        "station %s: bank %s patches from %d references%s, threshold %.4f",
        station_id,
        memory.sizes,
        len(references),
        " plus zero-shot decoder" if decoder is not None else "",
        calibration.threshold,
    )
    return StationModel(station_id, memory, calibration, image_size, min_area, decoder)


#: a one-reference station's reference must be at least this many pixels on its shorter side:
#: halves of 1 px leave no room for the synthetic defects calibration draws on them
MIN_HALVES_SIDE = 4


def halves(image: np.ndarray) -> list[np.ndarray]:
    """The image cut in two across its shorter side, so each half keeps the longer side and is
    inspected at the image's own scale (``inspection_shape`` scales the longer side)."""
    h, w = image.shape[:2]
    if min(h, w) < MIN_HALVES_SIDE:
        raise ReferenceImagesError(
            f"a one-reference station cuts its reference in two to calibrate, and this one is {w}x{h} "
            f"px; give a reference of at least {MIN_HALVES_SIDE} px on each side (better: a full view of a "
            "good part)"
        )
    if h >= w:
        return [image[:, : w // 2].copy(), image[:, w // 2 :].copy()]
    return [image[: h // 2].copy(), image[h // 2 :].copy()]


def _calibrate_one(
    inspector: Inspector,
    reference: np.ndarray,
    image_size: int,
    augment: bool,
    scales: Sequence[float],
    exposures: Sequence[float],
    sizes: Sequence[int] | None,
    decoder: ZeroShotDecoder | None = None,
) -> Calibration:
    """The threshold of a one-reference station: each half of the reference, plain and with
    synthetic defects, scored against a bank of the other half's views.

    Other parts show the same surface at other places, which a half sees in the other half; the
    reference's own mirrored and rescaled views match it almost patch for patch. Held out against
    those, the reference scored 0.08-0.11 on Magnetic-Tile while normal test images scored 0.29-0.31
    at the median, and the station flagged nearly every frame (docs/benchmarks.md). The normal
    score kept is the higher half's, one score for the one reference.
    """
    parts = halves(reference)
    per_half = [_embed_views(inspector, p, image_size, augment, scales, exposures) for p in parts]
    memory, owners = _bank(
        [v for half in per_half for v in half], [i for i, half in enumerate(per_half) for _ in half], sizes
    )
    calibration = _calibrate(inspector, parts, memory, owners, [0, 1], image_size, decoder)
    return replace(calibration, normal_scores=(max(calibration.normal_scores),))


def _zero_shot_model(
    inspector: Inspector,
    station_id: str,
    references: Sequence[np.ndarray],
    image_size: int,
    min_area: float,
    decoder: ZeroShotDecoder,
) -> StationModel:
    """Zero-shot with references: nothing of them is in the model, so each is scored as it is, like
    a normal frame, and the threshold follows from those scores as in few-shot."""
    model = StationModel(station_id, None, _PLACEHOLDER, image_size, min_area, decoder)
    placed = inspector.place(model)
    scores, medians = [], []
    for image in references:
        shape = inspection_shape(image.shape[:2], image_size, inspector.backbone)
        maps = inspector.raw_maps(inspector.to_tensor([image], shape), placed)
        scores.append(float(image_scores(maps)[0]))
        medians.append(float(maps.median()))
    calibration = calibrate(np.array(scores), float(np.median(medians)))
    logger.info(
        "station %s: zero-shot, threshold %.4f from %d references",
        station_id,
        calibration.threshold,
        len(scores),
    )
    return StationModel(station_id, None, calibration, image_size, min_area, decoder)


def _embed_views(
    inspector: Inspector,
    image: np.ndarray,
    image_size: int,
    augment: bool,
    scales: Sequence[float],
    exposures: Sequence[float] = (),
) -> list[Patches]:
    """Patches of every view (mirror x scale, and mirror x exposure at the camera's scale); the
    first view is the image as the camera saw it."""
    out = []
    with torch.inference_mode():
        for scale in sorted(scales, key=lambda s: s != 1.0):
            size = max(inspector.backbone.size_multiple, round(image_size * scale))
            mirrors = views(image, augment)
            if scale == 1.0:
                mirrors += [exposed(v, g) for g in exposures for v in mirrors]
            for v in mirrors:  # views differ in shape, so one at a time
                shape = inspection_shape(v.shape[:2], size, inspector.backbone)
                feats = inspector.embedder(inspector.to_tensor([v], shape))
                out.append([f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in feats])
    return out


def _bank(
    view_patches: list[Patches], owners: list[int], sizes: Sequence[int] | None
) -> tuple[MemoryBank, list[torch.Tensor]]:
    """The (coreset-reduced) bank and, per level, which owner each kept patch came from."""
    levels, level_owners = [], []
    for lv in range(len(view_patches[0])):
        patches = torch.cat([v[lv] for v in view_patches])
        own = torch.cat([torch.full((v[lv].shape[0],), o) for v, o in zip(view_patches, owners, strict=True)])
        if sizes is not None and patches.shape[0] > sizes[lv]:
            keep = greedy_coreset(patches, sizes[lv])  # on the patches' device (a GPU's)
            patches, own = patches[keep], own[keep.to(own.device)]
        levels.append(patches)
        level_owners.append(own)
    return MemoryBank.from_patches(levels), level_owners


def _calibrate(
    inspector: Inspector,
    references: Sequence[np.ndarray],
    bank: MemoryBank,
    owners: list[torch.Tensor],
    held_out: list[int],
    image_size: int,
    decoder: ZeroShotDecoder | None = None,
) -> Calibration:
    """Score held-out references, plain and with synthetic defects, against the bank without
    their own patches.

    The held-out banks are the final (coreset-reduced) bank minus the held-out patches, so the
    scores see the same compression that frames will see, at the cost of one coreset build.
    """
    scores, medians, anomalies = [], [], []
    rng = np.random.default_rng(0)  # the same references always give the same threshold
    for i in held_out:
        image = references[i]
        held_bank = MemoryBank([_without(lv, own, i) for lv, own in zip(bank.levels, owners, strict=True)])
        tmp = inspector.place(StationModel("calibration", held_bank, _PLACEHOLDER, image_size, 0.0, decoder))
        donors = [r for j, r in enumerate(references) if j != i]
        # the held-out reference itself (normal) and the same image with synthetic defects drawn on
        views = [image] + [synthesize(image, donors, rng, kind)[0] for kind in CALIBRATION_DEFECTS]
        for n, view in enumerate(views):
            shape = inspection_shape(view.shape[:2], image_size, inspector.backbone)
            maps = inspector.raw_maps(inspector.to_tensor([view], shape), tmp)
            if n == 0:
                scores.append(float(image_scores(maps)[0]))
                medians.append(float(maps.median()))
            else:
                anomalies.append(float(image_scores(maps)[0]))
    return calibrate(np.array(scores), float(np.median(medians)), anomaly_scores=np.array(anomalies))


def _without(level: torch.Tensor, owners: torch.Tensor, i: int) -> torch.Tensor:
    """A bank level without reference ``i``'s patches. When the coreset kept only ``i``'s (its
    patches tie with the others', as in a uniform surface cut in halves, and ties go to the first
    owner), the others duplicate what was kept, so the whole level is what they would match."""
    rest = level[owners.to(level.device) != i]
    return rest if rest.shape[0] else level


def _refuse_duplicates(station_id: str, references: Sequence[np.ndarray]) -> None:
    """The same image twice among the references is a mistake (a copied file): held out against
    its twin it scores as nothing else can, and it teaches the bank nothing new."""
    seen: dict[bytes, int] = {}
    for i, image in enumerate(references):
        digest = hashlib.sha256(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).digest()
        if digest in seen:
            raise ReferenceImagesError(
                f"station {station_id}: references {seen[digest] + 1} and {i + 1} (in file-name order) "
                "are the same image; give different good parts"
            )
        seen[digest] = i


# raw_maps needs a StationModel; its calibration is not used there
_PLACEHOLDER = Calibration(threshold=1.0, normal_level=0.0, normal_scores=())
