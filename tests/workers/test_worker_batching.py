"""The worker's batch size follows the backlog: bigger while reads come back full, back down when
the streams keep up (throughput under load, latency when quiet)."""

from workers.inspect_worker import InspectWorker, WorkerOptions


def test_batch_doubles_under_backlog_and_halves_when_streams_keep_up() -> None:
    worker = InspectWorker(None, {}, "w", WorkerOptions(batch_size=16, max_batch_size=64))  # type: ignore[arg-type]
    sizes = []
    for full, got in [
        (True, 16),
        (True, 32),
        (True, 64),
        (True, 64),
        (False, 40),
        (False, 10),
        (False, 5),
        (False, 3),
    ]:
        worker._adapt(full, got)
        sizes.append(worker.batch_size)
    # a half-full batch keeps its size; under half halves it, never below batch_size
    assert sizes == [32, 64, 64, 64, 64, 32, 16, 16]


class _On:
    def __init__(self, device: str) -> None:
        import torch

        self.device = torch.device(device)


def test_without_a_limit_a_gpu_batch_grows_to_four_times_and_a_cpu_batch_keeps_its_size() -> None:
    def grown(device: str) -> int:
        worker = InspectWorker(None, {"s": _On(device)}, "w", WorkerOptions(batch_size=8))  # type: ignore[arg-type, dict-item]
        for _ in range(5):
            worker._adapt(True, worker.batch_size)
        return worker.batch_size

    assert grown("cuda") == 32  # only the device type is read: no GPU needed
    assert grown("cpu") == 8
