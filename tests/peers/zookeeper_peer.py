"""A real ZooKeeper (Debian's zookeeper package, a standalone server) on 127.0.0.1, for the
tests that open kazoo's sessions through the proxy."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from .recording import LOOPBACK
from .servers import server_process

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")  # (its manifest names what it needs)
JAVA = shutil.which("java") or "/usr/bin/java"


def _answers_ruok(sock: socket.socket) -> bool:
    sock.sendall(b"ruok")
    return sock.recv(4) == b"imok"


@contextlib.contextmanager
def zookeeper_server() -> Iterator[tuple[str, int]]:
    """A standalone ZooKeeper with its data in a temporary directory, listening on a free
    loopback port only; stopped (and its data removed) on exit."""
    with tempfile.TemporaryDirectory(prefix="protocx-zk-") as tmp:

        def command(port: int) -> list[str]:
            cfg = Path(tmp) / f"zoo-{port}.cfg"
            cfg.write_text(
                f"tickTime=500\ndataDir={tmp}/data-{port}\nclientPort={port}\n"
                f"clientPortAddress={LOOPBACK}\nadmin.enableServer=false\n"
                "4lw.commands.whitelist=ruok\n"
            )
            return [
                JAVA, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-cp", str(ZOOKEEPER_JAR), "org.apache.zookeeper.server.ZooKeeperServerMain",
                str(cfg),
            ]  # fmt: skip

        with server_process("zookeeper", command, _answers_ruok, timeout=30.0) as address:
            yield address
