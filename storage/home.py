"""Where every output lives. Its own module so that reading the catalog imports nothing heavy."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """The one root of all outputs: $PIDISTILL_HOME, default ./runs (made absolute)."""
    return Path(os.environ.get("PIDISTILL_HOME", "runs")).resolve()
