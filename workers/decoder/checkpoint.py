"""Decoder checkpoints (safetensors): trained projections, the backbone they fit, prompts, training state."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from workers.backbones.openclip import OpenClipBackbone
from workers.decoder.prompts import PromptSet
from workers.decoder.zero_shot import PatchProjection
from workers.errors import DecoderError

FORMAT = "linewatch-decoder"
FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """Where a training run stands: enough to resume it exactly after the last finished epoch."""

    epochs_done: int = 0
    losses: list[float] = field(default_factory=list)  # mean loss per finished epoch
    settings: dict = field(default_factory=dict)  # what the run was started with
    optimizer: dict | None = None  # torch optimizer state_dict


@dataclass
class DecoderCheckpoint:
    projections: list[PatchProjection]
    backbone_spec: str
    prompts: PromptSet
    training: TrainingState


def save_checkpoint(
    path: Path,
    projections: list[PatchProjection],
    backbone: OpenClipBackbone,
    prompts: PromptSet,
    training: TrainingState,
) -> None:
    """Write atomically (temp file + rename): an interrupted run leaves the previous epoch's file."""
    tensors: dict[str, torch.Tensor] = {}
    for i, p in enumerate(projections):
        tensors[f"level{i}.norm.weight"] = p.norm.weight.detach()
        tensors[f"level{i}.norm.bias"] = p.norm.bias.detach()
        tensors[f"level{i}.proj"] = p.proj.detach()
    optim_meta = None
    if training.optimizer is not None:
        for index, state in training.optimizer["state"].items():
            for name, value in state.items():
                tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
        optim_meta = training.optimizer["param_groups"]
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "backbone_spec": backbone.spec,
        "backbone_model": backbone.model_name,
        "backbone_fingerprint": backbone.fingerprint,
        "levels": json.dumps(list(backbone.levels)),
        "prompts": prompts.to_json(),
        "epochs_done": str(training.epochs_done),
        "losses": json.dumps(training.losses),
        "settings": json.dumps(training.settings),
        "optimizer_groups": json.dumps(optim_meta),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.float().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def read_checkpoint(path: Path, backbone: OpenClipBackbone) -> DecoderCheckpoint:
    """Load a checkpoint for ``backbone``; DecoderError if it is unreadable or made for another one."""
    if not path.is_file():
        raise DecoderError(f"decoder checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except (SafetensorError, OSError, ValueError) as e:
        raise DecoderError(f"decoder checkpoint {path} cannot be read as safetensors: {e}") from e
    if meta.get("format") != FORMAT:
        raise DecoderError(f"{path} is not a linewatch decoder checkpoint (made by linewatch train-decoder)")
    check_backbone(path, meta, backbone)
    try:
        projections = [_projection(tensors, i) for i in range(len(backbone.levels))]
        optimizer = _optimizer(tensors, meta)
        training = TrainingState(
            int(meta["epochs_done"]), json.loads(meta["losses"]), json.loads(meta["settings"]), optimizer
        )
        prompts = PromptSet.from_json(meta["prompts"])
    except (KeyError, ValueError, TypeError) as e:
        raise DecoderError(f"decoder checkpoint {path} is incomplete or damaged ({e!r})") from e
    return DecoderCheckpoint(projections, meta["backbone_spec"], prompts, training)


def check_backbone(path: Path, meta: dict[str, str], backbone: OpenClipBackbone) -> None:
    """Refuse projections trained on other weights: they would give plausible-looking nonsense."""
    trained_for = meta.get("backbone_spec", "?")
    same_model = meta.get("backbone_model") == backbone.model_name
    if not same_model or meta.get("backbone_fingerprint") != backbone.fingerprint:
        what = "another model" if not same_model else "other weights of the same model"
        raise DecoderError(
            f"decoder {path} was trained for {trained_for} ({what}), not for this station's backbone "
            f"{backbone.spec}; train one for it: linewatch train-decoder --backbone {backbone.spec} ..."
        )


def _projection(tensors: dict[str, torch.Tensor], i: int) -> PatchProjection:
    proj = tensors[f"level{i}.proj"]
    out = PatchProjection(proj.shape[0], proj.shape[1])
    out.norm.load_state_dict(
        {"weight": tensors[f"level{i}.norm.weight"], "bias": tensors[f"level{i}.norm.bias"]}
    )
    with torch.no_grad():
        out.proj.copy_(proj)
    return out


def _optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict | None:
    groups = json.loads(meta.get("optimizer_groups", "null"))
    if groups is None:
        return None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}
