"""train-decoder through the real loader: loss falls, the trained decoder localises better, resume works."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.cli import main
from workers.backbones import load_backbone
from workers.decoder.builder import build_decoder
from workers.decoder.checkpoint import read_checkpoint
from workers.decoder.prompts import PromptSet
from workers.decoder.training import TrainSettings, loss_log_path, synthetic_batch, to_input, train_decoder
from workers.errors import DecoderError
from workers.evaluation.metrics import auroc
from workers.evaluation.synthetic import make_part
from workers.localization import fuse_levels

# small and fast (a few seconds on one CPU core), yet enough steps to learn: 4 images a step
FAST = {"epochs": 8, "batch_size": 4, "lr": 5e-2, "product": "part", "device": "cpu"}


def write_normals(folder: Path, count: int, first_seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:03d}.png"), make_part(first_seed + i, size=(64, 64))[0])
    return folder


@pytest.fixture(scope="module")
def trained(tiny_specs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    root = tmp_path_factory.mktemp("train")
    out = root / "decoder.safetensors"
    settings = TrainSettings([write_normals(root / "normal", 16)], tiny_specs["main"], out, **FAST)
    result = train_decoder(settings, progress=False)
    return out, result.losses


def pixel_auroc(backbone, decoder, images: list[np.ndarray], masks: np.ndarray) -> float:
    with torch.no_grad():
        maps = fuse_levels(decoder(backbone(to_input(images, torch.device("cpu"), torch.float32))), (64, 64))
    return auroc(maps[:, 0].numpy().ravel(), masks.ravel())


def test_training_lowers_the_loss_and_writes_a_log(trained: tuple[Path, list[float]]) -> None:
    out, losses = trained
    assert len(losses) == FAST["epochs"]
    assert np.mean(losses[-3:]) < 0.9 * losses[0], losses
    rows = loss_log_path(out).read_text().splitlines()
    assert rows[0] == "epoch,loss,seconds" and len(rows) == 1 + FAST["epochs"]
    assert float(rows[-1].split(",")[1]) == pytest.approx(losses[-1], abs=1e-5)


def test_trained_decoder_localises_held_out_anomalies_better(
    trained: tuple[Path, list[float]], tiny_specs: dict[str, str]
) -> None:
    backbone = load_backbone(tiny_specs["main"])
    held_out = [make_part(1000 + i, size=(64, 64))[0] for i in range(24)]  # parts never trained on
    images, masks = synthetic_batch(held_out, np.arange(24), np.random.default_rng(99), 1.0)
    prompts = PromptSet.for_product("part")
    untrained = pixel_auroc(backbone, build_decoder(backbone, prompts), images, masks)
    better = pixel_auroc(backbone, build_decoder(backbone, prompts, trained[0]), images, masks)
    print(f"pixel AUROC untrained {untrained:.3f}, trained {better:.3f}")
    assert better > untrained + 0.05, (untrained, better)


def test_resume_continues_where_the_run_stopped(tiny_specs: dict[str, str], tmp_path: Path) -> None:
    normal = write_normals(tmp_path / "normal", 6)
    fast = {**FAST, "batch_size": 3}
    full = TrainSettings([normal], tiny_specs["main"], tmp_path / "full.safetensors", **{**fast, "epochs": 2})
    train_decoder(full, progress=False)
    part = TrainSettings([normal], tiny_specs["main"], tmp_path / "part.safetensors", **{**fast, "epochs": 1})
    train_decoder(part, progress=False)
    part.epochs, part.resume = 2, True
    resumed = train_decoder(part, progress=False)
    backbone = load_backbone(tiny_specs["main"])
    a, b = read_checkpoint(full.out, backbone), read_checkpoint(part.out, backbone)
    assert b.training.epochs_done == 2 and resumed.losses == pytest.approx(a.training.losses, rel=1e-4)
    for pa, pb in zip(a.projections, b.projections, strict=True):
        torch.testing.assert_close(pa.proj, pb.proj, rtol=1e-4, atol=1e-5)
    assert len(loss_log_path(part.out).read_text().splitlines()) == 3


def test_existing_output_is_not_overwritten_without_resume(
    tiny_specs: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "d.safetensors"
    out.write_bytes(b"precious")
    settings = TrainSettings([write_normals(tmp_path / "n", 2)], tiny_specs["main"], out, **FAST)
    with pytest.raises(DecoderError, match="exists; pass --resume"):
        train_decoder(settings, progress=False)
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backbone", "packaged:efficientnet-lite0"], "needs an open_clip: backbone"),
        (["--normal", "/nonexistent/normal"], "normal image folder /nonexistent/normal does not exist"),
        (["--backbone", "open_clip:ViT-Nope-1/openai"], "unknown open_clip model"),
    ],
)
def test_cli_bad_input_is_one_clear_line(
    tiny_specs: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    normal = write_normals(tmp_path / "n", 2)
    base = {
        "--normal": str(normal),
        "--backbone": tiny_specs["main"],
        "--out": str(tmp_path / "d.safetensors"),
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    code = main(
        ["train-decoder", *[x for kv in base.items() for x in kv], "--epochs", "1", "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_trains_and_reports(
    tiny_specs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    normal = write_normals(tmp_path / "n", 4)
    out = tmp_path / "d.safetensors"
    args = ["--normal", str(normal), "--backbone", tiny_specs["main"], "--out", str(out), "--epochs", "1"]
    code = main(["train-decoder", *args, "--device", "cpu", "--product", "plate"])
    assert code == 0 and out.is_file()
    assert f"decoder saved to {out}" in capsys.readouterr().out
    assert read_checkpoint(out, load_backbone(tiny_specs["main"])).prompts.product == "plate"
