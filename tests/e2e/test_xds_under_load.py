"""`protoc-x run` configured by a control plane over ADS, under continuous load from real
clients: dubbo-ssl-python calls two Dubbo services (sofa-rpc-node serves both) through a
listener, routes and clusters that exist only as Envoy v3 resources sent by a gRPC control
plane (tests/peers/xds_control_plane.py). While the calls go on, the control plane

(a) shifts a weighted split 100/0 → 0/100 in steps,
(b) adds an endpoint to a cluster, then removes the first,
(c) pushes an invalid route configuration (NACKed with its reason; traffic unchanged),
(d) goes away and comes back,

and every change is in effect within 1 s of being sent. Not one call may fail. Each cluster's
endpoints are recording relays in front of the one server, so where each request went is seen
on the wire."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from tests.peers import xds_control_plane as xcp
from tests.peers.dubbo_peers import SECOND_SERVICE, _ensure_dubbo_ssl_threads, dubbo_server
from tests.peers.framing import dubbo_frame_length
from tests.peers.recording import TO_SERVER, recording_relay
from tests.peers.xds_control_plane import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ControlPlane,
    bootstrap,
)

from . import peer_dubbo_client as dubbo_calls
from .peer_proxy import free_port, proxy_process
from .test_peers_through_proxy import dubbo_client, forget_dubbo_host, relay_frames, wait_for
from .test_reload_under_load import accepting

pytestmark = pytest.mark.timeout(240)

DEMO, INVENTORY = dubbo_calls.SERVICE, SECOND_SERVICE
RELAYS = ("demo-v1", "demo-v2", "demo-blue", "inventory-1", "inventory-2")
EFFECTIVE_S = 1.0  # a change is served within this long of being sent


class Load:
    """Dubbo calls without pause, each kind in its own threads: ``demo`` (DemoService),
    ``blue`` (DemoService with the attachment x-color=blue), ``inventory`` (InventoryService)."""

    def __init__(self, host: str):
        self.host = host
        self.stop = threading.Event()
        self.ok = {"demo": 0, "blue": 0, "inventory": 0}
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def run(self, kind: str, n: int) -> None:
        client = dubbo_client(self.host, INVENTORY if kind == "inventory" else DEMO)
        context = dict(dubbo_calls.CONTEXT, **({"x-color": "blue"} if kind == "blue" else {}))
        i = 0
        while not self.stop.is_set():
            tag = f"{kind}{n}-{i}"
            method = dubbo_calls.call_method(tag)
            try:
                result = client.call(method, dubbo_calls.java_args(tag), context=dict(context),
                                     timeout=10)  # fmt: skip
                failure = None if result == f"ok:{method}:6" else f"answer {result!r}"
            except Exception as e:  # noqa: BLE001 (any failure is counted, and fails the test)
                failure = f"{type(e).__name__}: {e}"
            with self.lock:
                if failure is None:
                    self.ok[kind] += 1
                else:
                    self.failed.append(f"{kind}: {failure}")
            i += 1

    def start(self, threads: dict) -> None:
        for kind, count in threads.items():
            for n in range(count):
                thread = threading.Thread(target=self.run, args=(kind, n), daemon=True)
                thread.start()
                self.threads.append(thread)

    def more(self, kind: str, n: int, timeout: float = 20) -> None:
        """Wait until ``n`` more calls of ``kind`` were answered."""
        before = self.ok[kind]
        wait_for(lambda: self.ok[kind] >= before + n, timeout, f"{n} more {kind} calls")

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a client hangs"


def resources(port: int, ends: dict, weights: tuple[int, int], inventory: list[str]) -> dict:
    """The control plane's snapshot: one dubbo listener (routes by RDS), the route config with
    a virtual host per service (DemoService: x-color=blue → demo-blue, else the split
    demo-v1/demo-v2 by ``weights``; InventoryService → inventory), EDS clusters, and their endpoints
    (``inventory``: the relays of cluster inventory)."""
    demo = xcp.matcher(
        (xcp.predicate(headers={"x-color": "blue"}), xcp.action("demo-blue")),
        otherwise=xcp.action(weighted={"demo-v1": weights[0], "demo-v2": weights[1]}),
    )
    vhosts = [
        ("demo", [DEMO], demo),
        ("inventory", [INVENTORY], xcp.matcher(otherwise=xcp.action("inventory"))),
    ]
    return {
        CLUSTER: [xcp.eds_cluster(n) for n in ("demo-v1", "demo-v2", "demo-blue", "inventory")],
        ENDPOINT: [xcp.assignment(n, [ends[n]]) for n in ("demo-v1", "demo-v2", "demo-blue")]
        + [xcp.assignment("inventory", [ends[r] for r in inventory])],
        LISTENER: [xcp.listener("dubbo", port, "dubbo", rds="dubbo-routes")],
        ROUTE: [xcp.route_config("dubbo-routes", vhosts)],
    }


def serve(cp: ControlPlane, snapshot: dict, only=None) -> dict:
    return {
        t: cp.set(t, snapshot[t]) for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE) if only in (None, t)
    }


def test_control_plane_changes_under_load_lose_no_call(tmp_path):
    _ensure_dubbo_ssl_threads()
    port, admin = free_port(), free_port()
    cp = ControlPlane().start()
    with dubbo_server() as server:
        relays = {}
        stack = [recording_relay(server.address, dubbo_frame_length) for _ in RELAYS]
        try:
            for name, manager in zip(RELAYS, stack):
                relays[name] = manager.__enter__()
            ends = {n: (r.host, r.port) for n, r in relays.items()}
            config = bootstrap(cp.port, admin, node="dubbo-sidecar", retry_ms=(100, 500))
            snapshot = resources(port, ends, (100, 0), ["inventory-1"])
            versions = serve(cp, snapshot)
            with proxy_process(config, tmp_path) as proxy:
                for t, v in versions.items():
                    cp.wait_ack(t, v)
                wait_for(lambda: accepting(port), 10, "the listener the control plane sent")
                host = f"127.0.0.1:{port}"
                load = Load(host)
                load.start({"demo": 3, "blue": 1, "inventory": 2})
                try:
                    dump = _scenario(cp, load, relays, port, ends, snapshot, admin)
                finally:
                    load.finish()
                    cp.stop()
                assert load.failed == [], load.failed[:5]
                assert "xDS: RouteConfiguration update refused" in proxy.log()
                dynamic = dump["dynamic_resources"]
                assert dynamic["connected"] and dynamic["nacks"] == 1
                assert "regex" in dynamic["last_nack"]["error_detail"]
                assert {r["name"] for r in dynamic["dynamic_clusters"]} == {
                    "demo-v1",
                    "demo-v2",
                    "demo-blue",
                    "inventory",
                }
                forget_dubbo_host(host)
                print(f"calls answered: {load.ok}")
        finally:
            for manager in stack[: len(relays)]:
                manager.__exit__(None, None, None)


def _counts(relays: dict) -> dict:
    return {n: len(relay_frames(r, TO_SERVER)) for n, r in relays.items()}


def _after(cp, type_url: str, version: str, sent: float) -> None:
    """The change ACKed, then wait until EFFECTIVE_S after it was sent; what the relays saw
    until then is set aside."""
    cp.wait_ack(type_url, version, timeout=EFFECTIVE_S)
    time.sleep(max(0.0, sent + EFFECTIVE_S - time.monotonic()))


def _window(relays: dict, load: Load, kind: str, n: int) -> dict:
    """What each relay receives while ``n`` more calls of ``kind`` are answered (the counts
    start from zero: frames before are taken first)."""
    _counts(relays)
    load.more(kind, n)
    return _counts(relays)


def _scenario(
    cp, load: Load, relays: dict, port: int, ends: dict, snapshot: dict, admin: int
) -> dict:
    """(a) to (d); the admin's /config_dump at the end."""
    load.more("demo", 30)
    load.more("inventory", 20)
    seen = _window(relays, load, "demo", 30)
    assert seen["demo-v1"] > 0 and seen["demo-v2"] == 0, seen
    seen = _window(relays, load, "blue", 10)
    assert seen["demo-blue"] >= 10, seen

    # (a) the split shifts in steps: each in effect within 1 s
    for w in (75, 50, 25, 0):
        snapshot = resources(port, ends, (w, 100 - w), ["inventory-1"])
        sent = time.monotonic()
        version = cp.set(ROUTE, snapshot[ROUTE])
        _after(cp, ROUTE, version, sent)
        seen = _window(relays, load, "demo", 60)
        assert (seen["demo-v1"] > 0) == (w > 0), (w, seen)
        assert seen["demo-v2"] > 0, (w, seen)

    # (b) an endpoint added to inventory, then the first removed
    snapshot = resources(port, ends, (0, 100), ["inventory-1", "inventory-2"])
    sent = time.monotonic()
    _after(cp, ENDPOINT, cp.set(ENDPOINT, snapshot[ENDPOINT]), sent)
    seen = _window(relays, load, "inventory", 20)
    assert seen["inventory-1"] > 0 and seen["inventory-2"] > 0, seen
    snapshot = resources(port, ends, (0, 100), ["inventory-2"])
    sent = time.monotonic()
    _after(cp, ENDPOINT, cp.set(ENDPOINT, snapshot[ENDPOINT]), sent)
    seen = _window(relays, load, "inventory", 20)
    assert seen["inventory-1"] == 0 and seen["inventory-2"] > 0, seen

    # (c) an invalid route configuration: NACKed with its reason, nothing changes
    good = cp.snapshot[ROUTE][0]
    bad = xcp.route_config("dubbo-routes", [("demo", [DEMO], xcp.matcher(
        (xcp.predicate(regex={"x-color": "(blue"}), xcp.action("demo-blue")),
        otherwise=xcp.action("demo-v1")))])  # fmt: skip
    after = len(cp.requests)
    cp.set(ROUTE, [bad])
    nack = cp.wait_nack(ROUTE, timeout=EFFECTIVE_S, after=after)
    assert "RouteConfiguration 'dubbo-routes'" in nack.error_detail.message
    assert "regex" in nack.error_detail.message
    assert nack.version_info == good
    seen = _window(relays, load, "demo", 40)
    assert seen["demo-v1"] == 0 and seen["demo-v2"] > 0, seen
    seen = _window(relays, load, "blue", 5)
    assert seen["demo-blue"] >= 5, seen

    # (d) the control plane goes away: calls go on; it comes back with the good snapshot
    cp.stop()
    load.more("demo", 40)
    load.more("inventory", 20)
    cp_port = cp.port
    cp2 = ControlPlane(cp_port)
    versions = serve(cp2, snapshot)
    cp2.start()
    try:
        for t, v in versions.items():
            cp2.wait_ack(t, v, timeout=10)
        # and a change through the new stream is in effect within 1 s too
        snapshot = resources(port, ends, (100, 0), ["inventory-2"])
        sent = time.monotonic()
        _after(cp2, ROUTE, cp2.set(ROUTE, snapshot[ROUTE]), sent)
        seen = _window(relays, load, "demo", 40)
        assert seen["demo-v1"] > 0 and seen["demo-v2"] == 0, seen
        assert accepting(port)
        url = f"http://127.0.0.1:{admin}/config_dump"
        return json.loads(urllib.request.urlopen(url, timeout=5).read())
    finally:
        cp2.stop()
