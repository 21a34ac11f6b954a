"""The catalog's lock, `<home>/catalog.lock`: queries hold it shared, a change to files they may be reading
(a compaction's swap, a per-run file rewritten in place) holds it exclusively, for milliseconds.

Why: a DuckDB query does not read a file in one step. It lists the glob, opens each file to bind its
schema (`union_by_name`), and opens it again to scan. A file replaced between two of those steps
(`os.replace` of `runs/run.parquet` as a run's status changes) is read with the old file's footer and
the new file's bytes ("TProtocolException: Exceeded size limit"), and a folder swapped mid-listing is
listed half old, half new. Holding the lock shared for the length of a query, and exclusively for the
change, keeps every query on one side of it. New shards need no lock: a new path is not in a listing
until it is whole.

    >>> with reading(home): con.sql(...)            # storage.catalog.connect does this
    >>> with exclusive(home, wait=30): os.replace(tmp, path)
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "catalog.lock"


class LockTimeout(RuntimeError):
    """Queries held the catalog longer than a writer would wait."""


def _lock_fd(home: Path, *, create: bool) -> int | None:
    path = home / LOCK_NAME
    try:
        return os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o644)
    except FileNotFoundError:
        return None  # a home without a catalog yet: no writer has held the lock, none can be mid-change
    except PermissionError:
        if create:
            raise
        return None


@contextmanager
def reading(home: Path) -> Iterator[None]:
    """Hold the catalog shared while a query lists and reads files: a swap waits until it is done."""
    fd = _lock_fd(home, create=False)
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def exclusive(home: Path, wait: float) -> Iterator[None]:
    """Hold the catalog exclusively (no query running) while files readers may be reading change; polls,
    so it never waits on itself or forever. Raises LockTimeout after `wait` seconds of queries that would
    not end."""
    fd = _lock_fd(home, create=True)
    assert fd is not None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"queries held {home / LOCK_NAME} for {wait:.0f} s") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)
