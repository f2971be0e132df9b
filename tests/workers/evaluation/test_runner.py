"""``linewatch eval`` end to end on a generated dataset through the real packaged backbone."""

import json

import cv2

from pipeline.cli import main
from workers.evaluation.synthetic import DEFECTS, write_dataset


def test_eval_prints_table_and_writes_json(tmp_path, capsys):
    root = write_dataset(tmp_path / "parts", train=6, test_good=6, test_defect=3)
    out = tmp_path / "r.json"
    code = main(
        [
            "eval",
            "--dataset",
            str(root),
            "--k",
            "1,2",
            "--seeds",
            "2",
            "--image-size",
            "128",
            "--device",
            "cpu",
            "--json",
            str(out),
            "--by-type",
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "| parts | 1 |" in table and "| parts | 2 |" in table
    data = json.loads(out.read_text())
    assert set(data) == {"1", "2"}
    for k in ("1", "2"):
        assert set(data[k]) >= {"image_auroc", "pixel_auroc", "aupro", "f1_max", "accuracy"}
        # synthetic holes and scratches are obvious: a working detector separates them
        assert data[k]["image_auroc"]["mean"] > 0.9
        assert data[k]["pixel_auroc"]["mean"] > 0.9
        per_type = data[k]["per_category"]["parts"]["per_type"]
        assert set(per_type) == set(DEFECTS)
        for name, metrics in per_type.items():
            assert metrics["images"]["mean"] == 3
            assert metrics["image_auroc"]["mean"] > 0.8, name
            assert f"| parts | {k} | {name} | 3 |" in table


def test_eval_on_a_bad_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["eval", "--dataset", str(tmp_path), "--k", "1", "--seeds", "1"])
    assert code == 2
    assert "train" in capsys.readouterr().err


def test_validation_split_uses_no_test_images_and_no_references(tmp_path):
    from workers.evaluation.dataset import load_category
    from workers.evaluation.runner import validation_samples

    root = write_dataset(tmp_path / "parts", train=30, test_good=2, test_defect=1)
    cat = load_category(root, "parts")
    refs = cat.train_good[:4]
    samples = validation_samples(cat, refs, seed=0, size=10)
    labels = [label for _, label, _, _ in samples]
    assert {t for _, label, _, t in samples if label == 0} == {"good"}
    assert {t for _, label, _, t in samples if label == 1} <= {"patch", "blob", "line"}
    assert labels.count(0) == 10 and labels.count(1) == 10
    ref_pixels = {img.tobytes() for img in (cv2.imread(str(p)) for p in refs)}
    assert not any(img.tobytes() in ref_pixels for img, _, _, _ in samples)  # references never scored
    for img, label, mask, _ in samples:
        m = mask(img.shape[:2])
        assert m.shape == img.shape[:2] and m.any() == bool(label)
        assert mask((48, 64)).shape == (48, 64)


def test_eval_on_the_validation_split(tmp_path, capsys):
    root = write_dataset(tmp_path / "parts", train=40, test_good=2, test_defect=1)
    args = ["--k", "2", "--seeds", "1", "--image-size", "128", "--device", "cpu", "--split", "validation"]
    code = main(["eval", "--dataset", str(root), *args])
    assert code == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| parts | 2 |"))
    image_auroc = float(row.split("|")[3].split("±")[0])
    assert image_auroc > 0.6  # synthetic blobs, lines and patches on plain parts are mostly visible


def test_per_type_metrics_score_each_type_against_the_normal_images():
    import numpy as np

    from workers.evaluation.runner import per_type_metrics

    normal = [np.zeros((4, 4)), np.full((4, 4), 0.1)]
    hole = np.zeros((4, 4))
    hole[0, 0] = 1.0  # found: its pixel beats every normal pixel
    missed = np.zeros((4, 4))  # a defect whose map stays flat
    masks = [np.zeros((4, 4), bool)] * 2 + [hole > 0, np.eye(4, dtype=bool)]
    out = per_type_metrics(
        [0.0, 0.1, 1.0, 0.0], [0, 0, 1, 1], [*normal, hole, missed], masks, ["good", "good", "hole", "uneven"]
    )
    assert set(out) == {"hole", "uneven"}
    assert out["hole"]["image_auroc"] == 1.0 and out["hole"]["pixel_auroc"] == 1.0
    assert out["uneven"]["image_auroc"] == 0.25  # ties with one normal image, below the other
    assert out["uneven"]["pixel_auroc"] < 0.5
    assert out["hole"]["images"] == 1
