"""get_headers() gives header names as strings (runtime.api: dict[str, str | None]), also when
a dubbo attachment's key is a hessian2 int, null or binary value (found by the contract fuzz,
3000 random examples: a mutated key became a Raw)."""

from __future__ import annotations

import struct


from protoc_x.generated import dubbo


def _s(text: str) -> bytes:
    return bytes((len(text),)) + text.encode()


def test_dubbo_header_names_are_strings():
    attachments = b"H" + b"\x91" + _s("a") + b"N" + _s("b") + b"\x22ab" + _s("c") + b"Z"
    body = _s("2.0.2") + _s("svc") + _s("1.0") + _s("m") + _s("") + attachments
    frame = dubbo.PROTOCOL.decode(
        bytes.fromhex("dabbc200") + struct.pack(">QI", 1, len(body)) + body
    )
    headers = frame.get_headers()
    assert all(isinstance(name, str) for name in headers), headers
    assert headers["version"] == "1.0"
