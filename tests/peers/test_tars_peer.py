"""TARS against a real peer: TarsNode's @tars/rpc client and server (tars_peers.py).

The real client → the proxy (a `tars` listener, in-process) → the real server: two clients at
once, each with TarsNode's own request ids (2, 3, ... on every connection, so they collide across
connections and differ from the proxy's upstream ids), pipelined, with non-ASCII and long
(u32-length) strings. Every call gets its own answer: TARS answers are re-encoded, not patched in
place, so this sees the proxy restore each client's id.

The real client → an upstream built on our codec: what it decodes from TarsNode's frames (request
id, servant = service, function = method, body) and re-encodes byte for byte, and the answers our
codec builds (success_response, error_response) that TarsNode must accept: it rejects a
ResponsePacket without its `require` status map (tag 7).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from protoc_x.runtime.api import Direction
from tests.runtime.harness import PROTOCOLS, Recorder, free_port, proxy_running, run, simple_config

from .recording import LOOPBACK, send_and_receive
from .tars_peers import METHOD, SERVANT, say_hello, tars_client, tars_server, tars_string

TARS = PROTOCOLS["tars"]
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


def test_real_client_to_our_codec():
    port = free_port()
    sent = texts("codec")
    seen: list = []
    raw: list[bytes] = []

    class Answering(Recorder):
        """Keeps the exact bytes of each request and answers sayHello itself, with our codec."""

        def on_frame(self, frame, buf, start, length) -> None:
            self.seen.append(frame)
            raw.append(bytes(buf[start : start + length]))
            text = next(text for text in sent if frame.get_body() == tars_string(1, text))
            answer = self.proto.success_response(frame)
            answer.set_body(tars_string(0, say_hello(text)))
            self.send(answer.encode())

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Answering(TARS, seen), "127.0.0.1", port, reuse_address=True
        )
        try:
            return await tars_client(port, sent)
        finally:
            server.close()

    got = run(main())

    assert [(call["arg"], call.get("result")) for call in got] == [
        (text, say_hello(text)) for text in sent
    ], got
    by_id = {call["id"]: call["arg"] for call in got}
    assert len(seen) == len(sent)
    for frame, data in zip(seen, raw):
        assert frame.get_stream_type().value == "request"
        assert frame.get_service() == SERVANT
        assert frame.get_method() == METHOD
        assert not frame.is_heartbeat()
        assert frame.get_body() == tars_string(1, by_id[frame.get_request_id()])
        assert frame.encode() == data  # decoded and re-encoded byte for byte
    assert sorted(frame.get_request_id() for frame in seen) == sorted(by_id)


def test_real_client_reads_the_proxys_error_answer():
    proxy_port, closed_port = free_port(), free_port()  # nothing listens on closed_port
    config = simple_config("tars", proxy_port, [f"127.0.0.1:{closed_port}"])

    async def main():
        async with proxy_running(config):
            return await tars_client(proxy_port, ["nobody-home"], check=False)

    (got,) = run(main())
    # the proxy's error_response: runtime 502 is TARS proxy_connect_err (-8), with its message
    assert got["id"] == 2 and got["arg"] == "nobody-home", got
    assert got["error"]["code"] == -8, got
    assert got["error"]["message"], got


def test_real_server_answers_our_heartbeat():
    port = free_port()
    ping = TARS.trigger(0x7FFF_0001)
    with tars_server(port) as server:
        data = send_and_receive(LOOPBACK, port, ping.encode())  # until 0.3 s of silence
        (event,) = server.served(1)
    assert event == {"event": "ping", "id": 0x7FFF_0001}, event
    answer = TARS.decode(data, 0, Direction.RESPONSE)
    assert answer.length == len(data)
    assert answer.get_request_id() == 0x7FFF_0001
    assert answer.get_status() == 0
    assert answer.get_body() == bytes.fromhex("0c")  # int32 0 at tag 0, TARS's zero form
