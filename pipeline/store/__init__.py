"""SQL store: models, migrations, engine and the Store used by the recorder and the dashboard."""

from pipeline.store.engine import make_engine
from pipeline.store.errors import StoreError, StoreUnavailable
from pipeline.store.schema import upgrade
from pipeline.store.store import PurgeOutcome, RecordOutcome, StationSummary, Store

__all__ = [
    "PurgeOutcome",
    "RecordOutcome",
    "StationSummary",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "make_engine",
    "upgrade",
]
