"""Benchmark: Inspector frames/s against the bare backbone forward on the same batch and device.

    python -m tests.benchmarks.inspector_throughput                       # CPU, packaged backbone
    python -m tests.benchmarks.inspector_throughput --random-open-clip ViT-L-14-336 --device cuda

    # per-frame cost of the Inspector at each batch size (a worker whose streams keep up runs small ones)
    OMP_NUM_THREADS=1 python -m tests.benchmarks.inspector_throughput --batch-sweep 1,2,4,8,16

    # issue 4's cost check: zero-shot decoder on top of few-shot, batch 32, ViT-L-14-336 fp16 (GPU)
    python -m tests.benchmarks.inspector_throughput --random-open-clip ViT-L-14-336 --device cuda \
        --batch 32 --mode both

``--random-open-clip`` builds the open_clip model with random weights (speed only; never for
accuracy). With ``--mode zero-shot|both`` the same frames are also timed in few-shot mode and
``decoder_overhead`` is the extra per-frame cost relative to few-shot. The frames are BGR uint8
at the inspection resolution, as capture delivers them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from tests.benchmarks import machine
from workers.backbones import Backbone, load_backbone
from workers.inspector import Inspector, inspection_shape
from workers.references import build_station_model


def random_open_clip(name: str) -> Backbone:
    import open_clip

    from workers.backbones.openclip import OpenClipBackbone

    return OpenClipBackbone(open_clip.create_model(name, pretrained=None), name, f"random:{name}")


def timed(fn, iters: int, sync) -> float:
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t0) / iters


def interleaved(fns: list, rounds: int, iters: int, sync) -> list[float]:
    """Median seconds per call of each function, timed in alternating rounds of ``iters`` calls:
    a machine whose speed drifts (other jobs, clock changes) then slows all of them alike."""
    per_round: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for times, fn in zip(per_round, fns, strict=True):
            times.append(timed(fn, iters, sync))
    return [float(np.median(t)) for t in per_round]


def batch_sweep(insp: Inspector, shape: tuple[int, int], sizes: list[int], rng: np.random.Generator) -> dict:
    """Milliseconds per frame of ``Inspector.inspect`` at each batch size (medians of 5 rounds)."""
    frames = [("bench", rng.integers(0, 255, (*shape, 3), dtype=np.uint8)) for _ in range(max(sizes))]
    out = {}
    for b in sizes:
        items = frames[:b]
        (per_call,) = interleaved([lambda items=items: insp.inspect(items)], 5, max(2, 32 // b), lambda: None)
        out[str(b)] = round(per_call / b * 1000, 2)
    return out


def run(args: argparse.Namespace) -> dict:
    backbone = (
        random_open_clip(args.random_open_clip) if args.random_open_clip else load_backbone(args.backbone)
    )
    insp = Inspector(backbone, device=args.device)
    size = args.image_size or backbone.default_size
    shape = inspection_shape((size * 3 // 4, size), size, backbone)
    rng = np.random.default_rng(0)
    refs = [rng.integers(0, 255, (*shape, 3), dtype=np.uint8) for _ in range(args.k)]
    insp.add_station(build_station_model(insp, "bench", refs, size, 0.001, max_bank=args.max_bank))
    if args.mode != "few-shot":
        from workers.decoder.builder import build_decoder
        from workers.decoder.prompts import PromptSet

        decoder = build_decoder(backbone, PromptSet.for_product("part"))
        few = insp.stations["bench"]
        mode = replace(
            few, station_id="mode", decoder=decoder, bank=few.bank if args.mode == "both" else None
        )
        insp.add_station(mode)
    if args.batch_sweep:
        return {
            "backbone": backbone.spec,
            "device": str(insp.device),
            "threads": torch.get_num_threads(),
            "ms_per_frame_by_batch": batch_sweep(insp, shape, args.batch_sweep, rng),
            "machine": machine.describe(),
        }
    frames = [("bench", rng.integers(0, 255, (*shape, 3), dtype=np.uint8)) for _ in range(args.batch)]
    x = insp.to_tensor([f for _, f in frames], shape)

    def sync() -> None:
        if insp.device.type == "cuda":
            torch.cuda.synchronize()

    def bare_forward() -> None:
        with torch.inference_mode():
            insp.backbone(x)

    fns = [bare_forward, lambda: insp.inspect(frames)]
    if args.mode != "few-shot":
        mode_frames = [("mode", f) for _, f in frames]
        fns.append(lambda: insp.inspect(mode_frames))
    bare, full, *rest = interleaved(fns, args.rounds, args.iters, sync)
    extra = {}
    if rest:
        with_decoder = rest[0]
        extra = {
            "mode": args.mode,
            "mode_fps": args.batch / with_decoder,
            "decoder_overhead": with_decoder / full - 1.0,
        }
    return {
        "backbone": backbone.spec,
        "device": str(insp.device),
        "dtype": str(insp.dtype),
        "input": f"{shape[0]}x{shape[1]}",
        "batch": args.batch,
        "rounds": f"{args.rounds} x {args.iters} calls each, medians",
        "bank": insp.stations["bench"].bank.sizes,
        "bare_fps": args.batch / bare,
        "inspector_fps": args.batch / full,
        "ratio": bare / full,
        "threads": torch.get_num_threads(),
        "machine": machine.describe(),
        **extra,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="packaged:efficientnet-lite0")
    p.add_argument("--random-open-clip", default=None, help="open_clip model name, random weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=5, help="calls per timing round")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-bank", type=int, default=1024)
    p.add_argument(
        "--mode", choices=("few-shot", "zero-shot", "both"), default="few-shot", help="also time this mode"
    )
    p.add_argument(
        "--batch-sweep",
        type=lambda t: [int(v) for v in t.split(",")],
        default=None,
        help="instead: ms per frame of the Inspector at these batch sizes, e.g. 1,2,4,8,16",
    )
    r = run(p.parse_args())
    print(json.dumps(r, indent=2))
    if "ms_per_frame_by_batch" in r:
        return
    print(
        f"Inspector {r['inspector_fps']:.1f} frames/s vs bare backbone {r['bare_fps']:.1f} img/s: "
        f"ratio {r['ratio']:.2f}"
    )
    if "decoder_overhead" in r:
        print(
            f"mode {r['mode']}: {r['mode_fps']:.1f} frames/s, "
            f"{100 * r['decoder_overhead']:+.1f}% per frame vs few-shot"
        )


if __name__ == "__main__":
    main()
