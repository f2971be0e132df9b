"""Queue metrics read from Redis at scrape time: stream lengths, consumer lags, live processes, dead letters.

They describe the deployment, not one process, so one central role exports them (the recorder).
The numbers come from ``pipeline.status.collect``, the same reading ``linewatch status`` prints,
so the dashboard in Grafana and the command line never disagree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import exceptions as redis_errors

from config.station import StationConfig
from pipeline.status import collect

logger = logging.getLogger(__name__)

# stream label -> the key of the station report holding its length
_LENGTHS = {"frames": "frames_in_stream", "flagged": "flagged_in_stream"}
# group label -> the key of the station report holding its lag (None: the group does not exist)
_LAGS = {"inspect": "inspect_lag", "record": "record_lag", "explain": "explain_lag"}


class StreamStateCollector(Collector):
    """A prometheus_client collector that asks Redis at each scrape (every 15 s or so)."""

    def __init__(self, redis_url: str, stations: list[StationConfig], timeout_s: float = 5.0) -> None:
        self.redis_url = redis_url
        self.stations = stations
        self.timeout_s = timeout_s

    def describe(self) -> Iterator[Metric]:
        # without describe(), registering would call collect() and so Redis at start-up
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        up, length, lag, alive, dead, trimmed = families
        try:
            # the scrape runs in the HTTP server's thread, which has no event loop of its own
            report = asyncio.run(asyncio.wait_for(collect(self.redis_url, self.stations), self.timeout_s))
        except (OSError, TimeoutError, redis_errors.RedisError) as e:
            logger.warning("queue metrics unavailable: Redis did not answer (%s)", e)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        for sid, st in report["stations"].items():
            for stream, field in _LENGTHS.items():
                length.add_metric([sid, stream], float(st[field]))
            for group, field in _LAGS.items():
                if st.get(field) is not None:
                    lag.add_metric([sid, group], float(st[field]))
        alive.add_metric(["worker"], float(len(report["workers"])))
        alive.add_metric(["recorder"], float(len(report["recorders"])))
        for name, value in report["counters"].items():
            kind, _, stream = name.partition(":")
            family = {"dead": dead, "trimmed": trimmed}.get(kind)
            if family is not None:
                family.add_metric([stream], float(value))
        yield from families

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
    ]:
        return (
            GaugeMetricFamily("linewatch_redis_up", "1 when Redis answered the last scrape"),
            GaugeMetricFamily(
                "linewatch_stream_length", "Entries in a station's stream", labels=["station", "stream"]
            ),
            GaugeMetricFamily(
                "linewatch_consumer_lag",
                "Entries of a station's stream not yet delivered to a consumer group "
                "(inspect: frames waiting for workers, record: results for the store, explain: LLM backlog)",
                labels=["station", "group"],
            ),
            GaugeMetricFamily(
                "linewatch_processes_alive", "Processes with a live heartbeat in Redis", labels=["role"]
            ),
            CounterMetricFamily(
                "linewatch_dead_letters", "Messages moved to a dead-letter stream", labels=["stream"]
            ),
            CounterMetricFamily(
                "linewatch_trimmed_pending",
                "Pending messages trimmed away before they were processed",
                labels=["stream"],
            ),
        )
