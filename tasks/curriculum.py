"""Which training problems a round uses.

static:  a seeded sample of `domain.train_size` problems, the same every round.
dynamic: each round re-chooses from a pool of `curriculum.pool_size` by the running
         per-problem pass rates of this run, arm and seed (earlier rounds, read from
         DuckDB): a share `explore` of problems not tried yet, then tried problems
         whose pass rate lies in (target_low, target_high), closest to 0.5 first,
         then the rest. Round 1 has no history and is a plain seeded sample.

A pass rate counts first tries only (`curriculum.pass_rate_from: first_tries`): the model's own
rate. Follow-ups are drawn only for failures, and a retry's prompt carries PI, so counting them
(`all_attempts`) would call a problem that only retries solved half-solved.
"""

from __future__ import annotations

import random

from prefect import task
from prefect.cache_policies import NO_CACHE

from domains import Problem
from domains.arith import ArithDomain
from experiments.config import ExperimentConfig
from storage.catalog import query
from tasks.domain import domain_of
from tasks.keys import RoundKey, derive_seed
from tasks.metering import metered

HISTORY_SQL = """
SELECT problem_id, avg(passed::INT) AS rate, count(*) AS n
FROM attempts
WHERE run_id = $run_id AND arm = $arm AND seed = $seed AND phase = 'train' AND round < $round
  AND (attempt_idx = 0 OR $all_attempts)
GROUP BY problem_id
"""


def train_pool(cfg: ExperimentConfig) -> list[Problem]:
    """Every training problem a run of `cfg` can draw (preflight checks them against the evaluation problems):
    a file's whole train split; for a generated domain, a pool 20x the sample (or the curriculum's pool when
    larger), or all a small setting has."""
    domain = domain_of(cfg)
    limit = None
    if isinstance(domain, ArithDomain):
        size = cfg.domain.train_size if cfg.curriculum.mode == "static" else cfg.curriculum.pool_size
        limit = domain.available("train", max(20 * cfg.domain.train_size, size))
    return domain.load("train", limit=limit)


def _pool(cfg: ExperimentConfig, seed: int, size: int) -> list[Problem]:
    pool = train_pool(cfg)
    rng = random.Random(derive_seed("train-problems", seed))
    return rng.sample(pool, min(size, len(pool)))


def static_problems(cfg: ExperimentConfig, seed: int) -> list[Problem]:
    return _pool(cfg, seed, cfg.domain.train_size)


def dynamic_problems(cfg: ExperimentConfig, key: RoundKey, history: dict[str, float]) -> list[Problem]:
    c, want = cfg.curriculum, cfg.domain.train_size
    pool = _pool(cfg, key.seed, max(c.pool_size, want))
    rng = random.Random(derive_seed("curriculum", key.seed, key.round))
    unseen = [p for p in pool if p.problem_id not in history]
    rng.shuffle(unseen)
    in_band = sorted(
        (p for p in pool if p.problem_id in history and c.target_low < history[p.problem_id] < c.target_high),
        key=lambda p: abs(history[p.problem_id] - 0.5),
    )
    rest = [p for p in pool if p.problem_id in history and p not in in_band]
    n_explore = round(c.explore * want) if history else want
    chosen = unseen[:n_explore] + in_band + unseen[n_explore:] + rest
    return chosen[:want]


def history(cfg: ExperimentConfig, key: RoundKey) -> dict[str, float]:
    """problem_id -> pass rate in this run, arm and seed before `key.round` (what `curriculum.pass_rate_from`
    counts: first tries by default)."""
    everything = cfg.curriculum.pass_rate_from == "all_attempts"
    df = query(HISTORY_SQL, params={**key.columns(), "all_attempts": everything})
    return dict(zip(df.problem_id, df.rate))


@task(name="select-problems", cache_policy=NO_CACHE)
def select_problems(cfg: ExperimentConfig, key: RoundKey) -> list[Problem]:
    with metered(key, "select-problems") as m:
        if cfg.curriculum.mode == "static" or key.round == 1:
            chosen = static_problems(cfg, key.seed)
        else:
            chosen = dynamic_problems(cfg, key, history(cfg, key))
        m["n_items"] = len(chosen)
    return chosen
