"""An event loop with a virtual clock, for tests that drive minutes of the proxy's timers in
milliseconds, deterministically, over real sockets on 127.0.0.1.

The runtime reads one clock, the event loop's (``loop.time()``, ``call_at``/``call_later``).
``VirtualClockLoop`` is asyncio's selector loop whose ``time()`` is virtual: the clock stands
still while anything can happen and, when nothing can, jumps exactly to the next timer. The
proxy, its upstreams and its clients run on it unchanged, as tasks of one loop.

"Nothing can happen" is decided without guessing a real-time delay: no callback is ready,
``select()`` reports no I/O, and nothing is in flight between two of the loop's own sockets.
Loopback TCP usually delivers inside ``send()``, but the kernel may defer it (ksoftirqd on a
busy machine), so before a jump the loop compares, for every connection whose two ends are
its own sockets, the bytes one end has written (TCP_INFO ``bytes_sent`` less
``bytes_retrans``, plus SIOCOUTQNSD, not sent yet) with the bytes the other end has received
(``bytes_received``), and waits for connects in progress, connections not yet accepted, and
closes not yet seen by the other end (Linux only).
"""

from __future__ import annotations

import asyncio
import fcntl
import selectors
import socket
import struct
import time
from typing import Any, Coroutine

START = 1000.0037  # an uneven start: code that rounds times to ticks is not helped by luck

_TCP_ESTABLISHED, _TCP_SYN_SENT = 1, 2
# struct tcp_info (linux/tcp.h): offsets of __u64 tcpi_bytes_received, tcpi_bytes_sent and
# tcpi_bytes_retrans (data bytes, in sequence: the SYN and FIN are not counted)
_RECEIVED, _SENT = 128, 200  # tcpi_bytes_retrans follows tcpi_bytes_sent
_INFO_SIZE = 216
_SIOCOUTQNSD = 0x894B  # bytes written but not yet sent


class NotQuiescent(RuntimeError):
    """Bytes stayed in flight between the loop's own sockets for too long (a peer that does
    not read, or a socket whose other end lives outside the loop): time cannot jump."""


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = START, settle_limit: float = 5.0) -> None:
        super().__init__(selectors.DefaultSelector())
        self.now = start
        self.settle_limit = settle_limit  # real seconds to wait for bytes in flight
        self.jumps = 0
        self._real_select = self._selector.select
        self._selector.select = self._select  # type: ignore[method-assign]
        self._paired: set[tuple] = set()  # connections last seen with both ends in the loop

    def time(self) -> float:
        return self.now

    # -- the jump -------------------------------------------------------------------------
    def _select(self, timeout: float | None = None) -> list:
        events = self._real_select(0)
        if events or timeout == 0:
            return events
        give_up = time.monotonic() + self.settle_limit
        while self._in_flight():
            events = self._real_select(0.0005)
            if events:
                return events
            if time.monotonic() > give_up:
                raise NotQuiescent("bytes in flight between the loop's sockets did not arrive")
        if timeout is None:  # no timer at all: only a thread or another process can wake us
            events = self._real_select(self.settle_limit)
            if not events:
                raise NotQuiescent("nothing to do and no timer: the test waits for nothing")
            return events
        # nothing can happen before the next timer: it is now (asyncio took the cancelled
        # timers off the head of the heap before asking for a timeout)
        self.now = max(self.now, self._scheduled[0]._when)
        self.jumps += 1
        return []

    def _in_flight(self) -> bool:
        """Whether something the loop's own sockets sent has not reached the other end yet."""
        fds = {key.fd for key in self._selector.get_map().values()}
        fds.update(self._transports.keys())  # (a transport paused for reading is not selected)
        listening: set = set()
        conns: dict[tuple, tuple[int, int, int]] = {}  # (name, peer) → (state, sent, received)
        connecting = False
        for fd in fds:
            try:
                sock = socket.socket(fileno=fd)
            except OSError:  # closed meanwhile, or not a socket
                continue
            try:
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    listening.add(sock.getsockname()[:2])
                    continue
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _INFO_SIZE)
                if info[0] == _TCP_SYN_SENT:
                    connecting = True
                    continue
                try:
                    peer = sock.getpeername()[:2]
                except OSError:
                    continue  # not connected (a refused connect, which select reports)
                (received,) = struct.unpack_from("<Q", info, _RECEIVED)
                sent, retrans = struct.unpack_from("<QQ", info, _SENT)
                unsent = struct.unpack("i", fcntl.ioctl(fd, _SIOCOUTQNSD, b"\0" * 4))[0]
                conns[(sock.getsockname()[:2], peer)] = (info[0], sent - retrans + unsent, received)
            except OSError:
                continue
            finally:
                sock.detach()
        in_flight = connecting
        paired = set()
        for (name, peer), (state, sent, _) in conns.items():
            other = conns.get((peer, name))
            if other is not None:
                paired.add((name, peer))
                if sent > other[2]:
                    in_flight = True  # bytes on their way to the other end
            elif state == _TCP_ESTABLISHED and (peer in listening or (name, peer) in self._paired):
                # the other end is not accepted yet, or closed: its FIN or RST is on its way
                in_flight = True
                paired.add((name, peer))
        self._paired = paired
        return in_flight


def run_virtual(coro: Coroutine[Any, Any, Any], start: float = START) -> Any:
    """Run ``coro`` on a new :class:`VirtualClockLoop` (its clock at ``start``)."""
    with asyncio.Runner(loop_factory=lambda: VirtualClockLoop(start)) as runner:
        return runner.run(coro)
