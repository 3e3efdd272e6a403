"""Frames sized by parsing: Thrift's buffered transport (thrift_unframed, where a message ends
with its struct) against the framed transport (thrift, where a length says where it ends), in
the same run, on the same call: what the connection does with a message that arrived whole
(decode: the unframed one measures the message, then reads it), and one walk of the struct
alone (the floor for a message that announces no length).

The struct is Calc.describe's arguments as thrift's binary protocol writes them: a list<i32>
of N items and a map<string, i64> of N entries. Prints µs per message and unframed / framed.
Run: make bench (or .venv/bin/python benchmarks/measured_bench.py [--rounds K]).
"""

from __future__ import annotations

import argparse
import struct
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protoc_x.generated.thrift import PROTOCOL as FRAMED  # noqa: E402
from protoc_x.generated.thrift_unframed import PROTOCOL as UNFRAMED  # noqa: E402
from protoc_x.runtime.api import measured  # noqa: E402
from protoc_x.runtime.fieldtypes import thrift  # noqa: E402


def arguments(n: int) -> bytes:
    """{2: list<i32> of n, 3: map<string, i64> of n}, then STOP."""
    out = bytearray(b"\x0f\x00\x02\x08" + struct.pack(">i", n))
    out += b"".join(struct.pack(">i", i) for i in range(n))
    out += b"\x0d\x00\x03\x0b\x0a" + struct.pack(">i", n)
    for i in range(n):
        key = f"k{i}".encode()
        out += struct.pack(">i", len(key)) + key + struct.pack(">q", i)
    return bytes(out + b"\x00")


def per_call(fn, rounds: int) -> float:
    return min(timeit.repeat(fn, number=rounds, repeat=5)) / rounds * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2000, help="calls per timing (small structs)")
    args = ap.parse_args()
    walk = thrift.TYPES["struct"]()
    print(f"{'message':>24} {'unframed us':>12} {'framed us':>10} {'ratio':>7} {'one walk us':>12}")
    for n in (1, 50, 500):
        body = arguments(n)
        name = b"describe"
        unframed = struct.pack(">Ii", 0x80010001, len(name)) + name + struct.pack(">i", 7) + body
        framed = struct.pack(">I", len(unframed)) + unframed
        assert UNFRAMED.decode(unframed, 0).length == len(unframed)
        assert FRAMED.decode(framed, 0).length == len(framed)
        k = max(20, args.rounds // max(1, n // 10))
        assert measured(UNFRAMED.measure(unframed, 0)) == len(unframed)
        tu = per_call(lambda: UNFRAMED.decode(unframed, 0), k)
        tf = per_call(lambda: FRAMED.decode(framed, 0), k)
        tw = per_call(lambda: walk.read(body, 0, len(body)), k)
        label = f"{len(unframed)} B, {n} + {n} values"
        print(f"{label:>24} {tu:12.2f} {tf:10.2f} {tu / tf:6.1f}x {tw:12.2f}")


if __name__ == "__main__":
    main()
