"""Proxy layer: downstream connections, and the path of one request — decode, local
heartbeats, routing, cluster and endpoint choice — wired to the upstream pools; plus the
listeners and the graceful drain."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Sequence

from .accesslog import AccessLog
from .api import DecodeError, Direction, StreamType, XFrame, XProtocol
from .engine import detect
from .filters import Reject, RequestContext, StreamFilter, filters as filter_registry
from .metrics import Metrics
from .network import FramedConnection, Sweeper, make_server_factory
from .pool import Cluster
from .router import RouteTable, WeightedPicker
from .stream import Deadlines, OrderedOutput, Stream

log = logging.getLogger("protoc_x")


class Route:
    """A route's action, resolved: which cluster(s), and its timeout."""

    __slots__ = ("cluster", "picker", "timeout", "clusters", "retries")

    def __init__(self, action, clusters: dict[str, Cluster]):
        self.timeout = action.timeout_ms / 1000 if action.timeout_ms else None
        self.retries = action.retries or 0
        if action.cluster is not None:
            self.cluster = clusters[action.cluster]
            self.picker = None
        else:
            self.cluster = None
            self.picker = WeightedPicker([(w.name, w.weight) for w in action.weighted_clusters])
        self.clusters = clusters

    def choose(self) -> Cluster:
        if self.cluster is not None:
            return self.cluster
        return self.clusters[self.picker.pick()]


class Listener:
    """A listening address: its protocols, routes and connection limits."""

    def __init__(self, config, protocols: Sequence[XProtocol], routes: RouteTable, proxy: "Proxy"):
        self.config = config
        self.name = config.name
        self.protocols = list(protocols)
        self.routes = routes
        self.proxy = proxy
        self.sweeper = Sweeper(config.idle_timeout_ms / 1000, config.frame_timeout_ms / 1000)
        self.server: asyncio.AbstractServer | None = None
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
        self.gauge = proxy.metrics.child(proxy.metrics.downstream, self.name)
        log_cfg = config.access_log
        self.access_log = AccessLog(log_cfg.path, log_cfg.format) if log_cfg is not None else None

    async def start(self, sock: socket.socket | None = None) -> None:
        loop = asyncio.get_running_loop()
        factory = make_server_factory(lambda: DownstreamConnection(self), self.sweeper)
        if sock is not None:
            self.server = await loop.create_server(factory, sock=sock)
        else:
            self.server = await loop.create_server(
                factory, self.config.address.host, self.config.address.port, reuse_address=True,
                reuse_port=self.proxy.workers > 1,
            )  # fmt: skip
        self.sweeper.start()

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        self.sweeper.stop()


class DownstreamConnection(FramedConnection):
    direction = Direction.REQUEST

    def __init__(self, listener: Listener):
        protocols = listener.protocols
        super().__init__(protocols[0] if len(protocols) == 1 else None)
        self.listener = listener
        self.max_frame_bytes = listener.config.max_frame_bytes
        self.inflight = 0
        self.deadlines = listener.proxy.deadlines
        self.output: OrderedOutput | None = None
        self.quiet_streams: list[Stream] = []
        self.draining = False
        if self.proto is not None:
            self.protocol_chosen()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.listener.conns.add(self)
        self.listener.gauge.inc()
        if self.listener.proxy.draining:
            self.close()

    def protocol_chosen(self) -> None:
        if self.proto.ordered:
            self.output = OrderedOutput(self.send)

    def choose_protocol(self, data: bytes) -> bool:
        found = detect(self.listener.protocols, data)
        if found is None:
            if len(data) > 64:
                self.fail("no protocol of this listener matches the first bytes")
            return False
        if found is False:
            names = ", ".join(p.name for p in self.listener.protocols)
            self.fail(f"first bytes {bytes(data[:8]).hex()} match none of: {names}")
            return False
        self.proto = found
        self.protocol_chosen()
        return True

    def is_idle(self) -> bool:
        return self.inflight == 0

    def quiet_pending(self) -> bool:
        """Quiet requests of this connection still wait upstream: a heartbeat now is the
        client's barrier (a cache protocol's no-op after quiet sets), so it goes upstream
        behind them instead of being answered here."""
        quiet = self.quiet_streams
        if quiet:
            quiet[:] = [s for s in quiet if not s.done]
        return bool(quiet)

    # -- requests -----------------------------------------------------------------------
    def on_frame(self, frame: XFrame, buf: bytes, start: int, length: int) -> None:
        kind = frame.get_stream_type()
        if kind is StreamType.RESPONSE:
            log.warning("%s: a client sent a response frame; dropped", self.listener.name)
            return
        proto = self.proto
        if proto.has_heartbeat and frame.is_heartbeat() and not self.quiet_pending():
            reply = proto.reply(frame)
            if reply is not None and kind is not StreamType.ONEWAY:
                data = reply.encode()
                if self.output is not None:
                    self.output.fill(self.output.reserve(), data)
                else:
                    self.send(data)
            return
        stream = Stream(self, frame, kind, bytes(buf[start : start + length]))
        stream.started = self.loop.time()
        if self.output is not None and kind is not StreamType.ONEWAY:
            stream.slot = self.output.reserve()
            if kind is StreamType.QUIET:
                self.quiet_streams.append(stream)
        if kind is not StreamType.ONEWAY:
            self.inflight += 1
        try:
            stream.service = frame.get_service()
            stream.method = frame.get_method()
        except DecodeError as e:
            stream.fail(400, f"protoc-x: 400 {e.reason}")
            return
        chain = self.listener.filters
        if chain:
            ctx = stream.ctx = RequestContext(
                frame, proto, self.listener.name, stream.service, stream.method
            )
            self.run_filters(stream, 0, "on_request")
        else:
            self.route(stream)

    def run_filters(self, stream: Stream, index: int, hook: str) -> None:
        """Run the chain's ``hook`` from filter ``index`` on; routing follows on_request."""
        chain = self.listener.hooks[hook]  # only the filters that do something in this hook
        ctx = stream.ctx
        for i in range(index, len(chain)):
            try:
                verdict = chain[i](ctx)
            except DecodeError as e:
                stream.fail(400, f"protoc-x: 400 {e.reason}")
                return
            if verdict is None:
                continue
            if isinstance(verdict, Reject):
                stream.fail(verdict.code, verdict.message)
                return
            # Pause: hold the request, then go on with the next filter
            self.loop.call_later(verdict.seconds, self.resume_filters, stream, i + 1, hook)
            return
        if hook == "on_request":
            if ctx.modified:
                stream.raw = None  # re-encoded on the way out
            self.route(stream)
        else:
            self.send_upstream(stream)

    def resume_filters(self, stream: Stream, index: int, hook: str) -> None:
        if not stream.done and not self.closed:
            self.run_filters(stream, index, hook)

    def route(self, stream: Stream) -> None:
        frame = stream.request
        ctx = stream.ctx
        headers = ctx.header if ctx is not None and ctx.extra_headers else frame.get_header
        try:
            route = self.listener.routes.match(stream.service, stream.method, headers)
        except DecodeError as e:
            stream.fail(400, f"protoc-x: 400 {e.reason}")
            return
        if route is None:
            stream.fail(
                404,
                f"protoc-x: 404 no route for service {stream.service!r} method {stream.method!r}",
            )
            return
        cluster = stream.target = route.choose()
        stream.cluster_name = cluster.name
        stream.retries = route.retries
        timeout = frame.get_timeout()
        timeout = timeout / 1000 if timeout is not None and timeout > 0 else None
        timeout = timeout or route.timeout or cluster.request_timeout
        if stream.kind is not StreamType.ONEWAY:
            self.deadlines.add(stream, timeout)
        else:
            stream.retries = 0  # a oneway may have taken effect: never retried
        if stream.kind is StreamType.QUIET:
            stream.retries = 0
        if ctx is not None and self.listener.hooks["on_routed"]:
            ctx.cluster = cluster.name
            self.run_filters(stream, 0, "on_routed")
        else:
            self.send_upstream(stream)

    def send_upstream(self, stream: Stream) -> None:
        cluster = stream.target
        header = cluster.balancer.hash_header
        key = None
        if header is not None:
            try:
                key = (
                    stream.ctx.header(header)
                    if stream.ctx is not None
                    else stream.request.get_header(header)
                )
            except DecodeError:
                key = None
        cluster.dispatch(stream, key)

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
    ) -> None:
        if stream.kind is not StreamType.ONEWAY:
            self.inflight -= 1
        listener = self.listener
        if code is None:
            try:
                status = frame.get_status() if frame is not None else None
            except DecodeError:  # an answer whose status part is broken: forwarded as it is
                status = None
                code = 500
            else:
                code = self.proto.runtime_status(status) if status is not None else 200
        else:
            status = self.proto.map_status(code) if self.proto.has_error_response else None
        if frame is not None and listener.response_filters and stream.ctx is not None:
            for f in listener.response_filters:
                f.on_response(stream.ctx, frame)
            frame.set_request_id(stream.down_id)  # the bytes had it patched, not the frame
            data = frame.encode()
        metrics = listener.proxy.metrics
        elapsed = self.loop.time() - stream.started
        if metrics is not None:
            metrics.request_done(listener.name, self.proto.name, stream.service, stream.method,
                                 stream.cluster_name, code, elapsed)  # fmt: skip
        if listener.access_log is not None:
            upstream = stream.endpoint.endpoint if stream.endpoint is not None else None
            listener.access_log.write(listener.name, self.proto.name, stream.service, stream.method,
                                      stream.cluster_name, upstream, code, status, elapsed * 1000)  # fmt: skip
        if self.closed:
            return
        if stream.slot is not None:
            self.output.fill(stream.slot, data)
        elif data is not None:
            self.send(data)
        if self.draining and self.inflight == 0:
            self.close()

    def answer_error(self, stream: Stream, code: int, message: str | None) -> None:
        if stream.kind is StreamType.QUIET:
            self.deliver(stream, None, code=code)
            return
        frame = self.proto.hijack(stream.request, code, message)
        if frame is None:
            # the protocol cannot express an error: its clients reconnect and retry
            self.deliver(stream, None, code=code)
            self.fail(f"runtime code {code} and the protocol has no error response")
            return
        if stream.down_id is not None:
            frame.set_request_id(stream.down_id)
        self.deliver(stream, frame.encode(), code=code)

    def on_write_paused(self) -> None:
        self.hold(self)  # a client that does not read its answers sends no more

    def on_write_resumed(self) -> None:
        self.release(self)

    def on_close(self, exc) -> None:
        if self in self.listener.conns:
            self.listener.conns.discard(self)
            self.listener.gauge.dec()

    def drain(self) -> None:
        self.draining = True
        if self.inflight == 0:
            self.close()


class Proxy:
    """Everything a config describes, running."""

    def __init__(self, config, protocols: dict[str, XProtocol], worker: int = 0, workers: int = 1,
                 shared: str | None = None):  # fmt: skip
        self.config = config
        self.protocols = protocols
        self.draining = False
        self.worker, self.workers, self.shared = worker, workers, shared
        self.metrics = Metrics(worker=worker, shared=shared)
        self.deadlines = Deadlines(asyncio.get_event_loop())
        self.admin = None
        self.clusters = {c.name: Cluster(c, protocols, self.metrics) for c in config.clusters}
        tables = {}
        for rc in config.route_configs:
            resolved = []
            for vh in rc.virtual_hosts:
                routes = [_ResolvedRoute(r.match, Route(r.route, self.clusters)) for r in vh.routes]
                resolved.append(_ResolvedVHost(vh.name, vh.domains, routes))
            tables[rc.name] = RouteTable(resolved)
        self.listeners = [
            Listener(l, [protocols[p] for p in l.protocol], tables[l.route_config], self)
            for l in config.listeners
        ]

    async def start(self, socks: dict[str, socket.socket] | None = None) -> None:
        """Open every listener, or none: on a failure the ones opened close again and the
        OSError names the listener by its YAML path."""
        for i, listener in enumerate(self.listeners):
            try:
                await listener.start((socks or {}).get(listener.name))
            except OSError as e:
                for other in self.listeners:
                    other.stop_accepting()
                raise OSError(
                    e.errno,
                    f"listeners[{i}].address: cannot listen on {listener.config.address}: {e.strerror or e}",
                ) from None
        if self.shared is not None and self.worker != 0:
            self.metrics.start_sharing()
        if self.config.admin is not None and self.worker == 0:
            from .admin import AdminServer

            addr = self.config.admin.address
            self.admin = AdminServer(self, addr.host, addr.port)
            await self.admin.start()

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close."""
        self.draining = True
        for listener in self.listeners:
            listener.stop_accepting()
        conns = [c for listener in self.listeners for c in list(listener.conns)]
        for conn in conns:
            conn.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(not c.closed for c in conns) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in conns:
            if not conn.closed:
                conn.abort()
        for cluster in self.clusters.values():
            cluster.close()
        if self.admin is not None:
            self.admin.close()
        for listener in self.listeners:
            if listener.access_log is not None:
                listener.access_log.close()
            if listener.server is not None:
                await listener.server.wait_closed()


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
