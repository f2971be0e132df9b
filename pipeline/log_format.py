"""Log output of the roles: readable text on a terminal, one JSON object per line for log collectors.

Log calls pass ids as ``extra={"station": ..., "frame": ...}`` where they have them; the JSON
form carries those as fields, so a collector (Loki, Elasticsearch, journald) can filter one
station or follow one frame across capture, worker and recorder.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

#: record attributes copied into the JSON object when a log call sets them through ``extra``
ID_FIELDS = ("station", "frame", "stream", "entry", "worker")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the ids given, the traceback."""

    def __init__(self, role: str | None = None) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.role:
            out["role"] = self.role
        for name in ID_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str, fmt: Literal["text", "json"] = "text", role: str | None = None) -> None:
    """(Re)configure the root logger: level and format for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(role) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
