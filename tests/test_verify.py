"""Stage `verify`: verifier errors are counted apart from wrong answers, and past `verify.max_error_rate`
the stage fails loudly, unsharded on its own rows, sharded on the whole stage's rows (a shard never
judges itself), with an error Prefect does not retry.

The broken verifier is the real arith checker with a bug: it raises on completions that contain
CRASH, and `domains.base.safe_check` turns that into an ERROR verdict.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from attempt_factory import make_attempt

import tasks.verify
from domains import Problem
from domains.arith import ArithDomain
from experiments.config import load_config
from storage.schema import Attempt
from tasks.failures import is_infrastructure_failure, retry_on_infrastructure
from tasks.keys import RoundKey
from tasks.resume import checkpoint_path, resumable
from tasks.sample import SampleRequest
from tasks.shards import split_requests
from tasks.verify import VerifierErrorRate, check_error_rate, verify, verify_rows

CRASH = "CRASH"
N = 20  # rows of a stage: one per problem
FAIL_AT = (0, 8, 14)  # rows with a wrong answer (never counted as errors)
ERROR_AT = (5, 11, 17, 2, 19)  # rows that crash the checker, the first n of these


class CrashingArith(ArithDomain):
    """arith whose checker has a bug: it raises on any completion containing CRASH."""

    def __init__(self, bug: type[Exception] = ZeroDivisionError, **kwargs):
        super().__init__(**kwargs)
        self.bug, self.calls = bug, 0

    def check(self, problem: Problem, completion: str):
        self.calls += 1
        if CRASH in completion:
            raise self.bug(f"checker bug on {completion!r}")
        return super().check(problem, completion)


@pytest.fixture
def domain(monkeypatch) -> CrashingArith:
    """The stage's domain (what `domain_of(cfg)` gives verify) is the crashing arith."""
    d = CrashingArith()
    monkeypatch.setattr(tasks.verify, "domain_of", lambda cfg, **_: d)
    return d


def cfg_with(max_error_rate: float, *overrides: str):
    return load_config("demo", [f"verify.max_error_rate={max_error_rate}", *overrides])


def problems(n: int = N) -> dict[str, Problem]:
    return {p.problem_id: p for p in ArithDomain().load("test", limit=n)}


def stage_rows(probs: dict[str, Problem], errors=(), fails=FAIL_AT) -> list[Attempt]:
    """One attempt per problem, as `sample` leaves them: the reference solution, except a wrong answer
    at `fails` and a checker-crashing completion at `errors`."""
    rows = []
    for i, p in enumerate(probs.values()):
        completion = f" {CRASH} {i}" if i in errors else " #### -1" if i in fails else p.solution
        rows.append(make_attempt(problem_id=p.problem_id, attempt_id=f"{p.problem_id}-0", completion=completion))
    return rows


# ----------------------------------------------------------------------------- unsharded


def test_a_crashing_checker_gives_error_verdicts_apart_from_wrong_answers(domain):
    probs = problems()
    out = verify_rows(cfg_with(1.0), probs, stage_rows(probs, errors=ERROR_AT[:2]))
    statuses = [r.status for r in out]
    assert statuses.count("pass") == N - 5 and statuses.count("fail") == 3 and statuses.count("error") == 2
    assert [i for i, s in enumerate(statuses) if s == "error"] == [5, 11]
    crashed = out[5]
    assert (crashed.passed, crashed.score) == (False, 0.0)
    assert crashed.feedback == "verifier crashed: ZeroDivisionError: checker bug on ' CRASH 5'"
    assert "verifier crashed" not in out[0].feedback and out[0].feedback.startswith("final answer")


@pytest.mark.parametrize(
    "n_errors, max_error_rate",
    [
        pytest.param(0, 0.0, id="no-errors-zero-tolerance"),
        pytest.param(1, 0.1, id="below-threshold"),
        pytest.param(2, 0.1, id="exactly-at-threshold"),  # 2/20 == 0.1: "more than" the rate fails, not "as many"
        pytest.param(N, 1.0, id="all-errors-threshold-1"),
    ],
)
def test_stage_at_or_below_the_threshold_returns_its_rows(domain, n_errors, max_error_rate):
    probs = problems()
    errors = ERROR_AT[:n_errors] if n_errors < N else range(N)
    rows = stage_rows(probs, errors=errors)
    out = verify_rows(cfg_with(max_error_rate), probs, rows)
    assert [r.attempt_id for r in out] == [r.attempt_id for r in rows]
    assert sum(r.status == "error" for r in out) == n_errors
    # wrong answers are not errors: at the threshold, 3 fails + 2 errors (25 % not passing) still pass 10 %
    assert sum(r.status == "fail" for r in out) == (0 if n_errors == N else 3)


@pytest.mark.parametrize(
    "n_errors, max_error_rate",
    [
        pytest.param(1, 0.0, id="one-error-zero-tolerance"),
        pytest.param(3, 0.1, id="above-threshold"),
        pytest.param(5, 0.2, id="far-above-threshold"),
    ],
)
def test_stage_above_the_threshold_fails_naming_the_count_and_first_error(domain, n_errors, max_error_rate):
    probs = problems()
    rows = stage_rows(probs, errors=ERROR_AT[:n_errors])
    with pytest.raises(VerifierErrorRate) as err:
        verify_rows(cfg_with(max_error_rate), probs, rows)
    message = str(err.value)
    assert message.startswith(f"{n_errors} of {N} verdicts are verifier errors")
    assert f"verify.max_error_rate={max_error_rate}" in message
    first = min(ERROR_AT[:n_errors])  # the first error in row order, not the first one listed
    assert message.endswith(f"first: verifier crashed: ZeroDivisionError: checker bug on ' {CRASH} {first}'")


def test_the_rate_counts_verdict_rows_not_checker_calls(domain):
    """A completion repeated for one problem is checked once, but each of its rows is a verdict."""
    probs = problems()
    rows = stage_rows(probs)
    rows[5:8] = [replace(rows[4], completion=f" {CRASH} again")] * 3  # 3 rows, one (problem, completion) key
    counters = {"n_items": 0, "verifier_calls": 0}
    with pytest.raises(VerifierErrorRate, match=f"^3 of {N} verdicts"):
        verify_rows(cfg_with(0.1), probs, rows, counters)
    assert counters == {"n_items": N, "verifier_calls": N - 2} and domain.calls == N - 2


def test_check_false_returns_rows_past_the_threshold(domain):
    probs = problems()
    out = verify_rows(cfg_with(0.0), probs, stage_rows(probs, errors=range(N)), check=False)
    assert [r.status for r in out] == ["error"] * N


# ----------------------------------------------------------------------------- sharded


SHARDS = 4  # of N problems: 5 rows each


def shard_parts(probs: dict[str, Problem]) -> list[list[SampleRequest]]:
    parts = split_requests([SampleRequest(p, f"prompt {i}") for i, p in enumerate(probs.values())], SHARDS)
    assert [len(p) for p in parts] == [N // SHARDS] * SHARDS
    return parts


def verified_shards(cfg, key: RoundKey, probs: dict[str, Problem], errors) -> list[list[Attempt]]:
    """Each shard through the verify task's body, as `flows.scale` runs it (shard=s)."""
    rows = stage_rows(probs, errors=errors, fails=())
    out = []
    for s, part in enumerate(shard_parts(probs)):
        mine = {r.problem.problem_id for r in part}
        out.append(verify.fn(cfg, key, {p: probs[p] for p in mine}, [r for r in rows if r.problem_id in mine], shard=s))
    return out


def key_in(home: Path) -> RoundKey:
    return RoundKey("r", "a", 0, 1, str(home))


@pytest.mark.parametrize(
    "max_error_rate",
    [
        pytest.param(0.3, id="stage-below-threshold"),
        pytest.param(0.25, id="stage-exactly-at-threshold"),
    ],
)
def test_a_shard_of_only_errors_passes_when_the_whole_stage_is_under(domain, pidistill_home, max_error_rate):
    cfg, probs = cfg_with(max_error_rate, f"scale.shards={SHARDS}"), problems()
    shards = verified_shards(cfg, key_in(pidistill_home), probs, errors=range(5))  # 5 of 5, then 0, 0, 0
    assert [sum(r.status == "error" for r in rows) for rows in shards] == [5, 0, 0, 0]
    with pytest.raises(VerifierErrorRate, match="^5 of 5 verdicts"):
        check_error_rate(cfg, shards[0])  # judged alone, shard 0 would fail
    check_error_rate(cfg, [r for rows in shards for r in rows])  # the stage, 5 of 20, does not


@pytest.mark.parametrize(
    "max_error_rate, fails",
    [
        pytest.param(0.25, False, id="stage-at-threshold"),
        pytest.param(0.2, True, id="stage-above-threshold"),
    ],
)
def test_shards_over_and_under_are_judged_as_the_unsharded_stage(domain, pidistill_home, max_error_rate, fails):
    errors = (0, 1, 5, 6, 10)  # 2, 2, 1, 0 errors of 5 per shard: two shards over either threshold, two under
    cfg, key, probs = cfg_with(max_error_rate, f"scale.shards={SHARDS}"), key_in(pidistill_home), problems()
    shards = verified_shards(cfg, key, probs, errors)
    assert [sum(r.status == "error" for r in rows) for rows in shards] == [2, 2, 1, 0]
    whole = [r for rows in shards for r in rows]
    unsharded = stage_rows(probs, errors=errors, fails=())
    if fails:
        with pytest.raises(VerifierErrorRate, match=r"^5 of 20 verdicts .* first: .*' CRASH 0'$") as sharded_err:
            check_error_rate(cfg, whole)
        with pytest.raises(VerifierErrorRate) as unsharded_err:
            verify.fn(cfg, key, probs, unsharded)
        assert str(sharded_err.value) == str(unsharded_err.value)
    else:
        check_error_rate(cfg, whole)
        assert verify.fn(cfg, key, probs, unsharded) == whole


def test_a_shard_never_checks_itself_but_unsharded_verify_does(domain, pidistill_home):
    cfg, key, probs = cfg_with(0.0), key_in(pidistill_home), problems()
    rows = stage_rows(probs, errors=range(N))
    assert [r.status for r in verify.fn(cfg, key, probs, rows, shard=2)] == ["error"] * N
    with pytest.raises(VerifierErrorRate, match=f"^{N} of {N} verdicts"):
        verify.fn(cfg, key, probs, rows)


def in_a_flow(call):
    """`call()` inside a Prefect flow run, as the round flow runs its stages."""
    from prefect import flow

    return flow(name="verify-test")(call)()


def _sampled(key: RoundKey, probs: dict[str, Problem], errors, shards: int) -> list[SampleRequest]:
    """The stage's requests, with sampling already done: each shard's `sample` checkpoint holds its rows
    (what a resumed run finds), so `sample_and_verify` runs the real verify tasks and no model."""
    rows = {r.problem_id: r for r in stage_rows(probs, errors=errors, fails=())}
    requests = [SampleRequest(p, f"prompt {i}") for i, p in enumerate(probs.values())]
    parts = split_requests(requests, shards) if shards > 1 else [requests]
    names = [f"sample-0-s{s}" for s in range(len(parts))] if shards > 1 else ["sample-0"]
    for name, part in zip(names, parts):
        resumable(key, name, lambda part=part: [rows[r.problem.problem_id] for r in part])
    return requests


@pytest.mark.slow  # Prefect task runs: the ephemeral server starts (~15 s on 2 cores)
@pytest.mark.parametrize(
    "max_error_rate, fails",
    [
        pytest.param(0.25, False, id="one-shard-all-errors-stage-at-threshold"),
        pytest.param(0.2, True, id="one-shard-all-errors-stage-above-threshold"),
    ],
)
def test_sharded_stage_is_checked_once_over_all_shards(domain, pidistill_home, max_error_rate, fails):
    from flows.scale import sample_and_verify

    cfg, key, probs = cfg_with(max_error_rate, f"scale.shards={SHARDS}"), key_in(pidistill_home), problems()
    requests = _sampled(key, probs, errors=range(5), shards=SHARDS)  # shard 0: all errors; stage: 5 of 20
    if fails:
        with pytest.raises(VerifierErrorRate, match="^5 of 20 verdicts"):
            in_a_flow(lambda: sample_and_verify(cfg, key, probs, 0, "no-model", requests))
    else:
        out = in_a_flow(lambda: sample_and_verify(cfg, key, probs, 0, "no-model", requests))
        assert [r.problem_id for r in out] == list(probs) and sum(r.status == "error" for r in out) == 5
    # every shard, shard 0 included, finished and saved its verdicts; only the stage's check can fail
    assert all(checkpoint_path(key, f"verify-0-s{s}").exists() for s in range(SHARDS))
    assert checkpoint_path(key, "verify-0").exists() is not fails


@pytest.mark.slow
def test_unsharded_stage_fails_in_its_verify_task(domain, pidistill_home):
    from flows.scale import sample_and_verify

    cfg, key, probs = cfg_with(0.2), key_in(pidistill_home), problems()
    requests = _sampled(key, probs, errors=range(5), shards=1)
    with pytest.raises(VerifierErrorRate, match="^5 of 20 verdicts"):
        in_a_flow(lambda: sample_and_verify(cfg, key, probs, 0, "no-model", requests))
    assert not checkpoint_path(key, "verify-0").exists()


# ----------------------------------------------------------------------------- not retried


@pytest.fixture
def cuda_like_crash(monkeypatch) -> tuple[dict[str, Problem], list[Attempt]]:
    """A checker that crashes with a RuntimeError reading like a device failure, and 4 attempts that
    set it off: the VerifierErrorRate quotes the first crash, CUDA words and all."""
    d = CrashingArith(bug=RuntimeError)
    monkeypatch.setattr(tasks.verify, "domain_of", lambda cfg, **_: d)
    probs = problems(4)
    completion = f" {CRASH}: CUDA error: device-side assert triggered"
    return probs, [make_attempt(problem_id=p, attempt_id=f"{p}-0", completion=completion) for p in probs]


def test_verifier_error_rate_is_not_an_infrastructure_failure(cuda_like_crash):
    probs, rows = cuda_like_crash
    with pytest.raises(VerifierErrorRate) as err:
        verify_rows(cfg_with(0.0), probs, rows)
    assert "CUDA error" in str(err.value)
    assert is_infrastructure_failure(err.value) is False
    assert is_infrastructure_failure(RuntimeError(str(err.value))) is True  # the same words, as a torch error


@pytest.mark.slow  # a Prefect task run: the ephemeral server starts (~15 s on 2 cores)
def test_prefect_does_not_retry_a_stage_that_fails_on_verifier_errors(cuda_like_crash):
    """A stage that verifies (evaluate, train) retries infrastructure failures once; verifier errors never."""
    from prefect import task

    probs, rows = cuda_like_crash
    tries = []

    @task(retries=1, retry_delay_seconds=0, retry_condition_fn=retry_on_infrastructure)
    def stage(first_try_fails_with: type[BaseException] | None) -> list[Attempt]:
        tries.append(1)
        if first_try_fails_with is not None and len(tries) == 1:
            raise first_try_fails_with("the machine, this once")
        return verify_rows(cfg_with(0.0), probs, rows)

    with pytest.raises(VerifierErrorRate, match="CUDA error"):
        in_a_flow(lambda: stage(None))
    assert len(tries) == 1
    tries.clear()
    with pytest.raises(VerifierErrorRate):
        in_a_flow(lambda: stage(MemoryError))  # retried once for the memory, then the verifier errors end it
    assert len(tries) == 2
