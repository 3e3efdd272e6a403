"""kazoo (PyPI) → the proxy → two real ZooKeeper servers (Debian's zookeeper), with the
test spec tests/codec/zookeeper.xproto: the ConnectRequest is a connection's first frame, with
its own layout, and it alone is routed (the route matches method "connect"); every later packet
of the session follows it to the same server on the client's own upstream connection."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from tests.codec.test_first_frames import connect_only_config, load_zk
from tests.peers.zookeeper_peer import zookeeper_server
from tests.runtime.harness import free_port, proxy_running, run

kazoo_client = pytest.importorskip("kazoo.client")
from kazoo.exceptions import NoNodeError  # noqa: E402


@pytest.fixture(scope="module")
def servers():
    with zookeeper_server() as a, zookeeper_server() as b:
        yield [f"{a[0]}:{a[1]}", f"{b[0]}:{b[1]}"]


@contextlib.contextmanager
def kazoo(hosts: str, timeout: float = 10):
    zk = kazoo_client.KazooClient(hosts=hosts, timeout=timeout)
    zk.start(timeout=10)
    try:
        yield zk
    finally:
        zk.stop()
        zk.close()


def session(port: int, i: int) -> dict:
    """One kazoo client's session through the proxy: nodes of its own, a watch that fires,
    an error passed through; what it saw, for the checks on each server."""
    seen: dict = {}
    fired = threading.Event()
    with kazoo(f"127.0.0.1:{port}", timeout=4) as zk:
        seen["session"] = zk.client_id[0]
        zk.ensure_path("/clients")
        zk.create(f"/clients/e{i}", b"ephemeral %d" % i, ephemeral=True)
        zk.create(f"/p{i}", b"v1")
        zk.get(f"/p{i}", watch=lambda event: (seen.setdefault("event", event), fired.set()))
        zk.set(f"/p{i}", b"v2")  # the server sends the watch event unasked (xid -1)
        seen["fired"] = fired.wait(10)
        seen["data"] = zk.get(f"/p{i}")[0]
        seen["owner"] = zk.exists(f"/clients/e{i}").ephemeralOwner
        with pytest.raises(NoNodeError):  # an error reply (err -101) passed through
            zk.get(f"/missing{i}")
        # idle past its 4 s session timeout: only kazoo's pings (xid -2) keep the session;
        # they go to the server (a session's liveness is end to end) and are answered there
        threading.Event().wait(6)
        seen["alive"] = (zk.state, zk.exists(f"/clients/e{i}") is not None)
    return seen


def where(servers: list[str], path: str) -> list[int]:
    found = []
    for index, hosts in enumerate(servers):
        with kazoo(hosts) as zk:
            if zk.exists(path) is not None:
                found.append(index)
    return found


def test_kazoo_sessions_stay_on_the_server_their_handshake_was_routed_to(servers):
    clients = 6
    port = free_port()
    config = connect_only_config(port, servers)
    results: list = []
    placed: dict = {}

    async def scenario():
        async with proxy_running(config, protocols={"zookeeper": load_zk()}):
            results.extend(
                await asyncio.gather(*(asyncio.to_thread(session, port, i) for i in range(clients)))
            )
            # (the sessions are closed: kazoo's closeSession went through the proxy)
            for i in range(clients):
                placed[i] = await asyncio.to_thread(where, servers, f"/p{i}")

    run(scenario())
    on_server: dict[int, list[int]] = {}
    for i, seen in enumerate(results):
        assert seen["data"] == b"v2" and seen["fired"], seen
        assert (seen["event"].type, seen["event"].path) == ("CHANGED", f"/p{i}")
        assert seen["owner"] == seen["session"]  # its ephemeral node is its own session's
        assert seen["alive"] == ("CONNECTED", True)  # pinged through, it outlived its timeout
        assert len(placed[i]) == 1, placed  # every node of the session on one server
        on_server.setdefault(placed[i][0], []).append(i)
    assert sorted(len(v) for v in on_server.values()) == [3, 3]  # round robin by session
    for index, hosts in enumerate(servers):
        with kazoo(hosts) as zk:  # closed sessions: their ephemeral nodes went with them
            assert zk.get_children("/clients") == []
            for i in on_server[index]:
                zk.delete(f"/p{i}")
