"""Benchmark (issue 8): JPEG frames from Redis in, results in Redis out, through one worker, against
the bare encoder forward at batch 32 on the same device in the same run; then latency at offered
loads below capacity.

    # GPU: ViT-L-14-336, random weights, fp16, few-shot bank and zero-shot decoder (mode both)
    python -m tests.benchmarks.worker_throughput --random-open-clip ViT-L-14-336 --device cuda --mode both
    # CPU: the packaged backbone at its default size, as users size CPU-only stations
    python -m tests.benchmarks.worker_throughput --device cpu

A producer process puts frames into the stream as capture does (inspection-size JPEGs, one per
camera frame, spread over ``--stations`` streams); the worker is the real ``InspectWorker``
(decoding on the device on a GPU). Saturated: every frame is waiting, end-to-end frames/s is
timed from the first result to the last. Offered loads: the producer sends at the given fractions
of that rate for ``--seconds`` each, and the capture-to-result latency of each frame (what the
worker writes into the result) gives p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pipeline import keys, streams
from pipeline.capture import encode_jpeg
from pipeline.demo_assets import render_part
from pipeline.messages import FrameMessage, ResultMessage
from pipeline.originals import downsize
from pipeline.redis_server import start_embedded
from tests.benchmarks import machine
from tests.benchmarks.inspector_throughput import random_open_clip, timed
from workers.backbones import load_backbone
from workers.inspect_worker import InspectWorker, WorkerOptions
from workers.inspector import Inspector, inspection_shape
from workers.references import build_station_model


def build(args: argparse.Namespace) -> tuple[Inspector, list[str], int]:
    backbone = (
        random_open_clip(args.random_open_clip) if args.random_open_clip else load_backbone(args.backbone)
    )
    insp = Inspector(backbone, device=args.device)
    size = args.image_size or backbone.default_size
    shape = inspection_shape((size * 3 // 4, size), size, backbone)
    refs = [cv2.resize(render_part(i)[0], (shape[1], shape[0])) for i in range(4)]
    model = build_station_model(insp, "bench-0", refs, size, 0.001)
    if args.mode == "both":
        from workers.decoder.builder import build_decoder
        from workers.decoder.prompts import PromptSet

        model = replace(model, decoder=build_decoder(backbone, PromptSet.for_product("plate")))
    ids = [f"bench-{i}" for i in range(args.stations)]
    for sid in ids:
        insp.add_station(replace(model, station_id=sid))
    return insp, ids, size


def bare_fps(insp: Inspector, size: int, batch: int = 32) -> float:
    shape = inspection_shape((size * 3 // 4, size), size, insp.backbone)
    x = torch.rand(batch, 3, *shape, device=insp.device).to(insp.dtype)

    def sync() -> None:
        if insp.device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        return batch / timed(lambda: insp.backbone(x), 10, sync)


def camera_jpegs(size: int, count: int = 16) -> list[bytes]:
    """Frames as capture sends them: demo camera frames, area-resized to the inspection size."""
    return [encode_jpeg(downsize(render_part(100 + i, None)[0], size), 90) for i in range(count)]


def produce(url: str, stations: list[str], size: int, rate: float, seconds: float, first_seq: int) -> None:
    """A separate process putting frames into the streams at ``rate`` frames/s (0: all at once)."""
    import redis

    jpegs = camera_jpegs(size)
    h, w = cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR).shape[:2]
    r = redis.Redis.from_url(url)
    total = int(rate * seconds) if rate else int(seconds)  # saturated: ``seconds`` is the frame count
    start = time.time()
    for n in range(total):
        if rate:
            delay = start + n / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        sid = stations[n % len(stations)]
        msg = FrameMessage(sid, first_seq + n, time.time(), jpegs[n % len(jpegs)], w, h, w * 4, h * 4)
        r.xadd(keys.frames(sid), msg.to_fields())  # type: ignore[arg-type]
    r.close()


async def results_of(
    r: streams.Redis, stations: list[str], count: int, timeout_s: float
) -> list[ResultMessage]:
    """Read ``count`` results off the result streams (oldest first) as they arrive."""
    out: list[ResultMessage] = []
    last = dict.fromkeys((keys.results(s) for s in stations), "0")
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        reply: Any = await r.xread(last, count=1000, block=500)
        for name, items in reply or []:
            for eid, fields in items:
                last[name.decode()] = eid.decode()
                out.append(ResultMessage.from_fields(fields))
    return out


async def run_load(
    url: str,
    insp: Inspector,
    stations: list[str],
    size: int,
    rate: float,
    amount: float,
    seq0: int,
    batch: int,
) -> dict[str, float]:
    r = streams.connect(url)
    for s in stations:
        await r.delete(keys.frames(s), keys.results(s), keys.flagged(s))
        await streams.ensure_group(r, keys.frames(s), keys.INSPECT_GROUP)
    count = int(rate * amount) if rate else int(amount)
    producer = multiprocessing.get_context("spawn").Process(
        target=produce, args=(url, stations, size, rate, amount, seq0)
    )
    if not rate:  # saturated: every frame waits before the worker starts
        producer.start()
        producer.join()
    stop = asyncio.Event()
    # as linewatch worker runs: the batch grows under a backlog on a GPU (up to 4x), not on a CPU
    options = WorkerOptions(batch_size=batch, max_wait_ms=5)
    worker = asyncio.create_task(
        InspectWorker(streams.connect(url), dict.fromkeys(stations, insp), "bench", options).run(stop)
    )
    if rate:
        producer.start()
    got = await results_of(r, stations, count, timeout_s=600)
    stop.set()
    await worker
    if rate:
        producer.join()
    await r.aclose()
    inspected = sorted(res.inspected_at for res in got)
    lat = np.array([res.latency_ms for res in got])
    span = inspected[-1] - inspected[0] if len(inspected) > 1 else float("nan")
    return {
        "offered_fps": rate or float("inf"),
        "frames": len(got),
        "fps": (len(got) - 1) / span if span else float("nan"),
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    insp, stations, size = build(args)
    bare = bare_fps(insp, size)
    out: dict[str, Any] = {
        "machine": machine.describe(),
        "device": str(insp.device),
        "backbone": insp.backbone.spec,
        "mode": args.mode,
        "dtype": str(insp.dtype),
        "inspection": f"{size} px",
        "bare_encoder_fps_batch32": bare,
    }
    with tempfile.TemporaryDirectory(prefix="lw-wt-") as tmp:
        server = None if args.redis_url else start_embedded(Path(tmp))
        url = args.redis_url or server.url  # type: ignore[union-attr]
        try:
            saturated = await run_load(url, insp, stations, size, 0.0, args.frames, 0, args.batch)
            out["saturated"] = saturated
            out["ratio_to_bare"] = saturated["fps"] / bare
            out["loads"] = []
            for i, fraction in enumerate(args.loads):
                rate = fraction * saturated["fps"]
                row = await run_load(
                    url, insp, stations, size, rate, args.seconds, (i + 1) * 10**7, args.batch
                )
                out["loads"].append({"fraction": fraction, **row})
        finally:
            if server is not None:
                server.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="packaged:efficientnet-lite0")
    p.add_argument(
        "--random-open-clip", default=None, help="open_clip model name, random weights (speed only)"
    )
    p.add_argument("--mode", choices=("few-shot", "both"), default="few-shot")
    p.add_argument("--device", default="auto")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--stations", type=int, default=4, help="frame streams the frames are spread over")
    p.add_argument("--frames", type=int, default=2000, help="frames of the saturated run")
    p.add_argument("--batch", type=int, default=16, help="worker batch size (linewatch worker --batch-size)")
    p.add_argument("--loads", type=lambda t: [float(v) for v in t.split(",")], default=[0.25, 0.5, 0.8])
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each offered load")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--json", type=Path, default=None)
    r = asyncio.run(main_async(p.parse_args()))
    print(json.dumps(r, indent=2))
    s = r["saturated"]
    print(
        f"end to end {s['fps']:.0f} frames/s vs bare encoder {r['bare_encoder_fps_batch32']:.0f} img/s "
        f"(batch 32): ratio {r['ratio_to_bare']:.2f}"
    )
    for row in r["loads"]:
        print(
            f"at {row['fraction']:.0%} load ({row['offered_fps']:.0f} frames/s): "
            f"p50 {row['latency_ms_p50']:.0f} ms, p99 {row['latency_ms_p99']:.0f} ms"
        )


if __name__ == "__main__":
    main()
