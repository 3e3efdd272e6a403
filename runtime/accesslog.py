"""Access logs: one line per answered request, to stdout ("-") or a file, never to stderr (the
proxy's own log). A line is written from a format in Envoy's vocabulary: a text format string
with command operators (``%START_TIME% %PROTOCOL% %SERVICE% %RESPONSE_CODE% %DURATION%``...), or
a JSON object whose values are such strings. ``reopen()`` (SIGUSR1) opens the file again at its
path, for log rotation."""

from __future__ import annotations

import datetime
import json
import re
import sys
from typing import Any, Callable

#: the formats of ``format: text`` and ``format: json`` when no format string is given
DEFAULT_KEYS = {
    "time": "%START_TIME%",
    "listener": "%LISTENER%",
    "protocol": "%PROTOCOL%",
    "service": "%SERVICE%",
    "method": "%METHOD%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "upstream": "%UPSTREAM_HOST%",
    "code": "%RESPONSE_CODE%",
    "status": "%PROTOCOL_STATUS%",
    "duration_ms": "%DURATION%",
}
DEFAULT_TEXT = " ".join(f"{k}={v}" for k, v in DEFAULT_KEYS.items())


class Entry:
    """What one answered request gives its line: the client's connection, the stream, the
    runtime code, the protocol's status, seconds from its bytes arriving to its answer leaving,
    and the bytes of the answer (None: none sent)."""

    __slots__ = ("conn", "stream", "code", "status", "seconds", "answer", "now")

    def __init__(self, conn, stream, code, status, seconds: float, answer) -> None:
        self.conn = conn
        self.stream = stream
        self.code = code
        self.status = status
        self.seconds = seconds
        self.answer = answer
        self.now = datetime.datetime.now(datetime.timezone.utc)


def _start_time(arg: str | None) -> Callable[[Entry], Any]:
    if arg is None:
        return lambda e: e.now.isoformat(timespec="milliseconds")
    if arg == "":
        raise ValueError("START_TIME() needs a strftime format, or no parentheses")
    return lambda e: e.now.strftime(arg)


def _request_header(arg: str | None) -> Callable[[Entry], Any]:
    if not arg:
        raise ValueError("REQ needs a header name: %REQ(name)%")

    def header(e: Entry) -> Any:
        value = e.stream.header(arg)  # (a request of the fast lane is decoded for it)
        return value if value is None or isinstance(value, (str, int, float)) else str(value)

    return header


def _remote(e: Entry) -> Any:
    transport = e.conn.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not peer:
        return None
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _plain(getter: Callable[[Entry], Any]):
    def make(arg: str | None) -> Callable[[Entry], Any]:
        if arg is not None:
            raise ValueError("takes no argument")
        return getter

    return make


def _trace_id(e: Entry) -> str | None:
    """The request's trace id (32 hex digits), when the proxy traces it (runtime/tracing.py)."""
    span = e.stream.span
    return format(span.get_span_context().trace_id, "032x") if span is not None else None


#: command operator → (its argument, or None) → the value of an entry (None: "-" in text,
#: null in JSON)
OPERATORS: dict[str, Callable[[str | None], Callable[[Entry], Any]]] = {
    "START_TIME": _start_time,
    "LISTENER": _plain(lambda e: e.conn.listener.name),
    "PROTOCOL": _plain(lambda e: e.conn.proto.name),
    "SERVICE": _plain(lambda e: e.stream.service),
    "METHOD": _plain(lambda e: e.stream.method),
    "UPSTREAM_CLUSTER": _plain(lambda e: e.stream.cluster_name),
    "UPSTREAM_HOST": _plain(
        lambda e: e.stream.endpoint.endpoint if e.stream.endpoint is not None else None
    ),
    "RESPONSE_CODE": _plain(lambda e: e.code),
    "PROTOCOL_STATUS": _plain(lambda e: e.status),
    "DURATION": _plain(lambda e: round(e.seconds * 1000, 3)),
    "DOWNSTREAM_REMOTE_ADDRESS": _plain(_remote),
    "BYTES_RECEIVED": _plain(lambda e: e.stream.received),
    "BYTES_SENT": _plain(lambda e: len(e.answer) if e.answer is not None else 0),
    "REQUEST_ID": _plain(lambda e: e.stream.down_id),
    "TRACE_ID": _plain(_trace_id),
    "REQ": _request_header,
}

_OPERATOR = re.compile(r"%([A-Z_]+)(?:\(([^)]*)\))?(?::([0-9]+))?%")


def compile_format(text: str) -> list:
    """The parts of a format string: literal text, and getters for its operators (with
    Envoy's ``:N`` truncation). Raises ValueError naming the first operator it does not know,
    or a ``%`` that starts none."""
    parts: list = []
    pos = 0
    for m in _OPERATOR.finditer(text):
        if "%" in text[pos : m.start()]:
            bad = text[pos : m.start()]
            raise ValueError(f"'%' that starts no command operator in {bad!r}")
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        name, arg, limit = m.group(1), m.group(2), m.group(3)
        make = OPERATORS.get(name)
        if make is None:
            known = ", ".join(sorted(OPERATORS))
            raise ValueError(f"unknown command operator %{name}% (have: {known})")
        try:
            getter = make(arg)
        except ValueError as e:
            raise ValueError(f"%{name}%: {e}") from None
        parts.append((getter, int(limit) if limit else None))
        pos = m.end()
    if "%" in text[pos:]:
        raise ValueError(f"'%' that starts no command operator in {text[pos:]!r}")
    if pos < len(text):
        parts.append(text[pos:])
    return parts


def _value(part, entry: Entry) -> Any:
    getter, limit = part
    value = getter(entry)
    if limit is not None and value is not None:
        value = str(value)[:limit]
    return value


def _text(parts: list, entry: Entry) -> str:
    out = []
    for part in parts:
        if part.__class__ is str:
            out.append(part)
        else:
            value = _value(part, entry)
            out.append("-" if value is None else str(value))
    return "".join(out)


class AccessLog:
    def __init__(self, path: str, fmt: str = "text", text_format: str | None = None,
                 json_format: dict | None = None) -> None:  # fmt: skip
        self.path = path
        if json_format is None and fmt == "json" and text_format is None:
            json_format = DEFAULT_KEYS
        if json_format is not None:
            # a value that is one operator alone keeps its type (a number, null); any other is
            # text
            self.fields = [(key, compile_format(v)) for key, v in json_format.items()]
            self.parts = None
        else:
            line = DEFAULT_TEXT if text_format is None else text_format.rstrip("\n")
            self.parts = compile_format(line)
            self.fields = None
        self.owned = path != "-"
        self.stream = self.open()

    def open(self):
        if not self.owned:
            return sys.stdout
        return open(self.path, "a", buffering=1, encoding="utf-8")

    def write(self, conn, stream, code, status, seconds: float, answer) -> None:
        entry = Entry(conn, stream, code, status, seconds, answer)
        if self.fields is None:
            line = _text(self.parts, entry)
        else:
            record = {}
            for key, parts in self.fields:
                if len(parts) == 1 and parts[0].__class__ is not str:
                    record[key] = _value(parts[0], entry)
                else:
                    record[key] = _text(parts, entry)
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)
        self.stream.write(line + "\n")
        if not self.owned:
            self.stream.flush()

    def reopen(self) -> None:
        """Open the file at the path again (a rotation moved the old one away): the lines
        written so far are in the old file, the next ones in the new."""
        if self.owned:
            old, self.stream = self.stream, self.open()
            old.close()

    def close(self) -> None:
        if self.owned:
            self.stream.close()
