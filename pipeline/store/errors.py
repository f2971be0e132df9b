"""Errors raised by the SQL store, split by what the caller should do about them."""


class StoreError(Exception):
    """Base class of store errors: a problem that retrying will not fix (bad URL, old schema, …)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is busy right now (connection refused or lost, SQLite locked).

    Nothing was written: the transaction was rolled back. The recorder keeps the stream messages
    un-acknowledged and retries later; no result is lost.
    """


class StoreValueError(StoreError):
    """The database refused a value it cannot store (PostgreSQL: a NUL character in text, a number
    out of range). Retrying will not help; the value must change."""
