"""The language's reach beyond the shipped specs: little-endian and signed integers, u64,
bit fields with enums, else-if chains, varint-prefixed maps bounded by a count, repeated field
types bounded by bytes and by count, nullable strings, arithmetic sizes, a CRC and a length
that excludes itself — compiled, then exercised on frames written out by hand."""

from __future__ import annotations

import struct
import zlib

import pytest

from protoc_x.compiler import compile_source
from protoc_x.loader import load_module_source
from protoc_x.runtime.api import DecodeError, StreamType

from .test_bad_specs import variant

SPEC = """\
# a made-up protocol written against the language reference
protocol reach {
    byte_order little
    pool pingpong ordered
    detect u16 == 0xbeef and u8 at 2 in (1, 2, 3)

    enum Op : u8 { ping = 1, call = 2, reply = 3 }
    enum Prio : u8 { low = 0, high = 3 }

    frame {
        magic      u16 = 0xbeef
        op         Op
        bits u8 {
            prio   : 2 as Prio
            flags  : 5
            last   : 1
        }
        size       u32 = sizeof(frame) - 4        # excludes magic, op and the bits byte
        if op == ping {
        } else if op == call {
            deadline   i64
            tags       map(varint.unsigned)[count ntags]
            user_len   i16 = len(user)
            user       string[user_len] nullable
            ints       varint.signed[count 3]
            payload    bytes[rest]
        } else {
            code       i32
            big        u64be
            items      varint.unsigned[size - 20]
            check      u32 = crc32(frame)
        }
    }
    inside payload when op == call and last == 1 {
        id_len     u16 = len(ident)   # little-endian, as the protocol
        ident      string[id_len * 2 - id_len]
        rest_bytes bytes[rest]
    }
    request_id = deadline
    status     = code
    body       = payload
    headers    = tags
    method     = name(op)
    service    = ident
    stream {
        op == reply => response
        else => request
    }
    status_map {
        0 ok <- 200 -> 200
        others -> 500
        1 bad <- 400, 403, 404, 429, 500, 502, 503, 504 -> 500
    }
    error_response { op = reply, code = $status }
}
"""


@pytest.fixture
def reach():
    # compiled for each test (not once per module): mutation testing runs, for a mutant of the
    # compiler, only the tests during which the changed function ran
    spec = SPEC.replace("map(varint.unsigned)[count ntags]", "map(varint.unsigned)[count 2]")
    return load_module_source(
        "reach", compile_source(spec, "reach.xproto", "reach", fmt=False), "reach.xproto"
    ).PROTOCOL


def varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def call_frame(user: bytes | None) -> bytes:
    tags = b"".join(varint(len(x)) + x for x in (b"k1", b"v1", b"key2", b"value2"))
    user_part = struct.pack("<h", -1) if user is None else struct.pack("<h", len(user)) + user
    ints = varint(1) + varint(3) + varint(300)  # zigzag: -1, -2, 150
    payload = struct.pack("<H", 3) + b"svc" + b"tail"
    body = struct.pack("<q", -5) + tags + user_part + ints + payload
    head = struct.pack("<HBB", 0xBEEF, 2, (3 << 6) | (0b10101 << 1) | 1)
    return head + struct.pack("<I", 4 + len(body)) + body


def reply_frame() -> bytes:
    items = varint(1) + varint(1000) + varint(2**40)
    body = struct.pack("<i", -7) + struct.pack(">Q", 2**63 + 5) + items
    head = struct.pack("<HBB", 0xBEEF, 3, 0) + struct.pack("<I", 4 + len(body) + 4)
    frame = head + body
    return frame + struct.pack("<I", zlib.crc32(frame))


@pytest.mark.parametrize("user", [b"alice", None])
def test_call_layout(reach, user):
    data = call_frame(user)
    f = reach.decode(data)
    assert f.length == len(data)
    assert (f.op, f.prio, f.flags, f.last) == (2, 3, 0b10101, 1)
    assert f.get_request_id() == -5 and f.get_method() == "call"
    assert f.get_headers() == {"k1": "v1", "key2": "value2"}
    assert f.user == (user.decode() if user else None)
    assert f.ints == [-1, -2, 150]
    assert f.get_service() == "svc" and f.rest_bytes == b"tail"
    assert f.get_stream_type() is StreamType.REQUEST
    assert f.encode() == data
    f.ident = "another-service"
    assert f.encode().endswith(struct.pack("<H", 15) + b"another-service" + b"tail")
    again = reach.decode(f.encode())
    assert again.get_service() == "another-service" and again.rest_bytes == b"tail"
    for cut in range(len(data)):
        assert reach.decode(data[:cut]) is None


def test_reply_layout_with_crc(reach):
    data = reply_frame()
    f = reach.decode(data)
    assert f.get_status() == -7 and f.big == 2**63 + 5 and f.items == [1, 1000, 2**40]
    # a layout without the payload has none of its inside fields (read, not a TypeError)
    assert (f.payload, f.id_len, f.ident, f.get_service()) == (None, None, None, None)
    assert f.encode() == data
    f.items = [5]
    assert reach.decode(f.encode()).items == [5]
    bad = bytearray(data)
    bad[-6] ^= 0x40
    with pytest.raises(DecodeError, match="crc32 mismatch"):
        reach.decode(bytes(bad))


def test_ping_layout_and_detection(reach):
    ping = struct.pack("<HBBI", 0xBEEF, 1, 0, 4)
    assert reach.decode(ping).get_method() == "ping"
    assert reach.match(b"\xef").name == "AGAIN"
    assert reach.match(b"\xef\xbe\x02").name == "SUCCESS"
    assert reach.match(b"\xef\xbe\x09").name == "FAILED"
    error = reach.hijack(reach.decode(call_frame(b"x")), 404)
    assert reach.decode(error.encode()).get_status() == 1


def test_a_length_shorter_than_the_header_is_refused_at_the_length_field(reach):
    short = struct.pack("<HBBI", 0xBEEF, 1, 0, 3)  # sizeof(frame) = 3 + 4: less than 8
    with pytest.raises(DecodeError) as e:
        reach.decode(short)
    assert (e.value.offset, e.value.reason) == (
        4,
        "size: frame length 7 is shorter than its header",
    )


# ---- layouts the planner treats apart: variations of the bad-spec table's good spec ------


def _mini(*pairs: str):
    text = variant(*pairs)
    return load_module_source(
        "mini", compile_source(text, "mini.xproto", "mini", fmt=False), "mini.xproto"
    ).PROTOCOL


def _head(dir_: int, id_: int, size: int) -> bytes:
    return b"\x4d" + bytes([dir_]) + struct.pack(">IH", id_, size)


def test_a_summed_frame_with_a_little_endian_run_after_its_header_and_a_sized_field_type():
    """A big-endian frame: a u16le right after the header is a run of its own (a byte order of
    its own), counted in the frame's fixed size; a field type sized by a header field."""
    mini = _mini(
        "size u16 = len(data)",
        "size u16 = len(data)\n        nlen u8 = len(name)\n        x u16le",
        "data bytes[size]",
        "data bytes[size]\n        name hessian2.string[nlen]",
    )
    frame = _head(0, 7, 2) + bytes([4]) + struct.pack("<H", 513) + b"hi" + b"\x03abc"
    f = mini.decode(frame + b"next")
    assert (f.length, f.x, f.data, f.name) == (len(frame), 513, b"hi", ["abc"])
    assert f.encode() == frame
    for cut in range(len(frame)):
        assert mini.decode(frame[:cut]) is None


def test_a_summed_frame_with_a_fixed_field_between_two_variable_ones():
    mini = _mini("data bytes[size]", "data bytes[size]\n        tail u16\n        more bytes[2]")
    frame = _head(0, 7, 2) + b"hi" + struct.pack(">H", 5) + b"mm"
    f = mini.decode(frame + b"next")
    assert (f.length, f.data, f.tail, f.more) == (len(frame), b"hi", 5, b"mm")
    assert f.encode() == frame


def test_a_frame_that_starts_with_a_variable_field():
    """No fixed-width header: the first field is bytes of a constant size."""
    mini = _mini(
        "magic u8 = 0x4d\n        dir Dir\n        id u32\n        size u16 = len(data)\n"
        "        data bytes[size]",
        "tag bytes[2]\n        magic u8 = 0x4d\n        dir Dir\n        id u32",
        "detect u8 == 0x4d",
        "detect u8 at 2 == 0x4d",
        "error_response { dir = response, data = $message }",
        "error_response { dir = response }",
        "body = data\n",
        "",
    )
    frame = b"ab\x4d\x01" + struct.pack(">I", 9)
    f = mini.decode(frame + b"next")
    assert (f.length, f.tag, f.dir, f.get_request_id()) == (8, b"ab", 1, 9)
    assert f.encode() == frame


def test_a_length_that_counts_more_than_the_frame():
    """size = sizeof(frame) + 4: the frame is the length minus four."""
    mini = _mini(
        "size u16 = len(data)",
        "size u16 = sizeof(frame) + 4",
        "data bytes[size]",
        "data bytes[rest]",
    )
    frame = _head(0, 7, 10 + 4) + b"hi"
    f = mini.decode(frame + b"next")
    assert (f.length, f.data) == (10, b"hi")
    assert f.encode() == frame
    with pytest.raises(DecodeError) as e:
        mini.decode(_head(0, 7, 4 + 4) + b"hi")
    assert (e.value.offset, e.value.reason) == (
        6,
        "size: frame length 4 is shorter than its header",
    )


def test_a_length_field_after_an_if_is_refused_at_its_own_offset_in_each_layout():
    """The length field sits at 6 or at 7 by the layout: a length shorter than the header is
    reported where it sits in the frame at hand (it was at -1: the offset differed by layout)."""
    mini = _mini(
        "id u32",
        "id u32\n        if dir == 1 { x u8 }",
        "size u16 = len(data)",
        "size u16 = sizeof(frame)",
        "data bytes[size]",
        "data bytes[rest]",
    )
    for head, at in ((b"\x4d\x00" + struct.pack(">I", 7), 6), (b"\x4d\x01\0\0\0\x07\x09", 7)):
        with pytest.raises(DecodeError) as e:
            mini.decode(head + struct.pack(">H", 3) + b"data")
        assert (e.value.offset, e.value.reason) == (
            at,
            "size: frame length 3 is shorter than its header",
        )
        frame = head + struct.pack(">H", at + 4) + b"ab"
        f = mini.decode(frame + b"next")
        assert (f.length, f.data) == (at + 4, b"ab")


# ---- integers of any byte width: u24 (HTTP/2's length), u40, u48, u56, signed ones ---------
WIDTHS = """\
# HTTP/2's frame header (a 24-bit length that excludes the 9-byte header), then widths struct
# has no code for, a 24-bit enum and bit fields in three bytes, and an inside layout of them
protocol widths {
    byte_order big
    pool multiplex
    detect u8 at 3 in (0, 1)

    enum Level : u24 { low = 1, high = 0x800000 }

    frame {
        size      u24 = sizeof(frame) - 9
        kind      u8
        bits u8 { reply: 1, flags: 7 }
        stream    u32
        seq       u48
        offset    i24le
        stamp     u40
        level     Level
        bits u24 { hi: 4, mid: 12, lo: 8 }
        big       i56
        body      bytes[size - 27]
    }
    inside body when kind == 1 {
        n         u24 = len(name)
        name      string[n]
        delta     i40le
    }

    request_id = stream
    body       = body
    method     = kind == 1 ? name : ""

    stream {
        reply == 1 => response
        else       => request
    }
    status_map {
        0 ok     <- 200 -> 200
        1 err    <- 400, 403, 404, 429, 500, 502, 503, 504 -> 500
    }
    error_response { kind = 0, reply = 1, body = $message }
}
"""


def widths_frame(body: bytes, kind: int = 0, offset: int = -3, big: int = -(2**55)) -> bytes:
    head = (27 + len(body)).to_bytes(3, "big") + bytes([kind, 0x85]) + (7).to_bytes(4, "big")
    return head + b"".join([
        (2**47 + 5).to_bytes(6, "big"), offset.to_bytes(3, "little", signed=True),
        (2**39 + 1).to_bytes(5, "big"), (0x800000).to_bytes(3, "big"), bytes([0xAB, 0xCD, 0xEF]),
        big.to_bytes(7, "big", signed=True), body,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def widths():
    return load_module_source("widths", compile_source(WIDTHS, "<widths>", "widths"), "<widths>")


def test_integers_of_any_byte_width_decode_and_encode_back(widths):
    data = widths_frame(b"hello world")
    f = widths.PROTOCOL.decode(data + b"\0\0\0", 0)
    assert f.length == len(data) and f.size == 27 + 11
    assert (f.reply, f.flags, f.stream, f.seq, f.offset, f.stamp) == (1, 5, 7, 2**47 + 5, -3, 2**39 + 1)  # fmt: skip
    assert (f.level, f.hi, f.mid, f.lo, f.big) == (0x800000, 0xA, 0xBCD, 0xEF, -(2**55))  # fmt: skip
    assert f.encode() == data
    assert all(widths.PROTOCOL.decode(data[:cut], 0) is None for cut in range(len(data)))
    assert widths.PROTOCOL.scan(data, 0)[:3] == (len(data), 7, 5)  # length, id, its offset

    f.set_body(b"x" * 70000)  # the 24-bit length follows the body past 16 bits
    g = widths.PROTOCOL.decode(f.encode(), 0)
    assert (g.size, g.body, g.offset, g.big) == (70000 + 27, b"x" * 70000, -3, -(2**55))
    for name, value in [("offset", -(2**23)), ("offset", 2**23 - 1), ("big", 2**55 - 1)]:
        setattr(f, name, value)
        assert getattr(widths.PROTOCOL.decode(f.encode(), 0), name) == value
    f.offset = 2**23  # does not fit in 24 signed bits: refused, not truncated
    with pytest.raises(OverflowError):
        f.encode()


def test_an_inside_layout_of_odd_widths(widths):
    inner = (5).to_bytes(3, "big") + b"hello" + (-(2**39)).to_bytes(5, "little", signed=True)
    data = widths_frame(inner, kind=1)
    f = widths.PROTOCOL.decode(data, 0)
    assert (f.get_method(), f.delta) == ("hello", -(2**39))
    assert f.encode() == data
    f.name = "a" * 300
    g = widths.PROTOCOL.decode(f.encode(), 0)
    assert (g.n, g.get_method(), g.delta) == (300, "a" * 300, -(2**39))


def test_a_frame_measured_through_a_u24_length():
    spec = variant("size u16 = len(data)", "size u24 = len(data)",
                   "data bytes[size]", "data bytes[size]\n        n varint.unsigned = len(tail)\n        tail bytes[n]")  # fmt: skip
    mod = load_module_source("m24", compile_source(spec, "<m24>", "mini"), "<m24>")
    data = b"\x4d\x00" + (9).to_bytes(4, "big") + (70000).to_bytes(3, "big") + b"d" * 70000 + b"\x03abc"  # fmt: skip
    assert all(mod.PROTOCOL.decode(data[:cut], 0) is None for cut in (0, 8, 9, 70009, len(data) - 1))  # fmt: skip
    f = mod.PROTOCOL.decode(data, 0)
    assert (f.length, f.size, f.tail) == (len(data), 70000, b"abc") and f.encode() == data


@pytest.mark.parametrize("name", ["header", "stream", "let", "record", "detect", "answer", "pool"])
def test_a_field_may_be_named_like_a_statement_after_a_field_with_a_value(name):
    # (after an expression the parser also accepts the statements that follow a binding, and
    # their keywords used to win over the field's name)
    spec = variant("size u16 = len(data)", f"size u16 = len(data)\n        {name} u8 = 7",
                   "body = data", f"body = data\n    service = {name} == 7 ? \"seven\" : \"other\"")  # fmt: skip
    mod = load_module_source("kw", compile_source(spec, "<kw>", "mini"), "<kw>")
    f = mod.PROTOCOL.decode(b"\x4d\x00" + (9).to_bytes(4, "big") + b"\x00\x02\x07ab", 0)
    assert (getattr(f, name), f.get_service(), f.data) == (7, "seven", b"ab")
