"""Hidden test inputs (domains/code/mutate.py): argument tuples mutated from a problem's shown
ones keep the shown arity and types and what every shown tuple satisfies (a sorted list, an int
that is a list's length, lowercase strings, ...), repeat nothing, stay small, and are the same
for the same seed, in any process."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest

from domains.code import plain
from domains.code.mutate import PER_WANTED, mutate_inputs

ARG_SETS = {
    "tuples": [((1, 2, 3),), ((4, 5),)],
    "str-and-char": [("hello", "l"), ("abcda", "a"), ("PHP", "P")],
    "list-and-len": [([1, 2, 3, 4], 4), ([5, 1], 2)],
    "sorted-list": [([1, 3, 5],), ([2, 4],)],
    "dict": [({"a": 1},)],
    "dict-two-keys": [({"a": 1, "b": 20},), ({"c": 3, "a": 4},)],
    "floats": [(3.5, 2.25), (1.0, 0.5)],
    "bools": [(True, 3), (False, 5)],
    "nested-lists": [([[1, 2], [3]],), ([[4]],)],
    "negative-ints": [(10, -20, 30), (-5, 0, 7)],
    "sets": [({1, 2, 3}, {"x", "y"})],
    "word-list": [(["apple", "banana"], 2), (["kiwi"], 1)],
    "records": [((1, "a"),), ((2, "b"),)],
    "mixed-position": [(1, "a", 3), ("b", 2, 4)],
    "none": [(None, 1), (None, 2)],
}


def _key(args):
    return plain.dumps(args)  # 1, 1.0 and True differ; sets in one order


@pytest.fixture(params=sorted(ARG_SETS))
def case(request):
    shown = ARG_SETS[request.param]
    return shown, mutate_inputs(shown, 5, "seed")


def test_same_seed_same_inputs_other_seed_others(case):
    shown, made = case
    assert made and mutate_inputs(shown, 5, "seed") == made
    assert mutate_inputs(shown, 5, "other seed") != made


def test_arity_and_types_are_the_shown_ones(case):
    shown, made = case
    for args in made:
        assert len(args) == len(shown[0])
        for i, v in enumerate(args):
            assert type(v) in {type(a[i]) for a in shown}


def test_a_position_of_mixed_types_is_copied_with_its_tuple(case):
    shown, made = case
    mixed = [i for i in range(len(shown[0])) if len({type(a[i]) for a in shown}) > 1]
    for args in made:
        assert any(all(args[i] == a[i] for i in mixed) for a in shown)


def test_nothing_shown_or_repeated(case):
    shown, made = case
    keys = [_key(a) for a in made]
    assert len(set(keys)) == len(keys)
    assert not set(keys) & {_key(a) for a in shown}


def test_at_most_four_per_wanted_and_small(case):
    shown, made = case
    assert len(made) <= PER_WANTED * 5
    for i in range(len(shown[0])):
        sized = [len(a[i]) for a in shown if isinstance(a[i], (str, list, tuple, dict, set))]
        if sized and len(sized) == len(shown):
            assert all(len(args[i]) <= 2 * max(sized) + 3 for args in made)


@pytest.mark.parametrize("name", sorted(ARG_SETS))
def test_shown_values_are_left_alone(name):
    shown = copy.deepcopy(ARG_SETS[name])
    made = mutate_inputs(shown, 5, "s")
    assert shown == ARG_SETS[name]
    for args in made:  # nothing shared: a caller may change what it gets
        for v in args:
            assert not any(v is w for a in shown for w in a if isinstance(w, (list, dict, set)))


def _made(name, n=10, seed="s"):
    return mutate_inputs(ARG_SETS[name], n, seed)


def test_an_int_that_is_a_length_stays_one():
    made = _made("list-and-len")
    assert {len(a[0]) for a in made} != {4, 2}  # the lists did change length
    assert all(a[1] == len(a[0]) for a in made)
    assert all(a[1] == len(a[0]) for a in _made("word-list"))


def test_a_sorted_list_stays_sorted_non_empty_and_distinct():
    for (xs,) in _made("sorted-list"):
        assert xs and xs == sorted(xs) and len(set(xs)) == len(xs)


def test_ints_keep_their_range():
    digits = [a[1] for a in _made("bools")]
    assert all(0 <= d <= 9 for d in digits)
    signed = _made("negative-ints", n=20)
    assert any(a[0] < 0 for a in signed)  # negatives were shown at position 0
    assert all(-50 <= v <= 70 for a in signed for v in a)


def test_non_negative_ints_stay_non_negative():
    made = mutate_inputs([(10, 30), (12, 0)], 20, "s")
    assert made and all(a[0] >= 0 and a[1] >= 0 for a in made)


def test_strings_keep_their_alphabet_case_and_characters_stay_characters():
    made = mutate_inputs([("hello", "l"), ("world", "o")], 10, "s")
    assert made
    for s, c in made:
        assert s and s.islower() and set(s) <= set("helloworld")
        assert len(c) == 1
    digits = mutate_inputs([("123",), ("9075",)], 10, "s")
    assert digits and all(s.isdigit() for (s,) in digits)


def test_floats_keep_their_decimals():
    for x, y in _made("floats"):
        assert type(x) is float and round(x, 1) == x and round(y, 2) == y


def test_containers_keep_their_element_types():
    for (rows,) in _made("nested-lists"):
        assert all(type(r) is list and all(type(v) is int for v in r) for r in rows)
    for ints, strs in _made("sets"):
        assert all(type(v) is int for v in ints) and all(type(v) is str for v in strs)
    for (d,) in _made("dict-two-keys"):
        assert d and set(d) <= {"a", "b", "c"} and all(type(v) is int for v in d.values())
    for (pair,) in _made("records"):
        assert len(pair) == 2 and type(pair[0]) is int and type(pair[1]) is str


def test_none_is_kept():
    made = _made("none")
    assert made and all(a[0] is None for a in made)


@pytest.mark.parametrize("shown", [[(), ()], [], [((),)]], ids=["no-arguments", "no-tests", "empty-tuple"])
def test_nothing_to_mutate_gives_nothing(shown):
    assert mutate_inputs(shown, 5, "s") == []


def test_none_wanted_gives_none():
    assert mutate_inputs(ARG_SETS["tuples"], 0, "s") == []


def test_arities_that_differ_use_the_common_one():
    made = mutate_inputs([(1, 2), (3, 4), (5,)], 5, "s")
    assert made and all(len(a) == 2 for a in made)


def test_the_same_in_another_process():
    """Sets of strs iterate in an order that depends on the hash seed: inputs must not."""
    code = (
        "from domains.code.mutate import mutate_inputs as m; from domains.code.plain import dumps; "
        "print([dumps(a) for a in m([({'pear', 'fig', 'kiwi'}, ['ab', 'c'])], 8, 'x')])"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(runs) == 1
