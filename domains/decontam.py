"""Decontamination: no evaluation problem may also be a training problem, verbatim or nearly.

    >>> d = get_domain("gsm8k")
    >>> overlaps(d.load("train"), d.load("test"))       # [] (the loader drops the known copies)
    >>> overlaps(mbpp_train_as_shipped, mbpp_test)[1]   # tests/test_decontam.py: raw_mbpp
    Overlap(eval_id='mbpp/216', train_id='mbpp/872', overlap=1.0, exact=True)
    >>> check_decontaminated(train, evals)              # raises Contaminated naming the ids (ten, and a count)

An evaluation problem overlaps a training problem when

- exact: their statements (`Problem.question`) are the same once normalized (NFKC, lowercased, whitespace,
  quotes, brackets and prose punctuation dropped). A statement is the task, whatever tests come with it: MBPP's
  704 and 248 have one statement and different asserts;
- near: at least `THRESHOLD` of the distinct word `N`-grams of its text (statement plus tests) occur in
  that one training problem's text. The tests take part because, for code, they define the task: MBPP's
  one-line statements differ in a single word between distinct tasks ("rotate a list to the left" /
  "to the right", 0.44 with the tests, 0.80 without), while a copied task copies its asserts too.

A templated domain whose problems differ in a number only (arith: "What is 7 * 6 + 48 - 15?") is
checked for exact copies only (`BaseDomain.exact_duplicates_only`): two such texts look alike yet are
different problems, and its splits are disjoint by construction, which the exact check confirms.

What it does not catch: a paraphrase that shares few word 8-grams (reordered sentences, synonyms
throughout), and contamination outside the run's own data (a model pretrained on the test set).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from domains.base import Problem
from domains.data import DomainError

# Word 8-grams, as PaLM's contamination study (Chowdhery et al. 2022: 8-grams, 70 % of a test example's).
# GPT-3's 13-grams suit web documents; MBPP statements and arith questions have 10-20 words, so 13-grams
# would leave most of them with none and only the exact comparison.
N = 8
# At least half of an eval problem's 8-grams in one training problem. On the bundled data the copies score
# 0.51-0.71 (MBPP 170, 415; GSM8K's plane/train template with three words changed: 0.67) and the closest
# pairs below 0.44 (MBPP's rotate left/right; a GSM8K template with its names and every number changed:
# 0.43); tests/test_decontam.py pins both sides. A copy reworded in 2 of 50 words keeps >= 0.63 of its
# 8-grams, in 3 words >= 0.44 (changes 8 or more words apart; nearer ones cost fewer).
THRESHOLD = 0.5
SHOWN = 10  # overlaps an error names; the rest are counted

# A token is a word or a symbol that changes the problem: '7 + 6' and '7 - 6' differ, 'n-1' is n - 1.
_TOKEN = re.compile(r"\w+|[^\w\s]")
# Punctuation that changes no problem: quotes (straight or curly), brackets, and the rest of Unicode's "other
# punctuation" but the symbols of arithmetic. A rewording moves it; code spacing ('[1,2]' / '[1, 2]') is gone
# already. Dashes stay: '-' is minus.
_PROSE_CATEGORIES = frozenset({"Ps", "Pe", "Pi", "Pf", "Po"})
_ARITHMETIC = frozenset("*/%#&@\\")


@functools.cache  # a few thousand distinct tokens, looked up millions of times
def _prose(token: str) -> bool:
    return token not in _ARITHMETIC and unicodedata.category(token[0]) in _PROSE_CATEGORIES


@dataclass(frozen=True)
class Overlap:
    """An evaluation problem found among the training problems: `overlap` is the share of its n-grams
    that occur in the training problem (1.0 for an exact copy)."""

    eval_id: str
    train_id: str
    overlap: float
    exact: bool

    def __str__(self) -> str:
        how = "same statement" if self.exact else f"{self.overlap:.0%} of its {N}-grams"
        return f"{self.eval_id} ~ {self.train_id} ({how})"


class Contaminated(DomainError):
    """Evaluation problems that are also training problems; `found` lists them all."""

    def __init__(self, found: Sequence[Overlap], evals: int) -> None:
        self.found = list(found)
        shown = ", ".join(str(o) for o in self.found[:SHOWN])
        more = f" and {len(self.found) - SHOWN} more" if len(self.found) > SHOWN else ""
        every = " (every one: the same data for both splits?)" if len(self.found) == evals else ""
        super().__init__(
            f"{len(self.found)} of {evals} evaluation problems are also training problems{every}: {shown}{more}"
        )


def tokens(text: str) -> tuple[str, ...]:
    """`text` normalized: NFKC, lowercase, split into words and symbols, prose punctuation dropped."""
    folded = unicodedata.normalize("NFKC", text).lower()
    return tuple(t for t in _TOKEN.findall(folded) if not _prose(t))


def ngrams(toks: Sequence[str], n: int = N) -> set[int]:
    """The distinct word n-grams of `toks`, hashed (a collision, about 1 in 2**64, adds one shared n-gram);
    none for a text shorter than n, which only the exact check covers."""
    return {hash(g) for g in zip(*(toks[i:] for i in range(n)))}


@dataclass(frozen=True)
class _Text:
    """A problem as compared: its normalized statement, and the n-grams of statement plus tests."""

    statement: tuple[str, ...]
    grams: set[int]


def _text(problem: Problem, near: bool) -> _Text:
    statement = tokens(problem.question)
    if not near:
        return _Text(statement, set())
    return _Text(statement, ngrams(statement + tokens("\n".join(problem.tests))))


def overlaps(train: Sequence[Problem], evals: Sequence[Problem], *, near: bool = True) -> list[Overlap]:
    """Every evaluation problem found among the training problems, in evaluation order: an exact copy
    first, else the training problem sharing the most n-grams. `near=False`: exact copies only."""
    train_texts = [_text(p, near) for p in train]
    eval_texts = [_text(p, near) for p in evals]
    found = {i: (j, 1.0, True) for i, j in _exact(train_texts, eval_texts).items()}
    for i, (j, score) in _near(train_texts, eval_texts).items():
        if i not in found and score >= THRESHOLD:
            found[i] = (j, score, False)
    return [
        Overlap(evals[i].problem_id, train[j].problem_id, score, exact)
        for i, (j, score, exact) in sorted(found.items())
    ]


def _exact(train: Sequence[_Text], evals: Sequence[_Text]) -> dict[int, int]:
    """eval index -> the first training problem with the same statement (an empty statement copies nothing)."""
    first: dict[tuple[str, ...], int] = {}
    for j, t in enumerate(train):
        if t.statement:
            first.setdefault(t.statement, j)
    return {i: first[t.statement] for i, t in enumerate(evals) if t.statement in first}


def _near(train: Sequence[_Text], evals: Sequence[_Text]) -> dict[int, tuple[int, float]]:
    """eval index -> (the training problem sharing the most of its n-grams, that share), for those sharing any.
    The index holds the evaluation problems' n-grams (usually the fewer), and each training problem's are
    looked up in it: one dict lookup per training n-gram, most of them misses."""
    postings: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(evals):
        for gram in t.grams:
            postings[gram].append(i)
    best: dict[int, tuple[int, int]] = {}  # eval index -> (shared n-grams, training index)
    for j, t in enumerate(train):
        shared: dict[int, int] = defaultdict(int)
        for gram in t.grams:
            for i in postings.get(gram, ()):
                shared[i] += 1
        for i, k in shared.items():
            if k > best.get(i, (0, -1))[0]:  # ties keep the earlier training problem: stable output
                best[i] = (k, j)
    return {i: (j, k / len(evals[i].grams)) for i, (k, j) in best.items()}


def check_decontaminated(train: Sequence[Problem], evals: Sequence[Problem], *, near: bool = True) -> None:
    """Raise Contaminated, naming the overlapping ids, when any evaluation problem is a training problem."""
    found = overlaps(train, evals, near=near)
    if found:
        raise Contaminated(found, len(evals))
