"""The protocol engine: whether a set of codecs can share a listener, and choosing one per
connection from its first bytes. Loading codecs is the caller's (protoc_x.loader)."""

from __future__ import annotations

import itertools
from typing import Sequence

from .api import Match, XProtocol


def _byte_options(probe: tuple) -> list[dict[int, int]]:
    """Each value a probe accepts, as {absolute offset: byte}."""
    offset, width, order, values = probe
    return [
        {offset + i: b for i, b in enumerate(v.to_bytes(width, order, signed=v < 0))}
        for v in values
    ]


def can_both_match(a: XProtocol, b: XProtocol) -> bool:
    """True when some byte string satisfies every detection probe of both protocols."""
    probes = list(a.detect) + list(b.detect)
    choices = [_byte_options(p) for p in probes]
    if any(len(c) > 64 for c in choices) or len(probes) > 8:
        return True  # too wide to prove disjoint: treat as ambiguous
    for combo in itertools.product(*choices):
        merged: dict[int, int] = {}
        if all(
            merged.setdefault(off, byte) == byte for part in combo for off, byte in part.items()
        ):
            return True
    return False


def check_detectable(protocols: Sequence[XProtocol]) -> str | None:
    """Why this list cannot share a listener, or None when the first bytes always decide."""
    if len(protocols) < 2:
        return None
    for p in protocols:
        if not p.detect:
            return f"protocol {p.name!r} has no detection bytes, so it cannot share a listener"
    for a, b in itertools.combinations(protocols, 2):
        if can_both_match(a, b):
            return f"protocols {a.name!r} and {b.name!r} can both match the same first bytes"
    return None


def detect(protocols: Sequence[XProtocol], data: bytes) -> XProtocol | None | bool:
    """The protocol these first bytes belong to; None to wait for more; False if none can."""
    waiting = False
    for p in protocols:
        m = p.match(data)
        if m is Match.SUCCESS:
            return p
        if m is Match.AGAIN:
            waiting = True
    return None if waiting else False
