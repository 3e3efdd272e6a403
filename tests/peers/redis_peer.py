"""A real Redis (Debian's redis-server) on 127.0.0.1, for the tests that send redis-py's
commands through the proxy."""

from __future__ import annotations

import shutil
import socket
from typing import ContextManager, Optional

from .recording import LOOPBACK
from .servers import server_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def command(*words: bytes) -> bytes:
    """A command as clients send it: a RESP array of bulk strings."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def _answers_ping(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(16).startswith(b"+PONG")


def redis_server(port: Optional[int] = None) -> ContextManager[tuple[str, int]]:
    """redis-server on a free loopback port, in memory only (no RDB, no AOF), in the
    foreground; stopped on exit."""
    return server_process(
        "redis-server",
        lambda p: [
            REDIS_SERVER, "--port", str(p), "--bind", LOOPBACK, "--save", "", "--appendonly",
            "no", "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
        ],  # fmt: skip
        _answers_ping,
        port,
    )
