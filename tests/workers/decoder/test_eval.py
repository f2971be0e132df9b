"""``linewatch eval --mode zero-shot|both --decoder FILE`` on the generated dataset, tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.workers.decoder.test_training import FAST
from workers.decoder.training import TrainSettings, train_decoder
from workers.evaluation.synthetic import write_dataset

COMMON = ["--seeds", "1", "--image-size", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("eval") / "parts", train=4, test_good=3, test_defect=2)


def test_eval_zero_shot_without_references(
    dataset: Path, tiny_specs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    args = ["--dataset", str(dataset), "--backbone", tiny_specs["main"], "--mode", "zero-shot"]
    assert main(["eval", *args, *COMMON, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| parts | 0 |" in printed and "mode zero-shot" in printed and "P(abnormal) = 0.5" in printed
    data = json.loads(out.read_text())
    assert set(data) == {"0"} and 0.0 <= data["0"]["pixel_auroc"]["mean"] <= 1.0


def test_eval_both_with_a_trained_decoder(
    dataset: Path, tiny_specs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decoder = tmp_path / "d.safetensors"
    settings = TrainSettings(
        [dataset / "train" / "good"], tiny_specs["main"], decoder, **{**FAST, "epochs": 1}
    )
    train_decoder(settings, progress=False)
    args = ["--dataset", str(dataset), "--backbone", tiny_specs["main"], "--mode", "both", "--k", "2"]
    assert main(["eval", *args, *COMMON, "--decoder", str(decoder)]) == 0
    assert "| parts | 2 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mode", "few-shot", "--k", "0"], "--k 0 (no references) works only with --mode zero-shot"),
        (["--mode", "few-shot", "--k", "1", "--decoder", "x.safetensors"], "--decoder is used only with"),
        (["--mode", "zero-shot", "--decoder", "/nonexistent.safetensors"], "not found"),
    ],
)
def test_eval_mode_mistakes_are_clear(
    dataset: Path,
    tiny_specs: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert main(["eval", "--dataset", str(dataset), "--backbone", tiny_specs["main"], *extra, *COMMON]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
