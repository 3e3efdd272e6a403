"""The admin endpoint, in Envoy's vocabulary: a small HTTP/1.0 server on the proxy's event loop
(``admin.address``; bind it to loopback). ``/help`` lists what it serves. Endpoints that change
the proxy's state take POST only (a crawler's GET never drains a sidecar)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Callable
from urllib.parse import parse_qsl

log = logging.getLogger("protoc_x")

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"  # (the text exposition format)

#: levels /logging sets, and --log-level takes
LEVELS = ("debug", "info", "warning", "error", "critical")


class Answer(Exception):
    """An HTTP answer other than 200 (a client's mistake), raised by an endpoint."""

    def __init__(self, status: str, text: str):
        super().__init__(text)
        self.status = status
        self.text = text


class AdminServer:
    def __init__(self, proxy, host: str, port: int):
        self.proxy = proxy
        self.host = host
        self.port = port
        self.server: asyncio.AbstractServer | None = None
        # path → (method, endpoint, help)
        self.endpoints: dict[str, tuple[str, Callable, str]] = {
            "/help": ("GET", self.help, "this list"),
            "/ready": ("GET", self.ready, "200 while serving; 503 when draining or failing its health check"),
            "/metrics": ("GET", self.metrics, "Prometheus text (the sum over workers)"),
            "/stats": ("GET", self.stats, "every metric sample, 'name{labels}: value' a line (?filter=REGEX, ?format=json)"),
            "/clusters": ("GET", self.clusters, "each cluster's breakers and counts, and each endpoint's connections, requests and health (?format=json)"),
            "/config_dump": ("GET", self.config_dump, "the config being served, as JSON, with its version"),
            "/server_info": ("GET", self.server_info, "version, state, uptime, workers, config version"),
            "/healthcheck/fail": ("POST", self.healthcheck_fail, "fail /ready from now on (take this proxy out of its load balancer's rotation)"),
            "/healthcheck/ok": ("POST", self.healthcheck_ok, "undo /healthcheck/fail"),
            "/drain_listeners": ("POST", self.drain_listeners, "stop accepting; connections close once their requests are answered; the process keeps running"),
            "/logging": ("POST", self.logging, "?level=LEVEL for every logger, or ?LOGGER=LEVEL; GET lists the levels"),
        }  # fmt: skip

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self.handle, self.host, self.port, reuse_address=True
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            method = parts[0] if parts else "GET"
            target = parts[1] if len(parts) >= 2 else "/"
            path, _, query = target.partition("?")
            try:
                status, ctype, body = self.route(method, path, dict(parse_qsl(query)))
            except Answer as a:
                status, ctype, body = a.status, TEXT, (a.text + "\n").encode()
            except Exception:  # a bug must cost this answer only, and say so
                log.exception("admin: internal error answering %s", path)
                status, ctype, body = "500 Internal Server Error", TEXT, b"internal error\n"
            head = (f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n")  # fmt: skip
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def route(self, method: str, path: str, query: dict) -> tuple[str, str, bytes]:
        found = self.endpoints.get(path)
        if found is None:
            raise Answer("404 Not Found", f"not found: {path} (GET /help lists what is)")
        wanted, endpoint, _ = found
        if method != wanted and not (path == "/logging" and method == "GET"):
            raise Answer("405 Method Not Allowed", f"{path} takes {wanted}")
        result = endpoint(method, query)  # JSON, text, or (status, content type, body)
        if isinstance(result, dict):
            return "200 OK", JSON, json.dumps(result, indent=2).encode()
        if isinstance(result, str):
            return "200 OK", TEXT, result.encode()
        return result

    # -- endpoints ------------------------------------------------------------------------
    def help(self, method, query) -> str:
        return "".join(
            f"{m:4} {path}: {text}\n" for path, (m, _, text) in sorted(self.endpoints.items())
        )

    def ready(self, method, query):
        proxy = self.proxy
        if proxy.draining or proxy.listeners_drained:
            return "503 Service Unavailable", TEXT, b"draining\n"
        if proxy.health_failing:
            return (
                "503 Service Unavailable",
                TEXT,
                b"failing its health check (/healthcheck/fail)\n",
            )
        if proxy.xds is not None and not proxy.xds.initialized.is_set():
            return "503 Service Unavailable", TEXT, b"initializing: waiting for the control plane\n"
        return "ready\n"

    def metrics(self, method, query) -> tuple[str, str, bytes]:
        return "200 OK", PROMETHEUS, self.proxy.metrics.text()

    def stats(self, method, query):
        from prometheus_client.parser import text_string_to_metric_families

        pattern = query.get("filter")
        try:
            wanted = re.compile(pattern) if pattern else None
        except re.error as e:
            raise Answer("400 Bad Request", f"filter: {e}") from None
        samples = {}
        for family in text_string_to_metric_families(self.proxy.metrics.text().decode()):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                name = f"{s.name}{{{labels}}}" if labels else s.name
                if wanted is None or wanted.search(name):
                    samples[name] = s.value
        if query.get("format") == "json":
            return {"stats": [{"name": k, "value": v} for k, v in sorted(samples.items())]}
        return "".join(f"{k}: {_number(v)}\n" for k, v in sorted(samples.items()))

    def clusters(self, method, query):
        now = asyncio.get_running_loop().time()
        out = []
        for cluster in self.proxy.clusters.values():
            endpoints = []
            weights = {str(e): getattr(e, "weight", 1) for e in cluster.config.endpoints}
            for endpoint in cluster.endpoints:
                pools = [p for p in cluster.pools.values() if p.endpoint == endpoint]
                healthy = all(p.unhealthy_until <= now for p in pools)
                endpoints.append({
                    "address": endpoint,
                    "weight": weights.get(endpoint, 1),
                    "health": "healthy" if healthy else "failed_connect",
                    "cx_active": sum(len(p.conns) for p in pools),
                    "rq_active": sum(p.active for p in pools),
                    "rq_pending": sum(len(p.waiting) for p in pools),
                })  # fmt: skip
            out.append({
                "name": cluster.name,
                "rq_active": cluster.active,
                "rq_pending": cluster.pending,
                "circuit_breakers": {
                    "max_requests": cluster.max_requests,
                    "max_pending_requests": cluster.max_pending,
                    "open": cluster.active >= cluster.max_requests
                    or cluster.pending >= cluster.max_pending,
                },
                "endpoints": endpoints,
            })  # fmt: skip
        if query.get("format") == "json":
            return {"clusters": out}
        lines = []
        for c in out:
            name, cb = c["name"], c["circuit_breakers"]
            lines += [f"{name}::circuit_breakers::{k}::{_number(v)}" for k, v in cb.items()]
            lines += [f"{name}::{k}::{c[k]}" for k in ("rq_active", "rq_pending")]
            for e in c["endpoints"]:
                lines += [f"{name}::{e['address']}::{k}::{e[k]}"
                          for k in ("cx_active", "rq_active", "rq_pending", "weight", "health")]  # fmt: skip
        return "".join(line + "\n" for line in lines)

    def config_dump(self, method, query) -> dict:
        proxy = self.proxy
        out = {
            **proxy.config.model_dump(mode="json"),
            "version_info": str(proxy.config_version),
            "last_updated": proxy.config_updated,
        }
        if proxy.xds is not None:  # what the config file says, and what the control plane sent
            out["static_resources"] = proxy.xds.static.model_dump(mode="json")
            out["dynamic_resources"] = proxy.xds.dump()
        return out

    def server_info(self, method, query) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        from . import compiled

        try:  # (the runtime imports nothing of the compiler's package: its metadata says)
            __version__ = version("protoc-x")
        except PackageNotFoundError:
            __version__ = "unknown"

        proxy = self.proxy
        state = "DRAINING" if proxy.draining or proxy.listeners_drained else "LIVE"
        return {
            "version": __version__,
            "state": state,
            "health_check_failing": proxy.health_failing,
            "uptime_current_epoch": round(time.monotonic() - proxy.started_at, 3),
            "workers": proxy.workers,
            "compiled_runtime": compiled(),
            "config_version": str(proxy.config_version),
            "listeners": [
                {"name": l.name, "address": str(l.config.address)} for l in proxy.listeners
            ],
        }

    def healthcheck_fail(self, method, query) -> str:
        self.proxy.health_failing = True
        log.warning("admin: health check set to fail")
        return "OK\n"

    def healthcheck_ok(self, method, query) -> str:
        self.proxy.health_failing = False
        log.warning("admin: health check set to pass")
        return "OK\n"

    def drain_listeners(self, method, query) -> str:
        self.proxy.drain_listeners()
        return "OK\n"

    def logging(self, method, query) -> str:
        loggers = {"": logging.getLogger()} | {
            name: logging.getLogger(name)
            for name in sorted(logging.root.manager.loggerDict)
            if name.startswith("protoc_x")
        }
        if method == "GET" and query:
            raise Answer("405 Method Not Allowed", "/logging changes levels by POST only")
        if method == "POST":
            if not query:
                raise Answer("400 Bad Request", "give ?level=LEVEL or ?LOGGER=LEVEL")
            changes = []
            for name, level in query.items():
                if level.lower() not in LEVELS:
                    raise Answer("400 Bad Request", f"unknown level {level!r} (have: {', '.join(LEVELS)})")  # fmt: skip
                if name == "level":
                    targets = list(loggers.values())
                elif name in loggers:
                    targets = [loggers[name]]
                else:
                    raise Answer("400 Bad Request", f"unknown logger {name!r} (GET /logging lists them)")  # fmt: skip
                changes.append((targets, getattr(logging, level.upper())))
            for targets, level in changes:
                for logger in targets:
                    logger.setLevel(level)
        return "".join(
            f"{name or 'root'}: {logging.getLevelName(logger.getEffectiveLevel()).lower()}\n"
            for name, logger in loggers.items()
        )


def _number(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
