"""``protoc-x serve``: a test upstream for any protocol — each request answered with the
spec's success response carrying the request's body, each heartbeat with its reply, in
request order. For our own tests, demo and load generation; not a server for real clients."""

from __future__ import annotations

import asyncio
import logging
import sys

from .api import Direction, StreamType, XFrame, XProtocol
from .network import FramedConnection

log = logging.getLogger("protoc_x.serve")


class ServeConnection(FramedConnection):
    direction = Direction.REQUEST

    def __init__(self, proto: XProtocol, name: str, stats: dict):
        super().__init__(proto)
        self.name = name
        self.stats = stats

    def on_frame(self, frame: XFrame, buf: bytes, start: int, length: int) -> None:
        kind = frame.get_stream_type()
        if frame.is_heartbeat():
            reply = self.proto.reply(frame)
            if reply is not None and kind is not StreamType.ONEWAY:
                self.send(reply.encode())
            return
        self.stats["requests"] = self.stats.get("requests", 0) + 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s: id=%s service=%s method=%s body=%dB",
                self.name, self.proto.name, frame.get_request_id(), frame.get_service(),
                frame.get_method(), len(frame.get_body() or b""),
            )  # fmt: skip
        if kind is StreamType.ONEWAY:
            return
        response = self.proto.success_response(frame)
        if response is not None:
            self.send(response.encode())


async def serve(
    proto: XProtocol, host: str, port: int, name: str = "serve", stats: dict | None = None
) -> asyncio.AbstractServer:
    """Start serving; ``stats["requests"]`` counts the requests answered."""
    loop = asyncio.get_running_loop()
    stats = {} if stats is None else stats
    return await loop.create_server(
        lambda: ServeConnection(proto, name, stats), host, port, reuse_address=True
    )


def main(proto: XProtocol, host: str, port: int, name: str, verbose: bool = False) -> int:
    import signal

    from .run import install_loop

    install_loop()
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO, format="%(message)s"
    )
    stats: dict = {}

    async def go() -> None:
        server = await serve(proto, host, port, name, stats)
        log.info("%s: serving %s on %s:%d", name, proto.name, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()
        log.info("%s: served %d requests", name, stats.get("requests", 0))

    asyncio.run(go())
    return 0
