"""xDS: a real gRPC control plane (tests/peers/xds_control_plane.py) serving Envoy v3 resources
over ADS to the proxy's client, with bolt requests through the proxy on real sockets: what the
control plane sends is served (listeners, generic_proxy routes, EDS clusters, endpoints); a
resource the proxy cannot take is NACKed with the reason and changes nothing; the proxy keeps
serving while the control plane is away and takes up again when it returns."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import urllib.request

import pytest

from protoc_x.runtime.config import ConfigError, parse_config
from protoc_x.runtime.run import open_proxy
from tests.peers import xds_control_plane as xcp
from tests.peers.xds_control_plane import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ControlPlane,
    bootstrap,
)

from .harness import PROTOCOLS, client, eventually, free_port, run
from .test_pool import status
from .test_proxy_behaviour import bolt_request
from .test_reload import upstreams


@contextlib.asynccontextmanager
async def xds_proxy(data: dict):
    proxy = await open_proxy(parse_config(data, "."), PROTOCOLS)
    try:
        yield proxy
    finally:
        await proxy.xds.stop()
        await proxy.drain(0.5)


@contextlib.asynccontextmanager
async def xds_served(*names: str, data=None, **control_plane):
    """Recording bolt upstreams ``names``, a control plane (``ControlPlane(**control_plane)``)
    and the proxy it configures (``data(cp_port)``: its bootstrap, default :func:`bootstrap`);
    yields (proxy, control plane, a free port for its listener, upstream ports, seen)."""
    ports, seen, ups = await upstreams(*names)
    cp = ControlPlane(**control_plane).start()
    try:
        async with ups, xds_proxy((data or bootstrap)(cp.port)) as proxy:
            yield proxy, cp, free_port(), ports, seen
    finally:
        cp.stop()


def serve_bolt(cp: ControlPlane, port: int, ups: dict, routes=None) -> dict:
    """LDS, RDS, CDS and EDS for one bolt listener on ``port`` routing to cluster ``a`` (or by
    ``routes``), one EDS cluster per upstream name; the versions set."""
    versions = {}
    versions[CLUSTER] = cp.set(CLUSTER, [xcp.eds_cluster(n) for n in ups])
    versions[ENDPOINT] = cp.set(
        ENDPOINT, [xcp.assignment(n, [("127.0.0.1", p)]) for n, p in ups.items()]
    )
    versions[LISTENER] = cp.set(LISTENER, [xcp.listener("dyn", port, "bolt", rds="routes")])
    m = routes or xcp.matcher(otherwise=xcp.action("a"))
    versions[ROUTE] = cp.set(ROUTE, [xcp.route_config("routes", [("all", ["*"], m)])])
    return versions


async def acked(cp: ControlPlane, type_url: str, version: str):
    return await asyncio.to_thread(cp.wait_ack, type_url, version)


async def nacked(cp: ControlPlane, type_url: str, after: int):
    return await asyncio.to_thread(cp.wait_nack, type_url, 10.0, after)


def test_listener_routes_clusters_and_endpoints_from_the_control_plane():
    async def scenario():
        async with xds_served("a", "b", "c") as (proxy, cp, port, ports, seen):
            assert not proxy.xds.initialized.is_set()
            blue = xcp.matcher(
                (xcp.predicate(headers={"color": "blue"}), xcp.action("b")),
                (xcp.predicate(method="weigh"), xcp.action(weighted={"a": 0, "c": 5})),
                otherwise=xcp.action("a"),
            )
            versions = serve_bolt(cp, port, {n: ports[n] for n in ("a", "b", "c")}, blue)
            for t, v in versions.items():
                await acked(cp, t, v)
            assert await eventually(lambda: proxy.xds.initialized.is_set())
            first = cp.requests[0]
            assert first.node.id == "sidecar-1" and first.node.cluster == "checkout"
            assert first.node.metadata["labels"]["app"] == "checkout"
            c = await client("bolt", port)
            assert status(await c.call(bolt_request(1))) == 200
            assert status(await c.call(bolt_request(2, color="blue"))) == 200
            assert status(await c.call(bolt_request(3, method="weigh"))) == 200
            assert [len(seen[n]) for n in "abc"] == [1, 1, 1]
            # EDS: a's endpoint becomes c's upstream; an unhealthy one is not used
            v = cp.set(ENDPOINT, [
                xcp.assignment("a", [("127.0.0.1", ports["c"])], unhealthy=[("127.0.0.1", ports["a"])]),
                xcp.assignment("b", [("127.0.0.1", ports["b"])]),
                xcp.assignment("c", [("127.0.0.1", ports["c"])]),
            ])  # fmt: skip
            await acked(cp, ENDPOINT, v)
            assert status(await c.call(bolt_request(4))) == 200
            assert [len(seen[n]) for n in "abc"] == [1, 1, 2]
            assert proxy.clusters["a"].endpoints == [f"127.0.0.1:{ports['c']}"]
            # an EDS cluster with no endpoint: the protocol's 503
            v = cp.set(ENDPOINT, [xcp.assignment("a", []), xcp.assignment("b", [("127.0.0.1", ports["b"])]),
                                  xcp.assignment("c", [("127.0.0.1", ports["c"])])])  # fmt: skip
            await acked(cp, ENDPOINT, v)
            assert status(await c.call(bolt_request(5))) == 503
            # LDS without the listener: it closes
            v = cp.set(LISTENER, [])
            await acked(cp, LISTENER, v)
            assert proxy.listeners == []
            with pytest.raises(OSError):
                await client("bolt", port)

    run(scenario())


@pytest.mark.parametrize(
    "type_url, bad, says",
    [
        (ROUTE, lambda: xcp.route_config("routes", [("all", ["*"], xcp.matcher(
            (xcp.predicate(regex={"color": "(blue"}), xcp.action("a")), otherwise=xcp.action("a")))]),
         "RouteConfiguration 'routes': virtual_hosts[0].routes[0].match.headers[0].regex: missing ), unterminated subpattern"),
        (ROUTE, lambda: xcp.route_config("routes", [("all", ["*"], xcp.matcher(otherwise=xcp.action("a", timeout_ms=0)))]),
         "RouteConfiguration 'routes': virtual_hosts[0].routes.on_no_match.action.typed_config.timeout: 0 (no timeout) is not supported"),
        (ROUTE, lambda: xcp.route_config("routes", [("all", ["*"], xcp.matcher(
            (xcp.predicate(method="m"), xcp.action(weighted={"a": 0}))))]),
         "RouteConfiguration 'routes': virtual_hosts[0].routes.matcher_list.matchers[0].on_match.action.typed_config.weighted_clusters.clusters: needs a cluster with a weight above 0"),
        (LISTENER, lambda: xcp.listener("dyn", 1, "nosuch", rds="routes"),
         "Listener 'dyn': protocol: unknown protocol 'nosuch'"),
        (CLUSTER, lambda: xcp.eds_cluster("a", request_timeout_ms=-5),
         "Cluster 'a': request_timeout_ms: must be greater than 0, got -5"),
        (CLUSTER, lambda: xcp.eds_cluster("a", colour="blue"),
         "Cluster 'a': typed_extension_protocol_options['protoc_x.cluster'].value.colour: unknown key"),
    ],
    ids=["bad-regex", "zero-timeout", "all-weights-zero", "unknown-protocol", "bad-option", "unknown-option"],
)  # fmt: skip
def test_a_bad_update_is_nacked_with_the_reason_and_changes_nothing(type_url, bad, says):
    async def scenario():
        async with xds_served("a") as (proxy, cp, port, ports, seen):
            good = serve_bolt(cp, port, ports)
            for t, v in good.items():
                await acked(cp, t, v)
            c = await client("bolt", port)
            assert status(await c.call(bolt_request(1))) == 200
            before = proxy.config
            after = len(cp.requests)
            resource = bad()
            if type_url == LISTENER:
                resource = xcp.listener("dyn", port, "nosuch", rds="routes")
            cp.set(type_url, [resource])
            nack = await nacked(cp, type_url, after)
            assert says in nack.error_detail.message
            assert nack.error_detail.code == 3  # INVALID_ARGUMENT
            assert nack.version_info == good[type_url], "a NACK carries the last good version"
            assert proxy.config is before
            assert status(await c.call(bolt_request(2))) == 200
            assert len(seen["a"]) == 2 and not c.conn.closed
            dump = proxy.xds.dump()
            assert dump["nacks"] == 1 and says in dump["last_nack"]["error_detail"]

    run(scenario())


def test_a_route_to_a_cluster_not_sent_yet_is_taken_and_answered_503_until_it_comes():
    """As Envoy's RDS routes: a route may name a cluster CDS has not sent (yet), or no longer
    sends; its requests are answered 503 meanwhile. The file's own route may name a cluster
    that only CDS sends."""

    async def scenario():
        ports, seen, ups = await upstreams("a", "b")
        cp = ControlPlane().start()
        port, filed = free_port(), free_port()
        data = bootstrap(cp.port)
        data["listeners"] = [{"name": "filed", "address": f"127.0.0.1:{filed}", "protocol": "bolt",
                              "route_config": "filed"}]  # fmt: skip
        data["route_configs"] = [{"name": "filed", "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "b"}}]}]}]  # fmt: skip
        try:
            async with ups, xds_proxy(data) as proxy:
                served = serve_bolt(cp, port, {"a": ports["a"]}, xcp.matcher(
                    (xcp.predicate(headers={"color": "blue"}), xcp.action("b")),
                    otherwise=xcp.action("a")))  # fmt: skip
                for t, v in served.items():
                    await acked(cp, t, v)
                c, f = await client("bolt", port), await client("bolt", filed)
                assert status(await c.call(bolt_request(1))) == 200
                assert status(await c.call(bolt_request(2, color="blue"))) == 503
                assert status(await f.call(bolt_request(3))) == 503
                # b comes: both routes to it serve
                v = cp.set(CLUSTER, [xcp.eds_cluster("a"), xcp.eds_cluster("b")])
                e = cp.set(ENDPOINT, [xcp.assignment(n, [("127.0.0.1", ports[n])]) for n in "ab"])
                await acked(cp, CLUSTER, v)
                await acked(cp, ENDPOINT, e)
                assert status(await c.call(bolt_request(4, color="blue"))) == 200
                assert status(await f.call(bolt_request(5))) == 200
                assert (len(seen["a"]), len(seen["b"])) == (1, 2)
                # and goes again: taken (not NACKed), 503 again
                v = cp.set(CLUSTER, [xcp.eds_cluster("a")])
                await acked(cp, CLUSTER, v)
                assert status(await c.call(bolt_request(6, color="blue"))) == 503
                assert status(await c.call(bolt_request(7))) == 200
                assert proxy.xds.counts["nack"] == 0
        finally:
            cp.stop()

    run(scenario())


def test_a_listener_whose_routes_change_keeps_serving_the_old_until_the_new_come():
    """Envoy's warming: the listener's new version waits for its new route config; the old
    version, with its routes, serves meanwhile. Route configs nothing names any more are
    dropped from the subscription, and no request ever names none (which a control plane
    could take for every one)."""

    async def scenario():
        async with xds_served("a", "b") as (proxy, cp, port, ports, seen):
            served = serve_bolt(cp, port, {n: ports[n] for n in "ab"})
            for t, v in served.items():
                await acked(cp, t, v)
            c = await client("bolt", port)
            assert status(await c.call(bolt_request(1))) == 200
            v = cp.set(LISTENER, [xcp.listener("dyn", port, "bolt", rds="routes-2",
                                               codec={"idle_timeout_ms": 5000})])  # fmt: skip
            await acked(cp, LISTENER, v)
            asked = await asyncio.to_thread(cp.wait, lambda r: r.type_url == ROUTE
                                            and "routes-2" in r.resource_names)  # fmt: skip
            assert sorted(asked.resource_names) == ["routes", "routes-2"]
            for i in range(3):  # warming: the old listener and routes serve
                assert status(await c.call(bolt_request(2 + i))) == 200
            dump = proxy.xds.dump()
            assert [l["name"] for l in dump["dynamic_warming_listeners"]] == ["dyn"]
            assert proxy.listeners[0].config.idle_timeout_ms != 5000
            # the new routes come: the new listener takes over, routing to b
            v = cp.set(ROUTE, [xcp.route_config("routes-2", [("all", ["*"], xcp.matcher(
                otherwise=xcp.action("b")))])])  # fmt: skip
            await acked(cp, ROUTE, v)
            assert await eventually(lambda: proxy.listeners[0].config.idle_timeout_ms == 5000)
            c2 = await client("bolt", port)
            assert status(await c2.call(bolt_request(9))) == 200
            assert (len(seen["a"]), len(seen["b"])) == (4, 1)
            assert proxy.xds.dump()["dynamic_warming_listeners"] == []
            last = [r for r in cp.requests if r.type_url == ROUTE][-1]
            assert list(last.resource_names) == ["routes-2"]
            assert set(proxy.xds.state.resources[ROUTE]) == {"routes-2"}
            # no listener: nothing names a route config; the subscription is not emptied
            v = cp.set(LISTENER, [])
            await acked(cp, LISTENER, v)
            await asyncio.sleep(0.3)
            assert cp.empty_asks == []
            assert proxy.xds.state.resources[ROUTE] == {}

    run(scenario())


def test_endpoint_weights_from_eds_share_the_requests():
    """load_balancing_weight 3 and 1: round robin sends three of four requests to the first;
    a new assignment with other weights takes over on the running cluster; /clusters shows
    them."""

    async def scenario():
        admin = free_port()
        async with xds_served("a", "b", data=lambda cp_port: bootstrap(cp_port, admin)) as (
            proxy,
            cp,
            port,
            ports,
            seen,
        ):
            heavy, light = ("127.0.0.1", ports["a"]), ("127.0.0.1", ports["b"])
            for t, v in serve_bolt(cp, port, {"a": ports["a"]}).items():
                await acked(cp, t, v)
            v = cp.set(ENDPOINT, [xcp.assignment("a", [heavy, light], weights={heavy: 3})])
            await acked(cp, ENDPOINT, v)
            c = await client("bolt", port)
            for i in range(40):
                assert status(await c.call(bolt_request(i))) == 200
            assert (len(seen["a"]), len(seen["b"])) == (30, 10)
            cluster = proxy.clusters["a"]
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters?format=json").read()
            )  # fmt: skip
            (shown,) = [x for x in json.loads(body)["clusters"] if x["name"] == "a"]
            assert [(e["address"], e["weight"]) for e in shown["endpoints"]] == [
                (f"127.0.0.1:{ports['a']}", 3), (f"127.0.0.1:{ports['b']}", 1)]  # fmt: skip
            v = cp.set(ENDPOINT, [xcp.assignment("a", [heavy, light], weights={light: 4})])
            await acked(cp, ENDPOINT, v)
            assert proxy.clusters["a"] is cluster, "the cluster (its connections) stays"
            for i in range(50):
                assert status(await c.call(bolt_request(100 + i))) == 200
            assert (len(seen["a"]), len(seen["b"])) == (40, 50)

    run(scenario())


def test_what_was_not_asked_for_is_not_taken():
    async def scenario():
        async with xds_served("a", send_unrequested=True) as (proxy, cp, port, ports, seen):
            served = serve_bolt(cp, port, {"a": ports["a"]})
            cp.set(ENDPOINT, [xcp.assignment("a", [("127.0.0.1", ports["a"])]),
                              xcp.assignment("stray", [("127.0.0.1", 1)])])  # fmt: skip
            stray = xcp.route_config("stray", [("all", ["*"], xcp.matcher(
                otherwise=xcp.action("a", timeout_ms=0)))])  # (one it could not take)  # fmt: skip
            v = cp.set(ROUTE, [xcp.route_config("routes", [("all", ["*"], xcp.matcher(
                otherwise=xcp.action("a")))]), stray])  # fmt: skip
            await acked(cp, ROUTE, v)
            await acked(cp, LISTENER, served[LISTENER])
            assert proxy.xds.counts["nack"] == 0
            c = await client("bolt", port)
            assert status(await c.call(bolt_request(1))) == 200
            assert set(proxy.xds.state.resources[ROUTE]) == {"routes"}
            assert set(proxy.xds.state.resources[ENDPOINT]) == {"a"}
            assert [rc.name for rc in proxy.config.route_configs] == ["routes"]

    run(scenario())


def test_a_reload_that_fails_is_nacked_and_the_stream_goes_on():
    async def scenario():
        async with xds_served("a", "b") as (proxy, cp, port, ports, seen):
            for t, v in serve_bolt(cp, port, {n: ports[n] for n in "ab"}).items():
                await acked(cp, t, v)
            real = proxy.reload

            async def broken(config, protocols):
                proxy.reload = real  # (once)
                raise ValueError("broken on purpose")

            proxy.reload = broken
            after = len(cp.requests)
            cp.set(ROUTE, [xcp.route_config("routes", [("all", ["*"], xcp.matcher(
                otherwise=xcp.action("b")))])])  # fmt: skip
            nack = await nacked(cp, ROUTE, after)
            assert "ValueError: broken on purpose" in nack.error_detail.message
            c = await client("bolt", port)
            assert status(await c.call(bolt_request(1))) == 200
            assert (len(seen["a"]), len(seen["b"])) == (1, 0), "the last good config serves"
            v = cp.set(ROUTE, [xcp.route_config("routes", [("all", ["*"], xcp.matcher(
                otherwise=xcp.action("b", timeout_ms=900)))])])  # fmt: skip
            await acked(cp, ROUTE, v)
            assert status(await c.call(bolt_request(2))) == 200
            assert (len(seen["a"]), len(seen["b"])) == (1, 1)
            assert proxy.xds.counts["streams"] == 1

    run(scenario())


def test_a_new_config_file_asks_for_the_route_configs_it_names():
    """SIGHUP's path: a file listener with rds added; the client asks for its routes on the
    running stream, and the listener opens when they come."""

    async def scenario():
        filed = free_port()
        async with xds_served("a") as (proxy, cp, port, ports, seen):
            for t, v in serve_bolt(cp, port, {"a": ports["a"]}).items():
                await acked(cp, t, v)
            data = bootstrap(cp.port)
            data["listeners"] = [{"name": "filed", "address": f"127.0.0.1:{filed}",
                                  "protocol": "bolt", "rds": {"route_config_name": "filed"}}]  # fmt: skip
            await proxy.xds.reconfigure(parse_config(data, "."), PROTOCOLS)
            asked = await asyncio.to_thread(cp.wait, lambda r: r.type_url == ROUTE
                                            and "filed" in r.resource_names)  # fmt: skip
            assert sorted(asked.resource_names) == ["filed", "routes"]
            assert [l.name for l in proxy.listeners] == ["dyn"], "filed waits for its routes"
            v = cp.set(ROUTE, [xcp.route_config(n, [("all", ["*"], xcp.matcher(
                otherwise=xcp.action("a")))]) for n in ("routes", "filed")])  # fmt: skip
            await acked(cp, ROUTE, v)
            assert await eventually(lambda: len(proxy.listeners) == 2)
            c = await client("bolt", filed)
            assert status(await c.call(bolt_request(1))) == 200
            assert proxy.xds.counts["streams"] == 1

    run(scenario())


def test_the_proxy_serves_while_the_control_plane_is_away_and_takes_up_again():
    async def scenario():
        async with xds_served("a", "b") as (proxy, cp, port, ports, seen):
            for t, v in serve_bolt(cp, port, {"a": ports["a"]}).items():
                await acked(cp, t, v)
            c = await client("bolt", port)
            assert status(await c.call(bolt_request(1))) == 200
            cp.stop()
            assert await eventually(lambda: not proxy.xds.connected)
            for i in range(5):  # (reconnecting meanwhile, with backoff)
                assert status(await c.call(bolt_request(2 + i))) == 200
                await asyncio.sleep(0.1)
            # a new control plane on the same port, with b where a was
            again = ControlPlane(cp.port)
            versions = serve_bolt(again, port, {"a": ports["b"]})
            again.start()
            try:
                for t, v in versions.items():
                    await acked(again, t, v)
                assert proxy.xds.counts["streams"] >= 2
                assert status(await c.call(bolt_request(9))) == 200
                assert (len(seen["a"]), len(seen["b"])) == (6, 1)
                assert not c.conn.closed, "the listener stayed through it all"
            finally:
                again.stop()

    run(scenario())


def test_static_listener_and_cluster_with_routes_from_the_control_plane_and_config_dump():
    async def scenario():
        ports, seen, ups = await upstreams("a")
        cp = ControlPlane().start()
        port, admin = free_port(), free_port()
        data = bootstrap(cp.port, admin)
        del data["dynamic_resources"]["lds_config"], data["dynamic_resources"]["cds_config"]
        data["listeners"] = [{"name": "static", "address": f"127.0.0.1:{port}", "protocol": "bolt",
                              "rds": {"route_config_name": "routes"}}]  # fmt: skip
        data["clusters"].append({"name": "a", "endpoints": [f"127.0.0.1:{ports['a']}"]})
        try:
            async with ups, xds_proxy(data) as proxy:
                assert proxy.listeners == [], "the listener waits for its routes"
                v = cp.set(
                    ROUTE,
                    [
                        xcp.route_config(
                            "routes", [("all", ["*"], xcp.matcher(otherwise=xcp.action("a")))]
                        )
                    ],
                )
                await acked(cp, ROUTE, v)
                asked = [r for r in cp.requests if r.type_url == ROUTE]
                assert list(asked[0].resource_names) == ["routes"]
                assert not any(r.type_url in (LISTENER, CLUSTER) for r in cp.requests)
                c = await client("bolt", port)
                assert status(await c.call(bolt_request(1))) == 200
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/config_dump").read()
                )
                dump = json.loads(body)
                assert [l["name"] for l in dump["listeners"]] == ["static"]
                assert [l["name"] for l in dump["static_resources"]["listeners"]] == ["static"]
                dynamic = dump["dynamic_resources"]
                (routes,) = dynamic["dynamic_route_configs"]
                assert routes["name"] == "routes" and routes["version_info"] == v
                assert routes["resource"]["@type"].endswith("generic_proxy.v3.RouteConfiguration")
                assert dynamic["versions"] == {"RouteConfiguration": v}
                assert dynamic["node"]["id"] == "sidecar-1" and dynamic["connected"]
        finally:
            cp.stop()

    run(scenario())


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda d: d["dynamic_resources"]["ads_config"].update(api_type="DELTA_GRPC"),
         "dynamic_resources.ads_config.api_type: DELTA_GRPC is not supported yet"),
        (lambda d: d["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"].update(cluster_name="cp"),
         "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: unknown cluster 'cp'"),
        (lambda d: d.pop("node"), "dynamic_resources: needs the node's id"),
        (lambda d: d["dynamic_resources"]["lds_config"].update(ads={"x": 1}),
         "dynamic_resources.lds_config.ads: takes no options"),
        (lambda d: d["clusters"].append({"name": "e", "type": "eds", "endpoints": ["127.0.0.1:1"]}),
         "clusters[1]: a cluster of type eds takes its endpoints from EDS"),
        (lambda d: d["node"]["metadata"]["labels"].update(since=datetime.date(2024, 1, 1)),
         "node.metadata: labels.since: date 2024-01-01 is not JSON: quote it"),
        (lambda d: d["node"]["metadata"].update({7: "x"}), "expected a string, got 7 (quote it in YAML)"),
    ],
    ids=["delta", "unknown-cluster", "no-node", "ads-options", "eds-with-endpoints", "metadata-date", "metadata-key"],
)  # fmt: skip
def test_a_bad_bootstrap_is_refused_at_its_yaml_path(change, says):
    data = bootstrap(1)
    change(data)
    with pytest.raises(ConfigError) as e:
        parse_config(data, ".")
    assert says in str(e.value)


def test_without_a_control_plane_eds_and_rds_are_refused():
    data = {
        "listeners": [{"name": "l", "address": "127.0.0.1:1", "protocol": "bolt",
                       "rds": {"route_config_name": "r"}}],
        "route_configs": [],
        "clusters": [{"name": "e", "type": "eds"}],
    }  # fmt: skip
    with pytest.raises(ConfigError) as e:
        parse_config(data, ".")
    assert "listeners[0].rds: rds needs a control plane" in str(e.value)
    assert "clusters[0].type: eds needs a control plane" in str(e.value)
