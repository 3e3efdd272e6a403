"""Processes for the failure tests: the proxy (`protoc-x run`), `protoc-x serve` upstreams and
the misbehaving upstreams of fail_upstreams.py, each a real process on 127.0.0.1 with its output
kept, plus RSS sampling and the frames the tests send."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import yaml

from protoc_x.demo import free_port  # noqa: F401 (also for the modules importing it from here)
from protoc_x.generated.bolt import PROTOCOL as BOLT
from protoc_x.samples import SAMPLES

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("protoc-x")
PROTOC_X = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "protoc_x.cli"]


def raise_fd_limit(want: int) -> int:
    """Lift this process's soft fd limit towards ``want`` (children inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


_LIVE: list["Process"] = []


def stop_all() -> None:
    """Stop every process started here and not stopped yet (a test's cleanup)."""
    while _LIVE:
        _LIVE.pop().stop()


class Process:
    """A child process; stderr goes to a file (read with ``.stderr()``), stdout lines to
    ``.lines`` when ``keep_stdout``."""

    def __init__(self, argv: list[str], log: Path, keep_stdout: bool = False):
        _LIVE.append(self)
        self.argv = argv
        self.log = log
        self.lines: list[str] = []
        self._err = open(log, "wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
            stderr=self._err,
        )
        self.pid = self.proc.pid
        self._reader = None
        if keep_stdout:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.log.read_text(errors="replace")

    def wait_port(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(
                    f"{self.argv} exited {self.proc.returncode}: {self.stderr()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.argv}: port {port} not open: {self.stderr()[-2000:]}"
                    )
                time.sleep(0.03)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)
        self._err.close()
        if self in _LIVE:
            _LIVE.remove(self)


@contextlib.contextmanager
def started(process: Process, port: int | None = None) -> Iterator[Process]:
    try:
        if port is not None:
            process.wait_port(port)
        yield process
    finally:
        process.stop()


def proxy(config: dict, tmp: Path, name: str = "proxy") -> tuple[Process, Path]:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return Process(PROTOC_X + ["run", str(path)], tmp / f"{name}.stderr"), path


def serve(protocol: str, port: int, tmp: Path) -> Process:
    return Process(
        PROTOC_X + ["serve", protocol, "--listen", f"127.0.0.1:{port}", "--name", f"up-{protocol}"],
        tmp / f"serve-{protocol}-{port}.stderr",
    )


def bad_upstream(mode: str, port: int, arg: float, tmp: Path) -> Process:
    return Process(
        [sys.executable, "-m", "tests.e2e.fail_upstreams", mode, str(port), str(arg)],
        tmp / f"{mode}-{port}.stderr",
        keep_stdout=True,
    )


def one_listener(
    protocol: str, port: int, endpoints: list[str], listener=None, cluster=None, route=None
) -> dict:
    """One listener → one route → one cluster ``up``."""
    return {
        "drain_timeout_ms": 500,
        "listeners": [
            {"name": "main", "address": f"127.0.0.1:{port}", "protocol": protocol,
             "route_config": "main", **(listener or {})}
        ],
        "route_configs": [
            {"name": "main", "virtual_hosts": [
                {"name": "all", "domains": ["*"],
                 "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up", **(route or {})}}]}
            ]}
        ],
        "clusters": [{"name": "up", "endpoints": endpoints, **(cluster or {})}],
    }  # fmt: skip


class RssSampler:
    """Samples a process's VmRSS every ``period`` seconds in a thread."""

    def __init__(self, pid: int, period: float = 0.5):
        self.pid = pid
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append((time.monotonic() - t0, rss_kib(self.pid)))
            self._stop.wait(self.period)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mib(self) -> float:
        return max((kib for _, kib in self.samples), default=0) / 1024


# -- frames -----------------------------------------------------------------------------------

_BOLT_SAMPLE = next(
    s.data for s in SAMPLES if s.protocol == "bolt" and s.name.startswith("request")
)


def bolt_request(rid: int, body: bytes = b"x", timeout: int = 3000, **headers):
    frame = BOLT.decode(_BOLT_SAMPLE)
    frame.set_request_id(rid)
    frame.set_body(body)
    frame.timeout = timeout
    frame.headers = {
        "service": "com.acme.HelloService:1.0",
        "sofa_head_method_name": "sayHello",
        **headers,
    }
    return frame


def env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default
