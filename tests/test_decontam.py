"""Decontamination: evaluation problems found among training problems, verbatim or nearly, and preflight
refusing a run that would train on them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from domains import get_domain
from domains.base import Problem, stable_hash
from domains.code.mbpp import MBPP_SPLITS, TRAIN_COPIES_OF_TEST
from domains.decontam import SHOWN, THRESHOLD, Contaminated, Overlap, check_decontaminated, overlaps, tokens
from domains.gsm8k import TRAIN_COPIES_OF_TEST as GSM8K_COPIES
from domains.lean import MiniF2FDomain
from experiments.config import load_config
from tasks import runs
from tasks.runs import PreflightError, preflight

DUCKS = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
    "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck "
    "egg. How much in dollars does she make every day at the farmers' market?"
)


def problem(pid: str, question: str, tests: tuple[str, ...] = ()) -> Problem:
    return Problem(problem_id=pid, domain="test", question=question, tests=tests)


def raw_mbpp(split: str) -> list[Problem]:
    """MBPP's split by task id, as the file has it: no known copy dropped."""
    lo, hi = MBPP_SPLITS[split]
    return [p for p in get_domain("mbpp", split_by_task_id=False).load("test") if lo <= p.meta["task_id"] <= hi]


def test_normalization_ignores_case_spacing_and_prose_punctuation_but_not_operators():
    assert tokens("What  is 7*6?\n") == tokens("what is 7 * 6") == ("what", "is", "7", "*", "6")
    assert tokens("What is 7 + 6?") != tokens("What is 7 - 6?")
    assert tokens("assert f([1,2]) == (3, 4)") == tokens("assert f( [1, 2] )==(3,4)")


def test_an_exact_copy_is_found_whatever_its_case_spacing_and_tests():
    train = [problem("t/1", "Add two numbers."), problem("t/2", DUCKS, ("assert ducks() == 18",))]
    evals = [
        problem("e/1", "Something else entirely."),
        problem("e/2", "  " + DUCKS.upper().replace(". ", ".\n\n").replace("'", "\u2019")),
    ]
    assert overlaps(train, evals) == [Overlap("e/2", "t/2", 1.0, exact=True)]


def test_a_copy_reworded_in_a_few_words_is_found():
    reworded = DUCKS.replace("Janet's", "Maria's").replace("muffins", "cakes").replace("daily", "each day")
    assert tokens(reworded) != tokens(DUCKS)
    [found] = overlaps([problem("t/1", "Add two numbers."), problem("t/2", DUCKS)], [problem("e/1", reworded)])
    assert (found.eval_id, found.train_id, found.exact) == ("e/1", "t/2", False)
    assert THRESHOLD <= found.overlap < 1.0


def test_distinct_problems_that_share_wording_are_not_flagged():
    """MBPP's 'rotate left' (test 328) and 'rotate right' (train 743): one word apart in the statement,
    different tests. The closest distinct pair in the bundled data; with the tests it stays under the bar."""
    test, train = {p.problem_id: p for p in raw_mbpp("test")}, {p.problem_id: p for p in raw_mbpp("train")}
    left, right = test["mbpp/328"], train["mbpp/743"]
    assert len(set(tokens(left.question)) ^ set(tokens(right.question))) == 2  # left / right
    assert overlaps([right], [left]) == []
    assert overlaps([problem("t/1", "What is the sum of 3 and 4?")], [problem("e/1", "What is 3 times 4?")]) == []


def test_the_raw_mbpp_splits_hold_four_training_copies_of_test_problems(data_dir):
    """The two known duplicates (704 = 248, 872 = 216: the same statement, other asserts), and two near
    copies: 922 rewords 415 and shares two asserts, 649 rewords 170 and shares one."""
    found = overlaps(raw_mbpp("train"), raw_mbpp("test"))
    assert [(o.eval_id, o.train_id, o.exact) for o in found] == [
        ("mbpp/170", "mbpp/649", False),
        ("mbpp/216", "mbpp/872", True),
        ("mbpp/248", "mbpp/704", True),
        ("mbpp/415", "mbpp/922", False),
    ]
    assert {int(o.train_id[5:]): int(o.eval_id[5:]) for o in found} == TRAIN_COPIES_OF_TEST
    with pytest.raises(Contaminated, match=r"4 of \d+ evaluation problems .*mbpp/216 ~ mbpp/872 \(same statement\)"):
        check_decontaminated(raw_mbpp("train"), raw_mbpp("test"))


def test_the_bundled_splits_leave_the_copies_out(data_dir):
    mbpp_train = {p.problem_id for p in get_domain("mbpp").load("train")}
    assert not mbpp_train & {f"mbpp/{t}" for t in TRAIN_COPIES_OF_TEST}
    assert len(mbpp_train) == len(raw_mbpp("train")) - len(TRAIN_COPIES_OF_TEST)
    gsm8k = get_domain("gsm8k")
    assert not {p.problem_id for p in gsm8k.load("train")} & set(GSM8K_COPIES)
    raw = [json.loads(line)["question"] for line in (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()]
    copies = [problem(pid, q) for q in raw if (pid := "gsm8k-" + stable_hash(q, n=10)) in GSM8K_COPIES]
    assert len(copies) == len(GSM8K_COPIES)
    for copy in copies:  # one at a time: a test problem is reported with its closest copy only
        assert [(o.train_id, o.eval_id) for o in overlaps([copy], gsm8k.load("test"))] == [
            (copy.problem_id, GSM8K_COPIES[copy.problem_id])
        ]


def test_the_full_gsm8k_splits_compare_in_well_under_seconds(data_dir):
    d = get_domain("gsm8k")
    train, evals = d.load("train"), d.load("test")
    start = time.perf_counter()
    assert overlaps(train, evals) == []
    assert time.perf_counter() - start < 5.0  # ~0.3 s on 2 busy cores; a quadratic slip would take minutes


def test_arith_is_compared_verbatim_only():
    """Its problems are one template: 'What is 7 * 6 + 48 - 15?' and '... - 16?' share half their 8-grams."""
    d = get_domain("arith")
    train, evals = d.load("train", limit=20_000), d.load("test", limit=2_000)
    assert d.exact_duplicates_only and overlaps(train, evals, near=False) == []
    assert overlaps(train, evals)  # what the near check would wrongly call copies


@pytest.fixture
def no_lean(monkeypatch):
    """miniF2F's preflight asks for Lean; its data needs none. The configs that pass with Lean faked are
    forgotten afterwards (preflight checks a config once per process)."""
    monkeypatch.setattr(MiniF2FDomain, "preflight", lambda self: None)
    monkeypatch.setattr(runs, "_PREFLIGHT_PASSED", set())


@pytest.mark.parametrize("name", ["arith", "gsm8k", "mbpp", "minif2f"])
def test_every_bundled_domain_passes_preflights_check(name, data_dir, no_lean):
    preflight(load_config("demo", [f"domain={name}"]))
    preflight(load_config("demo", [f"domain={name}", "domain.eval_size=2000", "curriculum.mode=dynamic"]))


def test_humaneval_trains_on_its_test_problems_only_on_purpose(data_dir):
    """HumanEval has one split: train_on_test reads it as both, which preflight refuses unless told."""
    opted_in = ["domain=humaneval", "domain.options={train_on_test: true}"]
    with pytest.raises(PreflightError, match=r"every one.*humaneval/0 ~ humaneval/0.*domain\.decontaminate=false"):
        preflight(load_config("demo", opted_in))
    preflight(load_config("demo", [*opted_in, "domain.decontaminate=false"]))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_domain_path_with_a_planted_copy_fails_preflight_naming_the_ids(tmp_path, data_dir):
    train = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()[:50]]
    test = [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:20]]
    folder = tmp_path / "mine"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", test)
    write_jsonl(folder / "train.jsonl", train)
    preflight(load_config("demo", ["domain=gsm8k", f"domain.path={folder}"]))  # clean

    original = test[0]["question"]  # Janet's ducks
    planted = original.replace("Janet", "Maria").replace("muffins", "cakes")
    assert planted.count("Maria") == 1 and "cakes" in planted
    write_jsonl(folder / "train.jsonl", [*train, {**test[0], "question": planted}])
    eval_id, train_id = ("gsm8k-" + stable_hash(q, n=10) for q in (original, planted))
    with pytest.raises(PreflightError, match=rf"domain gsm8k: 1 of 20 evaluation problems .*{eval_id} ~ {train_id}"):
        preflight(load_config("demo", ["domain=gsm8k", f"domain.path={folder}", "domain.eval_size=20"]))


def test_one_file_read_as_both_splits_is_refused_unless_on_purpose(tmp_path, data_dir):
    f = tmp_path / "mine.jsonl"
    f.write_text("".join((data_dir / "gsm8k" / "test.jsonl").read_text().splitlines(keepends=True)[:30]))
    both = ["domain=gsm8k", f"domain.path={f}"]
    with pytest.raises(PreflightError, match=rf"30 of 30 .*every one.* and {30 - SHOWN} more; .*decontaminate=false"):
        preflight(load_config("demo", both))
    preflight(load_config("demo", [*both, "domain.decontaminate=false"]))


def test_the_switch_is_stored_only_when_off_so_hashes_stay():
    on, off = load_config("demo"), load_config("demo", ["domain.decontaminate=false"])
    assert "decontaminate" not in on.canonical_json()
    assert '"decontaminate":false' in off.canonical_json() and off.config_hash() != on.config_hash()
