"""A real TARS server and client: TarsNode, npm @tars/rpc 2.0.15 with @tars/stream 2.0.3.

The node side lives in node/tars_peer.js (servant SERVANT, `string sayHello(string s)` answering
"hello " + s); its packages are pinned by node/package-lock.json and installed with
`npm ci --prefix tests/peers/node` (node_process.NPM_INSTALL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from .node_process import NODE, NODE_DIR, check_node, node_process
from .recording import LOOPBACK

PEER_SCRIPT = NODE_DIR / "tars_peer.js"

SERVANT = "Test.Hello.HelloObj"
METHOD = "sayHello"
TARS_STRING1, TARS_STRING4 = 6, 7  # TARS TLV type codes: string with a u8 / u32 length


def tars_string(tag: int, value: str) -> bytes:
    """One TARS TLV string field (what @tars/stream's writeString writes), tag < 15."""
    data = value.encode("utf-8")
    if len(data) <= 0xFF:
        return bytes([tag << 4 | TARS_STRING1, len(data)]) + data
    return bytes([tag << 4 | TARS_STRING4]) + struct.pack(">I", len(data)) + data


def say_hello(value: str) -> str:
    """What the node server answers to sayHello(value)."""
    return "hello " + value


@dataclass
class TarsServer:
    """A running @tars/rpc server on 127.0.0.1:port serving SERVANT. Unpacks as (host, port)."""

    host: str
    port: int
    process: subprocess.Popen
    _events: "queue.Queue[dict[str, Any]]" = field(default_factory=queue.Queue)
    stderr: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.host, self.port))

    def served(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The first `count` calls the server decoded: {"id", "servant", "func", "arg"}."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"TARS server reported {len(out)} of {count} calls: {out}; "
                    f"stderr: {''.join(self.stderr)[-500:]}"
                )
            with contextlib.suppress(queue.Empty):
                out.append(self._events.get(timeout=min(remaining, 0.1)))
        return out


@contextlib.contextmanager
def tars_server(port: int) -> Iterator[TarsServer]:
    """@tars/rpc's server (node) on 127.0.0.1:port; see TarsServer."""
    check_node("TARS", "@tars/rpc")
    with node_process(
        ["--no-warnings", str(PEER_SCRIPT), "server", str(port)], "node TARS server"
    ) as (process, events, stderr, first):
        if first != {"event": "listening", "port": port}:
            raise RuntimeError(f"unexpected first line from node: {first}")
        yield TarsServer(LOOPBACK, port, process, events, stderr)


async def tars_client(
    port: int, texts: list[str], timeout: float = 20.0, check: bool = True
) -> list[dict[str, Any]]:
    """@tars/rpc's client (node) calls sayHello(text) for every text at once, pipelined on one
    connection to 127.0.0.1:port; one dict per call: {"id", "arg", "result"} or
    {"id", "arg", "error": {"code", "message"}}; with `check`, an error is an AssertionError.
    A subprocess of the running event loop, so
    in-process proxies and upstreams keep serving while it runs."""
    check_node("TARS", "@tars/rpc")
    process = await asyncio.create_subprocess_exec(
        NODE,
        "--no-warnings",
        str(PEER_SCRIPT),
        "client",
        LOOPBACK,
        str(port),
        *texts,
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise
    lines = [json.loads(line) for line in out.decode("utf-8").splitlines() if line.strip()]
    if len(lines) != len(texts) or (check and process.returncode != 0):
        raise AssertionError(f"TARS client printed {lines}; stderr: {err.decode()[-500:]}")
    return lines
