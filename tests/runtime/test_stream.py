"""The stream layer in-process: a Stream's life (answered once, its deadline and its place in
the cluster's counts released, retries within their budget, timeouts), the ordered output and
the deadline ticks on a hand-driven loop. Through the proxy: test_proxy_behaviour.py and, on a
virtual clock, test_virtual_time.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from protoc_x.runtime.api import StreamType
from protoc_x.runtime.stream import Deadlines, OrderedOutput, Stream


class Frame:
    def __init__(self, headers=None, rid=42):
        self.headers = headers or {}
        self.rid = rid

    def get_request_id(self):
        return self.rid

    def get_header(self, name):
        return self.headers.get(name)


class Loop:
    """call_at and time() of an event loop, driven by hand."""

    def __init__(self):
        self.now = 0.0
        self.timers: list[Handle] = []

    def time(self):
        return self.now

    def call_at(self, when, callback):
        handle = Handle(when, callback)
        self.timers.append(handle)
        return handle

    def armed(self) -> list[float]:
        return [h.when for h in self.timers if not h.cancelled]

    def run_until(self, t: float) -> None:
        """Advance to ``t``, running each timer due by then (in time order)."""
        while True:
            due = sorted((h for h in self.timers if not h.cancelled and h.when <= t),
                         key=lambda h: h.when)  # fmt: skip
            if not due:
                break
            handle = due[0]
            self.now = max(self.now, handle.when)
            self.timers.remove(handle)
            handle.callback()
        self.now = t


class Handle:
    def __init__(self, when, callback):
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self):
        self.cancelled = True


class Downstream:
    """What a stream tells its connection: ``events`` in order."""

    def __init__(self, deadlines=None):
        self.events: list[tuple] = []
        self.deadlines = deadlines or Deadlines(Loop())
        self.proto = SimpleNamespace(name="p")
        self.listener = SimpleNamespace(name="l")

    def deliver(self, stream, data, frame=None, status=None):
        self.events.append(("deliver", stream, data, frame, status))

    def answer_error(self, stream, code, message):
        self.events.append(("error", stream, code, message))


def make(kind=StreamType.REQUEST, downstream=None, frame=None, raw=b"raw") -> Stream:
    return Stream(downstream, frame or Frame(), kind, raw, 12.5, 99.0)


# ---- Stream ---------------------------------------------------------------------------------


def test_a_new_stream_holds_what_the_request_brought():
    down = Downstream()
    frame = Frame(rid=7)
    s = Stream(down, frame, StreamType.QUIET, b"\x01\x02", 3.25, 8.5)
    assert (s.downstream, s.frame, s.down_id, s.kind) == (down, frame, 7, StreamType.QUIET)
    assert (s.raw, s.arrived, s.started) == (b"\x01\x02", 3.25, 8.5)
    assert (s.protocol, s.listener) == (down.proto, "l")
    assert (s.done, s.timer, s.cluster, s.retries, s.tried) == (False, None, None, 0, ())


def test_header_prefers_a_filters_extra_header_then_the_frames():
    s = make(frame=Frame({"color": "blue", "zone": "a"}))
    assert s.header("color") == "blue" and s.header("none") is None
    s.extra_headers = {"color": "green"}
    assert s.header("color") == "green"  # the filter's
    assert s.header("zone") == "a"  # not among the extra ones: the frame's


def test_an_answer_of_the_fast_lane_carries_its_status_not_a_frame():
    down = Downstream()
    s = make(downstream=down)
    s.finish(None, b"answer", 7)
    s.finish(None, b"again", 0)
    assert down.events == [("deliver", s, b"answer", None, 7)]


@pytest.mark.parametrize("how", ["finish", "fail"])
def test_a_stream_is_answered_once(how):
    down = Downstream()
    s = make(downstream=down)
    answer = Frame()
    if how == "finish":
        s.finish(answer, b"answer")
        s.finish(answer, b"again")
        s.fail(502)
        assert down.events == [("deliver", s, b"answer", answer, None)]
    else:
        s.fail(503, "protoc-x: 503 circuit breaker open")
        s.fail(502)
        s.finish(answer, b"late")
        assert down.events == [("error", s, 503, "protoc-x: 503 circuit breaker open")]
    assert s.done is True and s.end() is False


def test_a_stream_without_a_connection_ends_silently():
    s = make(downstream=None)
    s.finish(None, b"x")
    assert s.done
    s = make(downstream=None)
    s.fail(504)
    assert s.done


def cluster_and_endpoint(stream, may_retry=True, on_retry=None):
    cluster = SimpleNamespace(active=5, retried=[], may_retry=lambda: may_retry)
    endpoint = SimpleNamespace(active=3)

    def retry(s):
        cluster.retried.append(s)
        if on_retry is not None:
            on_retry(s)

    cluster.retry = retry
    stream.cluster, stream.endpoint = cluster, endpoint
    return cluster, endpoint


def test_ending_releases_the_cluster_and_endpoint_counts_once():
    s = make(downstream=Downstream())
    cluster, endpoint = cluster_and_endpoint(s)
    s.finish(None, b"a")
    assert (cluster.active, endpoint.active, s.cluster) == (4, 2, None)
    s.fail(502)
    assert (cluster.active, endpoint.active) == (4, 2)
    s = make(downstream=Downstream())
    cluster, _ = cluster_and_endpoint(s)
    s.endpoint = None  # counted by the cluster only
    s.fail(503)
    assert cluster.active == 4 and s.cluster is None


def test_upstream_failure_retries_within_the_routes_retries_then_502():
    down = Downstream()
    s = make(downstream=down)
    cluster, endpoint = cluster_and_endpoint(s)

    def redispatched(stream):  # the cluster counts it again where it goes
        stream.cluster, stream.endpoint = cluster, endpoint
        cluster.active += 1
        endpoint.active += 1

    cluster.retry = lambda stream: (cluster.retried.append(stream), redispatched(stream))
    s.retries = 3
    for n, ep in enumerate(["e1", "e2", "e3"], 1):
        s.upstream_failed(ep)
        assert s.retries == 3 - n and cluster.retried == [s] * n and not down.events
        assert (cluster.active, endpoint.active) == (5, 3)  # left, then counted again
    assert s.tried == ("e1", "e2", "e3")
    s.upstream_failed("e1")  # no retries left
    assert down.events == [("error", s, 502, None)] and len(cluster.retried) == 3
    assert (cluster.active, endpoint.active) == (4, 2)
    s.upstream_failed("e2")  # done: nothing more
    assert len(down.events) == 1


def test_a_retry_that_finds_nowhere_to_go_fails_once_with_the_counts_right():
    down = Downstream()
    s = make(downstream=down)
    s.retries = 1
    cluster, endpoint = cluster_and_endpoint(s, on_retry=lambda stream: stream.fail(502))
    s.upstream_failed("e1")
    assert down.events == [("error", s, 502, None)]
    assert (cluster.active, endpoint.active, s.tried, s.retries) == (4, 2, ("e1",), 0)


@pytest.mark.parametrize("budget, retries, cluster", [(False, 2, True), (True, 0, True), (True, 2, False)])  # fmt: skip
def test_upstream_failure_without_retry_is_502(budget, retries, cluster):
    down = Downstream()
    s = make(downstream=down)
    c = None
    if cluster:
        c, _ = cluster_and_endpoint(s, may_retry=budget)
    s.retries = retries
    s.upstream_failed("e1")
    assert down.events == [("error", s, 502, None)] and s.tried == ()
    assert c is None or c.retried == []


@pytest.mark.parametrize(
    "kind, event",
    [(StreamType.REQUEST, ("error", 504, None)), (StreamType.QUIET, ("deliver", None, None, None))],
)
def test_timeout_drops_the_upstreams_claim_and_answers_504_or_completes_a_quiet_request(
    kind, event
):
    down = Downstream()
    s = make(kind, downstream=down)
    forgotten = []
    s.upstream = SimpleNamespace(forget=forgotten.append)
    s.on_timeout()
    assert forgotten == [s]
    assert down.events == [(event[0], s, *event[1:])]
    s = make(kind, downstream=Downstream())  # not written upstream yet
    s.on_timeout()
    assert s.done


# ---- OrderedOutput --------------------------------------------------------------------------


def test_ordered_output_sends_in_reservation_order_and_skips_silent_answers():
    sent = []
    out = OrderedOutput(sent.append)
    a, b, c, d = (out.reserve() for _ in range(4))
    out.fill(c, b"c")
    out.fill(b, None)  # a quiet request that completed silently
    assert sent == []
    out.fill(a, b"a")
    assert sent == [b"a", b"c"]
    out.fill(d, b"d")
    assert sent == [b"a", b"c", b"d"] and not out.slots
    e = out.reserve()
    out.fill(e, b"")  # an empty answer is still sent
    assert sent[-1] == b""


# ---- Deadlines ------------------------------------------------------------------------------


class Timed(Stream):
    """A stream that records when it timed out."""

    def __init__(self, loop, log):
        super().__init__(None, Frame(), StreamType.REQUEST, b"raw", 0.0, 0.0)
        self.loop, self.log = loop, log

    def on_timeout(self):
        self.log.append((self, self.loop.now))


def test_deadlines_time_out_in_the_first_tick_after_the_deadline():
    loop, log = Loop(), []
    deadlines = Deadlines(loop)
    a, b, c = (Timed(loop, log) for _ in range(3))
    deadlines.add(a, 1.0)  # tick 101: 1.01 s
    deadlines.add(b, 1.004)  # the same tick
    deadlines.add(c, 0.5)  # earlier: the timer is re-armed for tick 51
    assert (a.timer, b.timer, c.timer) == (101, 101, 51)
    assert loop.armed() == [0.51]
    loop.run_until(0.509)
    assert log == []
    loop.run_until(0.6)
    assert log == [(c, 0.51)] and c.timer is None and loop.armed() == [1.01]
    loop.run_until(2.0)
    assert log == [(c, 0.51), (a, 1.01), (b, 1.01)] and loop.armed() == []


def test_a_later_deadline_keeps_the_armed_timer():
    loop, log = Loop(), []
    deadlines = Deadlines(loop)
    a, b = Timed(loop, log), Timed(loop, log)
    deadlines.add(a, 1.0)
    deadlines.add(b, 2.0)
    assert loop.armed() == [1.01] and len(loop.timers) == 1
    loop.run_until(3.0)
    assert log == [(a, 1.01), (b, 2.01)]


def test_a_removed_stream_does_not_time_out():
    loop, log = Loop(), []
    deadlines = Deadlines(loop)
    a, b = Timed(loop, log), Timed(loop, log)
    deadlines.add(a, 1.0)
    deadlines.add(b, 1.0)
    deadlines.remove(a)
    assert a.timer is None
    deadlines.remove(a)  # twice: nothing
    loop.run_until(2.0)
    assert log == [(b, 1.01)]


def test_a_stream_is_removed_from_its_own_tick_not_the_last_filed():
    loop, log = Loop(), []
    deadlines = Deadlines(loop)
    a, b = Timed(loop, log), Timed(loop, log)
    deadlines.add(a, 1.0)
    deadlines.add(b, 2.0)
    deadlines.remove(a)
    loop.run_until(3.0)
    assert log == [(b, 2.01)]


def test_a_stream_filed_under_a_tick_that_has_fired_still_times_out():
    # (the last tick's bucket is kept at hand for the next stream: once fired, never again)
    loop, log = Loop(), []
    deadlines = Deadlines(loop)
    a, b, c = (Timed(loop, log) for _ in range(3))
    deadlines.add(a, 1.0)
    loop.run_until(1.5)
    assert log == [(a, 1.01)]
    deadlines.add(b, 1.0)  # the same tick, come and gone: the next timer times it out
    deadlines.add(c, 1.0)
    assert b.timer == c.timer == 101 and loop.armed() == [1.01]
    deadlines.remove(c)
    loop.run_until(2.0)
    assert log == [(a, 1.01), (b, 1.5)] and c.timer is None


def test_a_finished_stream_leaves_the_deadlines():
    loop = Loop()
    deadlines = Deadlines(loop)
    down = Downstream(deadlines)
    s = make(downstream=down)
    forgotten = []
    s.upstream = SimpleNamespace(forget=forgotten.append)
    deadlines.add(s, 1.0)
    s.finish(None, b"in time")
    loop.run_until(2.0)
    assert down.events == [("deliver", s, b"in time", None, None)] and forgotten == []
    t = make(downstream=down)
    deadlines.add(t, 3.0)
    loop.run_until(4.0)
    assert down.events[-1] == ("error", t, 504, None) and t.done


def test_a_late_timer_times_out_every_tick_that_has_come():
    loop, log = Loop(), []
    deadlines = Deadlines(loop)
    a, b, c = (Timed(loop, log) for _ in range(3))
    deadlines.add(a, 1.0)  # tick 101
    deadlines.add(b, 1.05)  # tick 106
    deadlines.add(c, 1.5)  # tick 151
    (handle,) = loop.timers
    loop.timers.clear()
    loop.now = 1.2  # the loop was busy: the timer runs late, once
    handle.callback()
    assert log == [(a, 1.2), (b, 1.2)] and loop.armed() == [1.51]


def test_a_timer_a_little_early_counts_its_tick_as_come():
    loop, log = Loop(), []
    deadlines = Deadlines(loop)
    a = Timed(loop, log)
    deadlines.add(a, 1.0)
    (handle,) = loop.timers
    loop.now = 1.0095  # uvloop ran it half a millisecond early
    handle.callback()
    assert log == [(a, 1.0095)]
