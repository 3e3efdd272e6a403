"""`protoc-x run --workers 2`: two processes share the listener (SO_REUSEPORT); /metrics sums
both; a local rate limit holds for the whole proxy; SIGTERM drains both and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from protoc_x.demo import wait_port

from .harness import client, free_port, run, simple_config, upstream, wait_listening
from .test_proxy_behaviour import bolt_request

ROOT = Path(__file__).parents[2]


def two_workers(cfg: dict, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """`protoc-x run --workers 2` on ``cfg`` (written to a file: its path is returned)."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "protoc_x.cli", "run", str(path), "--workers", "2"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, path


def test_two_workers_share_the_listener_metrics_and_rate_limit(tmp_path):
    up, port, admin = free_port(), free_port(), free_port()
    cfg = simple_config("bolt", port, [f"127.0.0.1:{up}"], listener_extra={"stream_filters": [
        {"name": "local_rate_limit", "config": {"tokens_per_second": 0.001, "burst": 40}}]})  # fmt: skip
    cfg["admin"] = {"address": f"127.0.0.1:{admin}"}
    proc, _ = two_workers(cfg, tmp_path)
    try:
        wait_listening(port, 2)  # both workers, or the first would take every connection
        wait_port(admin)

        async def traffic():
            statuses = []
            async with upstream("bolt", up):
                for i in range(60):  # a new connection each time: the kernel spreads them
                    c = await client("bolt", port)
                    statuses.append((await c.call(bolt_request(i + 1))).get_status())
                    c.close()
            return statuses

        statuses = run(traffic())
        # 40 tokens for the whole proxy, 20 per worker: never 40 per worker (which would let
        # all 60 through); fewer than 40 only when the kernel gave one worker under 20
        ok, limited = statuses.count(0), statuses.count(4)
        assert ok + limited == 60 and 30 <= ok <= 40, statuses
        time.sleep(1.2)  # the other worker publishes its counts four times a second
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
        )
        total = {}
        for family in text_string_to_metric_families(text):
            if family.name == "protocx_requests":
                for sample in family.samples:
                    if sample.name == "protocx_requests_total":
                        total[sample.labels["code"]] = (
                            total.get(sample.labels["code"], 0) + sample.value
                        )
        assert total == {"200": float(ok), "429": float(limited)}
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=15)[1]
    assert proc.returncode == 0, out


def test_sighup_reloads_every_worker(tmp_path):
    """The parent forwards SIGHUP: each worker reloads, and a listener the new config adds
    listens in both (SO_REUSEPORT), a removed one in neither; the workers keep running."""
    up, port, extra = free_port(), free_port(), free_port()
    cfg = simple_config("bolt", port, [f"127.0.0.1:{up}"])
    proc, path = two_workers(cfg, tmp_path)
    try:
        wait_listening(port, 2)
        more = json.loads(json.dumps(cfg))
        more["listeners"].append(dict(more["listeners"][0], name="extra",
                                      address=f"127.0.0.1:{extra}"))  # fmt: skip
        path.write_text(json.dumps(more))
        proc.send_signal(signal.SIGHUP)
        wait_listening(extra, 2)
        path.write_text(json.dumps(cfg))
        proc.send_signal(signal.SIGHUP)
        wait_listening(extra, 0, exactly=True)
        wait_listening(port, 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert err.count("reloaded:") == 4, err
