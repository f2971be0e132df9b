"""``linewatch eval`` end to end on a generated dataset through the real packaged backbone."""

import json

from pipeline.cli import main
from workers.evaluation.synthetic import write_dataset


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


def test_eval_on_a_bad_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["eval", "--dataset", str(tmp_path), "--k", "1", "--seeds", "1"])
    assert code == 2
    assert "train" in capsys.readouterr().err
