"""The database's clock, as a worker process reads it between round trips.

Every decision hosts share (run_at, leases, back-off, rate windows, schedule
ticks, pruning) is taken in SQL by now(), so a host whose wall clock is wrong
by minutes behaves as a correct one. A worker still needs "now" on the
database's timeline in a few places between round trips: the timer it sets
for a future run_at or a rate window's end (epochs written by the database),
and the retry times an HTTP response asks for. Reading ``time.time()`` there
would start a delayed job minutes early, or leave it minutes late, on a skewed
host. The heartbeat brings back the database's clock_timestamp(), and this
module keeps it as an offset from ``time.monotonic()``, which a host with a
wrong wall clock still keeps right (and which an NTP step does not move).
Until a first reading arrives, the local wall clock stands in.
"""

from __future__ import annotations

import time as _time
from datetime import UTC, datetime

#: The database's epoch minus time.monotonic(), as last read; None before a first reading.
_offset: float | None = None


def observe(db_epoch: float, received: float) -> None:
    """Take a reading: ``db_epoch`` is the database's clock_timestamp(), ``received`` the
    time.monotonic() at which its answer came back.

    The clock is read at the end of its statement, so whatever the statement
    waited for (a lock) is not counted as the database's time: the error is
    the trip back, well under a millisecond on a local network.
    """
    global _offset
    _offset = db_epoch - received


def time() -> float:
    """Seconds since the epoch by the database's clock (the local clock before a first reading)."""
    offset = _offset
    return _time.time() if offset is None else _time.monotonic() + offset


def now() -> datetime:
    """time() as an aware datetime in UTC."""
    return datetime.fromtimestamp(time(), UTC)
