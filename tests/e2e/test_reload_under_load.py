"""Hot reload of `protoc-x run` under load from real clients: anthunder (bolt) and
dubbo-ssl-python (dubbo) call without pause through the proxy to anthunder's server and
sofa-rpc-node, while the config file is rewritten and SIGHUP sent 20 times — routes switched
between clusters, clusters changed (new connections, the old ones finishing their requests), a
listener added and removed — and once with an invalid config, which is refused whole while the
running one keeps serving. Not one call may fail. `--watch` reloads on a write of the file."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.peers import anthunder_peer
from tests.peers.dubbo_peers import _ensure_dubbo_ssl_threads, dubbo_server
from tests.peers.framing import bolt_frame_length, dubbo_frame_length
from tests.peers.recording import TO_SERVER, recording_relay

from . import peer_dubbo_client as dubbo_calls
from .peer_proxy import free_port, protoc_x_command, proxy_process
from tests.peers.anthunder_peer import ECHO_PREFIX, HELLO_SERVICE, anthunder_server

from .test_peers_through_proxy import (
    bolt_request, dubbo_client, forget_dubbo_host, protobuf_message, relay_frames, wait_for,
)  # fmt: skip

pytestmark = pytest.mark.timeout(180)

RELOADS = 20
BOLT_THREADS = 3
DUBBO_THREADS = 3


def variant(step: int, ports: dict, ends: dict) -> dict:
    """The config of reload ``step`` (0: the one started with). Odd steps send bolt and dubbo to
    the 'b' clusters, even ones to 'a' (bolt by a weighted split 100/0, then 0/100); every third
    step changes the 'b' clusters' timeout (a new cluster each time); the 'extra' listener is
    there on even steps."""
    to_b = step % 2 == 1
    timeout = 4000 + 1000 * (step // 3 % 2)
    listeners = [
        {"name": "bolt", "address": f"127.0.0.1:{ports['bolt']}", "protocol": "bolt",
         "route_config": "bolt"},
        {"name": "dubbo", "address": f"127.0.0.1:{ports['dubbo']}", "protocol": "dubbo",
         "route_config": "dubbo"},
    ]  # fmt: skip
    if step % 2 == 0:
        listeners.append({"name": "extra", "address": f"127.0.0.1:{ports['extra']}",
                          "protocol": "bolt", "route_config": "bolt"})  # fmt: skip
    split = [{"name": "bolt-a", "weight": 1 if to_b else 100},
             {"name": "bolt-b", "weight": 100 if to_b else 1}]  # fmt: skip
    # (a weight of 1 is a 1% chance: the test counts what arrives where, after the last reload)
    if step == RELOADS:
        split = [{"name": "bolt-b" if to_b else "bolt-a", "weight": 1}]
    return {
        "drain_timeout_ms": 3000,
        "listeners": listeners,
        "route_configs": [
            {"name": "bolt", "virtual_hosts": [{"name": "hello", "domains": [HELLO_SERVICE],
             "routes": [{"match": {}, "route": {"weighted_clusters": split}}]}]},
            {"name": "dubbo", "virtual_hosts": [{"name": "demo", "domains": [dubbo_calls.SERVICE],
             "routes": [{"match": {}, "route": {"cluster": "dubbo-b" if to_b else "dubbo-a"}}]}]},
        ],
        "clusters": [
            {"name": "bolt-a", "endpoints": [ends["bolt-a"]]},
            {"name": "bolt-b", "endpoints": [ends["bolt-b"]], "request_timeout_ms": timeout},
            {"name": "dubbo-a", "endpoints": [ends["dubbo-a"]]},
            {"name": "dubbo-b", "endpoints": [ends["dubbo-b"]], "request_timeout_ms": timeout},
        ],
    }  # fmt: skip


class Load:
    """Clients calling without pause in threads until stopped; every outcome counted."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.ok = {"bolt": 0, "dubbo": 0}
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def count(self, kind: str, failure: str | None) -> None:
        with self.lock:
            if failure is None:
                self.ok[kind] += 1
            else:
                self.failed.append(f"{kind}: {failure}")

    def bolt(self, address: tuple[str, int], n: int) -> None:
        client = anthunder_peer._Client()
        try:
            i = 0
            while not self.stop.is_set():
                content = protobuf_message(f"t{n}-{i}", i)
                pkg = bolt_request(HELLO_SERVICE, content, timeout_ms=4000)
                try:
                    answer = client.run(client.client.invoke(pkg, address=address), timeout=10)
                    good = answer is not None and answer.respstatus == 0
                    good = good and answer.content == ECHO_PREFIX + content
                    self.count("bolt", None if good else f"answer {answer!r}")
                except Exception as e:  # noqa: BLE001 (any failure is counted, and fails the test)
                    self.count("bolt", f"{type(e).__name__}: {e}")
                i += 1
        finally:
            client.close()

    def dubbo(self, host: str, n: int) -> None:
        client = dubbo_client(host)
        i = 0
        while not self.stop.is_set():
            outcome = dubbo_calls.call(client, f"t{n}-{i}", timeout=10)
            good = outcome.get("result") == f"ok:{outcome['method']}:6"
            self.count("dubbo", None if good else str(outcome))
            i += 1

    def start(self, work, *args) -> None:
        thread = threading.Thread(target=work, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def total(self) -> int:
        with self.lock:
            return sum(self.ok.values())

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a client hangs"


def accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def write(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@contextlib.contextmanager
def servers() -> Iterator[tuple[dict, dict]]:
    """The bolt and dubbo servers, each behind two relays (clusters 'a' and 'b')."""
    with (
        anthunder_server() as bolt,
        dubbo_server() as dubbo,
        recording_relay(bolt, bolt_frame_length) as bolt_a,
        recording_relay(bolt, bolt_frame_length) as bolt_b,
        recording_relay(dubbo.address, dubbo_frame_length) as dubbo_a,
        recording_relay(dubbo.address, dubbo_frame_length) as dubbo_b,
    ):
        relays = {"bolt-a": bolt_a, "bolt-b": bolt_b, "dubbo-a": dubbo_a, "dubbo-b": dubbo_b}
        yield relays, {name: f"{r.host}:{r.port}" for name, r in relays.items()}


def test_twenty_sighup_reloads_under_load_lose_no_request(tmp_path):
    anthunder_peer._anthunder()
    _ensure_dubbo_ssl_threads()
    ports = {"bolt": free_port(), "dubbo": free_port(), "extra": free_port()}
    with servers() as (relays, ends):
        config = variant(0, ports, ends)
        with proxy_process(config, tmp_path) as proxy:
            path = tmp_path / "proxy.yaml"
            host = f"127.0.0.1:{ports['dubbo']}"
            load = Load()
            for n in range(BOLT_THREADS):
                load.start(load.bolt, ("127.0.0.1", ports["bolt"]), n)
            for n in range(DUBBO_THREADS):
                load.start(load.dubbo, host, n)
            try:
                wait_for(lambda: load.ok["bolt"] > 20 and load.ok["dubbo"] > 20, 30, "load")
                for step in range(1, RELOADS + 1):
                    if step == RELOADS // 2:  # an invalid config: refused whole
                        broken = variant(step, ports, ends)
                        broken["route_configs"][1]["virtual_hosts"][0]["routes"][0]["route"] = {
                            "cluster": "nowhere"
                        }
                        write(path, broken)
                        proxy.process.send_signal(signal.SIGHUP)
                        wait_for(lambda: "reload refused" in proxy.log(), 10, "the refusal")
                        assert "nowhere" in proxy.log()
                        before = load.total()
                        wait_for(lambda: load.total() > before + 20, 10, "calls go on")
                    write(path, variant(step, ports, ends))
                    proxy.process.send_signal(signal.SIGHUP)
                    wait_for(lambda: proxy.log().count("reloaded:") == step, 10, f"reload {step}")
                    assert accepting(ports["extra"]) == (step % 2 == 0), step
                    before = load.total()
                    wait_for(lambda: load.total() > before + 10, 10, "calls after the reload")
                # the last config (step 20: even) sends everything to the 'a' clusters
                time.sleep(0.3)
                for relay in relays.values():
                    relay_frames(relay, TO_SERVER)  # (taken: what came before is not counted)
                before = dict(load.ok)
                wait_for(lambda: all(load.ok[k] > before[k] + 20 for k in before), 20, "calls")
                counts = {n: len(relay_frames(r, TO_SERVER)) for n, r in relays.items()}
            finally:
                load.finish()
            assert load.failed == [], load.failed[:5]
            assert counts["bolt-a"] > 0 and counts["dubbo-a"] > 0, counts
            assert counts["bolt-b"] == 0, counts
            assert counts["dubbo-b"] == 0, counts
            assert proxy.log().count("reloaded:") == RELOADS
            assert proxy.log().count("reload refused") == 1
        forget_dubbo_host(host)
        print(f"calls answered: {load.ok}")


def test_watch_reloads_when_the_config_file_changes(tmp_path):
    import subprocess

    up, port, extra = free_port(), free_port(), free_port()
    config = {
        "listeners": [{"name": "l", "address": f"127.0.0.1:{port}", "protocol": "bolt",
                       "route_config": "r"}],
        "route_configs": [{"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"],
                           "routes": [{"match": {}, "route": {"cluster": "up"}}]}]}],
        "clusters": [{"name": "up", "endpoints": [f"127.0.0.1:{up}"]}],
    }  # fmt: skip
    path = tmp_path / "watched.yaml"
    write(path, config)
    log = tmp_path / "watched.stderr"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(protoc_x_command() + ["run", "--watch", str(path)],
                                   stdin=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    try:
        wait_for(lambda: accepting(port), 15, "the proxy")
        config["listeners"].append({"name": "m", "address": f"127.0.0.1:{extra}",
                                    "protocol": "bolt", "route_config": "r"})  # fmt: skip
        write(path, config)
        wait_for(lambda: accepting(extra), 10, "the added listener")
        # an editor's save: a new file renamed onto the old one
        del config["listeners"][1]
        write(tmp_path / "watched.yaml.tmp", config)
        (tmp_path / "watched.yaml.tmp").rename(path)
        wait_for(lambda: not accepting(extra), 10, "the listener removed")
        write(path, {"listeners": "broken"})
        wait_for(lambda: "reload refused" in log.read_text(), 10, "the refusal")
        assert accepting(port)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log.read_text()
