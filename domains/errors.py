"""The failure that retrying cannot fix.

    >>> class PILeak(NotRetryable, RuntimeError): ...

Prefect retries a failed stage only for infrastructure failures (`tasks.failures`). An error that
says the input, the config or the data is wrong subclasses `NotRetryable`, so it fails at once
whatever its message. It lives at the bottom of the import graph (domains are imported by config,
tasks and flows alike) so that every layer's own errors can subclass it.
"""

from __future__ import annotations


class NotRetryable(Exception):
    """A failure of the data, config or code path: the same input fails the same way on a retry."""
