"""The Lua field-type readers (runtime/fieldtypes/NAME.lua, which the Wireshark dissector pastes
in) against the Python ones they port, case by case in Wireshark's own Lua (tests/fieldtypes/
lua_host.py, one tshark run for every case).

A case is bytes, a ``stop`` and reader steps read one after another, each library's context
shared by its steps. Lua and Python agree on a case when every step gives the same value (its
JSON: ``V.json`` of the Lua value is ``protoc-x decode``'s JSON of the Python one) and the same
position, and the case ends in an error at the same step and offset. The Lua error's kind must
be the one the Python reader implies: ``short`` (more bytes could complete the value) where
Python's ``measure`` waits for more bytes (varint, texts, thrift) or where its error is a bound
of ``stop`` (hessian2, tars: no measure there; the kind is checked, too, by extending the bytes:
a ``fail`` must stay the same error whatever follows); ``fail`` otherwise, and always for a
window type (json.object: its size is given).

The cases: valid encodings of hypothesis-drawn values made by the Python writers, the vectors of
the Python readers' tests (imported from their modules), random bytes, mutants of valid
encodings (bits flipped, bytes set, deleted, inserted, cut), and every prefix of valid
encodings: a prefix must be ``short`` unless the Python reader reads it (a field found absent at
the end of the bytes, tars's rest), and then the Lua reader must say that ``stop`` decided it
(its third result) where the value differs from the whole encoding's.
"""

from __future__ import annotations

import json
import random
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from protoc_x.cli import _json_value
from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes import MODULES, hessian2, tars, texts, thrift

from . import lua_host
from . import test_hessian2 as t_h2
from . import test_hessian2_descriptors as t_desc
from . import test_tars as t_tars
from . import test_tars_wire as t_wire
from . import test_texts as t_texts
from . import test_thrift as t_thrift
from . import test_varint as t_varint

pytestmark = pytest.mark.skipif(
    lua_host.tshark() is None, reason="tshark (Wireshark's Lua 5.2) is not installed"
)

Spec = tuple  # (module, type name, args)


@dataclass
class Case:
    buf: bytes
    stop: int
    steps: list
    pos: int = 0
    origin: str = ""
    full: Case | None = None  # a prefix's whole encoding


def case(data: bytes, steps, junk: bytes = b"", origin: str = "", stop: int | None = None) -> Case:
    """``data`` read by ``steps`` up to its end (or ``stop``), ``junk`` after it: bytes a reader
    that reads past ``stop`` would trip on."""
    return Case(data + junk, len(data) if stop is None else stop, list(steps), origin=origin)


# ---- drawing values ---------------------------------------------------------------------------


def draw(strategy, n: int) -> list:
    """``n`` values hypothesis draws from ``strategy`` (the same ones every run)."""
    out = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def gather(value):
        out.append(value)

    gather()
    return out


def params(test) -> list:
    """The cases a test's ``parametrize`` gives it (imported, not copied)."""
    marks = [m for m in test.pytestmark if m.name == "parametrize"]
    return list(marks[0].args[1])


# ---- the Python side ----------------------------------------------------------------------------


@lru_cache(maxsize=None)
def python_reader(spec: Spec):
    module, name, args = spec
    return MODULES[module].TYPES[name](*args)


def json_bytes(value) -> bytes:
    """``protoc-x decode``'s JSON of a value, as bytes (a lone surrogate as its 3 bytes)."""
    text = json.dumps(_json_value(value), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


# A hessian2 or tars error that is a bound of ``stop``: the value runs past it, or a count or
# length is more than the bytes before it can hold (those two name the non-negative number).
BOUND = re.compile(
    r"overruns the frame|found the end of the frame|before the end of the frame"
    r"|is not followed by|^bad (field count|list length) \d"
)


def measured_kind(reader, buf: bytes, pos: int, stop: int) -> str:
    """What Python's ``measure`` makes of ``buf[:stop]`` from ``pos``: "short" where it waits for
    more bytes (or steps over a value they do not hold), "fail" where it refuses them or finds
    the value whole (read refused it: its text, say)."""
    steps = reader.measure(bytearray(buf[:stop]), pos, None)
    try:
        need = next(steps)
    except StopIteration as done:
        return "short" if done.value[1] > stop else "fail"
    except DecodeError:
        return "fail"
    steps.close()
    assert need > stop, (reader, need, stop)  # it waits only for bytes that are not there
    return "short"


@dataclass
class PyOutcome:
    steps: list  # (JSON bytes, position)
    error: tuple | None  # (step, offset, kind, reason)
    oracle: str = ""  # how the kind was found: measure, bound, window


def py_read(c: Case) -> PyOutcome:
    """What the Python readers make of ``c``: its steps' JSON and positions, the error that
    ended it and the kind of that error."""
    contexts: dict = {}
    pos = c.pos
    out = PyOutcome([], None)
    for i, spec in enumerate(c.steps, 1):
        module = spec[0]
        if module not in contexts:
            contexts[module] = MODULES[module].new_context()
        reader = python_reader(spec)
        try:
            value, after = reader.read(c.buf, pos, c.stop, contexts[module])
        except DecodeError as e:
            if getattr(reader, "WINDOW", False):
                kind, out.oracle = "fail", "window"
            elif hasattr(reader, "measure"):
                kind, out.oracle = measured_kind(reader, c.buf, pos, c.stop), "measure"
            else:
                kind, out.oracle = ("short" if BOUND.search(e.reason) else "fail"), "bound"
            out.error = (i, e.offset, kind, e.reason)
            return out
        expected = json_bytes(value)
        out.steps.append((expected, after))
        pos = after
    return out


# Bytes a "fail" must not depend on: the error stays where it was whatever follows ``stop``.
TAILS = [b"\x00" * 64, bytes(range(255, -1, -1))]


def bound_check(c: Case, py: PyOutcome) -> str | None:
    """A kind found from the error's text (hessian2, tars): a "fail" must stay the same error
    whatever bytes come after ``stop`` (some, and those the case has). (A "short" is an error
    that the Python reader raises on comparing with ``stop``, which its text says.)"""
    if py.error[2] != "fail":
        return None
    head = c.buf[: c.stop]
    for tail in TAILS + [c.buf[c.stop :]]:
        got = py_read(Case(head + tail, len(head) + len(tail), c.steps, c.pos))
        if got.error is None or got.error[:2] != py.error[:2]:
            return f"a fail that more bytes ({tail[:8].hex()}…) change: {got.error}"
    return None


# ---- comparing ----------------------------------------------------------------------------------


def disagreement(c: Case, py: PyOutcome, lua: lua_host.Outcome) -> str | None:
    """Why Lua and Python disagree on ``c``, or None."""
    if len(lua.steps) != len(py.steps):
        return f"{len(py.steps)} steps read in Python, {len(lua.steps)} in Lua"
    for i, ((pj, pp), ls) in enumerate(zip(py.steps, lua.steps), 1):
        if pp != ls.pos:
            return f"step {i}: position {pp} in Python, {ls.pos} in Lua"
        if ls.json != pj:
            return f"step {i}: Python {pj[:300]!r}\n    Lua    {ls.json[:300]!r}"
    if py.error is None:
        if lua.error is not None:
            return f"Lua raised {lua.error}, Python read it all"
        return None
    if lua.error is None:
        return f"Python raised {py.error}, Lua read it all"
    step, offset, kind, reason = py.error
    lua_step, lua_kind, lua_offset, lua_reason = lua.error
    if (lua_step, lua_offset) != (step, offset):
        return (
            f"step {step} offset {offset} in Python ({reason}),"
            f" step {lua_step} offset {lua_offset} in Lua ({lua_reason})"
        )
    if lua_kind != kind:
        return f"{kind} by {py.oracle} ({reason}), {lua_kind} in Lua ({lua_reason})"
    return None


def prefix_rule(c: Case, py: PyOutcome, lua: lua_host.Outcome, full: PyOutcome) -> str | None:
    """A prefix of a valid encoding is short, unless Python reads it: then the first step whose
    result differs from the whole encoding's must say that ``stop`` decided it."""
    if py.error is not None:
        if py.oracle != "window" and py.error[2] != "short":
            return f"a prefix of a valid encoding is a {py.error[2]} by {py.oracle}: {py.error}"
        return None
    for i, (got, whole) in enumerate(zip(py.steps, full.steps)):
        if getattr(python_reader(c.steps[i]), "WINDOW", False):
            return None  # (it fills the bytes it is given, whatever their size)
        if got != whole:
            if not lua.steps[i].open:
                return f"step {i + 1} differs from the whole encoding's, but is not open"
            return None
    return None


# Bytes that follow ``stop`` in :func:`closed_rule`'s reading: a field of every library.
MORE = [b"\x00" * 8, b"\x0c\x10\x01\x0b\x00" + b"\x90Z\r\n"]


def closed_rule(c: Case, lua: lua_host.Outcome) -> str | None:
    """A step that does not say that ``stop`` decided it reads the same when more bytes follow
    ``stop`` (up to the first step that says so; a window type's is its size: not checked)."""
    head = c.buf[: c.stop]
    for more in MORE if lua.steps else []:
        longer = py_read(Case(head + more, c.stop + len(more), c.steps, c.pos))
        for i, step in enumerate(lua.steps):
            if step.open or getattr(python_reader(c.steps[i]), "WINDOW", False):
                break
            if i >= len(longer.steps):
                return f"step {i + 1} is not open, but with {more.hex()} after stop: {longer.error}"
            if longer.steps[i] != (step.json, step.pos):
                return (
                    f"step {i + 1} is not open, but with {more.hex()} after stop: {longer.steps[i]}"
                )
    return None


def describe(c: Case) -> str:
    shown = c.buf.hex()
    if len(shown) > 160:
        shown = shown[:160] + f"… ({len(c.buf)} bytes)"
    return f"{c.origin}: {c.steps} pos {c.pos} stop {c.stop}\n    bytes {shown}"


# ---- cases: hessian2 -----------------------------------------------------------------------------

H2_STRING, H2_INT, H2_ANY, H2_MAP = (("hessian2", n, ()) for n in ("string", "int", "any", "map"))
H2_JUNK = b"\x52\x00\x05Z"
INT64 = st.integers(-(2**63), 2**63 - 1)
INT64_EDGES = [0, 1, -1, 47, 48, -16, -17, 2047, 2048, -2048, -2049, 262143, 262144, -262144]
INT64_EDGES += [-262145, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**53 - 1, 2**53, 2**53 + 1]
INT64_EDGES += [-(2**53) - 1, 2**63 - 1, -(2**63)]


def hessian2_body(arguments, context) -> Case:
    """A Dubbo request body (dubbo-ssl-python's) read as its spec reads it: five strings, the
    arguments its descriptor counts, the attachments."""
    body = t_h2._dubbo_body(arguments, context)
    (_, _, _, _, descriptor), _, _, _ = t_h2._read_body(body)
    steps = [H2_STRING] * 5 + [H2_ANY] * hessian2.arg_count(descriptor) + [H2_MAP]
    return case(body, steps, H2_JUNK, "dubbo body")


def hessian2_map_bytes(pairs) -> bytes:
    """An untyped map of these (key, value) pairs, repeats and all (encode_value each)."""
    enc = hessian2.encode_value
    return b"H" + b"".join(enc(k) + enc(v) for k, v in pairs) + b"Z"


def _i(fmt: str, v: int) -> bytes:
    return struct.pack(">" + fmt, v)


# Every wire form of a Hessian int, long and double: (its range, how it is written)
H2_NUMBER_FORMS = [
    ((-16, 47), lambda v: bytes([0x90 + v])),
    ((-2048, 2047), lambda v: bytes([0xC8 + (v >> 8), v & 0xFF])),
    ((-262144, 262143), lambda v: bytes([0xD4 + (v >> 16), (v >> 8) & 0xFF, v & 0xFF])),
    ((-(2**31), 2**31 - 1), lambda v: b"I" + _i("i", v)),
    ((-8, 15), lambda v: bytes([0xE0 + v])),
    ((-2048, 2047), lambda v: bytes([0xF8 + (v >> 8), v & 0xFF])),
    ((-262144, 262143), lambda v: bytes([0x3C + (v >> 16), (v >> 8) & 0xFF, v & 0xFF])),
    ((-(2**31), 2**31 - 1), lambda v: b"\x59" + _i("i", v)),
    ((-(2**63), 2**63 - 1), lambda v: b"L" + _i("q", v)),
    ((0, 1), lambda v: bytes([0x5B + v])),  # double 0.0, 1.0
    ((-128, 127), lambda v: b"\x5d" + _i("b", v)),
    ((-32768, 32767), lambda v: b"\x5e" + _i("h", v)),
    ((-(2**31), 2**31 - 1), lambda v: b"\x5f" + _i("i", v)),  # thousandths
]


@st.composite
def h2_string_form(draw_):
    """A string in any of its forms: as Java writes it, or in 'S' or 0x30 form whatever its
    length, or cut in 'R' chunks anywhere (between the surrogates of a pair too)."""
    text = draw_(st.text(max_size=12))
    java = hessian2._NON_BMP.sub(hessian2._split_non_bmp, text)
    form = draw_(st.sampled_from(["java", "S", "short", "chunks"]))
    if form == "java":
        return hessian2.encode_string(text)
    if form == "S" or len(java) > 0x3FF:
        return b"S" + _i("H", len(java)) + java.encode("utf-8", "surrogatepass")
    if form == "short":
        return bytes([0x30 + (len(java) >> 8), len(java) & 0xFF]) + java.encode(
            "utf-8", "surrogatepass"
        )
    out = b""
    while len(java) > 1 and draw_(st.booleans()):
        k = draw_(st.integers(0, len(java) - 1))
        out += b"R" + _i("H", k) + java[:k].encode("utf-8", "surrogatepass")
        java = java[k:]
    return out + b"S" + _i("H", len(java)) + java.encode("utf-8", "surrogatepass")


@st.composite
def h2_value(draw_, seen: dict, depth: int = 0):
    """One Hessian value of any kind in any of its forms: lists and maps of them, objects after
    their class definition, typed lists and maps naming a new type or one named before.
    ``seen``: the classes and types the message defined before (its values are drawn in
    order)."""
    kinds = ["number", "string", "simple", "binary", "date", "double"]
    if depth < 3:
        kinds += ["list", "map", "object"]
    kind = draw_(st.sampled_from(kinds))
    if kind == "number":
        (low, high), write = draw_(st.sampled_from(H2_NUMBER_FORMS))
        return write(draw_(st.integers(low, high)))
    if kind == "double":
        return b"D" + struct.pack(">d", draw_(st.floats()))
    if kind == "string":
        return draw_(h2_string_form())
    if kind == "simple":
        return draw_(st.sampled_from([b"N", b"T", b"F"]))
    if kind == "date":
        return draw_(st.sampled_from([b"\x4a" + bytes(8), b"\x4b\x00\xe3\x83\x8f"]))
    if kind == "binary":
        data = draw_(st.binary(max_size=20))
        if len(data) < 16 and draw_(st.booleans()):
            return bytes([0x20 + len(data)]) + data
        return b"B" + _i("H", len(data)) + data
    if kind == "object":
        n = draw_(st.integers(0, 3))
        fields = b"".join(b"\x01" + bytes([0x61 + k]) for k in range(n))
        definition = b"C\x01P" + hessian2.encode_int(n) + fields
        ref = seen["classes"]
        seen["classes"] += 1
        head = bytes([0x60 + ref]) if ref < 16 else b"O" + hessian2.encode_int(ref)
        return definition + head + b"".join(draw_(h2_value(seen, depth + 1)) for _ in range(n))
    typed = b""
    if draw_(st.booleans()):  # a type: a new name, or the number of one named before
        if seen["types"] and draw_(st.booleans()):
            typed = hessian2.encode_int(draw_(st.integers(0, seen["types"] - 1)))
        else:
            name = draw_(st.sampled_from(["[int", "[string", "java.util.Map"]))
            typed = hessian2.encode_string(name)
            seen["types"] += 1
    if kind == "map":
        pairs = draw_(st.lists(st.tuples(h2_value(seen, depth + 1), h2_value(seen, depth + 1))))
        return (b"M" + typed if typed else b"H") + b"".join(k + v for k, v in pairs) + b"Z"
    items = draw_(st.lists(h2_value(seen, depth + 1), max_size=3))
    if typed:
        if len(items) < 8 and draw_(st.booleans()):
            return bytes([0x70 + len(items)]) + typed + b"".join(items)
        if draw_(st.booleans()):
            return b"\x56" + typed + hessian2.encode_int(len(items)) + b"".join(items)
        return b"\x55" + typed + b"".join(items) + b"Z"
    if len(items) < 8 and draw_(st.booleans()):
        return bytes([0x78 + len(items)]) + b"".join(items)
    if draw_(st.booleans()):
        return b"\x58" + hessian2.encode_int(len(items)) + b"".join(items)
    return b"\x57" + b"".join(items) + b"Z"


@st.composite
def h2_map_of_any(draw_):
    """A map whose keys and values are any values in any form; read as a map, as any, or as
    any then map in one message (whose types and classes the map may refer to)."""
    seen = {"classes": 0, "types": 0}
    steps = draw_(st.sampled_from([[H2_MAP], [H2_ANY], [H2_ANY, H2_MAP]]))
    first = draw_(h2_value(seen)) if len(steps) == 2 else b""
    pairs = draw_(st.lists(st.tuples(h2_value(seen), h2_value(seen)), max_size=5))
    head = b"H"
    if draw_(st.booleans()):
        head = b"M" + hessian2.encode_string("java.util.HashMap")
    return first + head + b"".join(k + v for k, v in pairs) + b"Z", steps


def hessian2_valid() -> list[Case]:
    out = []
    text = st.one_of(st.none(), st.text(max_size=40), st.text(max_size=3).map(lambda t: t * 400))
    for t in draw(text, 120):
        data = hessian2.encode_string(t)
        out += [case(data, [H2_STRING], H2_JUNK, "string"), case(data, [H2_ANY], H2_JUNK, "string")]
    long = ["a" * 0x8001, "😀" * 0x4001, "中" * 40000, "a" * 0x7FFF + "😀" + "b", "é" * 1100]
    for t in long:
        out.append(case(hessian2.encode_string(t), [H2_STRING], H2_JUNK, "long string"))
    for v in draw(INT64, 100) + INT64_EDGES:
        data = hessian2.encode_int(v)
        out += [case(data, [H2_INT], H2_JUNK, "int"), case(data, [H2_ANY], H2_JUNK, "int")]
    maps = st.dictionaries(t_h2.SIMPLE, t_h2.SIMPLE, max_size=8)
    for m in draw(maps, 100):
        data = t_h2.MAP.write(m, None)
        out += [case(data, [H2_MAP], H2_JUNK, "map"), case(data, [H2_ANY], H2_JUNK, "map")]
    # keys Python's dict takes for one (True, 1, 1.0; 0, -0.0, False), and NaNs it keeps apart
    nan = struct.unpack(">d", bytes.fromhex("7ff8000000000001"))[0]
    for pairs in (
        [(1, "a"), (True, "b"), (1.0, "c"), ("1", "d")],
        [(0.0, 1), (-0.0, 2), (False, 3), (0, 4), (None, 5), (None, 6)],
        [(nan, 1), (nan, 2), (float("inf"), 3), (2**60, 4), (float(2**60), 5)],
        [(hessian2.Raw(b"\x7a\x90\x91"), 1), (hessian2.Raw(b"\x7a\x90\x91"), 2), ("7a9091", 3)],
    ):
        out.append(case(hessian2_map_bytes(pairs), [H2_MAP], H2_JUNK, "map of equal keys"))
    arguments = st.lists(t_h2.dubbo_argument(), max_size=6)
    context = st.dictionaries(t_h2.BMP_TEXT, t_h2.BMP_TEXT, max_size=4)
    for args, ctx in draw(st.tuples(arguments, context), 40):
        out.append(hessian2_body(args, ctx))
    for data, steps in draw(h2_map_of_any(), 250):
        out.append(case(data, steps, H2_JUNK, "map of any values"))
    # doubles in their short forms, of random-looking values (0.001 * n is not n / 1000)
    forms = st.sampled_from(H2_NUMBER_FORMS[-4:])
    numbers = st.lists(st.tuples(forms, st.integers(-(2**31), 2**31 - 1)), min_size=10)
    for values in draw(numbers, 20):
        entries = []
        for k, (((low, high), write), n) in enumerate(values):
            entries.append(hessian2.encode_int(k) + write(n % (high - low + 1) + low))
        out.append(case(b"H" + b"".join(entries) + b"Z", [H2_MAP], H2_JUNK, "map of doubles"))
    return out


def hessian2_vectors() -> list[Case]:
    x = t_h2.x
    out = [case(x(h), [H2_INT], H2_JUNK, "spec int") for h, _ in t_h2.SPEC_INTS]
    out += [case(x(h), [H2_ANY], H2_JUNK, "spec value") for h in t_h2.SPEC_VALUES]
    out += [
        case(x(h) + b"\x90", [H2_STRING], H2_JUNK, "string vector")
        for h, _ in params(t_h2.test_string_vectors)
    ]
    out += [
        case(x(h), [H2_STRING], H2_JUNK, "string error")
        for h, _, _ in params(t_h2.test_string_errors)
    ]
    out += [case(x(h), [H2_ANY], H2_JUNK, "any error") for h, _, _ in params(t_h2.test_any_errors)]
    for seed in t_h2.FUZZ_SEEDS:
        for spec in (H2_STRING, H2_INT, H2_ANY, H2_MAP):
            out.append(case(seed, [spec], H2_JUNK, "fuzz seed"))
    out.append(
        case(
            t_h2.FUZZ_SEEDS[-1],
            [H2_STRING] * 5 + [H2_ANY] * 4 + [H2_MAP],
            H2_JUNK,
            "fuzz seed body",
        )
    )
    return out


# ---- cases: tars ---------------------------------------------------------------------------------

TARS_KINDS = {"int": tars.Int, "string": tars.String, "bytes": tars.Bytes, "map": tars.Map}
TARS_NAMES = {cls: name for name, cls in tars.TYPES.items()}
TARS_JUNK = b"\x09\x00\xff"
TARS_VALUES = {
    "int": INT64,
    "string": st.text(max_size=20) | st.text(max_size=2).map(lambda t: t * 150),
    "bytes": st.binary(max_size=40) | st.binary(max_size=2).map(lambda b: b * 200),
    "map": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6),
}
# fields of the types the readers only skip, from @tars/stream's stream (tag 0 here)
TARS_OTHERS = [bytes([raw[0] & 15]) + raw[1:] for _, tag, raw in t_tars.NODE_FIELDS[5:9]]


def tars_spec(reader) -> Spec:
    return ("tars", TARS_NAMES[type(reader)], (reader.tag,) if hasattr(reader, "tag") else ())


def retag(field_bytes: bytes, tag: int) -> bytes:
    """A field of tag 0 (one-byte head) with ``tag`` instead."""
    ty = field_bytes[0] & 15
    head = bytes([(tag << 4) | ty]) if tag < 15 else bytes([0xF0 | ty, tag])
    return head + field_bytes[1:]


@st.composite
def tars_message(draw_):
    """Fields of random tags and types (in tag order, or shuffled, some repeated), and a layout
    reading some of their tags in ascending order, maybe with rest."""
    tags = draw_(st.lists(st.integers(0, 20) | st.integers(0, 255), max_size=7, unique=True))
    fields = []
    for tag in sorted(tags):
        kind = draw_(st.sampled_from(sorted(TARS_KINDS) + ["other"]))
        if kind == "other":
            fields.append((tag, "any", retag(draw_(st.sampled_from(TARS_OTHERS)), tag)))
        else:
            value = draw_(TARS_VALUES[kind])
            fields.append((tag, kind, TARS_KINDS[kind](tag).write(value, None)))
    if fields and draw_(st.booleans()):
        fields = draw_(st.permutations(fields))
    if fields and draw_(st.booleans()):
        fields.insert(draw_(st.integers(0, len(fields))), draw_(st.sampled_from(fields)))
    wanted = (
        sorted(set(draw_(st.lists(st.sampled_from([f[0] for f in fields] + [0, 7, 255])))))
        if fields
        else []
    )
    kinds = {tag: kind for tag, kind, _ in fields}
    steps = []
    for tag in wanted:
        kind = kinds.get(tag, "int")
        if draw_(st.integers(0, 4)) == 0:
            kind = "any"
        steps.append(("tars", kind, (tag,)))
    if draw_(st.booleans()) or not steps:
        steps.append(("tars", "rest", ()))
    return b"".join(f[2] for f in fields), steps


def tars_valid() -> list[Case]:
    out = []
    for kind, values in TARS_VALUES.items():
        for value, tag in draw(st.tuples(values, st.integers(0, 20) | st.integers(0, 255)), 50):
            data = TARS_KINDS[kind](tag).write(value, None)
            for spec in [
                ("tars", kind, (tag,)),
                ("tars", "any", (tag,)),
                ("tars", kind, (max(0, tag - 1),)),
                ("tars", kind, (min(255, tag + 1),)),
            ]:
                out.append(case(data, [spec], TARS_JUNK, f"tars {kind}"))
    for data, steps in draw(tars_message(), 250):
        out.append(case(data, steps, TARS_JUNK, "tars message"))
    return out


def tars_vectors() -> list[Case]:
    h = t_wire.h
    out = [
        case(
            t_tars.NODE_STREAM,
            [("tars", TARS_NAMES[cls], (tag,)) for cls, tag, _ in t_tars.NODE_FIELDS],
            TARS_JUNK,
            "node stream",
        )
    ]
    for cls, tag, _ in t_tars.NODE_FIELDS:
        out.append(case(t_tars.NODE_STREAM, [("tars", TARS_NAMES[cls], (tag,))], b"", "node field"))
    out.append(
        case(t_tars.NODE_STREAM, [("tars", "int", (3,)), ("tars", "rest", ())], b"", "node rest")
    )
    for value, tag, hexed in params(t_tars.test_int_vectors):
        out.append(case(bytes.fromhex(hexed), [("tars", "int", (tag,))], TARS_JUNK, "int vector"))
    for hexed, _ in params(t_tars.test_any_errors):
        out.append(case(bytes.fromhex(hexed), [("tars", "any", (0,))], TARS_JUNK, "any error"))
    for reader, hexed, _, _ in params(t_tars.test_errors_say_where_and_what):
        out.append(case(t_tars._h(hexed), [tars_spec(reader)], TARS_JUNK, "tars error"))
    for reader, wire, _ in params(t_wire.test_a_field_in_another_form_is_written_back_as_it_came):
        out.append(case(h(wire), [tars_spec(reader)], TARS_JUNK, "another form"))
        out.append(
            case(
                h("00 07") + h(wire) + h("00 05 b0 01"),
                [tars_spec(reader), ("tars", "rest", ())],
                b"",
                "another form, around",
            )
        )
    for wire in params(t_wire.test_a_map_in_another_form_is_written_back_as_it_came):
        out.append(case(h(wire), [("tars", "map", (2,))], TARS_JUNK, "map in another form"))
    layout = [tars_spec(r) for r in t_wire.LAYOUT]
    out.append(case(t_wire.MESSAGE, layout, b"", "message"))
    for k in (64, 65):
        data = t_tars._structs(k)
        for steps in ([("tars", "any", (0,))], [("tars", "int", (5,))], [("tars", "rest", ())]):
            out.append(case(data, steps, b"", "nesting"))
        out.append(
            case(
                b"\x10\x01" + data,
                [("tars", "int", (1,)), ("tars", "rest", ())],
                b"",
                "nesting after",
            )
        )
    return out


# ---- cases: thrift -------------------------------------------------------------------------------

THRIFT_JUNK = b"\x0c\x0f\xff"
THRIFT_STRING, THRIFT_STRUCT, THRIFT_STOP = (
    ("thrift", n, ()) for n in ("string", "struct", "stop")
)


def thrift_field(fid: int, kind: str) -> Spec:
    return ("thrift", "field", (fid, kind))


@lru_cache(maxsize=1)
def thrift_idl():
    import tempfile
    from pathlib import Path

    import thriftpy2

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "all.thrift"
        path.write_text(t_thrift.IDL)
        return thriftpy2.load(str(path), module_name="lua_all_thrift")


def thrift_all(draw_) -> bytes:
    idl = thrift_idl()
    ints = st.integers(-(2**31), 2**31 - 1)
    kwargs = draw_(
        st.fixed_dictionaries(
            {},
            optional={
                "flag": st.booleans(),
                "tiny": st.integers(-128, 127),
                "small": st.integers(-(2**15), 2**15 - 1),
                "mid": ints,
                "big": INT64,
                "ratio": st.floats(),
                "name": st.text(max_size=20),
                "blob": st.binary(max_size=20),
                "inner": st.builds(idl.Inner, ints, st.text(max_size=5)),
                "items": st.lists(st.builds(idl.Inner, ints, st.text(max_size=3)), max_size=3),
                "index": st.dictionaries(
                    st.text(max_size=5), st.lists(ints, max_size=3), max_size=3
                ),
                "ids": st.sets(INT64, max_size=4),
                "fixed": st.dictionaries(ints, st.integers(-(2**15), 2**15 - 1), max_size=3),
                "names": st.lists(st.text(max_size=5), max_size=4),
            },
        )
    )
    return t_thrift._ser(idl.All(**kwargs))


@st.composite
def thrift_struct(draw_):
    """A struct thriftpy2 writes, and a layout reading it: some of its fields in id order (the
    kinds they have, or others), then stop; or struct, or stop alone."""
    data = thrift_all(draw_)
    shape = draw_(st.sampled_from(["fields", "struct", "stop"]))
    if shape != "fields":
        return data, [THRIFT_STRUCT if shape == "struct" else THRIFT_STOP]
    chosen = draw_(
        st.lists(
            st.sampled_from(t_thrift.ALL_FIELDS + [(13, "i32", None), (30, "string", None)]),
            unique=True,
        )
    )
    steps = []
    for fid, kind, _ in sorted(chosen):
        if draw_(st.integers(0, 5)) == 0:
            kind = draw_(st.sampled_from(thrift.KINDS))
        steps.append(thrift_field(fid, kind))
    return data, steps + [THRIFT_STOP]


@st.composite
def thrift_one_field(draw_):
    kind = draw_(st.sampled_from(sorted(t_thrift.KIND_VALUES)))
    value = draw_(t_thrift.KIND_VALUES[kind])
    fid = draw_(st.integers(-(2**15), 2**15 - 1))
    data = thrift.TYPES["field"](fid, kind).write(value, None) + b"\x00"
    other = max(-(2**15), min(2**15 - 1, fid + draw_(st.sampled_from([-1, 1]))))
    steps = draw_(
        st.sampled_from(
            [
                [thrift_field(fid, kind)],
                [thrift_field(fid, kind), THRIFT_STOP],
                [THRIFT_STRUCT],
                [thrift_field(other, kind), THRIFT_STOP],
            ]
        )
    )
    return data, steps


def thrift_valid() -> list[Case]:
    out = [case(d, s, THRIFT_JUNK, "thriftpy2 struct") for d, s in draw(thrift_struct(), 150)]
    out += [case(d, s, THRIFT_JUNK, "thrift field") for d, s in draw(thrift_one_field(), 150)]
    for text in draw(st.text(max_size=30), 60):
        out.append(case(t_thrift.STRING.write(text, None), [THRIFT_STRING], THRIFT_JUNK, "string"))
    return out


def thrift_vectors() -> list[Case]:
    out = []
    for kind, hexed, _ in t_thrift.EXACT:
        f = thrift.TYPES["field"](1, kind)
        data = f._header + bytes.fromhex(hexed)
        for steps in ([thrift_field(1, kind)], [thrift_field(2, "i32")], [THRIFT_STOP]):
            out.append(case(data + b"\x00", steps, b"", "exact"))
    for hexed, _ in params(t_thrift.test_struct_errors):
        for steps in ([THRIFT_STRUCT], [THRIFT_STOP], [thrift_field(2, "i32")]):
            out.append(case(bytes.fromhex(hexed), steps, THRIFT_JUNK, "struct error"))
    for hexed, _, _ in params(t_thrift.test_struct_errors_say_where_and_what):
        out.append(case(bytes.fromhex(hexed), [THRIFT_STRUCT], THRIFT_JUNK, "struct error"))
    for kind, hexed, _, _ in params(t_thrift.test_field_errors_say_where_and_what):
        out.append(case(bytes.fromhex(hexed), [thrift_field(1, kind)], THRIFT_JUNK, "field error"))
    for make, limit in ((t_thrift._structs, 64), (t_thrift._lists, 63), (t_thrift._maps, 63)):
        for k in (limit, limit + 1):
            data = make(k)
            for steps in (
                [THRIFT_STRUCT],
                [THRIFT_STOP],
                [thrift_field(1, "struct")],
                [thrift_field(1, "list")],
                [thrift_field(1, "map")],
                [thrift_field(2, "i32")],
            ):
                out.append(case(data, steps, b"", "nesting"))
    uuid = b"\x10\x00\x01" + bytes(range(16))
    out.append(case(uuid, [thrift_field(2, "i32")], b"", "uuid"))
    return out


# ---- cases: varint, texts, json ------------------------------------------------------------------

UNSIGNED, SIGNED = ("varint", "unsigned", ()), ("varint", "signed", ())


def varint_valid() -> list[Case]:
    out = []
    for v in draw(st.integers(0, 2**64 - 1), 150) + [2**53 - 1, 2**53, 2**53 + 1, 2**63]:
        out.append(case(t_varint.U.write(v, None), [UNSIGNED], b"\xff\x80", "unsigned"))
    for v in draw(INT64, 150) + INT64_EDGES:
        out.append(case(t_varint.S.write(v, None), [SIGNED], b"\xff\x80", "signed"))
    values = st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=5)
    for vs in draw(values, 40):
        data = b"".join(t_varint.U.write(v, None) for v in vs)
        out.append(case(data, [UNSIGNED, SIGNED] * 3, b"", "varints"))
    return out


def varint_vectors() -> list[Case]:
    out = []
    for _, hexed in t_varint.UNSIGNED_VECTORS + t_varint.SIGNED_VECTORS:
        for spec in (UNSIGNED, SIGNED):
            out.append(case(bytes.fromhex(hexed), [spec], b"\xff", "varint vector"))
    for hexed, end, _, _ in params(t_varint.test_unsigned_errors):
        data = bytes.fromhex(hexed)
        for spec in (UNSIGNED, SIGNED):
            out.append(case(data, [spec], b"\x01", "varint error", stop=end))
    out.append(case(b"\x80\x00\x81\x80\x00", [UNSIGNED, UNSIGNED], b"", "redundant zero groups"))
    return out


DELIMITERS = ["\r\n", " ", "\0", "\xff", "\r\n\r\n", "ab", "-", "\n"]
TEXTS_NAMES = {
    texts.Bytes: "bytes",
    texts.String: "string",
    texts.Decimal: "decimal",
    texts.Token: "token",
}


def texts_spec(ft) -> Spec:
    octets = ft.token if isinstance(ft, texts.Token) else ft.delim
    return ("texts", TEXTS_NAMES[type(ft)], (octets.decode("latin-1"),))


@st.composite
def texts_value(draw_):
    """A texts value of a random type and delimiter, as the Python writer writes it (None when
    it refuses the value: a value holding its delimiter)."""
    name = draw_(st.sampled_from(["bytes", "string", "decimal", "token"]))
    delim = draw_(st.sampled_from(DELIMITERS))
    if name == "decimal" and delim[0].isdigit():
        delim = "\r\n"
    ft = texts.TYPES[name](delim)
    value = draw_(
        {
            "bytes": st.binary(max_size=30),
            "string": st.text(max_size=20),
            "decimal": INT64
            | st.integers(-(10**19) + 1, 10**20 - 1)
            | st.sampled_from([2**53, -(2**53), 2**53 + 1]),
            "token": st.none(),
        }[name]
    )
    try:
        return ft.write(value), texts_spec(ft)
    except ValueError:
        return None


def texts_valid() -> list[Case]:
    out = []
    for got in draw(texts_value(), 400):
        if got is not None:
            out.append(case(got[0], [got[1]], b"\r\n-\xff", "texts value"))
    pairs = draw(st.lists(texts_value(), min_size=2, max_size=4), 40)
    for values in pairs:
        values = [v for v in values if v is not None]
        if values:
            out.append(
                case(b"".join(v[0] for v in values), [v[1] for v in values], b"", "texts values")
            )
    return out


def texts_vectors() -> list[Case]:
    out = []
    for ft, data, _ in params(t_texts.test_a_value_reads_measures_and_writes_back):
        out.append(case(data, [texts_spec(ft)], b"tail", "texts vector"))
    for data in params(t_texts.test_a_decimal_that_is_not_canonical_is_refused_by_read_and_measure):
        out.append(case(data, [("texts", "decimal", ("\r\n",))], b"\r\n", "not canonical"))
        out.append(case(data + b"\r\n", [("texts", "decimal", ("\r\n",))], b"", "not canonical"))
    for data in (b"12x", b"1" * 21, b"hello\r\n", b"12\r\n", b"\n\r", b"\xff\xfe\r\n"):
        for spec in (("texts", n, ("\r\n",)) for n in ("bytes", "string", "decimal", "token")):
            for stop in range(len(data) + 1):
                out.append(case(data, [spec], b"\r\n", "texts edge", stop=stop))
    for delim in ("-", "-x", " -"):
        for data in (b"-5-", b"-x", b"5-x", b"--", b"-0-", b"-5 -"):
            out.append(case(data, [("texts", "decimal", (delim,))], b"", "minus delimiter"))
    return out


JSON_OBJECT = ("json", "object", ())
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from([10**63, -(10**63), 10**64, 2**53 + 1, -0.0, 1e300, 5e-324])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
# Python's whitespace (str.isspace), which may lie around the value
SPACES = ["", " \n"] + [chr(c) for c in range(0x110000) if chr(c).isspace()]


@st.composite
def json_text(draw_):
    value = draw_(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=5) | JSON_VALUES)
    style = draw_(st.sampled_from(["compact", "ascii", "indent", "spaced"]))
    if style == "compact":
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    elif style == "ascii":
        text = json.dumps(value)
    elif style == "indent":
        text = json.dumps(value, indent=draw_(st.sampled_from([0, 1, "\t"])), ensure_ascii=False)
    else:
        text = json.dumps(value, separators=(" , ", " : "), ensure_ascii=False)
    return (draw_(st.sampled_from(SPACES)) + text + draw_(st.sampled_from(SPACES))).encode()


JSON_VECTORS = [
    '{"a":"\\ud800"}',
    '{"a":"\\ud800\\u0041"}',
    '{"a":"\\ud83d\\ude00"}',
    '{"a":"\\udc00\\ud800"}',
    '{"a":"\\ud800\\ud800\\udc00"}',
    '{"a":"\\\\ud800"}',
    '{"\\udfff":1}',
    '{"a":"\\ud83d\\ude00\\ud800"}',
    '{"a":"\\ud800",}',
    '["\\ud800"]',
    '{"a":"\\ud800"} x',
    '{"a":["\\udc00", NaN]}',
    '{"a":"\\ud800\\u12"}',
    '{"a":"\\ud800\\uzzzz"}',
    '{"a":"\\u00e9\\/\\b\\f\\n\\r\\t\\"\\\\"}',
    '{"a":"\\u12"}',
    '{"a":"\\x"}',
    '{"a":"\x01"}',
    '{"a":"\x7f"}',
    '{"a":1,}',
    "[1,]",
    "{}",
    "[]",
    "1",
    '"a"',
    "null",
    '{"a":NaN}',
    '{"a":-Infinity}',
    '{"a":Infinity}',
    '{"a":-}',
    '{"a":-0}',
    '{"a":-0.0}',
    '{"a":1e400}',
    '{"a":1.}',
    '{"a":1.5e}',
    '{"a":1e+}',
    '{"a":1E-2}',
    '{"a":0.5e-3}',
    '{"a":01}',
    '{"a":.5}',
    '{"a":tru}',
    '{"a":nul}',
    '{"a":falsey}',
    '{"a":1 2}',
    '{"a" 1}',
    "{1:2}",
    '{"a":1}}',
    '{"a":1} x',
    '{"a":1}\u3000',
    '\u3000\xa0{"a":1}',
    '{"a":[1,2',
    '{"a":"b',
    '{"a":"b\\',
    '{"a":"b\\u',
    '{"a":"\\u0041',
    "{",
    "",
    " ",
    '{"a":1,"a":2,"b":3}',
    '{"a":' + "1" * 64 + "}",
    '{"a":' + "1" * 65 + "}",
    '{"a":-' + "1" * 64 + "}",
    '{"a":1.' + "0" * 70 + "}",
    '{"a":9007199254740993}',
    '{"a":' + "[" * 63 + "]" * 63 + "}",
    '{"a":' + "[" * 64 + "]" * 64 + "}",
    '{"a":"' + "[" * 70 + '"}',
    '{"a":"\\"' + "[" * 70 + '"}',
    '{"a":"\\\\"' + "[" * 70 + "}",
    '{"é":"€","\\u00e9":"\\u20ac"}',
]


def json_valid() -> list[Case]:
    return [case(data, [JSON_OBJECT], b"}", "json text") for data in draw(json_text(), 300)]


def json_vectors() -> list[Case]:
    out = []
    for text in JSON_VECTORS:
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        out.append(case(data, [JSON_OBJECT], b"}", "json vector"))
    out.append(case(b'{"a":"\xe2\x82"}', [JSON_OBJECT], b"", "json not UTF-8"))
    out.append(case(b'{"a":"\xed\xa0\x80"}', [JSON_OBJECT], b"", "json surrogate bytes"))
    return out


# ---- random bytes and mutants --------------------------------------------------------------------

READERS = {
    "hessian2": [[H2_STRING], [H2_INT], [H2_ANY], [H2_MAP], [H2_ANY, H2_ANY, H2_MAP]],
    "tars": [
        [("tars", n, (t,))] for n in ("int", "string", "bytes", "map", "any") for t in (0, 3, 16)
    ]
    + [
        [("tars", "rest", ())],
        [("tars", "int", (1,)), ("tars", "string", (4,)), ("tars", "rest", ())],
    ],
    "thrift": [[THRIFT_STRING], [THRIFT_STRUCT], [THRIFT_STOP]]
    + [[thrift_field(i, k)] for i, k, _ in t_thrift.ALL_FIELDS],
    "varint": [[UNSIGNED], [SIGNED], [UNSIGNED, SIGNED]],
    "texts": [
        [("texts", n, (d,))] for n in ("bytes", "string", "decimal", "token") for d in ("\r\n", " ")
    ],
    "json": [[JSON_OBJECT]],
}
INTERESTING = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x5A, 0x0B, 0x0C, 0x22, 0x5C, 0x7B, 0x0D, 0x0A]


def random_cases(module: str) -> list[Case]:
    out = []
    for data in draw(st.binary(max_size=48), 150):
        for steps in READERS[module]:
            out.append(case(data, steps, b"\x00\xff", "random bytes"))
    return out


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, int]:
    """``data`` changed at random (1 to 3 edits), and where to stop reading it."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
        elif op == 2 and b:
            del b[i]
        elif op == 3:
            b.insert(i, rng.choice(INTERESTING))
        elif op == 4 and b:
            j = rng.randrange(i, len(b)) + 1
            b[i:i] = b[i:j][:16]
        elif b:
            b[i:] = b[i:][: rng.randrange(len(b) - i + 1)]
    stop = len(b) if rng.random() < 0.7 else rng.randint(0, len(b))
    return bytes(b), stop


def mutants(cases: list[Case], per_case: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    out = []
    for c in cases:
        data = c.buf[: c.stop]
        if len(data) > 4096:
            continue
        for _ in range(per_case):
            changed, stop = mutate(rng, data)
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3)))
            out.append(Case(changed + junk, stop, c.steps, c.pos, "mutant of " + c.origin))
    return out


def cuts(cases: list[Case]) -> list[Case]:
    """The cases Python refuses, read up to each position of their first 32 bytes and of the 8
    bytes either side of the error."""
    out = []
    for c in cases:
        error = py_read(c).error
        if error is not None:
            near = range(max(c.pos, error[1] - 8), min(c.stop, error[1] + 8))
            for k in sorted(set(range(c.pos, min(c.stop, c.pos + 32))) | set(near)):
                out.append(Case(c.buf, k, c.steps, c.pos, "cut of " + c.origin))
    return out


def prefixes(cases: list[Case], wholes: list[PyOutcome], limit: int) -> list[Case]:
    """Cases reading each valid encoding cut at ``stop`` (all cuts of short ones, ``limit`` of
    longer ones: both ends and spread between), the bytes after the cut still there."""
    out = []
    for c, whole in zip(cases, wholes):
        if whole.error is not None or not whole.steps:
            continue
        end = whole.steps[-1][1]
        span = range(c.pos, end)
        if len(span) > limit:
            step = len(span) / limit
            cuts = sorted(
                {c.pos, c.pos + 1, end - 1} | {c.pos + int(k * step) for k in range(limit)}
            )
        else:
            cuts = list(span)
        for k in cuts:
            out.append(Case(c.buf, k, c.steps, c.pos, "prefix of " + c.origin, full=c))
    return out


# ---- running them --------------------------------------------------------------------------------

SOURCES = {
    "hessian2": (hessian2_valid, hessian2_vectors),
    "tars": (tars_valid, tars_vectors),
    "thrift": (thrift_valid, thrift_vectors),
    "varint": (varint_valid, varint_vectors),
    "texts": (texts_valid, texts_vectors),
    "json": (json_valid, json_vectors),
}
KINDS = ["valid", "vectors", "random", "mutants", "prefixes"]


@dataclass
class Batch:
    cases: dict = field(default_factory=dict)  # (module, kind) → [(Case, PyOutcome)]
    lua: dict = field(default_factory=dict)  # (module, kind) → [lua_host.Outcome]


@pytest.fixture(scope="module")
def batch() -> Batch:
    out = Batch()
    for n, (module, (valid, vectors)) in enumerate(SOURCES.items()):
        made = {"valid": valid(), "vectors": vectors(), "random": random_cases(module)}
        made["mutants"] = mutants(made["valid"], 4, 100 + n) + mutants(made["vectors"], 6, 200 + n)
        made["mutants"] += cuts(made["vectors"])
        wholes = [py_read(c) for c in made["valid"] + made["vectors"]]
        made["prefixes"] = prefixes(made["valid"] + made["vectors"], wholes, 24)
        for kind, cases in made.items():
            out.cases[module, kind] = [(c, py_read(c)) for c in cases]
    keys = list(out.cases)
    flat = [(c.buf, c.pos, c.stop, c.steps) for key in keys for c, _ in out.cases[key]]
    results = lua_host.read_cases(flat)
    for key in keys:
        n = len(out.cases[key])
        out.lua[key], results = results[:n], results[n:]
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("module", list(SOURCES))
def test_lua_reads_as_python_reads(batch, module, kind):
    cases = batch.cases[module, kind]
    assert cases, "no cases"
    problems = []
    wholes: dict = {}
    for (c, py), lua in zip(cases, batch.lua[module, kind]):
        why = disagreement(c, py, lua)
        if why is None and py.error is not None and py.oracle == "bound":
            why = bound_check(c, py)
        if why is None and c.full is not None:
            if id(c.full) not in wholes:
                wholes[id(c.full)] = py_read(c.full)
            why = prefix_rule(c, py, lua, wholes[id(c.full)])
        if why is None:
            why = closed_rule(c, lua)
        if why is not None:
            problems.append(f"{describe(c)}\n    {why}")
    assert not problems, f"{len(problems)} of {len(cases)} cases:\n" + "\n".join(problems[:8])


def test_every_type_and_error_kind_is_exercised(batch):
    """The batch reaches every type of every library, each to a value, a short and a fail."""
    seen = set()
    for key, cases in batch.cases.items():
        for (c, py), lua in zip(cases, batch.lua[key]):
            for spec in c.steps[: len(lua.steps)]:
                seen.add((spec[0], spec[1], "value"))
            if lua.error is not None:
                spec = c.steps[lua.error[0] - 1]
                seen.add((spec[0], spec[1], lua.error[1]))
    missing = []
    for module, mod in MODULES.items():
        for name, cls in mod.TYPES.items():
            outcomes = ["value", "short", "fail"]
            if getattr(cls, "WINDOW", False):
                outcomes = ["value", "fail"]  # (its size is given: never short)
            if (module, name) == ("texts", "bytes"):
                outcomes = ["value", "short"]  # (any bytes before a delimiter are a value)
            missing += [(module, name, o) for o in outcomes if (module, name, o) not in seen]
    assert not missing


# ---- functions, constructors ---------------------------------------------------------------------

_ARG_COUNT = lua_host.FIELDTYPES_PRELUDE + r"""
local dir = ...
local arg_count = FIELDTYPES.hessian2.FUNCTIONS.arg_count
local out = {}
local function run(arg)
    local ok, got = pcall(arg_count, arg)
    if ok then
        out[#out + 1] = "N\t" .. V.int_text(got)
    elseif type(got) == "table" and got.fail then
        out[#out + 1] = "E\t" .. got.offset .. "\t" .. V.hex(got.reason)
    else
        out[#out + 1] = "X\t" .. V.hex(tostring(got))
    end
end
for line in io.lines(dir .. "descriptors.txt") do
    run((string.gsub(line, "..", function(h) return string.char(tonumber(h, 16)) end)))
end
for _, arg in ipairs({ V.NULL, 0, false, V.bytes(""), 5, V.bytes("I"), true }) do run(arg) end
run(nil)
io.stdout:write(table.concat(out, "\n"), "\n")
"""
# the same non-text arguments in Python (after the descriptors)
_ARG_COUNT_OTHERS = [None, 0, False, b"", 5, b"I", True, None]


def test_arg_count_counts_as_python_counts():
    descriptors = [d for d, _ in params(t_h2.test_arg_count) if d is not None]
    descriptors += params(t_h2.test_arg_count_malformed)
    descriptors += ["Ljava/lang/String;" * 1000, "I" * 1000 + "?", "Lé/ü;[Lß;X", "é", "[["]
    descriptors += ["La/;", "L;", "La//b;", "[I[", "I" * 600, "Lx;" * 200 + "."]
    pieces = st.lists(st.sampled_from(t_desc.PIECES + ["é", "L中;"]), max_size=12)
    descriptors += ["".join(p) for p in draw(pieces, 300)]
    text = lua_host.run_lua(
        _ARG_COUNT,
        files={"descriptors.txt": "\n".join(d.encode().hex() for d in descriptors) + "\n"},
    )
    lines = text.splitlines()
    assert len(lines) == len(descriptors) + len(_ARG_COUNT_OTHERS)
    problems = []
    for arg, line in zip(descriptors + _ARG_COUNT_OTHERS, lines):
        try:
            expected = ("N", str(hessian2.arg_count(arg)))
        except DecodeError as e:
            expected = ("E", str(e.offset), e.reason)
        tag, *rest = line.split("\t")
        got = (tag, rest[0]) if tag == "N" else (tag, rest[0], bytes.fromhex(rest[1]).decode())
        if tag == "X":
            got = (tag, bytes.fromhex(rest[0]).decode())
        if got != expected:
            problems.append(f"{arg!r}: Python {expected}, Lua {got}")
    assert not problems, "\n".join(problems[:10])


_CONSTRUCTORS = lua_host.FIELDTYPES_PRELUDE + r"""
local out = {}
for line in io.lines((...) .. "arguments.txt") do
    local module, name, args = table.unpack(assert(load("return " .. line))())
    local ok, e = pcall(FIELDTYPES[module].TYPES[name], table.unpack(args, 1, args.n))
    out[#out + 1] = ok and "ok" or ("error: " .. V.hex(tostring(e)))
end
io.stdout:write(table.concat(out, "\n"), "\n")
"""


def test_constructors_refuse_what_python_refuses():
    calls = []
    for module, mod in MODULES.items():
        for name in mod.TYPES:
            calls += [(module, name, ()), (module, name, (1,)), (module, name, ("\r\n",))]
    calls += [("tars", "int", (t,)) for t in (-1, 0, 15, 255, 256)]
    calls += [
        ("thrift", "field", (i, k))
        for i in (-(2**15) - 1, -(2**15), 2**15 - 1, 2**15)
        for k in ("i32", "float", "binary")
    ]
    calls += [
        ("texts", n, (d,))
        for n in ("bytes", "string", "decimal", "token")
        for d in ("", "☃", "0", "\xff", "a\xe9", "-")
    ]
    lines = []
    for module, name, args in calls:
        literal = (
            lua_host.lua_literal(list(args))[:-1] + (", " if args else "") + f"n = {len(args)}}}"
        )
        lines.append(f"{{{lua_host.lua_string(module)}, {lua_host.lua_string(name)}, {literal}}}")
    got = lua_host.run_lua(_CONSTRUCTORS, files={"arguments.txt": "\n".join(lines) + "\n"})
    problems = []
    for (module, name, args), line in zip(calls, got.splitlines()):
        try:
            MODULES[module].TYPES[name](*args)
            python = "ok"
        except Exception as e:  # (a str method on an int, say: refused all the same)
            python = f"error: {e!r}"
        if line.startswith("error: "):
            line = "error: " + bytes.fromhex(line[7:]).decode("utf-8", "replace")
        if (python == "ok") != (line == "ok"):
            problems.append(f"{module}.{name}{args}: Python {python!r}, Lua {line!r}")
    assert not problems, "\n".join(problems)


def test_window_types_are_named():
    """json.object is the only window type (Python's WINDOW = True); the Lua module names it."""
    windows = {
        (m, n)
        for m, mod in MODULES.items()
        for n, cls in mod.TYPES.items()
        if getattr(cls, "WINDOW", False)
    }
    script = lua_host.FIELDTYPES_PRELUDE + "\n".join(
        f'print("{m}", "{n}", (FIELDTYPES["{m}"].WINDOW or {{}})["{n}"] == true)'
        for m, mod in MODULES.items()
        for n in mod.TYPES
    )
    got = {
        tuple(line.split("\t")[:2])
        for line in lua_host.run_lua(script).splitlines()
        if line.endswith("true")
    }
    assert got == windows == {("json", "object")}


def test_json_of_a_map_whose_keys_collide():
    data = hessian2_map_bytes([(1, "a"), ("1", "b")])
    (lua,) = lua_host.read_cases([(data, 0, len(data), [H2_MAP])])
    value, _ = hessian2.TYPES["map"]().read(data, 0, len(data), hessian2.new_context())
    assert lua.steps[0].json == json_bytes(value)


@pytest.mark.parametrize("x", [-1.5216382665941678e16, 2.0**-24])
def test_json_of_a_float_as_python_writes_it(x):
    data = hessian2_map_bytes([("x", x)])
    (lua,) = lua_host.read_cases([(data, 0, len(data), [H2_MAP])])
    value, _ = hessian2.TYPES["map"]().read(data, 0, len(data), hessian2.new_context())
    assert lua.steps[0].json == json_bytes(value)


_BIG = lua_host.FIELDTYPES_PRELUDE + r"""
local out = {}
for line in io.lines((...) .. "cases.txt") do
    local buf, module, name, args = table.unpack(assert(load("return " .. line))())
    local reader = FIELDTYPES[module].TYPES[name](table.unpack(args))
    local v = reader:read(buf, 0, #buf, FIELDTYPES[module].new_context())
    if V.is_map(v) then v = v:get("a") end
    out[#out + 1] = (V.is_big(v) and (v.hex or "none") or "small") .. " " .. V.int_text(v)
end
io.stdout:write(table.concat(out, "\n"), "\n")
"""


def test_big_integers_carry_their_64_bits():
    """An integer read by any reader is the value Python reads and, beyond 2^53, has its 64-bit
    two's complement in hex (what the dissector shows in a 64-bit field), unless it is beyond
    64 bits."""
    edges = [2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**19, 10**20 - 1]
    edges += [-(2**53) - 1, -(2**63), -(2**63) - 1, -(10**19) + 1]
    values = edges + draw(st.integers(-(2**64), 2**64) | st.integers(-(10**30), 10**30), 60)
    field = thrift.TYPES["field"](1, "i64")
    writers = [
        (-(2**63), 2**63, ("hessian2", "int", ()), hessian2.encode_int),
        (-(2**63), 2**63, ("tars", "int", (0,)), lambda v: tars.Int(0).write(v, None)),
        (-(2**63), 2**63, ("thrift", "field", (1, "i64")), lambda v: field.write(v) + b"\0"),
        (0, 2**64, UNSIGNED, lambda v: t_varint.U.write(v, None)),
        (-(2**63), 2**63, SIGNED, lambda v: t_varint.S.write(v, None)),
        (-(10**19) + 1, 10**20, ("texts", "decimal", ("\r\n",)), lambda v: b"%d\r\n" % v),
        (-(10**64) + 1, 10**64, JSON_OBJECT, lambda v: b'{"a":%d}' % v),
    ]
    lines, expected = [], []
    for v in values:
        for low, high, (module, name, args), write in writers:
            if low <= v < high:
                lines.append(lua_host.lua_literal([write(v), module, name, list(args)]))
                if abs(v) < 2**53:
                    expected.append(f"small {v}")
                elif -(2**63) <= v < 2**64:
                    expected.append("%016x %d" % (v & (2**64 - 1), v))
                else:
                    expected.append(f"none {v}")
    got = lua_host.run_lua(_BIG, files={"cases.txt": "\n".join(lines) + "\n"}).splitlines()
    wrong = [(line, e, g) for line, e, g in zip(lines, expected, got) if e != g]
    assert len(got) == len(expected) and not wrong, wrong[:5]
