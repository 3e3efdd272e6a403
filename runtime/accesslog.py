"""Access logs: one line per request, text or JSON Lines, to stderr ("-") or a file."""

from __future__ import annotations

import datetime
import json
import sys

KEYS = ("time", "listener", "protocol", "service", "method", "cluster", "upstream", "code",
        "status", "duration_ms")  # fmt: skip


class AccessLog:
    def __init__(self, path: str, fmt: str):
        self.json = fmt == "json"
        self.stream = sys.stderr if path == "-" else open(path, "a", buffering=1, encoding="utf-8")
        self.owned = path != "-"

    def write(
        self, listener, protocol, service, method, cluster, upstream, code, status, ms
    ) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        values = (
            now,
            listener,
            protocol,
            service,
            method,
            cluster,
            upstream,
            code,
            status,
            round(ms, 3),
        )
        if self.json:
            line = json.dumps(dict(zip(KEYS, values)), separators=(",", ":"))
        else:
            line = " ".join(f"{k}={'-' if v is None else v}" for k, v in zip(KEYS, values))
        self.stream.write(line + "\n")

    def close(self) -> None:
        if self.owned:
            self.stream.close()
