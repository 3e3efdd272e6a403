"""A load generator built on the generated codecs.

    python benchmarks/loadgen.py PROTOCOL --target HOST:PORT [--connections 16] [--depth 8]
        [--size 128] [--duration 10] [--rate R] [--json]

Each connection keeps ``depth`` requests in flight (a request goes out as soon as the answer
to the one before it in its slot arrives), or, with ``--rate``, sends at a fixed total rate.
Requests are built once from the protocol's sample frame with a body of ``--size`` bytes and
encoded once per slot, so the generator spends its time on the network, not on encoding.
Reports requests/s and latency percentiles (p50/p90/p99/p99.9) from a log-linear histogram."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protoc_x.samples import SAMPLES  # noqa: E402
from protoc_x.runtime.api import Direction, PoolMode, StreamType  # noqa: E402
from protoc_x.loader import protocols as load_protocols  # noqa: E402
from protoc_x.runtime.network import FramedConnection, parse_address  # noqa: E402
from protoc_x.runtime.run import install_loop  # noqa: E402


class Histogram:
    """Latencies in µs, buckets of ~1 % width (log-linear), 1 µs .. 100 s."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0

    def add(self, seconds: float) -> None:
        us = max(1.0, seconds * 1e6)
        b = int(math.log(us) * 100)
        self.counts[b] = self.counts.get(b, 0) + 1
        self.n += 1

    def percentile(self, p: float) -> float:
        if not self.n:
            return float("nan")
        want = self.n * p / 100
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= want:
                return math.exp((b + 0.5) / 100) / 1000  # ms
        return float("nan")


def request_template(proto, size: int):
    """A request frame of the protocol with a ``size``-byte body (or close to it)."""
    for s in SAMPLES:
        if s.protocol != proto.name or s.direction == "response":
            continue
        d = Direction(s.direction) if s.direction else None
        frame = proto.decode(s.data, 0, d)
        if frame.get_stream_type() is not StreamType.REQUEST or frame.is_heartbeat():
            continue
        if proto.name == "memcached":  # a GET carries no value: load with SETs
            frame.opcode, frame.extras = 0x01, b"\0" * 8  # flags, expiry
        if proto.writable_headers and proto.name != "dubbo":
            # keep the routing headers only (service and method): small frames
            keep = {"service": frame.get_service(), "sofa_head_method_name": frame.get_method()}
            frame.headers = {k: v for k, v in keep.items() if v is not None}
        if proto.name != "dubbo":  # a dubbo body is the hessian2 invocation itself
            frame.set_body(b"")
            overhead = len(frame.encode())
            frame.set_body(bytes(i % 251 for i in range(max(0, size - overhead))))
        return frame
    raise LookupError(f"no request sample for {proto.name}")


class LoadConnection(FramedConnection):
    direction = Direction.RESPONSE

    def __init__(self, proto, frames: list[bytes], hist: Histogram, state: dict):
        super().__init__(proto)
        self.frames = frames  # one encoded request per slot; slot k carries request id k+1
        self.hist = hist
        self.state = state
        self.sent_at = [0.0] * len(frames)
        self.order: deque[int] = deque()  # slots in sending order (answers come in order)
        self.inflight = 0
        self.by_id = proto.pool_mode is PoolMode.MULTIPLEX and not proto.ordered
        self.clock = time.perf_counter

    def start(self, slots: int) -> None:
        for k in range(slots):
            self.fire(k)

    def fire(self, k: int) -> None:
        self.sent_at[k] = self.clock()
        self.inflight += 1
        if not self.by_id:
            self.order.append(k)
        self.send(self.frames[k])

    def on_frame(self, frame, buf, start, length) -> None:
        self.inflight -= 1
        if self.by_id:
            k = frame.get_request_id() - 1
        else:
            k = self.order.popleft()
        now = self.clock()
        self.hist.add(now - self.sent_at[k])
        self.state["done"] += 1
        if self.state["running"] and self.state["closed_loop"]:
            self.fire(k)

    def on_close(self, exc) -> None:
        self.state["lost"] += 1


async def run_load(proto, host, port, connections, depth, size, duration, rate=None) -> dict:
    loop = asyncio.get_running_loop()
    template = request_template(proto, size)
    multiplex = proto.pool_mode is PoolMode.MULTIPLEX
    hist = Histogram()
    state = {"done": 0, "running": True, "closed_loop": rate is None, "lost": 0}
    conns = []
    for _ in range(connections):
        frames = []
        for k in range(depth):
            template.set_request_id(k + 1 if multiplex else 0)
            frames.append(template.encode())
        _, conn = await loop.create_connection(
            lambda: LoadConnection(proto, frames, hist, state), host, port
        )
        conns.append(conn)
    warm = time.perf_counter()
    for c in conns:
        c.start(depth if rate is None else 0)
    if rate is not None:
        interval = connections / rate  # each connection sends every `interval` seconds

        async def pace(c, offset):
            await asyncio.sleep(offset)
            k = 0
            nxt = time.perf_counter()
            while state["running"]:
                if c.inflight < depth:
                    c.fire(k % depth)  # open loop: a slot is reused only once answered
                    k += 1
                nxt += interval
                await asyncio.sleep(max(0.0, nxt - time.perf_counter()))

        tasks = [
            asyncio.ensure_future(pace(c, i * interval / connections)) for i, c in enumerate(conns)
        ]
    await asyncio.sleep(min(1.0, duration / 5))  # warm-up: not counted
    hist.counts.clear()
    hist.n = 0
    base = state["done"]
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    elapsed = time.perf_counter() - t0
    done = state["done"] - base
    state["running"] = False
    if rate is not None:
        for t in tasks:
            t.cancel()
    await asyncio.sleep(0.2)
    for c in conns:
        c.close()
    return {
        "protocol": proto.name, "connections": connections, "depth": depth,
        "request_bytes": len(conns[0].frames[0]) if conns else 0,
        "rps": done / elapsed, "requests": state["done"], "p50_ms": hist.percentile(50), "p90_ms": hist.percentile(90),
        "p99_ms": hist.percentile(99), "p999_ms": hist.percentile(99.9), "lost": state["lost"],
        "warmup_s": t0 - warm,
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("protocol")
    p.add_argument("--target", required=True)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--rate", type=float, default=None, help="total requests/s (open loop)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    install_loop()
    proto = load_protocols()[args.protocol]
    host, port = parse_address(args.target)
    result = asyncio.run(
        run_load(
            proto, host, port, args.connections, args.depth, args.size, args.duration, args.rate
        )
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['protocol']} {result['request_bytes']} B, {args.connections}×{args.depth}: "
              f"{result['rps']:,.0f} req/s  p50 {result['p50_ms']:.3f} ms  p90 {result['p90_ms']:.3f}  "
              f"p99 {result['p99_ms']:.3f}  p99.9 {result['p999_ms']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
