"""Upstream pools over real sockets on 127.0.0.1, on the virtual-clock loop where time matters:
upstream request ids (wrap-around, ids in flight, a protocol's own id scheme), how many
connections an endpoint gets and which requests ride on which, pingpong queuing, keepalives
around requests in flight, what an upstream may send unasked (heartbeats, requests, garbage),
quiet requests and barriers, the circuit breakers' metrics and the retry budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from protoc_x.runtime.api import Direction, PoolMode, StreamType
from protoc_x.runtime.network import FramedConnection
from protoc_x.samples import SAMPLES

from .harness import PROTOCOLS, client, config, free_port, proxy_running, recorder
from .harness import no_errors_logged  # noqa: F401 (autouse: a test fails on any logged error)
from .test_proxy_behaviour import bolt_request, thrift_call
from .test_virtual_time import Stamped, bolt_untimed, now, one_cluster, sleep_until
from .virtual_clock import run_virtual

BOLT, THRIFT, MEMCACHED = PROTOCOLS["bolt"], PROTOCOLS["thrift"], PROTOCOLS["memcached"]
EPS = 1e-9


@contextlib.asynccontextmanager
async def proxy_with(data: dict, protocols: dict):
    """proxy_running with other protocol objects than the loaded ones."""
    async with proxy_running(data, protocols=protocols) as proxy:
        yield proxy


def metric(proxy, name: str, **labels) -> float | None:
    return proxy.metrics.registry.get_sample_value(name, labels)


def status(answer, proto=BOLT) -> int:
    return proto.runtime_status(answer.get_status())


def thrift_cluster(port: int, up: int, cluster=None) -> dict:
    return config(
        [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": "thrift", "route_config": "r"}],
        [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {}, "route": {"cluster": "up"}}]}]}],
        [{"name": "up", "endpoints": [f"127.0.0.1:{up}"], **(cluster or {})}],
    )  # fmt: skip


# ------------------------------------------------------------------------ upstream request ids


def test_upstream_ids_wrap_to_1_after_2_31_minus_1_and_skip_ids_still_in_flight():
    """The per-connection counter runs 1, 2, ... 2**31 - 1, then 1 again (never 0, never a
    negative int32), and an id whose request is still in flight there is skipped."""

    async def scenario():
        up, port = free_port(), free_port()
        seen = Stamped()
        slow = {0: 100.0}  # the first request stays in flight for 100 s
        async with (
            recorder("bolt", up, seen, delay=lambda n: slow.get(n, 0.0)),
            proxy_running(one_cluster(port, up, route={"timeout_ms": 1_000_000})) as proxy,
        ):
            c = await client("bolt", port)
            first = c.send(bolt_untimed(501))
            await asyncio.sleep(0.001)
            (pool,) = proxy.clusters["up"].pools.values()
            (conn,) = pool.conns
            conn.next_id = 0x7FFFFFFD
            for rid in (502, 503, 504, 505):
                answer = await c.call(bolt_untimed(rid), timeout=50)
                assert answer.get_request_id() == rid and status(answer) == 200
            assert [f.get_request_id() for f in seen] == [1, 0x7FFFFFFE, 0x7FFFFFFF, 2, 3]
            answer = await asyncio.wait_for(first, 200)
            assert answer.get_request_id() == 501 and status(answer) == 200
            conn.next_id = 0x7FFFFFFF  # wraps to 1, free now
            assert (await c.call(bolt_untimed(506), timeout=50)).get_request_id() == 506
            assert seen[-1].get_request_id() == 1

    run_virtual(scenario())


class SpacedBolt(type(BOLT)):
    """bolt with an id scheme of its own: the counter times 10, and 30 taken by nobody."""

    def generate_request_id(self, counter: int) -> int:
        return counter * 10


def test_a_protocols_own_id_scheme_gives_the_upstream_ids_and_answers_keep_client_ids():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        protocols = {**PROTOCOLS, "bolt": SpacedBolt()}
        slow = {0: 50.0}
        async with (
            recorder("bolt", up, seen, delay=lambda n: slow.get(n, 0.0)),
            proxy_with(one_cluster(port, up, route={"timeout_ms": 1_000_000}), protocols) as proxy,
        ):
            c = await client("bolt", port)
            first = c.send(bolt_untimed(7))
            await asyncio.sleep(0.001)
            for rid in (8, 9):
                assert (await c.call(bolt_untimed(rid), timeout=20)).get_request_id() == rid
            (pool,) = proxy.clusters["up"].pools.values()
            (conn,) = pool.conns
            conn.next_id = 0  # the scheme hands out 10 again: in flight, so 20
            assert (await c.call(bolt_untimed(10), timeout=20)).get_request_id() == 10
            assert [f.get_request_id() for f in seen] == [10, 20, 30, 20]
            assert (await asyncio.wait_for(first, 100)).get_request_id() == 7

    run_virtual(scenario())


# ------------------------------------------------------------------- connections per endpoint


class PerConnection(FramedConnection):
    """A bolt/thrift upstream that answers at once and counts requests per connection."""

    direction = Direction.REQUEST

    def __init__(self, proto, counts: list):
        super().__init__(proto)
        self.index = len(counts)
        counts.append(0)
        self.counts = counts

    def on_frame(self, frame, buf, start, length):
        self.counts[self.index] += 1
        if frame.get_stream_type() is StreamType.ONEWAY:
            return
        answer = self.proto.reply(frame) if frame.is_heartbeat() else None
        answer = answer or self.proto.success_response(frame)
        self.send(answer.encode())


@contextlib.asynccontextmanager
async def counting(protocol: str, port: int, counts: list):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: PerConnection(PROTOCOLS[protocol], counts), "127.0.0.1", port
    )
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize(
    "max_connections, one_by_one, all_at_once",
    [
        # the default for a multiplex protocol: one connection carries everything
        (None, [[k] for k in range(1, 13)], [[12], [24]]),
        # up to 3: a new one is opened (the request that asked for it waits for it) while
        # there are fewer, and requests go round robin over those that are up
        (3, [[1, 0], [1, 0, 1], [2, 0, 1], [2, 1, 1], [2, 1, 2], [3, 1, 2], [3, 2, 2],
             [3, 2, 3], [4, 2, 3], [4, 3, 3], [4, 3, 4], [5, 3, 4]],
         [[12, 0], [18, 6, 0]]),
    ],
    ids=["default", "max-3"],
)  # fmt: skip
def test_multiplex_connections_per_endpoint_and_the_requests_each_carries(
    max_connections, one_by_one, all_at_once
):
    """Requests per upstream connection after each request (one at a time), then after each
    batch of twelve sent at once."""

    async def scenario(sequential: bool):
        up, port = free_port(), free_port()
        counts: list = []
        cluster = {"max_connections": max_connections} if max_connections else {}
        async with counting("bolt", up, counts), proxy_running(one_cluster(port, up, cluster)):
            c = await client("bolt", port)
            after = []
            if sequential:
                for i in range(12):
                    assert (await c.call(bolt_untimed(i + 1))).get_request_id() == i + 1
                    after.append(list(counts))
            else:
                for batch in range(2):
                    ids = [100 * batch + i for i in range(1, 13)]
                    answers = await asyncio.wait_for(
                        asyncio.gather(*[c.send(bolt_untimed(i)) for i in ids]), 60
                    )
                    assert [a.get_request_id() for a in answers] == ids
                    after.append(list(counts))
            return after

    assert run_virtual(scenario(True)) == one_by_one
    assert run_virtual(scenario(False)) == all_at_once


@pytest.mark.parametrize("max_connections, expected", [(None, 5), (2, 2), (1, 1)])
def test_pingpong_opens_a_connection_per_concurrent_request_up_to_max_connections(
    max_connections, expected
):
    """Five clients call at once, three times each: a pingpong endpoint opens one connection
    per request waiting (1024 by default), never more than max_connections; the others wait
    for a free one, and a free one is reused rather than a new one opened."""

    async def scenario():
        up, port = free_port(), free_port()
        counts: list = []
        cluster = {"max_connections": max_connections} if max_connections else {}
        async with counting("thrift", up, counts), proxy_running(thrift_cluster(port, up, cluster)):
            clients = [await client("thrift", port) for _ in range(5)]

            async def calls(ci, c):
                for k in range(3):
                    text = b"c%d-%d" % (ci, k)
                    answer = await c.call(thrift_call(k, text))
                    assert answer.get_request_id() == k and text in bytes(answer.get_body())

            await asyncio.wait_for(
                asyncio.gather(*(calls(i, c) for i, c in enumerate(clients))), 60
            )
            assert len(counts) == expected and sum(counts) == 15
            # now idle: five more, one at a time, reuse what is there
            for k in range(5):
                await clients[k].call(thrift_call(9, b"again"))
            assert len(counts) == expected and sum(counts) == 20

    run_virtual(scenario())


def test_a_pingpong_oneway_frees_its_connection_at_once():
    """thrift oneway: nothing comes back, so the connection serves the next call at once."""

    async def scenario():
        up, port = free_port(), free_port()
        counts: list = []
        async with counting("thrift", up, counts), proxy_running(thrift_cluster(port, up)) as proxy:
            c = await client("thrift", port)
            await c.call(thrift_call(0, b"warm"))  # one connection, idle
            for k in range(3):
                oneway = thrift_call(k, b"fire")
                oneway.type = 4  # ONEWAY
                assert oneway.get_stream_type() is StreamType.ONEWAY
                assert c.send(oneway) is None
                answer = await c.call(thrift_call(k, b"call-%d" % k))
                assert b"call-%d" % k in bytes(answer.get_body())
            assert counts == [7]
            assert metric(proxy, "protocx_pool_active_requests", cluster="up") == 0

    run_virtual(scenario())


# ------------------------------------------------------------------------------- keepalives

KEEPALIVE = {"keepalive": {"interval_ms": 15_000, "timeout_ms": 1_000, "failures": 2}}


def test_no_keepalive_while_a_request_is_in_flight_and_the_next_counts_from_its_answer():
    """A request in flight for 100 s: the ticks at 15, 30, ... 90 s send nothing (it has its
    own timeout); its answer is read at 100 s, so the next heartbeat is at 115 s, and every
    15 s from there."""

    async def scenario():
        up, port = free_port(), free_port()
        seen = Stamped()
        slow = {0: 100.0}
        async with (
            recorder("bolt", up, seen, delay=lambda n: slow.get(n, 0.0)),
            proxy_running(one_cluster(port, up, KEEPALIVE, route={"timeout_ms": 500_000})),
        ):
            c = await client("bolt", port)
            t0 = now()
            answer = await c.call(bolt_untimed(1), timeout=200)
            assert status(answer) == 200 and now() - t0 == pytest.approx(100, abs=EPS)
            await sleep_until(t0 + 160.5)
            assert [round(t - t0, 6) for t in seen.heartbeats()] == [115.0, 130.0, 145.0, 160.0]

    run_virtual(scenario())


def test_a_protocol_without_a_heartbeat_gets_no_keepalive_and_keeps_its_connection():
    """thrift has no heartbeat frame: an idle connection is left alone (500 s: 33 ticks)."""

    async def scenario():
        up, port = free_port(), free_port()
        seen = Stamped()
        async with (
            recorder("thrift", up, seen) as server,
            proxy_running(thrift_cluster(port, up, KEEPALIVE)),
        ):
            c = await client("thrift", port)
            await c.call(thrift_call(1, b"a"))
            await asyncio.sleep(500)
            assert len(seen) == 1 and not server.conns[0].closed
            await c.call(thrift_call(2, b"b"))
            assert len(seen) == 2 and len(server.conns) == 1

    run_virtual(scenario())


def test_a_keepalive_answered_late_still_counts_as_missed_and_two_misses_close(caplog):
    """timeout 1 s, failures 2: a heartbeat answered 1.5 s late is a miss (its late answer
    does not reset the count); the second miss closes the connection 1 s after its heartbeat,
    and the next request opens a new one."""

    async def scenario():
        up, port = free_port(), free_port()
        seen = Stamped()
        async with (
            recorder("bolt", up, seen, delay=lambda n: 1.5 if n else 0.0) as server,
            proxy_running(one_cluster(port, up, KEEPALIVE)) as proxy,
        ):
            c = await client("bolt", port)
            await c.call(bolt_untimed(1))
            t0 = now()
            (pool,) = proxy.clusters["up"].pools.values()
            (conn,) = pool.conns
            assert metric(proxy, "protocx_upstream_connections", cluster="up",
                          endpoint=f"127.0.0.1:{up}") == 1  # fmt: skip
            await sleep_until(t0 + 15 + 1.2)  # the first heartbeat's answer is late
            assert conn.keepalive_failures == 1 and not conn.closed
            await sleep_until(t0 + 15 + 1.5 + 15 + 1 - 0.001)
            assert not conn.closed
            await sleep_until(t0 + 15 + 1.5 + 15 + 1)
            assert conn.closed and pool.conns == []
            assert [round(t - t0, 6) for t in seen.heartbeats()] == [15.0, 31.5]
            assert metric(proxy, "protocx_upstream_connections", cluster="up",
                          endpoint=f"127.0.0.1:{up}") == 0  # fmt: skip
            answer = await c.call(bolt_untimed(2), timeout=20)
            assert status(answer) == 200 and len(server.conns) == 2
            return up

    caplog.set_level(logging.WARNING, "protoc_x")
    up = run_virtual(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        f"upstream 127.0.0.1:{up} missed 2 keepalives: closing"
    ]


# ------------------------------------------------------------- what an upstream sends unasked


class Talkative(FramedConnection):
    """A bolt upstream that, before answering the n-th request it sees (from 0, over all its
    connections), sends the proxy what ``before(n)`` gives (bytes), and answers it only if
    ``answer(n)``."""

    direction = Direction.REQUEST

    def __init__(self, before, answer, seen: list):
        super().__init__(BOLT)
        self.before = before
        self.answer = answer
        self.seen = seen

    def on_frame(self, frame, buf, start, length):
        self.seen.append(frame)
        if frame.get_stream_type() is StreamType.RESPONSE:
            return
        n = sum(1 for f in self.seen if f.get_stream_type() is not StreamType.RESPONSE) - 1
        extra = self.before(n)
        if extra:
            self.send(extra)
        if self.answer(n):
            self.send(BOLT.success_response(frame).encode())


@contextlib.asynccontextmanager
async def talkative(port: int, seen: list, before=lambda n: None, answer=lambda n: True):
    loop = asyncio.get_running_loop()
    conns: list = []

    def factory():
        conns.append(Talkative(before, answer, seen))
        return conns[-1]

    server = await loop.create_server(factory, "127.0.0.1", port)
    try:
        yield conns
    finally:
        server.close()


def test_an_upstreams_heartbeat_is_answered_and_its_other_requests_are_dropped(caplog):
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        extra = {0: BOLT.trigger(4242).encode(), 1: bolt_request(77).encode()}
        async with (
            talkative(up, seen, before=extra.get) as conns,
            proxy_running(one_cluster(port, up)),
        ):
            c = await client("bolt", port)
            for rid in (10, 11, 12):
                answer = await c.call(bolt_untimed(rid))
                assert answer.get_request_id() == rid and status(answer) == 200
            replies = [f for f in seen if f.get_stream_type() is StreamType.RESPONSE]
            assert len(replies) == 1 and replies[0].is_heartbeat()
            assert replies[0].get_request_id() == 4242
            assert len(seen) == 4 and len(conns) == 1 and not conns[0].closed
            return up

    caplog.set_level(logging.WARNING, "protoc_x")
    up = run_virtual(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        f"upstream 127.0.0.1:{up} sent a request frame; dropped"
    ]


def test_undecodable_bytes_from_an_upstream_fail_its_requests_with_502_and_close_it(caplog):
    """Garbage instead of an answer: every request in flight on that connection gets 502,
    the connection is closed (its gauge goes to 0), and the next request opens a new one."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        garbage = {2: b"\xff" * 64}
        async with (
            talkative(up, seen, before=garbage.get, answer=lambda n: n > 2) as conns,
            proxy_running(one_cluster(port, up)) as proxy,
        ):  # fmt: skip
            c = await client("bolt", port)
            futures = [c.send(bolt_untimed(rid)) for rid in (1, 2, 3)]
            answers = await asyncio.wait_for(asyncio.gather(*futures), 60)
            assert [(a.get_request_id(), status(a)) for a in answers] == [
                (1, 502),
                (2, 502),
                (3, 502),
            ]
            await asyncio.sleep(0.01)
            assert conns[0].closed
            endpoint = f"127.0.0.1:{up}"
            assert metric(proxy, "protocx_upstream_connections", cluster="up",
                          endpoint=endpoint) == 0  # fmt: skip
            assert metric(proxy, "protocx_pool_active_requests", cluster="up") == 0
            answer = await c.call(bolt_untimed(4))
            assert status(answer) == 200 and len(conns) == 2
            assert metric(proxy, "protocx_upstream_connections", cluster="up",
                          endpoint=endpoint) == 1  # fmt: skip
            return up

    caplog.set_level(logging.WARNING, "protoc_x")
    up = run_virtual(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        f"upstream 127.0.0.1:{up} sent undecodable bytes: offset 0: proto: expected 0x1, got 0xff"
    ]


# ------------------------------------------------------------------ quiet requests, barriers

GET, GETK, GETKQ, NOOP, SET, SETQ = 0x00, 0x0C, 0x0D, 0x0A, 0x01, 0x11


def mc(opcode: int, key: bytes = b"", opaque: int = 0, value: bytes = b""):
    frame = MEMCACHED.decode(
        next(s.data for s in SAMPLES if s.protocol == "memcached" and s.name == "GET foo")
    )
    frame.opcode = opcode
    frame.key = key
    frame.value = value
    frame.opaque = opaque
    return frame


class FakeMemcached(FramedConnection):
    """memcached's binary protocol as far as these tests go: a quiet get of a missing key and
    a quiet set say nothing; ``close_on`` (a key) closes the connection instead of answering."""

    direction = Direction.REQUEST

    def __init__(self, store: dict, seen: list, close_on=None, delay=0.0):
        super().__init__(MEMCACHED)
        self.store = store
        self.seen = seen
        self.close_on = close_on
        self.delay = delay  # seconds before each answer

    def send(self, data) -> None:
        if self.delay:
            self.loop.call_later(self.delay, super().send, data)
        else:
            super().send(data)

    def on_frame(self, frame, buf, start, length):
        op, key = frame.opcode, bytes(frame.key)
        self.seen.append((op, key))
        if key == self.close_on:
            self.abort()
            return
        if op == NOOP:
            self.send(MEMCACHED.reply(frame).encode())
            return
        if op in (SET, SETQ):
            self.store[key] = bytes(frame.value)
            if op == SETQ:
                return
            answer = MEMCACHED.success_response(frame)
            answer.value = b""
        elif key in self.store:
            answer = MEMCACHED.success_response(frame)
            answer.value = self.store[key]
        elif op == GETKQ:
            return
        else:
            answer = MEMCACHED.hijack(frame, 404)
        self.send(answer.encode())


@contextlib.asynccontextmanager
async def fake_memcached(port: int, store: dict, seen: list, **kw):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeMemcached(store, seen, **kw), "127.0.0.1", port)
    try:
        yield server
    finally:
        server.close()


class RawClient:
    """Bytes out, response frames in: a memcached client that expects nothing for a quiet
    request (the codec client would wait for an answer to each)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.buf = b""

    @classmethod
    async def connect(cls, port: int) -> "RawClient":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, *frames) -> None:
        self.writer.write(b"".join(f.encode() for f in frames))

    async def frames(self, count: int, timeout: float = 100) -> list:
        """The next ``count`` answers, as (opcode, opaque, status, key, value)."""
        out = []
        while len(out) < count:
            frame = MEMCACHED.decode(self.buf, 0, Direction.RESPONSE) if self.buf else None
            if frame is None:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                assert data, "connection closed"
                self.buf += data
                continue
            self.buf = self.buf[frame.length :]
            out.append((frame.opcode, frame.opaque, frame.status, bytes(frame.key),
                        bytes(frame.value)))  # fmt: skip
        return out

    async def nothing_more(self, seconds: float = 5) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), seconds)
        except asyncio.TimeoutError:
            return not self.buf
        return False if data else not self.buf


def mc_cluster(port: int, ups: list, cluster=None) -> dict:
    return config(
        [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": "memcached", "route_config": "r"}],
        [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {}, "route": {"cluster": "up"}}]}]}],
        [{"name": "up", "endpoints": [f"127.0.0.1:{p}" for p in ups], "request_timeout_ms": 30_000,
          **(cluster or {})}],
    )  # fmt: skip


def test_quiet_gets_complete_silently_before_a_later_answer_on_one_connection():
    """A miss of a quiet get says nothing; the answer to a later request on the same
    connection tells the proxy it is complete. The client gets the hits, in order, at once."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        store = {b"b": b"B", b"c": b"C"}
        async with fake_memcached(up, store, seen), proxy_running(mc_cluster(port, [up])) as proxy:
            c = await RawClient.connect(port)
            t0 = now()
            c.send(mc(GETKQ, b"a", 1), mc(GETKQ, b"b", 2), mc(GETKQ, b"x", 3), mc(GETK, b"c", 4))
            assert await c.frames(2) == [(GETKQ, 2, 0, b"b", b"B"), (GETK, 4, 0, b"c", b"C")]
            assert now() == t0
            assert seen == [(GETKQ, b"a"), (GETKQ, b"b"), (GETKQ, b"x"), (GETK, b"c")]
            assert metric(proxy, "protocx_pool_active_requests", cluster="up") == 0
            # a NOOP after quiet requests is their barrier: it goes upstream, and is answered
            c.send(mc(GETKQ, b"y", 5), mc(NOOP, b"", 6))
            assert await c.frames(1) == [(NOOP, 6, 0, b"", b"")]
            assert seen[4:] == [(GETKQ, b"y"), (NOOP, b"")] and now() == t0
            # with nothing quiet pending, the proxy answers a NOOP itself
            c.send(mc(NOOP, b"", 7))
            assert await c.frames(1) == [(NOOP, 7, 0, b"", b"")]
            assert len(seen) == 6
            assert await c.nothing_more()

    run_virtual(scenario())


def test_a_quiet_request_nobody_answers_completes_silently_at_its_timeout():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with fake_memcached(up, {b"k": b"V"}, seen), proxy_running(mc_cluster(port, [up])):
            c = await RawClient.connect(port)
            c.send(mc(GETKQ, b"miss", 1))
            assert await c.nothing_more(40)  # past its 30 s: no answer, no error
            c.send(mc(GETK, b"k", 2))
            assert await c.frames(1) == [(GETK, 2, 0, b"k", b"V")]
            assert seen == [(GETKQ, b"miss"), (GETK, b"k")]

    run_virtual(scenario())


def test_an_upstream_closing_completes_quiet_requests_silently_and_fails_the_others():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with (
            fake_memcached(up, {}, seen, close_on=b"boom"),
            proxy_running(mc_cluster(port, [up])),
        ):
            c = await RawClient.connect(port)
            t0 = now()
            c.send(mc(SETQ, b"q", 1, b"v"), mc(GETK, b"boom", 2))
            ((op, opaque, code, _, _),) = await c.frames(1)
            assert (op, opaque) == (GETK, 2) and MEMCACHED.runtime_status(code) == 502
            assert now() == t0 and await c.nothing_more()
            c.send(mc(GETK, b"q", 3))  # a new connection: the quiet set was done
            assert await c.frames(1) == [(GETK, 3, 0, b"q", b"v")]

    run_virtual(scenario())


def test_a_quiet_request_on_another_endpoint_gets_a_barrier_there():
    """hash:key over two endpoints: quiet gets on A, then a get on B. B's answer may not
    reach the client before A's quiet ones are known complete, so the proxy sends A a NOOP
    of its own right after the get went to B; A's answer to it completes them (nothing of
    it reaches the client) and the client has its answers at once, in order."""
    from protoc_x.runtime.router import ConsistentHash

    async def scenario():
        a, b, port = free_port(), free_port(), free_port()
        eps = [f"127.0.0.1:{a}", f"127.0.0.1:{b}"]
        ring = ConsistentHash(eps)
        on_a = [k for k in (b"k%d" % i for i in range(200)) if ring.pick(k.decode()) == eps[0]]
        on_b = [k for k in (b"k%d" % i for i in range(200)) if ring.pick(k.decode()) == eps[1]]
        seen_a, seen_b = [], []
        store = {on_a[1]: b"A1", on_b[0]: b"B0"}
        async with (
            fake_memcached(a, store, seen_a),
            fake_memcached(b, store, seen_b),
            proxy_running(mc_cluster(port, [a, b], {"lb_policy": "hash:key"})),
        ):
            c = await RawClient.connect(port)
            t0 = now()
            # two misses on A: only the barrier's answer completes them
            c.send(mc(GETKQ, on_a[0], 1), mc(GETKQ, on_a[2], 2), mc(GETK, on_b[0], 3))
            assert await c.frames(1) == [(GETK, 3, 0, on_b[0], b"B0")]
            assert now() == t0
            assert seen_a == [(GETKQ, on_a[0]), (GETKQ, on_a[2]), (NOOP, b"")]
            assert seen_b == [(GETK, on_b[0])]
            # a miss and a hit on A
            c.send(mc(GETKQ, on_a[0], 4), mc(GETKQ, on_a[1], 5), mc(GETK, on_b[0], 6))
            assert await c.frames(2) == [
                (GETKQ, 5, 0, on_a[1], b"A1"),
                (GETK, 6, 0, on_b[0], b"B0"),
            ]
            assert now() == t0
            assert seen_a[3:] == [(GETKQ, on_a[0]), (GETKQ, on_a[1]), (NOOP, b"")]
            # nothing quiet pending any more: the next get on B needs no barrier
            c.send(mc(GETK, on_b[0], 7))
            assert await c.frames(1) == [(GETK, 7, 0, on_b[0], b"B0")]
            assert len(seen_a) == 6 and len(seen_b) == 3
            assert await c.nothing_more()

    run_virtual(scenario())


# ------------------------------------------------------- retries, breakers, balancing, counts


def two_endpoints(port: int, dead: int, good: int, cluster=None, route=None) -> dict:
    """bolt, hash:x-key over a dead endpoint and a good one."""
    return config(
        [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r"}],
        [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {}, "route": {"cluster": "up", "timeout_ms": 60_000, **(route or {})}}]}]}],
        [{"name": "up", "endpoints": [f"127.0.0.1:{dead}", f"127.0.0.1:{good}"],
          "lb_policy": "hash:x-key", **(cluster or {})}],
    )  # fmt: skip


def keyed(rid: int, key: str):
    frame = bolt_request(rid, **{"x-key": key})
    frame.timeout = 0  # the route's timeout applies
    return frame


def key_on(port: int, endpoints: list[str]) -> str:
    from protoc_x.runtime.router import ConsistentHash

    ring = ConsistentHash(endpoints)
    return next(f"k{i}" for i in range(1000) if ring.pick(f"k{i}") == f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    "budget, retried, n",
    [
        (None, 3, 10),
        (None, 4, 20),
        ({"percent": 20.0}, 3, 10),
        ({"percent": 50.0}, 5, 10),
        ({"percent": 70.0}, 7, 10),
        ({"percent": 100.0}, 110, 110),
        ({"percent": 20.0, "min_concurrency": 6}, 6, 10),
        ({"percent": 10.0, "min_concurrency": 0}, 1, 10),
    ],  # (20 at the default 20 %: 4)
)
def test_the_retry_budget_bounds_retries_in_progress(budget, retried, n):
    """Ten requests at once to a refused endpoint, each allowed a retry: retries in progress
    (retried, not answered yet: the good endpoint answers after 10 s) stay under percent of the
    ten active requests, at least min_concurrency (3); the others get 502 at once. Once the
    retries are answered the budget is free again."""

    async def scenario():
        dead, good, port = free_port(), free_port(), free_port()
        eps = [f"127.0.0.1:{dead}", f"127.0.0.1:{good}"]
        key = key_on(dead, eps)
        cluster = {"retry_budget": budget} if budget else {}
        seen: list = []
        async with (
            recorder("bolt", good, seen, delay=10.0),
            proxy_running(two_endpoints(port, dead, good, cluster, {"retries": 1})) as proxy,
        ):
            c = await client("bolt", port)
            for batch in range(2):
                t0 = now()
                futures = [c.send(keyed(1000 * batch + i, key)) for i in range(n)]
                answered = {}
                for i, fut in enumerate(futures):
                    fut.add_done_callback(lambda f, i=i: answered.setdefault(i, now() - t0))
                answers = await asyncio.wait_for(asyncio.gather(*futures), 60)
                codes = [status(a) for a in answers]
                assert codes == [200] * retried + [502] * (n - retried), codes
                assert [round(answered[i], 6) for i in range(n)] == [10.0] * retried + [0.0] * (
                    n - retried
                )
                assert len(seen) == retried * (batch + 1)
                assert metric(proxy, "protocx_retries_total", cluster="up") == retried * (batch + 1)
                await asyncio.sleep(2)  # the dead endpoint's time out of rotation is over

    run_virtual(scenario())


@pytest.mark.parametrize("breaker", ["max_requests", "max_pending_requests"])
def test_circuit_breakers_refuse_over_their_limit_with_503_and_count_it(breaker):
    """Four requests at once, a breaker of 2: two go through, two get 503 at once, counted as
    that breaker's overflow. max_requests counts requests in flight upstream (the upstream
    answers after 10 s); max_pending_requests those waiting for the first connection."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        cluster = {"circuit_breakers": {breaker: 2}, "request_timeout_ms": 60_000}
        async with (
            recorder("bolt", up, seen, delay=10.0),
            proxy_running(one_cluster(port, up, cluster)) as proxy,
        ):
            c = await client("bolt", port)
            t0 = now()
            futures = [c.send(bolt_untimed(i)) for i in range(1, 5)]
            done = {}
            for i, fut in enumerate(futures):
                fut.add_done_callback(lambda f, i=i: done.setdefault(i, now() - t0))
            await asyncio.sleep(1)
            assert sorted(done) == [2, 3] and set(done.values()) == {0.0}
            assert metric(proxy, "protocx_pool_active_requests", cluster="up") == 2
            assert metric(proxy, "protocx_pool_pending_requests", cluster="up") == 0
            answers = await asyncio.wait_for(asyncio.gather(*futures), 60)
            assert [status(a) for a in answers] == [200, 200, 503, 503]
            assert b"503 circuit breaker open" in bytes(answers[2].get_body())
            assert len(seen) == 2
            other = ({"max_requests", "max_pending_requests"} - {breaker}).pop()
            assert metric(proxy, "protocx_circuit_breaker_overflow_total", cluster="up",
                          breaker=breaker) == 2  # fmt: skip
            assert metric(proxy, "protocx_circuit_breaker_overflow_total", cluster="up",
                          breaker=other) is None  # fmt: skip
            assert metric(proxy, "protocx_pool_active_requests", cluster="up") == 0
            # the breaker lets requests through again
            assert status(await c.call(bolt_untimed(9), timeout=20)) == 200

    run_virtual(scenario())


def test_pending_requests_are_counted_while_the_first_connection_is_made():
    async def scenario():
        up, port = free_port(), free_port()
        async with recorder("bolt", up, []), proxy_running(one_cluster(port, up)) as proxy:
            c = await client("bolt", port)
            futures = [c.send(bolt_untimed(i)) for i in range(1, 4)]
            cluster = proxy.clusters["up"]
            while metric(proxy, "protocx_pool_active_requests", cluster="up") < 3:
                await asyncio.sleep(0)  # until the proxy has read them (in one read)
            counts = (cluster.pending, metric(proxy, "protocx_pool_pending_requests", cluster="up"))
            await asyncio.wait_for(asyncio.gather(*futures), 20)
            assert counts == (3, 3)
            assert metric(proxy, "protocx_pool_pending_requests", cluster="up") == 0

    run_virtual(scenario())


def test_oneway_requests_are_not_counted_as_active():
    """max_requests 1: oneways (never answered) do not hold the breaker's only place."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        cluster = {"circuit_breakers": {"max_requests": 1}}
        async with recorder("bolt", up, seen), proxy_running(one_cluster(port, up, cluster)) as p:
            c = await client("bolt", port)
            await c.call(bolt_untimed(1))
            for i in range(3):
                oneway = bolt_untimed(10 + i)
                oneway.kind = 2
                assert c.send(oneway) is None
            await asyncio.sleep(1)
            assert len(seen) == 4
            assert metric(p, "protocx_pool_active_requests", cluster="up") == 0
            assert status(await c.call(bolt_untimed(2))) == 200 and len(seen) == 5

    run_virtual(scenario())


def test_least_request_sends_to_the_endpoint_with_fewer_requests_in_flight():
    async def scenario():
        a, b, port = free_port(), free_port(), free_port()
        cfg = one_cluster(port, a, {"lb_policy": "least_request", "request_timeout_ms": 60_000})
        cfg["clusters"][0]["endpoints"].append(f"127.0.0.1:{b}")
        seen_a, seen_b = [], []
        async with (
            recorder("bolt", a, seen_a, delay=10.0),
            recorder("bolt", b, seen_b),
            proxy_running(cfg),
        ):
            c = await client("bolt", port)
            slow = c.send(bolt_untimed(1))  # to a (ties go round robin, from the first)
            for i in range(2, 6):
                assert status(await c.call(bolt_untimed(i))) == 200
            assert (len(seen_a), len(seen_b)) == (1, 4)
            assert status(await asyncio.wait_for(slow, 20)) == 200
            for i in range(6, 10):  # both idle again: round robin (a answers in 10 s)
                assert status(await c.call(bolt_untimed(i), timeout=30)) == 200
            assert (len(seen_a), len(seen_b)) == (3, 6)

    run_virtual(scenario())


# --------------------------------------------- pingpong keepalives, goaway, forgotten requests

XE = PROTOCOLS["xexample"]


class PingpongXexample(type(XE)):
    """xexample (heartbeats, goaway) served one request per connection at a time."""

    pool_mode = PoolMode.PINGPONG


def xe_request(rid: int, body: bytes = b"hello"):
    frame = XE.decode(bytes.fromhex("78 01 00 00000001 00000005 68656c6c6f"))
    frame.set_request_id(rid)
    frame.set_body(body)
    return frame


def xe_cluster(port: int, up: int, cluster=None) -> dict:
    return config(
        [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": "xexample", "route_config": "r"}],
        [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {}, "route": {"cluster": "up", "timeout_ms": 60_000}}]}]}],
        [{"name": "up", "endpoints": [f"127.0.0.1:{up}"], **(cluster or {})}],
    )  # fmt: skip


def test_a_pingpong_connections_answered_keepalives_keep_it_and_a_miss_closes_it():
    """On a pingpong connection a heartbeat of ours is a request like any other: while it is
    out the connection serves nobody else (a request then gets another connection), its
    answer frees it; one missed (the answer would still be owed) closes it."""

    async def scenario():
        up, port = free_port(), free_port()
        seen = Stamped()
        protocols = {**PROTOCOLS, "xexample": PingpongXexample()}
        async with (
            recorder("xexample", up, seen, delay=lambda n: 0.5 if n == 1 else 0.0) as server,
            proxy_with(xe_cluster(port, up, KEEPALIVE), protocols),
        ):
            c = await client("xexample", port)
            assert bytes((await c.call(xe_request(1, b"one"))).get_body()) == b"one"
            t0 = now()
            await sleep_until(t0 + 15.25)  # the heartbeat at 15 s is answered at 15.5 s
            assert seen.heartbeats() == [t0 + 15.0]
            answer = await c.call(xe_request(2, b"two"), timeout=5)
            assert bytes(answer.get_body()) == b"two" and not answer.is_heartbeat()
            assert len(server.conns) == 2  # the first was busy with the heartbeat
            await sleep_until(t0 + 100)
            assert not server.conns[0].closed and not server.conns[1].closed
            beats = [round(t - t0, 6) for t in seen.heartbeats()]
            # the first connection read last at 15.5 s, the second at 15.25 s
            assert beats == [15.0] + sorted(
                [15.5 + 15 * k for k in range(1, 6)] + [15.25 + 15 * k for k in range(1, 6)]
            )
            for conn in server.conns:
                conn.answer = False
            await sleep_until(t0 + 200)
            assert server.conns[0].closed and server.conns[1].closed

    run_virtual(scenario())


class Goaway(FramedConnection):
    """An xexample upstream: answers after ``delay`` s; a request whose body is b"bye" is
    followed at once by a goaway (before its answer, or after it with ``after``)."""

    direction = Direction.REQUEST

    def __init__(self, conns: list, delay: float, after: bool):
        super().__init__(XE)
        conns.append(self)
        self.delay, self.after = delay, after
        self.count = 0

    def on_frame(self, frame, buf, start, length):
        self.count += 1
        answer = XE.success_response(frame).encode()
        goaway = XE.decode(bytes.fromhex("78 02 01 00000000 0000 00000000")).encode()
        bye = bytes(frame.get_body()) == b"bye"
        if bye and not self.after:
            self.send(goaway)
        if self.delay:
            self.loop.call_later(self.delay, self.send, answer)
        else:
            self.send(answer)
        if bye and self.after:
            self.send(goaway)


@contextlib.asynccontextmanager
async def goaway_upstream(port: int, conns: list, delay=0.0, after=False):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Goaway(conns, delay, after), "127.0.0.1", port)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("protocol", ["xexample", "pingpong"])
def test_goaway_with_requests_in_flight_sends_new_ones_elsewhere_and_closes_when_answered(
    protocol,
):
    async def scenario():
        up, port = free_port(), free_port()
        conns: list = []
        protocols = (
            {**PROTOCOLS, "xexample": PingpongXexample()} if protocol != "xexample" else PROTOCOLS
        )
        async with (
            goaway_upstream(up, conns, delay=1.0),
            proxy_with(xe_cluster(port, up), protocols),
        ):
            c = await client("xexample", port)
            t0 = now()
            first = c.send(xe_request(1, b"bye"))
            await asyncio.sleep(0.5)  # the goaway came; the answer is due at 1 s
            answer = await c.call(xe_request(2, b"two"), timeout=5)
            assert bytes(answer.get_body()) == b"two" and now() - t0 == pytest.approx(1.5)
            assert len(conns) == 2 and [k.count for k in conns] == [1, 1]
            assert bytes((await first).get_body()) == b"bye"
            await asyncio.sleep(0.01)
            assert conns[0].closed and not conns[1].closed  # closed once answered
            assert bytes((await c.call(xe_request(3, b"three"))).get_body()) == b"three"
            assert [k.count for k in conns] == [1, 2]

    run_virtual(scenario())


@pytest.mark.parametrize("protocol", ["xexample", "pingpong"])
def test_goaway_on_an_idle_connection_closes_it_at_once(protocol):
    async def scenario():
        up, port = free_port(), free_port()
        conns: list = []
        protocols = (
            {**PROTOCOLS, "xexample": PingpongXexample()} if protocol != "xexample" else PROTOCOLS
        )
        async with (
            goaway_upstream(up, conns, after=True),
            proxy_with(xe_cluster(port, up), protocols),
        ):
            c = await client("xexample", port)
            assert bytes((await c.call(xe_request(1, b"bye"))).get_body()) == b"bye"
            await asyncio.sleep(0.01)
            assert conns[0].closed
            assert bytes((await c.call(xe_request(2, b"two"))).get_body()) == b"two"
            assert len(conns) == 2 and not conns[1].closed

    run_virtual(scenario())


def test_a_timed_out_request_is_forgotten_so_keepalives_resume():
    """A multiplexed request times out at 5 s; its upstream never answers: the connection is
    idle again from then, so heartbeats go out 15 s after the last read."""

    async def scenario():
        up, port = free_port(), free_port()
        seen = Stamped()
        async with (
            recorder("bolt", up, seen, delay=lambda n: 10_000.0 if n == 1 else 0.0),
            proxy_running(one_cluster(port, up, KEEPALIVE, route={"timeout_ms": 5_000})),
        ):
            c = await client("bolt", port)
            await c.call(bolt_untimed(1))
            t0 = now()
            answer = await c.call(bolt_untimed(2), timeout=20)
            assert status(answer) == 504 and 5.0 <= now() - t0 <= 5.01
            await sleep_until(t0 + 40)
            assert [round(t - t0, 6) for t in seen.heartbeats()] == [15.0, 30.0]

    run_virtual(scenario())


def test_a_timed_out_pingpong_request_closes_its_connection():
    """A pingpong connection still owes the answer of a request that timed out: it cannot
    serve anyone else, so it is closed, and the next request gets a new one."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with (
            recorder("thrift", up, seen, delay=lambda n: 10_000.0 if n == 1 else 0.0) as server,
            proxy_running(thrift_cluster(port, up, {"request_timeout_ms": 5_000})),
        ):
            c = await client("thrift", port)
            await c.call(thrift_call(1, b"a"))
            answer = await c.call(thrift_call(2, b"b"), timeout=20)
            assert answer.get_status() == THRIFT.map_status(504) and b"504" in bytes(answer.body)
            await asyncio.sleep(0.01)
            assert server.conns[0].closed
            answer = await c.call(thrift_call(3, b"c"))
            assert b"c" in bytes(answer.get_body()) and len(server.conns) == 2

    run_virtual(scenario())


# ----------------------------------------------------------------------------- backpressure


class Stalled(FramedConnection):
    """A bolt upstream that reads nothing until ``resume()``, then answers everything."""

    direction = Direction.REQUEST

    def __init__(self, conns: list):
        super().__init__(BOLT)
        conns.append(self)
        self.count = 0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.loop.call_soon(transport.pause_reading)  # (uvloop starts reading after this)

    def resume(self) -> None:
        self.transport.resume_reading()

    def on_frame(self, frame, buf, start, length):
        self.count += 1
        self.send(BOLT.success_response(frame).encode())


@pytest.mark.parametrize("kib, count, gap", [(512, 40, 0), (64, 320, 0.001)])
def test_a_client_is_not_read_while_its_upstream_cannot_keep_up(kib, count, gap):
    """20 MB of requests to an upstream that reads nothing (512 KiB at once: more than the
    proxy's backlog limit in one loop turn; or 64 KiB a millisecond: the transport's full
    buffer decides): once the kernel's buffers and the proxy's write buffer are full, the
    proxy stops reading that client; when the upstream reads again, everything goes through
    and is answered."""
    from .harness import run

    async def scenario():
        up, port = free_port(), free_port()
        conns: list = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Stalled(conns), "127.0.0.1", up)
        try:
            async with proxy_running(one_cluster(port, up, route={"timeout_ms": 60_000})) as proxy:
                c = await client("bolt", port)
                body = b"x" * (kib * 1024)
                futures = []
                for i in range(1, count + 1):
                    futures.append(c.send(bolt_request(i, body)))
                    if gap:
                        await asyncio.sleep(gap)
                await asyncio.sleep(0.5)
                read = metric(proxy, "protocx_pool_active_requests", cluster="up")
                assert 0 < read < count, read
                (down,) = proxy.listeners[0].conns
                assert down.holds and not down.transport.is_reading()
                conns[0].resume()
                answers = await asyncio.wait_for(asyncio.gather(*futures), 30)
                assert [a.get_request_id() for a in answers] == list(range(1, count + 1))
                assert conns[0].count == count
                assert not down.holds and down.transport.is_reading()
        finally:
            server.close()

    run(scenario())


def test_quiet_requests_completed_by_a_later_answer_leave_the_connection_idle():
    """A quiet miss completed by the next answer is no longer in flight: the connection is
    idle, so its keepalives go out 15 s after that answer."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with (
            fake_memcached(up, {b"k": b"V"}, seen),
            proxy_running(mc_cluster(port, [up], KEEPALIVE)),
        ):
            c = await RawClient.connect(port)
            t0 = now()
            c.send(mc(GETKQ, b"miss", 1), mc(GETK, b"k", 2))
            assert await c.frames(1) == [(GETK, 2, 0, b"k", b"V")]
            await sleep_until(t0 + 31)
            assert seen == [(GETKQ, b"miss"), (GETK, b"k"), (NOOP, b""), (NOOP, b"")]

    run_virtual(scenario())


# ------------------------------------------------------------------------ connect timeouts


@contextlib.contextmanager
def unaccepting():
    """A port whose accept queue is full: a connect to it hangs (its SYNs are dropped)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        server.close()


def test_a_connect_that_times_out_answers_502_and_drops_requests_that_timed_out_waiting(caplog):
    """connect_timeout 400 ms to an endpoint that never completes the handshake: a request
    with a 100 ms timeout waiting for it gets 504 at 100 ms (and leaves the queue: two are
    pending, not three); two without get 502 at 400 ms; the endpoint then sits out."""
    from .harness import run

    caplog.set_level(logging.WARNING, "protoc_x")

    async def scenario():
        import time

        with unaccepting() as up:
            port = free_port()
            cluster = {"connect_timeout_ms": 400, "request_timeout_ms": 5_000}
            async with proxy_running(one_cluster(port, up, cluster)) as proxy:
                c = await client("bolt", port)
                short = bolt_untimed(1)
                short.timeout = 100
                t0 = time.monotonic()
                first, second = c.send(short), c.send(bolt_untimed(2))
                third = c.send(bolt_untimed(4))
                assert status(await asyncio.wait_for(first, 5)) == 504
                assert 0.09 <= time.monotonic() - t0 < 0.35
                # (out of the queue: pending no more)
                assert metric(proxy, "protocx_pool_pending_requests", cluster="up") == 2
                assert status(await asyncio.wait_for(second, 5)) == 502
                assert status(await asyncio.wait_for(third, 5)) == 502
                assert 0.39 <= time.monotonic() - t0 < 0.9
                assert metric(proxy, "protocx_pool_pending_requests", cluster="up") == 0
                assert metric(proxy, "protocx_pool_active_requests", cluster="up") == 0
                assert status(await c.call(bolt_untimed(3))) == 503  # sits out
            return up

    up = run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot connect to 127.0.0.1:{up}: timeout"
    ]


def test_a_oneway_changed_by_a_filter_is_re_encoded():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        mutation = {"name": "header_mutation",
                    "config": {"request_headers_to_add": [{"key": "x-env", "value": "prod"}]}}  # fmt: skip
        cfg = one_cluster(port, up, listener={"stream_filters": [mutation]})
        async with recorder("bolt", up, seen), proxy_running(cfg):
            c = await client("bolt", port)
            oneway = bolt_untimed(1)
            oneway.kind = 2
            assert c.send(oneway) is None
            assert status(await c.call(bolt_untimed(2))) == 200
            assert [f.get_header("x-env") for f in seen] == ["prod", "prod"]
            assert seen[0].get_stream_type() is StreamType.ONEWAY

    run_virtual(scenario())


class UnorderedMemcached(type(MEMCACHED)):
    """memcached's frames, answers matched by id alone (not in order)."""

    ordered = False


def test_on_an_unordered_protocol_a_later_answer_does_not_complete_a_quiet_request():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        protocols = {**PROTOCOLS, "memcached": UnorderedMemcached()}
        async with (
            fake_memcached(up, {b"k": b"V"}, seen),
            proxy_with(mc_cluster(port, [up]), protocols) as proxy,
        ):
            c = await RawClient.connect(port)
            c.send(mc(GETKQ, b"miss", 1), mc(GETK, b"k", 2))
            assert await c.frames(1) == [(GETK, 2, 0, b"k", b"V")]
            # the quiet get may still be answered: it waits for its timeout (30 s)
            assert metric(proxy, "protocx_pool_active_requests", cluster="up") == 1
            await asyncio.sleep(31)
            assert metric(proxy, "protocx_pool_active_requests", cluster="up") == 0
            assert await c.nothing_more()

    run_virtual(scenario())


# ------------------------------------------------------------------- connections that reset


class Resetting(FramedConnection):
    """A bolt upstream that answers its first ``answered`` requests, never a heartbeat, and
    resets the connection on the next request."""

    direction = Direction.REQUEST

    def __init__(self, seen: list, answered: int):
        super().__init__(BOLT)
        self.seen, self.answered = seen, answered

    def on_frame(self, frame, buf, start, length):
        self.seen.append(frame)
        if frame.is_heartbeat():
            return
        if sum(1 for f in self.seen if not f.is_heartbeat()) > self.answered:
            self.abort()
            return
        self.send(BOLT.success_response(frame).encode())


@contextlib.asynccontextmanager
async def resetting(port: int, seen: list, answered: int = 0):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Resetting(seen, answered), "127.0.0.1", port)
    try:
        yield server
    finally:
        server.close()


def test_a_reset_fails_every_request_on_the_connection_even_behind_a_keepalive():
    """A heartbeat of ours is out (written first) when requests follow and the upstream
    resets: each request gets 502 at once."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with (
            resetting(up, seen, answered=1),
            proxy_running(one_cluster(port, up, KEEPALIVE, route={"timeout_ms": 60_000})),
        ):
            c = await client("bolt", port)
            assert status(await c.call(bolt_untimed(1))) == 200
            t0 = now()
            await sleep_until(t0 + 15.5)  # the heartbeat went at 15 s, unanswered
            answers = await asyncio.wait_for(
                asyncio.gather(c.send(bolt_untimed(2)), c.send(bolt_untimed(3))), 30
            )
            assert [status(a) for a in answers] == [502, 502] and now() == t0 + 15.5
            assert [f.is_heartbeat() for f in seen] == [False, True, False]

    run_virtual(scenario())


def test_a_request_reset_by_one_endpoint_is_retried_on_another():
    async def scenario():
        bad, good, port = free_port(), free_port(), free_port()
        eps = [f"127.0.0.1:{bad}", f"127.0.0.1:{good}"]
        key = key_on(bad, eps)
        seen_bad, seen_good = [], []
        async with (
            resetting(bad, seen_bad),
            recorder("bolt", good, seen_good),
            proxy_running(two_endpoints(port, bad, good, route={"retries": 1})) as proxy,
        ):
            c = await client("bolt", port)
            answer = await c.call(keyed(1, key))
            assert status(answer) == 200
            assert len(seen_bad) == 1 and len(seen_good) == 1
            assert metric(proxy, "protocx_retries_total", cluster="up") == 1

    run_virtual(scenario())


def test_a_retired_connection_closing_opens_no_connection_over_the_limit():
    """pingpong, max_connections 1: the first connection is retired (goaway) while busy, so a
    second may serve the next request; a third request waits for it, even when the retired
    one closes (it no longer counted)."""

    async def scenario():
        up, port = free_port(), free_port()
        conns: list = []
        protocols = {**PROTOCOLS, "xexample": PingpongXexample()}
        cfg = xe_cluster(port, up, {"max_connections": 1})
        async with goaway_upstream(up, conns, delay=1.0), proxy_with(cfg, protocols):
            c1, c2, c3 = [await client("xexample", port) for _ in range(3)]
            t0 = now()
            a = c1.send(xe_request(1, b"bye"))
            await asyncio.sleep(0.1)
            b = c2.send(xe_request(2, b"b"))
            await asyncio.sleep(0.1)
            c = c3.send(xe_request(3, b"c"))
            answers = await asyncio.wait_for(asyncio.gather(a, b, c), 10)
            assert [bytes(x.get_body()) for x in answers] == [b"bye", b"b", b"c"]
            assert len(conns) == 2 and [k.count for k in conns] == [1, 2]
            assert now() - t0 == pytest.approx(2.1)

    run_virtual(scenario())


def test_an_ipv6_endpoint():
    async def scenario():
        up, port = free_port(), free_port()
        loop = asyncio.get_running_loop()
        counts: list = []
        server = await loop.create_server(lambda: PerConnection(BOLT, counts), "::1", up)
        try:
            cfg = one_cluster(port, up)
            cfg["clusters"][0]["endpoints"] = [f"[::1]:{up}"]
            async with proxy_running(cfg) as proxy:
                c = await client("bolt", port)
                assert status(await c.call(bolt_untimed(1))) == 200
                assert counts == [1]
                assert metric(proxy, "protocx_upstream_connections", cluster="up",
                              endpoint=f"[::1]:{up}") == 1  # fmt: skip
        finally:
            server.close()

    run_virtual(scenario())


def test_a_client_is_not_read_while_the_connection_its_request_waits_for_is_made():
    """While the first connect is in progress (here it never completes: 400 ms connect
    timeout), the client's further requests are not read: after the 502 the endpoint sits
    out, so they get 503 — read only then."""
    from .harness import run

    async def scenario():
        with unaccepting() as up:
            port = free_port()
            cluster = {"connect_timeout_ms": 400}
            async with proxy_running(one_cluster(port, up, cluster)) as proxy:
                c = await client("bolt", port)
                first = c.send(bolt_untimed(1))
                await asyncio.sleep(0.05)
                later = [c.send(bolt_untimed(i)) for i in (2, 3)]
                await asyncio.sleep(0.1)
                assert metric(proxy, "protocx_pool_pending_requests", cluster="up") == 1
                answers = await asyncio.wait_for(asyncio.gather(first, *later), 5)
                assert [status(a) for a in answers] == [502, 503, 503]

    run(scenario())


def test_a_failed_connect_leaves_queued_requests_to_the_connection_that_is_up():
    """pingpong: a request in flight on the one connection (answered after 1 s); the
    endpoint stops listening; the next request's connect is refused, but the connection
    that is up serves it once free."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with recorder("thrift", up, seen, delay=1.0) as server:
            async with proxy_running(thrift_cluster(port, up)):
                c1, c2 = await client("thrift", port), await client("thrift", port)
                t0 = now()
                a = c1.send(thrift_call(1, b"a"))
                await asyncio.sleep(0.1)
                server.server.close()  # no new connections; the one made stays
                b = await c2.call(thrift_call(2, b"b"), timeout=10)
                assert b"b" in bytes(b.get_body()) and THRIFT.runtime_status(b.get_status()) == 200
                assert now() - t0 == pytest.approx(2.0)
                assert b"a" in bytes((await a).get_body())
                assert len(server.conns) == 1

    run_virtual(scenario())


# ----------------------------------------------------------------- dispatch: exact answers


def test_the_503s_and_502s_of_dispatch_with_their_texts():
    """memcached carries an error's text as the answer's value (and no key): a breaker's 503, a refused
    endpoint's 502, then (it sits out) 503 no healthy endpoint; and a retry that finds no
    other endpoint keeps its 502."""
    s502, s503 = MEMCACHED.map_status(502), MEMCACHED.map_status(503)

    async def scenario():
        dead, slow, port = free_port(), free_port(), free_port()
        cfg = mc_cluster(port, [slow], {"circuit_breakers": {"max_requests": 1}})
        async with fake_memcached(slow, {b"k": b"V"}, [], delay=1.0), proxy_running(cfg):
            c = await RawClient.connect(port)
            c.send(mc(GETK, b"k", 1), mc(GETK, b"k", 2))
            assert await c.frames(2) == [  # (in request order)
                (GETK, 1, 0, b"k", b"V"),
                (GETK, 2, s503, b"", b"protoc-x: 503 circuit breaker open"),
            ]
        async with proxy_running(mc_cluster(port, [dead])):
            c = await RawClient.connect(port)
            c.send(mc(GETK, b"k", 3))
            assert await c.frames(1) == [
                (GETK, 3, s502, b"", b"protoc-x: 502 upstream unreachable or reset")
            ]
            c.send(mc(GETK, b"k", 4))
            assert await c.frames(1) == [(GETK, 4, s503, b"", b"protoc-x: 503 no healthy endpoint")]
        cfg = mc_cluster(port, [dead])
        cfg["route_configs"][0]["virtual_hosts"][0]["routes"][0]["route"]["retries"] = 1
        async with proxy_running(cfg):
            c = await RawClient.connect(port)
            c.send(mc(GETK, b"k", 5))
            assert await c.frames(1) == [
                (GETK, 5, s502, b"", b"protoc-x: 502 upstream unreachable or reset")
            ]

    run_virtual(scenario())


def test_a_hash_key_keeps_its_endpoint_while_another_sits_out_and_no_key_goes_round_robin():
    """hash:x-key over a dead endpoint and two good ones: while the dead one sits out, a key
    of a good endpoint still goes there, every time; a request whose key cannot be read has
    none (round robin)."""
    from .test_proxy_paths import BrokenHeaderBolt

    async def scenario():
        dead, a, b, port = free_port(), free_port(), free_port(), free_port()
        cfg = two_endpoints(port, dead, a)
        cfg["clusters"][0]["endpoints"].append(f"127.0.0.1:{b}")
        eps = cfg["clusters"][0]["endpoints"]
        seen_a, seen_b = [], []
        async with recorder("bolt", a, seen_a), recorder("bolt", b, seen_b):
            async with proxy_running(cfg):
                c = await client("bolt", port)
                assert status(await c.call(keyed(1, key_on(dead, eps)))) == 502
                key_a = key_on(a, eps)
                for i in range(2, 6):  # the dead one sits out for 1 s
                    assert status(await c.call(keyed(i, key_a))) == 200
                assert (len(seen_a), len(seen_b)) == (4, 0)
            cfg["clusters"][0]["lb_policy"] = "hash:x-broken"
            cfg["clusters"][0]["endpoints"] = eps[1:]
            protocols = {**PROTOCOLS, "bolt": BrokenHeaderBolt()}
            async with proxy_with(cfg, protocols):
                c = await client("bolt", port)
                for i in range(6, 10):
                    assert status(await c.call(keyed(i, key_a))) == 200
                assert (len(seen_a), len(seen_b)) == (6, 2)

    run_virtual(scenario())


def test_least_request_counts_each_endpoints_requests_in_flight():
    """Three at once over a and b (both answer after 1 s): a gets two, b one. Once all are
    answered both count none again."""

    async def scenario():
        a, b, port = free_port(), free_port(), free_port()
        cfg = one_cluster(port, a, {"lb_policy": "least_request"})
        cfg["clusters"][0]["endpoints"].append(f"127.0.0.1:{b}")
        seen_a, seen_b = [], []
        async with (
            recorder("bolt", a, seen_a, delay=1.0),
            recorder("bolt", b, seen_b, delay=1.0),
            proxy_running(cfg),
        ):
            c = await client("bolt", port)
            first = [c.send(bolt_untimed(i)) for i in (1, 2, 3)]
            await asyncio.wait_for(asyncio.gather(*first), 10)
            assert (len(seen_a), len(seen_b)) == (2, 1)
            # idle again: three at once go b, a (both 0 in flight), then b (a tie, from b)
            again = [c.send(bolt_untimed(i)) for i in (4, 5, 6)]
            await asyncio.wait_for(asyncio.gather(*again), 10)
            assert (len(seen_a), len(seen_b)) == (3, 3)

    run_virtual(scenario())


def test_least_request_prefers_the_endpoint_with_fewer_in_flight_from_its_turn():
    """a holds two requests (answered after 10 s), b one (answered after 0.5 s, then its
    next after 10 s): a request whose turn starts at a still goes to b while b has one in
    flight and a two."""

    async def scenario():
        a, b, port = free_port(), free_port(), free_port()
        cfg = one_cluster(port, a, {"lb_policy": "least_request", "request_timeout_ms": 60_000})
        cfg["clusters"][0]["endpoints"].append(f"127.0.0.1:{b}")
        seen_a, seen_b = [], []
        async with (
            recorder("bolt", a, seen_a, delay=10.0),
            recorder("bolt", b, seen_b, delay=lambda n: 0.5 if n == 0 else 10.0),
            proxy_running(cfg),
        ):
            c = await client("bolt", port)
            futures = [c.send(bolt_untimed(i)) for i in (1, 2, 3)]  # a, b, a
            await asyncio.sleep(0.6)  # b answered its first
            futures.append(c.send(bolt_untimed(4)))  # b's turn: b
            await asyncio.sleep(0.1)
            futures.append(c.send(bolt_untimed(5)))  # a's turn, but a has 2, b 1: b
            await asyncio.wait_for(asyncio.gather(*futures), 30)
            assert (len(seen_a), len(seen_b)) == (2, 3)

    run_virtual(scenario())


class CloseAtOnce(asyncio.Protocol):
    def connection_made(self, transport):
        transport.close()


def test_an_upstream_that_closes_at_once_is_a_failed_connect_not_a_dead_connection_kept(
    caplog,
):
    """On uvloop the proxy may see such a connection closed before its connect returns: it
    was kept as the endpoint's connection, and every request to it timed out. It is a
    failed connect: 502, then the endpoint sits out (503), and no connection is kept."""
    from .harness import run

    caplog.set_level(logging.WARNING, "protoc_x")

    async def scenario():
        up, port = free_port(), free_port()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(CloseAtOnce, "127.0.0.1", up)
        try:
            cfg = one_cluster(port, up, route={"timeout_ms": 2_000})
            async with proxy_running(cfg) as proxy:
                c = await client("bolt", port)
                codes = [status(await c.call(bolt_untimed(i), timeout=5)) for i in (1, 2)]
                # (503: the endpoint sits out; 502 again if this close was seen after it)
                assert codes[0] == 502 and codes[1] in (502, 503), codes
                if codes[1] == 503:
                    assert [r.getMessage() for r in caplog.records] == [
                        f"cannot connect to 127.0.0.1:{up}: connection closed by the peer at once"
                    ]
                (pool,) = proxy.clusters["up"].pools.values()
                assert pool.conns == [] and pool.connecting == 0
                assert metric(proxy, "protocx_upstream_connections", cluster="up",
                              endpoint=f"127.0.0.1:{up}") in (None, 0)  # fmt: skip
        finally:
            server.close()

    run(scenario())


class BoltOrDubbo(FramedConnection):
    """An upstream answering bolt or dubbo, whichever its first byte says; records which
    protocols it saw."""

    direction = Direction.REQUEST

    def __init__(self, seen: list):
        super().__init__(None)
        self.seen = seen

    def choose_protocol(self, data) -> bool:
        self.proto = BOLT if data[0] == 1 else PROTOCOLS["dubbo"]
        return True

    def on_frame(self, frame, buf, start, length):
        self.seen.append(self.proto.name)
        self.send(self.proto.success_response(frame).encode())


def test_least_request_counts_requests_not_pools():
    """A listener of bolt and dubbo: an endpoint has a pool per protocol. Endpoints with no
    request in flight tie, whatever pools they have: requests one at a time go round
    robin, a, b, a, b, a."""
    from .test_governance import dubbo_request

    async def scenario():
        a, b, port = free_port(), free_port(), free_port()
        cfg = one_cluster(port, a, {"lb_policy": "least_request"})
        cfg["clusters"][0]["endpoints"].append(f"127.0.0.1:{b}")
        seen_a, seen_b = [], []
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(lambda s=s: BoltOrDubbo(s), "127.0.0.1", p)
                   for s, p in ((seen_a, a), (seen_b, b))]  # fmt: skip
        try:
            async with proxy_running(cfg):
                bolt, dubbo = await client("bolt", port), await client("dubbo", port)
                assert status(await bolt.call(bolt_untimed(1))) == 200  # a: its bolt pool
                for rid in (2, 3, 4, 5):  # b, a (its dubbo pool), b, a
                    answer = await dubbo.call(dubbo_request(rid))
                    assert answer.get_request_id() == rid
                assert (seen_a, seen_b) == (["bolt", "dubbo", "dubbo"], ["dubbo", "dubbo"])
        finally:
            for server in servers:
                server.close()

    run_virtual(scenario())


def test_the_default_max_requests_is_10000_in_flight():
    """10001 requests at once on an open connection, answered after 10 s: the last gets
    503."""

    async def scenario():
        up, port = free_port(), free_port()
        async with (
            recorder("bolt", up, [], delay=lambda n: 10.0 if n else 0.0),
            proxy_running(one_cluster(port, up, route={"timeout_ms": 60_000})) as proxy,
        ):
            c = await client("bolt", port)
            assert status(await c.call(bolt_untimed(1))) == 200
            more = [c.send(bolt_untimed(i)) for i in range(2, 10003)]
            codes = [status(a) for a in await asyncio.wait_for(asyncio.gather(*more), 60)]
            assert codes.count(503) == 1 and codes.count(200) == 10000
            assert metric(proxy, "protocx_circuit_breaker_overflow_total", cluster="up",
                          breaker="max_requests") == 1  # fmt: skip

    run_virtual(scenario())


def test_the_default_max_pending_requests_is_1024():
    """1026 clients send a request each while the endpoint's first connection is made: 1024
    wait for it, 2 get 503."""

    async def scenario():
        up, port = free_port(), free_port()
        async with recorder("bolt", up, []), proxy_running(one_cluster(port, up)) as proxy:
            clients = [await client("bolt", port) for _ in range(1026)]
            futures = [c.send(bolt_untimed(1)) for c in clients]
            codes = [status(a) for a in await asyncio.wait_for(asyncio.gather(*futures), 60)]
            assert codes.count(503) == 2 and codes.count(200) == 1024
            assert metric(proxy, "protocx_circuit_breaker_overflow_total", cluster="up",
                          breaker="max_pending_requests") == 2  # fmt: skip
            for c in clients:
                c.close()

    run_virtual(scenario())
