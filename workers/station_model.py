"""A station's few-shot model: memory bank + calibration + the settings they were built with."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from workers.calibration import Calibration
from workers.memory_bank import MemoryBank


@dataclass
class StationModel:
    station_id: str
    bank: MemoryBank
    calibration: Calibration
    image_size: int
    min_area: float

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> StationModel:
        return replace(self, bank=self.bank.to(device, dtype))
