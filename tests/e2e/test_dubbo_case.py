"""The partner's Dubbo case (MOSN's community case, ../shared/seed): Dubbo through the sidecar
with current limiting and blue-green routing, configured with HTTP-style routes — host = the
Dubbo service, path = "/<method>", the machine's labels added to the headers (attachments) so
routes can match them. protoc-x has no Dubbo-specific code for this: dubbo.xproto says which
fields are the service, the method and the headers; routing and filters are generic.

Real peers: dubbo-ssl-python's DubboClient (in a child process, see case_dubbo) and
sofa-rpc-node's dubbo server (tests.peers dubbo_server(), which reports each request it
decoded); the proxy is `protoc-x run` as a process. Frame-level checks that the real client
cannot express use runtime.client with generated.dubbo.

Every call carries its own tag as its only argument, and the servers' reports are selected by
it: the proxy gives upstream requests ids of its own (unique per upstream connection).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from protoc_x.generated.dubbo import PROTOCOL as DUBBO
from protoc_x.runtime.client import Client
from protoc_x.runtime.run import install_loop
from tests.peers.dubbo_peers import SERVICE as PEER_SERVICE
from tests.peers.dubbo_peers import dubbo_server

from .case_dubbo import (
    ROOT,
    SERVICE,
    call,
    dubbo_request,
    free_port,
    ok_body,
    proxy_run,
    real_calls,
    reported,
    serve_run,
    tags,
)

ORDERS = "com.acme.OrderService"  # a second service: the npm server serves only SERVICE
STATUS_OK, SERVICE_NOT_FOUND, SERVER_ERROR, THREADPOOL_EXHAUSTED = 20, 60, 80, 100


def run(coro, timeout: float = 30):
    install_loop()
    return asyncio.run(asyncio.wait_for(coro, timeout))


def listener(port: int, route_config: str, filters: list | None = None, name: str = "") -> dict:
    out = {
        "name": name or f"partner-{port}",
        "address": f"127.0.0.1:{port}",
        "protocol": "dubbo",
        "route_config": route_config,
    }
    if filters:
        out["stream_filters"] = filters
    return out


def cluster(name: str, *endpoints) -> dict:
    return {"name": name, "endpoints": [f"127.0.0.1:{port}" for port in endpoints]}


def test_peer_service_is_what_the_case_calls():
    assert SERVICE == PEER_SERVICE


# ---- 1. two services through one listener: domain = service, path = /<method> ----------------


def test_two_services_one_listener_routed_by_domain_and_method_path(tmp_path):
    port, orders_port = free_port(), free_port()
    host = f"127.0.0.1:{port}"
    with (
        dubbo_server() as demo,
        dubbo_server() as special,
        serve_run(orders_port, tmp_path) as orders,
    ):
        config = {
            "listeners": [listener(port, "partner")],
            "route_configs": [
                {
                    "name": "partner",
                    "virtual_hosts": [
                        {
                            "name": "demo",
                            "domains": [SERVICE],
                            "routes": [
                                {"match": {"path": "/special"}, "route": {"cluster": "special"}},
                                {"match": {"prefix": "/"}, "route": {"cluster": "demo"}},
                            ],
                        },
                        {
                            "name": "orders",
                            "domains": [ORDERS],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "orders"}}],
                        },
                    ],
                }
            ],
            "clusters": [
                cluster("demo", demo.port),
                cluster("special", special.port),
                cluster("orders", orders_port),
            ],
        }
        with proxy_run(config, tmp_path) as proxy:
            out = {
                o["tag"]: o
                for o in real_calls(
                    [
                        call(host, "demo-0"),
                        call(host, "demo-1", method="register"),
                        call(host, "special-0", method="special"),
                        call(host, "demo-2", method="specialist"),  # path is exact, not a prefix
                        call(host, "orders-0", service=ORDERS, method="placeOrder"),
                        call(host, "nobody-0", service="com.acme.Nobody"),
                    ]
                )
            }

            async def frames():
                client = await Client.connect(DUBBO, "127.0.0.1", port)
                try:
                    order = dubbo_request(0x7000_0000_0000_0001, ORDERS, "placeOrder", "orders-1")
                    sent = order.encode()
                    got_order = await client.call(order)
                    got_special = await client.call(
                        dubbo_request(0x7000_0000_0000_0002, SERVICE, "special", "special-1")
                    )
                    return sent, got_order, got_special
                finally:
                    client.close()

            sent_order, got_order, got_special = run(frames())
            proxy_log = proxy.log()

        print("dubbo-ssl-python outcomes:", *out.values(), sep="\n  ")
        # service A by its domain; its method `special` by path to its own cluster
        assert out["demo-0"].get("result") == "ok:sayHello:1", out["demo-0"]
        assert out["demo-1"].get("result") == "ok:register:1", out["demo-1"]
        assert out["demo-2"].get("result") == "ok:specialist:1", out["demo-2"]
        assert out["special-0"].get("result") == "ok:special:1", out["special-0"]
        at_demo = reported(demo, lambda e: True, want=3)
        at_special = reported(special, lambda e: True, want=2)
        assert tags(at_demo) == ["demo-0", "demo-1", "demo-2"], at_demo
        assert [(e["service"], e["method"]) for e in at_demo if e["args"] == ["demo-1"]] == [
            (f"{SERVICE}:1.0.0", "register")
        ]
        assert tags(at_special) == ["special-0", "special-1"], at_special
        assert {e["method"] for e in at_special} == {"special"}
        # the second service by its domain, to `protoc-x serve dubbo` (an echo, which
        # dubbo-ssl-python cannot read as a result: it only has to have arrived there)
        log = orders.log()
        assert f"service={ORDERS} method=placeOrder" in log, log
        assert len(re.findall(r"service=\S+ method=", log)) == 2, log  # orders-0 and orders-1
        assert out["orders-0"].get("error_type") != "DubboRequestTimeoutException", out["orders-0"]
        assert got_order.get_request_id() == 0x7000_0000_0000_0001
        assert got_order.get_status() == STATUS_OK
        assert bytes(got_order.get_body()) == sent_order[16:]  # serve echoes the request's body
        assert got_special.get_request_id() == 0x7000_0000_0000_0002
        assert got_special.get_status() == STATUS_OK
        assert bytes(got_special.get_body()) == ok_body("special")
        # a service no domain names: the proxy answers SERVICE_NOT_FOUND itself
        assert out["nobody-0"].get("error_type") == "DubboResponseException", out["nobody-0"]
        assert "404" in out["nobody-0"]["error"], out["nobody-0"]
        for server in (demo, special):
            strays = reported(server, lambda e: e["args"][0][:6] in ("orders", "nobody"), want=0)
            assert strays == [], strays
        assert "Traceback" not in proxy_log, proxy_log


# ---- 2. blue-green: the node's labels file decides -------------------------------------------


def labels_file(tmp_path: Path, color: str) -> Path:
    """What Kubernetes' downward API writes for metadata.labels: key="value" lines."""
    path = tmp_path / f"labels-{color}"
    path.write_text(
        f'app="partner-dubbo"\ncolor="{color}"\npod-template-hash="7c9d8b6f5"\n', encoding="utf-8"
    )
    return path


def blue_green_config(port: int, labels: Path, blue_port: int, green_port: int) -> dict:
    def by_color(color: str) -> dict:
        headers = [{"name": "color", "exact": color}]
        return {"match": {"prefix": "/", "headers": headers}, "route": {"cluster": color}}

    labels_filter = {"name": "node_labels", "config": {"labels_file": str(labels)}}
    return {
        "listeners": [listener(port, "bluegreen", [labels_filter])],
        "route_configs": [
            {
                "name": "bluegreen",
                "virtual_hosts": [
                    {
                        "name": "demo",
                        "domains": [SERVICE],
                        "routes": [by_color("green"), by_color("blue")],
                    }
                ],
            }
        ],
        "clusters": [cluster("blue", blue_port), cluster("green", green_port)],
    }


def test_blue_green_by_the_node_labels_file(tmp_path):
    methods = ["sayHello", "register", "special", "sayHello"]
    with dubbo_server() as blue, dubbo_server() as green:
        for color, chosen, other in (("green", green, blue), ("blue", blue, green)):
            port = free_port()
            config = blue_green_config(port, labels_file(tmp_path, color), blue.port, green.port)
            with proxy_run(config, tmp_path, f"proxy-{color}") as proxy:
                plan = [
                    call(f"127.0.0.1:{port}", f"{color}-{n}", method=m)
                    for n, m in enumerate(methods)
                ]
                out = real_calls(plan)
                proxy_log = proxy.log()
            assert "Traceback" not in proxy_log, proxy_log
            print(f"labels say {color}:", *out, sep="\n  ")
            assert [o.get("result") for o in out] == [f"ok:{m}:1" for m in methods], out
            here = reported(chosen, lambda e, c=color: e["args"][0].startswith(c), want=4)
            assert tags(here) == [f"{color}-{n}" for n in range(4)], here
            assert reported(other, lambda e, c=color: e["args"][0].startswith(c), want=0) == []
            for event in here:  # dubbo has a writable header map: the labels travel upstream
                assert event["attachments"]["color"] == color, event
                assert event["attachments"]["app"] == "partner-dubbo", event


# ---- 3. current limiting per service ----------------------------------------------------------


def test_rate_limit_per_service_answers_threadpool_exhausted(tmp_path):
    real_port, frames_port = free_port(), free_port()
    limit = {
        "name": "local_rate_limit",
        "config": {"tokens_per_second": 1, "burst": 3, "per": ["service"]},
    }
    with dubbo_server() as server:
        config = {
            # one listener per client kind: each listener's chain has its own buckets
            "listeners": [
                listener(real_port, "limited", [limit], name="real"),
                listener(frames_port, "limited", [limit], name="frames"),
            ],
            "route_configs": [
                {
                    "name": "limited",
                    "virtual_hosts": [
                        {
                            "name": "all",
                            "domains": [SERVICE, ORDERS],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "demo"}}],
                        }
                    ],
                }
            ],
            "clusters": [cluster("demo", server.port)],
        }
        with proxy_run(config, tmp_path) as proxy:

            async def frames():
                client = await Client.connect(DUBBO, "127.0.0.1", frames_port)
                got = []
                try:
                    for n in range(4):  # the burst, then one more
                        got.append(
                            await client.call(
                                dubbo_request(1000 + n, SERVICE, "sayHello", f"f-{n}")
                            )
                        )
                    got.append(
                        await client.call(dubbo_request(2000, ORDERS, "sayHello", "f-orders"))
                    )
                    await asyncio.sleep(1.2)  # one token back
                    open_after_429 = not client.conn.closed
                    got.append(await client.call(dubbo_request(1004, SERVICE, "sayHello", "f-4")))
                    return got, open_after_429
                finally:
                    client.close()

            got, open_after_429 = run(frames())
            host = f"127.0.0.1:{real_port}"
            out = real_calls(
                [call(host, f"real-{n}") for n in range(3)]
                + [
                    call(host, "real-orders", service=ORDERS),  # its own bucket
                    call(host, "real-3", timeout=1.5),  # over the limit
                    # dubbo-ssl-python has lost that connection (case_dubbo's docstring): a
                    # new one ("localhost" is a new pool key), once a token is back
                    call(f"localhost:{real_port}", "real-4", pause=1.1),
                ]
            )
            log = proxy.log()
        print("frames:", [(f.get_request_id(), f.get_status()) for f in got])
        print("dubbo-ssl-python outcomes:", *out, sep="\n  ")

        # frame level: the mapped status, the request's id, on a connection that stays open
        ok0, ok1, ok2, limited, orders, after = got
        for n, frame in enumerate((ok0, ok1, ok2)):
            assert (frame.get_request_id(), frame.get_status()) == (1000 + n, STATUS_OK)
            assert bytes(frame.get_body()) == ok_body("sayHello")
        assert limited.get_request_id() == 1003
        assert limited.get_status() == THREADPOOL_EXHAUSTED, limited.get_status()
        assert limited.error_message == "protoc-x: 429 rate limited", limited.error_message
        assert DUBBO.runtime_status(limited.get_status()) == 503  # dubbo 100 maps back to 503
        # another service has its own bucket: it reaches the server (which serves only
        # SERVICE, so it answers SERVER_ERROR "not found service")
        assert orders.get_request_id() == 2000
        assert orders.get_status() == SERVER_ERROR, orders.get_status()
        assert "not found service" in orders.error_message
        assert open_after_429
        assert (after.get_request_id(), after.get_status()) == (1004, STATUS_OK)
        assert bytes(after.get_body()) == ok_body("sayHello")
        passed = reported(server, lambda e: e["args"][0].startswith("f-"), want=5)
        assert tags(passed) == ["f-0", "f-1", "f-2", "f-4", "f-orders"], passed

        # the real client: three calls pass, another service passes, the fourth is refused
        by_tag = {o["tag"]: o for o in out}
        for n in range(3):
            assert by_tag[f"real-{n}"].get("result") == "ok:sayHello:1", by_tag[f"real-{n}"]
        assert "not found service" in by_tag["real-orders"].get("error", ""), by_tag["real-orders"]
        refused = by_tag["real-3"]
        # dubbo-ssl-python knows no name for status 100: its reader raises KeyError(100) on the
        # response header and the caller waits out its timeout
        assert refused.get("error_type") == "DubboRequestTimeoutException", refused
        assert "KeyError(100)" in refused["library_errors"], refused
        assert by_tag["real-4"].get("result") == "ok:sayHello:1", by_tag["real-4"]
        passed = reported(server, lambda e: e["args"][0].startswith("real-"), want=5)
        assert tags(passed) == ["real-0", "real-1", "real-2", "real-4", "real-orders"], passed
        assert "Traceback" not in log, log


# ---- 4. nothing Dubbo-specific in the runtime --------------------------------------------------


def test_runtime_has_no_dubbo_specific_code():
    runtime = ROOT / "runtime"
    hits = []
    for path in sorted(runtime.rglob("*")):
        rel = path.relative_to(runtime)
        if not path.is_file() or rel.parts[0] == "fieldtypes" or "__pycache__" in rel.parts:
            continue
        for n, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        ):
            if "dubbo" in line.lower():
                hits.append(f"runtime/{rel}:{n}: {line.strip()}")
    assert len(list(runtime.rglob("*.py"))) > 10  # the tree is there
    assert hits == [], "\n".join(hits)
