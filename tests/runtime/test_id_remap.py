"""Request ids through the proxy: clients on different connections use the same ids, none of
them what the upstream id counter hands out (1, 2, ...), so every answer's id is restored from
the remapped one, whether the codec patches it in place (bolt), re-encodes the frame (a TARS
body, a CRC-protected bolt v2 frame) or never remaps (pingpong)."""

from __future__ import annotations

import asyncio

import pytest

from protoc_x.runtime.api import Direction, StreamType
from protoc_x.samples import SAMPLES

from .harness import PROTOCOLS, client, free_port, proxy_running, run, simple_config, upstream

IDS = (1_000_003, 77, 4_096)  # the same three on every connection


def request_sample(name: str):
    for s in SAMPLES:
        if s.protocol != name:
            continue
        direction = Direction.REQUEST if PROTOCOLS[name].needs_direction else None
        frame = PROTOCOLS[name].decode(s.data, 0, direction)
        if frame.get_stream_type() is StreamType.REQUEST and not frame.is_heartbeat():
            return s.data, direction
    return None


CASES = sorted(name for name in PROTOCOLS if request_sample(name) is not None)


def has_ids(name: str) -> bool:
    """Its requests carry an id (redis's do not: answers come back by position)."""
    data, direction = request_sample(name)
    return PROTOCOLS[name].decode(data, 0, direction).get_request_id() is not None


@pytest.mark.parametrize("name", [n for n in CASES if has_ids(n)])
def test_colliding_client_ids_come_back_as_sent(name):
    proto = PROTOCOLS[name]
    data, direction = request_sample(name)

    async def scenario():
        up, port = free_port(), free_port()
        async with (
            upstream(name, up),
            proxy_running(simple_config(name, port, [f"127.0.0.1:{up}"])),
        ):
            clients = [await client(name, port) for _ in range(3)]
            pending = []
            for c in clients:
                for rid in IDS:
                    frame = proto.decode(data, 0, direction)
                    frame.set_request_id(rid)
                    pending.append((rid, c.send(frame)))
            for rid, fut in pending:
                answer = await asyncio.wait_for(fut, 5)
                assert answer.get_request_id() == rid
                assert answer.get_stream_type() is StreamType.RESPONSE
            for c in clients:
                c.close()

    run(scenario())
