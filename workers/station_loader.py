"""Station models for a worker: one Inspector per backbone, each station's bank loaded or built once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from config.station import StationConfig
from pipeline.capture import CaptureOptions, encode_jpeg
from workers import bank_store
from workers.backbones import load_backbone
from workers.errors import WorkerError
from workers.frames import decode_frame
from workers.inspector import Inspector
from workers.references import (
    DEFAULT_BANK_SIZE,
    DEFAULT_SCALES,
    build_station_model,
    list_reference_files,
    read_images,
)

logger = logging.getLogger(__name__)


def bank_settings(station: StationConfig) -> dict:
    """Everything a station's bank depends on besides its reference images (part of the cache key)."""
    return {
        "backbone": station.model.backbone,
        "image_size": station.model.image_size,
        "k": station.references.k,
        "augment": station.references.augment,
        "scales": list(DEFAULT_SCALES),
        "max_bank": DEFAULT_BANK_SIZE,
        "min_area": station.regions.min_area,
        # how references are prepared and the threshold derived: a change rebuilds cached banks
        "preparation": "full-size-jpeg",
        "calibration": "loo+synthetic-defects",
    }


def reference_files(station: StationConfig) -> list[Path]:
    """The first k reference images of the folder, by name (deterministic across workers)."""
    return list_reference_files(station.references.folder)[: station.references.k]


def as_captured(image: np.ndarray, image_size: int) -> np.ndarray:
    """A reference as the workers will see frames: JPEG-encoded like capture does, decoded like the
    worker does (reduced for the inspection size)."""
    jpeg = encode_jpeg(image, CaptureOptions().jpeg_quality)
    decoded = decode_frame(jpeg, image.shape[1], image.shape[0], image_size)
    if decoded is None:  # an image we just encoded always decodes; fail loudly if not
        raise ValueError("reference could not be round-tripped through JPEG")
    return decoded


def load_inspectors(stations: list[StationConfig], data_dir: Path, device: str) -> dict[str, Inspector]:
    """station id -> Inspector holding its model; stations sharing a backbone share one Inspector."""
    by_backbone: dict[str, Inspector] = {}
    out: dict[str, Inspector] = {}
    for station in stations:
        if station.model.mode != "few-shot":
            # refuse rather than silently run few-shot: the text decoder is not built yet
            raise WorkerError(
                f"station {station.id}: model.mode {station.model.mode!r} needs the zero-shot decoder, "
                "which this version does not have yet; use mode: few-shot"
            )
        spec = station.model.backbone
        if spec not in by_backbone:
            by_backbone[spec] = Inspector(load_backbone(spec), device=device)
        insp = by_backbone[spec]
        files = reference_files(station)

        def build(station: StationConfig = station, insp: Inspector = insp, files: list[Path] = files):
            return build_station_model(
                insp,
                station.id,
                [as_captured(img, station.model.image_size) for img in read_images(files)],
                station.model.image_size,
                station.regions.min_area,
                augment=station.references.augment,
            )

        model = bank_store.load_or_build(data_dir, station.id, bank_settings(station), files, build)
        insp.add_station(model)
        out[station.id] = insp
        logger.info("station %s ready on %s (%s)", station.id, insp.device, spec)
    return out
