"""Minutes of the proxy's time in milliseconds: the real proxy, upstreams and clients over real
sockets on 127.0.0.1, on an event loop whose clock is virtual (virtual_clock.py). The runtime's
one clock for behaviour is the loop's, so request timeouts, keepalives, an endpoint's time out
of rotation, idle sweeps, rate limits, fault delays and metric publishing all run on it, and
every time asserted here is exact: nothing waits for the wall clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from protoc_x.runtime.metrics import Metrics
from protoc_x.runtime.pool import UNHEALTHY_S
from protoc_x.runtime.stream import Deadlines

from .harness import PROTOCOLS, client, config, free_port, proxy_running, recorder
from .test_governance import dubbo_request
from .test_proxy_behaviour import bolt_request
from .virtual_clock import run_virtual

BOLT, DUBBO = PROTOCOLS["bolt"], PROTOCOLS["dubbo"]
EPS = 1e-9  # float rounding of sums of times


def now() -> float:
    return asyncio.get_running_loop().time()


async def sleep_until(when: float) -> None:
    """Wake at loop time ``when`` exactly (``asyncio.sleep(when - now())`` may miss by a
    rounding error, which matters at a boundary)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_at(when, fut.set_result, None)
    await fut


class Stamped(list):
    """The frames an upstream saw, and the loop time each came at (``times``)."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def append(self, frame) -> None:
        super().append(frame)
        self.times.append(now())

    def heartbeats(self) -> list[float]:
        return [t for f, t in zip(self, self.times) if f.is_heartbeat()]


def one_cluster(port: int, up: int, cluster=None, route=None, listener=None) -> dict:
    return config(
        [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": ["bolt", "dubbo"],
          "route_config": "r", **(listener or {})}],
        [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {}, "route": {"cluster": "up", **(route or {})}}]}]}],
        [{"name": "up", "endpoints": [f"127.0.0.1:{up}"], **(cluster or {})}],
    )  # fmt: skip


def bolt_untimed(rid: int):
    frame = bolt_request(rid)
    frame.timeout = 0  # no timeout of its own: the route's or the cluster's applies
    return frame


def test_the_virtual_clock_jumps_to_each_timer_exactly_and_takes_no_real_time():
    async def scenario():
        loop = asyncio.get_running_loop()
        t0, real = now(), time.monotonic()
        fired = []
        for delay in (3600.0, 0.001, 86400.0, 0.0):
            loop.call_at(t0 + delay, lambda: fired.append(now()))
        await asyncio.sleep(86400.5)
        assert fired == [t0, t0 + 0.001, t0 + 3600.0, t0 + 86400.0]
        assert time.monotonic() - real < 1

    run_virtual(scenario())


# -------------------------------------------------------------------------- request timeouts


def dubbo_timed(rid: int):
    frame = dubbo_request(rid)
    frame.set_header("timeout", "30000")  # the frame's own timeout (ms), over the cluster's
    return frame


@pytest.mark.parametrize(
    "make, route, cluster",
    [
        (bolt_untimed, {"timeout_ms": 30_000}, {}),
        (bolt_untimed, {}, {"request_timeout_ms": 30_000}),
        (dubbo_timed, {}, {"request_timeout_ms": 5_000}),
    ],
    ids=["bolt-route-timeout", "bolt-cluster-timeout", "dubbo-frame-timeout"],
)
def test_a_30_s_request_timeout_answers_the_protocols_timeout_at_30_s_not_before(
    make, route, cluster
):
    """Requests arriving at uneven times, 0.7 ms apart (so their deadlines fall in different
    10 ms ticks and at different places in them), each get the protocol's own timeout answer
    30 s after it arrived: never before, at most one tick (Deadlines.RESOLUTION) after."""
    proto = BOLT if make is bolt_untimed else DUBBO

    async def scenario():
        up, port = free_port(), free_port()
        seen = Stamped()
        async with (
            recorder(proto.name, up, seen, answer=False),
            proxy_running(one_cluster(port, up, cluster=cluster, route=route)),
        ):
            c = await client(proto.name, port)
            sent, answered, futures = [], {}, []
            for i in range(1, 31):
                fut = c.send(make(i))
                sent.append(now())
                fut.add_done_callback(lambda f, i=i: answered.setdefault(i, now()))
                futures.append(fut)
                await asyncio.sleep(0.0007)
            answers = await asyncio.wait_for(asyncio.gather(*futures), 100)
            assert len(seen) == 30 and seen.times == sent  # all went upstream at once
            for i, (answer, t0) in enumerate(zip(answers, sent), 1):
                assert answer.get_request_id() == i
                assert proto.runtime_status(answer.get_status()) == 504
                assert answer.get_status() == proto.map_status(504)
                waited = answered[i] - t0
                assert 30.0 - EPS <= waited <= 30.0 + Deadlines.RESOLUTION + EPS, (i, waited)

    run_virtual(scenario())


def test_a_request_answered_in_time_is_not_timed_out_and_a_late_answer_is_dropped():
    async def scenario():
        up, port = free_port(), free_port()
        answer_after = {0: 29.99, 1: 30.02}  # by the order the upstream sees them
        async with (
            recorder("bolt", up, [], delay=answer_after.__getitem__),
            proxy_running(one_cluster(port, up, route={"timeout_ms": 30_000})),
        ):
            c = await client("bolt", port)
            t0 = now()
            in_time = await c.call(bolt_untimed(1), timeout=60)
            assert BOLT.runtime_status(in_time.get_status()) == 200
            assert now() - t0 == pytest.approx(29.99, abs=EPS)
            t1 = now()
            late = await c.call(bolt_untimed(2), timeout=60)
            assert BOLT.runtime_status(late.get_status()) == 504
            assert 30.0 <= now() - t1 <= 30.0 + Deadlines.RESOLUTION
            await asyncio.sleep(1)  # the upstream's late answer comes and is dropped
            assert not c.conn.by_id and not c.conn.closed

    run_virtual(scenario())


# ------------------------------------------------------------------------------- keepalives


def test_keepalive_pings_an_idle_upstream_every_interval_for_ten_minutes():
    """interval 15 s: an idle upstream connection gets a heartbeat 15 s after the last thing
    read from it, so 40 in 10 minutes; a request answered in between postpones the next."""

    async def scenario():
        up, port = free_port(), free_port()
        seen = Stamped()
        cluster = {"keepalive": {"interval_ms": 15_000, "timeout_ms": 1_000, "failures": 3}}
        async with recorder("bolt", up, seen), proxy_running(one_cluster(port, up, cluster)):
            c = await client("bolt", port)
            await c.call(bolt_request(1))
            t0 = now()  # the connection's last read: the answer
            await sleep_until(t0 + 600.5)  # (not at a ping's time: which comes first is open)
            pings = seen.heartbeats()
            assert len(pings) == 40, len(pings)
            assert [round(t - t0, 6) for t in pings] == [15.0 * k for k in range(1, 41)]
            await sleep_until(t0 + 607)  # between two pings
            await c.call(bolt_request(2))
            await sleep_until(t0 + 700)
            later = [round(t - t0, 6) for t in seen.heartbeats()[40:]]
            assert later == [622.0, 637.0, 652.0, 667.0, 682.0, 697.0]

    run_virtual(scenario())


class Unreliable(list):
    """A recorder's ``seen`` that tells it to leave chosen heartbeats unanswered (by their
    number, from 1): the recorder answers only while ``conn.answer`` is true."""

    def __init__(self, unanswered):
        super().__init__()
        self.unanswered = unanswered
        self.times: list[float] = []
        self.server = None

    def append(self, frame) -> None:
        super().append(frame)
        self.times.append(now())
        if frame.is_heartbeat():
            n = sum(1 for f in self if f.is_heartbeat())
            for conn in self.server.conns:
                conn.answer = n not in self.unanswered


def test_keepalive_closes_after_failures_misses_in_a_row_and_an_answer_resets_the_count():
    """failures 3: two heartbeats missed, one answered, over and over for ten minutes keep the
    connection; from the 40th on none is answered, and the third miss in a row, 1 s (the
    probe timeout) after the 42nd heartbeat, closes it."""
    unanswered = {n for n in range(1, 40) if n % 3} | set(range(40, 100))

    async def scenario():
        up, port = free_port(), free_port()
        seen = Unreliable(unanswered)
        cluster = {"keepalive": {"interval_ms": 15_000, "timeout_ms": 1_000, "failures": 3}}
        async with (
            recorder("bolt", up, seen) as server,
            proxy_running(one_cluster(port, up, cluster)),
        ):
            seen.server = server
            c = await client("bolt", port)
            await c.call(bolt_request(1))
            t0 = now()
            # the upstream's end of the connection sees the proxy close it at the same virtual
            # time (the clock stands still until a close is seen by the other end)
            (conn,) = server.conns
            lost = asyncio.get_running_loop().create_future()
            on_close = conn.on_close
            conn.on_close = lambda exc: (on_close(exc), lost.done() or lost.set_result(now()))
            closed_at = await asyncio.wait_for(lost, 2000)  # (virtual seconds)
            pings = [t - t0 for f, t in zip(seen, seen.times) if f.is_heartbeat()]
            assert len(pings) == 42
            assert [round(t, 6) for t in pings] == [15.0 * k for k in range(1, 43)]
            assert closed_at - t0 == pytest.approx(42 * 15 + 1, abs=EPS)

    run_virtual(scenario())


# ---------------------------------------------------------------------- unhealthy endpoints


def test_a_refused_endpoint_sits_out_exactly_unhealthy_s_each_time():
    """A refused connect answers 502 and sets the endpoint aside until UNHEALTHY_S later: a
    request a millisecond before that is 503 (no healthy endpoint) without a connect; one at
    that time is served. A second refusal sets it aside anew, from its own time."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with proxy_running(one_cluster(port, up)):
            c = await client("bolt", port)

            async def status(rid):
                return BOLT.runtime_status((await c.call(bolt_untimed(rid))).get_status())

            assert await status(1) == 502  # nothing listens
            failed = now()
            async with recorder("bolt", up, seen) as server:
                await sleep_until(failed + UNHEALTHY_S - 0.001)
                assert await status(2) == 503 and not server.conns  # not even tried
                await sleep_until(failed + UNHEALTHY_S)
                assert await status(3) == 200 and len(seen) == 1
            for conn in server.conns:
                conn.abort()
            await asyncio.sleep(5)
            assert await status(4) == 502  # the connection went and nothing listens again
            failed_again = now()
            await sleep_until(failed_again + UNHEALTHY_S - 0.001)
            assert await status(5) == 503
            await sleep_until(failed_again + UNHEALTHY_S)
            assert await status(6) == 502  # tried again (and refused again)

    run_virtual(scenario())


def test_each_endpoint_of_a_cluster_comes_back_at_its_own_time():
    """Two endpoints, refused half a second apart: each sits out UNHEALTHY_S from its own
    refusal; the first is tried again at its time exactly, while the second still sits out."""

    async def scenario():
        a, b, port = free_port(), free_port(), free_port()
        cfg = one_cluster(port, a)
        cfg["clusters"][0]["endpoints"].append(f"127.0.0.1:{b}")
        seen: list = []
        async with proxy_running(cfg):
            c = await client("bolt", port)

            async def status(rid):
                return BOLT.runtime_status((await c.call(bolt_untimed(rid))).get_status())

            assert await status(1) == 502  # round robin: a first, refused
            a_failed = now()
            await sleep_until(a_failed + 0.5)
            assert await status(2) == 502  # a sits out: b, refused
            b_failed = now()
            async with recorder("bolt", a, seen) as server:
                await sleep_until(a_failed + UNHEALTHY_S - 0.001)
                assert await status(3) == 503 and not server.conns
                await sleep_until(a_failed + UNHEALTHY_S)
                assert await status(4) == 200 and len(seen) == 1
                await sleep_until(b_failed + UNHEALTHY_S - 0.001)
                assert await status(5) == 200 and len(seen) == 2  # b still sits out

    run_virtual(scenario())


# ----------------------------------------------------------------------------- idle sweeps


def test_idle_downstream_connections_are_swept_after_the_idle_timeout_and_not_before():
    """idle_timeout 10 min (the sweep runs every frame_timeout / 4 = 7.5 s): a client that
    sends a request every 9 min 59 s is kept for half an hour; one that stops is closed
    between 10 min and 10 min + one sweep period after its last request; a request in
    flight for longer than the idle timeout keeps its connection, which is idle from its
    answer on."""
    period = 30.0 / 4

    async def scenario():
        up, port = free_port(), free_port()
        slow = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0, 4: 700.0, 5: 0.0}  # by upstream arrival
        async with (
            recorder("bolt", up, [], delay=slow.__getitem__),
            proxy_running(one_cluster(port, up, route={"timeout_ms": 1_000_000})),
        ):
            c = await client("bolt", port)
            closed = []
            c.conn.lost.add_done_callback(lambda _: closed.append(now()))
            t0 = now()
            for i in range(1, 4):
                await sleep_until(t0 + 599 * i)
                await c.call(bolt_untimed(i))
            last = now()
            assert not closed and last - t0 == pytest.approx(1797)
            await asyncio.wait_for(asyncio.shield(c.conn.lost), 700)
            assert 600 < closed[0] - last <= 600 + period, closed[0] - last
            # a slow request: 700 s in flight, then idle from its answer
            c2 = await client("bolt", port)
            c2_closed = []
            c2.conn.lost.add_done_callback(lambda _: c2_closed.append(now()))
            await c2.call(bolt_untimed(4))  # (the upstream's 4th: no delay)
            start = now()
            answer = await c2.call(bolt_untimed(5), timeout=800)
            assert BOLT.runtime_status(answer.get_status()) == 200
            answered = now()
            assert answered - start == pytest.approx(700) and not c2_closed
            await asyncio.wait_for(asyncio.shield(c2.conn.lost), 700)
            assert 600 < c2_closed[0] - answered <= 600 + period, c2_closed[0] - answered

    run_virtual(scenario())


def test_a_frame_left_half_sent_is_closed_after_the_frame_timeout():
    async def scenario():
        up, port = free_port(), free_port()
        async with (
            recorder("bolt", up, []),
            proxy_running(one_cluster(port, up, listener={"frame_timeout_ms": 30_000})),
        ):
            c = await client("bolt", port)
            data = bolt_untimed(1).encode()
            c.conn.send(data[:10])
            t0 = now()
            await asyncio.wait_for(asyncio.shield(c.conn.lost), 60)
            assert 30 < now() - t0 <= 30 + 30 / 4

    run_virtual(scenario())


# ------------------------------------------------------------------------------ rate limits


def test_rate_limit_through_the_proxy_over_ten_minutes_allows_burst_plus_rate_times_time():
    """0.5 tokens/s, burst 5, a request every 0.4 s for 10 minutes: 5 + 0.5 · 600 = 305 pass
    (± 1), the rest get the protocol's 429 on a connection that stays open."""

    async def scenario():
        up, port = free_port(), free_port()
        limit = {"name": "local_rate_limit", "config": {"tokens_per_second": 0.5, "burst": 5}}
        seen: list = []
        async with (
            recorder("bolt", up, seen),
            proxy_running(one_cluster(port, up, listener={"stream_filters": [limit]})),
        ):
            c = await client("bolt", port)
            t0 = now()
            statuses = []
            for i in range(1501):
                await sleep_until(t0 + i * 0.4)
                statuses.append((await c.call(bolt_untimed(i + 1))).get_status())
            assert now() - t0 == pytest.approx(600)
            ok, limited = BOLT.map_status(200), BOLT.map_status(429)  # THREADPOOL_BUSY
            assert set(statuses) == {ok, limited}
            passed = statuses.count(ok)
            assert abs(passed - (5 + 0.5 * 600)) <= 1, passed
            assert len(seen) == passed

    run_virtual(scenario())


# ------------------------------------------------------------------------ fault delay, metrics


def test_a_fault_delay_holds_a_request_for_its_time_and_its_deadline_starts_after():
    async def scenario():
        up, port = free_port(), free_port()
        fault = {"name": "fault", "config": {"delay": {"fixed_delay_ms": 45_000, "percent": 100}}}
        seen = Stamped()
        async with (
            recorder("bolt", up, seen),
            proxy_running(one_cluster(port, up, route={"timeout_ms": 30_000},
                                      listener={"stream_filters": [fault]})),
        ):  # fmt: skip
            c = await client("bolt", port)
            t0 = now()
            answer = await c.call(bolt_untimed(1), timeout=100)
            assert BOLT.runtime_status(answer.get_status()) == 200
            assert seen.times[0] - t0 == pytest.approx(45, abs=EPS)
            assert now() - t0 == pytest.approx(45, abs=EPS)

    run_virtual(scenario())


def test_a_worker_publishes_its_metrics_four_times_a_second(tmp_path):
    async def scenario():
        metrics = Metrics(worker=1, shared=str(tmp_path))
        published = []
        publish = metrics.publish
        metrics.publish = lambda: (published.append(now()), publish())
        t0 = now()
        metrics.start_publishing()
        await sleep_until(t0 + 600.1)
        metrics.stop_publishing()
        # one at the start, one per PUBLISH_S for 10 minutes, one at the stop
        assert len(published) == 1 + 600 / Metrics.PUBLISH_S + 1, len(published)
        gaps = {round(b - a, 6) for a, b in zip(published[:-2], published[1:-1])}
        assert gaps == {Metrics.PUBLISH_S}

    run_virtual(scenario())
