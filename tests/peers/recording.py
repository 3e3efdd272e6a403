"""Loopback plumbing for capturing frames: a recording TCP relay and small socket helpers.

A `RecordingRelay` sits between a real client library and a real server: every byte is recorded
before it is forwarded, and the recorded streams are cut into whole frames with the length-only
splitters of `framing`. `take()` hands out frames in wire order as they complete, which is how the
capture functions tie a frame to the library call that produced it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator, Optional

from protoc_x.demo import free_port  # noqa: F401 (also for the modules importing it from here)

from .framing import FrameLength, split_frames

LOOPBACK = "127.0.0.1"

TO_SERVER = "request"  # client -> server bytes
TO_CLIENT = "response"  # server -> client bytes


def wait_until_listening(host: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
            time.sleep(0.02)


def send_and_receive(
    host: str,
    port: int,
    data: bytes,
    min_bytes: Optional[int] = None,
    timeout: float = 5.0,
) -> bytes:
    """Send data on a fresh connection and return what comes back.

    With min_bytes, returns as soon as that many bytes arrived (or raises TimeoutError);
    without it, reads until the peer closes or stays silent for 0.3 s after the last byte.
    """
    received = bytearray()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if min_bytes is not None:
                    raise TimeoutError(
                        f"got {len(received)} of {min_bytes} bytes from {host}:{port}"
                    )
                break
            wait = remaining if min_bytes is not None or not received else 0.3
            sock.settimeout(min(wait, remaining))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                if min_bytes is None and received:
                    break
                continue
            if not chunk:
                break
            received += chunk
            if min_bytes is not None and len(received) >= min_bytes:
                break
    if min_bytes is not None and len(received) < min_bytes:
        raise ConnectionError(f"{host}:{port} closed after {len(received)} of {min_bytes} bytes")
    return bytes(received)


def recv_exactly(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


class _RelayedConnection:
    """One accepted client connection and its upstream twin, with both byte streams."""

    def __init__(self, client: socket.socket, upstream: Optional[socket.socket]):
        self.client = client
        self.upstream = upstream
        self.streams = {TO_SERVER: bytearray(), TO_CLIENT: bytearray()}
        self.taken = {TO_SERVER: 0, TO_CLIENT: 0}  # bytes already handed out by take()
        self.closed = {TO_SERVER: False, TO_CLIENT: False}
        self.send_locks = {TO_SERVER: threading.Lock(), TO_CLIENT: threading.Lock()}


class RecordingRelay:
    """TCP relay on 127.0.0.1 that records both directions of every connection.

    upstream=None makes it a plain recorder: client bytes are recorded and nothing answers
    (use `inject()` to answer by hand).
    """

    def __init__(
        self,
        upstream: Optional[tuple[str, int]],
        frame_length: FrameLength,
        response_frame_length: Optional[FrameLength] = None,
    ):
        self.upstream = upstream
        self.frame_length = {
            TO_SERVER: frame_length,
            TO_CLIENT: response_frame_length or frame_length,
        }
        self._listener = socket.create_server((LOOPBACK, 0))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self.connections: list[_RelayedConnection] = []
        self._cond = threading.Condition()
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="recording-relay-accept", daemon=True
        )
        self._accept_thread.start()

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    def __enter__(self) -> "RecordingRelay":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._closing:
                client.close()
                return
            upstream = None
            if self.upstream is not None:
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    client.close()
                    continue
            conn = _RelayedConnection(client, upstream)
            with self._cond:
                self.connections.append(conn)
                self._cond.notify_all()
            self._spawn(conn, client, upstream, TO_SERVER)
            if upstream is not None:
                self._spawn(conn, upstream, client, TO_CLIENT)

    def _spawn(self, conn, source, sink, direction) -> None:
        thread = threading.Thread(
            target=self._pump,
            args=(conn, source, sink, direction),
            name=f"recording-relay-{direction}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()

    def _pump(self, conn, source, sink, direction) -> None:
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            with self._cond:
                conn.streams[direction] += chunk
                self._cond.notify_all()
            if sink is not None:
                try:
                    with conn.send_locks[direction]:
                        sink.sendall(chunk)
                except OSError:
                    break
        with self._cond:
            conn.closed[direction] = True
            self._cond.notify_all()
        if sink is not None:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def _connection(self, index: int, timeout: float) -> _RelayedConnection:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.connections) <= (index if index >= 0 else -index - 1):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no client connected to the recording relay")
                self._cond.wait(remaining)
            return self.connections[index]

    def take(
        self,
        direction: str,
        count: int = 1,
        timeout: float = 5.0,
        connection: int = -1,
    ) -> list[bytes]:
        """The next `count` whole frames sent in `direction` on a connection (wire order)."""
        conn = self._connection(connection, timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                pending = bytes(conn.streams[direction][conn.taken[direction] :])
                frames, used = split_frames(pending, self.frame_length[direction])
                if len(frames) >= count:
                    frames = frames[:count]
                    conn.taken[direction] += sum(len(f) for f in frames)
                    return frames
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (conn.closed[direction] and not frames):
                    raise TimeoutError(
                        f"wanted {count} {direction} frame(s), have {len(frames)} "
                        f"and {len(pending) - used} stray byte(s): {pending[:64].hex()}"
                    )
                self._cond.wait(min(remaining, 0.1))

    def take_all(self, direction: str, connection: int = -1) -> list[bytes]:
        """Every whole frame recorded in `direction` and not yet taken (no waiting)."""
        conn = self._connection(connection, 0)
        with self._cond:
            pending = bytes(conn.streams[direction][conn.taken[direction] :])
            frames, used = split_frames(pending, self.frame_length[direction])
            conn.taken[direction] += used
            return frames

    def pending(self, direction: str, connection: int = -1) -> bytes:
        """Bytes recorded in `direction` and not yet handed out by take()."""
        conn = self._connection(connection, 0)
        with self._cond:
            return bytes(conn.streams[direction][conn.taken[direction] :])

    def assert_silent(self, direction: str, wait: float = 0.3, connection: int = -1) -> None:
        """Fail if anything arrives in `direction` within `wait` seconds (oneway, quiet)."""
        time.sleep(wait)
        left = self.pending(direction, connection)
        if left:
            raise AssertionError(f"unexpected {direction} bytes: {left[:64].hex()}")

    def inject(self, direction: str, data: bytes, connection: int = -1) -> None:
        """Send bytes to one side without recording them (e.g. a server-initiated ping)."""
        conn = self._connection(connection, 5.0)
        sock = conn.client if direction == TO_CLIENT else conn.upstream
        if sock is None:
            raise ValueError("this relay has no upstream to inject into")
        with conn.send_locks[direction]:
            sock.sendall(data)

    def close(self) -> None:
        self._closing = True
        # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        for conn in self.connections:
            for sock in (conn.client, conn.upstream):
                if sock is None:
                    continue
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=2)


@contextlib.contextmanager
def recording_relay(
    upstream: Optional[tuple[str, int]],
    frame_length: FrameLength,
    response_frame_length: Optional[FrameLength] = None,
) -> Iterator[RecordingRelay]:
    relay = RecordingRelay(upstream, frame_length, response_frame_length)
    try:
        yield relay
    finally:
        relay.close()
