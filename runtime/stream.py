"""Stream layer: one ``Stream`` per downstream request, from routing to its answer, and the
ordered output that returns answers in request order where the protocol needs it.

A request's path through the runtime, in five files: ``network.py`` reads and scans
(``FramedConnection.data_received``); ``proxy.py`` makes its ``Stream``, runs the filters and
routes it (``DownstreamConnection``); ``pool.py`` picks an endpoint and writes it with an id of
its own (``Cluster``, ``EndpointPool``, ``UpstreamConnection``) and reads the answer; this file
holds the stream, its :class:`Phase` and the interfaces it is handed between the others by
(:class:`Downstream`, :class:`Target`, :class:`Endpoint`, :class:`Upstream`); the generated
codec scans and, when asked, decodes."""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from typing import Any, Protocol, runtime_checkable

from .api import Direction, StreamType, XFrame, XProtocol


class Phase(enum.IntEnum):
    """A request's phases, in order. Each is entered in one place:

    ========  =====================================================================
    ARRIVED   ``proxy.DownstreamConnection.on_scanned`` (the fast lane) or
              ``on_frame`` (a decoded frame): a Stream; then the request filters
    ROUTED    ``proxy.DownstreamConnection.route``: a cluster, its retries and the
              deadline; then the routed filters and ``Target.dispatch``
    QUEUED    ``pool.EndpointPool.queue``: waiting for an upstream connection
    SENT      ``pool.UpstreamConnection.write_stream``: on an upstream connection,
              with the id it has there
    DONE      ``Stream.end``: answered, failed or timed out, exactly once
    ========  =====================================================================

    A retry (``Stream.upstream_failed``) dispatches a SENT or QUEUED stream again."""

    ARRIVED = 0
    ROUTED = 1
    QUEUED = 2
    SENT = 3
    DONE = 4


_ARRIVED, _DONE, _QUEUED = Phase.ARRIVED, Phase.DONE, Phase.QUEUED


@runtime_checkable
class Downstream(Protocol):
    """What a stream needs of the connection its request came on
    (``proxy.DownstreamConnection``)."""

    proto: XProtocol
    deadlines: "Deadlines"
    listener: Any  # its name and filters, for the filters' view of a stream

    def deliver(self, stream: "Stream", data, frame=None, code=None, status=None) -> None:
        """Answer ``stream``: an upstream's answer, a quiet completion or ``code``'s."""

    def answer_error(self, stream: "Stream", code: int, message: str | None) -> None:
        """Answer ``stream`` with the protocol's own error for a runtime code."""


@runtime_checkable
class Target(Protocol):
    """What routing and a stream need of a cluster (``pool.Cluster``)."""

    name: str
    active: int  # its requests in flight (the circuit breakers count them)
    request_timeout_ms: int

    def dispatch(self, stream: "Stream") -> None:
        """Send ``stream`` to one of its endpoints, or answer it with an error."""

    def may_retry(self) -> bool:
        """Whether the retry budget has room for one more retry."""

    def retry(self, stream: "Stream") -> None:
        """Dispatch ``stream`` again, avoiding the endpoints that failed it."""


@runtime_checkable
class Endpoint(Protocol):
    """What a stream needs of the endpoint it went to (``pool.EndpointPool``)."""

    endpoint: str  # HOST:PORT
    active: int

    def unqueue(self, stream: "Stream") -> None:
        """``stream``, waiting for a connection, gave up: it is no longer pending."""


@runtime_checkable
class Upstream(Protocol):
    """What a stream needs of the upstream connection it was written to
    (``pool.UpstreamConnection``)."""

    def forget(self, stream: "Stream") -> None:
        """``stream`` gave up (its deadline): its late answer is dropped."""


#: "not known yet: ask the frame" (a stream's timeout before anything read it)
ASK = object()


class Slot:
    """A place in a downstream connection's answer order."""

    __slots__ = ("done", "data")

    def __init__(self) -> None:
        self.done = False
        self.data: bytes | None = None


class OrderedOutput:
    """Answers leave in request order: a finished answer waits for those before it."""

    def __init__(self, send) -> None:
        self.slots: deque[Slot] = deque()
        self.send = send

    def reserve(self) -> Slot:
        slot = Slot()
        self.slots.append(slot)
        return slot

    def fill(self, slot: Slot, data: bytes | None) -> None:
        slot.done = True
        slot.data = data
        slots = self.slots
        while slots and slots[0].done:
            head = slots.popleft()
            if head.data is not None:
                self.send(head.data)


TICKS_PER_SECOND = 100  # the deadlines' resolution: 10 ms


class Deadlines:
    """Request timeouts without a timer per request: a stream is filed under the first tick
    (10 ms) after its deadline and removed when it finishes; one loop timer, armed for the
    earliest tick, times out the streams of every tick that has come. A stream times out at
    its deadline on the loop's clock or up to a tick later, never before (uvloop's timers
    have millisecond resolution and may run half a millisecond early: the tick a timer was
    armed for counts as come)."""

    RESOLUTION = 1 / TICKS_PER_SECOND

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.buckets: dict[int, dict] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.next_tick = 0
        # the tick of the last stream filed, and its bucket: a burst's streams share a tick
        self.last_tick = -1  # (-1: none; ticks count from 1)
        self.last_key: int | None = None  # (the tick as the streams' ``timer``)
        self.last_bucket: dict | None = None

    def add(self, stream: "Stream", at: float) -> None:
        """File ``stream`` to time out at loop time ``at``."""
        tick = int(at * TICKS_PER_SECOND) + 1
        if tick != self.last_tick:
            key = tick  # (compiled: the tick as an int object, made once for the bucket)
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = {}
                if self.handle is None or tick < self.next_tick:
                    self.arm(tick)
            self.last_tick, self.last_key, self.last_bucket = tick, key, bucket
        self.last_bucket[stream] = None
        stream.timer = self.last_key
        stream.deadlines = self

    def remove(self, stream: "Stream") -> None:
        tick = stream.timer
        if tick is not None:
            bucket = self.last_bucket if tick is self.last_key else self.buckets.get(tick)
            if bucket is not None:
                bucket.pop(stream, None)
        stream.timer = None
        stream.deadlines = None

    def arm(self, tick: int) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.next_tick = tick
        self.handle = self.loop.call_at(tick / TICKS_PER_SECOND, self.fire)

    def fire(self) -> None:
        self.handle = None
        # the tick this timer was armed for has come, and those the loop passed while busy;
        # the next ones have not (their streams' deadlines may be later than now)
        now = max(self.next_tick, int(self.loop.time() * TICKS_PER_SECOND))
        due = [t for t in self.buckets if t <= now]
        for tick in sorted(due):
            bucket = self.buckets.pop(tick)
            self.last_tick, self.last_key, self.last_bucket = -1, None, None  # (it may be it)
            for stream in list(bucket):
                stream.timer = None
                stream.deadlines = None
                stream.on_timeout()
        if self.buckets:
            self.arm(min(self.buckets))


class Stream:
    """One request in flight: where it came from, where it went, and its deadline. It is also
    what stream filters see of the request (``frame``, ``service``, ``method``, ``header()``,
    ``extra_headers``, ``modified``, ``protocol``, ``listener``, ``cluster_name``).

    Every attribute is set in ``__init__`` (a compiled Stream is a C struct: stream.pxd)."""

    def __init__(
        self,
        downstream: Downstream | None,
        frame: XFrame | None,
        kind: StreamType,
        raw: bytes | None,
        arrived: float,
        started: float,
        down_id: int | None = None,
        id_at: int = -1,
        timeout=ASK,
        service=None,
        method=None,
    ):
        """``frame`` None: the request came by the fast lane, and its scan gave ``down_id``,
        ``id_at``, ``timeout``, ``service`` and ``method``; the frame is decoded from ``raw``
        when something first asks for it."""
        self.downstream = downstream
        self._frame = frame
        self.down_id = frame.get_request_id() if frame is not None else down_id
        self.kind = kind
        self.raw = raw  # the request's bytes as they arrived (None once a filter changed it)
        self.received = len(raw) if raw is not None else 0  # (the access log's BYTES_RECEIVED)
        # the loop's time of the read that brought it: what its deadline and the rate limits
        # count from (the runtime's one clock for behaviour, which tests can drive)
        self.arrived = arrived
        self.started = started  # time.perf_counter() then: for reported durations only
        self.phase = _ARRIVED
        self.slot: Slot | None = None  # its place in an ordered answer order
        self.timer: int | None = None  # its deadline tick in the Deadlines (None: none)
        self.deadlines: Deadlines | None = None  # those Deadlines
        self.upstream: Upstream | None = None  # the connection it was written to
        self.seq = 0  # order of writing on that connection
        self.cluster: Target | None = None  # the cluster counting it as active (until it ends)
        self.endpoint: Endpoint | None = None  # the endpoint it went to
        self.service = service
        self.method = method
        self.retries = 0  # retries left (connect failure or reset before an answer)
        self.tried: tuple = ()  # endpoints that failed it
        self.cluster_name: str | None = None
        self.target: Target | None = None  # the cluster routing chose (counted once dispatched)
        self.up_id = 0  # its id on a multiplexed upstream connection
        self.extra_headers: dict | None = None  # filters' headers seen by routing, not forwarded
        self.modified = False  # a filter changed the frame: it is re-encoded on the way out
        self.paused = False  # a filter held it for a while
        self.id_at = id_at  # where the id sits in ``raw`` (-1: the frame says, or re-encoded)
        self.timeout = timeout  # the timeout the request carries (ms, or None; ASK: the frame's)
        self.span = None  # its OpenTelemetry span, when the proxy traces (runtime/tracing.py)

    @property
    def frame(self) -> XFrame:
        """The request's frame, decoded from its bytes on first use by the fast lane's
        streams (a header matcher, a filter that reads or changes frames, an error answer)."""
        frame = self._frame
        if frame is None:
            frame = self._frame = self.downstream.proto.decode(self.raw, 0, Direction.REQUEST)
        return frame

    @frame.setter
    def frame(self, frame: XFrame) -> None:
        self._frame = frame

    @property
    def protocol(self):
        return self.downstream.proto

    @property
    def listener(self) -> str:
        return self.downstream.listener.name

    def header(self, name: str):
        """A request header as routing sees it: a filter's extra header, else the frame's."""
        extra = self.extra_headers
        if extra is not None and name in extra:
            return extra[name]
        return self.frame.get_header(name)

    def header_values(self, name: str) -> list:
        """Every value of a request header (a command's keys), as routing sees them."""
        extra = self.extra_headers
        if extra is not None and name in extra:
            value = extra[name]
            return [] if value is None else [value]
        return self.frame.get_header_values(name)

    @property
    def done(self) -> bool:
        return self.phase is _DONE

    def end(self) -> bool:
        """Mark the stream done (False if it already was): its deadline and its place in the
        cluster's counts go."""
        if self.phase is _DONE:
            return False
        self.phase = _DONE
        if self.timer is not None:
            self.deadlines.remove(self)
        if self.cluster is not None:
            self.leave_cluster()
        return True

    def leave_cluster(self) -> None:
        """No longer counted as active by its cluster and endpoint (the circuit breakers)."""
        self.cluster.active -= 1
        if self.endpoint is not None:
            self.endpoint.active -= 1
        self.cluster = None

    def finish(self, frame: XFrame | None, data: bytes | None, status=None) -> None:
        """The upstream answered (``frame``/``data``) or, for a quiet request, completed
        silently (None). An answer that came by the fast lane has no ``frame`` but its
        ``status`` (the protocol's code, or None)."""
        if self.end() and self.downstream is not None:
            self.downstream.deliver(self, data, frame, status=status)

    def fail(self, code: int, message: str | None = None) -> None:
        """Answer with the protocol's own error for a runtime code (quiet: nothing)."""
        if self.end() and self.downstream is not None:
            self.downstream.answer_error(self, code, message)

    def upstream_failed(self, endpoint) -> None:
        """The connection to ``endpoint`` could not be made, or was reset before answering:
        retry elsewhere when the route allows it and the budget has room, else 502."""
        if self.done:
            return
        cluster = self.cluster
        if self.retries > 0 and cluster is not None and cluster.may_retry():
            self.retries -= 1
            self.tried = self.tried + (endpoint,)
            self.leave_cluster()
            cluster.retry(self)
            return
        self.fail(502)

    def on_timeout(self) -> None:
        # (Deadlines.fire has taken it off its tick: self.timer is None)
        if self.phase is _QUEUED:
            self.endpoint.unqueue(self)  # it waits for a connection no more
        upstream = self.upstream
        if upstream is not None:
            upstream.forget(self)
        if self.kind is StreamType.QUIET:
            self.finish(None, None)  # its client expects no answer
        else:
            self.fail(504)
