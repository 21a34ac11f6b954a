"""Which weights a sampler loaded: `policy_digest(model_ref)`, stored with every attempt (`attempts.policy_digest`).

    >>> policy_digest("runs/r1/checkpoints/arm=rft/seed=0/round=1")   # a folder: its weight files' bytes
    '9c1e4f0a7b2d3e58'
    >>> policy_digest("Qwen/Qwen2.5-0.5B")                            # a hub id: the commit the cache holds
    'hf:060db6499f32faf8b98477b0a26969ef7d8b9987'
    >>> policy_digest("runs/r1/checkpoints/arm=lora/seed=0/round=1")  # an adapter folder: its weights + its base's
    '51d0a2c6e93b7f14+hf:060db6499f32faf8b98477b0a26969ef7d8b9987'

A folder's digest is `domains.base.file_sha256` (16 hex digits) over its weight files (`*.safetensors`, else
`*.bin` weights) in name order: config, tokenizer and training state are not in it. Two rounds that trained
to the same weights share it; a changed weight file changes it. Hashing reads every byte (about a second per
GB), so a digest is kept per (folder, file sizes, mtimes) for the life of the process: a sampler loaded again
on the same checkpoint does not read it again. None: neither a folder with weights nor a cached hub id.
"""

from __future__ import annotations

import functools
from pathlib import Path

from domains.base import file_sha256

_WEIGHTS = ("*.safetensors", "*.bin")
_NOT_WEIGHTS = ("training_args.bin", "optimizer.bin", "scheduler.bin")


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model or adapter folder: its safetensors, else its torch .bin weights."""
    for pattern in _WEIGHTS:
        found = sorted(p for p in folder.glob(pattern) if p.is_file() and p.name not in _NOT_WEIGHTS)
        if found:
            return found
    return []


def policy_digest(model_ref: str) -> str | None:
    """The digest of the weights `model_ref` loads (module docstring); None when it cannot be said."""
    from models.loading import adapter_base

    folder = Path(model_ref).expanduser()
    if folder.is_dir():
        files = weight_files(folder)
        if not files:
            return None
        mine = _files_digest(tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
        base = adapter_base(model_ref)
        if base is None:
            return mine
        return f"{mine}+{policy_digest(base)}"  # an adapter is only a policy together with its base
    commit = hub_commit(model_ref)
    return f"hf:{commit}" if commit else None


@functools.cache
def _files_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    """file_sha256 of the files; keyed on (path, size, mtime) too, so a rewritten file is read again."""
    return file_sha256(*(path for path, _, _ in files))


def hub_commit(repo_id: str) -> str | None:
    """The commit of `repo_id` that the local Hugging Face cache resolves it to (what from_pretrained loaded
    offline); None when it is not cached or not a hub id."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a repo id (a path that does not exist, a malformed name): nothing to resolve
        return None
    return Path(found).parent.name if isinstance(found, str) else None
