"""The admin endpoint: ``/metrics`` (Prometheus text), ``/ready``, ``/config_dump`` (the
effective config as JSON). A deliberately small HTTP/1.0 server on the proxy's event loop."""

from __future__ import annotations

import asyncio
import json
import logging

log = logging.getLogger("protoc_x")


class AdminServer:
    def __init__(self, proxy, host: str, port: int):
        self.proxy = proxy
        self.host = host
        self.port = port
        self.server: asyncio.AbstractServer | None = None

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
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            try:
                status, ctype, body = self.route(path)
            except Exception:  # a bug must cost this answer only, and say so
                log.exception("admin: internal error answering %s", path)
                status, ctype, body = "500 Internal Server Error", "text/plain", b"internal error\n"
            head = (f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n")  # fmt: skip
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4; charset=utf-8", self.proxy.metrics.text()
        if path == "/ready":
            if self.proxy.draining:
                return "503 Service Unavailable", "text/plain", b"draining\n"
            return "200 OK", "text/plain", b"ready\n"
        if path == "/config_dump":
            body = json.dumps(self.proxy.config.model_dump(mode="json"), indent=2).encode()
            return "200 OK", "application/json", body
        return "404 Not Found", "text/plain", b"not found\n"
