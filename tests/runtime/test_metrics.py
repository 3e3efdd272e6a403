"""Metrics and access logs: request durations from a high-resolution clock (sub-millisecond
in the access log and in the histogram), and `/metrics` under `protoc-x run --workers 2`
summing every counter and gauge over the workers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from bisect import bisect_left
from types import SimpleNamespace

from prometheus_client import generate_latest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from protoc_x.demo import wait_port
from protoc_x.runtime.metrics import BUCKETS, Cell, Metrics

from .harness import (
    client,
    config,
    free_port,
    proxy_running,
    recorder,
    run,
    upstream,
    wait_listening,
)
from .test_proxy_behaviour import BOLT, bolt_request


def parse(text: str) -> dict:
    """Prometheus text as {(sample name, sorted labels): value}, ``le`` as a number."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if "le" in labels:
                labels["le"] = float(labels["le"])
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def scrape(admin: int) -> dict:
    """/metrics, parsed."""
    return parse(
        urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    )


@given(st.lists(st.sampled_from(BUCKETS) | st.floats(0, 20, allow_nan=False), max_size=30))
def test_a_cell_counts_each_duration_in_the_bucket_bisect_left_gives(durations):
    """(compiled, the cell's counts and bucket search are C: the same buckets as bisect, a
    bound itself included in its bucket, the sum exact)"""
    cell = Cell("S", "m", "up", 200)
    expected = [0] * (len(BUCKETS) + 1)
    for seconds in durations:
        cell.add(seconds)
        expected[bisect_left(BUCKETS, seconds)] += 1
    assert list(cell.counts) == expected
    assert cell.seconds == sum(durations, 0.0)


def test_a_connections_answers_are_counted_by_their_own_labels():
    """A connection remembers the cell of its last answer: answers on one connection that
    change only their code (a timeout), only their cluster (a header route), their method or
    their service each count under their own labels."""
    # (service, method, to cluster two by header, answered too late)
    plan = [
        ("a.A", "m", False, False),
        ("a.A", "m", False, False),
        ("b.B", "m", False, False),
        ("a.A", "n", False, False),
        ("a.A", "m", False, True),
        ("a.A", "m", False, False),
        ("a.A", "m", True, False),
        ("a.A", "m", False, False),
        ("z.Z", "m", False, False),
        ("b.B", "m", False, True),
        ("b.B", "m", False, True),
        ("b.B", "m", False, False),
    ]
    # the requests cluster one sees, in order: which it answers too late
    late = {n for n, step in enumerate(s for s in plan if s[0] != "z.Z" and not s[2]) if step[3]}

    async def scenario():
        up1, up2, port, admin = free_port(), free_port(), free_port(), free_port()
        cfg = config(
            [{"name": "edge", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r"}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["a.*", "b.*"], "routes": [
                {"match": {"headers": [{"name": "to", "exact": "two"}]}, "route": {"cluster": "two"}},
                {"match": {"prefix": "/"}, "route": {"cluster": "one"}}]}]}],
            [{"name": "one", "endpoints": [f"127.0.0.1:{up1}"]},
             {"name": "two", "endpoints": [f"127.0.0.1:{up2}"]}],
            admin={"address": f"127.0.0.1:{admin}"},
        )  # fmt: skip
        seen: list = []
        slow = recorder("bolt", up1, seen, delay=lambda n: 0.5 if n in late else 0.0)
        async with slow, upstream("bolt", up2), proxy_running(cfg):
            c = await client("bolt", port)
            codes = []
            for i, (service, method, two, _) in enumerate(plan):
                headers = {"to": "two"} if two else {}
                request = bolt_request(i + 1, service=service, method=method, **headers)
                request.timeout = 100  # (ms: the late answers come after 500)
                codes.append(BOLT.runtime_status((await c.call(request)).get_status()))
            c.close()
            return codes, await asyncio.get_running_loop().run_in_executor(None, scrape, admin)

    codes, metrics = run(scenario())
    assert codes == [200] * 4 + [504] + [200] * 3 + [404, 504, 504, 200]
    counted = {
        (dict(k)["service"], dict(k)["method"], dict(k)["cluster"], dict(k)["code"]): v
        for (name, k), v in metrics.items()
        if name == "protocx_requests_total"
    }
    assert counted == {
        ("a.A", "m", "one", "200"): 4,
        ("a.A", "m", "one", "504"): 1,
        ("a.A", "m", "two", "200"): 1,
        ("a.A", "n", "one", "200"): 1,
        ("b.B", "m", "one", "200"): 2,
        ("b.B", "m", "one", "504"): 2,
        ("z.Z", "m", "", "404"): 1,
    }
    count = metrics[("protocx_request_duration_seconds_count", (("cluster", "one"),
                     ("listener", "edge"), ("protocol", "bolt")))]  # fmt: skip
    assert count == 10


def test_a_connections_answers_are_counted_by_their_own_status():
    """One connection's answers whose protocol statuses differ (the upstream's own errors)
    count each under the runtime code of its status, though the connection remembers the
    codes of the statuses it has seen."""
    plan = ["ok", "busy", "ok", "gone", "busy", "busy", "ok", "gone", "bad", "ok"]
    answer = {"ok": None, "busy": 503, "gone": 404, "bad": 400}

    async def scenario():
        up, port, admin = free_port(), free_port(), free_port()
        cfg = config(
            [{"name": "edge", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r"}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "one"}}]}]}],
            [{"name": "one", "endpoints": [f"127.0.0.1:{up}"]}],
            admin={"address": f"127.0.0.1:{admin}"},
        )  # fmt: skip
        seen: list = []
        code = lambda frame: answer[frame.get_method()]  # noqa: E731
        async with recorder("bolt", up, seen, code=code), proxy_running(cfg):
            c = await client("bolt", port)
            codes = []
            for i, method in enumerate(plan):
                reply = await c.call(bolt_request(i + 1, service="a.A", method=method))
                codes.append(BOLT.runtime_status(reply.get_status()))
            c.close()
            return codes, await asyncio.get_running_loop().run_in_executor(None, scrape, admin)

    codes, metrics = run(scenario())
    assert codes == [answer[m] or 200 for m in plan]
    counted = {
        (dict(k)["method"], dict(k)["code"]): v
        for (name, k), v in metrics.items()
        if name == "protocx_requests_total"
    }
    assert counted == {("ok", "200"): 4, ("busy", "503"): 3, ("gone", "404"): 2, ("bad", "400"): 1}


def test_fast_requests_report_sub_millisecond_durations(tmp_path):
    """The loop's clock (uvloop: milliseconds) made every duration 0, 1 or 2 ms: a fast request
    is now reported in microseconds, in the access log and in the histogram's small buckets."""
    n = 40
    log_path = tmp_path / "access.jsonl"

    async def scenario():
        up, port, admin = free_port(), free_port(), free_port()
        cfg = config(
            [{"name": "edge", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r",
              "access_log": {"path": str(log_path), "format": "json"}}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {}, "route": {"cluster": "up"}}]}]}],
            [{"name": "up", "endpoints": [f"127.0.0.1:{up}"]}],
            admin={"address": f"127.0.0.1:{admin}"},
        )  # fmt: skip
        async with upstream("bolt", up), proxy_running(cfg):
            c = await client("bolt", port)
            for i in range(n):
                assert (await c.call(bolt_request(i + 1))).get_status() == 0
            c.close()
            return await asyncio.get_running_loop().run_in_executor(None, scrape, admin)

    metrics = run(scenario())
    durations = [json.loads(line)["duration_ms"] for line in log_path.read_text().splitlines()]
    assert len(durations) == n
    # most fast requests take a fraction of a millisecond, reported as such (never 0, never a
    # whole number of milliseconds); a loaded machine may delay a few
    sub_ms = [d for d in durations if 0 < d < 1.0 and d != int(d)]
    assert len(sub_ms) >= n // 2, durations
    hist = {dict(k).get("le"): v for (name, k), v in metrics.items()
            if name.startswith("protocx_request_duration_seconds")}  # fmt: skip
    count = metrics[("protocx_request_duration_seconds_count", (("cluster", "up"),
                     ("listener", "edge"), ("protocol", "bolt")))]  # fmt: skip
    total = metrics[("protocx_request_duration_seconds_sum", (("cluster", "up"),
                     ("listener", "edge"), ("protocol", "bolt")))]  # fmt: skip
    assert count == n
    # the sub-millisecond buckets hold the sub-millisecond requests
    assert hist[0.001] >= len([d for d in durations if d < 0.999]) >= n // 2
    assert hist[0.0005] > 0
    # the histogram's sum is the access log's, to the log's rounding (1 µs a request), and is
    # no whole number of milliseconds
    assert abs(total * 1000 - sum(durations)) <= n * 0.0006
    assert total > 0 and abs(total * 1000 - round(total * 1000)) > 1e-6


def test_every_metric_of_every_worker_is_summed(tmp_path):
    """Each worker publishes every sample of its registry; worker 0's /metrics is their sum,
    whatever the metric (a counter, the histogram, a gauge)."""
    workers = [Metrics(worker=i, shared=str(tmp_path)) for i in range(3)]
    alone = []
    for i, m in enumerate(workers):
        for n in range(i + 1):
            m.request_done("edge", "bolt", "S", "m", "up", 200, 0.0002 * (n + 1))
        m.request_done("edge", "bolt", "S", "m", None, 429, 0.00003)
        for _ in range(i + 2):
            m.rate_limited(SimpleNamespace(listener="edge", protocol=SimpleNamespace(name="bolt")))
        m.retried("up")
        m.overflowed("up", "max_requests")
        m.child(m.downstream, "edge").inc(i + 1)
        m.child(m.upstream, "up", "127.0.0.1:1").inc()
        m.child(m.pending, "up").set_function(lambda i=i: i * 10)
        m.child(m.active, "up").set(i)
        alone.append(parse(generate_latest(m.registry).decode()))
        if i:
            m.publish()
    summed = parse(workers[0].text().decode())
    expected: dict = {}
    for values in alone:
        for key, value in values.items():
            if not key[0].endswith("_created"):  # (a counter's creation time: no sum)
                expected[key] = expected.get(key, 0) + value
    assert summed.keys() == expected.keys()
    assert all(abs(summed[k] - expected[k]) < 1e-12 for k in expected), (summed, expected)
    assert summed[("protocx_rate_limited_total", (("listener", "edge"), ("protocol", "bolt")))] == 9
    # a worker's later counts reach the sum at its next publication
    workers[2].request_done("edge", "bolt", "S", "m", "up", 200, 0.001)
    workers[2].publish()
    after = parse(workers[0].text().decode())
    key = ("protocx_requests_total", (("cluster", "up"), ("code", "200"), ("listener", "edge"),
           ("method", "m"), ("protocol", "bolt"), ("service", "S")))  # fmt: skip
    assert after[key] == summed[key] + 1 == 7


def test_two_workers_metrics_are_the_sum_of_what_each_worker_did(tmp_path):
    """`protoc-x run --workers 2` with a rate limit, a `protoc-x serve` upstream and many client
    connections (SO_REUSEPORT spreads connections over the workers): /metrics counts every
    request sent and every one refused, by code, and the gauges (open connections, requests in
    flight) are the sums over the workers; each worker's own counts, logged when it stops,
    add up to the same."""
    up, hold_up, port, hold, admin = (free_port() for _ in range(5))
    cfg = config(
        [{"name": "edge", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r",
          "stream_filters": [{"name": "local_rate_limit",
                              "config": {"tokens_per_second": 0.001, "burst": 40}}]},
         {"name": "hold", "address": f"127.0.0.1:{hold}", "protocol": "bolt", "route_config": "h"}],
        [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["com.acme.*"], "routes": [
            {"match": {}, "route": {"cluster": "up"}}]}]},
         {"name": "h", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {}, "route": {"cluster": "hold", "timeout_ms": 60_000}}]}]}],
        [{"name": "up", "endpoints": [f"127.0.0.1:{up}"]},
         {"name": "hold", "endpoints": [f"127.0.0.1:{hold_up}"]}],
        admin={"address": f"127.0.0.1:{admin}"}, drain_timeout_ms=300,
    )  # fmt: skip
    path = tmp_path / "proxy.json"
    path.write_text(json.dumps(cfg))
    cli = [sys.executable, "-m", "protoc_x.cli"]
    serve = subprocess.Popen(cli + ["serve", "bolt", "--listen", f"127.0.0.1:{up}"],
                             stderr=subprocess.DEVNULL)  # fmt: skip
    log_path = tmp_path / "proxy.log"
    scratch = tmp_path / "tmp"  # where the workers' metrics files go, and must go at exit
    scratch.mkdir()
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cli + ["run", str(path), "--workers", "2"], stderr=log_file,
                                env={**os.environ, "TMPDIR": str(scratch)})  # fmt: skip
    pairs, open_edge, held = 30, 10, 6
    try:
        for p in (up, port, hold, admin):
            wait_port(p)
        wait_listening(port, 2)  # both workers, or the first would take every connection

        async def scenario():
            loop = asyncio.get_running_loop()
            statuses = []
            for i in range(pairs):  # a connection each: the kernel spreads them over the workers
                c = await client("bolt", port)
                a = await c.call(bolt_request(2 * i + 1, service="com.acme.A:1.0"))
                b = await c.call(bolt_request(2 * i + 2, service="org.none:1"))
                statuses += [a.get_status(), b.get_status()]
                c.close()
            idle = [await client("bolt", port) for _ in range(open_edge)]
            seen: list = []
            async with recorder("bolt", hold_up, seen, answer=False) as server:
                waiting = [await client("bolt", hold) for _ in range(held)]
                answers = []
                for i, c in enumerate(waiting):
                    request = bolt_request(i + 1)
                    request.timeout = 0  # the route's: they wait as long as the test
                    answers.append(c.send(request))
                deadline = loop.time() + 10
                while True:  # a worker publishes its counts four times a second
                    metrics = await loop.run_in_executor(None, scrape, admin)
                    done = sum(v for (n, _), v in metrics.items() if n == "protocx_requests_total")
                    edge = metrics.get(("protocx_downstream_connections", (("listener", "edge"),)))
                    active = metrics.get(("protocx_pool_active_requests", (("cluster", "hold"),)))
                    if (done, edge, active) == (2 * pairs, open_edge, held):
                        break
                    if loop.time() > deadline:
                        break  # the assertions below say what differs
                    await asyncio.sleep(0.1)
                upstream_conns = len(server.conns)
                for answer in answers:
                    answer.cancel()  # never answered: not waited for
                for c in idle + waiting:
                    c.close()
            return statuses, metrics, upstream_conns

        statuses, metrics, upstream_conns = run(scenario())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        serve.terminate()
        serve.wait(10)
    log = log_path.read_text()
    assert proc.returncode == 0, log
    assert list(scratch.iterdir()) == []
    # what the clients saw: 40 tokens for the proxy (20 a worker), then 429 (bolt status 4);
    # a request that got a token went to `up` (status 0) or found no route (404, status 6)
    sent = {"200": statuses.count(0), "404": statuses.count(6), "429": statuses.count(4)}
    assert sum(sent.values()) == 2 * pairs and sent["429"] >= 2 * pairs - 40, statuses
    by_code: dict = {}
    for (name, labels), value in metrics.items():
        if name == "protocx_requests_total":
            code = dict(labels)["code"]
            by_code[code] = by_code.get(code, 0) + value
    assert by_code == sent
    limited = ("protocx_rate_limited_total", (("listener", "edge"), ("protocol", "bolt")))
    assert metrics[limited] == sent["429"]
    answered = sum(v for (n, k), v in metrics.items()
                   if n == "protocx_request_duration_seconds_count")  # fmt: skip
    assert answered == 2 * pairs
    # gauges: the sums over both workers
    assert metrics[("protocx_downstream_connections", (("listener", "edge"),))] == open_edge
    assert metrics[("protocx_downstream_connections", (("listener", "hold"),))] == held
    assert metrics[("protocx_pool_active_requests", (("cluster", "hold"),))] == held
    assert metrics[("protocx_upstream_connections",
                    (("cluster", "hold"), ("endpoint", f"127.0.0.1:{hold_up}")))] == upstream_conns  # fmt: skip
    # each worker's own counts (its log line at stop): both served, and they add up to /metrics
    per_worker = {}
    for worker, codes in re.findall(r"worker (\d) stopped; requests answered by code: (.*)", log):
        per_worker[worker] = dict(item.split("=") for item in codes.split() if "=" in item)
    assert sorted(per_worker) == ["0", "1"], log
    for code in ("200", "404", "429"):
        assert sum(int(w.get(code, 0)) for w in per_worker.values()) == sent[code], per_worker
    assert all(sum(int(w.get(c, 0)) for c in sent) > 0 for w in per_worker.values()), per_worker


def test_a_metrics_collection_that_fails_answers_500_and_admin_keeps_serving():
    class Broken:
        def collect(self):
            raise RuntimeError("broken collector")

    async def scenario():
        up, port, admin = free_port(), free_port(), free_port()
        cfg = config(
            [{"name": "edge", "address": f"127.0.0.1:{port}", "protocol": "bolt", "route_config": "r"}],
            [{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {}, "route": {"cluster": "up"}}]}]}],
            [{"name": "up", "endpoints": [f"127.0.0.1:{up}"]}],
            admin={"address": f"127.0.0.1:{admin}"},
        )  # fmt: skip
        async with proxy_running(cfg) as proxy:
            proxy.metrics.registry.register(Broken())
            loop = asyncio.get_running_loop()

            def get(path: str) -> tuple[int, bytes]:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=5) as r:
                        return r.status, r.read()
                except urllib.error.HTTPError as e:
                    return e.code, e.read()

            return [await loop.run_in_executor(None, get, p) for p in ("/metrics", "/ready")]

    assert run(scenario()) == [(500, b"internal error\n"), (200, b"ready\n")]
