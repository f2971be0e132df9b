"""Reader for evaluation datasets in the MVTec-AD folder layout, with lenient mask names."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from workers.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One test image: label 0 (good) or 1 (a defect of ``defect_type``, which has a mask)."""

    path: Path
    label: int
    defect_type: str
    mask_path: Path | None


@dataclass(frozen=True)
class Category:
    """One category: normal training images and the labelled test set, both sorted by path.

    Layout (MVTec-AD)::

        <category>/train/good/*                        normal images (references come from here)
        <category>/test/good/*                         normal test images
        <category>/test/<defect_type>/*                defective test images
        <category>/ground_truth/<defect_type>/<stem>_mask.png   (or <stem>.png) their masks

    VisA has its own layout, but its official split script (``prepare_data.py`` with
    ``split_csv/1cls.csv``) converts it into this one, with ``test/bad/*.JPG`` images and
    ``ground_truth/bad/<stem>.png`` masks, which is why plain ``<stem>.png`` masks are accepted.
    Mask names match case-insensitively, in any image format (a .png wins).
    """

    name: str
    root: Path
    train_good: list[Path]
    test: list[Sample]

    def counts(self) -> dict[str, int]:
        """Number of test images per defect type ("good" included)."""
        return dict(Counter(sample.defect_type for sample in self.test))


def _directory(root: Path | str) -> Path:
    # abspath, not resolve: a symlinked dataset keeps the name the user gave it
    path = Path(os.path.abspath(Path(root).expanduser()))
    if not path.is_dir():
        raise DatasetError(f"dataset root {path} does not exist or is not a folder")
    return path


def _is_category(path: Path) -> bool:
    return (path / "train").is_dir()


def _images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted; hidden files (.DS_Store, ._x.png) skipped."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _subcategories(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and _is_category(p))


def list_categories(root: Path | str) -> list[str]:
    """Category names under ``root``: the folder's own name if it holds ``train/`` directly,
    else every subfolder holding ``train/`` (MVTec-AD, converted VisA), sorted."""
    path = _directory(root)
    if _is_category(path):
        return [path.name]
    names = _subcategories(path)
    if not names:
        raise DatasetError(
            f"{path} has no train/ folder and no subfolder with one: expected "
            f"{path}/train/good/* (one category) or {path}/<category>/train/good/* (MVTec-AD)"
        )
    return names


def load_category(root: Path | str, category: str) -> Category:
    """Read one category's file lists (no pixels); see ``Category`` for the expected layout."""
    path = _directory(root)
    if _is_category(path):
        if category != path.name:
            raise DatasetError(
                f"{path} is a single-category root named {path.name!r}; asked for {category!r}"
            )
        folder = path
    else:
        folder = path / category
        if not _is_category(folder):
            raise DatasetError(
                f"no category {category!r} in {path}: {folder / 'train'} is missing "
                f"(categories found: {', '.join(_subcategories(path)) or 'none'})"
            )
    return Category(category, folder, _train_good(folder), _test_samples(folder))


def _train_good(folder: Path) -> list[Path]:
    good = folder / "train" / GOOD
    if not good.is_dir():
        raise DatasetError(f"{good} is missing: normal training images go in train/{GOOD}/")
    images = _images(good)
    if not images:
        raise DatasetError(f"{good} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def _test_samples(folder: Path) -> list[Sample]:
    test = folder / "test"
    if not test.is_dir():
        raise DatasetError(f"{test} is missing: expected test/{GOOD}/* and test/<defect_type>/*")
    samples: list[Sample] = []
    for type_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        images = _images(type_dir)
        if type_dir.name.lower() == GOOD:
            samples += [Sample(p, 0, type_dir.name, None) for p in images]
        elif images:
            masks = _mask_index(folder / "ground_truth" / type_dir.name, type_dir)
            samples += [Sample(p, 1, type_dir.name, _mask_of(p, masks)) for p in images]
    if not samples:
        raise DatasetError(f"{test} has no test images: expected test/{GOOD}/* and test/<type>/*")
    return samples


def _mask_index(gt_dir: Path, type_dir: Path) -> dict[str, Path]:
    """Mask files of one defect type by lower-case stem; a .png wins over other formats."""
    if not gt_dir.is_dir():
        raise DatasetError(f"{gt_dir} is missing: the defect images in {type_dir} need masks there")
    index: dict[str, Path] = {}
    for mask in sorted(_images(gt_dir), key=lambda p: (p.suffix.lower() != ".png", p.name)):
        index.setdefault(mask.stem.lower(), mask)
    return index


def _mask_of(image: Path, masks: dict[str, Path]) -> Path:
    stem = image.stem.lower()
    found = masks.get(f"{stem}_mask") or masks.get(stem)
    if found is None:
        gt_dir = image.parent.parent.parent / "ground_truth" / image.parent.name
        raise DatasetError(
            f"no mask for defect image {image}: expected {gt_dir / (image.stem + '_mask.png')} "
            f"(or {image.stem}.png)"
        )
    return found


def draw_references(train_good: Sequence[Path], k: int, seed: int) -> list[Path]:
    """Draw ``k`` distinct normal images at random, the same ones for the same list and seed.

    The draw is a prefix of one seeded permutation, so for a given seed the k=1 references are
    among the k=4 ones, which are among the k=16 ones: few-shot results differ only by additions.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > len(train_good):
        where = train_good[0].parent if train_good else "the training set"
        raise DatasetError(f"asked for {k} reference images, {where} has only {len(train_good)}")
    order = np.random.default_rng(seed).permutation(len(train_good))[:k]
    return [train_good[i] for i in order]


def read_mask(path: Path | str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask (0/255 or 0/1, any bit depth) as bool, resized to ``shape`` = (height, width)
    with nearest-neighbour when it differs."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DatasetError(f"cannot read mask {path}: missing or not an image")
    if mask.ndim == 3:
        mask = mask[..., :3].max(axis=2)  # colour masks; an alpha channel is not the mask
    if shape is not None and mask.shape != tuple(shape):
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return np.asarray(mask > 0)
