"""A connection's first frame with a layout of its own (a handshake), and session pools:
tests/codec/zookeeper.xproto, ZooKeeper's ConnectRequest / ConnectResponse before the xid'd
packets. Frames here are written by hand from zookeeper.jute with ``struct``, not by the codec;
the peer is an asyncio server that speaks them. (tests/e2e/test_zookeeper_sessions.py runs
kazoo and a real ZooKeeper through the proxy.)"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path

import pytest

from protoc_x.compiler import compile_source
from protoc_x.loader import load_module_source
from protoc_x.runtime.api import Direction, StreamType
from protoc_x.runtime.filters import REGISTRY, Pause, Reject, StreamFilter

SPEC = Path(__file__).parent / "zookeeper.xproto"
GET_DATA, CLOSE_SESSION = 4, -11


def load_zk():
    code = compile_source(SPEC.read_text(), str(SPEC), "zookeeper")
    return load_module_source("zookeeper", code, str(SPEC)).PROTOCOL


@pytest.fixture(scope="module")
def zk():
    return load_zk()


# ---- ZooKeeper's packets, as zookeeper.jute lays them out ---------------------------------
def packet(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def connect_request(timeout=30000, session_id=0, passwd=b"\0" * 16, read_only=b"\0") -> bytes:
    return packet(
        struct.pack(">iqiqi", 0, 0, timeout, session_id, len(passwd)) + passwd + read_only
    )


def connect_response(timeout: int, session_id: int, passwd=b"s" * 16, read_only=b"\0") -> bytes:
    return packet(struct.pack(">iiqi", 0, timeout, session_id, len(passwd)) + passwd + read_only)


def request(xid: int, op: int, payload: bytes = b"") -> bytes:
    return packet(struct.pack(">ii", xid, op) + payload)


def reply(xid: int, zxid: int, err: int, payload: bytes = b"") -> bytes:
    return packet(struct.pack(">iqi", xid, zxid, err) + payload)


async def read_packet(reader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def parse_connect_response(body: bytes) -> tuple[int, int, bytes]:
    _, timeout, session_id, n = struct.unpack_from(">iiqi", body)
    return timeout, session_id, body[20 : 20 + n]


def parse_reply(body: bytes) -> tuple[int, int, int, bytes]:
    xid, zxid, err = struct.unpack_from(">iqi", body)
    return xid, zxid, err, body[16:]


# ---- the codec --------------------------------------------------------------------------
def test_the_first_frame_each_way_has_a_layout_of_its_own(zk):
    hello = connect_request(timeout=12000, session_id=0x1234, passwd=b"p" * 16)
    f = zk.decode(hello, 0, Direction.REQUEST, first=True)
    assert (f.length, f.first, f.protocol_version, f.session_timeout, f.session_id) == (
        len(hello), True, 0, 12000, 0x1234)  # fmt: skip
    assert (f.passwd, f.read_only, f.xid) == (b"p" * 16, b"\0", None)
    assert (f.get_method(), f.get_stream_type()) == ("connect", StreamType.REQUEST)
    assert f.encode() == hello
    assert zk.scan(hello, 0, Direction.REQUEST, True)[:4] == (
        len(hello),
        None,
        -1,
        StreamType.REQUEST,
    )
    # the same bytes read as a later frame: a RequestHeader (xid 0, op from the zxid's high half)
    later = zk.decode(hello, 0, Direction.REQUEST)
    assert (later.first, later.xid, later.op, later.session_timeout) == (False, 0, 0, None)
    assert later.get_method() == "notification"

    welcome = connect_response(timeout=12000, session_id=0x77)
    r = zk.decode(welcome, 0, Direction.RESPONSE, first=True)
    assert (r.session_timeout, r.session_id, r.passwd, r.err) == (12000, 0x77, b"s" * 16, None)
    assert (r.get_stream_type(), r.get_status()) == (StreamType.RESPONSE, None)
    assert r.encode() == welcome

    answer = reply(5, 99, -101, b"x")
    a = zk.decode(answer, 0, Direction.RESPONSE)
    assert (a.xid, a.zxid, a.err, a.payload, a.get_status()) == (5, 99, -101, b"x", -101)
    assert a.encode() == answer
    event = zk.decode(reply(-1, -1, 0, b"ev"), 0, Direction.RESPONSE)
    assert event.get_stream_type() is StreamType.ONEWAY  # a watch event nobody asked for


def test_a_first_frame_measured_in_pieces_keeps_its_layout(zk):
    hello = connect_request(timeout=9000, passwd=b"")
    # (its header is the ConnectRequest's fixed part: 32 bytes; a RequestHeader's is 12)
    assert zk.frame_size(hello[:31], 0, Direction.REQUEST, first=True) is None
    assert zk.frame_size(hello[:32], 0, Direction.REQUEST, first=True) == len(hello)
    assert zk.frame_size(hello[:12], 0, Direction.REQUEST) == len(hello)
    assert zk.decode(hello[:-1], 0, Direction.REQUEST, first=True) is None
    assert zk.decode(hello, 0, Direction.REQUEST, first=True).session_timeout == 9000


def test_the_answer_to_a_first_request_is_a_first_response(zk):
    hello = zk.decode(connect_request(), 0, Direction.REQUEST, first=True)
    refused = zk.hijack(hello, 503).encode()
    # ZooKeeper's own refusal of a session: a ConnectResponse with timeout 0 and no session
    assert refused == packet(struct.pack(">iiqi", 0, 0, 0, 0))
    later = zk.decode(request(7, GET_DATA, b"/a"), 0, Direction.REQUEST)
    assert zk.hijack(later, 503).encode() == reply(7, 0, -4)  # connection loss
    assert zk.hijack(later, 404).encode() == reply(7, 0, -101)  # no node


# ---- through the proxy: a session each, with a hand-written server ----------------------
def connect_only_config(port: int, endpoints: list[str], path: str = "/connect") -> dict:
    """Routes only the handshake (method "connect"): a later request routed on its own would
    find no route. A session's requests follow its first."""
    from tests.runtime.harness import config

    return config(
        [{"name": "main", "address": f"127.0.0.1:{port}", "protocol": "zookeeper",
          "route_config": "main"}],
        [{"name": "main", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"path": path}, "route": {"cluster": "zk"}}]}]}],
        [{"name": "zk", "endpoints": endpoints, "request_timeout_ms": 5000}],
    )  # fmt: skip


class SessionServer:
    """A ZooKeeper-like server: a session per connection (ids ``base``, ``base`` + 1, ...),
    getData answered with the connection's number; a request whose payload is ``push`` gets a
    watch event (xid -1) before its answer; a ping (xid -2) its reply."""

    def __init__(self, base: int = 100) -> None:
        self.base = base
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.closed: list[int] = []  # connections whose client side closed (EOF), by number
        self.hellos: list[tuple] = []
        self.requests: list[tuple[int, int, bytes]] = []  # (connection, xid, op) in order

    async def __call__(self, reader, writer) -> None:
        number = len(self.conns)
        self.conns.append((reader, writer))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            body = await read_packet(reader)
            _, _, timeout, session_id, n = struct.unpack_from(">iqiqi", body)
            self.hellos.append((timeout, session_id, body[28 : 28 + n], body[28 + n :]))
            writer.write(connect_response(timeout, self.base + number))
            while True:
                xid, op = struct.unpack_from(">ii", body := await read_packet(reader))
                payload = body[8:]
                self.requests.append((number, xid, op))
                if xid == -2:
                    writer.write(reply(-2, 1, 0))
                    continue
                if payload == b"push":
                    writer.write(reply(-1, -1, 0, b"event for %d" % number))
                if op == CLOSE_SESSION:
                    writer.write(reply(xid, 1, 0))
                    await writer.drain()
                    break
                if payload == b"slow":
                    await asyncio.sleep(0.3)
                if payload != b"silent":
                    tag = b"conn %d: " % (self.base + number)
                    writer.write(reply(xid, 1000 + number, 0, tag + payload))
        self.closed.append(number)
        writer.close()


async def open_session(port: int, timeout: int, bytewise: bool = False):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hello = connect_request(timeout=timeout)
    if bytewise:  # the handshake in 1-byte pieces: measured with first=True as it grows
        for i in range(len(hello)):
            writer.write(hello[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.001)
    else:
        writer.write(hello)
    got_timeout, session_id, _ = parse_connect_response(
        await asyncio.wait_for(read_packet(reader), 10)
    )
    assert got_timeout == timeout
    return reader, writer, session_id


def test_each_client_gets_a_session_of_its_own_that_every_request_follows():
    from tests.runtime.harness import free_port, proxy_running, run

    zk_proto = load_zk()
    server = SessionServer()

    async def client(port: int, i: int) -> tuple[int, list]:
        reader, writer, session_id = await open_session(port, 4000 + i, bytewise=i == 1)
        for xid in range(1, 6):  # pipelined: answered in order on the session's connection
            writer.write(request(xid, GET_DATA, b"/node/%d/%d" % (i, xid)))
        answers = [parse_reply(await asyncio.wait_for(read_packet(reader), 10)) for _ in range(5)]
        pushed = []
        if i == 0:
            writer.write(request(6, GET_DATA, b"push"))
            pushed = [parse_reply(await asyncio.wait_for(read_packet(reader), 10))
                      for _ in range(2)]  # fmt: skip
        writer.write(request(7, CLOSE_SESSION))
        assert parse_reply(await asyncio.wait_for(read_packet(reader), 10))[:3] == (7, 1, 0)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # nothing more: no one's event
        writer.close()
        return session_id, answers, pushed

    async def scenario():
        up, port = free_port(), free_port()
        upstream = await asyncio.start_server(server, "127.0.0.1", up)
        async with proxy_running(connect_only_config(port, [f"127.0.0.1:{up}"]),
                                 protocols={"zookeeper": zk_proto}):  # fmt: skip
            results = await asyncio.gather(*(client(port, i) for i in range(3)))
        upstream.close()
        return results

    results = run(scenario())
    assert len(server.conns) == 3  # one upstream connection per client
    assert sorted(t for t, *_ in server.hellos) == [4000, 4001, 4002]  # each handshake intact
    assert all(h[2:] == (b"\0" * 16, b"\0") for h in server.hellos)
    for i, (session_id, answers, pushed) in enumerate(results):
        conn = session_id - 100  # the connection its session was opened on
        assert answers == [
            (xid, 1000 + conn, 0, b"conn %d: /node/%d/%d" % (session_id, i, xid))
            for xid in range(1, 6)
        ]
        if i == 0:  # the server's event reached that session's client, before the answer
            assert pushed == [(-1, -1, 0, b"event for %d" % conn),
                              (6, 1000 + conn, 0, b"conn %d: push" % session_id)]  # fmt: skip
    assert sorted(s for s, *_ in results) == [100, 101, 102]


def test_a_session_ends_with_its_client_and_its_server():
    """The client leaves: its upstream connection closes. The server leaves: the request in
    flight is answered with the protocol's error (connection loss), then the client's
    connection closes: a session cannot move to another connection."""
    from tests.runtime.harness import eventually, free_port, proxy_running, run

    server = SessionServer()

    async def scenario():
        up, port = free_port(), free_port()
        upstream = await asyncio.start_server(server, "127.0.0.1", up)
        async with proxy_running(connect_only_config(port, [f"127.0.0.1:{up}"]),
                                 protocols={"zookeeper": load_zk()}):  # fmt: skip
            ra, wa, _ = await open_session(port, 1000)
            rb, wb, _ = await open_session(port, 2000)
            wa.close()  # client A leaves
            assert await eventually(lambda: server.closed) == [
                0
            ]  # A's upstream connection closed; B's is open
            wb.write(request(3, GET_DATA, b"silent"))  # in flight when the server goes
            await asyncio.sleep(0.1)
            server.conns[1][1].transport.abort()
            answer = parse_reply(await asyncio.wait_for(read_packet(rb), 10))
            assert answer == (3, 0, -4, b"")  # connection loss, with its xid
            assert await asyncio.wait_for(rb.read(), 10) == b""  # then the client goes too
            wb.close()
        upstream.close()

    run(scenario())


@pytest.mark.parametrize("case", ["no-route", "dead-upstream"])
def test_a_refused_handshake_gets_zookeepers_refusal_and_the_connection_closes(case):
    from tests.runtime.harness import free_port, proxy_running, run

    async def scenario():
        port = free_port()
        cfg = (
            connect_only_config(port, [f"127.0.0.1:{free_port()}"], path="/other")
            if case == "no-route"
            else connect_only_config(port, [f"127.0.0.1:{free_port()}"])  # nothing listens
        )
        async with proxy_running(cfg, protocols={"zookeeper": load_zk()}):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(connect_request(timeout=5000) + request(1, GET_DATA, b"/a"))
            refused = await asyncio.wait_for(read_packet(reader), 10)
            rest = await asyncio.wait_for(reader.read(), 10)
            writer.close()
        return refused, rest

    refused, rest = run(scenario())
    assert parse_connect_response(refused) == (0, 0, b"")  # timeout 0: no session
    if case == "no-route":  # refused at once: the request after it is never read
        assert rest == b""
    else:  # it was read while the connection was being made: answered, then the close
        assert rest == reply(1, 0, -4)


class HoldHandshake(StreamFilter):
    """Holds each handshake (method ``connect``) back for 100 ms, so that the requests its
    client sent with it pass the filters first."""

    name = "test_hold_handshake"

    def on_request(self, ctx):
        return Pause(0.1) if ctx.method == "connect" else None


@pytest.fixture
def test_filters(monkeypatch):
    """The filters of these tests, registered while a test runs (the registry lists them)."""
    for cls in (HoldHandshake, RefuseDelete):
        monkeypatch.setitem(REGISTRY, cls.name, cls)


@pytest.mark.parametrize("held", [False, True], ids=["as-sent", "handshake-held"])
def test_requests_sent_with_the_handshake_follow_it_to_its_server(held, test_filters):
    """Each client writes its handshake and three requests at once; there are two servers,
    balanced round robin. Every request goes where its session's handshake went, on the
    session's connection, after the handshake: also when a filter holds the handshake back."""
    from tests.runtime.harness import free_port, proxy_running, run

    servers = [SessionServer(100), SessionServer(200)]

    async def client(port: int, i: int) -> tuple[int, list]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(connect_request(timeout=3000 + i)
                     + b"".join(request(x, GET_DATA, b"/%d/%d" % (i, x)) for x in (1, 2, 3)))  # fmt: skip
        got_timeout, session_id, _ = parse_connect_response(
            await asyncio.wait_for(read_packet(reader), 10)
        )
        assert got_timeout == 3000 + i
        answers = [parse_reply(await asyncio.wait_for(read_packet(reader), 10)) for _ in range(3)]
        writer.close()
        return session_id, answers

    async def scenario():
        ups = [free_port(), free_port()]
        started = [await asyncio.start_server(s, "127.0.0.1", p) for s, p in zip(servers, ups)]
        cfg = connect_only_config(free_port(), [f"127.0.0.1:{p}" for p in ups])
        port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
        if held:
            cfg["listeners"][0]["stream_filters"] = [{"name": "test_hold_handshake", "config": {}}]
        async with proxy_running(cfg, protocols={"zookeeper": load_zk()}):
            results = await asyncio.gather(*(client(port, i) for i in range(4)))
        for server in started:
            server.close()
        return results

    results = run(scenario())
    assert [len(s.conns) for s in servers] == [2, 2]  # sessions balanced, one connection each
    for server in servers:  # each connection's first frame was its handshake
        assert len(server.hellos) == len(server.conns)
    for i, (session_id, answers) in enumerate(results):
        assert answers == [
            (x, 1000 + session_id % 100, 0, b"conn %d: /%d/%d" % (session_id, i, x))
            for x in (1, 2, 3)
        ]  # answered on the connection its session was opened on, in order


def test_the_proxy_pings_no_session_of_its_own_accord():
    """A cluster keepalive would ping an idle upstream connection; a session's liveness is its
    client's, so the proxy sends none there. The client's own ping goes to the server."""
    from tests.runtime.harness import free_port, proxy_running, run

    server = SessionServer()

    async def scenario():
        up = free_port()
        upstream = await asyncio.start_server(server, "127.0.0.1", up)
        cfg = connect_only_config(free_port(), [f"127.0.0.1:{up}"])
        cfg["clusters"][0]["keepalive"] = {"interval_ms": 50, "timeout_ms": 1000, "failures": 3}
        port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
        async with proxy_running(cfg, protocols={"zookeeper": load_zk()}):
            reader, writer, _ = await open_session(port, 1000)
            await asyncio.sleep(0.5)  # ten keepalive intervals, idle
            assert server.requests == []
            writer.write(request(-2, 11))  # the client's ping
            pong = parse_reply(await asyncio.wait_for(read_packet(reader), 10))
            writer.close()
        upstream.close()
        return pong

    assert run(scenario()) == (-2, 1, 0, b"")
    assert server.requests == [(0, -2, 11)]


class RefuseDelete(StreamFilter):
    """Answers every delete itself with 403 (the protocol's no-auth error)."""

    name = "test_refuse_delete"

    def on_request(self, ctx):
        return Reject(403, "protoc-x: 403 no deletes here") if ctx.method == "delete" else None


def test_a_request_answered_before_the_session_opens_leaves_the_session_be(test_filters):
    """Only the handshake's own failure ends a client without a session: a request that a
    filter answers while the session's connection is being made gets its answer, and the
    session opens and serves the requests after it."""
    from tests.runtime.harness import free_port, proxy_running, run

    server = SessionServer()

    async def scenario():
        up = free_port()
        upstream = await asyncio.start_server(server, "127.0.0.1", up)
        cfg = connect_only_config(free_port(), [f"127.0.0.1:{up}"])
        cfg["listeners"][0]["stream_filters"] = [{"name": "test_refuse_delete", "config": {}}]
        port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
        async with proxy_running(cfg, protocols={"zookeeper": load_zk()}):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(connect_request(timeout=1500) + request(1, 2, b"/d")  # delete
                         + request(2, GET_DATA, b"/g"))  # fmt: skip
            packets = [await asyncio.wait_for(read_packet(reader), 10) for _ in range(3)]
            writer.close()
        upstream.close()
        return packets

    hello, refused, answer = run(scenario())
    assert parse_connect_response(hello)[:2] == (1500, 100)
    assert parse_reply(refused) == (1, 0, -102, b"")  # 403: no auth, the client's xid
    assert parse_reply(answer) == (2, 1000, 0, b"conn 100: /g")
    assert server.requests == [(0, 2, GET_DATA)]  # the delete never reached the server


def test_a_sessions_requests_are_not_held_by_the_clusters_breakers():
    """Breakers and balancing decide where a session opens; the requests after its first have
    nowhere else to go. With max_requests 1, a request sent while another is in flight on the
    session still goes to the server (it was once answered 503: connection loss)."""
    from tests.runtime.harness import free_port, proxy_running, run

    server = SessionServer()

    async def scenario():
        up = free_port()
        upstream = await asyncio.start_server(server, "127.0.0.1", up)
        cfg = connect_only_config(free_port(), [f"127.0.0.1:{up}"])
        cfg["clusters"][0]["circuit_breakers"] = {"max_requests": 1}
        port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
        async with proxy_running(cfg, protocols={"zookeeper": load_zk()}):
            reader, writer, _ = await open_session(port, 1000)
            writer.write(request(1, GET_DATA, b"slow") + request(2, GET_DATA, b"/b"))
            answers = [
                parse_reply(await asyncio.wait_for(read_packet(reader), 10)) for _ in range(2)
            ]
            writer.close()
        upstream.close()
        return answers

    assert run(scenario()) == [(1, 1000, 0, b"conn 100: slow"), (2, 1000, 0, b"conn 100: /b")]
