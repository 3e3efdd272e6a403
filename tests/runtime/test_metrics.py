"""Metrics and access logs: request durations from a high-resolution clock (sub-millisecond
in the access log and in the histogram)."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .harness import client, config, free_port, proxy_running, run, upstream
from .test_proxy_behaviour import bolt_request


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
