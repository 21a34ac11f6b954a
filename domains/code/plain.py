"""Plain data: the only values the code verifier compares, and their JSON form.

A model-written solution could return an object that fools a comparison: an `__eq__` that is
always true, a `str` subclass, a proxy. So the sandboxed child only *encodes* what it computed,
and the host decodes and compares: a decoded value is built of builtin objects only, so `==`
and `repr` on it never run the solution's code.

Plain data is None, bool, int, float, str, bytes, bytearray, complex, and list, tuple, dict,
set, frozenset of plain data, nested at most 200 deep, at most 2,000,000 items in all, without
cycles. Types whose `==` is a builtin's are normalised to it: exact `Counter`, `OrderedDict`
and `defaultdict` to dict, namedtuple classes to tuple. Anything else, every other subclass of
a builtin included, raises `PlainError`. The JSON form:

    None, bool, str, finite float, int (|i| < 2**63)   themselves
    int (|i| >= 2**63)     {"I": "-1f0a..."}   hex: no 4300-digit str() limit, and shorter
    nan, inf, -inf         {"F": "nan"}, {"F": "inf"}, {"F": "-inf"}
    list                   [...]
    tuple                  {"T": [...]}
    dict                   {"D": [[key, value], ...]}   in insertion order; keys may be tuples...
    set, frozenset         {"S": [...]}, {"Z": [...]}   elements sorted by their JSON text
    bytes, bytearray       {"B": "68ff"}, {"Y": "68ff"}
    complex                {"C": [real, imag]}          both as floats (so maybe {"F": ...})

    >>> dumps([1, (2.5, "x"), {"k": {True}}])
    '[1,{"T":[2.5,"x"]},{"D":[["k",{"S":[true]}]]}]'

Set elements are sorted so that equal values built the same way give the same text in every
process (a set of strs iterates in an order that depends on the process's hash seed): the
harness keys recorded calls by `dumps(args)` across sandbox runs. `decode`/`loads` accept only
what `encode` produces; any other form is forged and raises `PlainError`.

This file also runs in the sandbox: its source is executed there as a module before any
untrusted code. So it imports only the standard library, and it captures at import time every
builtin it decides with (untrusted code may later rebind `builtins.list`, or `json.dumps`). It
never calls a method that the inspected value could override: types are decided by exact
`type(v)` (looked up in tables built at import) and containers are read through builtin
methods (`dict.items`, `tuple.__iter__`).
"""

import collections
import functools
import json
import json.scanner
import math
import re

MAX_DEPTH = 200
MAX_NODES = 2_000_000
PLAIN_TYPES = "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, complex"

# Captured now: the names in `builtins` (and `json`) are the untrusted code's to rebind later.
_type, _len, _format, _sorted, _all, _id, _repr = type, len, format, sorted, all, id, repr
_enumerate, _zip, _max, _reversed = enumerate, zip, max, reversed
_NONE, _BOOL, _INT, _FLOAT, _STR = type(None), bool, int, float, str
_BYTES, _BYTEARRAY, _COMPLEX = bytes, bytearray, complex
_LIST, _TUPLE, _DICT, _SET, _FROZENSET = list, tuple, dict, set, frozenset
_COUNTER, _ORDERED, _DEFAULT = collections.Counter, collections.OrderedDict, collections.defaultdict
_dict_items, _tuple_iter, _bytes_hex, _bytearray_hex = dict.items, tuple.__iter__, bytes.hex, bytearray.hex
_str_copy, _isidentifier = str.__str__, str.isidentifier  # an exact copy of a str subclass
_type_name = type.__dict__["__name__"].__get__  # the class's own name: a metaclass property can't intervene
_type_mro = type.__dict__["__mro__"].__get__
_type_bases = type.__dict__["__bases__"].__get__
_type_dict = type.__dict__["__dict__"].__get__
_json_dumps = json.dumps
_isclose = math.isclose
_BIG = 1 << 63  # ints from here on are tagged, in hex: no 4300-digit str() limit, and shorter
_SUBCLASSABLE = (_INT, _FLOAT, _STR, _BYTES, _BYTEARRAY, _COMPLEX, _LIST, _TUPLE, _DICT, _SET, _FROZENSET)


class PlainError(ValueError):
    """A value that is not plain data, or a JSON form that `encode` could not have produced."""


# ----------------------------------------------------------------------------- encoding


class _Reject(Exception):
    """Raised inside the walk; `encode` turns it into a PlainError. On the way up each container
    adds where the value sat (`path`, innermost first) and itself (`containers`, to tell a
    cycle from honest depth)."""

    def __init__(self, what: str, *, kind: str = "type") -> None:
        self.what, self.kind = what, kind  # kind: "type" (a value not plain), "deep" or "size"
        self.path: list[str] = []
        self.containers: list[object] = []
        self.role = ""

    def up(self, container: object, segment: str = "", role: str = "") -> None:
        self.containers.append(container)
        if role and not self.path and not self.role:
            self.role = role  # the offender itself is a key or an element: say so
        elif role:
            self.path.append("<key>" if role == " as a dict key" else "<element>")
        if segment:
            self.path.append(segment)

    def message(self) -> str:
        if self.kind == "deep":
            ids = [_id(c) for c in self.containers]
            looped = _len(_SET(ids)) < _len(ids)
            return "returned a value that contains itself" if looped else f"returned a value {self.what}"
        if self.kind == "size":
            return f"returned {self.what}"
        at = " at " + "".join(_reversed(self.path)) if self.path else ""
        return f"returned {self.what}{self.role}{at}: only plain data ({PLAIN_TYPES}) can be checked"


def encode(v: object) -> object:
    """`v` as a JSON-able value (see the module docstring); PlainError unless it is plain data."""
    try:
        return _enc(v, 0, [MAX_NODES])
    except _Reject as e:
        raise PlainError(e.message()) from None
    except RecursionError:  # a caller already deep in the stack, or a lowered recursion limit
        raise PlainError("nested too deep to check here") from None


def dumps(v: object) -> str:
    """The JSON text of `encode(v)`: ASCII, no spaces."""
    j = encode(v)
    try:
        return _compact(j)
    except RecursionError:  # json's encoder recurses too, up to three levels per plain one
        raise PlainError("nested too deep to check here") from None


def _enc(v, depth, budget):
    t = _type(v)
    # The common leaves first, without a table lookup: this runs for every value a test returns.
    if t is _INT:
        return v if -_BIG < v < _BIG else {"I": _format(v, "x")}
    if t is _STR or t is _BOOL or t is _NONE:
        return v
    if t is _FLOAT:
        return v if v - v == 0.0 else _enc_nonfinite(v)  # inf - inf and nan - nan are nan
    enc = _ENCODERS.get(_id(t)) or _unlisted(t)  # keyed by id: hashing `t` could run a metaclass's __hash__
    return enc(v, depth, budget)


def _enc_nonfinite(v):
    return {"F": "nan" if v != v else ("inf" if v > 0 else "-inf")}


def _enter(n, depth, budget):
    """One level deeper, `n` more items: the limits that keep a hostile value cheap to reject."""
    if depth >= MAX_DEPTH:
        raise _Reject(f"nested deeper than {MAX_DEPTH}: too deep to check", kind="deep")
    budget[0] -= n
    if budget[0] < 0:
        raise _Reject(f"more than {MAX_NODES:,} items: too large to check", kind="size")
    return depth + 1


# One function per container (not a shared helper): two frames a level keep 200 levels far from
# the recursion limit.


def _enc_seq(v, depth, budget):
    """An exact list or tuple."""
    depth = _enter(_len(v), depth, budget)
    out = []
    append = out.append
    try:
        for x in v:
            t = _type(x)
            if t is _STR or t is _NONE or t is _BOOL or (t is _INT and -_BIG < x < _BIG):
                append(x)  # the usual element, without a call: a list of 1000 ints costs half
            else:
                append(_enc(x, depth, budget))
    except _Reject as e:
        e.up(v, f"[{_len(out)}]")
        raise
    return out if _type(v) is _LIST else {"T": out}


def _enc_namedtuple(v, depth, budget):
    return _enc_seq(_TUPLE(_tuple_iter(v)), depth, budget)  # its class's own __iter__ may be patched


def _enc_dict(v, depth, budget):
    """A dict or an exact Counter/OrderedDict/defaultdict (`dict.items` reads the dict itself)."""
    items = _dict_items(v)
    depth = _enter(_len(items), depth, budget)
    out = []
    for k, x in items:
        try:
            key = _enc(k, depth, budget)
        except _Reject as e:
            e.up(v, role=" as a dict key")
            raise
        try:
            out.append([key, _enc(x, depth, budget)])
        except _Reject as e:
            e.up(v, f"[{safe_repr(k, 40)}]")  # k encoded: it is plain, its repr is builtin
            raise
    return {"D": out}


def _enc_set(v, depth, budget):
    """An exact set or frozenset."""
    depth = _enter(_len(v), depth, budget)
    out = []
    try:
        for x in v:
            out.append(_enc(x, depth, budget))
    except _Reject as e:
        e.up(v, role=" in a set")
        raise
    return {"S" if _type(v) is _SET else "Z": _canonical_order(out)}


def _canonical_order(out):
    """Set elements in an order that does not depend on the hash seed: plain ints or strs by
    value, anything else by JSON text (costlier, and rare)."""
    first = _type(out[0]) if out else _STR
    if (first is _INT or first is _STR) and _all(_type(x) is first for x in out):
        return _sorted(out)
    return _sorted(out, key=_compact)


def _not_json(o):
    raise TypeError("not JSON")  # never: encode leaves only JSON types


def _json_writer():
    """JSON text writer for what encode returns: json's C encoder called directly (a quarter of
    json.dumps's cost, which builds an encoder per call with these options); json.dumps where
    there is none. No cycle check (markers=None): encode's output is a fresh tree."""
    try:  # a private constructor: checked on a sample, json.dumps where it differs
        iterencode = json.encoder.c_make_encoder(
            None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
        )
        write = lambda j: "".join(iterencode(j, 0))
        if write([1.5, "\u00e9", {"k": None}, -(2**62)]) == '[1.5,"\\u00e9",{"k":null},-4611686018427387904]':
            return write
    except Exception:
        pass
    return lambda j: _json_dumps(j, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


_compact = _json_writer()


def _enc_bytes(v, depth, budget):
    return {"B": _bytes_hex(v)} if _type(v) is _BYTES else {"Y": _bytearray_hex(v)}


def _enc_complex(v, depth, budget):
    return {"C": [_enc(v.real, depth, budget), _enc(v.imag, depth, budget)]}  # exact complex: builtin members


_ENCODERS = {
    _id(_LIST): _enc_seq,
    _id(_TUPLE): _enc_seq,
    _id(_DICT): _enc_dict,
    _id(_COUNTER): _enc_dict,
    _id(_ORDERED): _enc_dict,
    _id(_DEFAULT): _enc_dict,
    _id(_SET): _enc_set,
    _id(_FROZENSET): _enc_set,
    _id(_BYTES): _enc_bytes,
    _id(_BYTEARRAY): _enc_bytes,
    _id(_COMPLEX): _enc_complex,
}


def _unlisted(t):
    """The encoder for a type not in the table: a namedtuple class's, or a _Reject."""
    if _is_namedtuple(t):
        return _enc_namedtuple
    raise _Reject(_describe(t))


def _is_namedtuple(t):
    """What `collections.namedtuple` (or `typing.NamedTuple`) makes: a plain class straight
    on tuple with `_fields`. A subclass of one (which may override `__eq__`) is not."""
    if _type(t) is not _type:  # a custom metaclass could make the reads below run its code
        return False
    bases = _type_bases(t)
    return _len(bases) == 1 and bases[0] is _TUPLE and "_fields" in _type_dict(t)


def _describe(t):
    """'a Foo', or 'a S (a subclass of str)', read without running any of the class's code."""
    name = _name(t)
    try:
        mro = _type_mro(t) or ()
    except Exception:
        mro = ()
    for base in mro[1:]:
        for plain in _SUBCLASSABLE:
            if base is plain:
                return f"{_article(name)} {name} (a subclass of {_name(plain)})"
    return f"{_article(name)} {name}"


def _name(t):
    try:
        name = _str_copy(_type_name(t))  # __name__ may be set to a str subclass: copy it to an exact str
    except Exception:
        return "object"
    return name if _isidentifier(name) and _len(name) <= 60 else "object"


def _article(name):
    return "an" if name[:1] in "aeiouAEIOU" else "a"


# ----------------------------------------------------------------------------- decoding


def _no_constant(name: str) -> None:
    raise PlainError(f"malformed plain data: {name} is not JSON (non-finite floats are tagged)")


def _json_reader():
    """json's C scanner called directly: json.loads is Python code that calls builtins by name
    (this may run after untrusted code has rebound them), and costs twice as much."""
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    make = getattr(json.scanner, "c_make_scanner", None)
    return make(decoder) if make is not None else decoder.scan_once


_scan = _json_reader()
_str_strip, _bytes_decode = str.strip, bytes.decode


def _text(s):
    """`s` as an exact str (bytes as UTF-8), without JSON's surrounding whitespace."""
    if _type(s) is _BYTES:
        try:
            s = _bytes_decode(s, "utf-8")
        except ValueError:
            raise _forged("not UTF-8") from None
    if _type(s) is not _STR:
        raise _forged("not text")
    return _str_strip(s, " \t\n\r")


def loads(s: str | bytes) -> object:
    """The value `dumps` wrote as `s`; PlainError for anything else."""
    s = _text(s)
    try:
        j, end = _scan(s, 0)
    except PlainError:
        raise
    except (StopIteration, ValueError, RecursionError) as e:  # incl. an int literal past the 4300-digit limit
        raise _forged(f"not JSON ({_type_name(_type(e))})") from None
    if end != _len(s):
        raise _forged("not JSON (text after the value)")
    return decode(j)


def decode(j: object) -> object:
    """The value `encode` turned into `j` (as parsed from JSON); PlainError for any other form.
    The result is made of builtin objects only, so comparing or printing it runs no foreign code."""
    try:
        return _dec(j, 0, [MAX_NODES])
    except RecursionError:
        raise PlainError("nested too deep to decode here") from None


def _forged(why):
    return PlainError(f"malformed plain data: {why}")


def _dec(j, depth, budget):
    t = _type(j)
    if t is _STR or t is _BOOL or t is _NONE:
        return j
    if t is _INT:
        if -_BIG < j < _BIG:
            return j
        raise _forged("an untagged int of 2**63 or more")
    if t is _FLOAT:
        if j - j == 0.0:
            return j
        raise _forged("an untagged non-finite float")
    if t is _LIST:
        return _dec_seq(j, depth, budget)
    if t is _DICT and _len(j) == 1:
        for tag, body in _dict_items(j):
            dec = _DECODERS.get(tag) if _type(tag) is _STR else None
            if dec is not None:
                return dec(body, depth, budget)
    raise _forged("an object that is not one known tag" if t is _DICT else "a value JSON does not have")


def _dec_enter(j, depth, budget):
    """The body of a container tag must be a JSON array; one level deeper, its items counted."""
    if _type(j) is not _LIST:
        raise _forged("a container whose body is not an array")
    if depth >= MAX_DEPTH:
        raise PlainError(f"malformed plain data: nested deeper than {MAX_DEPTH}")
    budget[0] -= _len(j)
    if budget[0] < 0:
        raise PlainError(f"malformed plain data: more than {MAX_NODES:,} items")
    return depth + 1


def _dec_seq(j, depth, budget, kind=_LIST):
    """A list, or the body of a tuple, set or frozenset: one function for all (two frames a
    level keep 200 levels far from the recursion limit)."""
    depth = _dec_enter(j, depth, budget)
    out = []
    for x in j:
        out.append(_dec(x, depth, budget))
    if kind is _LIST:
        return out
    if kind is _TUPLE:
        return _TUPLE(out)
    try:
        elements = kind(out)  # decoded: builtin objects, hashing them runs no foreign code
    except TypeError:
        raise _forged("an unhashable set element") from None
    if _len(elements) != _len(out):
        raise _forged("a repeated set element")
    return elements


def _dec_dict(j, depth, budget):
    depth = _dec_enter(j, depth, budget)
    out = {}
    for pair in j:
        if _type(pair) is not _LIST or _len(pair) != 2:
            raise _forged("a dict entry that is not a [key, value] pair")
        key, value = _dec(pair[0], depth, budget), _dec(pair[1], depth, budget)
        try:
            out[key] = value
        except TypeError:
            raise _forged("an unhashable dict key") from None
    if _len(out) != _len(j):
        raise _forged("a repeated dict key")
    return out


_HEX_INT = re.compile(r"-?[1-9a-f][0-9a-f]*")  # canonical: what format(i, "x") writes
_HEX_BYTES = re.compile(r"(?:[0-9a-f]{2})*")  # canonical: what bytes.hex writes (fromhex would allow spaces)


def _dec_int(j, depth, budget):
    if _type(j) is _STR and _HEX_INT.fullmatch(j):
        i = _INT(j, 16)
        if not -_BIG < i < _BIG:
            return i
    raise _forged("an int tag that encode would not write")


def _dec_float(j, depth, budget):
    if _type(j) is _STR and j in _NONFINITE:
        return _FLOAT(j)  # a new nan each time, as a computation gives: two of them make a 2-element set
    raise _forged("a float tag that is not nan, inf or -inf")


_NONFINITE = {"nan": None, "inf": None, "-inf": None}


def _dec_bytes(j, depth, budget):
    if _type(j) is _STR and _HEX_BYTES.fullmatch(j):
        return _BYTES.fromhex(j)
    raise _forged("a bytes tag that is not lowercase hex")


def _dec_bytearray(j, depth, budget):
    return _BYTEARRAY(_dec_bytes(j, depth, budget))


def _dec_complex(j, depth, budget):
    if _type(j) is _LIST and _len(j) == 2:
        re_, im = _dec(j[0], depth, budget), _dec(j[1], depth, budget)
        if _type(re_) is _FLOAT and _type(im) is _FLOAT:
            return _COMPLEX(re_, im)
    raise _forged("a complex tag that is not two floats")


_DECODERS = {
    "I": _dec_int,
    "F": _dec_float,
    "T": functools.partial(_dec_seq, kind=_TUPLE),  # partial: no Python frame of its own
    "D": _dec_dict,
    "S": functools.partial(_dec_seq, kind=_SET),
    "Z": functools.partial(_dec_seq, kind=_FROZENSET),
    "B": _dec_bytes,
    "Y": _dec_bytearray,
    "C": _dec_complex,
}


# ----------------------------------------------------------------------------- comparing and showing


def same(a: object, b: object, *, rel_tol: float = 0.0, abs_tol: float = 0.0) -> bool:
    """`a == b` for decoded values, except that nan equals nan (two honest solutions that both
    return nan agree) and, with a tolerance, floats (or a float and an int) that are
    `math.isclose`, inside lists, tuples, dict values and complex numbers too. Ints, strs, set
    elements and dict keys are still compared exactly."""
    if a == b:
        return True
    return _close(a, b, rel_tol, abs_tol)


def _close(a, b, rel, abs_):
    ta, tb = _type(a), _type(b)
    if ta is _FLOAT or tb is _FLOAT:
        return _close_numbers(a, b, rel, abs_)
    if ta is not tb:
        return False
    if ta is _LIST or ta is _TUPLE:
        if _len(a) != _len(b):
            return False
        return _all(x == y or _close(x, y, rel, abs_) for x, y in _zip(a, b))
    if ta is _DICT:
        if a.keys() != b.keys():
            return False
        return _all(x == b[k] or _close(x, b[k], rel, abs_) for k, x in a.items())
    if ta is _COMPLEX:
        return _close_numbers(a.real, b.real, rel, abs_) and _close_numbers(a.imag, b.imag, rel, abs_)
    return a == b


def _close_numbers(a, b, rel, abs_):
    ta, tb = _type(a), _type(b)
    if not (ta is _FLOAT or ta is _INT) or not (tb is _FLOAT or tb is _INT):
        return False
    if a != a or b != b:
        return a != a and b != b
    try:
        return _isclose(a, b, rel_tol=rel, abs_tol=abs_)
    except OverflowError:  # an int too large for a float: not close to any float
        return False


class _Full(Exception):
    """`safe_repr` has written past its limit: stop walking."""


def safe_repr(v: object, limit: int = 200) -> str:
    """`repr(v)` for plain data, cut to `limit` characters ('...' at the end when cut), built
    piece by piece so that a huge value costs no more than its first `limit` characters. An int
    too large to print is '<int with N bits>'; a value that is not plain data is shown as its
    type ('<a Foo>'), never through its own `__repr__`."""
    limit = _max(limit, 3)
    parts: list[str] = []
    room = [limit + 1]  # one past the limit: tells that it must be cut
    try:
        _repr_into(v, parts, room, 0)
    except _Full:
        pass
    s = "".join(parts)
    return s if _len(s) <= limit else s[: limit - 3] + "..."


def _put(s, parts, room):
    parts.append(s)
    room[0] -= _len(s)
    if room[0] < 0:
        raise _Full


def _repr_into(v, parts, room, depth):
    t = _type(v)  # decided by `is` only: `t in (...)` could run a metaclass's __eq__
    if t is _INT:
        try:
            _put(_repr(v), parts, room)
        except ValueError:  # more digits than int->str allows
            _put(f"<int with {v.bit_length()} bits>", parts, room)
    elif t is _STR or t is _BYTES or t is _BYTEARRAY:
        _put(_repr(v[: room[0]]), parts, room)  # a prefix: past it the text is cut anyway
    elif t is _FLOAT or t is _BOOL or t is _NONE or t is _COMPLEX:
        _put(_repr(v), parts, room)
    elif not (t is _LIST or t is _TUPLE or t is _DICT or t is _SET or t is _FROZENSET):
        _put(f"<{_describe(t)}>", parts, room)
    elif depth >= MAX_DEPTH:
        _put("...", parts, room)
    elif t is _DICT:
        _put("{", parts, room)
        for i, (k, x) in _enumerate(v.items()):
            _put(", " if i else "", parts, room)
            _repr_into(k, parts, room, depth + 1)
            _put(": ", parts, room)
            _repr_into(x, parts, room, depth + 1)
        _put("}", parts, room)
    else:
        _repr_items(v, t, parts, room, depth)


def _repr_items(v, t, parts, room, depth):
    if t is _SET or t is _FROZENSET:
        if not v:
            _put("set()" if t is _SET else "frozenset()", parts, room)
            return
        opening, closing = ("{", "}") if t is _SET else ("frozenset({", "})")
    else:
        opening, closing = ("[", "]") if t is _LIST else ("(", ",)" if _len(v) == 1 else ")")
    _put(opening, parts, room)
    for i, x in _enumerate(v):
        _put(", " if i else "", parts, room)
        _repr_into(x, parts, room, depth + 1)
    _put(closing, parts, room)
