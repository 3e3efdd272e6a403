"""Tracing with the OpenTelemetry SDK: a span per request.

Each span covers one request, from its read to its answer. Its attributes are the listener, the
protocol, the service, the method, the cluster, the upstream host, the runtime code and the
protocol's status.

The trace context is W3C's. ``traceparent`` and ``tracestate`` are taken from the request's
header map; the span continues that trace, or starts one. They are then written into the frame
with this span as the parent, so the upstream continues the trace. That needs a writable header
map; a protocol without one still gets its spans, each starting a trace.

Tracing is configured by the config's top-level ``tracing``. It is off when that is absent, and
then it costs nothing: no hook is installed.
"""

from __future__ import annotations

import logging

from .api import DecodeError

log = logging.getLogger("protoc_x")

_HEADERS = ("traceparent", "tracestate")


def make_exporter(config):
    """The span exporter ``config.exporter`` names (tests replace this function)."""
    if config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as e:
        raise RuntimeError(
            f"tracing: the OTLP exporter cannot load ({e}). If xds-protos was installed after "
            "opentelemetry-proto, its old copy of opentelemetry-proto's modules replaced the "
            "real ones (grpc/grpc#42926): pip install --force-reinstall --no-deps "
            "opentelemetry-proto"
        ) from None

    otlp = config.otlp
    return OTLPSpanExporter(endpoint=str(otlp.endpoint), insecure=otlp.insecure,
                            timeout=otlp.timeout_ms / 1000)  # fmt: skip


class Tracer:
    """The proxy's tracer: one provider (sampler, batch exporter) for every listener."""

    def __init__(self, config):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.config = config
        sampler = ParentBased(TraceIdRatioBased(config.sampling_percent / 100))
        self.provider = TracerProvider(
            sampler=sampler, resource=Resource.create({"service.name": config.service_name})
        )
        self.provider.add_span_processor(BatchSpanProcessor(make_exporter(config)))
        self.tracer = self.provider.get_tracer("protoc-x")
        self.propagator = TraceContextTextMapPropagator()
        self.kind = SpanKind.SERVER
        self.in_context = set_span_in_context
        self.Status, self.StatusCode = Status, StatusCode

    def start(self, stream, listener: str) -> None:
        """A request filters are about to see: its span starts (at the request's arrival), and
        the frame carries the span's context upstream."""
        carrier = {}
        try:
            for name in _HEADERS:
                value = stream.header(name)
                if value is not None:
                    carrier[name] = str(value)
        except DecodeError:
            pass  # (a header map that cannot be read: a new trace)
        context = self.propagator.extract(carrier) if carrier else None
        proto = stream.protocol
        name = f"{stream.service or proto.name}/{stream.method}" if stream.method else proto.name
        span = self.tracer.start_span(
            name, context=context, kind=self.kind,
            attributes={"protoc_x.listener": listener, "rpc.system": proto.name,
                        "rpc.service": str(stream.service or ""), "rpc.method": str(stream.method or "")},
        )  # fmt: skip
        stream.span = span
        if proto.writable_headers:
            out: dict = {}
            self.propagator.inject(out, context=self.in_context(span))
            try:
                frame = stream.frame
                for name in _HEADERS:
                    if name in out:
                        frame.set_header(name, out[name])
                    elif carrier.get(name) is not None:
                        frame.del_header(name)  # (a tracestate of no trace any more)
                stream.modified = True
            except (NotImplementedError, DecodeError):
                pass  # (a frame whose layout has no header map: it goes as it came)

    def finish(self, stream, code: int, status) -> None:
        """The request was answered (or failed): its span ends."""
        span = stream.span
        if span is None:
            return
        stream.span = None
        if span.is_recording():
            span.set_attribute("protoc_x.cluster", stream.cluster_name or "")
            endpoint = stream.endpoint
            if endpoint is not None:
                span.set_attribute("server.address", str(endpoint.endpoint))
            span.set_attribute("protoc_x.code", code)
            if status is not None:
                span.set_attribute("protoc_x.status", str(status))
            if code >= 500:
                span.set_status(self.Status(self.StatusCode.ERROR, f"code {code}"))
        span.end()

    def close(self) -> None:
        """Export what is left (at drain)."""
        try:
            self.provider.shutdown()
        except Exception as e:  # (an exporter that cannot reach its collector)
            log.warning("tracing: %s", e)
