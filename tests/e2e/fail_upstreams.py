"""Misbehaving bolt upstreams for the failure tests, run as their own processes:

    python -m tests.e2e.fail_upstreams delay PORT SECONDS
        answers every request (the spec's success response, the request's body) only after
        SECONDS; prints ``received N`` on stdout after every request it has read

    python -m tests.e2e.fail_upstreams slow PORT BYTES_PER_SECOND
        reads at most BYTES_PER_SECOND per connection (a sleep-throttled recv loop on a small
        receive buffer) and answers each request it has fully read with a short success response
        whose body is the first 16 bytes of the request's body (the client's marker); prints
        ``answered MARKER`` on stdout for each

Both use the generated bolt codec directly (not runtime.network), print ``listening PORT`` once
bound, and stop on SIGTERM/SIGINT (or die on SIGKILL, which is the point of ``delay``)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
import time

from protoc_x.generated.bolt import PROTOCOL as BOLT
from protoc_x.runtime.api import Direction, StreamType

MARKER_BYTES = 16


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- delay ------------------------------------------------------------------------------------


class DelayConnection(asyncio.Protocol):
    count = 0

    def __init__(self, delay: float):
        self.delay = delay
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        pos = 0
        data = bytes(self.buf)
        loop = asyncio.get_running_loop()
        while pos < len(data):
            frame = BOLT.decode(data, pos, Direction.REQUEST)
            if frame is None:
                break
            pos += frame.length
            if frame.is_heartbeat():
                reply = BOLT.reply(frame)
                if reply is not None:
                    self.transport.write(reply.encode())
                continue
            DelayConnection.count += 1
            say(f"received {DelayConnection.count}")
            if frame.get_stream_type() is StreamType.ONEWAY:
                continue
            answer = BOLT.success_response(frame).encode()
            loop.call_later(self.delay, self.answer, answer)
        del self.buf[:pos]

    def answer(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def run_delay(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: DelayConnection(delay), "127.0.0.1", port, reuse_address=True
    )
    say(f"listening {port}")
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


# -- slow -------------------------------------------------------------------------------------


def serve_slowly(conn: socket.socket, rate: int) -> None:
    chunk = 4096
    buf = bytearray()
    started = time.monotonic()
    total = 0
    with conn:
        while True:
            # never ahead of ``rate`` bytes per second since the connection began
            due = started + total / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            try:
                data = conn.recv(chunk)
            except OSError:
                return
            if not data:
                return
            total += len(data)
            buf += data
            pos = 0
            view = bytes(buf)
            while pos < len(view):
                frame = BOLT.decode(view, pos, Direction.REQUEST)
                if frame is None:
                    break
                pos += frame.length
                if frame.is_heartbeat():
                    reply = BOLT.reply(frame)
                    if reply is not None:
                        conn.sendall(reply.encode())
                    continue
                if frame.get_stream_type() is StreamType.ONEWAY:
                    continue
                marker = bytes(frame.get_body()[:MARKER_BYTES])
                answer = BOLT.success_response(frame)
                answer.set_body(marker)
                try:
                    conn.sendall(answer.encode())
                except OSError:
                    return
                say(f"answered {marker.hex()}")
            del buf[:pos]


def run_slow(port: int, rate: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # a small receive buffer (inherited by accepted sockets): the kernel holds little on our side
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    say(f"listening {port}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_slowly, args=(conn, rate), daemon=True).start()


def main(argv: list[str]) -> int:
    mode, port = argv[0], int(argv[1])
    if mode == "delay":
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover
            pass
        asyncio.run(run_delay(port, float(argv[2])))
    elif mode == "slow":
        run_slow(port, int(argv[2]))
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
