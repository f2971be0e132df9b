"""Stations in zero-shot and both modes through the YAML loader, load_inspectors and the real Inspector."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from config.errors import ConfigError
from config.loader import load_station
from tests.workers.decoder.test_training import FAST, write_normals
from workers.decoder.training import TrainSettings, train_decoder
from workers.errors import DecoderError
from workers.evaluation.synthetic import make_part
from workers.station_loader import load_inspectors


def station_yaml(folder: Path, spec: str, mode: str, extra: str = "", references: bool = False) -> Path:
    refs = "references:\n  folder: refs\n  k: 3\n" if references else ""
    text = (
        f"id: zs-1\ncamera:\n  source: 0\nproduct:\n  name: plate\n{extra}"
        f"model:\n  backbone: {spec}\n  image_size: 64\n  mode: {mode}\n{refs}"
    )
    path = folder / "station.yaml"
    path.write_text(text)
    return path


def test_zero_shot_station_without_references_runs_through_the_inspector(
    tiny_specs: dict[str, str], tmp_path: Path
) -> None:
    extra = "  abnormal_states: ['{} with a hole']\n"
    station = load_station(station_yaml(tmp_path, tiny_specs["main"], "zero-shot", extra))
    assert station.references is None and station.product.abnormal_states == ("{} with a hole",)
    insp = load_inspectors([station], tmp_path / "data", "cpu")["zs-1"]
    model = insp.stations["zs-1"]
    assert model.mode == "zero-shot" and model.bank is None
    # no references: the decoder's own decision is the threshold, the score is the probability
    assert (model.calibration.threshold, model.calibration.normal_level) == (0.5, 0.0)
    results = insp.inspect(
        [("zs-1", make_part(1, size=(96, 128))[0]), ("zs-1", make_part(2, defect="hole")[0])]
    )
    for r in results:
        assert r.score == pytest.approx(min(1.0, max(0.0, r.raw_score)), abs=1e-6)
        assert r.flagged == (r.raw_score >= 0.5)
        assert 0 < r.raw_score < 1 and r.heatmap.dtype.name == "uint8"
    assert not (tmp_path / "data" / "banks").exists()  # nothing to cache without references


def test_both_mode_with_a_trained_decoder_is_cached_and_reloaded(
    tiny_specs: dict[str, str], tmp_path: Path
) -> None:
    write_normals(tmp_path / "refs", 3, first_seed=50)
    out = tmp_path / "dec" / "plate.safetensors"
    train_decoder(
        TrainSettings([write_normals(tmp_path / "n", 4)], tiny_specs["main"], out, **{**FAST, "epochs": 1}),
        progress=False,
    )
    path = station_yaml(tmp_path, tiny_specs["main"], "both", references=True)
    path.write_text(
        path.read_text().replace("  mode: both\n", "  mode: both\n  decoder: dec/plate.safetensors\n")
    )
    station = load_station(path)
    assert station.model.decoder == out  # resolved next to the YAML file
    first = load_inspectors([station], tmp_path / "data", "cpu")["zs-1"].stations["zs-1"]
    banks = list((tmp_path / "data" / "banks" / "zs-1").glob("*.safetensors"))
    assert first.mode == "both" and len(banks) == 1
    again = load_inspectors([station], tmp_path / "data", "cpu")["zs-1"].stations["zs-1"]
    assert again.mode == "both" and again.calibration == first.calibration
    assert list((tmp_path / "data" / "banks" / "zs-1").glob("*.safetensors")) == banks
    frame = cv2.resize(make_part(7)[0], (64, 64))
    assert (
        load_inspectors([station], tmp_path / "data", "cpu")["zs-1"].inspect([("zs-1", frame)])[0].regions
        is not None
    )


def test_station_with_a_decoder_for_other_weights_is_refused(
    tiny_specs: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "twin.safetensors"
    train_decoder(
        TrainSettings([write_normals(tmp_path / "n", 2)], tiny_specs["twin"], out, **{**FAST, "epochs": 1}),
        progress=False,
    )
    path = station_yaml(tmp_path, tiny_specs["main"], "zero-shot")
    path.write_text(path.read_text() + "  decoder: twin.safetensors\n")
    with pytest.raises(DecoderError, match="other weights of the same model"):
        load_inspectors([load_station(path)], tmp_path / "data", "cpu")


@pytest.mark.parametrize(
    ("mode", "extra", "message"),
    [
        ("few-shot", "", ":1: references: required key is missing (Normal reference images; required for"),
        ("both", "", "references: required key is missing (Normal reference images; required for modes"),
        (
            "zero-shot",
            "  decoder: nowhere.safetensors\n",
            'model.decoder = "nowhere.safetensors": decoder file not',
        ),
        ("few-shot-decoder", "  decoder: x.safetensors\n", "decoder is only used in mode zero-shot or both"),
    ],
)
def test_station_config_problems_are_named(
    tiny_specs: dict[str, str], tmp_path: Path, mode: str, extra: str, message: str
) -> None:
    path = station_yaml(
        tmp_path, tiny_specs["main"], mode.removesuffix("-decoder"), references=mode.endswith("decoder")
    )
    if mode.endswith("decoder"):
        write_normals(tmp_path / "refs", 1)
        (tmp_path / "x.safetensors").write_bytes(b"x")
    path.write_text(path.read_text().replace("  image_size: 64\n", "  image_size: 64\n" + extra))
    with pytest.raises(ConfigError) as caught:
        load_station(path)
    assert any(message in line for line in caught.value.lines()), caught.value.lines()


@pytest.mark.parametrize("phrase", ["{} and {}", "{name} broken", ""])
def test_bad_state_phrases_are_refused(tiny_specs: dict[str, str], tmp_path: Path, phrase: str) -> None:
    extra = f"  normal_states: [{phrase!r}]\n"
    with pytest.raises(ConfigError, match=r"product\.normal_states"):
        load_station(station_yaml(tmp_path, tiny_specs["main"], "zero-shot", extra))
