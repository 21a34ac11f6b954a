"""Can a Hugging Face model id be loaded here? Asked before a run writes anything, answered in a line.

    >>> hub_model_problem("Qwen/Qwen3-8B")        # None: cached here, or on the hub and reachable
    >>> hub_model_problem("Qwen/DoesNotExist-0B")
    "no model 'Qwen/DoesNotExist-0B' on the Hugging Face hub"

Without this, a wrong id costs minutes of hub retries and hundreds of lines of tracebacks, retried
as an infrastructure failure, before the run fails with a half-written run folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_TRUE = ("1", "true", "yes", "on")


def hub_model_problem(repo_id: str, timeout: float = 10.0) -> str | None:
    """Why `repo_id` cannot be loaded here, or None when it can (cached, or available from the hub)."""
    import huggingface_hub as hub
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(hub.try_to_load_from_cache(repo_id, "config.json"), str):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return (
            f"{repo_id!r} is not in the local Hugging Face cache ({hub.constants.HF_HUB_CACHE}) and "
            "HF_HUB_OFFLINE is set: download it first, or pass a local model folder"
        )
    try:
        hub.model_info(repo_id, timeout=timeout)
    except GatedRepoError:
        return f"{repo_id!r} is gated on the Hugging Face hub: accept its terms and log in (hf auth login)"
    except RepositoryNotFoundError:
        return f"no model {repo_id!r} on the Hugging Face hub (or it is private: log in with hf auth login)"
    except HfHubHTTPError as exc:
        return f"the Hugging Face hub refused {repo_id!r}: {exc}"
    except Exception as exc:  # no network: DNS, connection, timeout (the client's own error types vary)
        return (
            f"{repo_id!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({type(exc).__name__}: {exc}); download it where the hub is reachable, or pass a local folder"
        )
    return None


_SIZE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)([bBmM])(?![a-zA-Z])")


def size_in_billions(repo_id: str) -> float | None:
    """The parameter count a model id states, in billions: 'Qwen/Qwen3-1.7B' -> 1.7, 'SmolLM2-135M' -> 0.135,
    'DeepSeek-Prover-V1.5-SFT' -> None."""
    m = _SIZE.search(repo_id.rsplit("/", 1)[-1])
    if not m:
        return None
    return float(m.group(1)) / (1000 if m.group(2) in "mM" else 1)


def model_needs(name_or_path: str) -> list[str]:
    """What running `name_or_path` asks of this machine, without the network: a hub download (unless cached
    or a local folder) and a GPU for a model of a billion parameters or more (or of unknown size)."""
    import huggingface_hub as hub

    from models.bundled import is_bundled

    if name_or_path == "tiny" or is_bundled(name_or_path) or Path(name_or_path).expanduser().is_dir():
        return []
    needs = []
    if not isinstance(hub.try_to_load_from_cache(name_or_path, "config.json"), str):
        needs.append("hub download")
    size = size_in_billions(name_or_path)
    if size is None or size >= 1:
        needs.append(f"GPU ({size:g}B)" if size else "GPU")
    return needs
