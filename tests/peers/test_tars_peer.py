"""TARS against a real peer: TarsNode's @tars/rpc client and server (tars_peers.py).

The real client → the proxy (a `tars` listener, in-process) → the real server: two clients at
once, each with TarsNode's own request ids (2, 3, ... on every connection, so they collide across
connections and differ from the proxy's upstream ids), pipelined, with non-ASCII and long
(u32-length) strings. Every call gets its own answer: TARS answers are re-encoded, not patched in
place, so this sees the proxy restore each client's id.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.runtime.harness import free_port, proxy_running, run, simple_config

from .tars_peers import METHOD, SERVANT, say_hello, tars_client, tars_server

TEXTS = ["plain", "größe", "世界 😀 𝄞", "é" * 200 + "z"]  # the last one: > 255 bytes (string4)


def texts(prefix: str) -> list[str]:
    return [f"{prefix}-{text}" for text in TEXTS]


def test_real_client_through_the_proxy_to_the_real_server():
    server_port, proxy_port = free_port(), free_port()
    config = simple_config("tars", proxy_port, [f"127.0.0.1:{server_port}"])
    first, second = texts("one"), texts("two")

    async def main():
        async with proxy_running(config):
            return await asyncio.gather(
                tars_client(proxy_port, first), tars_client(proxy_port, second)
            )

    with tars_server(server_port) as server:
        got_first, got_second = run(main())
        served = server.served(len(first) + len(second))

    for sent, got in ((first, got_first), (second, got_second)):
        assert [(call["arg"], call.get("result")) for call in got] == [
            (text, say_hello(text)) for text in sent
        ], got
        # TarsNode numbers each connection's calls from 2: both clients used the same ids
        assert [call["id"] for call in got] == list(range(2, 2 + len(sent))), got
    assert sorted(call["arg"] for call in served) == sorted(first + second), served
    assert {(call["servant"], call["func"]) for call in served} == {(SERVANT, METHOD)}
    # the server saw ids of the proxy's own, unique on its connection
    ids = Counter(call["id"] for call in served)
    assert all(count == 1 for count in ids.values()), served
