"""Every Redis key and stream name linewatch uses, in one place."""

PREFIX = "lw"
INSPECT_GROUP = "inspect"
RECORD_GROUP = "record"
EXPLAIN_GROUP = "explain"
EVIDENCE_GROUP = "evidence"  # capture's group on the flagged streams: it sends the originals


def frames(station_id: str) -> str:
    """Stream of captured frames (inspection-size JPEG + metadata)."""
    return f"{PREFIX}:frames:{station_id}"


def results(station_id: str) -> str:
    """Stream of inspection results, one per frame."""
    return f"{PREFIX}:results:{station_id}"


def flagged(station_id: str) -> str:
    """Stream of flagged results, consumed by the explainer."""
    return f"{PREFIX}:flagged:{station_id}"


def verdicts(station_id: str) -> str:
    """Stream of explainer verdicts."""
    return f"{PREFIX}:verdicts:{station_id}"


def dead_letter(stream: str) -> str:
    """Messages that failed too often on ``stream``; kept for inspection, counted, never dropped silently."""
    return f"{PREFIX}:dead:{stream}"


def station_state(station_id: str) -> str:
    """Hash with the capture state of a station (online/reconnecting/offline, fps, dropped, …)."""
    return f"{PREFIX}:state:{station_id}"


def heartbeat(role: str, name: str) -> str:
    """Key with a TTL that a live process refreshes; its absence means the process is gone."""
    return f"{PREFIX}:alive:{role}:{name}"


def stations_set() -> str:
    """Set of station ids known to the running deployment."""
    return f"{PREFIX}:stations"


def counters() -> str:
    """Hash of transport counters: dead-lettered and trimmed-away messages, per stream."""
    return f"{PREFIX}:counters"


def last_seq(station_id: str) -> str:
    """The last frame seq published for a station, so a restarted capture continues the numbering."""
    return f"{PREFIX}:seq:{station_id}"


def station_model(station_id: str) -> str:
    """JSON of the model a worker loaded for a station: backbone, mode, bank sizes, calibration."""
    return f"{PREFIX}:model:{station_id}"


def evidence(station_id: str) -> str:
    """Stream of original-size frames of flagged inspections, from capture to the recorder."""
    return f"{PREFIX}:evidence:{station_id}"


def problem(name: str) -> str:
    """A problem for operators (JSON, with a TTL): evidence not writable, a role restarting, …"""
    return f"{PREFIX}:problem:{name}"


def supervised(host: str) -> str:
    """Hash of the children ``linewatch run`` supervises on ``host``: state, pid, restarts, last exit."""
    return f"{PREFIX}:supervised:{host}"
