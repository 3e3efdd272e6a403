"""`protoc-x decode` on frames that are valid but unusual: dubbo attachments whose keys are not
strings, TARS packets with unknown, out-of-order and repeated tags. Each prints its frame and
round-trips (or exits 1 with an offset and a reason), never a traceback."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def decode(*args):
    return subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", "decode", *args], capture_output=True, cwd=ROOT
    )


def _s(text: str) -> bytes:
    return bytes((len(text),)) + text.encode()


def _dubbo_request(attachments: bytes) -> bytes:
    body = _s("2.0.2") + _s("com.acme.Svc") + _s("1.0") + _s("m") + _s("") + attachments
    return bytes.fromhex("dabbc200") + struct.pack(">QI", 1, len(body)) + body


# hessian2 map keys of every kind but string: int, long, null, true, false, double, binary,
# a list; then a map whose last key is a string again
KEYS = [
    (b"\x91", "1"),
    (b"\xe5", "5"),
    (b"N", "null"),
    (b"T", "true"),
    (b"F", "false"),
    (b"\x5c", "1.0"),
    (b"\x22ab", "226162"),
    (b"\x7a\x91\x92", "7a9192"),
]


def test_dubbo_attachment_keys_that_are_not_strings(tmp_path):
    frames = [
        _dubbo_request(b"H" + key + _s("v") + _s("timeout") + _s("250") + b"Z") for key, _ in KEYS
    ]
    path = tmp_path / "frames.hex"
    path.write_text("\n".join(f.hex() for f in frames))
    r = decode("dubbo", str(path), "--hex", "--roundtrip")
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == len(KEYS)
    for obj, (_, shown) in zip(lines, KEYS):
        # not a header name (get_headers gives str names), but shown among the frame's fields
        assert obj["headers"] == {"timeout": "250", "version": "1.0"}, obj["headers"]
        assert obj["timeout_ms"] == 250 and obj["service"] == "com.acme.Svc"
        assert obj["fields"]["attachments"][shown] == "v"


def test_dubbo_attachments_cut_short_exit_1_with_offset():
    frame = _dubbo_request(b"H\x22ab" + _s("v"))  # no 'Z'
    r = subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", "decode", "dubbo", "-", "--hex"],
        input=frame.hex().encode(), capture_output=True, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.decode().startswith("error: offset ")
    assert b"Traceback" not in r.stderr


def test_tars_unknown_out_of_order_and_repeated_tags_round_trip(tmp_path):
    bodies = [
        "10012c4c30055c6d000c8600",  # tag 3 after tag 4 (the frame)
        "10012c3c4c5c6d000c8600ca00010b",  # an unknown struct (tag 12) after the last field
        "0001100110022c3c4c5c6d000c8600f01407",  # tag 0 first, tag 1 twice, tag 20 last
        "10012c3c4c5c6d000c8600a0ffb6026869",  # unknown tags 10 and 11 after the last field
    ]
    path = tmp_path / "frames.hex"
    path.write_text("\n".join(struct.pack(">I", len(b) // 2 + 4).hex() + b for b in bodies))
    r = decode("tars", str(path), "--hex", "--roundtrip", "--direction", "response")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(bodies)
