"""Plain data (domains/code/plain.py): what a sandboxed solution's outputs become before the host
compares them. Values round-trip exactly; the few stdlib types whose `==` is a builtin's become
that builtin; anything that could run the solution's code in a comparison is refused, with a
short message that never asks the object to describe itself; forged JSON is refused too."""

from __future__ import annotations

import collections
import math
import sys
from typing import NamedTuple

import pytest

from domains.code import plain

Point = collections.namedtuple("Point", "x y")


class Pair(NamedTuple):
    a: int
    b: str


NESTED = [1, (2, [3, {"k": (4,)}]), {(1, "a"): [frozenset({1, 2})], (): None}]
ROUND_TRIPS = {
    "ints": [0, -1, 2**63 - 1, -(2**63) + 1],
    "big-ints": [2**63, -(2**63), 10**5000, -(10**5000)],
    "floats": [0.0, 1.5, -2.25e-300, 1e300, 0.1 + 0.2],
    "strs": ["", "héllo\n\u2603\U0001f600", "\x00"],
    "nested": NESTED,
    "tuple-keys": {(1, 2): "a", (3, (4, 5)): "b", frozenset({"x"}): 1},
    "sets": [set(), {1, 2, 3}, frozenset(), frozenset({"a", "b"}), {(1, 2), (3,)}],
    "bytes": [b"", b"\x00\xffab", bytearray(b"xy")],
    "complex": [1 + 2j, complex(0, -0.0), complex(1e300, -1e-300)],
    "empty": [[], (), {}, None, True, False],
    "deep-199": [[[[0]]]],
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_values_round_trip(name):
    v = ROUND_TRIPS[name]
    back = plain.loads(plain.dumps(v))
    assert back == v and _types(back) == _types(v)


def _types(v):
    """The value's shape with every type named: == alone takes 1 for True and 1.0."""
    if type(v) in (list, tuple):
        return (type(v), [_types(x) for x in v])
    if type(v) is dict:
        return (dict, sorted((repr(k), _types(x)) for k, x in v.items()))
    if type(v) in (set, frozenset):
        return (type(v), sorted(repr(x) for x in v))
    return type(v)


def test_bools_ints_and_floats_stay_apart():
    assert plain.decode(plain.encode(True)) is True
    assert type(plain.decode(plain.encode(1))) is int
    assert type(plain.decode(plain.encode(1.0))) is float
    assert plain.dumps([True, 1, 1.0]) == "[true,1,1.0]"


@pytest.mark.parametrize("x", [float("nan"), float("inf"), float("-inf"), -0.0])
def test_special_floats_round_trip(x):
    back = plain.loads(plain.dumps([x, complex(x, x)]))
    assert _same_float(back[0], x)
    assert _same_float(back[1].real, x) and _same_float(back[1].imag, x)


def _same_float(a, b):
    return type(a) is float and (a == b and math.copysign(1, a) == math.copysign(1, b) or (a != a and b != b))


def test_big_ints_are_hex_and_never_printed_in_decimal():
    assert plain.dumps(2**63) == '{"I":"8000000000000000"}'
    assert plain.dumps(2**63 - 1) == "9223372036854775807"
    assert len(plain.dumps(10**5000)) < 4200  # 5000 digits: past str()'s limit, and shorter in hex


def test_sets_are_written_in_one_order_whatever_the_hash_seed():
    words = {"pear", "apple", "fig", "kiwi"}
    assert plain.dumps(words) == '{"S":["apple","fig","kiwi","pear"]}'
    assert plain.dumps({(2, "b"), (1, "a")}) == '{"S":[{"T":[1,"a"]},{"T":[2,"b"]}]}'


@pytest.mark.parametrize(
    "value, expected",
    [
        (collections.Counter("abca"), {"a": 2, "b": 1, "c": 1}),
        (collections.OrderedDict([("b", 1), ("a", 2)]), {"b": 1, "a": 2}),
        (collections.defaultdict(list, {"k": [1]}), {"k": [1]}),
        (Point(1, 2), (1, 2)),
        (Pair(1, "x"), (1, "x")),
        ([collections.Counter({Point(1, 2): 3})], [{(1, 2): 3}]),
    ],
    ids=["Counter", "OrderedDict", "defaultdict", "namedtuple", "NamedTuple", "nested"],
)
def test_stdlib_types_become_the_builtin_they_equal(value, expected):
    back = plain.loads(plain.dumps(value))
    assert back == expected and _types(back) == _types(expected)


class Yes(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


class LoudRepr(int):
    def __repr__(self):
        raise RuntimeError("repr called")

    __str__ = __repr__


class Meta(type):
    @property
    def __name__(cls):
        raise RuntimeError("metaclass name called")

    def __hash__(cls):
        raise RuntimeError("metaclass hash called")

    def __eq__(cls, other):
        raise RuntimeError("metaclass eq called")


class Odd(metaclass=Meta):
    pass


class AlwaysEqual:
    def __eq__(self, other):
        return True


class PatchedTuple(Point):  # a subclass of a namedtuple may override what a namedtuple keeps
    def __eq__(self, other):
        return True

    __hash__ = tuple.__hash__


class MyList(list):
    pass


class MyDict(dict):
    pass


class MyTuple(tuple):
    pass


class MyFloat(float):
    pass


class MyCounter(collections.Counter):
    pass


REJECTED = {
    "str-subclass": (Yes("a"), "a Yes (a subclass of str)"),
    "int-subclass-loud-repr": (LoudRepr(3), "a LoudRepr (a subclass of int)"),
    "float-subclass": (MyFloat(1.5), "a MyFloat (a subclass of float)"),
    "list-subclass": (MyList([1]), "a MyList (a subclass of list)"),
    "dict-subclass": (MyDict(a=1), "a MyDict (a subclass of dict)"),
    "tuple-subclass": (MyTuple((1,)), "a MyTuple (a subclass of tuple)"),
    "counter-subclass": (MyCounter("a"), "a MyCounter (a subclass of dict)"),
    "namedtuple-subclass": (PatchedTuple(1, 2), "a PatchedTuple (a subclass of tuple)"),
    "eq-object": (AlwaysEqual(), "an AlwaysEqual"),
    "generator": ((x for x in [1]), "a generator"),
    "map": (map(int, "12"), "a map"),
    "range": (range(3), "a range"),
    "function": (len, "a builtin_function_or_method"),
    "metaclass-name-raises": (Odd(), "an Odd"),
    "class-itself": (Odd, "a Meta"),  # a class is not plain data either
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_what_could_fool_a_comparison_is_refused(name):
    value, said = REJECTED[name]
    with pytest.raises(plain.PlainError) as err:
        plain.dumps(value)
    msg = str(err.value)
    assert said in msg and "only plain data" in msg and len(msg) < 300


def test_a_nested_offender_is_located():
    with pytest.raises(plain.PlainError, match=r"a Yes \(a subclass of str\) at \[1\]\['k'\]\[0\]:"):
        plain.encode([0, {"k": [Yes("x")]}])
    with pytest.raises(plain.PlainError, match=r"a Yes \(a subclass of str\) as a dict key at \[0\]:"):
        plain.encode([{Yes("x"): 1}])
    with pytest.raises(plain.PlainError, match=r"a Yes \(a subclass of str\) in a set at \[2\]:"):
        plain.encode((1, 2, frozenset({Yes("x")})))


def test_a_lying_name_is_not_repeated():
    cls = type("evil\nname" + "x" * 100, (), {})
    with pytest.raises(plain.PlainError, match=r"^returned an object:"):
        plain.encode(cls())


def test_a_cycle_is_named_as_such():
    loop: list = []
    loop.append(loop)
    with pytest.raises(plain.PlainError, match="contains itself"):
        plain.encode(loop)
    d: dict = {}
    d["k"] = (1, [d])
    with pytest.raises(plain.PlainError, match="contains itself"):
        plain.encode(d)


def _nest(depth):
    v: object = 0
    for _ in range(depth):
        v = [v]
    return v


def test_depth_is_limited_without_recursion_errors():
    assert plain.loads(plain.dumps(_nest(plain.MAX_DEPTH))) == _nest(plain.MAX_DEPTH)
    for depth in (plain.MAX_DEPTH + 1, 500, 50_000):
        with pytest.raises(plain.PlainError, match="nested deeper than 200"):
            plain.encode(_nest(depth))


@pytest.mark.parametrize(
    "wrap, levels",
    [(lambda v: {"k": v}, 1), (lambda v: (v,), 1), (lambda v: frozenset({v}), 1), (lambda v: frozenset({(v,)}), 2)],
    ids=["dict", "tuple", "frozenset", "frozenset-of-tuples"],
)
def test_every_container_nests_200_deep_within_the_recursion_limit(wrap, levels):
    v: object = 0
    for _ in range(plain.MAX_DEPTH // levels):
        v = wrap(v)  # a dict is three JSON levels: 600 in all
    assert plain.loads(plain.dumps(v)) == v
    with pytest.raises(plain.PlainError, match="nested deeper than 200"):
        plain.dumps([v])


def test_a_low_recursion_limit_gives_a_plain_error():
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(120, _stack_depth() + 60))
    try:
        with pytest.raises(plain.PlainError, match="too deep"):
            plain.encode(_nest(150))
    finally:
        sys.setrecursionlimit(old)


def _stack_depth():
    frame, n = sys._getframe(), 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


def test_size_is_limited():
    wide = [[0] * 1000] * 2001  # shared rows count each time they are reached
    with pytest.raises(plain.PlainError, match="more than 2,000,000 items"):
        plain.encode(wide)


FORGED = {
    "unknown-tag": '{"Q":[1]}',
    "two-tags": '{"T":[],"S":[]}',
    "plain-object": '{"a":1}',
    "empty-object": "{}",
    "NaN-token": "[NaN]",
    "Infinity-token": "-Infinity",
    "overflowing-float": "1e999",
    "untagged-big-int": "9223372036854775808",
    "small-int-tagged": '{"I":"ff"}',
    "int-tag-not-hex": '{"I":" 8000000000000000"}',
    "int-tag-leading-zero": '{"I":"08000000000000000"}',
    "float-tag-other": '{"F":"1.5"}',
    "bytes-with-space": '{"B":"61 62"}',
    "bytes-uppercase": '{"B":"FF"}',
    "complex-of-ints": '{"C":[1,2]}',
    "unhashable-set-element": '{"S":[[1]]}',
    "unhashable-key": '{"D":[[[1],2]]}',
    "repeated-key": '{"D":[["a",1],["a",2]]}',
    "repeated-element": '{"S":[1,1]}',
    "dict-entry-not-pair": '{"D":[["a",1,2]]}',
    "tuple-body-not-list": '{"T":"ab"}',
    "not-json": "[1,",
    "empty": "",
    "text-after": "[1] x",
    "two-values": "[1][2]",
    "huge-int-literal": "1" * 5000,
    "nested-301": "[" * 301 + "]" * 301,
    "too-many-items": "[" + ",".join(["0"] * 2_000_001) + "]",
}


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_json_is_refused(name):
    with pytest.raises(plain.PlainError):
        plain.loads(FORGED[name])


def test_loads_takes_bytes_and_surrounding_whitespace():
    assert plain.loads(b' [1,{"T":[]}]\n') == [1, ()]
    for bad in (b"\xff", 12, None):
        with pytest.raises(plain.PlainError):
            plain.loads(bad)


def test_decode_refuses_non_json_objects():
    for j in ([Yes("x")], {"T": MyList()}, (1, 2), {1}):
        with pytest.raises(plain.PlainError):
            plain.decode(j)


def test_decoded_nans_are_distinct_objects():
    nan = float("nan")
    assert len(plain.loads(plain.dumps({nan, float("nan")}))) == 2
    assert len(plain.loads(plain.dumps([nan, nan]))) == 2


@pytest.mark.parametrize(
    "a, b, tol, expected",
    [
        ([1, 2], [1, 2], 0.0, True),
        ([1, 2], (1, 2), 0.0, False),
        (1, 1.0, 0.0, True),  # as == says
        (0.1 + 0.2, 0.3, 0.0, False),
        (0.1 + 0.2, 0.3, 1e-9, True),
        ([1.0, {"a": (2.0000001,)}], [1.0, {"a": (2.0,)}], 1e-6, True),
        ([1.0, {"a": (2.1,)}], [1.0, {"a": (2.0,)}], 1e-6, False),
        ({"a": 1.0}, {"b": 1.0}, 1e-6, False),
        ([1.0], [1.0, 2.0], 1e-6, False),
        (3, 3.0000001, 1e-6, True),
        (3, 4, 0.5, False),  # ints stay exact
        ("abc", "abd", 1.0, False),
        ({1.0000001}, {1.0}, 1e-6, False),  # set elements stay exact
        (float("nan"), float("nan"), 0.0, True),
        ([float("nan"), 1.0], [float("nan"), 1.0], 0.0, True),
        (float("nan"), 1.0, 1e-6, False),
        (float("inf"), float("inf"), 1e-6, True),
        (float("inf"), float("-inf"), 1e-6, False),
        (complex(1, 2.0000001), complex(1, 2), 1e-6, True),
        (10**400, 1e300, 1e-6, False),  # no float that large: not close, no OverflowError
        (True, 1.0, 1e-6, True),
    ],
)
def test_same(a, b, tol, expected):
    assert plain.same(a, b, rel_tol=tol, abs_tol=tol / 1000) is expected
    assert plain.same(b, a, rel_tol=tol, abs_tol=tol / 1000) is expected


@pytest.mark.parametrize(
    "value, limit, expected",
    [
        ([1, "a", (2,), {3: None}, set(), frozenset({4})], 200, "[1, 'a', (2,), {3: None}, set(), frozenset({4})]"),
        (list(range(100)), 20, "[0, 1, 2, 3, 4, 5..."),
        ("x" * 10**7, 10, "'xxxxxx..."),
        (10**5000, 200, "<int with 16610 bits>"),
        ([10**5000], 200, "[<int with 16610 bits>]"),
        (LoudRepr(1), 200, "<a LoudRepr (a subclass of int)>"),
        (_nest(1000), 30, "[[[[[[[[[[[[[[[[[[[[[[[[[[[..."),
    ],
    ids=["containers", "cut", "huge-str", "huge-int", "nested-huge-int", "loud-repr", "deep"],
)
def test_safe_repr(value, limit, expected):
    assert plain.safe_repr(value, limit) == expected


def test_safe_repr_of_decoded_values_is_repr():
    v = plain.loads(plain.dumps(NESTED))
    assert plain.safe_repr(v, 10_000) == repr(v)


def test_loaded_as_in_the_sandbox_it_ignores_rebound_builtins():
    """In the sandbox this source is executed as a module before the solution runs; the solution
    may then rebind builtins. What the module decides with was captured when it loaded."""
    import builtins
    import types
    from pathlib import Path

    module = types.ModuleType("sandboxed_plain")
    exec(compile(Path(plain.__file__).read_text(), "plain.py", "exec"), module.__dict__)
    rebound = (
        "type",
        "len",
        "list",
        "tuple",
        "dict",
        "set",
        "int",
        "float",
        "str",
        "sorted",
        "repr",
        "max",
        "reversed",
    )
    saved = {name: getattr(builtins, name) for name in rebound}

    def hostile(*args, **kwargs):
        raise AssertionError("a rebound builtin was called")

    try:
        for name in saved:
            setattr(builtins, name, hostile)
        text = module.dumps([1, ("a", {2, 3}), {"k": 2**70}])
        back = module.loads(text)
        shown = module.safe_repr([1, "a"])
        try:
            module.dumps([Yes("x")])
            refused = ""
        except module.PlainError as e:  # not pytest.raises: it calls type() itself
            refused = e.args[0]
    finally:
        for name, value in saved.items():
            setattr(builtins, name, value)
    assert text == '[1,{"T":["a",{"S":[2,3]}]},{"D":[["k",{"I":"400000000000000000"}]]}]'
    assert back == [1, ("a", {2, 3}), {"k": 2**70}]
    assert shown == "[1, 'a']" and refused.startswith("returned a Yes (a subclass of str) at [0]")
