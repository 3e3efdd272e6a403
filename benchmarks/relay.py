"""A minimal uvloop L4 relay: bytes in, bytes out, one upstream connection per downstream one,
with read backpressure both ways. The baseline protoc-x is measured against.

    python benchmarks/relay.py --listen HOST:PORT --upstream HOST:PORT"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop


class Side(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.peer: "Side | None" = None
        self.pending: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def pause_writing(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class Downstream(Side):
    def __init__(self, upstream):
        super().__init__()
        self.upstream = upstream

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()
        asyncio.ensure_future(self.connect())

    async def connect(self):
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(Side, *self.upstream)
        except OSError:
            self.transport.close()
            return
        up.peer, self.peer = self, up
        for chunk in self.pending:
            up.transport.write(chunk)
        self.pending.clear()
        self.transport.resume_reading()


async def main(listen, upstream):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Downstream(upstream), *listen, reuse_address=True)
    async with server:
        await server.serve_forever()


def parse(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    a = p.parse_args()
    uvloop.install()
    try:
        asyncio.run(main(parse(a.listen), parse(a.upstream)))
    except KeyboardInterrupt:
        sys.exit(0)
