"""A small synthetic inspection dataset (brushed-metal parts with holes and scratches) in MVTec-AD layout.

It lets the demo and the tests run offline on any machine; real accuracy figures come from real data.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DEFECTS = ("hole", "scratch")


def make_part(
    seed: int, size: tuple[int, int] = (96, 128), defect: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A BGR part image (vertical striations + noise) and its boolean defect mask."""
    rng = np.random.default_rng(seed)
    h, w = size
    stripes = 120 + 25 * np.sin(np.arange(w) / 2.5 + rng.uniform(0, 6.28))
    img = np.tile(stripes, (h, 1)) + rng.normal(0, 6, (h, w))
    mask = np.zeros((h, w), dtype=bool)
    if defect == "hole":  # a dark round blob, somewhere in the lower right quarter
        cy, cx = int(h * rng.uniform(0.72, 0.88)), int(w * rng.uniform(0.72, 0.88))
        yy, xx = np.mgrid[:h, :w]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (h // 10) ** 2
        img[mask] = 20
    elif defect == "scratch":  # a bright diagonal line starting near the top left
        y0, x0 = int(rng.integers(3, 10)), int(rng.integers(3, 10))
        for t in range(h // 3):
            mask[y0 + t, x0 + t : x0 + t + 3] = True
        img[mask] = 250
    elif defect is not None:
        raise ValueError(f"unknown synthetic defect {defect!r}; known: {', '.join(DEFECTS)}")
    bgr = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return bgr, mask


def write_dataset(root: Path, train: int = 16, test_good: int = 12, test_defect: int = 6) -> Path:
    """Write ``root/{train/good, test/<type>, ground_truth/<type>}``; returns ``root``."""
    seed = 0
    jobs: list[tuple[str, str | None, int]] = [("train/good", None, train), ("test/good", None, test_good)]
    jobs += [(f"test/{d}", d, test_defect) for d in DEFECTS]
    for folder, defect, count in jobs:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed += 1
            img, mask = make_part(seed, defect=defect)
            cv2.imwrite(str(root / folder / f"{i:03d}.png"), img)
            if defect:
                gt = root / "ground_truth" / defect
                gt.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(gt / f"{i:03d}_mask.png"), mask.astype(np.uint8) * 255)
    return root
