"""Proxy.reload: a new config served in place of the running one, on real sockets, with every
request in flight answered: what stays keeps its sockets, connections and state; what changed
or went finishes its requests, then closes."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from protoc_x.runtime.config import parse_config

from .harness import PROTOCOLS, client, config, eventually, free_port, proxy_running, recorder, run
from .harness import no_errors_logged  # noqa: F401 (autouse: a test fails on any logged error)
from .test_pool import status
from .test_proxy_behaviour import bolt_request


def listener(name: str, port: int, route_config: str = "r", **extra) -> dict:
    return {"name": name, "address": f"127.0.0.1:{port}", "protocol": "bolt",
            "route_config": route_config, **extra}  # fmt: skip


def routes(name: str, cluster: str, **by_service: str) -> dict:
    """Route config ``name``: each service of ``by_service`` to its cluster, the rest to
    ``cluster``."""
    hosts = [
        {"name": f"s{i}", "domains": [service], "routes": [{"match": {}, "route": {"cluster": c}}]}
        for i, (service, c) in enumerate(by_service.items())
    ]
    hosts.append(
        {"name": "all", "domains": ["*"], "routes": [{"match": {}, "route": {"cluster": cluster}}]}
    )
    return {"name": name, "virtual_hosts": hosts}


def cluster(name: str, *ports: int, **extra) -> dict:
    return {"name": name, "endpoints": [f"127.0.0.1:{p}" for p in ports], **extra}


def parsed(data: dict):
    return parse_config(data, ".")


class Upstreams(contextlib.AsyncExitStack):
    """Recording bolt upstreams, one per name; ``ups[name]`` is its server once entered."""

    def __init__(self, names, **kw):
        super().__init__()
        self.ports = {n: free_port() for n in names}
        self.seen = {n: [] for n in names}
        self.kw = kw
        self.servers: dict = {}

    async def __aenter__(self):
        await super().__aenter__()
        for n, port in self.ports.items():
            self.servers[n] = await self.enter_async_context(
                recorder("bolt", port, self.seen[n], **self.kw)
            )
        return self

    def __getitem__(self, name: str):
        return self.servers[name]


async def upstreams(*names: str, **kw):
    """(ports, what each upstream saw, the upstreams to enter) for recording bolt upstreams."""
    ups = Upstreams(names, **kw)
    return ups.ports, ups.seen, ups


def test_routes_swapped_on_a_listener_that_stays_keep_its_connections_and_socket():
    async def scenario():
        ports, seen, managers = await upstreams("a", "b", delay=0.1)
        port = free_port()
        first = config([listener("l", port)], [routes("r", "a")],
                       [cluster("a", ports["a"]), cluster("b", ports["b"])])  # fmt: skip
        second = config([listener("l", port)], [routes("r", "b")],
                        [cluster("a", ports["a"]), cluster("b", ports["b"])])  # fmt: skip
        async with managers, proxy_running(first) as proxy:
            (before,) = proxy.listeners
            sockets = [s.sockets for s in before.servers]
            c = await client("bolt", port)
            assert status(await c.call(bolt_request(1))) == 200
            slow = c.send(bolt_request(2))  # in flight across the reload
            await eventually(lambda: len(seen["a"]) == 2)
            await proxy.reload(parsed(second), PROTOCOLS)
            assert proxy.listeners == [before], "the listener stays"
            assert [s.sockets for s in before.servers] == sockets
            assert status(await slow) == 200
            assert status(await c.call(bolt_request(3))) == 200  # the same connection
            assert (len(seen["a"]), len(seen["b"])) == (2, 1), "routed by the new table"
            assert not c.conn.closed

    run(scenario())


def test_a_cluster_that_stays_keeps_its_connection_a_changed_one_finishes_then_closes():
    async def scenario():
        ports, seen, managers = await upstreams("a", "b", delay=0.2)
        port = free_port()
        base = [cluster("a", ports["a"]), cluster("b", ports["b"])]
        first = config([listener("l", port)], [routes("r", "a", **{"svc.B": "b"})], base)
        changed = [cluster("a", ports["a"]), cluster("b", ports["b"], request_timeout_ms=9000)]
        second = config([listener("l", port)], [routes("r", "a", **{"svc.B": "b"})], changed)
        async with managers, proxy_running(first) as proxy:
            c = await client("bolt", port)
            in_a = c.send(bolt_request(1))
            in_b = c.send(bolt_request(2, service="svc.B"))
            await eventually(lambda: len(seen["a"]) == 1 and len(seen["b"]) == 1)
            a, b = proxy.clusters["a"], proxy.clusters["b"]
            await proxy.reload(parsed(second), PROTOCOLS)
            assert proxy.clusters["a"] is a, "same config: the same cluster"
            assert proxy.clusters["b"] is not b, "a changed cluster is new"
            # both answers of the requests in flight arrive, on the old connections
            assert [status(await in_a), status(await in_b)] == [200, 200]
            assert status(await c.call(bolt_request(3, service="svc.B"))) == 200
            assert status(await c.call(bolt_request(4))) == 200
            servers = managers
            conns_a = [x for x in servers["a"].conns if not x.closed]
            assert len(servers["a"].conns) == 1 and len(conns_a) == 1, "a kept its connection"
            # b's old connection closed once answered; the new cluster opened its own
            assert len(servers["b"].conns) == 2
            assert await eventually(lambda: servers["b"].conns[0].closed)
            assert not servers["b"].conns[1].closed

    run(scenario())


def test_endpoints_changed_alone_keep_the_pools_of_those_that_stay():
    async def scenario():
        ports, seen, managers = await upstreams("x", "y")
        port = free_port()
        first = config([listener("l", port)], [routes("r", "c")], [cluster("c", ports["x"])])
        second = config([listener("l", port)], [routes("r", "c")],
                        [cluster("c", ports["x"], ports["y"])])  # fmt: skip
        third = config([listener("l", port)], [routes("r", "c")], [cluster("c", ports["y"])])
        async with managers, proxy_running(first) as proxy:
            c = await client("bolt", port)
            assert status(await c.call(bolt_request(1))) == 200
            kept = proxy.clusters["c"]
            await proxy.reload(parsed(second), PROTOCOLS)
            assert proxy.clusters["c"] is kept
            for i in range(4):
                assert status(await c.call(bolt_request(10 + i))) == 200
            assert (len(seen["x"]), len(seen["y"])) == (3, 2), "round robin over both"
            assert len(managers["x"].conns) == 1, "x's connection was kept"
            await proxy.reload(parsed(third), PROTOCOLS)
            assert proxy.clusters["c"] is kept
            for i in range(3):
                assert status(await c.call(bolt_request(20 + i))) == 200
            assert (len(seen["x"]), len(seen["y"])) == (3, 5)
            assert await eventually(lambda: managers["x"].conns[0].closed), "x's pool retired"

    run(scenario())


def test_listeners_added_removed_and_changed_in_place():
    async def scenario():
        ports, seen, managers = await upstreams("a", delay=0.2)
        kept_port, gone_port, changed_port, new_port = (free_port() for _ in range(4))
        clusters = [cluster("a", ports["a"])]
        first = config(
            [listener("kept", kept_port), listener("gone", gone_port),
             listener("changed", changed_port)],
            [routes("r", "a")], clusters,
        )  # fmt: skip
        second = config(
            [listener("kept", kept_port), listener("changed", changed_port, idle_timeout_ms=9000),
             listener("new", new_port)],
            [routes("r", "a")], clusters,
        )  # fmt: skip
        async with managers, proxy_running(first) as proxy:
            kept, gone, changed = proxy.listeners
            changed_sockets = [sock.getsockname() for s in changed.servers for sock in s.sockets]
            on_kept, on_gone, on_changed = [
                await client("bolt", p) for p in (kept_port, gone_port, changed_port)
            ]
            flying = [c.send(bolt_request(1)) for c in (on_kept, on_gone, on_changed)]
            await eventually(lambda: len(seen["a"]) == 3)
            await proxy.reload(parsed(second), PROTOCOLS)
            now = proxy.listeners
            assert now[0] is kept and now[1] is not changed and now[2].name == "new"
            assert [sock.getsockname() for s in now[1].servers for sock in s.sockets] == (
                changed_sockets
            ), "the changed listener took over its predecessor's sockets"
            # every request in flight is answered
            assert [status(await f) for f in flying] == [200, 200, 200]
            # the removed listener's socket is closed; its and the changed listener's old
            # connections close once answered; the kept listener's connection stays
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", gone_port)
            assert await eventually(lambda: on_gone.conn.closed and on_changed.conn.closed)
            assert status(await on_kept.call(bolt_request(2))) == 200
            assert not on_kept.conn.closed
            # the changed listener's address and the new one serve new connections
            for p in (changed_port, new_port):
                fresh = await client("bolt", p)
                assert status(await fresh.call(bolt_request(3))) == 200
            assert now[1].sweeper.idle_s == 9, "the new listener's settings"
            assert not changed.conns and not gone.conns

    run(scenario())


def test_a_reload_that_cannot_listen_changes_nothing():
    async def scenario():
        ports, seen, managers = await upstreams("a", "b")
        port, taken = free_port(), free_port()
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        first = config([listener("l", port)], [routes("r", "a")],
                       [cluster("a", ports["a"]), cluster("b", ports["b"])])  # fmt: skip
        second = config([listener("l", port), listener("m", taken)], [routes("r", "b")],
                        [cluster("a", ports["a"]), cluster("b", ports["b"])])  # fmt: skip
        try:
            async with managers, proxy_running(first) as proxy:
                before = (list(proxy.listeners), dict(proxy.clusters), proxy.config)
                with pytest.raises(OSError, match=r"listeners\[1\]\.address"):
                    await proxy.reload(parsed(second), PROTOCOLS)
                assert (proxy.listeners, proxy.clusters, proxy.config) == before
                c = await client("bolt", port)
                assert status(await c.call(bolt_request(1))) == 200
                assert (len(seen["a"]), len(seen["b"])) == (1, 0), "the old routes"
        finally:
            blocker.close()

    run(scenario())


def test_a_request_that_times_out_on_a_retired_connection_closes_it():
    async def scenario():
        ports, seen, managers = await upstreams("a", answer=False)
        port = free_port()
        first = config([listener("l", port)], [routes("r", "a")],
                       [cluster("a", ports["a"], request_timeout_ms=300)])  # fmt: skip
        second = config([listener("l", port)], [routes("r", "a")],
                        [cluster("a", ports["a"], request_timeout_ms=400)])  # fmt: skip
        async with managers, proxy_running(first) as proxy:
            c = await client("bolt", port)
            lost = c.send(bolt_request(1))
            await eventually(lambda: len(seen["a"]) == 1)
            await proxy.reload(parsed(second), PROTOCOLS)
            assert status(await lost) == 504
            (old,) = managers["a"].conns
            assert await eventually(lambda: old.closed, 2), "closed once nothing is owed"

    run(scenario())


async def http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data


def test_the_admin_endpoint_moves_and_a_taken_admin_address_refuses_the_reload():
    async def scenario():
        ports, seen, managers = await upstreams("a")
        port, first_admin, second_admin, taken = (free_port() for _ in range(4))
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        base = config([listener("l", port)], [routes("r", "a")], [cluster("a", ports["a"])])
        first = dict(base, admin={"address": f"127.0.0.1:{first_admin}"})
        second = dict(base, admin={"address": f"127.0.0.1:{second_admin}"})
        bad = dict(base, admin={"address": f"127.0.0.1:{taken}"})
        try:
            async with managers, proxy_running(first) as proxy:
                assert b"ready" in await http_get(first_admin, "/ready")
                await proxy.reload(parsed(second), PROTOCOLS)
                assert b"ready" in await http_get(second_admin, "/ready")
                with pytest.raises(OSError):
                    await http_get(first_admin, "/ready")
                with pytest.raises(OSError):
                    await proxy.reload(parsed(bad), PROTOCOLS)
                assert b"ready" in await http_get(second_admin, "/ready")
                assert str(proxy.config.admin.address) == f"127.0.0.1:{second_admin}"
        finally:
            blocker.close()

    run(scenario())


def test_a_spec_loaded_again_unchanged_is_the_same_protocol(tmp_path):
    """A reload compiles the config's specs again: an unchanged one must give the same
    protocol, or every listener speaking it would count as changed (and be drained)."""
    import shutil
    from pathlib import Path

    import yaml

    from protoc_x.start import prepare

    spec = tmp_path / "zookeeper.xproto"
    shutil.copy(Path(__file__).parents[1] / "codec" / "zookeeper.xproto", spec)
    data = config([dict(listener("l", free_port()), protocol="zookeeper")], [routes("r", "a")],
                  [cluster("a", free_port())], protocols=["zookeeper.xproto"])  # fmt: skip
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(data))
    _, first = prepare(path)
    _, again = prepare(path)
    assert again["zookeeper"] is first["zookeeper"]
    spec.write_text(spec.read_text() + "\n# changed\n")
    _, changed = prepare(path)
    assert changed["zookeeper"] is not first["zookeeper"]
