"""The Inspector: owns backbone, device and dtype; turns batches of BGR frames into inspection results."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from workers.backbones.base import Backbone
from workers.device_frames import decode_jpegs
from workers.localization import fuse_levels, gaussian_blur, image_scores, self_similarity
from workers.memory_bank import search_dtype
from workers.memory_tuning import keep_freed_memory
from workers.patch_features import PatchEmbedder
from workers.regions import Region, find_regions
from workers.station_model import StationModel

#: anomaly maps are computed on a grid this many times coarser than the inspection image
MAP_STRIDE = 4


@dataclass
class InspectionResult:
    """What the detector says about one frame."""

    station_id: str
    score: float  # normalised: 0.5 is the calibrated threshold
    raw_score: float
    flagged: bool
    heatmap: np.ndarray  # small uint8 map of the normalised score, for overlays
    regions: list[Region]
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage, batch-amortised


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def inspection_shape(frame_hw: tuple[int, int], image_size: int, backbone: Backbone) -> tuple[int, int]:
    """(H, W) the backbone sees: longer side ``image_size``, aspect kept, sides rounded to its stride."""
    if backbone.fixed_size:
        return backbone.default_size, backbone.default_size
    m = backbone.size_multiple
    scale = image_size / max(frame_hw)
    return tuple(max(m, round(s * scale / m) * m) for s in frame_hw)  # type: ignore[return-value]


class Inspector:
    """Batches frames of any size across stations that share one backbone and localizes anomalies."""

    def __init__(
        self,
        backbone: Backbone,
        device: str = "auto",
        dtype: torch.dtype | None = None,
        pool: int = 3,
        sigma: float = 4.0,
        heatmap_size: int = 64,
        self_reference: float = 0.0,
        map_stride: int = MAP_STRIDE,
    ) -> None:
        self.device = resolve_device(device)
        if self.device.type == "cpu":  # process-wide: 2.5x faster CPU passes (workers/memory_tuning.py)
            keep_freed_memory()
        # fp16 on GPUs halves memory traffic; CPUs have no fast fp16 path, so fp32 there
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.search_dtype = search_dtype(self.device, self.dtype)
        self.embedder = PatchEmbedder(backbone, pool).to(self.device, self.dtype).eval()
        self.backbone = backbone
        self.sigma = sigma  # in inspection-image pixels
        self.map_stride = map_stride
        self.heatmap_size = heatmap_size
        # > 0: patches may also match their own frame outside this radius (fraction of the side)
        self.self_reference = self_reference
        self.stations: dict[str, StationModel] = {}

    def add_station(self, model: StationModel) -> None:
        self.stations[model.station_id] = self.place(model)

    def place(self, model: StationModel) -> StationModel:
        """``model`` on this inspector's device: weights in its dtype, the bank in its search dtype."""
        placed = model.to(self.device, self.dtype)
        if placed.bank is None or self.search_dtype == self.dtype:
            return placed
        return replace(placed, bank=placed.bank.to(self.device, self.search_dtype))

    def to_tensor(self, frames: Sequence[np.ndarray], shape: tuple[int, int]) -> torch.Tensor:
        """Resize BGR uint8 frames to ``shape`` and stack them as RGB floats in [0, 1] on the device."""
        h, w = shape
        batch = np.stack([_resize_rgb(f, w, h) for f in frames])
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        return x.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)

    def map_shape(self, image_shape: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the anomaly maps of images of ``image_shape``: ``map_stride`` times smaller."""
        return tuple(max(1, -(-s // self.map_stride)) for s in image_shape)  # type: ignore[return-value]

    @torch.inference_mode()
    def raw_maps(self, images: torch.Tensor, model: StationModel) -> torch.Tensor:
        """Smoothed raw anomaly maps (B, 1, h, w) of images already on the device, on the map grid
        (``map_shape``: a quarter of the image's sides by default).

        The finest level has stride 8, so a map at full image resolution only interpolates; fusing,
        smoothing and finding regions on a stride-4 grid costs a sixteenth and changes the map by
        interpolation error only. ``full_maps`` gives the image-resolution maps evaluation needs.

        One backbone pass feeds both the memory bank and the zero-shot decoder. In mode ``both``
        the two fused maps are added, as AnomalyGPT adds its decoder and memory-bank maps (and
        APRIL-GAN its zero- and few-shot maps): a patch is as anomalous as the sum of the two
        views says. Calibration is always done on this final map, so the scales need no matching.
        """
        size = self.map_shape((images.shape[-2], images.shape[-1]))
        levels = self.backbone(images)
        maps = []
        if model.bank is not None:
            feats = self.embedder.describe(levels)
            level_maps = model.bank.distance_maps(feats)
            if self.self_reference > 0:
                level_maps = [
                    torch.minimum(m, 1.0 - self_similarity(f, self.self_reference).to(m.dtype))
                    for m, f in zip(level_maps, feats, strict=True)
                ]
            maps.append(fuse_levels(level_maps, size).float())
        if model.decoder is not None:
            maps.append(fuse_levels(model.decoder(levels), size).float())
        return gaussian_blur(sum(maps[1:], maps[0]), self.sigma / self.map_stride)

    @torch.inference_mode()
    def full_maps(self, images: torch.Tensor, model: StationModel) -> torch.Tensor:
        """``raw_maps`` upsampled (bilinear) to the images' own resolution, (B, 1, H, W)."""
        maps = self.raw_maps(images, model)
        size = (images.shape[-2], images.shape[-1])
        return torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)

    def inspect(self, items: Sequence[tuple[str, np.ndarray]]) -> list[InspectionResult]:
        """Inspect (station_id, BGR frame) pairs; results come back in the same order."""
        groups: dict[tuple[str, tuple[int, int]], list[int]] = defaultdict(list)
        for i, (station_id, frame) in enumerate(items):
            if station_id not in self.stations:
                raise KeyError(f"station {station_id!r} has no model loaded in this inspector")
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(
                    f"frame {i} of {station_id}: expected HxWx3 uint8 BGR, got {frame.shape} {frame.dtype}"
                )
            model = self.stations[station_id]
            groups[(station_id, inspection_shape(frame.shape[:2], model.image_size, self.backbone))].append(i)
        results: list[InspectionResult | None] = [None] * len(items)
        for (station_id, shape), idx in groups.items():
            frames = [items[i][1] for i in idx]
            for i, res in zip(
                idx, self._inspect_group(self.stations[station_id], frames, shape), strict=True
            ):
                results[i] = res
        return [r for r in results if r is not None]

    def inspect_jpegs(self, items: Sequence[tuple[str, bytes]]) -> list[InspectionResult | None]:
        """Inspect (station_id, JPEG bytes) pairs, decoded and resized on the inspector's device:
        on a GPU only the compressed bytes cross to it (nvJPEG), and only small results come back.
        Results in the same order; None where the bytes do not decode."""
        t0 = time.perf_counter()
        decoded = decode_jpegs([jpeg for _, jpeg in items], self.device)
        groups: dict[tuple[str, tuple[int, int]], list[tuple[int, torch.Tensor]]] = defaultdict(list)
        for i, ((station_id, _), image) in enumerate(zip(items, decoded, strict=True)):
            if station_id not in self.stations:
                raise KeyError(f"station {station_id!r} has no model loaded in this inspector")
            if image is not None:
                size = (int(image.shape[-2]), int(image.shape[-1]))
                shape = inspection_shape(size, self.stations[station_id].image_size, self.backbone)
                groups[(station_id, shape)].append((i, image))
        results: list[InspectionResult | None] = [None] * len(items)
        for (station_id, shape), members in groups.items():
            images = [image for _, image in members]
            sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
            group = self._results(self.stations[station_id], self.device_batch(images, shape), sizes, t0)
            for (i, _), res in zip(members, group, strict=True):
                results[i] = res
        return results

    def device_batch(self, images: Sequence[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
        """RGB uint8 (3, h, w) tensors already on the device, resized (antialiased bilinear) to
        ``shape`` and stacked as floats in [0, 1]: the device twin of ``to_tensor``."""
        out = []
        for image in images:
            x = image.unsqueeze(0).to(self.dtype)
            if tuple(x.shape[-2:]) != shape:
                x = torch.nn.functional.interpolate(
                    x.float(), size=shape, mode="bilinear", antialias=True, align_corners=False
                ).to(self.dtype)
            out.append(x)
        return torch.cat(out).div_(255.0)

    def _inspect_group(
        self, model: StationModel, frames: list[np.ndarray], shape: tuple[int, int]
    ) -> list[InspectionResult]:
        t0 = time.perf_counter()
        images = self.to_tensor(frames, shape)
        return self._results(model, images, [f.shape[:2] for f in frames], t0)

    def _results(
        self, model: StationModel, images: torch.Tensor, sizes: Sequence[tuple[int, int]], t0: float
    ) -> list[InspectionResult]:
        """Maps, scores, heat maps and regions of a batch of one station and shape; ``sizes`` are
        the frames' own (H, W), in whose pixels region boxes are given."""
        t1 = time.perf_counter()
        maps = self.raw_maps(images, model)
        scores, small, grid = _to_host(image_scores(maps), _small_maps(maps, self.heatmap_size), maps[:, 0])
        norm = model.calibration.normalize(small)
        grid_norm = model.calibration.normalize(grid, clip=False)
        t2 = time.perf_counter()
        out = []
        for j, size in enumerate(sizes):
            regions = find_regions(grid_norm[j], size, model.min_area)
            raw = float(scores[j])  # float64 like the threshold: a float32 compare rounds it
            out.append(
                InspectionResult(
                    station_id=model.station_id,
                    score=float(model.calibration.normalize(raw)),
                    raw_score=raw,
                    flagged=raw >= model.calibration.threshold,
                    heatmap=(norm[j] * 255).round().astype(np.uint8),
                    regions=regions,
                )
            )
        t3 = time.perf_counter()
        n = len(sizes)
        timing = {
            "preprocess_ms": (t1 - t0) * 1e3 / n,
            "model_ms": (t2 - t1) * 1e3 / n,
            "regions_ms": (t3 - t2) * 1e3 / n,
        }
        for r in out:
            r.timings = dict(timing)
        return out


def _resize_rgb(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    if frame.shape[:2] != (h, w):
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _small_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(B, h, w) maps downscaled so the longer side is ``size``: what overlays need, cheap to send."""
    h, w = maps.shape[-2:]
    scale = size / max(h, w)
    small = torch.nn.functional.interpolate(
        maps, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area"
    )
    return small[:, 0]


def _to_host(scores: torch.Tensor, small: torch.Tensor, grid: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Image scores (B,), heat maps (B, h, w) and grid maps (B, H, W) in one device-to-host copy:
    on a GPU, one synchronisation per batch instead of three."""
    b = scores.shape[0]
    packed = torch.cat([scores.reshape(b, 1), small.reshape(b, -1), grid.reshape(b, -1)], dim=1)
    host = packed.float().cpu().numpy()
    n_small = small[0].numel()
    return (
        host[:, 0],
        host[:, 1 : 1 + n_small].reshape(small.shape),
        host[:, 1 + n_small :].reshape(grid.shape),
    )
