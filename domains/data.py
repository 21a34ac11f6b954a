"""Reading problem files, and telling a file path from an HF dataset name: one reader for every domain.

A problem file is JSON Lines, optionally gzipped (`.jsonl.gz`); every row must have the fields
its domain requires, and a bad row fails with its file and line. A row of gsm8k's `test.jsonl`:

    {"question": "Janet's ducks lay 16 eggs per day. ...", "answer": "... #### 18"}

    >>> rows = read_jsonl(Path("gsm8k/test.jsonl"), ("question", "answer"), what="gsm8k row")
    >>> looks_like_path("openai/gsm8k"), looks_like_path("./mine.jsonl")
    (False, True)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from domains.errors import NotRetryable


class DomainError(NotRetryable, ValueError):
    """A domain cannot be built or loaded (unknown name, missing data file, bad row)."""


def read_jsonl(
    path: Path, required: tuple[str, ...] = (), what: str = "row", text_fields: bool = False
) -> list[dict[str, Any]]:
    """The rows of `path`; each must be a JSON object with the `required` fields (strings, with
    `text_fields`). Raises DomainError naming the file and line of the first bad row."""
    if not path.is_file():
        raise DomainError(f"data file not found: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    rows.append(_row(line, required, text_fields, f"{path}:{lineno}: not a {what}"))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DomainError(f"cannot read {path}: {exc}") from exc
    return rows


def _row(line: str, required: tuple[str, ...], text_fields: bool, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DomainError(f"{where} (not JSON: {exc})") from exc
    if not isinstance(row, dict):
        raise DomainError(f"{where} (a JSON {type(row).__name__}, not an object)")
    missing = [k for k in required if k not in row or (text_fields and not isinstance(row[k], str))]
    if missing:
        raise DomainError(f"{where} (missing field(s) {', '.join(missing)})")
    return row


def looks_like_path(name: str) -> bool:
    """A local file or folder (as opposed to an HF hub id such as `openai/gsm8k` or `Qwen/Qwen3-8B`)."""
    return name.startswith((".", "/", "~")) or name.endswith((".jsonl", ".json", ".gz")) or Path(name).exists()
