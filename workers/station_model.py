"""A station's model: few-shot memory bank and/or zero-shot decoder, calibration, and their settings."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from workers.calibration import Calibration
from workers.memory_bank import MemoryBank

if TYPE_CHECKING:  # the decoder pulls in open_clip; few-shot-only processes never need it
    from workers.decoder.zero_shot import ZeroShotDecoder


@dataclass
class StationModel:
    """``bank`` alone is few-shot, ``decoder`` alone zero-shot, both: the two maps added."""

    station_id: str
    bank: MemoryBank | None
    calibration: Calibration
    image_size: int
    min_area: float
    decoder: ZeroShotDecoder | None = None

    def __post_init__(self) -> None:
        if self.bank is None and self.decoder is None:
            raise ValueError(f"station {self.station_id}: a model needs a memory bank, a decoder or both")

    @property
    def mode(self) -> str:
        if self.bank is not None and self.decoder is not None:
            return "both"
        return "few-shot" if self.bank is not None else "zero-shot"

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> StationModel:
        return replace(
            self,
            bank=self.bank.to(device, dtype) if self.bank is not None else None,
            decoder=self.decoder.placed(device, dtype) if self.decoder is not None else None,
        )
