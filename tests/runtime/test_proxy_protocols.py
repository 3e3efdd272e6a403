"""Every shipped protocol through the proxy: a client built from the generated codec →
`protoc-x run`'s proxy → `protoc-x serve`; answers matched by id, bodies intact."""

from __future__ import annotations

import asyncio

import pytest

from protoc_x.samples import SAMPLES
from protoc_x.runtime.api import Direction, StreamType

from .harness import PROTOCOLS, client, free_port, proxy_running, run, simple_config, upstream


def request_sample(protocol):
    for s in SAMPLES:
        if s.protocol != protocol or s.direction == "response":
            continue
        frame = PROTOCOLS[protocol].decode(
            s.data, 0, Direction(s.direction) if s.direction else None
        )
        if frame.get_stream_type() is StreamType.REQUEST and not frame.is_heartbeat():
            return s
    raise LookupError(protocol)


@pytest.mark.parametrize(
    "protocol", ["bolt", "boltv2", "dubbo", "thrift", "memcached", "tars", "kafka", "xexample"]
)
def test_protocol_through_proxy(protocol):
    proto = PROTOCOLS[protocol]
    sample = request_sample(protocol)
    direction = Direction(sample.direction) if sample.direction else None

    async def scenario():
        up, port = free_port(), free_port()
        async with (
            upstream(protocol, up),
            proxy_running(simple_config(protocol, port, [f"127.0.0.1:{up}"])),
        ):
            c = await client(protocol, port)
            futures = []
            for i in range(40):
                frame = proto.decode(sample.data, 0, direction)
                frame.set_request_id(i + 1 if proto.pool_mode.value == "multiplex" else 0)
                if protocol == "dubbo":  # its body is the hessian2 invocation the proxy routes by
                    frame.set_header("x-seq", str(i))
                else:
                    frame.set_body(b"payload-%d-" % i + bytes(range(i)))
                body = bytes(frame.get_body())
                futures.append((body, frame.get_request_id(), c.send(frame)))
            assert len({body for body, _, _ in futures}) == len(futures)
            for body, rid, fut in futures:
                answer = await asyncio.wait_for(fut, 5)
                assert answer.get_stream_type() is StreamType.RESPONSE
                assert answer.get_request_id() == rid
                assert bytes(answer.get_body()) == body
                assert proto.runtime_status(answer.get_status() or 0) == 200
            c.close()

    run(scenario())
