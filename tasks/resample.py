"""Re-sample one attempt from its provenance: the same weights, the same draw, the same tokens.

    >>> original, again = resample_attempt("4c1f0e9a2b7d6e5f8a3c")
    >>> again.token_ids == tuple(original["completion_token_ids"])
    True

`redraw_of(attempt_id)` reads what the attempt was drawn with from the catalog: its row, the rows that
share its `sampler_seed` in its stage (its draw), and its arm's config as the run stored it.
`resample_attempt` loads the model with the attempt's backend, refuses other weights than the recorded
`policy_digest`, repeats the draw with `Sampler.resample` and returns the attempt's completion from it.
The unit of a draw is the backend's (models.sampling.base): vLLM, the attempt's one prompt; HF, its whole
chunk, so the chunk's other prompts come along. Exact where the run sampled: the same hardware and
software, and the stage's torch thread count (set here as the stage set it).

Not re-samplable: OPSD rollouts (the student mid-training, whose weights are not saved: re-score them
from `completion_token_ids`), and attempts written before provenance was stored (`sampler_seed` NULL).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.config import ExperimentConfig
from models.sampling import Completion
from storage.catalog import query
from tasks.shards import stage_threads

# "request i sample d of n" (vLLM) | "chunk c prompt j of P sample d of n" (HF)
_KEY = re.compile(r"^(?:request \S+|chunk \S+ prompt (?P<j>\d+) of (?P<P>\d+)) sample (?P<d>\d+) of (?P<n>\d+)$")
_DRAW = ("run_id", "arm", "seed", "round", "phase", "attempt_idx", "sampler", "sampler_seed")


class NotResamplable(ValueError):
    """The attempt does not say enough to draw it again."""


@dataclass(frozen=True)
class Redraw:
    """One attempt's draw, as `Sampler.resample` repeats it."""

    attempt: dict[str, Any]  # the attempt's row
    cfg: ExperimentConfig  # its arm's config, as the run stored it
    prompts: list[str]  # the draw's prompts in order (vLLM: the attempt's alone; HF: its chunk's)
    n: int  # samples per prompt in the draw
    position: tuple[int, int]  # the attempt's (prompt, sample) in the draw's result

    @property
    def backend(self) -> str:
        return str(self.attempt["sampler"])

    @property
    def sampler_seed(self) -> int:
        return int(self.attempt["sampler_seed"])


def parse_sample_key(key: str) -> tuple[int, int, int, int]:
    """(prompt j, prompts P, sample d, n) of a sample_key; a vLLM request is a draw of one prompt (0 of 1)."""
    m = _KEY.match(key)
    if m is None:
        raise NotResamplable(f"sample_key {key!r}: expected 'request i sample d of n' or 'chunk c prompt j of P ...'")
    j, p = (int(m["j"]), int(m["P"])) if m["j"] is not None else (0, 1)
    return j, p, int(m["d"]), int(m["n"])


def redraw_of(attempt_id: str, home: Path | None = None) -> Redraw:
    """What `attempt_id` was drawn with (module docstring); NotResamplable when that cannot be said."""
    rows = query("select * from attempts where attempt_id = $id", home, {"id": attempt_id})
    if rows.empty:
        raise NotResamplable(f"no attempt {attempt_id!r}")
    attempt = rows.iloc[0].to_dict()
    if attempt["phase"] == "opsd":
        raise NotResamplable("an OPSD rollout came from the student mid-training, whose weights are not saved")
    if pd.isna(attempt.get("sampler_seed")):
        raise NotResamplable(f"attempt {attempt_id} has no provenance (written before sampler_seed was stored)")
    j, n_prompts, d, n = parse_sample_key(attempt["sample_key"])
    where = " and ".join(f"{c} = ${c}" for c in _DRAW)
    draw = query(
        f"select distinct sample_key, prompt from attempts where {where}",
        home,
        {c: _plain(attempt[c]) for c in _DRAW},
    )
    by_prompt = {parse_sample_key(k)[0]: p for k, p in zip(draw.sample_key, draw.prompt)}
    if sorted(by_prompt) != list(range(n_prompts)):
        raise NotResamplable(f"the draw of {attempt_id} has prompts {sorted(by_prompt)}, not all {n_prompts}")
    config = query("select config_json from runs where run_id = $run", home, {"run": attempt["run_id"]})
    if config.empty:
        raise NotResamplable(f"no runs row for {attempt['run_id']!r}: its config is unknown")
    cfg = ExperimentConfig.model_validate(json.loads(config.config_json[0])).for_arm(attempt["arm"])
    return Redraw(attempt, cfg, [by_prompt[i] for i in range(n_prompts)], n, (j, d))


def _plain(value: Any) -> Any:
    """numpy scalars from pandas -> Python values, for DuckDB parameters."""
    return value.item() if hasattr(value, "item") else value


def resample_attempt(attempt_id: str, home: Path | None = None) -> tuple[dict[str, Any], Completion]:
    """Draw `attempt_id` again: (its row, the completion drawn in its place). Raises NotResamplable when the
    model loaded now is not the weights recorded (`policy_digest`), or its tokenizer gives the prompt other
    ids than the sampler fed (`prompt_token_sha`)."""
    from models.sampling import get_sampler
    from tasks.sample import draw_settings, style_of

    r = redraw_of(attempt_id, home)
    a, cfg = r.attempt, r.cfg
    s = cfg.sampling
    sampler = get_sampler(
        r.backend, a["model_ref"], cfg.model.device, cfg.model.dtype, s.batch_size, s.engine_options()
    )
    if a.get("policy_digest") and sampler.policy_digest != a["policy_digest"]:
        raise NotResamplable(
            f"{a['model_ref']} now holds weights {sampler.policy_digest}, the attempt was sampled from "
            f"{a['policy_digest']}: the checkpoint changed"
        )
    settings = draw_settings(cfg, a["phase"], int(a["round"]), int(a["attempt_idx"]), style_of(cfg, sampler.tokenizer))
    settings = replace(settings, n=r.n, temperature=float(a["temperature"]))
    sharded = a["phase"] == "train" and cfg.scale.shards > 1  # a shard pins its thread count (tasks.shards)
    with stage_threads(cfg.scale, 0 if sharded else None):
        out = sampler.resample(
            r.prompts,
            r.sampler_seed,
            n=settings.n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            stop=settings.stop,
        )
    j, d = r.position
    again = out[j][d]
    if a.get("prompt_token_sha") and again.prompt_token_sha != a["prompt_token_sha"]:
        raise NotResamplable(f"the tokenizer of {a['model_ref']} now gives the prompt other ids than it was fed")
    return a, again
