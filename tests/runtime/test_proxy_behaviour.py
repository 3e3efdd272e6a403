"""Stream, pool and proxy behaviour over real sockets: multiplexing, pingpong ordering,
detection, routing and balancing, heartbeats, keepalive, goaway, and the protocol-native
errors (404, 502, 503, 504)."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from protoc_x.samples import SAMPLES
from protoc_x.runtime.api import Direction, StreamType
from protoc_x.runtime.engine import check_detectable
from protoc_x.runtime import proxy as proxy_module
from protoc_x.runtime.network import FramedConnection
from protoc_x.runtime.router import WeightedPicker

from .harness import (
    PROTOCOLS, client, config, free_port, proxy_running, recorder, run, simple_config, upstream,
)  # fmt: skip

BOLT = PROTOCOLS["bolt"]


def bolt_request(
    rid: int, body: bytes = b"x", service="com.acme.HelloService:1.0", method="sayHello", **headers
):
    frame = BOLT.decode(
        next(s.data for s in SAMPLES if s.protocol == "bolt" and s.name.startswith("request"))
    )
    frame.set_request_id(rid)
    frame.set_body(body)
    frame.headers = {"service": service, "sofa_head_method_name": method, **headers}
    return frame


def test_multiplex_2000_requests_50_clients_one_upstream_connection():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        cfg = simple_config("bolt", port, [f"127.0.0.1:{up}"],
                            cluster_extra={"circuit_breakers": {"max_pending_requests": 4096}})  # fmt: skip
        async with recorder("bolt", up, seen) as server, proxy_running(cfg):
            clients = [await client("bolt", port) for _ in range(50)]
            futures = []
            for i in range(2000):
                c = clients[i % 50]
                # ids 0..39 on every connection: unique per connection, colliding across them
                futures.append((i, c.send(bolt_request(i // 50, b"body-%d" % i))))
            for i, fut in futures:
                answer = await asyncio.wait_for(fut, 10)
                assert (
                    answer.get_request_id() == i // 50
                    and bytes(answer.get_body()) == b"body-%d" % i
                )
            assert len(server.conns) == 1
            ids = [f.get_request_id() for f in seen]
            assert len(ids) == 2000 and len(set(ids)) == 2000

    run(scenario())


def thrift_call(seqid: int, text: bytes):
    data = next(s.data for s in SAMPLES if s.protocol == "thrift" and s.name.startswith("CALL"))
    frame = PROTOCOLS["thrift"].decode(data)
    frame.set_request_id(seqid)
    frame.set_body(b"\x0b\x00\x01" + len(text).to_bytes(4, "big") + text + b"\x00")
    return frame


def test_pingpong_concurrent_clients_and_pipelined_seqid_zero_in_order():
    reverse_from = [None]

    def delay(n: int) -> float:  # n: how many requests the upstream saw before this one
        if reverse_from[0] is None:
            return 0.01
        return max(0.0, 0.3 - 0.012 * (n - reverse_from[0]))

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with (
            recorder("thrift", up, seen, delay=delay) as server,
            proxy_running(simple_config("thrift", port, [f"127.0.0.1:{up}"])),
        ):
            clients = [await client("thrift", port) for _ in range(5)]

            async def one(ci, c):
                for k in range(10):
                    text = b"client-%d-call-%d" % (ci, k)
                    answer = await c.call(thrift_call(k, text))
                    assert answer.get_request_id() == k and text in bytes(answer.get_body())

            await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
            # from here on each request is answered sooner than the one before it, so the
            # upstream answers come back in reverse order and the proxy must put them in order
            reverse_from[0] = len(seen)
            pipelined = await client("thrift", port)
            futures = [pipelined.send(thrift_call(0, b"pipelined-%02d" % k)) for k in range(20)]
            answers = [await asyncio.wait_for(f, 10) for f in futures]
            assert [bytes(a.get_body()) for a in answers] == [
                b"\x0b\x00\x01\x00\x00\x00\x0cpipelined-%02d\x00" % k for k in range(20)
            ]
            assert all(a.get_request_id() == 0 for a in answers)
            assert len(server.conns) > 1  # pingpong: one request per connection at a time

    run(scenario())


def test_bolt_and_dubbo_detected_on_one_listener_and_routed_by_service():
    dubbo = PROTOCOLS["dubbo"]
    dubbo_req = next(
        s.data for s in SAMPLES if s.protocol == "dubbo" and s.name.startswith("request")
    )

    async def scenario():
        b_up, d_up, port = free_port(), free_port(), free_port()
        cfg = config(
            [{"name": "mixed", "address": f"127.0.0.1:{port}", "protocol": ["bolt", "dubbo"], "route_config": "r"}],
            [{"name": "r", "virtual_hosts": [
                {"name": "b", "domains": ["com.acme.HelloService:1.0"], "routes": [{"match": {}, "route": {"cluster": "b"}}]},
                {"name": "d", "domains": ["com.acme.HelloService"], "routes": [{"match": {}, "route": {"cluster": "d"}}]}]}],
            [{"name": "b", "endpoints": [f"127.0.0.1:{b_up}"]}, {"name": "d", "endpoints": [f"127.0.0.1:{d_up}"]}],
        )  # fmt: skip
        b_seen, d_seen = [], []
        async with (
            recorder("bolt", b_up, b_seen),
            recorder("dubbo", d_up, d_seen),
            proxy_running(cfg),
        ):
            bc, dc = await client("bolt", port), await client("dubbo", port)
            for i in range(5):
                assert (await bc.call(bolt_request(i + 1, b"b%d" % i))).get_status() == 0
                frame = dubbo.decode(dubbo_req)
                frame.set_request_id(100 + i)
                answer = await dc.call(frame)
                assert answer.get_status() == 20 and answer.get_request_id() == 100 + i
            assert len(b_seen) == 5 and len(d_seen) == 5
            assert {f.get_service() for f in d_seen} == {"com.acme.HelloService"}

    run(scenario())


def test_overlapping_detection_rejected_naming_both(tmp_path):
    from protoc_x.loader import load_path

    spec = tmp_path / "mybolt.xproto"
    text = open("specs/xexample.xproto").read().replace("protocol xexample", "protocol mybolt")
    spec.write_text(text.replace("detect u8 == 0x78", "detect u8 == 0x01"))
    (mine,) = load_path(spec)
    why = check_detectable([BOLT, mine])
    assert why == "protocols 'bolt' and 'mybolt' can both match the same first bytes"
    assert check_detectable([BOLT, PROTOCOLS["dubbo"], PROTOCOLS["xexample"]]) is None


class EveryPoint:
    """A random source for a weighted picker that hands out 0, 1, 2, ... modulo the total
    weight: every point of the split in turn, so a split of 20/80 over 2,000 requests is
    exactly 400/1600 (one point taken by the wrong cluster would make it 420/1580)."""

    def __init__(self):
        self.k = -1

    def randrange(self, stop: int) -> int:
        self.k += 1
        return self.k % stop


def test_routing_by_domain_path_and_headers_and_weighted_split(monkeypatch):
    # the route's picker draws from a deterministic source instead of random.Random()
    monkeypatch.setattr(
        proxy_module, "WeightedPicker", lambda clusters: WeightedPicker(clusters, rng=EveryPoint())
    )

    async def scenario():
        ups = {name: free_port() for name in ("exact", "wild", "path", "blue", "green", "a", "b")}
        port = free_port()
        routes = [
            {"name": "exact", "domains": ["com.acme.HelloService:1.0"], "routes": [
                {"match": {"path": "/special"}, "route": {"cluster": "path"}},
                {"match": {"prefix": "/", "headers": [{"name": "color", "exact": "blue"}]}, "route": {"cluster": "blue"}},
                {"match": {"prefix": "/", "headers": [{"name": "color", "regex": "gr.*n"}]}, "route": {"cluster": "green"}},
                {"match": {"prefix": "/"}, "route": {"cluster": "exact"}}]},
            {"name": "wild", "domains": ["com.acme.*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "wild"}}]},
            {"name": "split", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {
                "weighted_clusters": [{"name": "a", "weight": 20}, {"name": "b", "weight": 80}]}}]},
        ]  # fmt: skip
        cfg = config(
            [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r"}],
            [{"name": "r", "virtual_hosts": routes}],
            # 2,000 at once on a cold proxy queue behind the first connect: lift the breaker
            [{"name": n, "endpoints": [f"127.0.0.1:{p}"],
              "circuit_breakers": {"max_pending_requests": 4096}} for n, p in ups.items()],
        )  # fmt: skip
        seen = {n: [] for n in ups}
        async with (
            contextlib_all([recorder("bolt", p, seen[n]) for n, p in ups.items()]),
            proxy_running(cfg),
        ):
            c = await client("bolt", port)
            await c.call(bolt_request(1, method="special"))
            await c.call(bolt_request(2, color="blue"))
            await c.call(bolt_request(3, color="green"))
            await c.call(bolt_request(4))
            await c.call(bolt_request(5, service="com.acme.Other:2.0"))
            futures = [c.send(bolt_request(10 + i, service="org.else.Thing")) for i in range(2000)]
            await asyncio.gather(*futures)
            assert [len(seen[n]) for n in ("path", "blue", "green", "exact", "wild")] == [
                1,
                1,
                1,
                1,
                1,
            ]
            assert (len(seen["a"]), len(seen["b"])) == (400, 1600)

    run(scenario())


class contextlib_all:
    """Enter several async context managers."""

    def __init__(self, managers):
        self.managers = managers

    async def __aenter__(self):
        for m in self.managers:
            await m.__aenter__()

    async def __aexit__(self, *exc):
        for m in reversed(self.managers):
            await m.__aexit__(*exc)


def test_hash_key_sends_one_key_to_one_endpoint():
    mc = PROTOCOLS["memcached"]

    def get(key: bytes, opaque: int):
        frame = mc.decode(
            next(s.data for s in SAMPLES if s.protocol == "memcached" and s.name == "GET foo")
        )
        frame.key = key
        frame.set_request_id(opaque)
        return frame

    async def scenario():
        ups = [free_port() for _ in range(3)]
        port = free_port()
        cfg = simple_config(
            "memcached",
            port,
            [f"127.0.0.1:{p}" for p in ups],
            cluster_extra={"lb_policy": "hash:key"},
        )
        seen = [[] for _ in ups]
        async with (
            contextlib_all([recorder("memcached", p, s) for p, s in zip(ups, seen)]),
            proxy_running(cfg),
        ):
            c = await client("memcached", port)
            for round_ in range(3):
                for k in range(30):
                    answer = await c.call(get(b"key-%d" % k, round_ * 100 + k))
                    assert answer.get_request_id() == round_ * 100 + k
            where = collections.defaultdict(set)
            for i, frames in enumerate(seen):
                for f in frames:
                    where[bytes(f.key)].add(i)
            assert all(len(v) == 1 for v in where.values())
            assert len({next(iter(v)) for v in where.values()}) == 3  # keys spread over all three

    run(scenario())


def test_client_heartbeat_answered_locally():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with (
            recorder("bolt", up, seen),
            proxy_running(simple_config("bolt", port, [f"127.0.0.1:{up}"])),
        ):
            c = await client("bolt", port)
            answer = await c.call(BOLT.trigger(42))
            assert answer.is_heartbeat() and answer.get_request_id() == 42
            assert answer.get_stream_type() is StreamType.RESPONSE
            await c.call(bolt_request(1))
            assert len(seen) == 1 and not seen[0].is_heartbeat()

    run(scenario())


def test_keepalive_closes_a_connection_to_an_upstream_that_stops_answering():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        cfg = simple_config("bolt", port, [f"127.0.0.1:{up}"],
                            cluster_extra={"keepalive": {"interval_ms": 100, "timeout_ms": 100, "failures": 2}})  # fmt: skip
        async with recorder("bolt", up, seen) as server, proxy_running(cfg):
            c = await client("bolt", port)
            await c.call(bolt_request(1))
            conn = server.conns[0]
            conn.answer = False  # the upstream goes silent
            deadline = time.monotonic() + 3
            while not conn.closed and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert conn.closed, "the proxy kept a dead upstream connection"
            heartbeats = [f for f in seen if f.is_heartbeat()]
            assert len(heartbeats) >= 2
            conn.answer = True
            answer = await c.call(bolt_request(2))  # a new connection serves the next request
            assert answer.get_status() == 0 and len(server.conns) == 2

    run(scenario())


class GoawayUpstream(FramedConnection):
    """An xexample server that announces goaway on its first request, then still answers
    everything in flight after a pause."""

    def __init__(self, proto, conns):
        super().__init__(proto)
        self.direction = Direction.REQUEST
        conns.append(self)
        self.count = 0

    def on_frame(self, frame, buf, start, length):
        self.count += 1
        answer = self.proto.success_response(frame).encode()
        if self.count == 1:
            goaway = self.proto.decode(bytes.fromhex("78 02 01 00000000 0000 00000000"))
            self.send(goaway.encode())
        self.loop.call_later(0.2, self.send, answer)


def test_goaway_retires_the_connection_without_failing_in_flight():
    xe = PROTOCOLS["xexample"]

    async def scenario():
        up, port = free_port(), free_port()
        conns: list = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: GoawayUpstream(xe, conns), "127.0.0.1", up)
        async with proxy_running(simple_config("xexample", port, [f"127.0.0.1:{up}"])):
            c = await client("xexample", port)

            def req(i):
                f = xe.decode(bytes.fromhex("78 01 00 00000001 00000005 68656c6c6f"))
                f.set_request_id(i)
                f.set_body(b"req-%d" % i)
                return f

            first = [c.send(req(i)) for i in range(1, 6)]
            answers = await asyncio.gather(*first)
            assert [bytes(a.get_body()) for a in answers] == [b"req-%d" % i for i in range(1, 6)]
            later = await c.call(req(9))
            assert bytes(later.get_body()) == b"req-9"
            assert len(conns) == 2  # the retired connection took no new request
            assert conns[0].count == 5 and conns[1].count == 1
        server.close()

    run(scenario())


def test_upstream_that_never_answers_gets_504_within_the_timeout():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        cfg = config(
            [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r"}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {}, "route": {"cluster": "up", "timeout_ms": 300}}]}]}],
            [{"name": "up", "endpoints": [f"127.0.0.1:{up}"]}],
        )  # fmt: skip
        async with recorder("bolt", up, seen, answer=False), proxy_running(cfg):
            c = await client("bolt", port)
            frame = bolt_request(5)
            frame.timeout = 0  # no per-frame timeout: the route's applies
            t0 = time.monotonic()
            answer = await c.call(frame)
            elapsed = time.monotonic() - t0
            assert answer.get_status() == 7 and answer.get_request_id() == 5  # bolt TIMEOUT
            assert 0.29 <= elapsed < 0.6, elapsed
            frame = bolt_request(6)
            frame.timeout = 150  # the frame's own timeout wins
            t0 = time.monotonic()
            assert (await c.call(frame)).get_status() == 7
            assert 0.14 <= time.monotonic() - t0 < 0.3

    run(scenario())


def test_closed_port_502_breaker_503_no_route_404():
    async def scenario():
        closed, slow, port = free_port(), free_port(), free_port()
        seen: list = []
        cfg = config(
            [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r"}],
            [{"name": "r", "virtual_hosts": [
                {"name": "dead", "domains": ["dead.*"], "routes": [{"match": {}, "route": {"cluster": "dead"}}]},
                {"name": "slow", "domains": ["slow.*"], "routes": [{"match": {}, "route": {"cluster": "slow"}}]}]}],
            [{"name": "dead", "endpoints": [f"127.0.0.1:{closed}"]},
             {"name": "slow", "endpoints": [f"127.0.0.1:{slow}"],
              "circuit_breakers": {"max_pending_requests": 100, "max_requests": 2}}],
        )  # fmt: skip
        async with recorder("bolt", slow, seen, delay=0.3), proxy_running(cfg):
            c = await client("bolt", port)
            dead = await c.call(bolt_request(1, service="dead.Service"))
            assert dead.get_status() == 0x10 and dead.get_request_id() == 1  # CONNECTION_CLOSED
            futures = [c.send(bolt_request(10 + i, service="slow.Service")) for i in range(4)]
            statuses = [(await f).get_status() for f in futures]
            assert statuses.count(0) == 2 and statuses.count(4) == 2  # 503 → THREADPOOL_BUSY
            nowhere = await c.call(bolt_request(3, service="unknown.Service"))
            assert nowhere.get_status() == 6 and b"404" in bytes(nowhere.get_body())  # NO_PROCESSOR

    run(scenario())


def test_no_healthy_endpoint_is_503_after_a_refused_connect():
    async def scenario():
        closed, port = free_port(), free_port()
        async with proxy_running(simple_config("bolt", port, [f"127.0.0.1:{closed}"])):
            c = await client("bolt", port)
            assert (await c.call(bolt_request(1))).get_status() == 0x10  # 502: refused
            answer = await c.call(bolt_request(2))  # the endpoint now sits out: none healthy
            assert answer.get_status() == 4 and b"503" in bytes(answer.get_body())

    run(scenario())


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except (asyncio.TimeoutError, ConnectionError):
        return False


def test_oversized_frame_slow_frame_and_idle_connections_are_closed():
    async def scenario():
        up, port = free_port(), free_port()
        cfg = simple_config("bolt", port, [f"127.0.0.1:{up}"], listener_extra={
            "max_frame_bytes": 4096, "frame_timeout_ms": 300, "idle_timeout_ms": 600})  # fmt: skip
        async with upstream("bolt", up), proxy_running(cfg):
            big = bolt_request(1, b"x" * 10000).encode()
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(big[:6000])
            assert await _closed_within(r, 2), "a frame over max_frame_bytes must close"
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(bolt_request(2).encode()[:10])  # half a header, then nothing
            t0 = time.monotonic()
            assert await _closed_within(r, 2)
            assert 0.25 <= time.monotonic() - t0 < 1.5
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(bolt_request(3).encode())
            head = await r.readexactly(20)
            assert head[0] == 1
            t0 = time.monotonic()
            await r.read(10000)
            assert await _closed_within(r, 3)
            assert 0.4 <= time.monotonic() - t0 < 2.5
            c = await client("bolt", port)  # others are unaffected
            assert (await c.call(bolt_request(4))).get_status() == 0

    run(scenario())


class BrokenExceptionUpstream(FramedConnection):
    """A thrift server whose EXCEPTION answers carry a body that is not a struct."""

    direction = Direction.REQUEST

    def on_frame(self, frame, buf, start, length):
        answer = self.proto.hijack(frame, 500)
        answer.set_request_id(frame.get_request_id())
        answer.body = b"\xff\xff\xff"  # not a TApplicationException
        self.send(answer.encode())


def test_an_answer_with_a_broken_status_part_is_still_forwarded():
    thrift = PROTOCOLS["thrift"]

    async def scenario():
        up, port = free_port(), free_port()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: BrokenExceptionUpstream(thrift), "127.0.0.1", up)
        async with proxy_running(simple_config("thrift", port, [f"127.0.0.1:{up}"])):
            c = await client("thrift", port)
            answer = await c.call(thrift_call(3, b"x"))
            assert answer.get_request_id() == 3 and bytes(answer.body) == b"\xff\xff\xff"
            assert (await c.call(thrift_call(4, b"y"))).get_request_id() == 4  # still serving
        server.close()

    run(scenario())


def test_a_header_announcing_more_than_max_frame_bytes_closes_at_once():
    async def scenario():
        up, port = free_port(), free_port()
        cfg = simple_config("bolt", port, [f"127.0.0.1:{up}"], listener_extra={
            "max_frame_bytes": 4096, "frame_timeout_ms": 30000})  # fmt: skip
        async with upstream("bolt", up), proxy_running(cfg):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            big = bolt_request(2, b"x" * 10_000_000).encode()
            w.write(big[:100])  # the head of a 10 MB frame
            t0 = time.monotonic()
            assert await _closed_within(r, 2)
            assert time.monotonic() - t0 < 1.0  # not after frame_timeout_ms, not after 4 KiB
            c = await client("bolt", port)  # the listener goes on serving
            assert (await c.call(bolt_request(3))).get_status() == 0

    run(scenario())
