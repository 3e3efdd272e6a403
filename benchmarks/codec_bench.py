"""Generated bolt codec vs a hand-written struct.Struct bolt codec, in the same run.

Frames: a 533-byte request (4 header pairs, 300 B content) and a 223-byte response.
- eager decode: every field, the header map as a dict, class as str, content as bytes;
- encode: a frame whose header map was set (so the map is written, lengths recomputed);
- lazy decode: what the proxy's decode costs — the header map stays bytes until read;
- proxy path: decode, read the service header, give the bytes a new id in place (the proxy
  forwards the bytes that came); the hand-written codec decodes, sets the id and encodes.
Prints µs per operation and generated / hand-written ratios (goal ≤ 1.15x).
Run: make bench (or .venv/bin/python benchmarks/codec_bench.py).
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protoc_x.generated.bolt import PROTOCOL  # noqa: E402
from protoc_x.samples import SAMPLES  # noqa: E402

REQ_HEAD = struct.Struct(">BBHBIBiHHI")
RESP_HEAD = struct.Struct(">BBHBIBHHHI")
LEN = struct.Struct(">i")


class HandFrame:
    __slots__ = (
        "kind", "cmd", "ver2", "id", "codec", "timeout", "status", "cls", "headers", "content",
        "length",
    )  # fmt: skip


def hand_decode(buf: bytes) -> HandFrame | None:
    """What a careful hand-written decoder does: need-more checks, the protocol byte, lengths."""
    n = len(buf)
    if n < 2:
        return None
    f = HandFrame()
    if buf[1] == 0:
        if n < 20:
            return None
        proto, f.kind, f.cmd, f.ver2, f.id, f.codec, f.status, cl, hl, bl = RESP_HEAD.unpack_from(
            buf
        )
        f.timeout = None
        pos = 20
    else:
        if n < 22:
            return None
        proto, f.kind, f.cmd, f.ver2, f.id, f.codec, f.timeout, cl, hl, bl = REQ_HEAD.unpack_from(
            buf
        )
        f.status = None
        pos = 22
    if proto != 1:
        raise ValueError("not bolt")
    f.length = pos + cl + hl + bl
    if f.length > n:
        return None
    f.cls = buf[pos : pos + cl].decode()
    pos += cl
    headers = {}
    end = pos + hl
    while pos < end:
        (kl,) = LEN.unpack_from(buf, pos)
        key = buf[pos + 4 : pos + 4 + kl].decode()
        pos += 4 + kl
        (vl,) = LEN.unpack_from(buf, pos)
        if vl < 0:
            value = None
            pos += 4
        else:
            value = buf[pos + 4 : pos + 4 + vl].decode()
            pos += 4 + vl
        headers[key] = value
    f.headers = headers
    f.content = buf[pos : pos + bl]
    return f


def hand_encode(f: HandFrame) -> bytes:
    cls = f.cls.encode()
    parts = []
    for key, value in f.headers.items():
        k = key.encode()
        parts.append(LEN.pack(len(k)))
        parts.append(k)
        if value is None:
            parts.append(LEN.pack(-1))
        else:
            v = value.encode()
            parts.append(LEN.pack(len(v)))
            parts.append(v)
    headers = b"".join(parts)
    if f.kind == 0:
        head = RESP_HEAD.pack(
            1, 0, f.cmd, f.ver2, f.id, f.codec, f.status, len(cls), len(headers), len(f.content)
        )
    else:
        head = REQ_HEAD.pack(
            1,
            f.kind,
            f.cmd,
            f.ver2,
            f.id,
            f.codec,
            f.timeout,
            len(cls),
            len(headers),
            len(f.content),
        )
    return b"".join([head, cls, headers, f.content])


def bench(fn, arg, n: int) -> float:
    """Best of 7 runs, µs per call."""
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    request = next(s.data for s in SAMPLES if s.protocol == "bolt" and s.name.startswith("request"))
    response = next(s.data for s in SAMPLES if s.protocol == "bolt" and s.name == "response")
    assert len(request) == 533 and len(response) == 223
    decode = PROTOCOL.decode
    # sanity: both codecs agree and round-trip
    for frame in (request, response):
        g, h = decode(frame), hand_decode(frame)
        assert g.headers == h.headers and g.content == h.content and g.class_name == h.cls
        assert g.encode() == frame and hand_encode(h) == frame

    def gen_eager(buf):
        f = decode(buf)
        f.headers  # the header map as a dict
        return f

    def gen_encode(f):
        return f.encode()

    def gen_proxy(buf):
        f = decode(buf)
        f.get_service()
        data = bytearray(buf)
        f.patch_request_id(data, f.get_request_id() + 1)
        return data

    def hand_proxy(buf):
        f = hand_decode(buf)
        f.headers.get("service") or f.headers.get("sofa_head_target_service")
        f.id += 1
        return hand_encode(f)

    n = 20000
    rows = []
    for label, frame in (("request 533 B", request), ("response 223 B", response)):
        g_frame, h_frame = decode(frame), hand_decode(frame)
        g_frame.headers = dict(g_frame.headers)  # assigned: the encoder writes the map
        rows.append(
            (f"eager decode, {label}", bench(gen_eager, frame, n), bench(hand_decode, frame, n))
        )
        rows.append(
            (f"encode, {label}", bench(gen_encode, g_frame, n), bench(hand_encode, h_frame, n))
        )
        rows.append(
            (f"lazy decode, {label}", bench(decode, frame, n), bench(hand_decode, frame, n))
        )
        rows.append(
            (f"proxy path, {label}", bench(gen_proxy, frame, n), bench(hand_proxy, frame, n))
        )
    print(f"{'operation':34} {'generated µs':>13} {'hand µs':>9} {'ratio':>7}")
    for label, g, h in rows:
        print(f"{label:34} {g:13.2f} {h:9.2f} {g / h:6.2f}x")


if __name__ == "__main__":
    main()
