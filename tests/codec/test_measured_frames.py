"""Frames that announce no length: they end where their last field ends (issue 13). The spec
(vhc.xproto beside this file) has a varint-counted header map of varint-prefixed pairs, a
varint-prefixed body and a CRC-32 trailer. The frames here are written and read back by a
hand-written peer in this file (not by the codec), and fed to the runtime's connection a byte
at a time, with the bytes the parse looks at counted: measuring resumes where it stopped, so
the work grows with the frame, not with the square of its pieces."""

from __future__ import annotations

import asyncio
import contextlib
import random
import zlib
from pathlib import Path

import pytest

from protoc_x.compiler import compile_source
from protoc_x.loader import load_module_source
from protoc_x.runtime.api import DecodeError, measured
from protoc_x.runtime.network import FramedConnection

SPEC = Path(__file__).with_name("vhc.xproto")


@pytest.fixture(scope="module")
def vhc():
    code = compile_source(SPEC.read_text(), str(SPEC), "vhc")
    return load_module_source("vhc", code, str(SPEC)).PROTOCOL


# ---- the hand-written peer -------------------------------------------------------------
def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def frame(kind: int, rid: int, headers: dict[str, str], body: bytes, status: int = 0) -> bytes:
    out = bytearray([0xC7, kind]) + rid.to_bytes(4, "big") + bytes([status])
    out += varint(len(headers))
    for key, value in headers.items():
        for part in (key.encode(), value.encode()):
            out += varint(len(part)) + part
    out += varint(len(body)) + body
    return bytes(out + zlib.crc32(out).to_bytes(4, "big"))


def parse(data: bytes) -> tuple[int, int, dict[str, str], bytes]:
    """(kind, id, headers, body) of one whole frame, its count and CRC checked."""
    assert zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "big"), "CRC"
    count, pos = read_varint(data, 7)
    headers = {}
    for _ in range(count):
        kz, pos = read_varint(data, pos)
        key = data[pos : pos + kz].decode()
        vz, pos = read_varint(data, pos + kz)
        headers[key] = data[pos : pos + vz].decode()
        pos += vz
    bz, pos = read_varint(data, pos)
    assert pos + bz + 4 == len(data), "the frame ends at its trailer"
    return data[1], int.from_bytes(data[2:6], "big"), headers, data[pos : pos + bz]


def headers_of(n: int) -> dict[str, str]:
    return {"service": "com.acme.Echo", "method": "echo"} | {
        f"h{i}": "v" * (i % 300) for i in range(n)
    }


# ---- the codec ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2, 130])  # 130 entries: a two-byte count
def test_a_frame_decodes_and_encodes_back_to_its_bytes(vhc, n):
    data = frame(0, 7, headers_of(n), b"x" * 200)
    f = vhc.decode(data + b"\xc7rest", 0)
    assert f.length == len(data)
    assert (f.get_request_id(), f.get_service(), f.get_method()) == (7, "com.acme.Echo", "echo")
    assert f.get_body() == b"x" * 200 and f.nheaders == n + 2
    assert f.encode() == data


def test_encode_recomputes_the_count_the_lengths_and_the_crc(vhc):
    f = vhc.decode(frame(0, 9, headers_of(127), b"body"), 0)
    f.set_header("added", "y" * 200)  # 130 entries now: the count grows to two bytes
    f.set_body(b"b" * 300)  # and the body's length too
    kind, rid, headers, body = parse(f.encode())
    assert (kind, rid, body) == (0, 9, b"b" * 300)
    assert headers == headers_of(127) | {"added": "y" * 200}


def test_every_prefix_of_a_frame_is_incomplete_and_garbage_is_refused(vhc):
    data = frame(2, 1, headers_of(3), b"hello")
    for cut in range(len(data)):
        assert vhc.decode(data[:cut], 0) is None
        assert measured(vhc.measure(bytearray(data[:cut]), 0)) is None
    assert measured(vhc.measure(bytearray(data), 0)) == len(data)
    with pytest.raises(DecodeError, match="crc32 mismatch"):
        vhc.decode(data[:-1] + bytes([data[-1] ^ 1]), 0)
    with pytest.raises(DecodeError, match="longer than 10 bytes"):  # a count that never ends
        measured(vhc.measure(bytearray(data[:7] + b"\xff" * 11), 0))


# ---- the runtime's connection: a byte at a time, in work that grows with the frame -------------
class Counting(bytearray):
    """The connection's buffer, counting the bytes read from it by index or slice."""

    examined = 0

    def __getitem__(self, key):
        got = super().__getitem__(key)
        type(self).examined += len(got) if isinstance(key, slice) else 1
        return got

    def find(self, sub, start=0, end=None):
        """(a delimiter's search looks at the bytes up to where it ends, or to ``end``)"""
        got = super().find(sub, start, end)
        stop = len(self) if end is None else min(end, len(self))
        type(self).examined += (got + len(sub) if got >= 0 else stop) - start
        return got


class Collect(FramedConnection):
    def __init__(self, proto):
        super().__init__(proto)
        self.frames = []

    def on_frame(self, frame, buf, start, length):
        self.frames.append(bytes(buf[start : start + length]))

    def on_decode_error(self, e):
        raise AssertionError(e)


def feed(vhc, pieces: list[bytes], monkeypatch) -> tuple[list[bytes], int, int]:
    """Feed ``pieces`` to a connection: the frames it read, the bytes its parse looked at in its
    buffer, and the bytes the decoder was offered (a decode may read all it is given)."""
    offered = [0]
    decode = vhc.decode

    def counted(buf, start=0, direction=None):
        offered[0] += len(buf) - start
        return decode(buf, start, direction)

    monkeypatch.setattr(vhc, "decode", counted)

    async def run():
        conn = Collect(vhc)
        conn.buf = Counting()
        Counting.examined = 0
        for piece in pieces:
            conn.data_received(piece)
        return conn.frames

    frames = asyncio.run(run())
    return frames, Counting.examined, offered[0]


@pytest.mark.parametrize("entries", [50, 400])
def test_a_frame_fed_a_byte_at_a_time_is_parsed_in_linear_work(vhc, entries, monkeypatch):
    data = frame(0, 3, headers_of(entries), b"z" * 1000)
    frames, examined, offered = feed(vhc, [data[i : i + 1] for i in range(len(data))], monkeypatch)
    assert frames == [data]
    # measuring reads a varint's bytes twice at most and skips the rest; the frame is decoded
    # once, when it is whole
    # (re-parsing from the start at each byte would examine about len(data)**2 / 2 bytes)
    assert examined <= len(data), (examined, len(data))
    assert offered <= 2 * len(data), (offered, len(data))


def test_frames_split_anywhere_and_coalesced_read_back_the_same(vhc, monkeypatch):
    rng = random.Random(13)
    frames = [frame(rng.choice((0, 1, 2)), i, headers_of(rng.randrange(0, 40)), rng.randbytes(rng.randrange(0, 500))) for i in range(60)]  # fmt: skip
    stream = b"".join(frames)
    cuts = sorted(rng.sample(range(1, len(stream)), 300))
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    got, examined, offered = feed(vhc, pieces, monkeypatch)
    assert got == frames
    assert examined <= len(stream) and offered <= 3 * len(stream)


def test_a_frame_larger_than_max_frame_bytes_is_refused_before_it_arrives(vhc):
    data = frame(0, 3, headers_of(10), b"z" * 5000)

    async def run():
        conn = Collect(vhc)
        conn.max_frame_bytes = 1000
        closed = []
        conn.fail = closed.append
        conn.data_received(data[:600])  # the body's length is there: 5,000 bytes announced
        return closed

    assert asyncio.run(run()) == ["frame larger than max_frame_bytes (1000)"]


# ---- through the proxy: the hand-written peer's client and server, answers out of order ------
async def read_varint_into(reader: asyncio.StreamReader, out: bytearray) -> int:
    """A varint from the stream, its bytes appended to ``out``."""
    value = shift = 0
    while True:
        b = (await reader.readexactly(1))[0]
        out.append(b)
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One whole frame from the stream, read as the peer reads it: field by field."""
    out = bytearray(await reader.readexactly(7))

    def varint_part():
        return read_varint_into(reader, out)

    for _ in range(2 * await varint_part()):
        out += await reader.readexactly(await varint_part())
    out += await reader.readexactly(await varint_part())
    out += await reader.readexactly(4)
    return bytes(out)


def test_the_proxy_carries_the_peers_frames_with_concurrent_out_of_order_answers(vhc):
    from tests.runtime.harness import eventually, free_port, proxy_running, run, simple_config

    served: list[tuple] = []  # (upstream connection, id) in the order they were answered
    received: list[tuple] = []  # and in the order they arrived
    oneways: list[bytes] = []

    async def server(reader, writer):
        rng = random.Random(len(received))

        async def answer(data: bytes) -> None:
            kind, rid, headers, body = parse(data)
            if kind == 2:
                oneways.append(body)
                return
            await asyncio.sleep(rng.random() / 50)  # later requests often answered first
            served.append((id(writer), rid))
            reply = {"echo": headers["method"], "via": headers.get("h1", "")}
            writer.write(frame(1, rid, reply, body[::-1]))

        tasks = []
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                data = await read_frame(reader)
                received.append((id(writer), parse(data)[1]))
                tasks.append(asyncio.ensure_future(answer(data)))
        await asyncio.gather(*tasks)
        writer.close()

    async def client(port: int, n: int, seed: int) -> None:
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = {}
        for i in range(1, n + 1):
            headers = headers_of(rng.randrange(0, 140)) | {"method": f"m{seed}.{i}"}
            body = rng.randbytes(rng.randrange(0, 3000))
            sent[i] = (headers, body)
            writer.write(frame(0, i, headers, body))
            if i % 10 == 0:
                writer.write(frame(2, 0, {"service": "com.acme.Echo", "method": "log"}, b"one-way %d" % seed))  # fmt: skip
        for _ in range(n):
            kind, rid, headers, body = parse(await read_frame(reader))
            want_headers, want_body = sent.pop(rid)  # each id answered once, in any order
            assert (kind, body) == (1, want_body[::-1])
            assert headers == {"echo": want_headers["method"], "via": want_headers.get("h1", "")}
        assert not sent
        writer.close()

    async def scenario():
        up, port = free_port(), free_port()
        upstream = await asyncio.start_server(server, "127.0.0.1", up)
        async with proxy_running(simple_config("vhc", port, [f"127.0.0.1:{up}"]), protocols={"vhc": vhc}):  # fmt: skip
            await asyncio.gather(*(client(port, 40, seed) for seed in range(6)))
            await eventually(lambda: len(oneways) == 6 * 4)  # the last may still be on their way
        upstream.close()

    run(scenario())
    assert sorted(oneways) == sorted(b"one-way %d" % s for s in range(6) for _ in range(4))
    assert len(served) == 240 and served != sorted(served, key=received.index)  # out of order


# ---- the shipped spec of this kind: thrift's buffered transport, a struct thriftpy2 wrote -----
def thrift_message(name: str, mtype: int, seqid: int, struct_bytes: bytes) -> bytes:
    """A strict binary message header (written here) before a struct (written by thriftpy2)."""
    head = (0x80010000 | mtype).to_bytes(4, "big") + len(name).to_bytes(4, "big") + name.encode()
    return head + seqid.to_bytes(4, "big") + struct_bytes


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_unframed_thrift_fed_in_pieces_is_parsed_in_linear_work(step, monkeypatch):
    from thriftpy2.protocol import TBinaryProtocolFactory
    from thriftpy2.utils import serialize

    from protoc_x.loader import protocols
    from tests.peers.thrift_peers import LONG_TEXT, thriftpy2_module

    calc = thriftpy2_module()
    point = calc.Point(x=1, y=2, label="p" * 3000)
    args = calc.Calc.describe_args(p=point, xs=list(range(500)), weights={f"k{i}": i for i in range(300)}, tags={"t"}, ratio=0.5, flag=True, raw=b"r" * 2000)  # fmt: skip
    echo = calc.Calc.echo_args(text=LONG_TEXT)
    messages = [
        thrift_message("describe", 1, 7, serialize(args, TBinaryProtocolFactory())),
        thrift_message("Calc:echo", 1, 8, serialize(echo, TBinaryProtocolFactory())),
        thrift_message("log", 4, 9, serialize(calc.Calc.log_args(line="x"), TBinaryProtocolFactory())),  # fmt: skip
    ]
    stream = b"".join(messages)
    proto = protocols()["thrift_unframed"]
    pieces = [stream[i : i + step] for i in range(0, len(stream), step)]
    frames, examined, offered = feed(proto, pieces, monkeypatch)
    assert frames == messages
    assert [proto.decode(m, 0).get_request_id() for m in messages] == [7, 8, 9]
    # headers read once while measuring, a struct's bytes copied once when it is whole, and
    # each message decoded once (re-parsing at every piece would be ~len**2 / (2 * step))
    assert examined <= 2 * len(stream), (examined, len(stream))
    assert offered <= 2 * len(stream), (offered, len(stream))


# ---- text: delimiters, ASCII decimals, literal tokens ------------------------------------------
TEXT_SPEC = r"""
# RESP's scalar replies: a type byte, then a line, a number, or a counted bulk string
protocol tline {
    pool pingpong ordered
    enum Kind : u8 { bulk = 0x24, simple = 0x2b, error = 0x2d, number = 0x3a }
    frame {
        kind Kind
        if kind == bulk {
            size decimal[until "\r\n"] = len(data)
            data bytes[size]
            crlf "\r\n"
        } else if kind == number {
            value decimal[until "\r\n"]
        } else {
            text string[until "\r\n"]
        }
    }
    status = kind == error ? 1 : 0
    body = data
    method = text
    stream { else => request }
    status_map {
        0 ok <- 200 -> 200
        1 err <- 400, 403, 404, 429, 500, 502, 503, 504 -> 500
        others -> 500
    }
    error_response { kind = error, text = $message }
}
"""


@pytest.fixture(scope="module")
def tline():
    code = compile_source(TEXT_SPEC, "tline.xproto", "tline")
    return load_module_source("tline", code, "tline.xproto").PROTOCOL


TEXT_FRAMES = [b"$5\r\nhello\r\n", b"$0\r\n\r\n", b"+OK\r\n", b"-ERR wrong \xc3\xa9\r\n",
               b":-42\r\n", b":0\r\n", b"$12\r\nline\r\nbreaks\r\n"]  # fmt: skip


@pytest.mark.parametrize("data", TEXT_FRAMES)
def test_a_text_frame_decodes_and_encodes_back_to_its_bytes(tline, data):
    f = tline.decode(data + b"+next\r\n", 0)
    assert f.length == len(data)
    assert f.encode() == data
    for cut in range(len(data)):  # every prefix waits for more
        assert tline.decode(data[:cut], 0) is None


def test_text_fields_hold_values_and_encode_recomputes_the_decimal_length(tline):
    f = tline.decode(b"$5\r\nhello\r\n", 0)
    assert (f.size, f.data) == (5, b"hello")
    f.data = b"x" * 1234
    assert f.encode() == b"$1234\r\n" + b"x" * 1234 + b"\r\n"
    assert tline.decode(b":-42\r\n", 0).value == -42
    assert tline.decode(b"-ERR wrong \xc3\xa9\r\n", 0).text == "ERR wrong \u00e9"
    err = tline.hijack(tline.decode(b"+PING\r\n", 0), 503, "no upstream")
    assert err.encode() == b"-no upstream\r\n"


@pytest.mark.parametrize(
    "data, error",
    [(b"$05\r\nhello\r\n", "offset 1: expected a decimal number, found b'05'"),
     (b":1x\r\n", "offset 1: expected a decimal number, found b'1x'"),
     (b"$5\r\nhelloXX", "offset 9: expected b'\\r\\n', found b'XX'"),
     (b"$-1\r\n", "offset 5: data: negative size -1"),
     (b"+bad \xff\r\n", "offset 5: invalid UTF-8 in text"),
     (b"$" + b"9" * 30 + b"\r\n", "offset 1: expected a decimal number, found b'9999")],
)  # fmt: skip
def test_text_frames_a_peer_must_not_send_are_refused(tline, data, error):
    with pytest.raises(DecodeError) as e:
        tline.decode(data, 0)
    assert str(e.value).startswith(error), str(e.value)


def assert_parsed_in_linear_work(proto, frames: list[bytes], monkeypatch) -> None:
    """``frames`` fed a byte at a time read back as they were, the parse looking at each byte
    a few times at most: a delimiter's search resumes where it stopped (one byte back for a
    two-byte delimiter), and the decoder reads each whole frame once more."""
    stream = b"".join(frames)
    pieces = [stream[i : i + 1] for i in range(len(stream))]
    got, examined, offered = feed(proto, pieces, monkeypatch)
    assert got == frames
    assert examined <= 3 * len(stream), (examined, len(stream))
    assert offered <= 3 * len(stream), (offered, len(stream))


def test_text_frames_fed_a_byte_at_a_time_are_parsed_in_linear_work(tline, monkeypatch):
    big = [b"$3000\r\n" + b"\r" * 3000 + b"\r\n", b"+" + b"y" * 2000 + b"\r\n"]
    assert_parsed_in_linear_work(tline, TEXT_FRAMES + big, monkeypatch)
