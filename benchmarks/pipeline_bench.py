"""The proxy's own work per request, without sockets: µs of CPU from a request's bytes arriving
to its answer's bytes leaving, in one process, with the same config as proxy_bench.

A downstream and an upstream connection of a real ``Proxy`` get in-memory transports; each
round feeds ``--depth`` requests to each of ``--connections`` clients as one read, runs the
loop once (the writes), answers every request the upstream received as one read, and runs the
loop again (a pingpong protocol: one request per round, on one upstream connection). The
upstream's answers are built outside the timed part. For bolt, a hand-written minimal L7 proxy
fed the same way runs in the same process as the baseline: the ratio is the price of being
general (filters, routing table, deadlines, metrics, any protocol).

    python benchmarks/pipeline_bench.py [--rounds 3000] [--only bolt] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from loadgen import request_template  # noqa: E402
from proxy_bench import CASES, config  # noqa: E402
from protoc_x.runtime.api import Direction, PoolMode  # noqa: E402
from protoc_x.runtime.config import parse_config  # noqa: E402
from protoc_x.loader import protocols as load_protocols  # noqa: E402
from protoc_x.runtime.pool import UpstreamConnection  # noqa: E402
from protoc_x.runtime.proxy import DownstreamConnection, Proxy  # noqa: E402
from protoc_x.runtime.run import install_loop  # noqa: E402


class MemoryTransport:
    """What a connection writes, kept; reading pauses are ignored."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data) -> None:
        self.written.append(data)

    def take(self) -> bytes:
        data = b"".join(self.written)
        self.written.clear()
        return data

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 0) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def answers(proto, data: bytes) -> bytes:
    """The upstream's side: a success response to every request in ``data``."""
    out, pos = [], 0
    while pos < len(data):
        frame = proto.decode(data, pos, Direction.REQUEST)
        out.append(proto.success_response(frame).encode())
        pos += frame.length
    return b"".join(out)


async def turn() -> None:
    await asyncio.sleep(0)  # the loop runs what was scheduled: the batched writes


async def proxied(protocol: str, size: int, conns: int, depth: int, rounds: int) -> float:
    """µs per request through a real Proxy's downstream and upstream connections."""
    protos = load_protocols()
    proto = protos[protocol]
    cfg = parse_config(json.loads(config(protocol, 1, 2)), ROOT, "bench.json")
    proxy = Proxy(cfg, protos)
    listener = proxy.listeners[0]
    cluster = proxy.clusters["up"]
    pool = cluster.pool(proto, cluster.endpoints[0])
    upstream = UpstreamConnection(pool, proto)
    up_transport = MemoryTransport()
    upstream.connection_made(up_transport)
    pool.conns.append(upstream)
    if proto.pool_mode is not PoolMode.MULTIPLEX:
        pool.max_connections = 1
        pool.idle.append(upstream)
    clients = []
    template = request_template(proto, size)
    for _ in range(conns):
        down = DownstreamConnection(listener)
        down.connection_made(MemoryTransport())
        reads = []
        for k in range(depth):
            template.set_request_id(k + 1)
            reads.append(template.encode())
        clients.append((down, b"".join(reads)))
    per_round = conns * depth
    if proto.pool_mode is not PoolMode.MULTIPLEX:  # one request at a time on the connection
        clients, per_round = clients[:1], 1
        clients[0] = (clients[0][0], template.encode())
    spent = 0.0
    got = 0
    gc.collect()
    for _ in range(rounds):
        t0 = time.perf_counter()
        for down, data in clients:
            down.data_received(data)
        await turn()
        t1 = time.perf_counter()
        reply = answers(proto, up_transport.take())
        t2 = time.perf_counter()
        upstream.data_received(reply)
        await turn()
        t3 = time.perf_counter()
        spent += (t1 - t0) + (t3 - t2)
        for down, _ in clients:
            got += len(down.transport.take()) > 0
    assert got == rounds * len(clients), "every client got its answers"
    return spent / (rounds * per_round) * 1e6


# A hand-written minimal L7 bolt proxy, the floor for this design in Python: the fixed header
# unpacked, the service read from the header map, the id remapped in place on one shared
# upstream connection, writes batched per loop turn; no filters, routing table, deadlines,
# metrics or error handling.
BOLT_REQUEST = struct.Struct(">BBHBIBIHHI")
BOLT_RESPONSE = struct.Struct(">BBHBIBHHHI")
INT32 = struct.Struct(">I")


class HandSide(asyncio.Protocol):
    def __init__(self, transport):
        self.transport = transport
        self.out: list = []
        self.scheduled = False

    def send(self, data) -> None:
        self.out.append(data)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        self.transport.write(b"".join(self.out))
        self.out = []


class HandDown(HandSide):
    def __init__(self, transport, up: "HandUp"):
        super().__init__(transport)
        self.up = up

    def data_received(self, data) -> None:
        pos, n, up = 0, len(data), self.up
        while n - pos >= 22:
            _, _, _, _, rid, _, _, cl, hl, bl = BOLT_REQUEST.unpack_from(data, pos)
            end = pos + 22 + cl + hl + bl
            h, he, service = pos + 22 + cl, pos + 22 + cl + hl, None
            while h < he:
                (kl,) = INT32.unpack_from(data, h)
                key = data[h + 4 : h + 4 + kl]
                (vl,) = INT32.unpack_from(data, h + 4 + kl)
                if key == b"service":
                    service = data[h + 8 + kl : h + 8 + kl + vl].decode()
                h += 8 + kl + vl
            assert service is not None
            up.next_id += 1
            up.inflight[up.next_id] = (self, rid)
            frame = bytearray(data[pos:end])
            INT32.pack_into(frame, 5, up.next_id)
            up.send(frame)
            pos = end


class HandUp(HandSide):
    def __init__(self, transport):
        super().__init__(transport)
        self.next_id = 0
        self.inflight: dict = {}

    def data_received(self, data) -> None:
        pos, n = 0, len(data)
        while n - pos >= 20:
            _, _, _, _, rid, _, _, cl, hl, bl = BOLT_RESPONSE.unpack_from(data, pos)
            end = pos + 20 + cl + hl + bl
            down, original = self.inflight.pop(rid)
            frame = bytearray(data[pos:end])
            INT32.pack_into(frame, 5, original)
            down.send(frame)
            pos = end


async def hand_written(size: int, conns: int, depth: int, rounds: int) -> float:
    """µs per request through the hand-written bolt proxy, fed like :func:`proxied`."""
    proto = load_protocols()["bolt"]
    template = request_template(proto, size)
    up = HandUp(MemoryTransport())
    clients = []
    for _ in range(conns):
        reads = []
        for k in range(depth):
            template.set_request_id(k + 1)
            reads.append(template.encode())
        clients.append((HandDown(MemoryTransport(), up), b"".join(reads)))
    spent = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for down, data in clients:
            down.data_received(data)
        await turn()
        t1 = time.perf_counter()
        reply = answers(proto, up.transport.take())
        t2 = time.perf_counter()
        up.data_received(reply)
        await turn()
        spent += (t1 - t0) + (time.perf_counter() - t2)
        for down, _ in clients:
            assert down.transport.take()
    return spent / (rounds * conns * depth) * 1e6


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3000)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--only", default=None)
    p.add_argument("--profile", action="store_true", help="cProfile the proxied runs")
    args = p.parse_args()
    install_loop()
    print(f"{args.connections} clients × {args.depth} requests per read, {args.rounds} rounds; "
          "µs of CPU per request (request in → answer out), no sockets")  # fmt: skip
    print(f"{'case':12} {'protoc-x µs':>12} {'hand µs':>12} {'x / hand':>10}")
    for name, protocol, size, _ in CASES:
        if args.only and args.only not in name:
            continue
        run = lambda: proxied(protocol, size, args.connections, args.depth, args.rounds)  # noqa
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(run())
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        x = min(asyncio.run(run()) for _ in range(3))
        if protocol == "bolt":
            h = min(
                asyncio.run(hand_written(size, args.connections, args.depth, args.rounds))
                for _ in range(3)
            )
            print(f"{name:12} {x:12.2f} {h:12.2f} {x / h:9.2f}x", flush=True)
        else:
            print(f"{name:12} {x:12.2f} {'—':>12} {'':>10}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
