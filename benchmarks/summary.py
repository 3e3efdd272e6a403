"""`make bench`'s table: each of issue 12's measures with its baseline from the same run.

    python benchmarks/summary.py [--runs 3] [--duration 4] [--quick]

- pipeline: µs of CPU per request through a real Proxy without sockets, against the
  hand-written minimal bolt proxy fed the same bytes (``pipeline_bench.py``); ``--runs`` runs
  of each, taking turns, medians.
- sockets: requests/s through protoc-x against the minimal uvloop L4 relay
  (``proxy_bench.py``), relay and protoc-x taking turns ``--runs`` times (the ratio is the
  median of the turns' ratios); p99 added at half of protoc-x's maximum rate, minus what the
  relay adds at that rate; RSS per idle downstream connection; and bolt 128 B again with
  ``--workers 2``.

The config is the default shape of a real one (proxy_bench.config): routing by service and
method, one local_rate_limit filter, metrics on, no access log.

The table is of the runtime as installed (compiled, where the build could: setup.py); two more
rows give the pipeline and bolt 128 B on its Python source (PROTOC_X_PURE=1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import pipeline_bench  # noqa: E402
import proxy_bench  # noqa: E402
from protoc_x.runtime import compiled  # noqa: E402
from protoc_x.runtime.run import install_loop  # noqa: E402


def pipeline(runs: int, rounds: int) -> tuple[float, float]:
    """Median µs per request of protoc-x and of the hand-written proxy (bolt 128 B)."""
    install_loop()
    x, h = [], []
    for _ in range(runs):
        x.append(asyncio.run(pipeline_bench.proxied("bolt", 128, 16, 8, rounds)))
        h.append(asyncio.run(pipeline_bench.hand_written(128, 16, 8, rounds)))
    return statistics.median(x), statistics.median(h)


def pure_pipeline(runs: int, rounds: int) -> tuple[float, float]:
    """:func:`pipeline` in a process running the runtime's Python source."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import summary; "
            f"print(json.dumps(summary.pipeline({runs}, {rounds})))")  # fmt: skip
    env = dict(os.environ, PROTOC_X_PURE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    x, h = json.loads(out.stdout)
    return x, h


def sockets(case: str, args, workers: int = 1, latency=False, idle=0, pure=False) -> dict:
    name, protocol, size, kind = next(c for c in proxy_bench.CASES if c[0] == case)
    opts = argparse.Namespace(
        duration=args.duration, connections=16, depth=8, workers=workers, rounds=args.runs,
        latency=latency, idle=idle,
    )  # fmt: skip
    # (pure: every process the case starts runs the Python source)
    with mock.patch.dict(os.environ, {"PROTOC_X_PURE": "1"} if pure else {}):
        with tempfile.TemporaryDirectory() as tmp:
            return proxy_bench.run_case(name, protocol, size, kind, opts, Path(tmp))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=4)
    p.add_argument("--quick", action="store_true", help="1 run of 1 s each (a smoke test)")
    args = p.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 1
    rows = []

    def row(measure, x, base, value, target, ok):
        rows.append((measure, x, base, value, target, "yes" if ok else "no"))

    px, ph = pipeline(args.runs, 3000 if not args.quick else 300)
    b128 = sockets("bolt 128 B", args, latency=True, idle=10000 if not args.quick else 500)
    for case, target in (("bolt 128 B", 0.80), ("bolt 1 KiB", 0.75), ("dubbo", 0.65)):
        r = b128 if case == "bolt 128 B" else sockets(case, args)
        row(f"`proxy_bench` {case}, protoc-x / L4 relay req/s", f"{r['protoc-x']['rps']:,.0f}",
            f"{r['relay']['rps']:,.0f}", f"{r['ratio']:.2f}x", f"≥ {target:.2f}x",
            r["ratio"] >= target)  # fmt: skip
    row("`pipeline_bench` CPU per request, protoc-x / hand-written minimal",
        f"{px:.2f} µs", f"{ph:.2f} µs", f"{px / ph:.2f}x", "≤ 1.4x", px / ph <= 1.4)  # fmt: skip
    d, rl, x = b128["direct@half"], b128["relay@half"], b128["protoc-x@half"]
    added_x, added_relay = x["p99_ms"] - d["p99_ms"], rl["p99_ms"] - d["p99_ms"]
    row(f"p99 added at half of protoc-x's max rate ({x['rps']:,.0f} req/s), minus the relay's",
        f"+{added_x:.2f} ms", f"+{added_relay:.2f} ms", f"{added_x - added_relay:+.2f} ms",
        "≤ +0.3 ms", added_x - added_relay <= 0.3)  # fmt: skip
    row("RSS per idle downstream connection", f"{b128['idle_kib']:.1f} KiB", "—",
        f"{b128['idle_kib']:.1f} KiB", "≤ 4 KiB", b128["idle_kib"] <= 4)  # fmt: skip
    w2 = sockets("bolt 128 B", args, workers=2)
    rounds = 3000 if not args.quick else 300
    pure_x, pure_h = pure_pipeline(args.runs, rounds)
    pure_b = sockets("bolt 128 B", args, pure=True)
    row("the same on the Python source: `proxy_bench` bolt 128 B / relay",
        f"{pure_b['protoc-x']['rps']:,.0f}", f"{pure_b['relay']['rps']:,.0f}",
        f"{pure_b['ratio']:.2f}x", "—", pure_b["ratio"] >= 0.80)  # fmt: skip
    row("the same on the Python source: `pipeline_bench` / hand-written",
        f"{pure_x:.2f} µs", f"{pure_h:.2f} µs", f"{pure_x / pure_h:.2f}x", "—",
        pure_x / pure_h <= 1.4)  # fmt: skip
    runtime = "compiled (Cython)" if compiled() else "Python source"
    print(f"runtime: {runtime}; {args.runs} runs of each, medians; "
          f"{args.duration:.0f} s per socket run\n")  # fmt: skip
    print("| measure | protoc-x | baseline | ratio | target | met |")
    print("|---|---:|---:|---:|---:|:-:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\n`proxy_bench --workers 2`, bolt 128 B: protoc-x {w2['protoc-x']['rps']:,.0f} req/s, "
          f"relay {w2['relay']['rps']:,.0f} req/s ({w2['ratio']:.2f}x; one worker: "
          f"{b128['protoc-x']['rps']:,.0f} req/s, {b128['ratio']:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
