"""The domain object a config names (built once per process) and its held-out problems.

>>> domain_of(cfg).name             # 'arith'
>>> len(eval_problems(cfg)) == cfg.domain.eval_size
"""

from __future__ import annotations

import functools
import json

from domains import Domain, Problem, get_domain
from experiments.config import DomainConfig, ExperimentConfig


@functools.lru_cache(maxsize=16)
def _domain(name: str, path: str | None, options_json: str) -> Domain:
    return get_domain(name, path=path, **json.loads(options_json))


# Domains whose verifier takes `extra_tests` (hidden tests for training rewards, VerifyConfig.extra_tests).
_HIDDEN_TESTS = frozenset({"mbpp", "humaneval"})


def domain_of(cfg: DomainConfig | ExperimentConfig, *, rewards: bool = True) -> Domain:
    """The (cached) domain object a config names: a code domain's sandbox pool starts once per process.
    `rewards`: the domain judges training rewards (hidden tests on, `verify.extra_tests`); False for
    the held-out evaluation, which keeps the dataset's own tests unless `verify.extra_tests_in_eval`."""
    d = cfg.domain if isinstance(cfg, ExperimentConfig) else cfg
    options = dict(d.options)
    if isinstance(cfg, ExperimentConfig) and d.name in _HIDDEN_TESTS and "extra_tests" not in options:
        options["extra_tests"] = cfg.verify.extra_tests if rewards or cfg.verify.extra_tests_in_eval else 0
    return _domain(d.name, d.path, json.dumps(options, sort_keys=True))


def eval_problems(cfg: ExperimentConfig) -> list[Problem]:
    """The held-out problems: the first `eval_size` of the test split, the same for every seed and arm."""
    return domain_of(cfg).load("test", limit=cfg.domain.eval_size)
