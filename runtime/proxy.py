"""Proxy layer: downstream connections, and the path of one request — decode, local
heartbeats, routing, cluster and endpoint choice — wired to the upstream pools; plus the
listeners and the graceful drain."""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import time
from time import perf_counter
from typing import Sequence

from .accesslog import AccessLog
from .api import DecodeError, Direction, PoolMode, StreamType, XFrame, XProtocol
from .config import MAX_INT as MAX_TIMEOUT_MS  # the longest timeout a config may set
from .engine import detect
from .filters import Reject, StreamFilter, filters as filter_registry
from .metrics import Metrics
from .network import FramedConnection, Sweeper
from .pool import Cluster
from .router import RouteTable, WeightedPicker
from .stream import ASK, Deadlines, OrderedOutput, Phase, Stream

log = logging.getLogger("protoc_x")
_REQUEST, _RESPONSE = StreamType.REQUEST, StreamType.RESPONSE
_ONEWAY, _QUIET = StreamType.ONEWAY, StreamType.QUIET
ROUTED = Phase.ROUTED


class Route:
    """A route's action, resolved: which cluster(s), and its timeout. A cluster the config
    does not have (a control plane's route naming one it has not sent yet) is None: 503."""

    __slots__ = ("cluster", "picker", "timeout_ms", "clusters", "retries")

    def __init__(self, action, clusters: dict[str, Cluster]):
        self.timeout_ms = action.timeout_ms or None
        self.retries = action.retries or 0
        self.picker = None
        if action.cluster is not None:
            self.cluster = clusters.get(action.cluster)
        else:
            self.cluster = None
            self.picker = WeightedPicker([(w.name, w.weight) for w in action.weighted_clusters])
        self.clusters = clusters

    def choose(self) -> Cluster | None:
        if self.picker is None:
            return self.cluster
        return self.clusters.get(self.picker.pick())


class Listener:
    """A listening address: its protocols, routes and connection limits."""

    def __init__(self, config, protocols: Sequence[XProtocol], routes: RouteTable, proxy: "Proxy"):
        self.config = config
        self.name = config.name
        self.protocols = list(protocols)
        self.routes = routes
        self.proxy = proxy
        self.sweeper = Sweeper(config.idle_timeout_ms / 1000, config.frame_timeout_ms / 1000)
        self.servers: list[asyncio.AbstractServer] = []
        self.door: _Door | None = None
        self.conns: set[DownstreamConnection] = set()
        registry = filter_registry()
        self.filters = [
            registry[f.name](registry[f.name].Config.model_validate(f.config), proxy.metrics)
            for f in config.stream_filters
        ]
        for f in self.filters:
            if hasattr(f, "share"):
                f.share = 1.0 / proxy.workers  # a local rate limit holds for the whole proxy
        self.response_filters = [f for f in self.filters if f.touches_responses]
        self.hooks = {
            hook: [
                getattr(f, hook) for f in self.filters
                if getattr(type(f), hook) is not getattr(StreamFilter, hook)
            ]
            for hook in ("on_request", "on_routed")
        }  # fmt: skip
        if proxy.tracer is not None:  # (first: the filters' answers are in the span)
            self.hooks["on_request"].insert(0, self.trace)
        self.gauge = proxy.metrics.child(proxy.metrics.downstream, self.name)
        log_cfg = config.access_log
        self.access_log = (
            AccessLog(log_cfg.path, log_cfg.format, log_cfg.text_format, log_cfg.json_format)
            if log_cfg is not None
            else None
        )

    def trace(self, stream: Stream) -> None:
        self.proxy.tracer.start(stream, self.name)

    async def start(self, socks: list[socket.socket]) -> None:
        """Listen on the sockets :meth:`bind` gave."""
        loop = asyncio.get_running_loop()
        door = self.door = _Door(self)
        for sock in socks:  # (create_server makes them non-blocking)
            self.servers.append(await loop.create_server(door.accept, sock=sock))
        self.sweeper.start()

    def set_routes(self, routes: RouteTable) -> None:
        """A reload's route table: the next request of every connection is routed by it."""
        self.routes = routes
        for conn in self.conns:
            conn.routes = routes

    def accept(self) -> DownstreamConnection:
        conn = DownstreamConnection(self)
        self.sweeper.conns.add(conn)
        return conn

    def take_over(self, old: "Listener") -> None:
        """Serve ``old``'s address on its own sockets (a reload changed this listener but
        not its address): connections accepted from now on are this listener's."""
        self.servers, old.servers = old.servers, []
        self.door, old.door = old.door, None
        self.door.listener = self
        self.sweeper.start()

    def stop_accepting(self) -> None:
        """Close the listening sockets (unless a successor took them over); its connections
        are left to :meth:`Proxy.close_connections`."""
        for server in self.servers:
            server.close()


class _Door:
    """Where a listening socket's new connections go: the listener serving its address now
    (a reload may hand the socket to a changed listener of the same address)."""

    __slots__ = ("listener",)

    def __init__(self, listener: Listener):
        self.listener = listener

    def accept(self) -> DownstreamConnection:
        return self.listener.accept()


class DownstreamConnection(FramedConnection):
    direction = Direction.REQUEST
    lane = True

    def __init__(self, listener: Listener):
        protocols = listener.protocols
        super().__init__(protocols[0] if len(protocols) == 1 else None)
        self.listener = listener
        self.has_heartbeat = False
        self.draining = False
        self.answered_at = 0.0
        self.max_frame_bytes = listener.config.max_frame_bytes
        self.inflight = 0
        self.deadlines = listener.proxy.deadlines
        self.output: OrderedOutput | None = None
        self.quiet_streams: list[Stream] = []
        self.routes = listener.routes
        self.request_hooks = listener.hooks["on_request"]
        self.routed_hooks = listener.hooks["on_routed"]
        self.metrics = listener.proxy.metrics
        self.cell = None  # the metrics' cell of the last answer
        self.codes = None  # the runtime codes of the statuses its answers had (runtime_code)
        # session protocols (``pool session``): the upstream connection of this client's own,
        # its pool and route (those of its first request), and its requests waiting for it
        self.sessions = False
        self.session = None
        self.session_pool = None
        self.session_route = None
        self.session_waiting: list[Stream] = []
        # its first request (the handshake), and the requests that came after it before it
        # was sent: they are routed after it, so that it opens the session
        self.handshake: Stream | None = None
        self.session_backlog: list[Stream] = []
        if self.proto is not None:
            self.protocol_chosen()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.listener.conns.add(self)
        self.listener.gauge.inc()
        if self.listener.proxy.draining:
            self.close()

    def protocol_chosen(self) -> None:
        self.sessions = self.proto.pool_mode is PoolMode.SESSION
        # (a session's heartbeats keep the server's session alive: they go upstream)
        self.has_heartbeat = self.proto.has_heartbeat and not self.sessions
        if self.proto.ordered:
            self.output = OrderedOutput(self.send)

    def choose_protocol(self, data: bytes) -> bool:
        found = detect(self.listener.protocols, data)
        if not found:
            if found is False:
                names = ", ".join(p.name for p in self.listener.protocols)
                self.fail(f"first bytes {bytes(data[:8]).hex()} match none of: {names}")
            elif len(data) > 64:
                self.fail("no protocol of this listener matches the first bytes")
            return False  # (wait for more bytes, unless the connection was closed)
        self.proto = found
        self.protocol_chosen()
        return True

    def idle_since(self) -> float | None:
        if self.inflight:
            return None
        return max(self.last_activity, self.answered_at)  # (a long request's answer counts)

    def quiet_pending(self) -> bool:
        """Quiet requests of this connection still wait upstream: a heartbeat now is the
        client's barrier (a cache protocol's no-op after quiet sets), so it goes upstream
        behind them instead of being answered here."""
        quiet = self.quiet_streams
        if quiet:
            quiet[:] = [s for s in quiet if not s.done]
        return bool(quiet)

    # -- requests -----------------------------------------------------------------------
    def on_scanned(self, found: tuple, buf: bytes, start: int) -> None:
        """The fast lane: a request as its scan describes it, with no frame decoded (one is,
        from the stream's bytes, only if something asks for it)."""
        length, rid, id_at, kind, special, service, method, timeout = found
        if special or kind is _RESPONSE or kind is None or self.first:
            # (a handshake is decoded: its frame knows it is first, for an error answer)
            self.on_frame(self.frame_at(buf, start), buf, start, length)
            return
        # behaviour counts on the loop's clock (the read's time); durations are measured on a
        # high-resolution one: the loop's (uvloop: milliseconds) would make a fast request's 0
        # or 1 ms
        stream = Stream(self, None, kind, buf[start : start + length], self.last_activity,
                        perf_counter(), rid, id_at, timeout, service, method)  # fmt: skip
        self.admit(stream)

    def on_frame(self, frame: XFrame, buf: bytes, start: int, length: int) -> None:
        """The full path: a decoded request (a heartbeat, or one the scan could not read)."""
        kind = frame.get_stream_type()
        if kind is _RESPONSE:
            log.warning("%s: a client sent a response frame; dropped", self.listener.name)
            return
        if self.has_heartbeat and frame.is_heartbeat() and not self.quiet_pending():
            self.answer_heartbeat(frame, kind)
            return
        stream = Stream(
            self, frame, kind, buf[start : start + length], self.last_activity, perf_counter()
        )
        try:
            stream.service = frame.get_service()
            stream.method = frame.get_method()
            answer = self.proto.local_answer(frame) if self.proto.has_local_answers else None
        except DecodeError as e:
            self.admit(stream, f"protoc-x: 400 {e.reason}")
            return
        self.admit(stream, None, answer)

    def admit(self, stream: Stream, invalid: str | None = None, answer=None) -> None:
        """A new request: its place in the answer order, then the request filters and routing
        (or, ``invalid``, a 400 answer saying why; or ``answer``, the proxy's own answer: the
        frame of the spec's ``answer when``, and whether the connection closes after it)."""
        kind = stream.kind
        if self.sessions and self.handshake is None:
            self.handshake = stream
        if kind is not _ONEWAY:
            self.inflight += 1
            if self.output is not None:
                stream.slot = self.output.reserve()
                if kind is _QUIET:
                    self.quiet_streams.append(stream)
        if invalid is not None:
            stream.fail(400, invalid)
            return
        if answer is not None:
            frame, close = answer
            stream.end()
            if close:  # no request after it: the ones before it are answered, then it closes
                self.last_request("answered and closing")
            if kind is _ONEWAY:  # (its client expects no answer)
                self.deliver(stream, None, code=self.runtime_code(frame.get_status()))
            else:
                self.deliver(stream, frame.encode(), frame)
            return
        if self.request_hooks and not self.passes(stream, self.request_hooks, 0):
            return
        self.filtered(stream)

    def answer_heartbeat(self, frame: XFrame, kind: StreamType) -> None:
        reply = self.proto.reply(frame)
        if reply is not None and kind is not _ONEWAY:
            data = reply.encode()
            if self.output is not None:
                self.output.fill(self.output.reserve(), data)
            else:
                self.send(data)

    def passes(self, stream: Stream, chain: list, index: int) -> bool:
        """Run ``chain`` (the request or the routed hooks: a hook of each filter that has it)
        from ``index`` on: True when every one let the request pass. Otherwise one answered it,
        or holds it and goes on with the rest of the chain, then the request's next step,
        later."""
        try:
            for i in range(index, len(chain)):
                verdict = chain[i](stream)
                if verdict is not None:
                    if isinstance(verdict, Reject):
                        stream.fail(verdict.code, verdict.message)
                    else:  # Pause: hold the request, then go on with the next filter
                        stream.paused = True
                        self.loop.call_later(
                            verdict.seconds, self.resume_filters, stream, chain, i + 1
                        )
                    return False
        except DecodeError as e:
            stream.fail(400, f"protoc-x: 400 {e.reason}")
            return False
        return True

    def resume_filters(self, stream: Stream, chain: list, index: int) -> None:
        if not stream.done and not self.closed and self.passes(stream, chain, index):
            if chain is self.routed_hooks:
                self.send_upstream(stream)
            else:
                self.filtered(stream)

    def filtered(self, stream: Stream) -> None:
        """The request filters passed it: route it."""
        if stream.modified:
            stream.raw = None  # re-encoded on the way out
        self.route(stream)

    def route(self, stream: Stream) -> None:
        if self.sessions and self.session_pool is None and stream is not self.handshake:
            self.session_backlog.append(stream)  # (a filter holds the handshake back)
            return
        route = self.session_route  # (a session's requests follow its first)
        if route is None:
            routes = self.routes
            # (the table remembers the route of a service and method no header decides; the
            # headers, read only where a route matches them, may decode the frame)
            headers = stream.header if routes.reads_headers else None
            try:
                route = routes.match(stream.service, stream.method, headers)
            except DecodeError as e:
                stream.fail(400, f"protoc-x: 400 {e.reason}")
                return
            if route is None:
                stream.fail(
                    404,
                    f"protoc-x: 404 no route for service {stream.service!r} method "
                    f"{stream.method!r}",
                )
                return
            if self.sessions:
                self.session_route = route
        if self.session_pool is not None:
            cluster = self.session_pool.cluster
        else:
            cluster = route.cluster if route.picker is None else route.choose()
            if cluster is None:  # (Envoy's "cluster not found")
                stream.fail(503, "protoc-x: 503 the route's cluster is not there")
                return
        stream.phase = ROUTED
        stream.target = cluster
        stream.cluster_name = cluster.name
        kind = stream.kind
        if kind is not _ONEWAY:  # a oneway may have taken effect: never retried, nor awaited
            if kind is _REQUEST and not self.sessions:  # (a session is on one endpoint)
                stream.retries = route.retries  # (quiet: its success is silence, never retried)
            timeout = stream.timeout
            if timeout is ASK:  # (a decoded request: its frame says)
                timeout = stream.frame.get_timeout()
            if timeout is None or timeout <= 0:  # none in the request: the route's, or the
                ms = route.timeout_ms or cluster.request_timeout_ms  # cluster's
            elif timeout < MAX_TIMEOUT_MS:
                ms = timeout
            else:  # (a peer's 400-digit timeout: as long as configs allow)
                ms = MAX_TIMEOUT_MS
            # counted on the loop's clock from the read that brought the request, or from now
            # if a filter held it
            start = self.loop.time() if stream.paused else stream.arrived
            self.deadlines.add(stream, start + ms / 1000)
        if self.routed_hooks and not self.passes(stream, self.routed_hooks, 0):
            return
        self.send_upstream(stream)

    def send_upstream(self, stream: Stream) -> None:
        pool = self.session_pool
        if pool is not None:  # a session's request after its first: where the first went
            pool.cluster.send_to(pool, stream)
            return
        cluster = stream.target
        cluster.dispatch(stream)
        if self.session_backlog and self.session_pool is not None:
            backlog, self.session_backlog = self.session_backlog, []
            for waiting in backlog:  # the handshake opened the session: they follow it
                if not waiting.done:
                    self.route(waiting)

    def on_decode_error(self, error: DecodeError) -> None:
        # bytes that are not a frame: no request id to answer, so the connection goes
        self.fail(f"undecodable request bytes: {error.reason}")

    # -- answers ------------------------------------------------------------------------
    def deliver(
        self,
        stream: Stream,
        data: bytes | None,
        frame: XFrame | None = None,
        code: int | None = None,
        status: int | None = None,
    ) -> None:
        """Answer ``stream`` with ``data``: an upstream's answer (its ``frame`` when decoded,
        else the ``status`` its scan read), a quiet completion (None), or, with ``code``, an
        answer of the proxy's own."""
        if stream.kind is not _ONEWAY:
            self.inflight -= 1
            if not self.inflight:
                self.answered_at = self.loop.time()
        listener = self.listener
        if code is None:
            if frame is not None:
                try:
                    status = frame.get_status()
                except DecodeError:  # an answer whose status part is broken: forwarded as is
                    status = None
                    code = 500
            if code is None:
                code = self.runtime_code(status) if status is not None else 200
            if listener.response_filters and frame is None and data is not None:
                # (an answer of the fast lane: the filters need its frame)
                frame = self.proto.decode(data, 0, Direction.RESPONSE)
        else:
            status = self.proto.map_status(code) if self.proto.has_error_response else None
        if frame is not None and listener.response_filters:
            for f in listener.response_filters:
                f.on_response(stream, frame)
            frame.set_request_id(stream.down_id)  # the bytes had it patched, not the frame
            data = frame.encode()
        elapsed = perf_counter() - stream.started
        if self.metrics is not None:
            service, method, cluster = stream.service, stream.method, stream.cluster_name
            cell = self.cell  # (a connection's answers mostly share their labels: no lookup)
            if cell is None or not cell.matches(service, method, cluster, code):
                cell = self.cell = self.metrics.cell(
                    listener.name, self.proto.name, service, method, cluster, code
                )
            cell.add(elapsed)
        if listener.access_log is not None:
            listener.access_log.write(self, stream, code, status, elapsed, data)
        if stream.span is not None:
            listener.proxy.tracer.finish(stream, code, status)
        if stream is self.handshake and self.session is None:
            self.sessionless()  # answered before a session opened: no request can follow
        # (on a closed connection send() writes nothing and close() does nothing)
        if stream.slot is not None:
            self.output.fill(stream.slot, data)
        elif data is not None:
            self.send(data)
        if self.draining and self.inflight == 0:
            self.close()

    def runtime_code(self, status) -> int:
        """The protocol's ``runtime_status`` of ``status``, asked once per status: a
        connection's answers mostly carry a few (the first 16 are remembered)."""
        codes = self.codes
        if codes is None:
            codes = self.codes = {}
        code = codes.get(status)
        if code is None:
            code = self.proto.runtime_status(status)
            if len(codes) < 16:
                codes[status] = code
        return code

    def answer_error(self, stream: Stream, code: int, message: str | None) -> None:
        if stream.kind is _QUIET:
            self.deliver(stream, None, code=code)
            return
        frame = self.proto.hijack(stream.frame, code, message)
        if frame is None:
            # the protocol cannot express an error: its clients reconnect and retry
            self.deliver(stream, None, code=code)
            self.fail(f"runtime code {code} and the protocol has no error response")
            return
        # (the request frame carries the client's id again once written upstream: so does
        # the error frame made from it)
        self.deliver(stream, frame.encode(), code=code)

    def on_write_paused(self) -> None:
        self.hold(self)  # a client that does not read its answers sends no more

    def on_write_resumed(self) -> None:
        self.release(self)

    def end_session(self, upstream) -> None:
        """This session protocol's client has no upstream session (``upstream``, closed), or
        never got one: it takes no more requests, and closes once those in flight are
        answered."""
        if self.session is upstream:
            self.session = None
        self.sessionless()
        if self.inflight == 0:
            self.close()

    def last_request(self, reason: str) -> None:
        """Read no more requests: close once those in flight are answered (``deliver``)."""
        if not self.ended:
            self.ended = True
            self.hold(reason)
            self.draining = True

    def sessionless(self) -> None:
        """No session, or no more of it: :meth:`last_request`; the requests waiting for the
        handshake to be routed have no session to go to."""
        self.last_request("no session")
        backlog, self.session_backlog = self.session_backlog, []
        for stream in backlog:
            if not stream.done:
                stream.fail(502, "protoc-x: 502 the session did not open")

    def on_close(self, exc) -> None:
        session = self.session
        if session is not None:  # the client left: so does its session
            self.session = None
            session.owner = None
            session.close()
        if self in self.listener.conns:
            self.listener.conns.discard(self)
            self.listener.gauge.dec()

    def drain(self) -> None:
        self.draining = True
        if self.inflight == 0:
            self.close()


def bind(address, reuse_port: bool) -> list[socket.socket]:
    """Sockets for a listener's ``address``, bound but not yet listening: every listener binds
    before any listens (at start, and on a reload), so a config whose last address is taken
    never accepts a connection."""
    socks: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        for family, kind, proto, _, addr in dict.fromkeys(infos):  # (host: never "")
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
            if reuse_port:  # (workers share each listener)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, True)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            sock.bind(addr)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def bind_all(addresses, reuse_port: bool) -> list[list[socket.socket]]:
    """:func:`bind` for each of ``addresses`` (index, address), or none: on a failure, the
    sockets bound so far are closed and the OSError names the listener by its YAML path."""
    bound: list[list[socket.socket]] = []
    for i, address in addresses:
        try:
            bound.append(bind(address, reuse_port))
        except OSError as e:
            for group in bound:
                for sock in group:
                    sock.close()
            raise OSError(
                e.errno, f"listeners[{i}].address: cannot listen on {address}: {e.strerror or e}"
            ) from None
    return bound


class Proxy:
    """Everything a config describes, running. :meth:`reload` serves a new config in its place
    (SIGHUP, a watched file, a control plane's update)."""

    draining = False  # (set by drain)

    def __init__(self, config, protocols: dict[str, XProtocol], worker: int = 0, workers: int = 1,
                 shared: str | None = None):  # fmt: skip
        self.config = config
        self.worker, self.workers, self.shared = worker, workers, shared
        self.metrics = Metrics(worker=worker, shared=shared)
        self.deadlines = Deadlines(asyncio.get_event_loop())
        self.admin = None
        self.tracer = _tracer(config)
        self.clusters = self.build_clusters(config, {})
        tables = self.route_tables(config, self.clusters)
        self.listeners = [
            Listener(l, [protocols[p] for p in l.protocol], tables[l.route_config_name], self)
            for l in config.listeners
        ]
        self.closing: set[asyncio.Task] = set()  # listeners reloads removed, draining
        # the admin endpoint's state
        self.started_at = time.monotonic()
        self.config_version = 1  # (the YAML's: 1, and one more for each reload applied)
        self.config_updated = _now()
        self.health_failing = False  # /healthcheck/fail: /ready answers 503
        self.listeners_drained = False  # /drain_listeners: no listener accepts any more
        self.xds = None  # the control plane's client (runtime/xds.py), when the config names one

    def build_clusters(self, config, old: dict[str, Cluster]) -> dict[str, Cluster]:
        """The clusters of ``config``: those of ``old`` whose config is the same are kept as they
        are (connections, health, breaker counts); one whose endpoints alone changed is kept and
        takes them."""
        clusters = {}
        for c in config.clusters:
            cluster = old.get(c.name)
            if cluster is not None and cluster.config != c:
                if cluster.config.model_copy(update={"endpoints": c.endpoints}) == c:
                    cluster.set_endpoints(c.endpoints)
                    cluster.config = c
                else:
                    cluster = None
            clusters[c.name] = cluster if cluster is not None else Cluster(c, self.metrics)
        return clusters

    @staticmethod
    def route_tables(config, clusters: dict[str, Cluster]) -> dict[str, RouteTable]:
        tables = {}
        for rc in config.route_configs:
            resolved = []
            for vh in rc.virtual_hosts:
                routes = [_ResolvedRoute(r.match, Route(r.route, clusters)) for r in vh.routes]
                resolved.append(_ResolvedVHost(vh.name, vh.domains, routes))
            tables[rc.name] = RouteTable(resolved)
        return tables

    async def start(self) -> None:
        """Open every listener, or none: all bind before any listens, and on a failure the
        OSError names the listener by its YAML path."""
        bound = self.bind([(i, l.config.address) for i, l in enumerate(self.listeners)])
        for listener, group in zip(self.listeners, bound):
            await listener.start(group)
        if self.shared is not None:
            self.metrics.start_publishing()
        self.admin = await self.start_admin(self.config)

    def bind(self, addresses) -> list[list[socket.socket]]:
        """:func:`bind_all` for this proxy: with several workers, each shares the port."""
        return bind_all(addresses, self.workers > 1)

    async def start_admin(self, config):
        """The admin endpoint ``config`` asks for, serving (None: none, or not this worker)."""
        if config.admin is None or self.worker != 0:
            return None
        from .admin import AdminServer

        admin = AdminServer(self, config.admin.address.host, config.admin.address.port)
        await admin.start()
        return admin

    async def reload(self, config, protocols: dict[str, XProtocol]) -> None:
        """Serve ``config`` (checked) from now on, losing no request:

        - a listener whose config and protocols are the same keeps its sockets, connections and
          filters, and its connections route their next requests by the new tables;
        - a changed listener of the same address takes over its predecessor's sockets; the
          predecessor's connections close once their requests in flight are answered (as the
          connections of a removed listener do, whose sockets close at once);
        - a cluster whose config is the same keeps its connections; a changed or removed one is
          retired: its connections close once their requests in flight are answered or time
          out (one whose endpoints alone changed is kept, :meth:`Cluster.set_endpoints`).

        Raises OSError, with nothing changed, when a new address cannot be listened on."""
        if self.draining or self.listeners_drained:
            raise RuntimeError("the proxy is draining: no config is served any more")
        kept: dict[int, Listener] = {}  # index in config.listeners → listener that stays
        taken: dict[int, Listener] = {}  # → the listener whose sockets it takes over
        fresh: list[tuple[int, object]] = []  # → its address, to bind
        by_name = {l.name: l for l in self.listeners}
        by_address = {l.config.address: l for l in self.listeners}
        for i, lc in enumerate(config.listeners):
            old = by_name.get(lc.name)
            if (
                old is not None
                and old.config == lc
                and old.protocols == [protocols[p] for p in lc.protocol]
                and self.config.tracing == config.tracing  # (else: its hooks are others)
            ):
                kept[i] = old
        for i, lc in enumerate(config.listeners):
            old = by_address.get(lc.address)
            if i not in kept and old is not None and old not in kept.values():
                taken[i] = old
            elif i not in kept:
                fresh.append((i, lc.address))
        retrace = self.config.tracing != config.tracing
        # first, as it may fail (RuntimeError: its exporter cannot load) with nothing changed
        tracer = _tracer(config) if retrace else self.tracer
        try:
            bound = dict(zip([i for i, _ in fresh], self.bind(fresh)))
            old_admin = self.admin
            if self.config.admin != config.admin:
                try:
                    self.admin = await self.start_admin(config)
                except OSError:
                    for group in bound.values():
                        for sock in group:
                            sock.close()
                    raise
                if old_admin is not None:
                    old_admin.close()
        except OSError:
            if retrace and tracer is not None:
                tracer.close()
            raise
        if retrace:
            if self.tracer is not None:
                self.tracer.close()
            self.tracer = tracer
        self.config = config
        self.config_version += 1
        self.config_updated = _now()
        # nothing can fail from here on
        old_clusters = self.clusters
        self.clusters = self.build_clusters(config, old_clusters)
        tables = self.route_tables(config, self.clusters)
        listeners = []
        for i, lc in enumerate(config.listeners):
            listener = kept.get(i)
            if listener is not None:
                listener.set_routes(tables[lc.route_config_name])
            else:
                protos = [protocols[p] for p in lc.protocol]
                listener = Listener(lc, protos, tables[lc.route_config_name], self)
                if i in taken:
                    listener.take_over(taken[i])
                else:
                    await listener.start(bound[i])
            listeners.append(listener)
        gone = [l for l in self.listeners if l not in listeners]
        self.listeners = listeners
        timeout = config.drain_timeout_ms / 1000
        for listener in gone:
            listener.stop_accepting()
            task = asyncio.ensure_future(self.close_listener(listener, timeout))
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)
        live = set(map(id, self.clusters.values()))
        for cluster in old_clusters.values():
            if id(cluster) not in live:
                cluster.retire_all()

    def drain_listeners(self) -> None:
        """The admin's /drain_listeners: no listener accepts any more connections, and those
        open close once their requests in flight are answered (up to drain_timeout_ms); the
        process keeps running (a SIGTERM then exits at once)."""
        if self.listeners_drained or self.draining:
            return
        self.listeners_drained = True
        for listener in self.listeners:
            listener.stop_accepting()
        conns = [c for listener in self.listeners for c in list(listener.conns)]
        task = asyncio.ensure_future(
            self.close_connections(conns, self.config.drain_timeout_ms / 1000)
        )
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    def reopen_logs(self) -> None:
        """SIGUSR1: each access log file is opened again at its path (log rotation)."""
        for listener in self.listeners:
            if listener.access_log is not None:
                listener.access_log.reopen()

    async def close_listener(self, listener: Listener, timeout: float) -> None:
        await self.close_connections(list(listener.conns), timeout)
        listener.sweeper.stop()
        if listener.access_log is not None:
            listener.access_log.close()

    async def close_connections(self, conns: list, timeout: float) -> None:
        """Drain ``conns``: each closes once its requests in flight are answered; those still
        open after ``timeout`` are aborted."""
        for conn in conns:
            conn.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(not c.closed for c in conns):
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(0.02, left))  # (the last wait ends at the deadline)
        for conn in conns:
            if not conn.closed:
                conn.abort()

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close."""
        self.draining = True
        for listener in self.listeners:
            listener.stop_accepting()
        await self.close_connections(
            [c for listener in self.listeners for c in list(listener.conns)], timeout
        )
        for listener in self.listeners:
            listener.sweeper.stop()
        for task in list(self.closing):  # (what reloads removed: its own timeouts hold)
            await task
        for cluster in self.clusters.values():
            cluster.close()
        if self.shared is not None:
            self.metrics.stop_publishing()
        if self.admin is not None:
            self.admin.close()
        for listener in self.listeners:
            if listener.access_log is not None:
                listener.access_log.close()
            for server in listener.servers:
                await server.wait_closed()
        if self.tracer is not None:
            self.tracer.close()


def _tracer(config):
    """The tracer ``config.tracing`` asks for, or None (no hook, no cost)."""
    if config.tracing is None:
        return None
    from .tracing import Tracer

    return Tracer(config.tracing)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class _ResolvedRoute:
    __slots__ = ("match", "route")

    def __init__(self, match, route):
        self.match = match
        self.route = route


class _ResolvedVHost:
    __slots__ = ("name", "domains", "routes")

    def __init__(self, name, domains, routes):
        self.name = name
        self.domains = domains
        self.routes = routes
