"""Reading MVTec-AD-style folder trees: categories, samples, masks and reference draws."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from workers.errors import DatasetError
from workers.evaluation.dataset import (
    Sample,
    draw_references,
    list_categories,
    load_category,
    read_mask,
)

SHARED_DATASETS = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets"


def _image(path: Path, value: int = 128, shape: tuple[int, int] = (6, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full(shape, value, dtype=np.uint8))
    return path


def _category(folder: Path, mask_suffix: str = "_mask") -> Path:
    """train/good: 3 images; test/good: 1; test/scratch: 2, each with a mask."""
    for name in ("000.png", "001.png", "002.png"):
        _image(folder / "train" / "good" / name)
    _image(folder / "test" / "good" / "000.png")
    for stem in ("000", "001"):
        _image(folder / "test" / "scratch" / f"{stem}.png")
        _image(folder / "ground_truth" / "scratch" / f"{stem}{mask_suffix}.png", 255)
    return folder


def test_single_category_root_is_named_after_its_folder(tmp_path: Path) -> None:
    root = _category(tmp_path / "tile")
    assert list_categories(root) == ["tile"]
    category = load_category(root, "tile")
    assert [p.name for p in category.train_good] == ["000.png", "001.png", "002.png"]
    assert category.counts() == {"good": 1, "scratch": 2}
    assert category.test[0] == Sample(root / "test" / "good" / "000.png", 0, "good", None)
    defect = category.test[1]
    assert (defect.label, defect.defect_type) == (1, "scratch")
    assert defect.mask_path == root / "ground_truth" / "scratch" / "000_mask.png"


def test_multi_category_root_lists_only_folders_with_train(tmp_path: Path) -> None:
    _category(tmp_path / "screw")
    _category(tmp_path / "bottle")
    (tmp_path / "docs").mkdir()
    (tmp_path / "license.txt").write_text("x")
    assert list_categories(tmp_path) == ["bottle", "screw"]
    assert load_category(tmp_path, "screw").root == tmp_path / "screw"


def test_visa_after_its_split_script_is_read(tmp_path: Path) -> None:
    # VisA: upper-case .JPG images, masks named <stem>.png in ground_truth/bad
    root = tmp_path / "visa_pcb" / "pcb1"
    _image(root / "train" / "good" / "0001.JPG")
    _image(root / "test" / "good" / "0002.JPG")
    _image(root / "test" / "bad" / "0003.JPG")
    mask = _image(root / "ground_truth" / "bad" / "0003.png", 255)
    category = load_category(root.parent, "pcb1")
    assert category.counts() == {"good": 1, "bad": 1}
    assert category.test[0].mask_path == mask


def test_non_image_and_hidden_files_are_ignored(tmp_path: Path) -> None:
    root = _category(tmp_path / "tile")
    (root / "train" / "good" / "notes.txt").write_text("x")
    _image(root / "train" / "good" / "._000.png")
    (root / "test" / "readme.md").write_text("x")
    category = load_category(root, "tile")
    assert len(category.train_good) == 3
    assert len(category.test) == 3


def test_defect_without_mask_names_the_image(tmp_path: Path) -> None:
    root = _category(tmp_path / "tile")
    _image(root / "test" / "scratch" / "007.png")
    with pytest.raises(DatasetError, match=r"test/scratch/007\.png.*007_mask\.png"):
        load_category(root, "tile")


def _no_train_good(root: Path) -> None:
    shutil.rmtree(root / "train" / "good")


def _empty_train_good(root: Path) -> None:
    for image in (root / "train" / "good").iterdir():
        image.unlink()


def _no_test(root: Path) -> None:
    shutil.rmtree(root / "test")


def _empty_test(root: Path) -> None:
    shutil.rmtree(root / "test")
    (root / "test" / "good").mkdir(parents=True)


def _no_ground_truth(root: Path) -> None:
    shutil.rmtree(root / "ground_truth")


@pytest.mark.parametrize(
    ("break_tree", "message"),
    [
        (_no_train_good, r"train/good is missing"),
        (_empty_train_good, r"train/good has no images"),
        (_no_test, r"test is missing"),
        (_empty_test, r"test has no test images"),
        (_no_ground_truth, r"ground_truth/scratch is missing"),
    ],
)
def test_broken_layout_names_what_is_missing(
    tmp_path: Path, break_tree: Callable[[Path], None], message: str
) -> None:
    root = _category(tmp_path / "tile")
    break_tree(root)
    with pytest.raises(DatasetError, match=message):
        load_category(root, "tile")


def test_roots_without_categories_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        list_categories(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no train/ folder"):
        list_categories(tmp_path)


def test_unknown_category_lists_the_known_ones(tmp_path: Path) -> None:
    _category(tmp_path / "screw")
    with pytest.raises(DatasetError, match=r"no category 'nut'.*screw"):
        load_category(tmp_path, "nut")
    with pytest.raises(DatasetError, match="single-category root named 'screw'"):
        load_category(tmp_path / "screw", "nut")


def test_draw_references_is_deterministic_distinct_and_nested() -> None:
    pool = [Path(f"{i:03d}.png") for i in range(50)]
    draw = draw_references(pool, 16, seed=7)
    assert draw == draw_references(pool, 16, seed=7)
    assert len(set(draw)) == 16
    assert draw_references(pool, 4, seed=7) == draw[:4]
    assert draw_references(pool, 16, seed=8) != draw


@pytest.mark.parametrize(("k", "error"), [(0, ValueError), (4, DatasetError)])
def test_draw_references_rejects_impossible_k(k: int, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"k must be|only 3"):
        draw_references([Path("a.png"), Path("b.png"), Path("c.png")], k, seed=0)


def test_read_mask_thresholds_and_resizes_with_nearest(tmp_path: Path) -> None:
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 255
    path = _image(tmp_path / "m.png", 0, (4, 4))
    cv2.imwrite(str(path), mask)
    assert read_mask(path).tolist() == (mask > 0).tolist()
    big = read_mask(path, (8, 6))
    assert big.shape == (8, 6) and big.dtype == bool
    assert big[:4, :3].all() and not big[4:, :].any() and not big[:, 3:].any()


def test_read_mask_accepts_zero_one_masks(tmp_path: Path) -> None:
    assert read_mask(_image(tmp_path / "m.png", 1, (3, 3))).all()


def test_read_mask_of_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"gone\.png"):
        read_mask(tmp_path / "gone.png")


@pytest.mark.dataset
def test_magnetic_tile_matches_its_readme() -> None:
    root = SHARED_DATASETS / "magnetic_tile"
    if not root.is_dir():
        pytest.skip(f"{root.resolve()} is not present")
    assert list_categories(root) == ["magnetic_tile"]
    category = load_category(root, "magnetic_tile")
    assert len(category.train_good) == 700
    expected = {"good": 252, "blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103}
    assert category.counts() == expected
    defect = next(s for s in category.test if s.label == 1)
    assert defect.mask_path is not None
    image = cv2.imread(str(defect.path), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    assert read_mask(defect.mask_path, image.shape).any()
