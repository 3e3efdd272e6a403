"""A client built from a generated codec: sends requests on one connection and matches
answers by request id (or in order, for ordered protocols). Tests, the demo and load
generators use it."""

from __future__ import annotations

import asyncio
from collections import deque

from .api import Direction, PoolMode, StreamType, XFrame, XProtocol
from .network import FramedConnection


class ClientConnection(FramedConnection):
    direction = Direction.RESPONSE

    def __init__(self, proto: XProtocol):
        super().__init__(proto)
        self.by_id: dict[int, asyncio.Future] = {}
        self.fifo: deque[asyncio.Future] = deque()
        self.lost = asyncio.get_event_loop().create_future()
        self.by_order = proto.ordered or proto.pool_mode is PoolMode.PINGPONG

    def on_frame(self, frame: XFrame, buf: bytes, start: int, length: int) -> None:
        if self.by_order:
            fut = self.fifo.popleft() if self.fifo else None
        else:
            fut = self.by_id.pop(frame.get_request_id(), None)
        if fut is not None and not fut.done():
            fut.set_result(frame)

    def on_close(self, exc) -> None:
        for fut in list(self.by_id.values()) + list(self.fifo):
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
        self.by_id.clear()
        self.fifo.clear()
        if not self.lost.done():
            self.lost.set_result(exc)


class Client:
    """``await Client.connect(proto, host, port)``; ``await client.call(frame)``."""

    def __init__(self, proto: XProtocol, conn: ClientConnection):
        self.proto = proto
        self.conn = conn
        self.next_id = 0

    @classmethod
    async def connect(cls, proto: XProtocol, host: str, port: int) -> "Client":
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: ClientConnection(proto), host, port)
        return cls(proto, conn)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def send(self, frame: XFrame) -> asyncio.Future | None:
        """Write a request; the future of its answer (None for oneway)."""
        if self.conn.closed:
            raise ConnectionError("connection closed")
        kind = frame.get_stream_type()
        fut = None
        if kind is not StreamType.ONEWAY:
            fut = asyncio.get_running_loop().create_future()
            if self.conn.by_order:
                self.conn.fifo.append(fut)
            else:
                self.conn.by_id[frame.get_request_id()] = fut
        self.conn.send(frame.encode())
        return fut

    async def call(self, frame: XFrame, timeout: float = 10.0) -> XFrame:
        return await asyncio.wait_for(self.send(frame), timeout)

    def close(self) -> None:
        self.conn.close()
