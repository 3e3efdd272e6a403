"""Real servers from Debian (memcached, redis-server) as child processes on 127.0.0.1: started
on a free port (tried again on another if the port was taken meanwhile), waited for until they
answer, and stopped."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from typing import Callable, Iterator, Optional

from .recording import LOOPBACK, free_port


@contextlib.contextmanager
def server_process(
    name: str,
    command: Callable[[int], list[str]],
    ready: Callable[[socket.socket], bool],
    port: Optional[int] = None,
    timeout: float = 10.0,
) -> Iterator[tuple[str, int]]:
    """``command(port)`` running until the block ends; ``ready(sock)`` says, on a fresh
    connection, whether it answers yet."""
    attempts = 1 if port else 3
    for attempt in range(attempts):
        chosen = port or free_port()
        process = subprocess.Popen(
            command(chosen), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _wait(name, process, chosen, ready, timeout)
        except RuntimeError:
            _stop(process)
            if attempt + 1 == attempts:
                raise
            continue
        try:
            yield LOOPBACK, chosen
        finally:
            _stop(process)
        return


def _wait(name, process, port, ready, timeout) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"{name} exited with {process.returncode}: {err.strip()}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2) as sock:
                sock.settimeout(0.5)
                if ready(sock):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{name} did not answer on {port} within {timeout}s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    if process.stderr:
        process.stderr.close()
