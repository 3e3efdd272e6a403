"""The `Capture` record: one whole frame as a real peer library put it on the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: the keys of `Capture.expect` that compare one for one with `protoc-x decode`'s view
VIEW_KEYS = (
    "request_id",
    "stream_type",
    "heartbeat",
    "status",
    "timeout_ms",
    "service",
    "method",
    "length",
)


@dataclass(frozen=True)
class Capture:
    """One whole frame as it appeared on the wire, and what it must mean.

    `expect` is known independently of any protoc-x codec: it is what the library was asked to
    send, what its own objects say they sent, or what the protocol's documentation fixes. Keys
    (those that apply): request_id, stream_type, heartbeat, status, timeout_ms, service, method,
    headers (subset, values as str), body or body_length, length. Some protocols add their own
    keys (documented in docs/peers.md).
    """

    name: str
    direction: str
    data: bytes
    expect: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction not in ("request", "response"):
            raise ValueError(f"direction must be request or response, not {self.direction!r}")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        # What the frame does not carry is null, as in `protoc-x decode`: a request has no
        # status, and a frame without a timeout field (or timeout attachment) has no timeout.
        if self.direction == "request":
            self.expect.setdefault("status", None)
        self.expect.setdefault("timeout_ms", None)

    def __repr__(self) -> str:  # keep pytest ids and failure output short
        return f"Capture({self.name!r}, {self.direction}, {len(self.data)} bytes)"
