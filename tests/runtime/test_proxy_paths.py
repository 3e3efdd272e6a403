"""The downstream side of the proxy over real sockets on 127.0.0.1 (on the virtual-clock loop):
protocol detection, what a client may send that is no request, local heartbeats in answer
order, the protocol's error answers (400, 404, 502, 503, 504) with their codes in the access log
and metrics, a protocol without error answers, the draining of connections, and listeners'
sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct

import pytest

from protoc_x.runtime.api import Direction
from protoc_x.runtime.network import FramedConnection
from protoc_x.runtime.config import parse_config
from protoc_x.runtime.proxy import Proxy

from .harness import PROTOCOLS, client, config, free_port, proxy_running, recorder
from .harness import no_errors_logged  # noqa: F401 (autouse: a test fails on any logged error)
from .test_pool import (
    GETK, NOOP, RawClient, fake_memcached, mc, mc_cluster, metric, proxy_with, status,
)  # fmt: skip
from .test_proxy_behaviour import bolt_request, thrift_call
from .test_virtual_time import bolt_untimed, now, one_cluster
from .virtual_clock import run_virtual

BOLT, DUBBO, KAFKA = PROTOCOLS["bolt"], PROTOCOLS["dubbo"], PROTOCOLS["kafka"]


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except (asyncio.TimeoutError, ConnectionError):
        return False


# ------------------------------------------------------------------------------- detection


def test_detection_waits_for_64_bytes_then_closes_and_bytes_no_protocol_can_start_close(caplog):
    """A listener of bolt and dubbo: 64 bytes that could still start a frame of one of them
    are waited on; a 65th that decides nothing closes the connection; a first byte neither
    protocol starts with closes it at once, naming them."""
    caplog.set_level(logging.WARNING, "protoc_x")

    async def scenario():
        up, port = free_port(), free_port()
        async with recorder("bolt", up, []), proxy_running(one_cluster(port, up)):
            # dubbo's magic is 0xdabb: one byte of it could still be either
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"\xda")
            assert not await closed_within(r, 60)
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"\x00" * 8)
            assert await closed_within(r, 1)
            c = await client("bolt", port)  # a bolt client is still served
            assert status(await c.call(bolt_untimed(1))) == 200

    run_virtual(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("first bytes 0000000000000000 match none of: bolt, dubbo")
               for m in messages), messages  # fmt: skip


def test_a_client_sending_an_answer_frame_has_it_dropped_and_is_still_served(caplog):
    caplog.set_level(logging.WARNING, "protoc_x")

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with recorder("bolt", up, seen), proxy_running(one_cluster(port, up)):
            c = await client("bolt", port)
            c.conn.send(BOLT.success_response(bolt_request(5)).encode())
            answer = await c.call(bolt_untimed(6))
            assert answer.get_request_id() == 6 and status(answer) == 200
            assert len(seen) == 1 and not c.conn.closed

    run_virtual(scenario())
    assert "l: a client sent a response frame; dropped" in [r.getMessage() for r in caplog.records]


# ---------------------------------------------------------------------------- error answers


def dubbo_with_body(rid: int, body: bytes):
    return DUBBO.decode(bytes.fromhex("dabbc200") + struct.pack(">QI", rid, len(body)) + body)


def test_error_answers_carry_the_protocols_codes_into_the_access_log_and_metrics(tmp_path):
    """One connection, one request of each kind of failure: a body the proxy cannot read
    (400), no route (404), a refused endpoint (502), then none left (503), no answer in time
    (504); each answered with the protocol's own status and the client's id, each logged with
    its runtime code, the protocol's status and the endpoint it went to."""
    log_path = tmp_path / "access.jsonl"

    async def scenario():
        up, dead, port = free_port(), free_port(), free_port()
        cfg = config(
            [{"name": "edge", "address": f"127.0.0.1:{port}", "protocol": ["dubbo"],
              "route_config": "r", "access_log": {"path": str(log_path), "format": "json"}}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"path": "/dead"}, "route": {"cluster": "dead"}},
                {"match": {"path": "/slow"}, "route": {"cluster": "slow", "timeout_ms": 2_000}},
                {"match": {"path": "/ok"}, "route": {"cluster": "slow"}}]}]}],
            [{"name": "dead", "endpoints": [f"127.0.0.1:{dead}"]},
             {"name": "slow", "endpoints": [f"127.0.0.1:{up}"]}],
        )  # fmt: skip
        from .test_governance import dubbo_request

        def named(rid, method):
            frame = dubbo_request(rid)
            frame.method_name = method
            frame.set_header("timeout", "0")
            return frame

        async with (
            recorder("dubbo", up, [], delay=lambda n: 5.0 if n == 0 else 0.0),
            proxy_running(cfg) as proxy,
        ):
            c = await client("dubbo", port)
            frames = [
                dubbo_with_body(1, b"\x05hello\xff\xff"),
                named(2, "nowhere"),
                named(3, "dead"),
                named(4, "dead"),
                named(5, "slow"),
                named(6, "ok"),
            ]
            answers = []
            for frame in frames:
                answers.append(await c.call(frame, timeout=30))
            assert [a.get_request_id() for a in answers] == [1, 2, 3, 4, 5, 6]
            assert [a.get_status() for a in answers] == [
                DUBBO.map_status(code) for code in (400, 404, 502, 503, 504, 200)
            ]
            try:
                frames[0].get_service()
            except DecodeError as e:
                reason = e.reason
            assert answers[0].error_message == f"protoc-x: 400 {reason}"
            return proxy.metrics.answered()

    assert run_virtual(scenario()) == {400: 1, 404: 1, 502: 1, 503: 1, 504: 1, 200: 1}
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [x["code"] for x in lines] == [400, 404, 502, 503, 504, 200]
    assert [x["status"] for x in lines] == [
        DUBBO.map_status(c) for c in (400, 404, 502, 503, 504, 200)
    ]
    assert [x["cluster"] for x in lines] == [None, None, "dead", "dead", "slow", "slow"]
    assert [x["upstream"] is None for x in lines] == [True, True, False, True, False, False]
    assert [x["method"] for x in lines] == [None, "nowhere", "dead", "dead", "slow", "ok"]


def kafka_request() -> bytes:
    from protoc_x.samples import SAMPLES

    return next(s.data for s in SAMPLES if s.protocol == "kafka" and s.direction == "request")


def test_a_protocol_without_error_answers_closes_the_connection_on_an_error(tmp_path, caplog):
    """kafka has no error answer: a request that cannot be served closes its connection (its
    clients reconnect), and is logged with its code and no protocol status."""
    log_path = tmp_path / "access.jsonl"

    async def scenario():
        dead, port = free_port(), free_port()
        cfg = config(
            [{"name": "k", "address": f"127.0.0.1:{port}", "protocol": "kafka", "route_config": "r",
              "access_log": {"path": str(log_path), "format": "json"}}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {}, "route": {"cluster": "dead"}}]}]}],
            [{"name": "dead", "endpoints": [f"127.0.0.1:{dead}"]}],
        )  # fmt: skip
        async with proxy_running(cfg):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(kafka_request())
            assert await closed_within(r, 5)

    caplog.set_level(logging.WARNING, "protoc_x")
    run_virtual(scenario())
    (line,) = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert (line["code"], line["status"], line["cluster"]) == (502, None, "dead")
    closing = [r.getMessage() for r in caplog.records if r.getMessage().startswith("closing")]
    assert len(closing) == 1
    assert closing[0].endswith("): runtime code 502 and the protocol has no error response")


def test_a_local_heartbeat_answer_keeps_its_place_in_an_ordered_protocols_answers():
    """memcached answers in request order: a NOOP the proxy answers itself waits for the get
    before it (answered upstream after 3 s), and leaves right after it."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with (
            fake_memcached(up, {b"k": b"V"}, seen, delay=3.0),
            proxy_running(mc_cluster(port, [up])),
        ):
            c = await RawClient.connect(port)
            t0 = now()
            c.send(mc(GETK, b"k", 1), mc(NOOP, b"", 2))
            assert await c.frames(2) == [(GETK, 1, 0, b"k", b"V"), (NOOP, 2, 0, b"", b"")]
            assert now() - t0 == pytest.approx(3.0)
            assert seen == [(GETK, b"k")]

    run_virtual(scenario())


# ----------------------------------------------------------------------------------- drain


def test_drain_answers_what_is_in_flight_then_closes_and_accepts_nobody():
    """drain(30): the listener stops accepting; an idle client is closed at once; a client
    with a request in flight (answered upstream after 5 s) gets its answer, then is closed;
    drain returns once every connection is closed."""

    async def scenario():
        up, port = free_port(), free_port()
        async with recorder("bolt", up, [], delay=5.0):
            proxy = Proxy(parse_config(one_cluster(port, up), "."), PROTOCOLS)
            await proxy.start()
            busy, idle = await client("bolt", port), await client("bolt", port)
            fut = busy.send(bolt_untimed(1))
            await asyncio.sleep(1)
            t0 = now()
            drained = asyncio.ensure_future(proxy.drain(30))
            await asyncio.wait_for(asyncio.shield(idle.conn.lost), 0.1)
            assert now() == t0
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
            answer = await asyncio.wait_for(fut, 10)
            assert status(answer) == 200 and now() - t0 == pytest.approx(4.0)
            await asyncio.wait_for(asyncio.shield(busy.conn.lost), 0.1)
            await drained
            assert 4.0 <= now() - t0 <= 4.05

    run_virtual(scenario())


def test_drain_gives_up_on_requests_still_in_flight_at_its_timeout():
    async def scenario():
        up, port = free_port(), free_port()
        async with recorder("bolt", up, [], answer=False):
            proxy = Proxy(parse_config(one_cluster(port, up), "."), PROTOCOLS)
            await proxy.start()
            c = await client("bolt", port)
            fut = c.send(bolt_untimed(1))
            await asyncio.sleep(1)
            t0 = now()
            await proxy.drain(3)
            assert now() - t0 == pytest.approx(3.0, abs=1e-9)
            await asyncio.wait_for(asyncio.shield(c.conn.lost), 1)
            with pytest.raises(ConnectionError):
                await fut

    run_virtual(scenario())


# ------------------------------------------------------------------------------- listeners


@pytest.mark.parametrize("workers, reuseport", [(1, 0), (2, 1)])
def test_listener_sockets_share_the_port_only_with_several_workers_and_ipv6_is_v6_only(
    workers, reuseport
):
    async def scenario():
        port, port6 = free_port(), free_port()
        cfg = one_cluster(port, 1)
        # (the wildcard: a socket bound to ::1 is IPv6-only whatever the option says)
        cfg["listeners"].append(dict(cfg["listeners"][0], name="six", address=f"[::]:{port6}"))
        proxy = Proxy(parse_config(cfg, "."), PROTOCOLS, worker=0, workers=workers)
        four, six = proxy.bind([(i, l.config.address) for i, l in enumerate(proxy.listeners)])
        try:
            assert [s.family for s in four] == [socket.AF_INET]
            assert [s.family for s in six] == [socket.AF_INET6]
            for s in four + six:
                assert bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)) == reuseport
                assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            assert six[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            assert four[0].getsockname() == ("127.0.0.1", port)
            assert six[0].getsockname()[:2] == ("::", port6)
        finally:
            for s in four + six:
                s.close()

    run_virtual(scenario())


def test_a_taken_address_fails_start_naming_the_listener_and_leaves_no_socket_bound():
    async def scenario():
        first, taken = free_port(), free_port()
        cfg = one_cluster(first, 1)
        cfg["listeners"].append(dict(cfg["listeners"][0], name="two",
                                     address=f"127.0.0.1:{taken}"))  # fmt: skip
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", taken))
            holder.listen()
            proxy = Proxy(parse_config(cfg, "."), PROTOCOLS)
            with pytest.raises(OSError) as info:
                await proxy.start()
        assert str(info.value) == (
            f"[Errno 98] listeners[1].address: cannot listen on 127.0.0.1:{taken}: "
            "Address already in use"
        )
        assert info.value.errno == 98
        with socket.socket() as again:  # the first listener's socket was closed
            again.bind(("127.0.0.1", first))

    run_virtual(scenario())


def test_a_rate_limit_is_shared_by_the_workers():
    """burst 4 over two workers: each worker lets 2 through."""

    async def scenario():
        up, port = free_port(), free_port()
        limit = {"name": "local_rate_limit", "config": {"tokens_per_second": 0.001, "burst": 4}}
        cfg = one_cluster(port, up, listener={"stream_filters": [limit]})
        seen: list = []
        async with recorder("bolt", up, seen):
            proxy = Proxy(parse_config(cfg, "."), PROTOCOLS, worker=1, workers=2)
            await proxy.start()
            try:
                c = await client("bolt", port)
                codes = [(await c.call(bolt_untimed(i))).get_status() for i in range(1, 5)]
            finally:
                await proxy.drain(0.5)
            assert codes == [BOLT.map_status(200)] * 2 + [BOLT.map_status(429)] * 2
            assert len(seen) == 2
            assert metric(proxy, "protocx_rate_limited_total", listener="l", protocol="bolt") == 2

    run_virtual(scenario())


# ------------------------------------------------------------ filters: pause, reject, errors

from pydantic import StrictFloat, StrictInt, StrictStr  # noqa: E402

from protoc_x.runtime.api import DecodeError  # noqa: E402
from protoc_x.runtime.filters import (  # noqa: E402
    REGISTRY, FilterConfig, Pause, Reject, StreamFilter, filters,
)  # fmt: skip


class PauseRouted(StreamFilter):
    """After routing (the deadline runs): hold each request ``seconds``."""

    class Config(FilterConfig):
        seconds: StrictFloat

    def on_routed(self, ctx):
        return Pause(self.config.seconds)


class RejectRouted(StreamFilter):
    class Config(FilterConfig):
        code: StrictInt
        message: StrictStr

    def on_routed(self, ctx):
        return Reject(self.config.code, self.config.message)


class Broken(StreamFilter):
    """Reads a header that cannot be decoded."""

    def on_request(self, ctx):
        raise DecodeError(7, "header map: truncated")


@pytest.fixture
def our_filters():
    """This module's filters, registered for one test only (the config's errors list the
    registered ones)."""
    filters()
    ours = {"test_pause_routed": PauseRouted, "test_reject_routed": RejectRouted,
            "test_broken": Broken, "test_tag_response": TagResponse}  # fmt: skip
    for name, cls in ours.items():
        cls.name = name
        REGISTRY[name] = cls
    yield
    for name in ours:
        del REGISTRY[name]


def filtered(port: int, up: int, chain: list, timeout_ms: int = 10_000) -> dict:
    return one_cluster(port, up, route={"timeout_ms": timeout_ms},
                       listener={"stream_filters": chain})  # fmt: skip


def test_filters_after_routing_pause_then_reject_with_their_message(our_filters):
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        chain = [{"name": "test_pause_routed", "config": {"seconds": 2.0}},
                 {"name": "test_reject_routed", "config": {"code": 503, "message": "not now"}}]  # fmt: skip
        async with recorder("bolt", up, seen), proxy_running(filtered(port, up, chain)):
            c = await client("bolt", port)
            t0 = now()
            answer = await c.call(bolt_untimed(1), timeout=20)
            assert now() - t0 == pytest.approx(2.0)
            assert answer.get_request_id() == 1 and status(answer) == 503
            assert b"not now" in bytes(answer.get_body())
            assert seen == []

    run_virtual(scenario())


def test_a_pause_after_routing_counts_against_the_deadline_and_a_timed_out_request_stays(
    our_filters,
):
    """The deadline is set at routing: a 2 s pause after it, with a 1 s timeout, answers 504
    at 1 s, and the request never goes upstream; a 0.5 s pause lets it through."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        chain = [{"name": "test_pause_routed", "config": {"seconds": 2.0}}]
        async with recorder("bolt", up, seen), proxy_running(filtered(port, up, chain, 1_000)):
            c = await client("bolt", port)
            t0 = now()
            answer = await c.call(bolt_untimed(1), timeout=20)
            assert status(answer) == 504 and 1.0 <= now() - t0 <= 1.011
            await asyncio.sleep(5)
            assert seen == []
        up, port = free_port(), free_port()
        chain = [{"name": "test_pause_routed", "config": {"seconds": 0.5}}]
        async with recorder("bolt", up, seen), proxy_running(filtered(port, up, chain, 1_000)):
            c = await client("bolt", port)
            t0 = now()
            answer = await c.call(bolt_untimed(2), timeout=20)
            assert status(answer) == 200 and now() - t0 == pytest.approx(0.5)
            assert len(seen) == 1

    run_virtual(scenario())


def test_a_request_held_by_a_filter_is_dropped_if_its_client_leaves():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        fault = {"name": "fault", "config": {"delay": {"fixed_delay_ms": 1_000, "percent": 100}}}
        async with recorder("bolt", up, seen), proxy_running(filtered(port, up, [fault])):
            c = await client("bolt", port)
            fut = c.send(bolt_untimed(1))
            await asyncio.sleep(0.5)
            c.close()
            with pytest.raises(ConnectionError):
                await fut
            await asyncio.sleep(2)
            assert seen == []

    run_virtual(scenario())


def test_a_filter_that_cannot_decode_the_request_answers_400_with_the_reason(our_filters):
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        chain = [{"name": "test_broken"}]
        async with recorder("bolt", up, seen), proxy_running(filtered(port, up, chain)):
            c = await client("bolt", port)
            answer = await c.call(bolt_untimed(3))
            assert answer.get_request_id() == 3 and status(answer) == 400
            assert b"protoc-x: 400 header map: truncated" in bytes(answer.get_body())
            assert seen == [] and not c.conn.closed

    run_virtual(scenario())


# ------------------------------------------------------------------ error answers keep ids

from .test_id_remap import CASES, request_sample  # noqa: E402


@pytest.mark.parametrize("name", [n for n in CASES if PROTOCOLS[n].has_error_response])
def test_a_timeout_after_the_request_went_upstream_answers_with_the_clients_id(name):
    """The request was written upstream under an id of the proxy's (patched into its bytes,
    or set in the frame and re-encoded): the 504 made from it carries the client's id."""
    proto = PROTOCOLS[name]
    data, direction = request_sample(name)

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        cfg = config(
            [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": name, "route_config": "r"}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {}, "route": {"cluster": "up", "timeout_ms": 1_000}}]}]}],
            [{"name": "up", "endpoints": [f"127.0.0.1:{up}"]}],
        )  # fmt: skip
        async with recorder(name, up, seen, answer=False), proxy_running(cfg):
            c = await client(name, port)
            rid = 4_096 if proto.pool_mode.value == "multiplex" else 0
            frame = proto.decode(data, 0, direction)
            frame.set_request_id(rid)
            rid = frame.get_request_id()  # (None where requests carry no id: redis)
            if hasattr(frame, "timeout"):
                frame.timeout = 0
            answer = await c.call(frame, timeout=20)
            assert answer.get_request_id() == rid
            assert answer.get_status() == proto.map_status(504)
            assert len(seen) == 1

    run_virtual(scenario())


# --------------------------------------------------- detection limits, heartbeats, log lines

XE = PROTOCOLS["xexample"]


class Undecided(type(XE)):
    """A protocol whose first bytes never decide (always 'need more')."""

    name = "undecided"

    def match(self, data):
        from protoc_x.runtime.api import Match

        return Match.AGAIN


@pytest.mark.parametrize("size, closed", [(64, False), (65, True)])
def test_detection_gives_up_after_64_undecided_bytes(size, closed, caplog):
    caplog.set_level(logging.WARNING, "protoc_x")

    async def scenario():
        up, port = free_port(), free_port()
        protocols = {**PROTOCOLS, "undecided": Undecided()}
        cfg = one_cluster(port, up)
        cfg["listeners"][0]["protocol"] = ["bolt", "undecided"]
        proxy = Proxy(parse_config(cfg, "."), protocols)
        await proxy.start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"\x00" * (size - 1))
            await asyncio.sleep(1)
            w.write(b"\x00")
            assert await closed_within(r, 60) == closed
            w.close()
        finally:
            await proxy.drain(0.5)

    run_virtual(scenario())
    messages = [r.getMessage() for r in caplog.records]
    if closed:
        assert len(messages) == 1 and messages[0].startswith(
            "closing connection from ('127.0.0.1', "
        )
        assert messages[0].endswith("): no protocol of this listener matches the first bytes")
    else:
        assert messages == []


def test_detection_names_the_first_8_bytes_that_match_nothing(caplog):
    caplog.set_level(logging.WARNING, "protoc_x")

    async def scenario():
        up, port = free_port(), free_port()
        async with proxy_running(one_cluster(port, up)):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(bytes(range(0xF0, 0xFC)))
            assert await closed_within(r, 1)

    run_virtual(scenario())
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.endswith("): first bytes f0f1f2f3f4f5f6f7 match none of: bolt, dubbo")


def test_undecodable_request_bytes_close_the_connection_with_the_reason(caplog):
    caplog.set_level(logging.WARNING, "protoc_x")

    async def scenario():
        up, port = free_port(), free_port()
        async with proxy_running(one_cluster(port, up)):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"\x01\x07" + b"\x00" * 30)  # bolt, of a kind that does not exist
            try:
                await asyncio.wait_for(r.read(), 1)  # (until the end of the stream)
            except ConnectionResetError:
                pass  # (closed with our bytes unread)

    run_virtual(scenario())
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.endswith("): undecodable request bytes: proto: expected 0x1, got 0x0")


def test_a_oneway_heartbeat_is_not_answered():
    """dubbo: a heartbeat event without two_way expects nothing back."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with recorder("dubbo", up, seen), proxy_running(one_cluster(port, up)):
            from .test_governance import dubbo_request

            r, w = await asyncio.open_connection("127.0.0.1", port)
            beat = DUBBO.trigger(5)
            beat.two_way = 0
            w.write(beat.encode() + DUBBO.trigger(7).encode() + dubbo_request(6).encode())
            data = b""
            with pytest.raises(asyncio.TimeoutError):
                while True:
                    data += await asyncio.wait_for(r.read(65536), 5)
            answers = list(DUBBO.decode_all(data))
            assert [(a.get_request_id(), a.is_heartbeat()) for a in answers] == [
                (7, True),
                (6, False),
            ]
            assert len(seen) == 1

    run_virtual(scenario())


def test_drain_waits_for_every_request_in_flight_on_a_connection():
    async def scenario():
        up, port = free_port(), free_port()
        async with recorder("bolt", up, [], delay=lambda n: 2.0 * (n + 1)):
            proxy = Proxy(parse_config(one_cluster(port, up), "."), PROTOCOLS)
            await proxy.start()
            c = await client("bolt", port)
            t0 = now()
            futures = [c.send(bolt_untimed(i)) for i in (1, 2, 3)]
            await asyncio.sleep(0.5)
            await proxy.drain(30)
            assert now() - t0 == pytest.approx(6.0, abs=0.03)
            answers = [await f for f in futures]
            assert [a.get_request_id() for a in answers] == [1, 2, 3]
            assert c.conn.closed

    run_virtual(scenario())


def test_a_quiet_request_that_fails_is_logged_and_answered_with_nothing(tmp_path):
    """memcached: a quiet set to a refused endpoint: no answer (quiet), its 502 in the access
    log with the protocol's status, and the connection stays; a NOOP after it is answered."""
    log_path = tmp_path / "access.jsonl"

    async def scenario():
        dead, port = free_port(), free_port()
        cfg = mc_cluster(port, [dead])
        cfg["listeners"][0]["access_log"] = {"path": str(log_path), "format": "json"}
        async with proxy_running(cfg):
            c = await RawClient.connect(port)
            c.send(mc(0x11, b"q", 1, b"v"), mc(NOOP, b"", 2))
            # the NOOP, behind the quiet set, went upstream as its barrier: it fails too
            assert await c.frames(1) == [
                (NOOP, 2, 134, b"", b"protoc-x: 502 upstream unreachable or reset")
            ]
            c.send(mc(NOOP, b"", 3))  # nothing quiet pending: answered here
            assert await c.frames(1) == [(NOOP, 3, 0, b"", b"")]
            assert await c.nothing_more()

    run_virtual(scenario())
    lines = [json.loads(x) for x in log_path.read_text().splitlines()]
    status_502 = PROTOCOLS["memcached"].map_status(502)
    assert [(x["code"], x["status"]) for x in lines] == [(502, status_502), (502, status_502)]


def test_a_client_that_does_not_read_its_answers_is_not_read_until_it_does():
    """40 echoed requests of 512 KiB from a client that reads nothing: once its answers fill
    the kernel's buffers and the proxy's write buffer, the proxy reads no more of its
    requests; when it reads again, the rest are read and answered."""
    from .harness import run, upstream

    async def scenario():
        up, port = free_port(), free_port()
        async with upstream("bolt", up), proxy_running(one_cluster(port, up)) as proxy:
            c = await client("bolt", port)
            await c.call(bolt_request(100))
            c.conn.transport.pause_reading()
            body = b"y" * (512 * 1024)
            futures = [c.send(bolt_request(i, body)) for i in range(1, 41)]
            await asyncio.sleep(0.5)
            (down,) = proxy.listeners[0].conns
            assert down.holds and not down.transport.is_reading()
            answered = sum(proxy.metrics.answered().values())
            assert 1 < answered < 41, answered
            c.conn.transport.resume_reading()
            answers = await asyncio.wait_for(asyncio.gather(*futures), 30)
            assert [a.get_request_id() for a in answers] == list(range(1, 41))
            assert all(bytes(a.get_body()) == body for a in answers)
            assert not down.holds and down.transport.is_reading()

    run(scenario())


class BrokenHeaderBolt(type(BOLT)):
    """bolt whose request frames cannot decode their header ``x-broken``."""

    name = "bolt"

    def decode(self, buf, start=0, direction=None):
        frame = super().decode(buf, start, direction)
        if frame is not None and frame.__class__ is not BrokenHeaderFrame:
            frame.__class__ = BrokenHeaderFrame
        return frame


class BrokenHeaderFrame(type(BOLT.trigger(1))):
    __slots__ = ()

    def get_header(self, name):
        if name == "x-broken":
            raise DecodeError(12, "headers: x-broken is truncated")
        return super().get_header(name)


def test_a_header_routing_cannot_decode_answers_400_with_the_reason():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        cfg = one_cluster(port, up)
        cfg["route_configs"][0]["virtual_hosts"][0]["routes"][0]["match"] = {
            "headers": [{"name": "x-broken", "present": True}]
        }
        async with (
            recorder("bolt", up, seen),
            proxy_with(cfg, {**PROTOCOLS, "bolt": BrokenHeaderBolt()}),
        ):
            c = await client("bolt", port)
            answer = await c.call(bolt_untimed(4))
            assert answer.get_request_id() == 4 and status(answer) == 400
            assert b"protoc-x: 400 headers: x-broken is truncated" in bytes(answer.get_body())
            assert seen == [] and not c.conn.closed

    run_virtual(scenario())


def test_the_no_route_answer_names_the_service_and_method():
    async def scenario():
        up, port = free_port(), free_port()
        cfg = one_cluster(port, up)
        cfg["route_configs"][0]["virtual_hosts"][0]["routes"][0]["match"] = {"path": "/none"}
        async with proxy_running(cfg) as proxy:
            assert proxy.listeners[0].routes.virtual_host("a.B:1") == "v"
            c = await client("bolt", port)
            answer = await c.call(bolt_request(4, service="a.B:1", method="m"))
            assert status(answer) == 404
            assert b"protoc-x: 404 no route for service 'a.B:1' method 'm'" in bytes(
                answer.get_body()
            )

    run_virtual(scenario())


class ExceptionUpstream(FramedConnection):
    """thrift: answers with TApplicationException (a proper one, or a body that is none)."""

    direction = Direction.REQUEST

    def __init__(self, broken: bool):
        super().__init__(PROTOCOLS["thrift"])
        self.broken = broken

    def on_frame(self, frame, buf, start, length):
        answer = self.proto.hijack(frame, 503)
        answer.set_request_id(frame.get_request_id())
        if self.broken:
            answer.body = b"\xff\xff\xff"
        self.send(answer.encode())


@pytest.mark.parametrize("broken, code", [(False, 500), (True, 500)])  # (thrift: 503 is 500)
def test_an_upstreams_error_answer_is_logged_with_its_code(broken, code, tmp_path):
    """The upstream's own error answer is forwarded and logged with the runtime code its
    status means; one whose status part cannot be read, as 500 with no status."""
    from .test_pool import thrift_cluster

    log_path = tmp_path / "access.jsonl"
    thrift = PROTOCOLS["thrift"]

    async def scenario():
        up, port = free_port(), free_port()
        cfg = thrift_cluster(port, up)
        cfg["listeners"][0]["access_log"] = {"path": str(log_path), "format": "json"}
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: ExceptionUpstream(broken), "127.0.0.1", up)
        try:
            async with proxy_running(cfg):
                c = await client("thrift", port)
                answer = await c.call(thrift_call(3, b"x"))
                assert answer.get_request_id() == 3
        finally:
            server.close()

    run_virtual(scenario())
    (line,) = [json.loads(x) for x in log_path.read_text().splitlines()]
    expected_status = None if broken else thrift.map_status(code)
    assert (line["code"], line["status"]) == (code, expected_status)


def test_an_answer_without_a_status_is_logged_as_200(tmp_path):
    """kafka answers carry no status: 200."""
    from .harness import upstream

    log_path = tmp_path / "access.jsonl"

    async def scenario():
        up, port = free_port(), free_port()
        cfg = config(
            [{"name": "k", "address": f"127.0.0.1:{port}", "protocol": "kafka", "route_config": "r",
              "access_log": {"path": str(log_path), "format": "json"}}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {}, "route": {"cluster": "up"}}]}]}],
            [{"name": "up", "endpoints": [f"127.0.0.1:{up}"]}],
        )  # fmt: skip
        async with upstream("kafka", up), proxy_running(cfg):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(kafka_request())
            size = int.from_bytes(await r.readexactly(4), "big")
            await r.readexactly(size)

    run_virtual(scenario())
    (line,) = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert (line["code"], line["status"]) == (200, None)


# ------------------------------------------------------------------- what drain lets go of


@pytest.mark.parametrize("worker", [0, 1])
def test_drain_closes_upstreams_admin_and_access_log_and_only_worker_0_serves_admin(
    worker, tmp_path
):
    async def scenario():
        up, port, admin = free_port(), free_port(), free_port()
        cfg = one_cluster(port, up)
        cfg["admin"] = {"address": f"127.0.0.1:{admin}"}
        cfg["listeners"][0]["access_log"] = {"path": str(tmp_path / "a.log"), "format": "json"}
        async with recorder("bolt", up, []) as server:
            proxy = Proxy(parse_config(cfg, "."), PROTOCOLS, worker=worker, workers=2)
            await proxy.start()
            c = await client("bolt", port)
            assert status(await c.call(bolt_untimed(1))) == 200
            gauge = {"listener": "l"}
            assert metric(proxy, "protocx_downstream_connections", **gauge) == 1
            if worker == 0:
                _, w = await asyncio.open_connection("127.0.0.1", admin)
                w.close()
                bound = [s.getsockname()[:2] for s in proxy.admin.server.sockets]
                assert bound == [("127.0.0.1", admin)]
            else:
                with pytest.raises(OSError):
                    await asyncio.open_connection("127.0.0.1", admin)
            await proxy.drain(1)
            await asyncio.sleep(0.01)
            assert server.conns[0].closed and c.conn.closed
            assert metric(proxy, "protocx_downstream_connections", **gauge) == 0
            assert proxy.listeners[0].access_log.stream.closed
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", admin)

    run_virtual(scenario())


def test_a_connection_accepted_while_draining_is_closed_at_once():
    """A connection accepted just before the listener closed, made once the drain began."""
    from protoc_x.runtime.proxy import DownstreamConnection

    async def scenario():
        up, port = free_port(), free_port()
        loop = asyncio.get_running_loop()
        async with recorder("bolt", up, [], answer=False):
            proxy = Proxy(parse_config(one_cluster(port, up), "."), PROTOCOLS)
            await proxy.start()
            c = await client("bolt", port)
            fut = c.send(bolt_untimed(1))  # keeps the drain waiting
            await asyncio.sleep(0.1)
            drained = asyncio.ensure_future(proxy.drain(5))
            await asyncio.sleep(0)
            ours, theirs = socket.socketpair()
            await loop.connect_accepted_socket(
                lambda: DownstreamConnection(proxy.listeners[0]), ours
            )
            r, w = await asyncio.open_connection(sock=theirs)
            assert await closed_within(r, 1)
            w.close()
            await drained
            with pytest.raises(ConnectionError):
                await fut

    run_virtual(scenario())


def test_a_client_that_leaves_is_no_longer_counted():
    async def scenario():
        up, port = free_port(), free_port()
        async with recorder("bolt", up, []), proxy_running(one_cluster(port, up)) as proxy:
            clients = [await client("bolt", port) for _ in range(3)]
            for i, c in enumerate(clients):
                assert status(await c.call(bolt_untimed(i + 1))) == 200
            assert metric(proxy, "protocx_downstream_connections", listener="l") == 3
            clients[0].close()
            clients[1].close()
            await asyncio.sleep(0.01)
            assert metric(proxy, "protocx_downstream_connections", listener="l") == 1
            assert len(proxy.listeners[0].conns) == 1

    run_virtual(scenario())


class TagResponse(StreamFilter):
    """Adds the request's method to its answer as header x-method."""

    touches_responses = True

    def on_response(self, ctx, frame):
        frame.set_header("x-method", ctx.method)


def test_a_response_filter_sees_the_request_and_errors_made_here_skip_it(our_filters):
    async def scenario():
        up, port = free_port(), free_port()
        cfg = filtered(port, up, [{"name": "test_tag_response"}])
        cfg["route_configs"][0]["virtual_hosts"][0]["routes"][0]["match"] = {"path": "/sayHello"}
        async with recorder("bolt", up, []), proxy_running(cfg):
            c = await client("bolt", port)
            answer = await c.call(bolt_request(1, method="sayHello"))
            assert status(answer) == 200 and answer.get_header("x-method") == "sayHello"
            assert answer.get_request_id() == 1
            missing = await c.call(bolt_request(2, method="other"))  # 404: made here
            assert status(missing) == 404 and missing.get_header("x-method") is None

    run_virtual(scenario())


@pytest.mark.parametrize(
    "frame_ms, waited",
    [(1, 0.001), (2, 0.002), (0, 3.0), (-5, 3.0), (7_000, 7.0)],
)
def test_the_frames_own_timeout_unless_it_has_none(frame_ms, waited):
    """A bolt frame's timeout (ms) counts when positive; 0, negative or none: the route's
    3 s. Answered 504 at that time, or up to a 10 ms tick after."""

    async def scenario():
        up, port = free_port(), free_port()
        async with (
            recorder("bolt", up, [], answer=False),
            proxy_running(one_cluster(port, up, route={"timeout_ms": 3_000})),
        ):
            c = await client("bolt", port)
            frame = bolt_untimed(1)
            frame.timeout = frame_ms
            t0 = now()
            answer = await c.call(frame, timeout=20)
            assert status(answer) == 504
            assert waited <= now() - t0 <= waited + 0.0101, now() - t0

    run_virtual(scenario())


def test_durations_in_the_access_log_and_the_histogram(tmp_path, monkeypatch):
    """Durations are measured on a high-resolution clock; here it is the virtual one, so a
    request answered 250 ms after it came is logged as 250.0 ms and summed as 0.25 s."""
    from protoc_x.runtime import proxy as proxy_module

    log_path = tmp_path / "access.jsonl"

    async def scenario():
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(proxy_module, "perf_counter", loop.time)
        up, port = free_port(), free_port()
        cfg = one_cluster(port, up)
        cfg["listeners"][0]["access_log"] = {"path": str(log_path), "format": "json"}
        async with recorder("bolt", up, [], delay=0.25), proxy_running(cfg) as proxy:
            c = await client("bolt", port)
            assert status(await c.call(bolt_untimed(1))) == 200
            labels = {"listener": "l", "protocol": "bolt", "cluster": "up"}
            return metric(proxy, "protocx_request_duration_seconds_sum", **labels)

    assert run_virtual(scenario()) == pytest.approx(0.25, abs=1e-9)
    (line,) = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert line["duration_ms"] == pytest.approx(250.0, abs=1e-3)


def test_workers_in_one_process_publish_their_own_metrics(tmp_path):
    """Workers 1 and 2 (of 3) each serve a request and publish into the shared directory:
    worker 0's view sums both."""
    from protoc_x.runtime.metrics import Metrics

    async def scenario():
        up = free_port()
        async with recorder("bolt", up, []):
            for worker in (1, 2):
                port = free_port()
                proxy = Proxy(parse_config(one_cluster(port, up), "."), PROTOCOLS,
                              worker=worker, workers=3, shared=str(tmp_path))  # fmt: skip
                await proxy.start()
                c = await client("bolt", port)
                assert status(await c.call(bolt_untimed(worker))) == 200
                await proxy.drain(1)

    run_virtual(scenario())
    text = Metrics(worker=0, shared=str(tmp_path)).text().decode()
    from prometheus_client.parser import text_string_to_metric_families

    total = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "protocx_requests_total")  # fmt: skip
    assert total == 2
