"""Governance every protocol gets from its spec alone: rate limiting (bolt, thrift, dubbo),
header mutation (bolt; rejected where the protocol has no writable header map), node labels
for blue-green routing, fault injection, retries, metrics and access logs."""

from __future__ import annotations

import asyncio
import json
import struct
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from protoc_x.samples import SAMPLES
from protoc_x.runtime.router import ConsistentHash
from protoc_x.start import StartError, prepare

from .harness import (
    PROTOCOLS, client, config, free_port, proxy_running, recorder, run, simple_config, upstream,
)  # fmt: skip
from .test_proxy_behaviour import bolt_request, thrift_call

BOLT, THRIFT, DUBBO = PROTOCOLS["bolt"], PROTOCOLS["thrift"], PROTOCOLS["dubbo"]


def dubbo_request(rid: int):
    frame = DUBBO.decode(
        next(s.data for s in SAMPLES if s.protocol == "dubbo" and s.name.startswith("request"))
    )
    frame.set_request_id(rid)
    return frame


def limited(protocol: str, port: int, up: int, per=None) -> dict:
    rl = {"tokens_per_second": 2, "burst": 3}
    if per:
        rl["per"] = per
    return simple_config(protocol, port, [f"127.0.0.1:{up}"],
                         listener_extra={"stream_filters": [{"name": "local_rate_limit", "config": rl}]})  # fmt: skip


@pytest.mark.parametrize(
    "protocol,make,limited_status",
    [("bolt", lambda i: bolt_request(i), 4),  # THREADPOOL_BUSY
     ("thrift", lambda i: thrift_call(0, b"call-%d" % i), 6),  # TApplicationException INTERNAL_ERROR
     ("dubbo", dubbo_request, 100)],  # THREADPOOL_EXHAUSTED
)  # fmt: skip
def test_rate_limit_answers_with_the_protocols_status_and_keeps_the_connection(
    protocol, make, limited_status
):
    proto = PROTOCOLS[protocol]

    async def scenario():
        up, port = free_port(), free_port()
        async with upstream(protocol, up), proxy_running(limited(protocol, port, up)):
            c = await client(protocol, port)
            statuses = [(await c.call(make(i + 1))).get_status() for i in range(5)]
            ok = proto.map_status(200)
            assert statuses[:3] == [ok] * 3 and statuses[3:] == [limited_status] * 2
            await asyncio.sleep(0.6)  # the bucket refills at 2 tokens/s
            again = await c.call(make(9))
            assert again.get_status() == ok and not c.conn.closed

    run(scenario())


def test_rate_limit_per_service_keeps_one_bucket_per_service():
    async def scenario():
        up, port = free_port(), free_port()
        async with upstream("bolt", up), proxy_running(limited("bolt", port, up, per=["service"])):
            c = await client("bolt", port)
            a = [(await c.call(bolt_request(i, service="a.A"))).get_status() for i in range(1, 5)]
            b = [(await c.call(bolt_request(i, service="b.B"))).get_status() for i in range(5, 9)]
            assert a == [0, 0, 0, 4] and b == [0, 0, 0, 4]

    run(scenario())


def test_header_mutation_for_bolt_requests_and_responses():
    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        mutation = {"request_headers_to_add": [{"key": "x-env", "value": "prod"},
                                               {"key": "x-trace", "value": "proxy", "append": True}],
                    "request_headers_to_remove": ["secret"],
                    "response_headers_to_add": [{"key": "x-served-via", "value": "protoc-x"}]}  # fmt: skip
        cfg = simple_config("bolt", port, [f"127.0.0.1:{up}"],
                            listener_extra={"stream_filters": [{"name": "header_mutation", "config": mutation}]})  # fmt: skip
        async with recorder("bolt", up, seen), proxy_running(cfg):
            c = await client("bolt", port)
            answer = await c.call(bolt_request(1, secret="s3cret", **{"x-trace": "client"}))
            (got,) = seen
            assert got.get_header("x-env") == "prod" and got.get_header("secret") is None
            assert got.get_header("x-trace") == "client,proxy"
            assert answer.get_header("x-served-via") == "protoc-x"
            assert answer.get_header("x-env") == "prod"  # serve echoes the request's headers

    run(scenario())


def test_header_mutation_rejected_for_a_protocol_without_a_header_map(tmp_path):
    cfg = simple_config("thrift", 1, ["127.0.0.1:2"], listener_extra={"stream_filters": [
        {"name": "header_mutation", "config": {"request_headers_to_add": [{"key": "a", "value": "b"}]}}]})  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(cfg))
    with pytest.raises(StartError) as info:
        prepare(str(path))
    assert info.value.errors == [(
        "listeners[0].stream_filters[0]", "header_mutation: protocol 'thrift' has no writable header map"
    )]  # fmt: skip


def test_node_labels_from_a_labels_file_choose_blue_or_green(tmp_path):
    async def scenario(color: str):
        blue, green, port = free_port(), free_port(), free_port()
        labels = tmp_path / f"labels-{color}"
        labels.write_text(f'app="hello"\ncolor="{color}"\nzone="az-\\"1\\""\n')
        cfg = config(
            [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": ["bolt"], "route_config": "r",
              "stream_filters": [{"name": "node_labels", "config": {"labels_file": str(labels)}}]}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"headers": [{"name": "color", "exact": "green"}]}, "route": {"cluster": "green"}},
                {"match": {"headers": [{"name": "color", "exact": "blue"}]}, "route": {"cluster": "blue"}}]}]}],
            [{"name": "blue", "endpoints": [f"127.0.0.1:{blue}"]},
             {"name": "green", "endpoints": [f"127.0.0.1:{green}"]}],
        )  # fmt: skip
        seen_b, seen_g = [], []
        async with (
            recorder("bolt", blue, seen_b),
            recorder("bolt", green, seen_g),
            proxy_running(cfg),
        ):
            c = await client("bolt", port)
            for i in range(4):
                assert (await c.call(bolt_request(i + 1))).get_status() == 0
        hit = seen_g if color == "green" else seen_b
        assert len(hit) == 4 and len(seen_b) + len(seen_g) == 4
        assert hit[0].get_header("zone") == 'az-"1"' and hit[0].get_header("app") == "hello"

    run(scenario("green"))
    run(scenario("blue"))


def test_fault_abort_and_delay():
    async def scenario():
        up, port = free_port(), free_port()
        fault = {"name": "fault", "config": {"abort": {"code": 503, "percent": 100}}}
        async with (
            upstream("bolt", up),
            proxy_running(
                simple_config(
                    "bolt", port, [f"127.0.0.1:{up}"], listener_extra={"stream_filters": [fault]}
                )
            ),
        ):
            c = await client("bolt", port)
            assert (await c.call(bolt_request(1))).get_status() == 4  # 503 → THREADPOOL_BUSY
        up, port = free_port(), free_port()
        fault = {"name": "fault", "config": {"delay": {"fixed_delay_ms": 300}}}
        async with (
            upstream("bolt", up),
            proxy_running(
                simple_config(
                    "bolt", port, [f"127.0.0.1:{up}"], listener_extra={"stream_filters": [fault]}
                )
            ),
        ):
            c = await client("bolt", port)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert (await c.call(bolt_request(2))).get_status() == 0
            assert loop.time() - t0 >= 0.29

    run(scenario())


def key_for(endpoints: list[str], target: str) -> str:
    ring = ConsistentHash(endpoints)
    return next(f"k{i}" for i in range(1000) if ring.pick(f"k{i}") == target)


def test_retry_on_refused_connection_and_never_for_oneway():
    async def scenario():
        dead, good, port = free_port(), free_port(), free_port()
        endpoints = [f"127.0.0.1:{dead}", f"127.0.0.1:{good}"]
        key = key_for(endpoints, endpoints[0])  # hashes to the dead endpoint
        cfg = config(
            [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r"}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {}, "route": {"cluster": "up", "retries": 1}}]}]}],
            [{"name": "up", "endpoints": endpoints, "lb_policy": "hash:x-key"}],
        )  # fmt: skip
        seen: list = []
        async with recorder("bolt", good, seen), proxy_running(cfg):
            c = await client("bolt", port)
            oneway = bolt_request(1, b"oneway", **{"x-key": key})
            oneway.kind = 2
            assert c.send(oneway) is None
            await asyncio.sleep(0.3)
            assert seen == []  # the oneway went to the dead endpoint and was not retried
            answer = await c.call(bolt_request(2, b"two-way", **{"x-key": key}))
            assert answer.get_status() == 0 and bytes(answer.get_body()) == b"two-way"
            assert [bytes(f.get_body()) for f in seen] == [b"two-way"]

    run(scenario())


def test_metrics_and_access_log_match_the_requests(tmp_path):
    async def scenario():
        up, port, admin = free_port(), free_port(), free_port()
        log_path = tmp_path / "access.jsonl"
        cfg = config(
            [{"name": "edge", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r",
              "access_log": {"path": str(log_path), "format": "json"}}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["com.acme.*"], "routes": [
                {"match": {}, "route": {"cluster": "up"}}]}]}],
            [{"name": "up", "endpoints": [f"127.0.0.1:{up}"]}],
            admin={"address": f"127.0.0.1:{admin}"},
        )  # fmt: skip
        async with upstream("bolt", up), proxy_running(cfg):
            c = await client("bolt", port)
            for i in range(7):
                await c.call(bolt_request(i + 1, service="com.acme.A:1.0", method="m1"))
            for i in range(3):
                await c.call(bolt_request(100 + i, service="com.acme.B:1.0", method="m2"))
            for i in range(2):
                assert (await c.call(bolt_request(200 + i, service="org.none:1"))).get_status() == 6
            loop = asyncio.get_running_loop()
            text = await loop.run_in_executor(
                None,
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5)
                .read()
                .decode(),
            )
            ready = await loop.run_in_executor(
                None,
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=5).read(),
            )
            dump = await loop.run_in_executor(
                None,
                lambda: json.loads(
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{admin}/config_dump", timeout=5
                    ).read()
                ),
            )
        assert ready == b"ready\n" and dump["listeners"][0]["name"] == "edge"
        gauges = {(f.name, s.labels.get("listener") or s.labels.get("cluster")): s.value
                  for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
        assert gauges[("protocx_downstream_connections", "edge")] == 1
        assert gauges[("protocx_upstream_connections", "up")] == 1
        assert gauges[("protocx_pool_active_requests", "up")] == 0
        counts = {}
        for family in text_string_to_metric_families(text):
            if family.name == "protocx_requests":
                for sample in family.samples:
                    if sample.name == "protocx_requests_total":
                        lab = sample.labels
                        counts[(lab["service"], lab["method"], lab["cluster"], lab["code"])] = (
                            sample.value
                        )
        assert counts == {
            ("com.acme.A:1.0", "m1", "up", "200"): 7.0,
            ("com.acme.B:1.0", "m2", "up", "200"): 3.0,
            ("org.none:1", "sayHello", "", "404"): 2.0,
        }
        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
        assert len(lines) == 12
        assert all(set(line) == {"time", "listener", "protocol", "service", "method", "cluster",
                                 "upstream", "code", "status", "duration_ms"} for line in lines)  # fmt: skip
        assert [(x["service"], x["code"], x["status"]) for x in lines] == (
            [("com.acme.A:1.0", 200, 0)] * 7
            + [("com.acme.B:1.0", 200, 0)] * 3
            + [("org.none:1", 404, 6)] * 2
        )
        assert (
            all(x["upstream"] == f"127.0.0.1:{up}" for x in lines[:10])
            and lines[10]["upstream"] is None
        )
        assert all(x["listener"] == "edge" and x["protocol"] == "bolt" for x in lines)
        assert lines[0]["time"].endswith("+00:00") and "T" in lines[0]["time"]

    run(scenario())


def test_header_mutation_skips_frames_whose_layout_has_no_header_map():
    """dubbo answers carry no attachments in the spec's layout: their setters refuse
    (NotImplementedError), so response headers are not added to them — the answer still comes
    back, and the requests (whose layout has the map) get their headers."""

    async def scenario():
        up, port = free_port(), free_port()
        seen: list = []
        mutation = {"request_headers_to_add": [{"key": "x-env", "value": "prod"}],
                    "response_headers_to_add": [{"key": "x-served-via", "value": "protoc-x"}],
                    "response_headers_to_remove": ["x-env"]}  # fmt: skip
        cfg = simple_config("dubbo", port, [f"127.0.0.1:{up}"],
                            listener_extra={"stream_filters": [{"name": "header_mutation", "config": mutation}]})  # fmt: skip
        async with recorder("dubbo", up, seen), proxy_running(cfg):
            c = await client("dubbo", port)
            for rid in (1, 2):
                answer = await asyncio.wait_for(c.call(dubbo_request(rid)), 5)
                assert answer.get_request_id() == rid
                assert answer.get_status() == DUBBO.map_status(200)
            assert [f.get_header("x-env") for f in seen] == ["prod", "prod"]
            assert not c.conn.closed

    run(scenario())


def test_node_labels_route_a_frame_whose_layout_has_no_header_map():
    """A dubbo request in another serialization than hessian2 has no attachments in the
    spec's layout, so the labels cannot be written into it: routing still sees them."""

    async def scenario():
        up, port = free_port(), free_port()
        cfg = config(
            [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": ["dubbo"], "route_config": "r",
              "stream_filters": [{"name": "node_labels", "config": {"labels": {"color": "green"}}}]}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"headers": [{"name": "color", "exact": "green"}]}, "route": {"cluster": "up"}}]}]}],
            [{"name": "up", "endpoints": [f"127.0.0.1:{up}"]}],
        )  # fmt: skip
        seen: list = []
        body = b"\x01\x02opaque kryo bytes"
        frame = DUBBO.decode(bytes.fromhex("dabbc600") + struct.pack(">QI", 7, len(body)) + body)
        async with recorder("dubbo", up, seen), proxy_running(cfg):
            c = await client("dubbo", port)
            answer = await asyncio.wait_for(c.call(frame), 5)
            assert answer.get_request_id() == 7 and not c.conn.closed
        assert len(seen) == 1 and bytes(seen[0].get_body()) == body  # forwarded as it came

    run(scenario())


def test_a_peers_absurd_timeout_is_capped_not_fatal():
    """A dubbo client's ``timeout`` attachment of 400 digits (int() takes it) overflowed the
    deadline's float and closed the connection with all it carried: it is capped at the
    longest timeout a config may set, and the request is answered."""

    async def scenario():
        up, port = free_port(), free_port()
        cfg = simple_config("dubbo", port, [f"127.0.0.1:{up}"])
        async with upstream("dubbo", up), proxy_running(cfg):
            c = await client("dubbo", port)
            frame = dubbo_request(1)
            frame.set_header("timeout", "9" * 400)
            assert frame.get_timeout() == int("9" * 400)
            answer = await asyncio.wait_for(c.call(frame), 5)
            assert answer.get_request_id() == 1
            assert answer.get_status() == DUBBO.map_status(200)
            assert not c.conn.closed

    run(scenario())
