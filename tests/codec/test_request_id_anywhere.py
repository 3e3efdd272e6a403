"""A request id that is not a field of the frame (issue 13, item 5): a value of a JSON header
(remoting.xproto beside this file: RocketMQ's remoting protocol, its ``opaque``) and a varint
in a record (recid.xproto: a frame with no total length). The proxy remaps the id on a shared
upstream connection; the id's text or varint grows and shrinks, and the header's length and
the frame's follow. Frames here are written and read by hand-written peers in this file, not by
the codec; the proxied tests put many clients that reuse the same ids on one upstream
connection, answered out of order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path

import pytest

from protoc_x.compiler import compile_source
from protoc_x.loader import load_module_source
from protoc_x.runtime.api import DecodeError, StreamType

from .test_measured_frames import read_varint, read_varint_into, varint

HERE = Path(__file__).parent


def load(name: str):
    spec = HERE / f"{name}.xproto"
    code = compile_source(spec.read_text(), str(spec), name)
    return load_module_source(name, code, str(spec)).PROTOCOL


@pytest.fixture(scope="module")
def remoting():
    return load("remoting")


@pytest.fixture(scope="module")
def recid():
    return load("recid")


# ---- the hand-written remoting peer: 4-byte length, serialize type, 3-byte header length ----
def remoting_frame(head: dict | bytes, body: bytes = b"") -> bytes:
    h = head if isinstance(head, bytes) else json.dumps(head, separators=(",", ":")).encode()
    rest = bytes([0]) + len(h).to_bytes(3, "big") + h + body
    return len(rest).to_bytes(4, "big") + rest


def remoting_parse(data: bytes) -> tuple[dict, bytes]:
    total = int.from_bytes(data[:4], "big")
    assert total == len(data) - 4, "the frame's length announces what follows it"
    assert data[4] == 0, "serialize type: JSON"
    hz = int.from_bytes(data[5:8], "big")
    return json.loads(data[8 : 8 + hz]), data[8 + hz :]


async def remoting_read(reader) -> bytes:
    head = await reader.readexactly(4)
    return head + await reader.readexactly(int.from_bytes(head, "big"))


def remoting_request(opaque, code=10, topic="TopicA", flag=0, **ext) -> dict:
    return {
        "code": code,
        "extFields": {"topic": topic, **ext},
        "flag": flag,
        "language": "JAVA",
        "opaque": opaque,
        "serializeTypeCurrentRPC": "JSON",
        "version": 453,
    }


# ---- the JSON header: read, written back, the id remapped ----------------------------------
def test_a_json_header_decodes_to_the_routing_view_and_re_encodes_exactly(remoting):
    data = remoting_frame(remoting_request(7, topic="TopicA"), b"hello")
    f = remoting.decode(data)
    assert (f.get_request_id(), f.get_service(), f.get_method()) == (7, "TopicA", "10")
    assert f.get_stream_type() is StreamType.REQUEST and f.length == len(data)
    assert f.encode() == data
    # the scan (the runtime's fast lane) agrees, and says the id has no offset to patch
    assert remoting.scan(data) == (len(data), 7, -1, StreamType.REQUEST, False, "TopicA", "10", None)  # fmt: skip
    # SEND_MESSAGE_V2 abbreviates its arguments' names: the topic is "b"
    v2 = remoting.decode(remoting_frame({"code": 310, "extFields": {"a": "g", "b": "TopicB"}, "flag": 0, "opaque": 1}))  # fmt: skip
    assert (v2.get_service(), v2.get_method()) == ("TopicB", "310")
    answer = remoting.decode(remoting_frame({"code": 2, "flag": 1, "opaque": 7}))
    oneway = remoting.decode(remoting_frame({"code": 10, "flag": 2, "opaque": 7}))
    assert answer.get_stream_type() is StreamType.RESPONSE and answer.get_status() == 2
    assert oneway.get_stream_type() is StreamType.ONEWAY


@pytest.mark.parametrize("new_id", [0, 9, 10, 123456789, 2**31 - 1])
def test_the_remapped_id_is_written_into_the_json_and_the_lengths_follow(remoting, new_id):
    head = remoting_request(1000)
    data = remoting_frame(head, b"the body")
    f = remoting.decode(data)
    f.set_request_id(new_id)
    out = f.encode()
    got, body = remoting_parse(out)
    assert got == head | {"opaque": new_id} and list(got) == list(head)  # key order kept
    assert body == b"the body"
    assert len(out) - len(data) == len(str(new_id)) - 4
    assert remoting.decode(out).get_request_id() == new_id
    # an id the peer wrote as text stays text
    f = remoting.decode(remoting_frame({"code": 10, "flag": 0, "opaque": "1000"}))
    f.set_request_id(new_id)
    assert remoting_parse(f.encode())[0]["opaque"] == str(new_id)


@pytest.mark.parametrize(
    "head, why",
    [
        (b'{"code":10,', "invalid JSON"),
        (b'["code",10]', "expected a JSON object"),
        (b'{"opaque":NaN}', "NaN is not JSON"),
        (b'{"opaque":' + b"9" * 100 + b"}", "a number of 100 characters"),
        (b'{"a":' + b"[" * 100 + b"]" * 100 + b"}", "JSON nested more than 64 deep"),
        (b'{"a":1} {"b":2}', "bytes after the JSON value"),
        (b'{"a":"\xff"}', "invalid UTF-8"),
    ],
)
def test_a_hostile_json_header_is_refused_at_the_field(remoting, head, why):
    data = remoting_frame(head, b"body")
    for read in (remoting.decode, remoting.scan):
        with pytest.raises(DecodeError, match=why) as e:
            read(data)
        assert 8 <= e.value.offset <= 8 + len(head)


@pytest.mark.parametrize(
    "string, at",
    [
        ('"\\ud800"', 1),
        ('"\\ud800x\\udc00"', 1),
        ('"x\\udc00"', 2),
        ('"\\ud800\\u0041"', 1),
        ('"\\ud83d\\ude00\\ud800"', 13),
    ],
)
def test_a_lone_surrogate_escape_is_refused_at_its_backslash(remoting, string, at):
    """No character: the header could neither be written back as UTF-8 when the id is
    remapped nor printed by decode. Python's json would take it; the field type refuses it."""
    head = b'{"opaque":1,"k":' + string.encode() + b"}"
    data = remoting_frame(head, b"body")
    for read in (remoting.decode, remoting.scan):
        with pytest.raises(DecodeError, match="a lone surrogate escape") as e:
            read(data)
        assert e.value.offset == 8 + head.index(b'"k":') + 4 + at


@pytest.mark.parametrize(
    "string, value", [('"\\\\ud800"', "\\ud800"), ('"\\ud83d\\ude00"', "\U0001f600")]
)
def test_an_escaped_backslash_or_a_surrogate_pair_is_a_character(remoting, string, value):
    f = remoting.decode(remoting_frame(b'{"opaque":1,"k":' + string.encode() + b"}", b"body"))
    f.set_request_id(70000)
    assert remoting_parse(f.encode())[0] == {"opaque": 70000, "k": value}


def test_a_header_length_past_the_frame_is_refused(remoting):
    data = bytearray(remoting_frame(remoting_request(1), b"body"))
    data[5:8] = (len(data)).to_bytes(3, "big")
    with pytest.raises(DecodeError, match="head: bad size"):
        remoting.decode(bytes(data))


# ---- the varint id in a record --------------------------------------------------------------
def recid_frame(kind: int, rid: int, service: str, body: bytes, status: int = 0) -> bytes:
    svc = service.encode()
    head = varint(rid) + bytes([len(svc)]) + svc
    return bytes([0xD5, kind, status]) + head + varint(len(body)) + body


async def recid_read(reader) -> bytes:
    """One frame, by hand: the header, the record's varint id and service, the body."""
    out = bytearray(await reader.readexactly(3))
    await read_varint_into(reader, out)
    out += await reader.readexactly(1)
    out += await reader.readexactly(out[-1])
    out += await reader.readexactly(await read_varint_into(reader, out))
    return bytes(out)


def recid_parse(data: bytes) -> tuple[int, int, int, str, bytes]:
    """(kind, status, id, service, body) of one whole frame."""
    rid, pos = read_varint(data, 3)
    service = data[pos + 1 : pos + 1 + data[pos]].decode()
    bz, pos = read_varint(data, pos + 1 + data[pos])
    assert pos + bz == len(data), "the frame ends where its body does"
    return data[1], data[2], rid, service, data[pos:]


@pytest.mark.parametrize("new_id", [0, 127, 128, 16384, 2**31 - 1])
def test_the_remapped_id_in_a_record_moves_the_frames_end(recid, new_id):
    data = recid_frame(0, 300, "com.acme.Echo", b"payload")
    f = recid.decode(data)
    assert (f.get_request_id(), f.get_service(), f.length) == (300, "com.acme.Echo", len(data))
    assert f.encode() == data
    f.set_request_id(new_id)
    out = f.encode()
    assert recid_parse(out) == (0, 0, new_id, "com.acme.Echo", b"payload")
    assert len(out) - len(data) == len(varint(new_id)) - 2
    again = recid.decode(out + b"\xd5")  # (the next frame's first byte: this one ends first)
    assert again.get_request_id() == new_id and again.length == len(out)


def test_a_reply_built_from_the_request_copies_its_record(recid):
    req = recid.decode(recid_frame(0, 5, "svc", b""))
    reply = recid.hijack(req, 503, "busy")
    assert recid_parse(reply.encode()) == (1, 1, 5, "svc", b"busy")
    reply.set_request_id(99)
    assert req.get_request_id() == 5  # the reply's record is its own


# ---- through the proxy: many clients reusing ids, one upstream connection, out of order -----
PEERS = {
    # name: (read a frame, a request (id, service, body, oneway), parse to (kind, id, service,
    # body), an answer to a parsed request)
    "remoting": (
        remoting_read,
        lambda rid, svc, body, oneway: remoting_frame(remoting_request(rid, topic=svc, flag=2 * oneway), body),  # fmt: skip
        lambda data: (lambda h, b: ("oneway" if h["flag"] & 2 else "response" if h["flag"] & 1 else "request", h["opaque"], h.get("extFields", {}).get("topic"), b))(*remoting_parse(data)),  # fmt: skip
        lambda rid, svc, body: remoting_frame({"code": 0, "flag": 1, "opaque": rid, "remark": svc}, body),  # fmt: skip
    ),
    "recid": (
        recid_read,
        lambda rid, svc, body, oneway: recid_frame(2 if oneway else 0, rid, svc, body),
        lambda data: (lambda k, s, rid, svc, b: (["request", "response", "oneway"][k], rid, svc, b))(*recid_parse(data)),  # fmt: skip
        lambda rid, svc, body: recid_frame(1, rid, svc, body),
    ),
}


@pytest.mark.parametrize("name", sorted(PEERS))
def test_the_proxy_remaps_ids_inside_headers_with_concurrent_out_of_order_answers(name, request):
    from tests.runtime.harness import eventually, free_port, proxy_running, run, simple_config

    proto = request.getfixturevalue(name)
    read, ask, parse, answer = PEERS[name]
    served: list[tuple] = []  # (upstream connection, id) in the order they were answered
    received: list[tuple] = []  # and in the order they arrived
    in_flight: set = set()
    clashes: list = []  # ids the proxy sent while a request with the same id was waiting
    oneways: list[bytes] = []

    async def server(reader, writer):
        rng = random.Random(len(received))

        async def reply(data: bytes) -> None:
            kind, rid, svc, body = parse(data)
            if kind == "oneway":
                oneways.append(body)
                return
            await asyncio.sleep(rng.random() / 50)  # later requests often answered first
            served.append((id(writer), rid))
            in_flight.discard(rid)
            writer.write(answer(rid, svc, body[::-1]))

        tasks = []
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                data = await read(reader)
                kind, rid, _, _ = parse(data)
                received.append((id(writer), rid))
                if kind == "request":
                    if rid in in_flight:
                        clashes.append(rid)
                    in_flight.add(rid)
                tasks.append(asyncio.ensure_future(reply(data)))
        await asyncio.gather(*tasks)
        writer.close()

    async def client(port: int, n: int, seed: int) -> None:
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = {}
        for i in range(1, n + 1):
            rid = i * 1000 if seed % 2 else i  # (ids of every length, the same in every client)
            body = rng.randbytes(rng.randrange(0, 3000))
            sent[rid] = (f"svc{seed}", body)
            writer.write(ask(rid, f"svc{seed}", body, False))
            if i % 10 == 0:
                writer.write(ask(0, f"svc{seed}", b"one-way %d" % seed, True))
        for _ in range(n):
            kind, rid, svc, body = parse(await read(reader))
            want_svc, want_body = sent.pop(rid)  # each id answered once, in any order
            assert (kind, body) == ("response", want_body[::-1])
            if name == "recid":
                assert svc == want_svc  # (the record around the id came back whole)
        assert not sent
        writer.close()

    async def scenario():
        up, port = free_port(), free_port()
        upstream = await asyncio.start_server(server, "127.0.0.1", up)
        config = simple_config(name, port, [f"127.0.0.1:{up}"], {"max_connections": 1})
        async with proxy_running(config, protocols={name: proto}):
            await asyncio.gather(*(client(port, 40, seed) for seed in range(6)))
            await eventually(lambda: len(oneways) == 6 * 4)  # the last may still be on their way
        upstream.close()

    run(scenario())
    assert sorted(oneways) == sorted(b"one-way %d" % s for s in range(6) for _ in range(4))
    assert len(served) == 240 and served != sorted(served, key=received.index)  # out of order
    assert len({conn for conn, _ in served}) == 1  # every client's requests on one connection
    assert not clashes  # six clients sent ids 1..40 each: the proxy remapped them apart


@pytest.mark.parametrize("name", sorted(PEERS))
def test_a_dead_upstream_is_answered_with_the_protocols_error_carrying_the_clients_id(name, request):  # fmt: skip
    from tests.runtime.harness import free_port, proxy_running, run, simple_config

    proto = request.getfixturevalue(name)
    read, ask, parse, _ = PEERS[name]

    async def scenario():
        port = free_port()
        config = simple_config(name, port, [f"127.0.0.1:{free_port()}"])  # nothing listens
        async with proxy_running(config, protocols={name: proto}):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(ask(123456, "svc", b"x", False) + ask(7, "svc", b"y", False))
            answers = [await asyncio.wait_for(read(reader), 10) for _ in range(2)]
            writer.close()
        return answers

    answers = run(scenario())
    assert [parse(a)[:2] for a in answers] == [("response", 123456), ("response", 7)]
    reason = "protoc-x: 502 upstream unreachable or reset"
    if name == "remoting":  # RocketMQ's SYSTEM_ERROR (502 maps to it), the proxy's reason
        heads = [remoting_parse(a)[0] for a in answers]
        assert [(h["code"], h["remark"]) for h in heads] == [(1, reason)] * 2, heads
    else:  # the request's record copied back whole, status 1, the reason as the body
        assert [parse(a)[2:] for a in answers] == [("svc", reason.encode())] * 2
        assert all(a[2] == 1 for a in answers)


MAP_ID_SPEC = """
protocol mapid {
    byte_order big
    pool multiplex
    frame {
        magic u8 = 0xaa
        kind u8
        hlen u32 = len(headers)
        blen u32 = len(body)
        headers map(u32)[hlen]
        body bytes[blen]
    }
    request_id = headers["id"]
    service = headers["svc"]
    stream {
        kind == 1 => response
        else => request
    }
    status_map {
        0 ok <- 200 -> 200
        1 err <- 400, 403, 404, 429, 500, 502, 503, 504 -> 500
    }
    error_response { kind = 1, body = $message }
}
"""


def test_an_id_in_a_header_map_the_scan_reads_lazily_for_requests_and_responses():
    """The scan keeps a map as bytes until a binding reads it: the id's map is parsed before
    the stream type decides, so a response's id is read too."""
    mod = load_module_source("mapid", compile_source(MAP_ID_SPEC, "mapid.xproto", "mapid"), "m")

    def frame(kind: int, headers: dict[str, str], body: bytes = b"") -> bytes:
        hb = b"".join(len(x).to_bytes(4, "big") + x for kv in headers.items() for x in map(str.encode, kv))  # fmt: skip
        return bytes([0xAA, kind]) + len(hb).to_bytes(4, "big") + len(body).to_bytes(4, "big") + hb + body  # fmt: skip

    request = frame(0, {"id": "42", "svc": "S"}, b"x")
    response = frame(1, {"id": "42"}, b"y")
    assert mod.PROTOCOL.scan(request, 0)[:2] == (len(request), 42)
    assert mod.PROTOCOL.scan(request, 0)[5] == "S"
    assert mod.PROTOCOL.scan(response, 0)[:4] == (len(response), 42, -1, StreamType.RESPONSE)
    f = mod.PROTOCOL.decode(request, 0)
    f.set_request_id(1234567)
    again = mod.PROTOCOL.decode(f.encode(), 0)
    assert again.headers == {"id": "1234567", "svc": "S"} and again.get_request_id() == 1234567
