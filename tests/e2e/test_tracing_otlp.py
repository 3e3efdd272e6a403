"""Tracing end to end: `protoc-x run` exporting over OTLP/gRPC to a collector.

anthunder's AioClient sends bolt requests, one carrying a W3C ``traceparent`` in its header
map, through the proxy to an anthunder AioListener behind a recording relay. The collector is
an OTLP TraceService written with grpcio and opentelemetry-proto (the collector's own service
definition), so the spans are read as an OpenTelemetry Collector would receive them. The
proxy is stopped with SIGTERM: the spans still in its batch must reach the collector as it
drains.

Checked: one span per request with its attributes and the configured service name; the
caller's trace continued (its trace id, its span as the parent); and the frame that reached
the server carrying a traceparent whose span is the proxy's, read off the relay with the bolt
document's fixed offsets."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent import futures
from typing import Iterator

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.e2e.peer_proxy import proxy_process
from tests.e2e.test_peers_through_proxy import (
    bolt_fields,
    protobuf_message,
    relay_frames,
    single_listener,
)
from tests.peers import anthunder_peer
from tests.peers.framing import bolt_frame_length
from tests.peers.captures import ECHO_PREFIX, HELLO_METHOD, HELLO_SERVICE, anthunder_server
from tests.peers.recording import TO_SERVER, recording_relay
from tests.runtime.harness import free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: keeps every ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.changed = threading.Condition()

    def Export(self, request, context):
        with self.changed:
            self.requests.append(request)
            self.changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[dict, object]]:
        """(the resource's attributes, the span) of every span received."""
        out = []
        for request in self.requests:
            for rs in request.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                out += [(resource, span) for ss in rs.scope_spans for span in ss.spans]
        return out

    def wait_spans(self, n: int, timeout: float = 15.0) -> list[tuple[dict, object]]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.spans()) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.spans())} spans of {n} reached the collector"
                self.changed.wait(left)
            return self.spans()


@contextlib.contextmanager
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    receiver = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(grace=0).wait()


def bolt_headers(frame: bytes) -> dict[str, str]:
    """A bolt v1 request's header map: after the 22-byte fixed part and the class name, pairs
    of (int32 length, bytes) for key and value."""
    class_len = int.from_bytes(frame[14:16], "big")
    header_len = int.from_bytes(frame[16:18], "big")
    data = frame[22 + class_len : 22 + class_len + header_len]
    out, i = {}, 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        key = data[i + 4 : i + 4 + n].decode()
        i += 4 + n
        n = int.from_bytes(data[i : i + 4], "big")
        out[key] = data[i + 4 : i + 4 + n].decode()
        i += 4 + n
    return out


def attributes(span) -> dict:
    return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}


def test_anthunder_requests_traced_to_an_otlp_collector(tmp_path, monkeypatch):
    # the SDK's batch exports every 5 s by default: a schedule past the test's end leaves the
    # drain as the only way the spans can reach the collector
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    anthunder_peer._anthunder()
    from anthunder.protocol import BoltRequest

    with (
        collector() as (receiver, otlp_port),
        anthunder_server() as server,
        recording_relay(server, bolt_frame_length) as relay,
    ):
        config = single_listener("bolt", free_port(), [f"{relay.host}:{relay.port}"])
        config["tracing"] = {
            "service_name": "checkout-sidecar",
            "otlp": {"endpoint": f"127.0.0.1:{otlp_port}"},
        }
        with proxy_process(config, tmp_path) as proxy:
            address = ("127.0.0.1", proxy.port)
            client = anthunder_peer._Client()
            try:
                for i, extra in enumerate(({"traceparent": TRACEPARENT}, {})):
                    header = anthunder_peer._header(HELLO_SERVICE, HELLO_METHOD, **extra)
                    content = protobuf_message(f"traced-{i}", i)
                    request = BoltRequest.new_request(header, content, timeout_ms=4000)
                    response = client.run(client.client.invoke(request, address=address))
                    assert response.respstatus == 0
                    assert response.content == ECHO_PREFIX + content
            finally:
                client.close()
            assert receiver.spans() == [], "batched: nothing exported before the drain"
        # SIGTERM: the proxy drained, and its spans went out as it did
        spans = receiver.wait_spans(2)
        assert len(spans) == 2, spans
        upstream = [bolt_headers(f) for f in relay_frames(relay, TO_SERVER)
                    if bolt_fields(f)["cmdcode"] == 1]  # fmt: skip
    assert len(upstream) == 2

    (resource, continued), (_, fresh) = sorted(spans, key=lambda rs: rs[1].start_time_unix_nano)
    assert resource["service.name"] == "checkout-sidecar"
    for span, headers in ((continued, upstream[0]), (fresh, upstream[1])):
        assert span.name == f"{HELLO_SERVICE}/{HELLO_METHOD}"
        assert span.kind == 2  # SPAN_KIND_SERVER
        got = attributes(span)
        assert got["rpc.system"] == "bolt"
        assert got["rpc.service"] == HELLO_SERVICE and got["rpc.method"] == HELLO_METHOD
        assert got["server.address"] == f"{relay.host}:{relay.port}"
        assert got["protoc_x.cluster"] == "up" and got["protoc_x.listener"] == "main"
        assert got["protoc_x.code"] == 200 and got["protoc_x.status"] == "0"
        # the frame upstream names the proxy's span as the parent, in the span's trace
        version, trace, parent, flags = headers["traceparent"].split("-")
        assert (version, trace, parent) == ("00", span.trace_id.hex(), span.span_id.hex())
        assert int(flags, 16) & 1, "sampled"
    assert continued.trace_id.hex() == TRACE and continued.parent_span_id.hex() == PARENT
    assert fresh.trace_id.hex() != TRACE and fresh.parent_span_id == b""
