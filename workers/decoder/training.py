"""``linewatch train-decoder``: fits the per-level projections on synthetic anomalies of normal images.

Backbone and text tower stay frozen; only the projections (layer norm + linear map per level) learn,
starting from CLIP's own projection. Loss per level: focal (γ = 2) + dice on the upsampled
abnormal-state probability, summed over levels (AnomalyGPT).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from workers.backbones import load_backbone
from workers.backbones.openclip import OpenClipBackbone
from workers.decoder.checkpoint import TrainingState, read_checkpoint, save_checkpoint
from workers.decoder.losses import dice_loss, focal_loss
from workers.decoder.prompts import PromptSet
from workers.decoder.text_features import text_features
from workers.decoder.zero_shot import PatchProjection, ZeroShotDecoder, default_projections
from workers.errors import DecoderError, ReferenceImagesError
from workers.evaluation.synthetic_anomalies import synthesize_training
from workers.inspector import resolve_device
from workers.references import list_reference_files, read_images

logger = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """One training run; to resume, all but ``out``, ``epochs``, ``resume``, ``device`` must match."""

    normal: list[Path]
    backbone: str
    out: Path
    epochs: int = 20
    product: str = "object"
    batch_size: int = 8
    lr: float = 1e-3
    #: the rest of each batch stays normal, so the decoder also learns what not to flag
    anomaly_fraction: float = 0.75
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    max_images: int | None = None

    def fingerprint(self) -> dict:
        keep = ("product", "batch_size", "lr", "anomaly_fraction", "seed", "max_images")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass
class TrainingResult:
    projections: list[PatchProjection]
    losses: list[float] = field(default_factory=list)  # mean loss per epoch, all epochs so far


def load_normal_images(folders: list[Path], size: int, limit: int | None = None) -> list[np.ndarray]:
    """Every image of the folders, as BGR at the backbone's square input size (as the Inspector sees it)."""
    for folder in folders:
        if not folder.is_dir():
            raise ReferenceImagesError(f"normal image folder {folder} does not exist or is not a folder")
    files = [f for folder in folders for f in list_reference_files(folder)][:limit]
    if len(files) < 2:
        raise ReferenceImagesError(
            f"train-decoder needs at least 2 normal images (patches are cut from one into another); "
            f"found {len(files)} in {', '.join(map(str, folders))}"
        )
    return [cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) for img in read_images(files)]


def synthetic_batch(
    images: list[np.ndarray], indices: np.ndarray, rng: np.random.Generator, anomaly_fraction: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """BGR images and (B, H, W) bool masks: an anomaly on most, the others left normal."""
    out, masks = [], []
    for i in indices:
        image = images[int(i)]
        if rng.random() < anomaly_fraction:
            donors = [
                images[int(j)] for j in rng.choice(len(images), size=min(3, len(images)), replace=False)
            ]
            donors = [d for d in donors if d is not image] or [images[(int(i) + 1) % len(images)]]
            image, mask = synthesize_training(image, donors, rng)
        else:
            mask = np.zeros(image.shape[:2], bool)
        out.append(image)
        masks.append(mask)
    return out, np.stack(masks)


def to_input(images: list[np.ndarray], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """BGR uint8 images as RGB floats in [0, 1], (B, 3, H, W): what the backbone expects."""
    rgb = np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in images])
    return torch.from_numpy(rgb).to(device).permute(0, 3, 1, 2).to(dtype).div_(255.0)


def decoder_loss(decoder: ZeroShotDecoder, levels: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """Focal + dice per level on probabilities upsampled to the mask size, summed over levels."""
    total = torch.zeros((), device=masks.device)
    for prob in decoder.level_maps(levels):
        up = F.interpolate(prob, size=masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        total = total + focal_loss(up, masks) + dice_loss(up, masks)
    return total


class DecoderTrainer:
    """Owns the frozen backbone, the text features, the projections being learnt and their optimizer."""

    def __init__(
        self,
        backbone: OpenClipBackbone,
        prompts: PromptSet,
        projections: list[PatchProjection],
        settings: TrainSettings,
    ) -> None:
        self.device = resolve_device(settings.device)
        # the frozen backbone runs in fp16 on GPUs; the projections learn in fp32
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.backbone = backbone.to(self.device, self.dtype)
        self.decoder = ZeroShotDecoder(projections, text_features(self.backbone, prompts)).to(self.device)
        self.decoder.text = self.decoder.text.float()
        self.optimizer = torch.optim.Adam(self.decoder.projections.parameters(), lr=settings.lr)
        self.settings = settings

    def step(self, images: list[np.ndarray], masks: np.ndarray) -> float:
        with torch.no_grad():
            levels = [lv.float() for lv in self.backbone(to_input(images, self.device, self.dtype))]
        loss = decoder_loss(self.decoder, levels, torch.from_numpy(masks).to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def epoch(self, images: list[np.ndarray], epoch: int, bar: tqdm | None = None) -> float:
        """One pass over the images in a seeded order, each becoming one (mostly anomalous) sample.

        The generator is seeded by (seed, epoch), so a resumed run draws what the full run would have.
        """
        rng = np.random.default_rng([self.settings.seed, epoch])
        order = rng.permutation(len(images))
        losses = []
        for start in range(0, len(order), self.settings.batch_size):
            batch, masks = synthetic_batch(
                images, order[start : start + self.settings.batch_size], rng, self.settings.anomaly_fraction
            )
            losses.append(self.step(batch, masks))
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")
        return float(np.mean(losses))


def train_decoder(settings: TrainSettings, progress: bool = True) -> TrainingResult:
    """Train (or resume) and save after every epoch; the loss log goes next to the checkpoint."""
    backbone = load_backbone(settings.backbone)
    if not isinstance(backbone, OpenClipBackbone):
        raise DecoderError(f"{settings.backbone}: train-decoder needs an open_clip: backbone (a text tower)")
    prompts = PromptSet.for_product(settings.product)
    state, projections = _start(settings, backbone, prompts)
    images = load_normal_images(settings.normal, backbone.default_size, settings.max_images)
    trainer = DecoderTrainer(backbone, prompts, projections, settings)
    if state.optimizer is not None:
        trainer.optimizer.load_state_dict(state.optimizer)
    log = loss_log_path(settings.out)
    log.parent.mkdir(parents=True, exist_ok=True)
    if state.epochs_done == 0:
        log.write_text("epoch,loss,seconds\n")
    todo = max(0, settings.epochs - state.epochs_done)
    logger.info(
        "training %s on %d images from epoch %d to %d (%s)",
        settings.backbone,
        len(images),
        state.epochs_done + 1,
        settings.epochs,
        trainer.device,
    )
    with tqdm(total=todo * len(images), desc="train-decoder", file=sys.stderr, disable=not progress) as bar:
        for epoch in range(state.epochs_done, settings.epochs):
            t0 = time.perf_counter()
            loss = trainer.epoch(images, epoch, bar)
            state.losses.append(loss)
            state.epochs_done = epoch + 1
            state.optimizer = trainer.optimizer.state_dict()
            save_checkpoint(settings.out, _projections(trainer), backbone, prompts, state)
            with log.open("a") as f:
                f.write(f"{epoch + 1},{loss:.6f},{time.perf_counter() - t0:.1f}\n")
    return TrainingResult(_projections(trainer), list(state.losses))


def loss_log_path(out: Path) -> Path:
    return out.with_name(out.stem + ".loss.csv")


def _projections(trainer: DecoderTrainer) -> list[PatchProjection]:
    return [p for p in trainer.decoder.projections if isinstance(p, PatchProjection)]


def _start(
    settings: TrainSettings, backbone: OpenClipBackbone, prompts: PromptSet
) -> tuple[TrainingState, list[PatchProjection]]:
    """A fresh start from CLIP's projection, or the state saved in ``out`` when resuming."""
    if not settings.out.exists():
        if settings.resume:
            raise DecoderError(f"--resume: {settings.out} does not exist yet; start without --resume")
        return TrainingState(settings=settings.fingerprint()), default_projections(backbone)
    if not settings.resume:
        raise DecoderError(
            f"{settings.out} exists; pass --resume to continue its training or choose another --out"
        )
    saved = read_checkpoint(settings.out, backbone)
    if saved.training.settings != settings.fingerprint():
        raise DecoderError(
            f"--resume: {settings.out} was trained with {saved.training.settings}, not "
            f"{settings.fingerprint()}; use the same settings or another --out"
        )
    if saved.prompts != prompts:
        raise DecoderError(f"--resume: {settings.out} was trained for product {saved.prompts.product!r}")
    return saved.training, saved.projections
