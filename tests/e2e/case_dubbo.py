"""Helpers for test_dubbo_case.py (the partner's Dubbo case: HTTP-style routes, blue-green by the
node's labels, current limiting) — kept here so that case owns everything it relies on.

- `proxy_run(config, tmp_path, name)`: `protoc-x run CONFIG` as a real process (the console
  script next to the running interpreter), waiting until each listener accepts; SIGTERM on exit.
- `serve_run(port)`: `protoc-x serve dubbo --verbose` (it logs service and method per request).
- `reported(server, predicate)`: the sofa-rpc-node server's request reports (what
  `DubboServer.wait_request` reads) selected by content: the proxy gives upstream requests ids
  of its own, so the client's request id cannot name them.
- `real_calls(plan)`: dubbo-ssl-python calls, run in a child process (`python -m
  tests.e2e.case_dubbo`, plan as JSON on stdin, one JSON outcome per call on stdout).

Why a child process for dubbo-ssl-python: its connection pool, reader thread and request-id
counter are process-wide, and a response status it has no name for (100 THREADPOOL_EXHAUSTED
is missing from its `response_status_message`) raises KeyError in its reader thread while the
header is still in the connection's buffer, so that reader re-parses the same header in a busy
loop, logging a traceback each time, and every later answer on that connection is lost. The
call that met the status, and any later call on the same "host:port", ends with
DubboRequestTimeoutException. A child process confines that to itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from protoc_x.demo import free_port  # noqa: F401 (also for the modules importing it from here)

ROOT = Path(__file__).parents[2]
SERVICE = "com.acme.DemoService"  # tests.peers.dubbo_peers.SERVICE
VERSION = "1.0.0"
GROUP = "protocx"


def protoc_x() -> list[str]:
    script = Path(sys.executable).with_name("protoc-x")
    return [str(script)] if script.exists() else [sys.executable, "-m", "protoc_x.cli"]


def wait_port(port: int, process: subprocess.Popen, log: Callable[[], str], timeout=15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {port}:\n{log()}")
            time.sleep(0.03)


@dataclass
class Process:
    process: subprocess.Popen
    stderr_path: Path

    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def _process(argv: list[str], ports: list[int], stderr_path: Path) -> Iterator[Process]:
    with open(stderr_path, "wb") as stderr:
        popen = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    proc = Process(popen, stderr_path)
    try:
        for port in ports:
            wait_port(port, popen, proc.log)
        yield proc
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=5)
        print(f"--- {' '.join(map(str, argv[1:3]))}: exit {popen.returncode}\n{proc.log()}")


@contextlib.contextmanager
def proxy_run(config: dict, tmp_path: Path, name: str = "proxy") -> Iterator[Process]:
    """`protoc-x run` on ``config`` (the contract's YAML shape, written to tmp_path)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    ports = [int(listener["address"].rpartition(":")[2]) for listener in config["listeners"]]
    with _process(protoc_x() + ["run", str(path)], ports, tmp_path / f"{name}.stderr") as proc:
        yield proc


@contextlib.contextmanager
def serve_run(port: int, tmp_path: Path) -> Iterator[Process]:
    """`protoc-x serve dubbo --verbose`: echoes each request's body with status 20."""
    argv = protoc_x() + ["serve", "dubbo", "--listen", f"127.0.0.1:{port}", "--verbose"]
    with _process(argv, [port], tmp_path / f"serve-{port}.stderr") as proc:
        yield proc


def reported(
    server: Any, predicate: Callable[[dict], bool], want: int = 1, timeout: float = 3.0
) -> list[dict]:
    """The request reports of a tests.peers DubboServer that satisfy ``predicate``, waiting up to
    ``timeout`` for ``want`` of them (returns what there is by then; ``want=0`` waits 0.3 s for
    stragglers). Reads the same event stream as ``DubboServer.wait_request``."""
    deadline = time.monotonic() + (timeout if want else 0.3)
    while True:
        while True:
            try:
                server._seen.append(server._events.get_nowait())
            except queue.Empty:
                break
        found = [e for e in server._seen if e.get("event") == "request" and predicate(e)]
        if (want and len(found) >= want) or time.monotonic() >= deadline:
            return found
        time.sleep(0.02)


def tags(events: list[dict]) -> list[str]:
    return sorted(e["args"][0] for e in events)


# --- codec-level frames (runtime.client + generated.dubbo) ---------------------------------


def dubbo_request(request_id: int, service: str, method: str, arg: str) -> Any:
    """A two-way hessian2 request ``service.method(arg)`` as sofa-rpc-node's server expects it
    (version VERSION, group GROUP), built from generated.dubbo's frame class."""
    from protoc_x.generated.dubbo import PROTOCOL
    from protoc_x.runtime.fieldtypes.hessian2 import encode_string

    frame = PROTOCOL.frame_class.blank()
    frame.is_request, frame.two_way, frame.serialization = 1, 1, 2
    frame.dubbo_version = "2.0.2"
    frame.service_path = service
    frame.service_version = VERSION
    frame.method_name = method
    frame.param_types = "Ljava/lang/String;"
    frame.arguments = [encode_string(arg)]  # arguments are kept as raw hessian2 values
    frame.attachments = {
        "path": service,
        "interface": service,
        "version": VERSION,
        "group": GROUP,
        "timeout": "3000",
    }
    frame.set_request_id(request_id)
    return frame


def ok_body(method: str) -> bytes:
    """The body of sofa-rpc-node's answer to ``method(one argument)``: result flag 1 (hessian
    int 0x91), then the string "ok:<method>:1"."""
    text = f"ok:{method}:1".encode()
    return b"\x91" + bytes([len(text)]) + text


# --- dubbo-ssl-python in a child process -------------------------------------------------


def call(host: str, tag: str, service: str = SERVICE, method: str = "sayHello", **kw) -> dict:
    """One call of a plan: ``service.method(tag)`` on "host:port"; kw: context, timeout,
    pause (seconds to sleep before the call)."""
    return {"host": host, "tag": tag, "service": service, "method": method, **kw}


def real_calls(plan: list[dict], timeout: float = 60.0) -> list[dict]:
    """Run ``plan`` in order with dubbo-ssl-python's DubboClient in a child process. Each
    outcome: the call plus ``id`` (dubbo-ssl-python's request id), ``seconds``, ``result`` or
    ``error`` ("ExceptionType: message") and ``error_type``, and ``library_errors``: the
    distinct exceptions the library logged meanwhile (its reader thread's, as repr)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.case_dubbo"],
        cwd=ROOT,
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dubbo-ssl-python child failed ({done.returncode}):\n{done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


class _Errors:
    """Distinct exceptions dubbo-ssl-python logs (its reader thread's errors never reach the
    caller: logging is the only trace of them)."""

    def __init__(self) -> None:
        import logging

        self.seen: list[str] = []

        class Handler(logging.Handler):
            def emit(handler, record) -> None:
                exc = record.exc_info[1] if record.exc_info else None
                text = repr(exc) if exc is not None else record.getMessage()
                if text not in self.seen:
                    self.seen.append(text)

        logger = logging.getLogger("dubbo_ssl")
        logger.handlers[:] = [Handler()]
        logger.propagate = False
        logger.setLevel(logging.ERROR)

    def take(self) -> list[str]:
        out, self.seen = self.seen, []
        return out


def _main() -> int:
    from dubbo_ssl.client import DubboClient
    from dubbo_ssl.common import util

    errors = _Errors()
    for item in json.load(sys.stdin):
        time.sleep(item.get("pause", 0))
        client = DubboClient(item["service"], GROUP, version=VERSION, host=item["host"])
        out = dict(item, id=util.invoke_id)  # the id the call's Request() takes
        errors.take()
        start = time.monotonic()
        try:
            out["result"] = client.call(
                item["method"],
                [item["tag"]],
                context=item.get("context", {"timeout": "3000"}),
                timeout=item.get("timeout", 3),
            )
        except Exception as exc:  # noqa: BLE001 (the library's error answers are exceptions)
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["error_type"] = type(exc).__name__
        out["seconds"] = round(time.monotonic() - start, 3)
        out["library_errors"] = errors.take()
        print(json.dumps(out, default=repr), flush=True)
    sys.stdout.flush()
    os._exit(0)  # its daemon threads may be spinning on a poisoned connection


if __name__ == "__main__":
    sys.exit(_main())
