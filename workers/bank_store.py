"""Persisting station models in the data dir (safetensors), keyed so that changed inputs rebuild them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file

from workers.calibration import Calibration
from workers.memory_bank import MemoryBank
from workers.station_model import StationModel

if TYPE_CHECKING:
    from workers.decoder.zero_shot import ZeroShotDecoder

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def bank_key(station_id: str, settings: dict, reference_files: list[Path]) -> str:
    """A digest of everything the bank depends on: station, model settings and reference contents."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": FORMAT_VERSION, "station": station_id, **settings}, sort_keys=True).encode())
    for path in sorted(reference_files):
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def bank_path(data_dir: Path, station_id: str, key: str) -> Path:
    return data_dir / "banks" / station_id / f"{key}.safetensors"


def save(model: StationModel, path: Path, key: str, settings: dict) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written bank."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # zero-shot stations with references store only their calibration (no level tensors); the
    # decoder is rebuilt from its checkpoint and prompts at every start, which is cheap
    levels = model.bank.levels if model.bank is not None else []
    tensors = {f"level{i}": lv.float().cpu().contiguous() for i, lv in enumerate(levels)}
    meta = {
        "format_version": str(FORMAT_VERSION),
        "key": key,
        "station_id": model.station_id,
        "image_size": str(model.image_size),
        "min_area": repr(model.min_area),
        "settings": json.dumps(settings, sort_keys=True),
        "calibration": json.dumps(model.calibration.as_dict()),
    }
    # a temp name of this process's own: workers sharing a data dir may build the same bank at once
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load(path: Path, decoder: ZeroShotDecoder | None = None) -> StationModel:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    levels = [tensors[f"level{i}"] for i in range(len(tensors))]
    return StationModel(
        station_id=meta["station_id"],
        bank=MemoryBank(levels) if levels else None,
        calibration=Calibration.from_dict(json.loads(meta["calibration"])),
        image_size=int(meta["image_size"]),
        min_area=float(meta["min_area"]),
        decoder=decoder,
    )


def load_or_build(
    data_dir: Path,
    station_id: str,
    settings: dict,
    reference_files: list[Path],
    build: Callable[[], StationModel],
    decoder: ZeroShotDecoder | None = None,
) -> StationModel:
    """The saved model when its key still matches; otherwise build, save, and remove stale files.

    ``decoder`` is attached to a loaded model; ``settings`` must then identify it (checkpoint and
    prompts), since the saved calibration was computed with it.
    """
    key = bank_key(station_id, settings, reference_files)
    path = bank_path(data_dir, station_id, key)
    if path.is_file():
        try:
            return load(path, decoder)
        except Exception as e:  # a corrupt file is rebuilt, not fatal
            logger.warning("station %s: bank %s unreadable (%s); rebuilding", station_id, path, e)
    model = build()
    save(model, path, key, settings)
    for stale in path.parent.glob("*.safetensors"):
        if stale != path:
            stale.unlink(missing_ok=True)
    logger.info("station %s: bank saved to %s", station_id, path)
    return model
