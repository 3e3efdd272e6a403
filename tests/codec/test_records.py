"""Records: named layouts used as field types, arrays of them by count, recursion to a bound
(issue 13). The spec (resp.xproto beside this file) says RESP2's values: bulk strings whose
"$-1" is null, arrays whose elements are values again ("*-1" null), integers, simple strings and
errors. The frames here are written and read by a hand-written RESP peer in this file, not by
the codec, and fed to the runtime's connection a byte at a time."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protoc_x.cli import frame_json
from protoc_x.compiler import compile_source
from protoc_x.diagnostics import SpecError
from protoc_x.loader import load_module_source
from protoc_x.runtime.api import DecodeError, measured

from ..compiler.test_bad_specs import variant
from .test_measured_frames import assert_parsed_in_linear_work, feed

SPEC = Path(__file__).with_name("resp.xproto")


@pytest.fixture(scope="module")
def module():
    code = compile_source(SPEC.read_text(), str(SPEC), "resp")
    return load_module_source("resp", code, str(SPEC))


@pytest.fixture(scope="module")
def resp(module):
    return module.PROTOCOL


# ---- the hand-written peer: Python values as RESP2 and back ---------------------------------
class Err(str):
    """An error reply's text."""


class Simple(str):
    """A simple string reply's text."""


def typed(value):
    """``value`` with its kinds spelled out: an Err and a Simple of one text compare unequal."""
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def write(value) -> bytes:
    if isinstance(value, Err):
        return b"-" + value.encode() + b"\r\n"
    if isinstance(value, Simple):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, tuple) and value == ("null-array",):
        return b"*-1\r\n"
    return b"*%d\r\n" % len(value) + b"".join(write(v) for v in value)


def read(data: bytes, pos: int = 0):
    kind, line_end = data[pos : pos + 1], data.index(b"\r\n", pos)
    line = data[pos + 1 : line_end]
    pos = line_end + 2
    if kind == b"-":
        return Err(line.decode()), pos
    if kind == b"+":
        return Simple(line.decode()), pos
    if kind == b":":
        return int(line), pos
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, pos
        assert data[pos + n : pos + n + 2] == b"\r\n"
        return data[pos : pos + n], pos + n + 2
    assert kind == b"*", kind
    n = int(line)
    if n < 0:
        return ("null-array",), pos
    out = []
    for _ in range(n):
        v, pos = read(data, pos)
        out.append(v)
    return out, pos


def values_of(frame_or_value):
    """The codec's view of a value, as the peer's Python value."""
    f = frame_or_value
    kind = f.kind
    if kind == 0x2D:
        return Err(f.text)
    if kind == 0x2B:
        return Simple(f.text)
    if kind == 0x3A:
        return f.number
    if kind == 0x24:
        return f.bulk.data
    if f.items is None:
        return ("null-array",)
    return [values_of(v) for v in f.items]


line = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
)
scalars = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    line.map(Simple),
    line.map(Err),
    st.just(("null-array",)),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=40)


# ---- decode and encode ------------------------------------------------------------------
@settings(max_examples=300)
@given(values)
def test_any_value_the_peer_writes_decodes_to_it_and_encodes_back_to_its_bytes(resp, value):
    data = write(value)
    f = resp.decode(data + b"+next\r\n", 0)
    assert f.length == len(data)
    assert typed(values_of(f)) == typed(value)
    assert f.encode() == data


def test_a_command_array_holds_records_of_records(resp, module):
    f = resp.decode(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$-1\r\n", 0)
    assert f.count == 3 and [type(v).__name__ for v in f.items] == ["Value"] * 3
    assert f.items[0].bulk == module.Bulk(size=3, data=b"SET", end=None)
    assert f.items[2].bulk.data is None and f.items[2].bulk.size == -1
    assert frame_json("resp", f)["fields"]["items"][1] == {
        "kind": "bulk_string",
        "bulk": {"size": 1, "data": b"k".hex()},
    }


def test_encode_recomputes_counts_and_sizes_at_every_level(resp, module):
    f = resp.decode(b"*2\r\n$3\r\nGET\r\n*1\r\n$1\r\nk\r\n", 0)
    f.items[0].bulk.data = b"MGET"  # a longer command: its $ size follows
    f.items[1].items.append(module.Value(kind=0x24, bulk=module.Bulk(data=b"second")))
    f.items.append(module.Value(kind=0x24, bulk=module.Bulk(data=None)))  # a null: $-1, no CRLF
    f.items.append(module.Value(kind=0x2A, items=None))  # a null array: *-1
    assert read(f.encode()) == (
        [b"MGET", [b"k", b"second"], None, ("null-array",)],
        len(f.encode()),
    )
    assert f.encode().startswith(b"*4\r\n$4\r\nMGET\r\n*2\r\n")


def test_an_inline_command_is_a_line(resp):
    f = resp.decode(b"PING hello\r\n", 0)
    assert (f.kind, f.line) == (ord("P"), b"ING hello")
    assert f.encode() == b"PING hello\r\n"


@pytest.mark.parametrize(
    "data, error",
    [
        (b"*1\r\nPING\r\n", "expected a RESP type byte"),  # only a frame may be inline
        (b"*2\r\n:1\r\n", None),  # (incomplete: one element of two)
        (b"$3\r\nabcd\r\n", "expected b'\\r\\n'"),
        (b"$-2\r\n", "negative size"),
        (b"*-2\r\n", "bad element count"),
        (b"*01\r\n:1\r\n", "decimal"),
        (b"*" + b"1" * 25 + b"\r\n", "decimal"),
    ],
)
def test_values_a_peer_must_not_send_are_refused(resp, data, error):
    if error is None:
        assert resp.decode(data, 0) is None
        return
    with pytest.raises(DecodeError, match=re.escape(error)):
        resp.decode(data, 0)


def nested(depth: int) -> bytes:
    return b"*1\r\n" * depth + b":1\r\n"


def test_nesting_is_bounded_by_the_records_depth(resp, module):
    assert resp.decode(nested(8), 0).length == len(nested(8))  # the frame and 7 Values deep
    with pytest.raises(DecodeError, match="nested deeper than 8"):
        resp.decode(nested(9), 0)
    with pytest.raises(DecodeError, match="nested deeper than 8"):
        resp.decode(nested(100_000), 0)  # (no RecursionError: refused at the bound)
    f = resp.decode(nested(8), 0)
    inner = f.items[0]
    while inner.items[0].kind == 0x2A:
        inner = inner.items[0]
    inner.items[0] = module.Value(kind=0x2A, items=[module.Value(kind=0x3A, number=1)])
    with pytest.raises(ValueError, match="nested deeper than 8"):
        f.encode()


def test_a_value_that_cannot_be_written_is_refused(resp, module):
    f = resp.decode(b"*1\r\n+OK\r\n", 0)
    f.items[0].kind = ord("?")
    with pytest.raises(ValueError, match="expected a RESP type byte"):
        f.encode()
    f.items[0] = module.Value(kind=0x2B, text="two\r\nlines")
    with pytest.raises(ValueError, match="cannot hold"):
        f.encode()


def test_commands_fed_a_byte_at_a_time_are_parsed_in_linear_work(resp, monkeypatch):
    frames = [write([b"SET", b"key:%d" % i, b"v" * (i % 50)]) for i in range(40)]
    frames += [write([b"MSET"] + [b"k%d" % i for i in range(2000)])]
    frames += [write([[i, Simple("ok"), [None, b"x" * 300]] for i in range(50)])]
    assert_parsed_in_linear_work(resp, frames, monkeypatch)


# ---- the language's rules -------------------------------------------------------------------
def compile_with(old: str, new: str) -> None:
    compile_source(variant(old, new, text=SPEC.read_text()), "resp.xproto", "resp")


@pytest.mark.parametrize(
    "old, new, error",
    [
        ("record Value depth 8 {", "record Value {",
         "14:12: error: record 'Value' contains itself: bound its nesting (record Value depth 32)"),
        ("record Bulk {", "record Bulk depth 3 {",
         "8:12: error: a depth bounds a record that contains itself; 'Bulk' does not"),
        ("record Value depth 8 {", "record Value depth 0 {",
         "14:12: error: a record's depth must be 1..256, not 0"),
        ("bulk   Bulk\n        } else if kind == array {\n            count  decimal",
         "bulk   Bulky\n        } else if kind == array {\n            count  decimal",
         "17:20: error: unknown type 'Bulky'"),
        ("if size >= 0 { end", "if data == \"\" { end",
         "a record's condition tests integers; 'data' is bytes"),
        ("data  bytes[size] nullable\n        if size >= 0 { end \"\\r\\n\" }",
         "if size >= 0 { data  bytes[size] nullable end \"\\r\\n\" }",
         "in a record, 'size' and the 'data' it measures must be in the same block"),
        ("record Bulk {", "record bulk {", "a record's name starts with a capital letter"),
        ("record Bulk {", "record Kind {", "'Kind' is an enum's name too"),
        ("record Bulk {", "record RespFrame {",
         "record name 'RespFrame' is a name the generated module uses"),
        ("record Bulk {", "record API_VERSION {",
         "record name 'API_VERSION' is a name the generated module uses"),
        ("items  Value[count count] nullable\n        } else if kind == integer {",
         "items  Value[until \"x\"]\n        } else if kind == integer {",
         "only bytes, string and decimal end at a delimiter (until)"),
    ],
)  # fmt: skip
def test_records_the_language_refuses(old, new, error):
    with pytest.raises(SpecError) as e:
        compile_with(old, new)
    assert error in str(e.value), str(e.value)


def test_records_survive_the_runtime_connection_in_pieces(resp, monkeypatch):
    data = write([[b"a" * 70_000], 1, Err("WRONGTYPE Operation against a key")])
    pieces = [data[i : i + 997] for i in range(0, len(data), 997)]
    got, _, _ = feed(resp, pieces, monkeypatch)
    assert got == [data]


TLV_SPEC = """
# a frame of type-length-value entries, by the total size of the list
protocol tlv {
    pool pingpong
    record Entry {
        tag    u8
        size   u16 = len(value)
        value  bytes[size]
    }
    frame {
        magic   u8 = 0x7e
        total   u32 = len(entries)
        entries Entry[total]
        crc     u32 = crc32(frame)
    }
    stream { else => request }
    status_map { 0 ok <- 200, 400, 403, 404, 429, 500, 502, 503, 504 -> 200 }
    error_response none
}
"""


def test_an_array_of_records_by_total_size_reads_writes_and_resizes():
    code = compile_source(TLV_SPEC, "tlv.xproto", "tlv")
    mod = load_module_source("tlv", code, "tlv.xproto")
    entries = b"".join(
        struct.pack(">BH", t, len(v)) + v for t, v in [(1, b"ab"), (9, b""), (2, b"xyz")]
    )
    head = b"\x7e" + struct.pack(">I", len(entries)) + entries
    data = head + struct.pack(">I", zlib.crc32(head))
    f = mod.PROTOCOL.decode(data, 0)
    assert [(e.tag, e.value) for e in f.entries] == [(1, b"ab"), (9, b""), (2, b"xyz")]
    assert f.encode() == data
    f.entries.append(mod.Entry(tag=3, value=b"\x00" * 300))
    again = mod.PROTOCOL.decode(f.encode(), 0)
    assert again.total == len(entries) + 303 and again.entries[-1].value == b"\x00" * 300
    bad = bytearray(data)
    bad[6] = 0xFF  # the first entry's size runs past the list
    with pytest.raises(DecodeError, match="offset 8: value: 65282 bytes overrun the frame"):
        mod.PROTOCOL.decode(bytes(bad[:-4]) + struct.pack(">I", zlib.crc32(bad[:-4])), 0)


RECORD_ORDER_SPEC = """
protocol order {
    pool pingpong
    record Waits { n decimal[until "\\r\\n"] }
    record Fixed { b bytes[3] }
    frame {
        kind u8
        w Waits
        f Fixed
        line bytes[until "\\n"]
    }
    stream { kind == 1 => response
             else => request }
    status_map { 0 ok <- 200, 400, 403, 404, 429, 500, 502, 503, 504 -> 200 }
    error_response none
}
"""


@pytest.mark.parametrize("swap", [False, True])
def test_a_record_that_never_waits_is_measured_whatever_records_come_before_it(swap):
    """A record's measure is a generator even when its layout never waits, however the
    records before it in the spec are written (a shared check once looked at theirs)."""
    text = RECORD_ORDER_SPEC
    if swap:
        text = text.replace('record Waits { n decimal[until "\\r\\n"] }\n    record Fixed { b bytes[3] }', 'record Fixed { b bytes[3] }\n    record Waits { n decimal[until "\\r\\n"] }')  # fmt: skip
        assert text != RECORD_ORDER_SPEC
    mod = load_module_source("order", compile_source(text, "order.xproto", "order"), "order.xproto")
    data = b"\x0012\r\nabcline\n"
    f = mod.PROTOCOL.decode(data + b"\x00", 0)
    assert (f.length, f.w.n, f.f.b, f.line) == (len(data), 12, b"abc", b"line")
    assert mod.PROTOCOL.scan(data, 0)[0] == len(data)


BLOCK_SPEC = """
protocol block {
    pool pingpong
    record R {
        k u8
        if k == 1 {
            n u8 = len(d)
            d bytes[n]
        }
        if n == 3 { x u8 }
    }
    frame {
        kind u8
        r R
        line bytes[until "\\n"]
    }
    stream { kind == 1 => response
             else => request }
    status_map { 0 ok <- 200, 400, 403, 404, 429, 500, 502, 503, 504 -> 200 }
    error_response none
}
"""


@pytest.mark.parametrize(
    "fields, data",
    [({"k": 1, "d": b"abc", "x": 9}, b"\x00\x01\x03abc\x09end\n"),
     ({"k": 1, "d": b"ab"}, b"\x00\x01\x02abend\n"),
     ({"k": 2}, b"\x00\x02end\n")],
)  # fmt: skip
def test_a_field_recomputed_in_a_block_and_tested_after_it(fields, data):
    """``n`` is recomputed inside ``if k == 1`` and tested after it: written, read and
    measured whether or not the block is there."""
    mod = load_module_source("block", compile_source(BLOCK_SPEC, "block.xproto", "block"), "b")
    f = mod.BlockFrame.blank()
    f.kind, f.r, f.line = 0, mod.R(**fields), b"end"
    assert f.encode() == data
    g = mod.PROTOCOL.decode(data + b"\x00", 0)
    assert g.length == len(data) and g.encode() == data
    assert mod.PROTOCOL.scan(data, 0)[0] == len(data)
    assert measured(mod.PROTOCOL.measure(bytearray(data), 0)) == len(data)  # (no length)


def test_a_frame_whose_every_layout_fails_is_refused():
    text = BLOCK_SPEC.replace("        line bytes[until \"\\n\"]\n", '        if kind == 1 { fail "one" } else { fail "other" }\n')  # fmt: skip
    with pytest.raises(SpecError, match="every layout of the frame fails: no frame can be read"):
        compile_source(text, "block.xproto", "block")
