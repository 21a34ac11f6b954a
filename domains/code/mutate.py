"""Hidden test inputs for code problems: new argument tuples mutated from the shown ones.

EvalPlus's idea (type-aware input mutation): a problem's shown tests call the function on a few
argument tuples; small, type-preserving edits of those make more inputs, and the reference
solution computes their expected outputs (the caller runs it and keeps the first n inputs it
answers). So a solution that special-cases the shown inputs fails the hidden ones.

    >>> mutate_inputs([("hello", "l"), ("abcda", "a")], 1, "mbpp/11")
    [('abcd', 'a'), ('heoll', 'a'), ('abchda', 'a'), ('heol', 'a')]
    >>> mutate_inputs([([1, 2, 3, 4], 4), ([5, 1], 2)], 2, "mbpp/62")[-3:]  # the int stays len() of the list
    [([1, 2, 4, 8, 3], 5), ([1, 9, 3, 4], 4), ([2, 1, 4, 8], 4)]

Mutations by type: int ±1, ±k, ×2, negated (only where a negative was shown); float scaled or
shifted, rounded to the shown decimals; bool flipped; str: a character inserted, deleted,
replaced or swapped (characters from the shown strings at that place); list/tuple: an element
dropped, duplicated, swapped, mutated, or a mutated copy appended; set: one added or removed;
dict: a value mutated or a key dropped. None and other types are kept.

What every shown tuple satisfies is kept, so that inputs stay ones the problem means: an int
that is len() of another argument is recomputed; a sorted, non-empty or duplicate-free list
stays so; a non-negative int stays >= 0, one in 0..9 stays there, ints stay within about twice
the shown range; a lowercase (digit, alphabetic, ...) string stays so, a one-character string
stays one character; a container stays within 2 x the longest shown at its place + 3. A position
whose shown values differ in type is not mutated: it is copied, with the rest, from one tuple.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MUTATOR_VERSION = 1  # bump when the inputs made for a given (shown, n, seed) change: part of cache keys
PER_WANTED = 4  # candidates per wanted input: the reference may reject some (raise, time out)
_SIZED = (str, list, tuple, dict, set, frozenset)
_MUTABLE = (int, float, bool, str, list, tuple, dict, set, frozenset)
# Kept on strings when every shown non-empty string at the place has it.
_STR_CHECKS: tuple[Callable[[str], bool], ...] = (
    str.islower,
    str.isupper,
    str.isdigit,
    str.isalpha,
    str.isalnum,
    str.isascii,
)


@dataclass
class _Shape:
    """What the shown values of one type at one place (an argument position, the elements of the
    lists there, ...) look like: the room a mutation keeps to."""

    kind: type
    samples: list[Any]
    lo: Any = 0  # numbers: bounds (None: no finite float shown, not mutated)
    hi: Any = 0
    decimals: int | None = None  # floats: rounded to as many as the shown ones use
    chars: str = ""  # strings: the characters seen
    checks: tuple[Callable[[str], bool], ...] = ()
    min_len: int = 0
    max_len: int = 0
    fixed_len: int | None = None  # one-character strings stay one character
    items: dict[type, _Shape] | None = None  # elements of a list/tuple/set, values of a dict
    fields: list[dict[type, _Shape]] | None = None  # tuples all of one length: per index, a record
    ascending: bool = False
    distinct: bool = False


Profile = dict[type, "_Shape"]  # by exact type: a place may hold several (the elements of [1, "a"])


def mutate_inputs(arg_lists: list[tuple[Any, ...]], n: int, seed: str, *, tries: int = 8) -> list[tuple[Any, ...]]:
    """Up to `PER_WANTED * n` new argument tuples, mutated from `arg_lists` (the shown tests'
    arguments), deterministic for given arguments: none equal to a shown tuple or to each other
    (1, 1.0 and True count as different), each of the shown arity (the most common one, if
    they differ) and types. `tries`: attempts per candidate before giving up (a mutation may
    break an invariant, or repeat)."""
    shown = _same_arity([tuple(a) for a in arg_lists])
    if n <= 0 or not shown or not shown[0]:
        return []
    profiles = [_profile([a[i] for a in shown]) for i in range(len(shown[0]))]
    lengths = _len_relations(shown, profiles)
    mutable = [i for i, p in enumerate(profiles) if i not in lengths and _mutable(p)]
    if not mutable:
        return []
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    want = PER_WANTED * n
    seen = {_key(tuple(a)) for a in arg_lists}
    pool = list(shown)
    out: list[tuple[Any, ...]] = []
    for _ in range(want * tries):
        if len(out) >= want:
            break
        cand = _candidate(rng.choice(pool), profiles, mutable, lengths, rng)
        key = _key(cand)
        if key in seen or not all(_fits(cand[i], profiles[i]) for i in mutable):
            continue
        seen.add(key)
        out.append(cand)
        pool.append(cand)  # later candidates may build on it: mutations chain, as in EvalPlus
    return copy.deepcopy(out)  # they share parts with the shown tuples; a caller may mutate them


def _same_arity(shown: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The tuples of the most common arity (calls relying on default arguments differ)."""
    if not shown:
        return []
    arity = Counter(len(a) for a in shown).most_common(1)[0][0]
    return [a for a in shown if len(a) == arity]


def _mutable(profile: Profile) -> bool:
    """One type at the place, and one that mutates."""
    return len(profile) == 1 and next(iter(profile)) in _MUTABLE


def _len_relations(shown: list[tuple[Any, ...]], profiles: list[Profile]) -> dict[int, int]:
    """{j: i} where argument j is an int equal to len(argument i) in every shown tuple."""
    out: dict[int, int] = {}
    for j, pj in enumerate(profiles):
        if list(pj) != [int]:
            continue
        for i, pi in enumerate(profiles):
            if i != j and len(pi) == 1 and next(iter(pi)) in _SIZED and all(a[j] == len(a[i]) for a in shown):
                out[j] = i
                break
    return out


def _candidate(
    base: tuple[Any, ...], profiles: list[Profile], mutable: list[int], lengths: dict[int, int], rng: random.Random
) -> tuple[Any, ...]:
    """`base` with one or two positions mutated, the len() relations recomputed."""
    cand = list(base)
    k = 1 if len(mutable) == 1 or rng.random() < 0.7 else 2
    for i in rng.sample(mutable, k):
        cand[i] = _mutate(cand[i], profiles[i], rng)
    for j, i in lengths.items():
        cand[j] = len(cand[i])
    return tuple(cand)


# ----------------------------------------------------------------------------- profiles


def _profile(values: list[Any]) -> Profile:
    by_type: dict[type, list[Any]] = {}
    for v in values:
        by_type.setdefault(type(v), []).append(v)
    return {t: _shape(t, vs) for t, vs in by_type.items()}


def _shape(kind: type, vals: list[Any]) -> _Shape:
    s = _Shape(kind, vals)
    if kind is int:
        s.lo, s.hi = _int_bounds(vals)
    elif kind is float:
        _float_room(s, vals)
    elif kind is str:
        _str_room(s, vals)
    elif kind in (list, tuple, set, frozenset, dict):
        _container_room(s, vals)
    return s


def _int_bounds(vals: list[int]) -> tuple[int, int]:
    lo, hi = min(vals), max(vals)
    if lo >= 0 and hi <= 9:
        return 0, 9  # digits, or small counts: stay small
    return (max(lo - abs(lo) - 2, 0) if lo >= 0 else lo - abs(lo) - 2), hi + abs(hi) + 2


def _float_room(s: _Shape, vals: list[float]) -> None:
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        s.lo = s.hi = None
        return
    lo, hi = min(finite), max(finite)
    s.lo = max(lo - abs(lo) - 2, 0.0) if lo >= 0 else lo - abs(lo) - 2
    s.hi = hi + abs(hi) + 2
    places = [_decimals(v) for v in finite]
    s.decimals = None if None in places else max(p for p in places if p is not None)


def _decimals(v: float) -> int | None:
    r = repr(v)
    if "e" in r:
        return None  # 1e-05: no rounding to speak of
    return len(r.partition(".")[2].rstrip("0"))


def _str_room(s: _Shape, vals: list[str]) -> None:
    s.chars = "".join(sorted(set("".join(vals))))
    filled = [v for v in vals if v]
    s.checks = tuple(c for c in _STR_CHECKS if filled and all(c(v) for v in filled))
    _size_room(s, vals)
    if all(len(v) == 1 for v in vals):
        s.fixed_len = 1


def _size_room(s: _Shape, vals: list[Any]) -> None:
    s.min_len = 1 if all(vals) else 0
    s.max_len = 2 * max(len(v) for v in vals) + 3


def _container_room(s: _Shape, vals: list[Any]) -> None:
    _size_room(s, vals)
    if s.kind is dict:
        s.items = _profile([x for d in vals for x in d.values()])
        return
    seqs = [_ordered(v) for v in vals]  # sets in a hash-free order: the profile's samples are drawn from
    s.items = _profile([x for q in seqs for x in q])
    if s.kind in (set, frozenset):
        return
    if s.kind is tuple and len({len(v) for v in vals}) == 1 and vals[0]:
        s.fields = [_profile([v[i] for v in vals]) for i in range(len(vals[0]))]
    s.ascending = len(s.items) == 1 and next(iter(s.items)) in (int, float, str) and all(_is_sorted(v) for v in vals)
    s.distinct = all(len({_key(x) for x in v}) == len(v) for v in vals)


def _is_sorted(v: Any) -> bool:
    return all(a <= b for a, b in zip(v, v[1:]))


def _ordered(v: Any) -> list[Any]:
    return sorted(v, key=_key) if type(v) in (set, frozenset) else list(v)


# ----------------------------------------------------------------------------- mutations


def _mutate(x: Any, profile: Profile | None, rng: random.Random) -> Any:
    s = profile.get(type(x)) if profile else None
    if s is None:
        return x
    return _MUTATORS.get(s.kind, _kept)(x, s, rng)


def _kept(x: Any, s: _Shape, rng: random.Random) -> Any:
    return x


def _mut_bool(x: bool, s: _Shape, rng: random.Random) -> bool:
    return not x


def _mut_int(x: int, s: _Shape, rng: random.Random) -> int:
    k = rng.randint(2, 5)
    ops = [x + 1, x - 1, x + k, x - k, x * 2, rng.randint(s.lo, s.hi), rng.choice(s.samples)]
    if s.lo < 0:
        ops.append(-x)  # negatives were shown: the sign is fair game
    return min(max(rng.choice(ops), s.lo), s.hi)


def _mut_float(x: float, s: _Shape, rng: random.Random) -> float:
    if s.lo is None or not math.isfinite(x):
        return x
    d = rng.choice((0.1, 0.25, 0.5, 1.0))
    step = d * max(s.hi - s.lo, 1.0) / 4
    ops = [x * (1 + d), x * (1 - d), x + step, x - step, rng.uniform(s.lo, s.hi), rng.choice(s.samples)]
    y = min(max(rng.choice(ops), s.lo), s.hi)
    return y if s.decimals is None else round(y, s.decimals)


def _mut_str(x: str, s: _Shape, rng: random.Random) -> str:
    if not s.chars:
        return x
    ops = ["replace"] if s.fixed_len else ["insert", "delete", "replace", "swap"]
    op = rng.choice(ops)
    c = rng.choice(s.chars)
    i = rng.randrange(len(x) + 1)
    if op == "insert" or not x:
        return x[:i] + c + x[i:]
    i = min(i, len(x) - 1)
    if op == "delete":
        return x[:i] + x[i + 1 :]
    if op == "replace":
        return x[:i] + c + x[i + 1 :]
    j = rng.randrange(len(x))
    chars = list(x)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def _mut_seq(x: list[Any] | tuple[Any, ...], s: _Shape, rng: random.Random) -> list[Any] | tuple[Any, ...]:
    if s.fields is not None and isinstance(x, tuple):
        return _mut_record(x, s, rng)
    out = list(x)
    op = rng.randrange(5)
    if op == 0 and out:
        del out[rng.randrange(len(out))]
    elif op == 1 and out:
        out.insert(rng.randrange(len(out) + 1), rng.choice(out))
    elif op == 2 and len(out) >= 2:
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    elif op == 4 and out:
        i = rng.randrange(len(out))
        out[i] = _mutate(out[i], s.items, rng)
    else:  # a mutated copy of an element appended (what an empty list can grow by)
        out.append(_mutate(_pick(out, s.items, rng), s.items, rng))
    if s.ascending:
        out.sort()
    if s.distinct:
        out = list({_key(v): v for v in out}.values())
    return type(x)(out)


def _mut_record(x: tuple[Any, ...], s: _Shape, rng: random.Random) -> tuple[Any, ...]:
    """A tuple of a fixed length (a pair, a record): one field mutated by its own profile."""
    assert s.fields is not None
    i = rng.randrange(len(x))
    return x[:i] + (_mutate(x[i], s.fields[i], rng),) + x[i + 1 :]


def _mut_set(x: set[Any] | frozenset[Any], s: _Shape, rng: random.Random) -> set[Any] | frozenset[Any]:
    out = _ordered(x)
    if out and rng.random() < 0.4:
        del out[rng.randrange(len(out))]
    else:
        out.append(_mutate(_pick(out, s.items, rng), s.items, rng))
    return type(x)(out)


def _mut_dict(x: dict[Any, Any], s: _Shape, rng: random.Random) -> dict[Any, Any]:
    if not x:
        return x
    out = dict(x)
    k = rng.choice(list(out))
    if len(out) > 1 and rng.random() < 0.3:
        del out[k]
    else:
        out[k] = _mutate(out[k], s.items, rng)
    return out


def _pick(out: list[Any], items: Profile | None, rng: random.Random) -> Any:
    """An element to copy: one of the container's own, else one shown at the place."""
    if out:
        return rng.choice(out)
    samples = [v for shape in (items or {}).values() for v in shape.samples]
    return rng.choice(samples) if samples else None


_MUTATORS: dict[type, Callable[[Any, _Shape, random.Random], Any]] = {
    bool: _mut_bool,
    int: _mut_int,
    float: _mut_float,
    str: _mut_str,
    list: _mut_seq,
    tuple: _mut_seq,
    set: _mut_set,
    frozenset: _mut_set,
    dict: _mut_dict,
}


# ----------------------------------------------------------------------------- invariants


def _fits(x: Any, profile: Profile | None) -> bool:
    """Whether `x` keeps what the shown values at its place all kept (recursively)."""
    s = profile.get(type(x)) if profile else None
    if s is None:
        return False
    if s.kind is int or (s.kind is float and s.lo is not None and math.isfinite(x)):
        return bool(s.lo <= x <= s.hi)
    if s.kind is str:
        return _str_fits(x, s)
    if s.kind in _SIZED:
        return _container_fits(x, s)
    return True


def _str_fits(x: str, s: _Shape) -> bool:
    if not s.min_len <= len(x) <= s.max_len or (s.fixed_len and len(x) != s.fixed_len):
        return False
    return all(c in s.chars for c in x) and (not x or all(check(x) for check in s.checks))


def _container_fits(x: Any, s: _Shape) -> bool:
    if not s.min_len <= len(x) <= s.max_len:
        return False
    if s.fields is not None:
        return len(x) == len(s.fields) and all(_fits(v, p) for v, p in zip(x, s.fields))
    if s.ascending and not _is_sorted(x):
        return False
    if s.distinct and len({_key(v) for v in x}) != len(x):
        return False
    return all(_fits(v, s.items) for v in (x.values() if type(x) is dict else x))


def _key(v: Any) -> str:
    """A text equal for equal values of the same types (1, 1.0 and True differ; set and dict
    order do not count)."""
    t = type(v)
    if t is list or t is tuple:
        return f"{t.__name__}[{','.join(_key(x) for x in v)}]"
    if t is set or t is frozenset:
        return f"{t.__name__}{{{','.join(sorted(_key(x) for x in v))}}}"
    if t is dict:
        return "dict{" + ",".join(sorted(f"{_key(k)}:{_key(x)}" for k, x in v.items())) + "}"
    if t is int:
        return f"int:{v:x}"  # hex: no limit on digits
    return f"{t.__name__}:{v!r}"
