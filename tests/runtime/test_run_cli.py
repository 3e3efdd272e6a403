"""`protoc-x run CONFIG` as a process: graceful drain on SIGTERM, and invalid configs refused
with exit code 2, a message that says where (YAML path or file:line:col), and no port left open.
"""

from __future__ import annotations

import copy
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import yaml

from protoc_x.generated.bolt import PROTOCOL as BOLT
from protoc_x.samples import SAMPLES
from protoc_x.runtime.api import Direction, StreamType
from tests.runtime.harness import free_port, simple_config

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).parents[2]
PROTOC_X = Path(sys.executable).with_name("protoc-x")
LOOPBACK = "127.0.0.1"


# --- helpers ----------------------------------------------------------------------------------


def accepting(port: int) -> bool:
    """Does anything accept TCP connections on 127.0.0.1:port?"""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def can_bind(port: int) -> bool:
    """Can we listen on 127.0.0.1:port ourselves (nobody else listens there)?"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
            s.listen()
        except OSError:
            return False
    return True


def bolt_request(request_id: int, body: bytes):
    """A bolt request (the shipped sample with 4 headers) with this id and content."""
    for sample in SAMPLES:
        if sample.protocol != "bolt" or sample.direction == "response":
            continue
        frame = BOLT.decode(sample.data, 0, Direction.REQUEST)
        if frame.get_stream_type() is StreamType.REQUEST and not frame.is_heartbeat():
            frame.set_request_id(request_id)
            frame.set_body(body)
            return frame
    raise LookupError("no bolt request sample")


def read_frames(sock: socket.socket, count: int, timeout: float) -> list:
    """``count`` bolt responses from ``sock``, in arrival order."""
    sock.settimeout(timeout)
    buf = b""
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        frame = BOLT.decode(buf, 0, Direction.RESPONSE)
        if frame is not None:
            frames.append(frame)
            buf = buf[frame.length :]
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"got {len(frames)} of {count} answers")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(frames)} of {count} answers")
        buf += chunk
    assert buf == b"", f"unexpected extra bytes {buf.hex()}"
    return frames


class SlowBoltUpstream:
    """A bolt upstream that answers each request with the spec's success response (the
    request's content) only after ``delay`` seconds; heartbeats at once."""

    def __init__(self, delay: float):
        self.delay = delay
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[int] = []
        self.cond = threading.Condition()
        self.conns: list[socket.socket] = []
        self.timers: list[threading.Timer] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        lock = threading.Lock()

        def send(data: bytes) -> None:
            with lock:
                try:
                    conn.sendall(data)
                except OSError:
                    pass

        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                frame = BOLT.decode(buf, 0, Direction.REQUEST)
                if frame is None:
                    break
                buf = buf[frame.length :]
                if frame.is_heartbeat():
                    send(BOLT.reply(frame).encode())
                    continue
                with self.cond:
                    self.received.append(frame.get_request_id())
                    self.cond.notify_all()
                if frame.get_stream_type() is StreamType.ONEWAY:
                    continue
                timer = threading.Timer(
                    self.delay, send, args=(BOLT.success_response(frame).encode(),)
                )
                timer.daemon = True
                self.timers.append(timer)
                timer.start()

    def wait_received(self, count: int, timeout: float = 5.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"upstream got {len(self.received)} of {count} requests")

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.listener.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass


def start_proxy(config: dict, directory: Path, timeout: float = 15.0):
    """`protoc-x run` on ``config``, waiting until its listener accepts; (process, log path)."""
    path = directory / "proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = directory / "proxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(PROTOC_X), "run", str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=directory
        )
    port = int(config["listeners"][0]["address"].rpartition(":")[2])
    deadline = time.monotonic() + timeout
    while not accepting(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(5)
            raise AssertionError(f"proxy did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    return process, log_path


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(5)


# --- graceful drain ---------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests(tmp_path):
    upstream = SlowBoltUpstream(delay=1.0)
    listen = free_port()
    config = simple_config("bolt", listen, [f"{LOOPBACK}:{upstream.port}"])
    config["drain_timeout_ms"] = 3000
    process, log_path = start_proxy(config, tmp_path)
    socks: list[socket.socket] = []
    try:
        # 3 connections with 2 requests each, all sent before SIGTERM
        sent: dict[int, list[tuple[int, bytes]]] = {}
        for c in range(3):
            sock = socket.create_connection((LOOPBACK, listen), timeout=5)
            socks.append(sock)
            sent[c] = []
            for k in range(2):
                rid, body = 100 + 10 * c + k, b"in flight %d/%d " % (c, k) + bytes(range(50))
                sock.sendall(bolt_request(rid, body).encode())
                sent[c].append((rid, body))
        upstream.wait_received(6)  # every request is at the upstream, its answer ~1 s away

        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # new connections are refused soon after SIGTERM, long before the answers are due
        refused_after = None
        while time.monotonic() - signalled < 0.6:
            try:
                with socket.create_connection((LOOPBACK, listen), timeout=0.2):
                    pass
            except ConnectionRefusedError:
                refused_after = time.monotonic() - signalled
                break
            time.sleep(0.02)
        assert refused_after is not None, "the listener still accepts 0.6 s after SIGTERM"
        assert process.poll() is None, "the proxy exited before its in-flight requests ended"

        # every in-flight request gets its own answer
        for c, sock in enumerate(socks):
            answers = read_frames(sock, 2, timeout=5)
            assert sorted(a.get_request_id() for a in answers) == sorted(r for r, _ in sent[c])
            bodies = {a.get_request_id(): bytes(a.get_body()) for a in answers}
            for rid, body in sent[c]:
                assert bodies[rid] == body
            for a in answers:
                assert a.get_stream_type() is StreamType.RESPONSE
                assert BOLT.runtime_status(a.get_status()) == 200
        answered_after = time.monotonic() - signalled
        assert answered_after >= 0.5  # they really were in flight when SIGTERM came

        # then the drained connections are closed and nothing new is accepted
        for sock in socks:
            sock.settimeout(3)
            assert sock.recv(1) == b""
        assert not accepting(listen)

        code = process.wait(timeout=5)
        exited_after = time.monotonic() - signalled
        log = log_path.read_text()
        assert code == 0, log
        assert exited_after < 3.0 + 1.0, f"exit {exited_after:.2f} s after SIGTERM\n{log}"
        assert can_bind(listen)
    finally:
        for sock in socks:
            sock.close()
        stop(process)
        upstream.close()


def test_drain_is_bounded_by_drain_timeout(tmp_path):
    """An upstream slower than drain_timeout_ms does not keep the proxy alive: it exits 0
    about drain_timeout_ms after SIGTERM."""
    upstream = SlowBoltUpstream(delay=20.0)
    listen = free_port()
    config = simple_config("bolt", listen, [f"{LOOPBACK}:{upstream.port}"])
    config["drain_timeout_ms"] = 1000
    process, log_path = start_proxy(config, tmp_path)
    sock = socket.create_connection((LOOPBACK, listen), timeout=5)
    try:
        sock.sendall(bolt_request(7, b"never answered in time").encode())
        upstream.wait_received(1)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = process.wait(timeout=10)
        exited_after = time.monotonic() - signalled
        log = log_path.read_text()
        assert code == 0, log
        assert 0.8 <= exited_after < 1.0 + 1.5, f"exit {exited_after:.2f} s after SIGTERM\n{log}"
        assert not accepting(listen)
    finally:
        sock.close()
        stop(process)
        upstream.close()


# --- invalid configs --------------------------------------------------------------------------

BROKEN_SPEC = """\
protocol broken {
    byte_order big
    frame {
        magic u8 = = 1
    }
}
"""


def clash_spec(name: str) -> str:
    """xexample under another name, detected by a first byte 0x01 (as bolt is)."""
    text = (ROOT / "specs" / "xexample.xproto").read_text()
    text = text.replace("protocol xexample", f"protocol {name}")
    text = text.replace("detect u8 == 0x78", "detect u8 == 0x01")
    assert f"protocol {name}" in text and "detect u8 == 0x01" in text
    return text


class Case:
    """One invalid config. ``build(cfg, ctx)`` changes the good config in place (or returns raw
    YAML text); ``ctx.dir`` is the config's directory, ``ctx.taken`` a port someone else
    listens on. ``expect`` are strings stderr must contain (``{dir}`` and ``{taken}`` are
    filled in); ``pattern`` a regex it must match."""

    def __init__(self, build: Callable, expect: list[str], pattern: str | None = None):
        self.build = build
        self.expect = expect
        self.pattern = pattern


def _set(path: str, value):
    def build(cfg, ctx):
        node = cfg
        parts = re.findall(r"[A-Za-z_]+|\[\d+\]", path)
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        last = parts[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        else:
            node[last] = value

    return build


def _delete_endpoints(cfg, ctx):
    del cfg["clusters"][0]["endpoints"]


def _broken_spec(cfg, ctx):
    (ctx.dir / "broken.xproto").write_text(BROKEN_SPEC)
    cfg["protocols"] = ["broken.xproto"]


def _overlapping_detection(cfg, ctx):
    (ctx.dir / "clash.xproto").write_text(clash_spec("clash"))
    cfg["protocols"] = ["clash.xproto"]
    cfg["listeners"][0]["protocol"] = ["bolt", "clash"]


def _bad_regex(cfg, ctx):
    cfg["route_configs"][0]["virtual_hosts"][0]["routes"][0]["match"]["headers"] = [
        {"name": "color", "exact": "blue"},
        {"name": "trace", "regex": "([0-9a-f"},
    ]


def _yaml_syntax(cfg, ctx):
    listen = cfg["listeners"][0]["address"]
    return (
        "listeners:\n"
        "  - name: main\n"
        f"    address: {listen}\n"
        "    protocol: [bolt\n"
        "    route_config: main\n"
    )


def _two_listeners(cfg, ctx):
    second = copy.deepcopy(cfg["listeners"][0])
    second["name"] = "second"
    second["address"] = f"{LOOPBACK}:{ctx.taken}"
    cfg["listeners"].append(second)


def _duplicate_address(cfg, ctx):
    second = copy.deepcopy(cfg["listeners"][0])
    second["name"] = "second"
    cfg["listeners"].append(second)


def _twice_user(cfg, ctx):
    for sub in ("a", "b"):
        (ctx.dir / sub).mkdir()
        (ctx.dir / sub / "dup.xproto").write_text(clash_spec("dup").replace("0x01", "0x7a"))
    cfg["protocols"] = ["a/dup.xproto", "b/dup.xproto"]


def _redefine_builtin(cfg, ctx):
    shutil.copy(ROOT / "specs" / "bolt.xproto", ctx.dir / "bolt.xproto")
    cfg["protocols"] = ["bolt.xproto"]


def _missing_spec_file(cfg, ctx):
    cfg["protocols"] = ["nothere.xproto"]


ROUTE0 = "route_configs[0].virtual_hosts[0].routes[0]"

CASES = {
    "unknown-key": Case(_set("listeners[0].colour", "blue"), ["listeners[0]", "colour"]),
    "missing-key": Case(_delete_endpoints, ["clusters[0]", "endpoints", "missing"]),
    "bad-endpoint-port": Case(
        _set("clusters[0].endpoints", ["127.0.0.1:1", "127.0.0.1:99999"]),
        ["clusters[0].endpoints[1]", "99999"],
    ),
    "bad-endpoint-host": Case(
        _set("clusters[0].endpoints", ["127.0.0.1:1", "not a host:80"]),
        ["clusters[0].endpoints[1]"],
    ),
    "bad-listener-address": Case(
        _set("listeners[0].address", "127.0.0.1"), ["listeners[0].address"]
    ),
    "route-to-missing-cluster": Case(
        _set("route_configs[0].virtual_hosts[0].routes[0].route.cluster", "nope"),
        [f"{ROUTE0}.route.cluster", "nope"],
    ),
    "missing-route-config": Case(
        _set("listeners[0].route_config", "nope"), ["listeners[0].route_config", "nope"]
    ),
    "unknown-protocol": Case(
        _set("listeners[0].protocol", "nosuch"), ["listeners[0].protocol", "nosuch"]
    ),
    "spec-syntax-error": Case(_broken_spec, ["{dir}/broken.xproto:4:20", "error"]),
    "missing-spec-file": Case(_missing_spec_file, ["protocols[0]", "nothere.xproto"]),
    "overlapping-detection": Case(
        _overlapping_detection, ["listeners[0].protocol", "'bolt'", "'clash'"]
    ),
    "protocol-defined-twice": Case(_twice_user, ["dup", "defined twice"]),
    "builtin-protocol-redefined": Case(_redefine_builtin, ["bolt", "defined twice"]),
    "bad-regex": Case(_bad_regex, [f"{ROUTE0}.match.headers[1].regex"]),
    # stream_filters and retries were "not supported yet" in the brief's version; they are
    # implemented now, so their invalid forms are tested instead
    "unknown-stream-filter": Case(
        _set(
            "listeners[0].stream_filters",
            [
                {"name": "local_rate_limit", "config": {"tokens_per_second": 10, "burst": 10}},
                {"name": "no_such_filter"},
            ],
        ),
        ["listeners[0].stream_filters[1].name", "no_such_filter"],
    ),
    "stream-filter-bad-config": Case(
        _set("listeners[0].stream_filters", [{"name": "local_rate_limit", "config": {}}]),
        ["listeners[0].stream_filters[0].config", "tokens_per_second"],
    ),
    "negative-retries": Case(
        _set("route_configs[0].virtual_hosts[0].routes[0].route.retries", -1),
        [f"{ROUTE0}.route.retries"],
    ),
    "negative-drain-timeout": Case(_set("drain_timeout_ms", -5), ["drain_timeout_ms"]),
    "duplicate-listener-address": Case(_duplicate_address, ["listeners[1].address"]),
    # found by the same check as `protoc-x check` (before any port opens), with their lines
    "admin-equals-listener": Case(
        lambda cfg, ctx: cfg.update(admin={"address": cfg["listeners"][0]["address"]}),
        ["admin.address: address", "already used by listener 'main'"],
        pattern=r"bad\.yaml:\d+:\d+: error: admin\.address",
    ),
    "strict-filter-config": Case(
        _set(
            "listeners[0].stream_filters",
            [{"name": "local_rate_limit", "config": {"tokens_per_second": 1, "burst": "5"}}],
        ),
        ["listeners[0].stream_filters[0].config.burst: expected an integer, got '5'"],
    ),
    "missing-labels-file": Case(
        _set(
            "listeners[0].stream_filters",
            [{"name": "node_labels", "config": {"labels_file": "nowhere"}}],
        ),
        ["listeners[0].stream_filters[0].config.labels_file: cannot read {dir}/nowhere"],
    ),
    "access-log-in-missing-directory": Case(
        _set("listeners[0].access_log", {"path": "logs/access.log"}),
        ["listeners[0].access_log.path: no such directory: {dir}/logs"],
    ),
    "empty-file": Case(lambda cfg, ctx: "", [], pattern=r"<root>|empty"),
    # the flow sequence opened on line 4 meets "route_config:" at line 5, column 17
    "yaml-syntax-error": Case(_yaml_syntax, [], pattern=r"\b5:17\b|line 5, column 17"),
    # the second listener's port is taken: the message names that listener (YAML path or
    # name) and the port, and the first listener must not stay open
    "port-in-use": Case(_two_listeners, ["{taken}"], pattern=r"listeners\[1\]|\bsecond\b"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_invalid_config_exits_2_and_opens_no_port(name, tmp_path):
    case = CASES[name]
    listen, upstream = free_port(), free_port()
    cfg = simple_config("bolt", listen, [f"{LOOPBACK}:{upstream}"])
    holder = socket.create_server((LOOPBACK, 0))  # a port that is in use (port-in-use case)
    taken = holder.getsockname()[1]
    text = case.build(cfg, SimpleNamespace(dir=tmp_path, taken=taken))
    if text is None:
        text = yaml.safe_dump(cfg, sort_keys=False)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    watched = [listen]

    try:
        process = subprocess.Popen(
            [str(PROTOC_X), "run", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        opened = []
        deadline = time.monotonic() + 5
        while process.poll() is None and time.monotonic() < deadline:
            opened += [p for p in watched if accepting(p)]
            time.sleep(0.02)
        running = process.poll() is None
        if running:
            process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate(timeout=5)
        stderr = err.decode(errors="replace")
        assert not running, f"protoc-x run kept running on an invalid config:\n{stderr}"
        assert process.returncode == 2, f"exit {process.returncode}:\n{stderr}"
        assert not opened, f"port(s) {sorted(set(opened))} accepted during the run"
        for port in watched:
            assert not accepting(port), f"port {port} accepts after the run"
            assert can_bind(port), f"port {port} still bound after the run"
        assert "Traceback" not in stderr, stderr
        for want in case.expect:
            want = want.format(dir=tmp_path, taken=taken)
            assert want in stderr, f"{want!r} not in stderr:\n{stderr}"
        if case.pattern:
            assert re.search(case.pattern, stderr), f"/{case.pattern}/ not in stderr:\n{stderr}"
    finally:
        holder.close()


# --- open files -------------------------------------------------------------------------------


def test_run_takes_the_hard_open_files_limit(tmp_path):
    """Started with a soft limit of 256 open files, `protoc-x run` still holds 600 client
    connections and answers on the last one: it raises its soft limit to the hard one."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to show")
    upstream = SlowBoltUpstream(0.0)
    port = free_port()
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(simple_config("bolt", port, [f"{LOOPBACK}:{upstream.port}"])))
    process = subprocess.Popen(
        [str(PROTOC_X), "run", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )  # fmt: skip
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 15
        while not accepting(port):
            assert process.poll() is None and time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.05)
        for _ in range(600):
            clients.append(socket.create_connection((LOOPBACK, port), timeout=5))
        last = clients[-1]
        last.sendall(bolt_request(7, b"the 600th").encode())
        (answer,) = read_frames(last, 1, timeout=5)
        assert answer.get_request_id() == 7 and answer.get_body() == b"the 600th"
    finally:
        for c in clients:
            c.close()
        stop(process)
        upstream.close()
