"""The pipeline pool (a protocol without request ids, answered in order: redis): clients share
one upstream connection and answers are matched by their place in line, over real sockets."""

from __future__ import annotations

import asyncio

from ..peers.redis_peer import command
from .harness import free_port, proxy_running, run, simple_config


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)


def test_a_request_that_timed_out_keeps_its_place_and_its_late_answer_is_dropped():
    """GET slow times out (the server answers it late); the next request on the same shared
    connection gets its own answer, not the late one."""
    connections = []

    async def server(reader, writer):
        connections.append(writer)
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            count = int(line[1:])
            words = []
            for _ in range(count):
                await reader.readuntil(b"\r\n")
                words.append((await reader.readuntil(b"\r\n"))[:-2])
            if words[1] == b"slow":
                # answered after its 2 s timeout, and 1 s before the request behind it times
                # out (answers stay in order: that one waits too)
                await asyncio.sleep(3)
            writer.write(b"+answer-to-" + words[1] + b"\r\n")
            await writer.drain()

    async def scenario():
        up, port = free_port(), free_port()
        srv = await asyncio.start_server(server, "127.0.0.1", up)
        cfg = simple_config("redis", port, [f"127.0.0.1:{up}"], {"request_timeout_ms": 2000})
        async with proxy_running(cfg):
            r1, w1 = await asyncio.open_connection("127.0.0.1", port)
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w1.write(command(b"GET", b"slow"))
            assert (await read_reply(r1)).startswith(b"-ERR protoc-x: 504")
            w2.write(command(b"GET", b"next"))  # written behind the slow one
            assert await read_reply(r2) == b"+answer-to-next\r\n"
            w1.write(command(b"GET", b"again"))
            assert await read_reply(r1) == b"+answer-to-again\r\n"
            assert len(connections) == 1  # both clients on the one upstream connection
            for w in (w1, w2):
                w.close()
        srv.close()

    run(scenario())


def test_an_answer_nobody_asked_for_closes_the_upstream_connection():
    """A server that answers when nothing is owed: the proxy no longer knows which answer is
    whose, so it closes that connection, and a new one serves the next request."""
    connections = []

    async def server(reader, writer):
        connections.append(writer)
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            for _ in range(int(line[1:]) * 2):
                await reader.readuntil(b"\r\n")
            extra = b"+unasked\r\n" if len(connections) == 1 else b""
            writer.write(b"+OK\r\n" + extra)
            await writer.drain()

    async def scenario():
        up, port = free_port(), free_port()
        srv = await asyncio.start_server(server, "127.0.0.1", up)
        cfg = simple_config("redis", port, [f"127.0.0.1:{up}"], {"request_timeout_ms": 2000})
        async with proxy_running(cfg):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(command(b"PING"))
            assert await read_reply(r) == b"+OK\r\n"
            await asyncio.sleep(0.2)  # the unasked answer arrives and the connection goes
            w.write(command(b"PING"))
            assert await read_reply(r) == b"+OK\r\n"
            assert len(connections) == 2
            w.close()
        srv.close()

    run(scenario())
