"""Station models for a worker: one Inspector per backbone, each station's bank loaded or built once."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from config.station import StationConfig
from pipeline.capture import CaptureOptions, encode_jpeg
from pipeline.originals import downsize
from workers import bank_store
from workers.backbones import load_backbone
from workers.calibration import PROBABILITY_CALIBRATION
from workers.decoder.prompts import PromptSet
from workers.errors import WorkerError
from workers.frames import decode_frame
from workers.inspector import Inspector
from workers.references import (
    DEFAULT_BANK_SIZE,
    DEFAULT_EXPOSURES,
    DEFAULT_SCALES,
    build_station_model,
    list_reference_files,
    read_images,
)
from workers.station_model import StationModel
from workers.weights import weights_location

if TYPE_CHECKING:
    from workers.decoder.zero_shot import ZeroShotDecoder

logger = logging.getLogger(__name__)


def bank_settings(station: StationConfig, decoder_id: dict | None = None) -> dict:
    """Everything a station's bank depends on besides its reference images (part of the cache key).

    ``decoder_id`` (modes zero-shot/both) names the checkpoint and prompts: the saved calibration
    was computed with them. Few-shot keys stay as they were, so existing banks remain valid.
    """
    assert station.references is not None  # callers only ask for stations with references
    settings = {
        "backbone": station.model.backbone,
        "weights": weights_identity(station.model.backbone),
        "image_size": station.model.image_size,
        "k": station.references.k,
        "augment": station.references.augment,
        "scales": list(DEFAULT_SCALES),
        "exposures": list(DEFAULT_EXPOSURES) if station.references.augment else [],
        "max_bank": DEFAULT_BANK_SIZE,
        "fine_levels": "half-bank",  # stride-8 levels: half the coreset (references.bank_sizes)
        "min_area": station.regions.min_area,
        # how references are prepared and the threshold derived: a change rebuilds cached banks
        "preparation": "inspection-size-jpeg",
        "calibration": "loo+synthetic-defects/typical-top/one-reference-halves",
    }
    if station.model.mode != "few-shot":
        settings.update({"mode": station.model.mode, "decoder": decoder_id})
    return settings


def weights_identity(spec: str) -> str:
    """The weight file a backbone spec resolves to, with its size and modification time: a file
    replaced at the same path (``open_clip:MODEL/local.bin``, ``hf:local/dir``) must rebuild the
    banks computed with the old weights, and hashing a GB-sized file at every start would cost
    seconds. (A copy of the same size that keeps the old file's time is not noticed.)"""
    path = weights_location(spec)
    found = os.stat(path)
    return f"{Path(path).name}:{found.st_size}:{found.st_mtime_ns}"


def station_prompts(station: StationConfig) -> PromptSet:
    product = station.product
    return PromptSet.for_product(product.name, product.normal_states, product.abnormal_states)


def decoder_identity(station: StationConfig) -> dict:
    """What the decoder's maps depend on: checkpoint contents and prompts."""
    checkpoint = station.model.decoder
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16] if checkpoint else "clip-projection"
    return {"checkpoint": digest, "prompts": station_prompts(station).to_json()}


def reference_files(station: StationConfig) -> list[Path]:
    """The first k reference images of the folder, by name (deterministic across workers)."""
    assert station.references is not None
    return list_reference_files(station.references.folder)[: station.references.k]


def as_captured(image: np.ndarray, image_size: int) -> np.ndarray:
    """A reference as the workers will see frames: area-resized to the inspection size and
    JPEG-encoded like capture does, decoded like the worker does. (Encoded at full size, as
    before capture sent frames at the inspection size, a reference carried other compression
    than the frames; on Magnetic-Tile through the live path, k = 4: image AUROC 0.812 -> 0.821.)"""
    small = downsize(image, image_size)
    jpeg = encode_jpeg(small, CaptureOptions().jpeg_quality)
    decoded = decode_frame(jpeg, small.shape[1], small.shape[0], image_size)
    if decoded is None:  # an image we just encoded always decodes; fail loudly if not
        raise ValueError("reference could not be round-tripped through JPEG")
    return decoded


def load_inspectors(stations: list[StationConfig], data_dir: Path, device: str) -> dict[str, Inspector]:
    """station id -> Inspector holding its model; stations sharing a backbone share one Inspector."""
    by_backbone: dict[str, Inspector] = {}
    texts: dict[str, Any] = {}  # backbone spec -> TextFeatureCache
    out: dict[str, Inspector] = {}
    for station in stations:
        spec = station.model.backbone
        if spec not in by_backbone:
            by_backbone[spec] = Inspector(load_backbone(spec), device=device)
        insp = by_backbone[spec]
        decoder = None
        if station.model.mode != "few-shot":
            # imported here: few-shot-only workers never load the text side
            from workers.decoder.builder import build_decoder
            from workers.decoder.text_features import TextFeatureCache

            texts.setdefault(spec, TextFeatureCache())
            decoder = build_decoder(
                insp.backbone, station_prompts(station), station.model.decoder, texts[spec]
            )
        insp.add_station(station_model(station, insp, decoder, data_dir))
        out[station.id] = insp
        logger.info("station %s ready on %s (%s, %s)", station.id, insp.device, spec, station.model.mode)
    return out


def station_model(
    station: StationConfig, insp: Inspector, decoder: ZeroShotDecoder | None, data_dir: Path
) -> StationModel:
    """The station's model: from the bank cache when references exist, else zero-shot by text alone."""
    settings = station.model
    if station.references is None:  # only mode zero-shot validates without references
        if decoder is None:
            raise WorkerError(f"station {station.id}: mode {settings.mode!r} needs references")
        logger.info("station %s: no references; flagging where P(abnormal) >= 0.5", station.id)
        return StationModel(
            station.id, None, PROBABILITY_CALIBRATION, settings.image_size, station.regions.min_area, decoder
        )
    refs = station.references
    files = reference_files(station)

    def build() -> StationModel:
        return build_station_model(
            insp,
            station.id,
            [as_captured(img, settings.image_size) for img in read_images(files)],
            settings.image_size,
            station.regions.min_area,
            augment=refs.augment,
            decoder=decoder,
            bank=settings.mode != "zero-shot",
        )

    key = bank_settings(station, decoder_identity(station) if decoder is not None else None)
    return bank_store.load_or_build(data_dir, station.id, key, files, build, decoder)
