"""Upstream side: clusters, their endpoints, connection pools (multiplex: requests share a
connection and are matched by a per-connection id; pipeline: they share it and are matched by
their place in line; pingpong: one request per connection at a time; session: a client's
requests on a connection of its own, matched by place), keepalive heartbeats, goaway, and the
circuit breakers."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import Any

from . import built
from .api import DecodeError, Direction, PoolMode, StreamType, XFrame, XProtocol
from .network import FramedConnection, parse_address
from .router import _EMPTY, make_balancer
from .stream import Phase, Stream

log = logging.getLogger("protoc_x")
_RESPONSE, _ONEWAY, _QUIET = StreamType.RESPONSE, StreamType.ONEWAY, StreamType.QUIET
QUEUED, SENT = Phase.QUEUED, Phase.SENT
UNHEALTHY_S = 1.0  # an endpoint that refused a connection sits out this long
BACKLOG_LIMIT = 1 << 20  # bytes queued to an upstream before its clients stop being read
PINGPONG_CONNECTIONS = 1024  # a pingpong endpoint's max_connections by default (docs/config.md)


def seconds(ms: int) -> float:
    """A config's milliseconds, as the loop counts."""
    return ms / 1000


class Probe:
    """The proxy's own request on an upstream connection: a keepalive or a barrier."""

    __slots__ = ("kind", "seq", "timer", "up_id")  # seq, up_id: set by write_probe

    def __init__(self, kind: str):
        self.kind = kind
        self.timer = None


_COMPILED = built(__file__)  # (this module, compiled by Cython)

#: ids of these struct formats are written in place by :func:`_with_id`: format → (width,
#: big-endian, signed) (other formats, 8-byte ids among them, by the struct)
_ID_LAYOUTS = {
    order + code: (struct.calcsize(order + code), order != "<", code.islower())
    for order in "<>!"
    for code in "bBhHiIlL"
}


def _with_id(data: bytes, start: int, length: int, at: int, value: int, width: int, big: bool,
             signed: bool):  # fmt: skip
    """``data[start:start + length]`` as a bytearray, with the id ``value`` written over its
    ``width`` bytes at ``at`` as ``id_struct.pack_into`` writes it (two's complement), or None
    when ``value`` does not fit them (then the struct says why). Used compiled only, where it
    is C (pool.pxd): in Python the struct is the faster writer."""
    one = 1
    bits = 8 * width
    low = -(one << (bits - 1)) if signed else 0
    high = (one << (bits - 1 if signed else bits)) - 1
    if type(value) is not int or at < 0 or at > length - width:
        return None
    try:
        v = value  # (compiled: a C long long, which a larger int does not fit)
    except OverflowError:
        return None
    if v < low or v > high:
        return None
    out = bytearray(data[start : start + length])
    for k in range(width):
        shift = 8 * (width - 1 - k) if big else 8 * k
        out[at + k] = (v >> shift) & 0xFF
    return out


class UpstreamConnection(FramedConnection):
    direction = Direction.RESPONSE
    lane = True

    def __init__(self, pool: "EndpointPool", proto: XProtocol):
        super().__init__(proto)
        self.pool = pool
        mode = proto.pool_mode
        self.multiplex = mode is PoolMode.MULTIPLEX  # answers matched by id
        # answers matched by position (a session's connection too: it is one client's)
        self.pipeline = mode is PoolMode.PIPELINE or mode is PoolMode.SESSION
        self.owner = None  # session: the client connection this one serves
        self.pingpong = mode is PoolMode.PINGPONG
        self.ordered = proto.ordered
        self.has_goaway = proto.has_goaway
        self.id_struct = proto.id_struct
        layout = _ID_LAYOUTS.get(self.id_struct.format) if self.id_struct is not None else None
        self.id_width, self.id_big, self.id_signed = layout or (0, False, False)
        # the protocol's own id scheme, when it has one (ids are otherwise the counter itself)
        overridden = type(proto).generate_request_id is not XProtocol.generate_request_id
        self.generate = proto.generate_request_id if overridden else None
        self.inflight: dict[int, Any] = {}
        self.current: Any = None  # pingpong: the request being served
        # pipeline: what was written and is owed an answer, oldest first (a stream that timed
        # out keeps its place: its answer still comes, and is dropped)
        self.line: deque = deque()
        self.quiet: deque = deque()  # ordered protocols: quiet requests, in writing order
        self.next_id = 0
        self.seq = 0
        self.retired = False  # goaway: no new requests; close when the last one is answered
        self.paused_downstreams: set = set()
        self.keepalive_failures = 0
        self.keepalive_timer: asyncio.TimerHandle | None = None
        self.gauge = None  # protocx_upstream_connections child, once connected

    # -- requests out -----------------------------------------------------------------
    def new_id(self) -> int:
        """An id no request in flight here has."""
        inflight = self.inflight
        while True:
            self.next_id = uid = (self.next_id + 1) & 0x7FFFFFFF or 1
            if self.generate is not None:
                uid = self.generate(uid)
            if uid not in inflight:
                return uid

    def with_id(self, buf: bytes, start: int, length: int, at: int, value: int) -> bytearray:
        """The frame at ``buf[start:start + length]``, copied, with ``value`` as its id at
        ``at`` (where the scan found it)."""
        if _COMPILED and self.id_width and type(buf) is bytes:
            data = _with_id(buf, start, length, at, value, self.id_width, self.id_big,
                            self.id_signed)  # fmt: skip
            if data is not None:
                return data
        data = bytearray(buf[start : start + length])
        self.id_struct.pack_into(data, at, value)
        return data

    def write_stream(self, stream: Stream) -> None:
        stream.phase = SENT
        stream.upstream = self
        self.seq += 1
        stream.seq = self.seq
        kind = stream.kind
        if kind is _ONEWAY or not self.multiplex:
            if kind is not _ONEWAY:
                if self.pipeline:
                    self.line.append(stream)
                else:
                    self.current = stream
            data = stream.raw if stream.raw is not None else stream.frame.encode()
        else:
            uid = self.new_id()
            self.inflight[uid] = stream
            stream.up_id = uid
            raw = stream.raw
            if raw is not None:
                if stream.id_at >= 0:  # forward the bytes that came, with our id where the scan
                    data = self.with_id(raw, 0, len(raw), stream.id_at, uid)  # found it
                else:
                    data = bytearray(raw)
                    if not stream.frame.patch_request_id(data, uid):
                        raw = None
            if raw is None:
                frame = stream.frame
                frame.set_request_id(uid)
                data = frame.encode()
                frame.set_request_id(stream.down_id)
        down = stream.downstream
        if self.ordered and down is not None:
            if kind is _QUIET:
                self.quiet.append(stream)
            elif down.quiet_streams:
                self.barrier_elsewhere(down)
        self.send(data)
        if down is not None and (self.write_paused or self.out_bytes > BACKLOG_LIMIT):
            # the upstream cannot keep up: this client waits until it drains
            down.hold(self)
            self.paused_downstreams.add(down)

    def barrier_elsewhere(self, down) -> None:
        """The downstream's earlier quiet requests sit on other connections (a hashing
        cluster): a heartbeat there completes them once answered, before this answer is due."""
        waiting = [s for s in down.quiet_streams if not s.done]
        down.quiet_streams[:] = waiting
        for conn in {
            s.upstream for s in waiting if s.upstream is not self and s.upstream is not None
        }:
            if not conn.closed:
                conn.write_probe(Probe("barrier"))

    def write_probe(self, probe: Probe) -> bool:
        """A heartbeat of our own (keepalive or barrier); False if the protocol has none, or
        if this is a pingpong connection already waiting for an answer."""
        if self.current is not None:
            return False
        uid = self.new_id()
        ping = self.proto.trigger(uid)
        if ping is None:
            return False
        self.seq += 1
        probe.seq = self.seq
        probe.up_id = uid
        if self.multiplex:
            self.inflight[uid] = probe
        elif self.pipeline:
            self.line.append(probe)
        else:  # like a request: the connection serves nobody else until it is answered
            self.current = probe
            self.pool.take(self)
        self.send(ping.encode())
        return True

    def forget(self, stream: Stream) -> None:
        """A stream gave up (timeout): its late answer will be dropped (on a pipeline it keeps
        its place in line, done: the answer that comes for it is recognised and dropped)."""
        if self.multiplex:
            if self.inflight.get(stream.up_id) is stream:
                del self.inflight[stream.up_id]
        elif self.current is stream:
            # a pingpong connection still owes this answer: it cannot serve anyone else
            self.current = None
            self.abort()
        if stream in self.quiet:
            self.quiet.remove(stream)
        if self.retired and not self.busy():  # (what it was kept open for is over)
            self.close()

    def busy(self) -> int:
        return len(self.inflight) + len(self.line) + (1 if self.current is not None else 0)

    # -- answers in -------------------------------------------------------------------
    def on_scanned(self, found: tuple, buf: bytes, start: int) -> None:
        """The fast lane: an answer as its scan describes it, forwarded with no frame
        decoded (unless its id cannot be patched in place)."""
        length, rid, id_at, kind, special, _, _, status = found
        if special or kind is not _RESPONSE or self.first:  # (a handshake's answer: its frame)
            self.on_frame(self.frame_at(buf, start), buf, start, length)
            return
        self.answered(rid, buf, start, length, None, id_at, status)

    def on_frame(self, frame: XFrame, buf: bytes, start: int, length: int) -> None:
        """The full path: a decoded frame (a heartbeat, a goaway, the server's request)."""
        if self.has_goaway and frame.is_goaway():
            self.retire()
            return
        if frame.get_stream_type() is not _RESPONSE:
            if self.owner is not None:  # a session's: what the server sends unasked (a watch
                self.owner.send(buf[start : start + length])  # event) is its client's
                return
            self.server_request(frame)
            return
        self.answered(frame.get_request_id(), buf, start, length, frame, -1, None)

    def answered(self, rid, buf: bytes, start: int, length: int, frame: XFrame | None,
                 id_at: int, status) -> None:  # fmt: skip
        """An answer (``frame`` decoded, or ``id_at`` and ``status`` from its scan) for the
        request ``rid`` (multiplex) or the one in flight (pingpong)."""
        if self.multiplex:
            stream = self.inflight.pop(rid, None)
        elif self.pipeline:
            if not self.line:  # an answer to nothing: the server and we no longer agree
                log.warning(
                    "upstream %s answered more than it was asked: closing", self.pool.endpoint
                )
                self.abort()
                self.on_close(None)
                return
            stream = self.line.popleft()
            if stream.__class__ is not Probe and stream.done:
                stream = None  # its place, kept after a timeout: the late answer is dropped
        else:
            stream, self.current = self.current, None
        if stream is None:
            return  # an answer nobody waits for any more (timed out)
        if self.quiet:
            self.complete_quiet_before(stream.seq)
        if type(stream) is Probe:
            self.probe_answered(stream)
        else:
            request = stream  # (compiled: a Stream, its fields read in C)
            # (an answered quiet request left in self.quiet goes with the next answer)
            if self.multiplex:
                if id_at >= 0:
                    data = self.with_id(buf, start, length, id_at, request.down_id)
                else:
                    data = bytearray(buf[start : start + length])
                    if frame is None:
                        frame = self.frame_at(buf, start)
                    if not frame.patch_request_id(data, request.down_id):
                        frame.set_request_id(request.down_id)
                        data = frame.encode()
            else:
                data = buf[start : start + length]
            request.finish(frame, data, status)
        if self.retired:
            if not self.busy():
                self.close()
        elif self.pingpong:
            self.pool.release(self)

    def server_request(self, frame: XFrame) -> None:
        """The server asks something of us: a heartbeat gets its reply; nothing else is ours."""
        if frame.is_heartbeat():
            reply = self.proto.reply(frame)
            if reply is not None:
                self.send(reply.encode())
        else:
            log.warning("upstream %s sent a request frame; dropped", self.pool.endpoint)

    def complete_quiet_before(self, seq: int) -> None:
        """An ordered protocol answered something written later: quiet requests written
        before it got no answer, which is their success."""
        quiet = self.quiet
        while quiet and quiet[0].seq < seq:
            stream = quiet.popleft()
            self.inflight.pop(stream.up_id, None)  # (its id is not reused while it is here)
            stream.finish(None, None)

    def on_decode_error(self, error: DecodeError) -> None:
        log.warning("upstream %s sent undecodable bytes: %s", self.pool.endpoint, error)
        self.abort()
        self.on_close(None)

    def on_close(self, exc) -> None:
        self.closed = True
        owner = self.owner
        if owner is not None:  # the session is over: its client takes no more requests,
            self.owner = None  # and closes once those in flight are answered (502)
            owner.end_session(self)
        if self.gauge is not None:
            self.gauge.dec()
            self.gauge = None
        if self.keepalive_timer is not None:
            self.keepalive_timer.cancel()
        streams = list(self.inflight.values())
        self.inflight.clear()
        if self.current is not None:
            streams.append(self.current)
            self.current = None
        streams += self.line
        self.line.clear()
        self.quiet.clear()
        self.pool.lost(self)
        for stream in streams:
            if stream.__class__ is Probe or stream.done:
                continue
            if stream.kind is _QUIET:
                stream.finish(None, None)
            else:
                stream.upstream_failed(self.pool.endpoint)
        self.resume_downstreams()

    def on_write_resumed(self) -> None:
        self.resume_downstreams()

    def after_flush(self) -> None:
        if self.paused_downstreams and not self.write_paused:
            self.resume_downstreams()  # the kernel took it all: no resume_writing will come

    def resume_downstreams(self) -> None:
        paused, self.paused_downstreams = self.paused_downstreams, set()
        for down in paused:
            down.release(self)

    def retire(self) -> None:
        self.retired = True
        if self.owner is not None:  # a session the server ends: its client sends no more
            self.owner.sessionless()
        self.pool.retire(self)
        if not self.busy():
            self.close()

    # -- keepalive --------------------------------------------------------------------
    def start_keepalive(self, interval: float, timeout: float, failures: int) -> None:
        """The protocol's heartbeat whenever nothing was read, and no heartbeat sent, for
        ``interval`` seconds (not while requests are in flight: they have their timeouts);
        ``failures`` heartbeats in a row unanswered within ``timeout`` close the connection."""
        loop = self.loop

        def tick(when: float) -> None:
            # ``when``, the time this timer was armed for, has come (a timer of uvloop's may
            # run half a millisecond early: loop.time() could say it has not)
            if self.closed:
                return
            due = self.last_activity + interval
            if due <= when:  # nothing read since the timer was armed
                if not self.busy():
                    probe = Probe("keepalive")
                    if self.write_probe(probe):
                        probe.timer = loop.call_at(
                            when + timeout, self.probe_missed, probe, failures
                        )
                due = when + interval
            self.keepalive_timer = loop.call_at(due, tick, due)

        tick(self.last_activity)  # arms the first for last_activity + interval

    def probe_answered(self, probe: Probe) -> None:
        if probe.timer is not None:
            probe.timer.cancel()
        if probe.kind == "keepalive":
            self.keepalive_failures = 0

    def probe_missed(self, probe: Probe, failures: int) -> None:
        """A keepalive not answered in time (an answer cancels this timer)."""
        if self.closed:
            return
        if self.multiplex:
            del self.inflight[probe.up_id]  # its late answer will be dropped
        elif self.pingpong:
            failures = 1  # a pingpong connection still owes the answer: it can serve nobody
        self.keepalive_failures += 1
        if self.keepalive_failures >= failures:
            log.warning("upstream %s missed %d keepalives: closing", self.pool.endpoint, failures)
            self.abort()
            self.on_close(None)


class EndpointPool:
    """Connections to one endpoint of a cluster."""

    def __init__(self, cluster: "Cluster", endpoint: str, proto: XProtocol):
        self.cluster = cluster
        self.endpoint = endpoint
        self.host, self.port = parse_address(endpoint)
        self.proto = proto
        # multiplex and pipeline: requests share connections (pingpong: one each at a time;
        # session: one client's each)
        self.shared = proto.pool_mode in (PoolMode.MULTIPLEX, PoolMode.PIPELINE)
        self.session = proto.pool_mode is PoolMode.SESSION
        self.max_connections = cluster.max_connections or (
            1 if self.shared else PINGPONG_CONNECTIONS
        )
        self.conns: list[UpstreamConnection] = []  # established, accepting requests
        self.idle: list[UpstreamConnection] = []  # pingpong: free connections
        self.connecting = 0
        self.waiting: deque[Stream] = deque()
        self.held: set = set()  # clients paused while a connection is being made
        self.rr = 0
        self.unhealthy_until = 0.0
        self.active = 0  # requests in flight here (least_request)
        self.retired = False  # a reload removed its endpoint or cluster
        self.loop = asyncio.get_event_loop()

    def healthy(self) -> bool:
        return self.loop.time() >= self.unhealthy_until

    def send(self, stream: Stream) -> None:
        stream.endpoint = self
        if self.session:
            self.send_session(stream)
            return
        if self.shared:
            conns = self.conns
            if conns and (self.connecting or len(conns) >= self.max_connections):
                self.rr += 1
                conn = conns[self.rr % len(conns)]
                conn.write_stream(stream)
                return
            # a connection is needed (the first, or one more): the request waits for it
            if not self.connecting:
                self.connect()
            self.queue(stream)
            return
        if self.idle:
            conn = self.idle.pop()
            self.write_pingpong(conn, stream)
            return
        if len(self.conns) + self.connecting < self.max_connections:
            self.connect()
        self.queue(stream)

    def send_session(self, stream: Stream) -> None:
        """A session protocol's request: on its client's own connection, opened for the
        client's first request (the others wait for it, and the client is not read meanwhile)."""
        down = stream.downstream
        conn = down.session
        if conn is not None:
            conn.write_stream(stream)
            return
        if down.ended:  # its session is over, or will not open: nothing more goes upstream
            stream.fail(502, "protoc-x: 502 the session is closed")
            return
        if down.session_pool is None:
            if len(self.conns) + self.connecting >= self.max_connections:
                stream.fail(503, "protoc-x: 503 every connection to the endpoint is a session")
                return
            down.session_pool = self
            self.connecting += 1
            asyncio.ensure_future(self._connect(down))
        stream.phase = QUEUED
        down.session_waiting.append(stream)
        self.cluster.pending += 1
        down.hold(self)
        self.held.add(down)

    def write_pingpong(self, conn: UpstreamConnection, stream: Stream) -> None:
        conn.write_stream(stream)
        if stream.kind is _ONEWAY:
            self.release(conn)  # nothing comes back: the connection is free again

    def queue(self, stream: Stream) -> None:
        stream.phase = QUEUED
        self.waiting.append(stream)
        self.cluster.pending += 1
        down = stream.downstream
        if down is not None and self.connecting:
            # nothing can go out before the connection is up: read no more from this client
            down.hold(self)
            self.held.add(down)

    def unqueue(self, stream: Stream) -> None:
        """``stream`` gave up waiting for a connection (its deadline): out of the queue, so
        the circuit breaker counts it pending no more."""
        try:
            (stream.downstream.session_waiting if self.session else self.waiting).remove(stream)
        except ValueError:
            return
        self.cluster.pending -= 1

    def release_held(self) -> None:
        held, self.held = self.held, set()
        for down in held:
            down.release(self)

    def dequeue(self) -> Stream | None:
        while self.waiting:
            stream = self.waiting.popleft()
            self.cluster.pending -= 1
            if not stream.done:
                return stream
        return None

    def connect(self) -> None:
        self.connecting += 1
        asyncio.ensure_future(self._connect())

    async def _connect(self, owner=None) -> None:
        """Open a connection: the pool's, or (``owner``) a session's for that client."""
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: UpstreamConnection(self, self.proto), self.host, self.port
                ),
                self.cluster.connect_timeout,
            )
            if conn.closed:  # closed before we got it (uvloop may run connection_lost first)
                raise ConnectionResetError("connection closed by the peer at once")
        except (OSError, asyncio.TimeoutError) as e:
            self.connecting -= 1
            self.unhealthy_until = self.loop.time() + UNHEALTHY_S
            self.cluster.unhealthy_until = max(self.cluster.unhealthy_until, self.unhealthy_until)
            log.warning("cannot connect to %s: %s", self.endpoint, str(e) or "timeout")
            if owner is not None:
                self.open_session(owner, None)
                return
            if not self.conns and not self.connecting:
                while (stream := self.dequeue()) is not None:
                    stream.upstream_failed(self.endpoint)
            self.release_held()
            return
        self.connecting -= 1
        self.conns.append(conn)
        metrics = self.cluster.metrics
        if metrics is not None:
            conn.gauge = metrics.child(metrics.upstream, self.cluster.name, self.endpoint)
            conn.gauge.inc()
        ka = self.cluster.keepalive
        if ka is not None and owner is None:  # (a session's liveness is its client's)
            conn.start_keepalive(ka[0], ka[1], ka[2])
        if owner is not None:
            self.open_session(owner, conn)
        elif self.shared:
            while (stream := self.dequeue()) is not None:
                self.send(stream)
        else:
            self.release(conn)
        self.release_held()  # those still over the limit were held again by write_stream
        if self.retired:
            conn.retire()

    def open_session(self, owner, conn: UpstreamConnection | None) -> None:
        """The connection of ``owner``'s session is up: its waiting requests go out on it. Or
        it could not be made (None), or the client left or its handshake failed meanwhile:
        they fail, as no request goes out without its handshake before it."""
        waiting, owner.session_waiting = owner.session_waiting, []
        self.cluster.pending -= len(waiting)
        if conn is None or owner.closed or owner.ended:
            if conn is None:
                owner.end_session(None)  # (before the failures: it closes after the last)
            else:
                conn.close()
            for stream in waiting:
                stream.upstream_failed(self.endpoint)
        else:
            conn.owner = owner
            owner.session = conn
            for stream in waiting:
                if not stream.done:
                    conn.write_stream(stream)
        self.release_held()

    def release(self, conn: UpstreamConnection) -> None:
        """A pingpong connection is free (open, not retired): give it the next waiting
        request."""
        stream = self.dequeue()
        if stream is not None:
            self.write_pingpong(conn, stream)
        else:
            self.idle.append(conn)

    def take(self, conn: UpstreamConnection) -> None:
        """A pingpong connection is busy with a heartbeat of ours: not free for requests."""
        if conn in self.idle:
            self.idle.remove(conn)

    def lost(self, conn: UpstreamConnection) -> None:
        for lst in (self.conns, self.idle):
            if conn in lst:
                lst.remove(conn)
        if self.waiting and len(self.conns) + self.connecting < self.max_connections:
            self.connect()

    def retire_all(self) -> None:
        """Take no new request: connections close once answered (or timed out), one still
        being made once it has served the requests waiting for it; a session's client takes no
        more requests, as when its server ends the session."""
        self.retired = True
        for conn in list(self.conns) + list(self.idle):
            conn.retire()

    def retire(self, conn: UpstreamConnection) -> None:
        for lst in (self.conns, self.idle):
            if conn in lst:
                lst.remove(conn)

    def close(self) -> None:
        for conn in list(self.conns) + list(self.idle):
            conn.close()


class Cluster:
    """A named set of endpoints speaking one protocol, with a load balancer and breakers."""

    def __init__(self, config, metrics=None) -> None:
        self.name = config.name
        self.metrics = metrics
        budget = config.retry_budget
        self.retry_percent = budget.percent if budget is not None else 20.0
        self.retry_min = budget.min_concurrency if budget is not None else 3
        self.retrying: set[Stream] = set()  # retried requests not yet answered
        self.connect_timeout = seconds(config.connect_timeout_ms)
        self.request_timeout_ms = config.request_timeout_ms
        self.max_connections = config.max_connections
        ka = config.keepalive
        self.keepalive = (
            (seconds(ka.interval_ms), seconds(ka.timeout_ms), ka.failures) if ka else None
        )
        cb = config.circuit_breakers
        self.max_pending = cb.max_pending_requests if cb else 1024
        self.max_requests = cb.max_requests if cb else 10000
        self.config = config
        self.pools: dict[tuple[str, str], EndpointPool] = {}  # (protocol, endpoint) → pool
        self.pools_of: dict[XProtocol, dict[str, EndpointPool]] = {}  # the same, for lookups
        self.set_endpoints(config.endpoints)
        self.pending = 0
        self.active = 0
        self.unhealthy_until = 0.0  # the latest time any endpoint sits out until
        self.loop = asyncio.get_event_loop()
        if metrics is not None:
            metrics.child(metrics.pending, self.name).set_function(lambda: self.pending)
            metrics.child(metrics.active, self.name).set_function(lambda: self.active)

    def set_endpoints(self, endpoints) -> None:
        """Balance over ``endpoints`` from now on (a reload that changed only them): the pools
        of endpoints that stay keep their connections; those of the others are retired
        (:meth:`EndpointPool.retire_all`)."""
        self.endpoints = [str(e) for e in endpoints]
        weights = [getattr(e, "weight", 1) for e in endpoints]  # (an Address's is 1)
        self.balancer = make_balancer(
            self.config.lb_policy, self.endpoints, active=self.active_at, weights=weights
        )
        self.hash_header = self.balancer.hash_header  # hash:NAME balancing: the header's value
        self.only = self.endpoints[0] if len(self.endpoints) == 1 else None
        for key, pool in list(self.pools.items()):
            if pool.endpoint not in self.endpoints:
                del self.pools[key]
                del self.pools_of[pool.proto][pool.endpoint]
                pool.retire_all()

    def retire_all(self) -> None:
        """A reload removed or replaced this cluster: every pool is retired."""
        for pool in self.pools.values():
            pool.retire_all()

    def active_at(self, endpoint: str) -> int:
        return sum(p.active for (name, ep), p in self.pools.items() if ep == endpoint)

    def pool(self, proto: XProtocol, endpoint: str) -> EndpointPool:
        by_endpoint = self.pools_of.get(proto)
        if by_endpoint is None:
            by_endpoint = self.pools_of[proto] = {}
        pool = by_endpoint.get(endpoint)
        if pool is None:
            pool = by_endpoint[endpoint] = self.pools[(proto.name, endpoint)] = EndpointPool(
                self, endpoint, proto
            )
        return pool

    def dispatch(self, stream: Stream) -> None:
        """Send ``stream`` to an endpoint, or fail it with 503 (breakers, no healthy one)."""
        if self.active >= self.max_requests or self.pending >= self.max_pending:
            if self.metrics is not None:
                full = (
                    "max_requests" if self.active >= self.max_requests else "max_pending_requests"
                )
                self.metrics.overflowed(self.name, full)
            stream.fail(503, "protoc-x: 503 circuit breaker open")
            return
        proto = stream.downstream.proto
        keys = ()
        if self.hash_header is not None:  # the request's header picks the endpoint
            try:
                keys = stream.header_values(self.hash_header)
            except DecodeError:
                pass  # (no key: round robin)
        avoid = _EMPTY
        if stream.tried or (self.unhealthy_until and self.unhealthy_until > self.loop.time()):
            avoid = frozenset(stream.tried) | frozenset(
                [ep for ep in self.endpoints if not self.pool(proto, ep).healthy()]
            )
        if not keys:
            endpoint = (
                self.balancer.pick(None, avoid) if avoid else self.only or self.balancer.pick()
            )
        else:
            endpoint = self.balancer.pick(keys[0], avoid)
            if len(keys) > 1 and self.only is None:
                # every key of the request must live where the first does: one request is
                # never split across endpoints
                for key in keys[1:]:
                    other = self.balancer.pick(key, avoid)
                    if other != endpoint:
                        stream.fail(
                            400,
                            f"protoc-x: 400 keys {keys[0]!r} and {key!r} are on different "
                            f"endpoints ({endpoint}, {other}): the request cannot be split",
                        )
                        return
        if endpoint is None:
            if stream.tried:  # a retry found nowhere else to go: the failure stands
                stream.fail(502)
            else:
                stream.fail(503, "protoc-x: 503 no healthy endpoint")
            return
        try:
            pool = self.pools_of[proto][endpoint]
        except KeyError:
            pool = self.pool(proto, endpoint)
        self.send_to(pool, stream)

    def send_to(self, pool: EndpointPool, stream: Stream) -> None:
        """``stream`` to ``pool``: the endpoint :meth:`dispatch` chose, or the one a session
        is on (its requests after the first are neither balanced nor held by breakers)."""
        if stream.kind is not _ONEWAY:
            stream.cluster = self
            self.active += 1
            pool.active += 1
        pool.send(stream)

    def may_retry(self) -> bool:
        """Envoy's retry budget: retries in progress (retried requests not answered yet) stay
        under a share of active requests (at least ``retry_min`` at a time)."""
        retrying = self.retrying
        for stream in [s for s in retrying if s.done]:
            retrying.discard(stream)
        return len(retrying) < max(self.retry_min, self.active * self.retry_percent / 100)

    def retry(self, stream: Stream) -> None:
        if self.metrics is not None:
            self.metrics.retried(self.name)
        self.retrying.add(stream)
        self.dispatch(stream)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
