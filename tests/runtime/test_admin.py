"""The admin endpoint, every path of it, over real HTTP on 127.0.0.1 against a proxy carrying
real requests."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

from protoc_x import __version__

from .harness import client, eventually, free_port, proxy_running, recorder, run, simple_config
from .harness import no_errors_logged  # noqa: F401 (autouse: a test fails on any logged error)
from .test_pool import status
from .test_proxy_behaviour import bolt_request
from .test_reload import parsed

ROOT = Path(__file__).parents[2]
PATHS = ("/help", "/ready", "/metrics", "/stats", "/clusters", "/config_dump", "/server_info",
         "/healthcheck/fail", "/healthcheck/ok", "/drain_listeners", "/logging")  # fmt: skip


async def http(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.0\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def admin_config(port: int, up: int, admin: int, **cluster) -> dict:
    cfg = simple_config("bolt", port, [f"127.0.0.1:{up}"], cluster_extra=cluster)
    cfg["admin"] = {"address": f"127.0.0.1:{admin}"}
    return cfg


def test_help_ready_health_check_stats_clusters_config_and_server_info():
    async def scenario():
        up, port, admin = free_port(), free_port(), free_port()
        cfg = admin_config(port, up, admin, circuit_breakers={"max_requests": 2})
        async with (
            recorder("bolt", up, [], delay=lambda n: 0 if n < 3 else 30),
            proxy_running(cfg) as proxy,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", admin)
            writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
            head = (await reader.read()).partition(b"\r\n\r\n")[0]
            writer.close()
            assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head, head
            code, body = await http(admin, "/help")
            assert code == 200 and all(p.encode() in body for p in PATHS), body
            assert (await http(admin, "/nowhere"))[0] == 404
            assert await http(admin, "/ready") == (200, b"ready\n")

            # the health check: POST only; fail → /ready 503, ok → 200
            assert (await http(admin, "/healthcheck/fail"))[0] == 405
            assert (await http(admin, "/healthcheck/fail", "POST"))[0] == 200
            code, body = await http(admin, "/ready")
            assert code == 503 and b"health check" in body
            info = json.loads((await http(admin, "/server_info"))[1])
            assert info["health_check_failing"] is True and info["state"] == "LIVE"
            assert (await http(admin, "/healthcheck/ok", "POST"))[0] == 200
            assert (await http(admin, "/ready"))[0] == 200

            # requests: three answered, two held by a slow upstream (the breaker is full)
            c = await client("bolt", port)
            for i in range(3):
                assert status(await c.call(bolt_request(i + 1, method="hello"))) == 200
            held = [c.send(bolt_request(10 + i)) for i in range(2)]
            await eventually(lambda: proxy.clusters["up"].active == 2)

            code, body = await http(admin, "/stats?filter=^protocx_requests_total")
            lines = body.decode().splitlines()
            assert code == 200 and lines, body
            assert all(line.startswith("protocx_requests_total{") for line in lines)
            assert any('method="hello"' in line and line.endswith(": 3") for line in lines), lines
            code, body = await http(admin, "/stats")
            assert b'protocx_downstream_connections{listener="main"}: 1' in body
            stats = json.loads((await http(admin, "/stats?format=json&filter=pool_active"))[1])
            assert {"name": 'protocx_pool_active_requests{cluster="up"}', "value": 2.0} in stats[
                "stats"
            ]
            assert (await http(admin, "/stats?filter=("))[0] == 400

            code, body = await http(admin, "/clusters")
            text = body.decode().splitlines()
            assert f"up::127.0.0.1:{up}::cx_active::1" in text
            assert f"up::127.0.0.1:{up}::rq_active::2" in text
            assert f"up::127.0.0.1:{up}::health::healthy" in text
            assert f"up::127.0.0.1:{up}::weight::1" in text
            assert "up::circuit_breakers::open::true" in text
            assert "up::rq_active::2" in text
            clusters = json.loads((await http(admin, "/clusters?format=json"))[1])["clusters"]
            (up_cluster,) = clusters
            assert up_cluster["circuit_breakers"] == {
                "max_requests": 2, "max_pending_requests": 1024, "open": True
            }  # fmt: skip
            assert up_cluster["endpoints"][0]["cx_active"] == 1

            dump = json.loads((await http(admin, "/config_dump"))[1])
            assert dump["version_info"] == "1" and dump["listeners"][0]["name"] == "main"
            await proxy.reload(parsed(admin_config(port, up, admin)), proxy_protocols(proxy))
            dump = json.loads((await http(admin, "/config_dump"))[1])
            assert dump["version_info"] == "2" and dump["clusters"][0]["circuit_breakers"] is None

            info = json.loads((await http(admin, "/server_info"))[1])
            assert info["version"] == __version__
            assert info["workers"] == 1 and info["config_version"] == "2"
            assert info["listeners"] == [{"name": "main", "address": f"127.0.0.1:{port}"}]
            assert info["uptime_current_epoch"] >= 0
            for f in held:
                f.cancel()

    run(scenario())


def proxy_protocols(proxy) -> dict:
    return {p.name: p for listener in proxy.listeners for p in listener.protocols}


def test_logging_levels_are_listed_and_set():
    async def scenario():
        up, port, admin = free_port(), free_port(), free_port()
        logger = logging.getLogger("protoc_x")
        before = logger.level
        try:
            async with proxy_running(admin_config(port, up, admin)):
                code, body = await http(admin, "/logging")
                assert code == 200 and b"protoc_x: " in body
                assert (await http(admin, "/logging?level=debug"))[0] == 405  # (GET lists only)
                code, body = await http(admin, "/logging?protoc_x=debug", "POST")
                assert code == 200 and b"protoc_x: debug" in body
                assert logger.getEffectiveLevel() == logging.DEBUG
                code, _ = await http(admin, "/logging?level=error", "POST")
                assert code == 200 and logger.getEffectiveLevel() == logging.ERROR
                assert (await http(admin, "/logging?level=loud", "POST"))[0] == 400
                assert (await http(admin, "/logging?nobody=info", "POST"))[0] == 400
                assert (await http(admin, "/logging", "POST"))[0] == 400
                assert (
                    logger.getEffectiveLevel() == logging.ERROR
                ), "a refused change changes nothing"
        finally:
            logger.setLevel(before)
            logging.getLogger().setLevel(logging.WARNING)

    run(scenario())


def test_drain_listeners_answers_what_is_in_flight_then_closes_and_refuses_new_ones():
    async def scenario():
        up, port, admin = free_port(), free_port(), free_port()
        async with (
            recorder("bolt", up, [], delay=0.3),
            proxy_running(admin_config(port, up, admin)) as proxy,
        ):
            c = await client("bolt", port)
            flying = c.send(bolt_request(1))
            await eventually(lambda: proxy.clusters["up"].active == 1)
            assert (await http(admin, "/drain_listeners"))[0] == 405
            assert (await http(admin, "/drain_listeners", "POST"))[0] == 200
            code, body = await http(admin, "/ready")
            assert (code, body) == (503, b"draining\n")
            info = json.loads((await http(admin, "/server_info"))[1])
            assert info["state"] == "DRAINING"
            try:
                await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                pass
            else:
                raise AssertionError("a drained listener accepted a connection")
            assert status(await flying) == 200
            assert await eventually(lambda: c.conn.closed), "closed once answered"
            try:
                await proxy.reload(parsed(admin_config(port, up, admin)), proxy_protocols(proxy))
            except RuntimeError as e:
                assert "draining" in str(e)
            else:
                raise AssertionError("a drained proxy took a new config")

    run(scenario())


def test_log_level_option(tmp_path):
    cfg = simple_config("bolt", free_port(), [f"127.0.0.1:{free_port()}"])
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    for level, says in (("warning", False), ("debug", True)):
        proc = subprocess.Popen(
            [sys.executable, "-m", "protoc_x.cli", "run", str(path), "--log-level", level],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            run(_wait_port(cfg))
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert ("listener main" in err) == says, err
    bad = subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", "run", str(path), "--log-level", "loud"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "--log-level" in bad.stderr


async def _wait_port(cfg: dict) -> None:
    port = int(cfg["listeners"][0]["address"].rpartition(":")[2])
    for _ in range(300):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("the proxy did not start")
