"""protoc-x against a minimal uvloop L4 relay, side by side in one run.

For each case (bolt 128 B and 1 KiB, dubbo, thrift, memcached against a real memcached) it
starts the upstream, the relay and `protoc-x run` (routing by service, one filter configured),
then runs the load generator against the upstream directly, through the relay and through
protoc-x, and prints requests/s, latency percentiles and the protoc-x / relay ratio.

    python benchmarks/proxy_bench.py [--duration 4] [--connections 16] [--depth 8] [--only bolt]
        [--rounds 3]           # relay and protoc-x take turns this many times (medians reported)
        [--workers N]          # protoc-x with N worker processes
        [--latency]            # also: p99 added latency vs direct at half the measured maximum
                               # (the relay's added p99 at that rate as the baseline)
        [--idle 10000]         # also: RSS per idle downstream connection (held by a separate process)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable

from protoc_x.demo import free_port, wait_port  # noqa: E402

CASES = [
    # name, protocol, request bytes, upstream kind
    ("bolt 128 B", "bolt", 128, "serve"),
    ("bolt 1 KiB", "bolt", 1024, "serve"),
    ("dubbo", "dubbo", 0, "serve"),
    ("thrift", "thrift", 128, "serve"),
    ("memcached", "memcached", 64, "memcached"),
]


def start(args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw
    )


def config(protocol: str, listen: int, upstream: int, workers_note: str = "") -> str:
    # the default shape of a real config: routing by service (a domain match) and method (a
    # path), one filter (a rate limit that never limits), metrics on, no access log
    return json.dumps({
        "listeners": [{"name": "bench", "address": f"127.0.0.1:{listen}", "protocol": protocol,
                       "route_config": "r", "stream_filters": [{"name": "local_rate_limit",
                       "config": {"tokens_per_second": 10_000_000, "burst": 10_000_000}}]}],
        "route_configs": [{"name": "r", "virtual_hosts": [
            {"name": "svc", "domains": ["com.acme.*", "Hello.*", "console"],
             "routes": [{"match": {"path": "/sayHello"}, "route": {"cluster": "up"}},
                        {"match": {"prefix": "/"}, "route": {"cluster": "up"}}]},
            {"name": "any", "domains": ["*"],
             "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]}],
        "clusters": [{"name": "up", "endpoints": [f"127.0.0.1:{upstream}"],
                      "circuit_breakers": {"max_pending_requests": 100000, "max_requests": 100000}}],
    })  # fmt: skip


def load(protocol, port, size, args, rate=None) -> dict:
    extra = ["--rate", str(rate)] if rate else []
    out = subprocess.run(
        [PY, str(ROOT / "benchmarks" / "loadgen.py"), protocol, "--target", f"127.0.0.1:{port}",
         "--connections", str(args.connections), "--depth", str(args.depth), "--size", str(size),
         "--duration", str(args.duration), "--json", *extra],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The worker processes of ``protoc-x run --workers N`` (none with one worker)."""
    time.sleep(0.5)  # the workers are forked once the config is checked
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_memory(port: int, pid: int, count: int) -> float:
    """KiB of proxy RSS per idle downstream connection, ``count`` held by a child process."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 1000)), hard))
    time.sleep(0.5)  # the proxy settles after start
    before = rss_kib(pid)  # (before the holder starts connecting)
    holder = subprocess.Popen(
        [PY, "-c", f"""
import socket, sys, time
socks = []
for _ in range({count}):
    socks.append(socket.create_connection(("127.0.0.1", {port})))
print("ready", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    holder.stdout.readline()
    time.sleep(1.0)
    after = rss_kib(pid)
    holder.stdin.close()
    holder.wait(10)
    return (after - before) / count


def run_case(name, protocol, size, upstream_kind, args, tmp: Path) -> dict:
    up, relay_port, proxy_port = free_port(), free_port(), free_port()
    procs = []
    try:
        if upstream_kind == "memcached":
            cmd = [shutil.which("memcached") or "memcached", "-B", "binary", "-p", str(up), "-U", "0",
                   "-l", "127.0.0.1", "-t", "1"]  # fmt: skip
            if os.geteuid() == 0:
                cmd += ["-u", "root"]
            procs.append(start(cmd))
        else:
            procs.append(
                start([PY, "-m", "protoc_x.cli", "serve", protocol, "--listen", f"127.0.0.1:{up}"])
            )
        wait_port(up)
        procs.append(start([PY, str(ROOT / "benchmarks" / "relay.py"), "--listen",
                            f"127.0.0.1:{relay_port}", "--upstream", f"127.0.0.1:{up}"]))  # fmt: skip
        cfg = tmp / f"{protocol}.json"
        cfg.write_text(config(protocol, proxy_port, up))
        proxy = start([PY, "-m", "protoc_x.cli", "run", str(cfg), "--workers", str(args.workers)])
        procs.append(proxy)
        wait_port(relay_port)
        wait_port(proxy_port)
        result = {"case": name}
        # The machine's speed drifts between runs (a shared VM): relay and protoc-x take turns,
        # ``--rounds`` times, and each keeps its median run; the ratio is the median of the
        # rounds' ratios. CPU per request is the process's CPU time over the requests it carried.
        pids = {"relay": [procs[-2].pid], "protoc-x": [proxy.pid] + children(proxy.pid)}
        runs: dict[str, list] = {"direct": [], "relay": [], "protoc-x": []}
        for i in range(args.rounds):
            for label, port in (("direct", up), ("relay", relay_port), ("protoc-x", proxy_port)):
                if label == "direct" and i:
                    continue
                before = sum(cpu_seconds(pid) for pid in pids.get(label, []))
                r = load(protocol, port, size, args)
                spent = sum(cpu_seconds(pid) for pid in pids.get(label, [])) - before
                r["cpu_us"] = spent / r["requests"] * 1e6 if label in pids else None
                runs[label].append(r)
        for label, rs in runs.items():
            result[label] = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
        ratios = sorted(x["rps"] / r["rps"] for x, r in zip(runs["protoc-x"], runs["relay"]))
        result["ratio"] = ratios[len(ratios) // 2]
        result["ratios"] = ratios
        if args.latency:
            # p99 at half of protoc-x's maximum, for direct, the relay and protoc-x in turns;
            # each keeps its median run (the VM's scheduling makes single runs noisy)
            half = result["protoc-x"]["rps"] / 2
            slow: dict[str, list] = {"direct": [], "relay": [], "protoc-x": []}
            for _ in range(args.rounds):
                for label, port in (
                    ("direct", up),
                    ("relay", relay_port),
                    ("protoc-x", proxy_port),
                ):
                    slow[label].append(load(protocol, port, size, args, rate=half))
            for label, rs in slow.items():
                result[f"{label}@half"] = sorted(rs, key=lambda r: r["p99_ms"])[len(rs) // 2]
        if args.idle and args.workers == 1:
            # a fresh proxy: one that carried load has freed memory to reuse, which hides the cost
            idle_port = free_port()
            cfg.write_text(config(protocol, idle_port, up))
            fresh = start([PY, "-m", "protoc_x.cli", "run", str(cfg)])
            procs.append(fresh)
            wait_port(idle_port)
            result["idle_kib"] = idle_memory(idle_port, fresh.pid, args.idle)
        return result
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=4)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--only", default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="relay and protoc-x runs, taking turns")
    p.add_argument("--latency", action="store_true")
    p.add_argument("--idle", type=int, default=0)
    args = p.parse_args()
    print(f"{args.connections} connections × {args.depth} in flight, {args.duration:.0f} s per run, "
          f"{os.cpu_count()} CPUs; load generator, relay/proxy and upstream share them")  # fmt: skip
    print(f"{'case':12} {'B':>5} {'direct r/s':>11} {'relay r/s':>10} {'protoc-x r/s':>13} "
          f"{'x/relay':>8} {'p50 ms':>7} {'p99 ms':>7} {'relay p99':>9} {'CPU µs/req relay':>16} "
          f"{'protoc-x':>8}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, protocol, size, kind in CASES:
            if args.only and args.only not in name:
                continue
            r = run_case(name, protocol, size, kind, args, Path(tmp))
            d, rl, x = r["direct"], r["relay"], r["protoc-x"]
            print(f"{name:12} {x['request_bytes']:5} {d['rps']:11,.0f} {rl['rps']:10,.0f} {x['rps']:13,.0f} "
                  f"{r['ratio']:7.2f}x {x['p50_ms']:7.3f} {x['p99_ms']:7.3f} {rl['p99_ms']:9.3f} "
                  f"{rl['cpu_us']:16.1f} {x['cpu_us']:8.1f}", flush=True)  # fmt: skip
            print("    ratios of the rounds: " + ", ".join(f"{v:.2f}" for v in r["ratios"]))
            if args.latency:
                dh, rh, xh = r["direct@half"], r["relay@half"], r["protoc-x@half"]
                print(f"    at {xh['rps']:,.0f} req/s (half of protoc-x's maximum), p99: direct "
                      f"{dh['p99_ms']:.3f} ms, relay {rh['p99_ms']:.3f} ms (adds "
                      f"{rh['p99_ms'] - dh['p99_ms']:.3f}), protoc-x {xh['p99_ms']:.3f} ms (adds "
                      f"{xh['p99_ms'] - dh['p99_ms']:.3f})", flush=True)  # fmt: skip
            if "idle_kib" in r:
                print(
                    f"    {args.idle} idle connections: {r['idle_kib']:.1f} KiB of RSS each",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
