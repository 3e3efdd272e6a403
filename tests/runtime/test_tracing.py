"""Tracing (runtime/tracing.py): one OpenTelemetry span per request, read back with the SDK's
in-memory exporter. The downstream's W3C traceparent is continued upstream. For bolt the
upstream is a recording one; for dubbo the client is dubbo-ssl-python and the upstream is
sofa-rpc-node, whose own decoder reports the attachments it got."""

from __future__ import annotations

import json
import queue
import socket
import sys
import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from protoc_x.runtime import tracing
from protoc_x.runtime.config import ConfigError, parse_config
from protoc_x.runtime.run import serve_config

from .harness import (
    PROTOCOLS,
    client,
    eventually,
    free_port,
    proxy_in_thread,
    proxy_running,
    recorder,
    run,
)
from .harness import simple_config
from .test_pool import status
from .test_proxy_behaviour import bolt_request

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
TRACING = {"service_name": "sidecar", "otlp": {"endpoint": "127.0.0.1:4317"}}


@pytest.fixture
def spans(monkeypatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "make_exporter", lambda config: exporter)
    return exporter


def finished(proxy, exporter) -> list:
    proxy.tracer.provider.force_flush()
    return list(exporter.get_finished_spans())


def test_a_span_per_bolt_request_continuing_the_callers_trace(spans, tmp_path):
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        data = simple_config("bolt", port, [f"127.0.0.1:{up}"],
                             listener_extra={"access_log": {"path": str(tmp_path / "a.log"),
                                                            "text_format": "%TRACE_ID% %RESPONSE_CODE%"}})  # fmt: skip
        data["tracing"] = TRACING
        data["route_configs"][0]["virtual_hosts"][0]["domains"] = ["com.acme.HelloService:1.0"]
        async with recorder("bolt", up, seen), proxy_running(data) as proxy:
            c = await client("bolt", port)
            assert (
                status(await c.call(bolt_request(1, traceparent=TRACEPARENT, tracestate="k=v")))
                == 200
            )
            assert status(await c.call(bolt_request(2))) == 200  # no caller's trace: a new one
            assert status(await c.call(bolt_request(3, service="com.acme.Nobody"))) == 404
            got = await eventually(
                lambda: len(finished(proxy, spans)) == 3 and finished(proxy, spans)
            )
        assert got, "three spans"
        first, second, third = sorted(got, key=lambda s: s.start_time)
        # the caller's trace goes on: its span is the parent, ours is the upstream's
        assert format(first.context.trace_id, "032x") == TRACE
        assert format(first.parent.span_id, "016x") == PARENT and first.parent.is_remote
        sent = seen[0].headers
        assert sent["traceparent"] == f"00-{TRACE}-{first.context.span_id:016x}-01"
        assert sent["tracestate"] == "k=v"
        assert first.kind is SpanKind.SERVER
        assert first.name == "com.acme.HelloService:1.0/sayHello"
        assert dict(first.attributes) == {
            "protoc_x.listener": "main", "rpc.system": "bolt",
            "rpc.service": "com.acme.HelloService:1.0", "rpc.method": "sayHello",
            "protoc_x.cluster": "up", "server.address": f"127.0.0.1:{up}",
            "protoc_x.code": 200, "protoc_x.status": "0",
        }  # fmt: skip
        assert first.resource.attributes["service.name"] == "sidecar"
        # a request with no trace starts one, and carries it upstream
        assert second.parent is None
        version, trace, parent, flags = seen[1].headers["traceparent"].split("-")
        assert (trace, parent) == (
            f"{second.context.trace_id:032x}",
            f"{second.context.span_id:016x}",
        )
        assert int(flags, 16) & 1, "sampled"  # (the SDK may also set W3C's random-id flag)
        assert (
            third.attributes["protoc_x.code"] == 404 and third.attributes["protoc_x.cluster"] == ""
        )
        assert third.status.status_code is StatusCode.UNSET  # (a 404 is the caller's error)
        assert first.status.status_code is StatusCode.UNSET
        assert len(seen) == 2
        lines = (tmp_path / "a.log").read_text().split("\n")
        assert lines[0] == f"{TRACE} 200"
        assert lines[1] == f"{second.context.trace_id:032x} 200"

    run(scenario())


def test_a_sampled_out_trace_is_still_carried_and_no_span_is_exported(spans):
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        data = simple_config("bolt", port, [f"127.0.0.1:{up}"])
        data["tracing"] = {**TRACING, "sampling_percent": 0}
        async with recorder("bolt", up, seen), proxy_running(data) as proxy:
            c = await client("bolt", port)
            assert (
                status(await c.call(bolt_request(1, traceparent=f"00-{TRACE}-{PARENT}-00"))) == 200
            )
            assert status(await c.call(bolt_request(2))) == 200
            assert finished(proxy, spans) == []
        assert seen[0].headers["traceparent"].startswith(f"00-{TRACE}-")
        assert seen[0].headers["traceparent"].endswith("-00")  # (the caller's decision)
        assert not int(seen[1].headers["traceparent"][-2:], 16) & 1, "not sampled"

    run(scenario())


def test_without_tracing_there_is_no_tracer_and_the_frame_goes_as_it_came():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        async with (
            recorder("bolt", up, seen),
            proxy_running(simple_config("bolt", port, [f"127.0.0.1:{up}"])) as proxy,
        ):
            assert proxy.tracer is None and proxy.listeners[0].hooks["on_request"] == []
            c = await client("bolt", port)
            assert status(await c.call(bolt_request(1, traceparent=TRACEPARENT))) == 200
        assert seen[0].headers["traceparent"] == TRACEPARENT

    run(scenario())


def _server_requests(server, method: str) -> list:
    """The requests sofa-rpc-node reported for ``method``, as it decoded them."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            server._seen.append(server._events.get(timeout=0.1))
        except queue.Empty:
            found = [
                e for e in server._seen if e.get("event") == "request" and e.get("method") == method
            ]
            if found:
                return found
    return []


def test_dubbo_ssl_python_traceparent_reaches_sofa_rpc_node_with_the_proxys_span(spans):
    from dubbo_ssl.client import DubboClient

    from tests.peers.dubbo_peers import (
        GROUP,
        SERVICE,
        VERSION,
        _ensure_dubbo_ssl_threads,
        dubbo_server,
    )

    _ensure_dubbo_ssl_threads()
    port = free_port()
    with dubbo_server() as server:
        data = simple_config("dubbo", port, [f"{server.host}:{server.port}"])
        data["tracing"] = TRACING
        with proxy_in_thread(data) as proxy:
            c = DubboClient(SERVICE, GROUP, version=VERSION, host=f"127.0.0.1:{port}")
            answer = c.call("traced", ["x"], context={"traceparent": TRACEPARENT}, timeout=5)
            assert answer == "ok:traced:1"
            (request,) = _server_requests(server, "traced")
            got = finished(proxy, spans)
        from tests.e2e.test_peers_through_proxy import forget_dubbo_host

        forget_dubbo_host(f"127.0.0.1:{port}")
    (span,) = got
    assert request["attachments"]["traceparent"] == f"00-{TRACE}-{span.context.span_id:016x}-01"
    assert format(span.parent.span_id, "016x") == PARENT
    assert span.attributes["rpc.system"] == "dubbo" and span.attributes["rpc.method"] == "traced"
    assert span.attributes["rpc.service"] == SERVICE
    assert span.attributes["protoc_x.code"] == 200
    print(json.dumps(request["attachments"]))


@pytest.mark.parametrize(
    "tracing_config, says",
    [
        ({**TRACING, "sampling_percent": 101}, "tracing.sampling_percent: must be at most 100, got 101"),
        ({"service_name": "x"}, "tracing: exporter otlp needs otlp: {endpoint: HOST:PORT}"),
        ({"otlp": {"endpoint": "collector:0"}}, "tracing.otlp.endpoint: port 0 is not allowed"),
    ],
)  # fmt: skip
def test_a_bad_tracing_config_is_refused_at_its_path(tracing_config, says):
    data = simple_config("bolt", 1, ["127.0.0.1:2"])
    data["tracing"] = tracing_config
    with pytest.raises(ConfigError) as e:
        parse_config(data, ".")
    assert says in str(e.value)


def test_an_otlp_exporter_that_cannot_load_stops_the_start_with_the_fix(monkeypatch, caplog):
    """As when xds-protos' old copy of opentelemetry-proto's modules replaced the real ones
    (grpc/grpc#42926): `run` says why and how to fix it, and exits 2 with no listener open."""
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    port = free_port()
    data = simple_config("bolt", port, ["127.0.0.1:1"])
    data["tracing"] = TRACING

    async def scenario():
        return await serve_config(parse_config(data, "."), PROTOCOLS)

    assert run(scenario()) == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith("tracing: the OTLP exporter cannot load (")
    assert line.endswith("pip install --force-reinstall --no-deps opentelemetry-proto")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # (free: nothing listened)


def test_a_reload_asking_for_an_exporter_that_cannot_load_changes_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    port, admin, new_port = free_port(), free_port(), free_port()
    data = simple_config("bolt", port, ["127.0.0.1:1"])

    async def scenario():
        async with proxy_running(data) as proxy:
            before = proxy.config
            traced = dict(data, tracing=TRACING, admin={"address": f"127.0.0.1:{admin}"})
            traced["listeners"] = [dict(data["listeners"][0], name="other",
                                        address=f"127.0.0.1:{new_port}")]  # fmt: skip
            with pytest.raises(RuntimeError, match="the OTLP exporter cannot load"):
                await proxy.reload(parse_config(traced, "."), PROTOCOLS)
            assert proxy.config is before and proxy.tracer is None and proxy.admin is None
            assert [l.name for l in proxy.listeners] == [data["listeners"][0]["name"]]
            for free in (admin, new_port):  # (neither bound)
                with socket.socket() as s:
                    s.bind(("127.0.0.1", free))

    run(scenario())
