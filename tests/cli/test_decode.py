"""`protoc-x decode` as the contract describes it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protoc_x.samples import SAMPLES

ROOT = Path(__file__).parents[2]
KEYS = ["protocol", "length", "stream_type", "request_id", "heartbeat", "goaway", "status",
        "timeout_ms", "service", "method", "headers", "body_length", "fields"]  # fmt: skip


def decode(*args, data: bytes = b""):
    return subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", "decode", *args],
        input=data, capture_output=True, cwd=ROOT,
    )  # fmt: skip


def test_contract_example_bolt_heartbeat():
    hb = next(s for s in SAMPLES if s.protocol == "bolt" and "heartbeat" in s.name)
    r = decode("bolt", "-", "--roundtrip", data=hb.data)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert list(obj)[: len(KEYS)] == KEYS
    assert obj == {
        "protocol": "bolt", "length": 22, "stream_type": "request", "request_id": 2,
        "heartbeat": True, "goaway": False, "status": None, "timeout_ms": 3000,
        "service": None, "method": None, "headers": {}, "body_length": 0,
        "fields": {"proto": 1, "kind": "request", "cmd": "heartbeat", "ver2": 1, "id": 2,
                   "codec": "hessian2", "timeout": 3000, "class_len": 0, "header_len": 0,
                   "content_len": 0, "class_name": "", "headers": {}, "content": ""},
    }  # fmt: skip


@pytest.mark.parametrize("protocol", sorted({s.protocol for s in SAMPLES}))
def test_every_sample_as_hex_file_with_roundtrip(tmp_path, protocol):
    by_dir: dict = {}
    for s in SAMPLES:
        if s.protocol == protocol:
            by_dir.setdefault(s.direction, []).append(s)
    for direction, samples in by_dir.items():
        path = tmp_path / "frames.hex"
        path.write_text("\n".join(" ".join(f"{b:02x}" for b in s.data) for s in samples))
        args = [protocol, str(path), "--hex", "--roundtrip"]
        if direction:
            args += ["--direction", direction]
        r = decode(*args)
        assert r.returncode == 0, r.stderr
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(lines) == len(samples)
        for obj, s in zip(lines, samples):
            assert obj["length"] == len(s.data)
            for key, want in s.expect.items():
                if key != "headers":
                    assert obj[key] == want, (s.name, key)


def test_frames_before_a_bad_one_are_printed_then_the_error():
    hb = next(s for s in SAMPLES if s.protocol == "bolt" and "heartbeat" in s.name).data
    r = decode("bolt", data=hb + hb + b"\x07garbage")
    assert r.returncode == 1
    assert len(r.stdout.splitlines()) == 2
    assert r.stderr.decode().startswith("error: offset 44: proto: expected 0x1, got 0x7")


def test_short_input_reports_offset():
    hb = next(s for s in SAMPLES if s.protocol == "bolt" and "heartbeat" in s.name).data
    r = decode("bolt", data=hb[:10])
    assert r.returncode == 1 and r.stdout == b""
    assert b"error: offset 10: incomplete frame" in r.stderr


def test_kafka_needs_a_direction():
    r = decode("kafka", data=b"\x00\x00\x00\x04\x00\x00\x00\x01")
    assert r.returncode == 1 and b"--direction" in r.stderr


def test_roundtrip_reports_first_differing_offset(tmp_path):
    # every shipped codec round-trips, so a plug-in that loses the payload's last byte: the
    # first difference is payload_len's last byte
    plugin = tmp_path / "lossy.py"
    plugin.write_text(
        "from protoc_x.generated import xexample\n"
        "class Lossy(type(xexample.PROTOCOL)):\n"
        "    name = 'lossy'\n"
        "    def decode(self, buf, start=0, direction=None):\n"
        "        frame = super().decode(buf, start, direction)\n"
        "        if frame is not None:\n"
        "            frame.payload = frame.payload[:-1]\n"
        "        return frame\n"
        "PROTOCOL = Lossy()\n"
    )
    frame = bytes.fromhex("78 01 00 00000001 00000005 68656c6c6f")
    ok = decode("lossy", "--protocols", str(plugin), data=frame)
    assert ok.returncode == 0 and json.loads(ok.stdout)["request_id"] == 1
    r = decode("lossy", "--protocols", str(plugin), "--roundtrip", data=frame)
    assert r.returncode == 1
    assert r.stderr.startswith(
        b"error: offset 10: roundtrip differs (frame at offset 0, 16 bytes in, 15 out)"
    )


def test_extra_protocol_from_a_spec(tmp_path):
    from tests.compiler.test_bad_specs import GOOD

    spec = tmp_path / "mini.xproto"
    spec.write_text(GOOD)
    r = decode("mini", "--protocols", str(spec), "--hex", data=b"4d 00 00000009 0002 6869")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert (
        obj["request_id"] == 9
        and obj["fields"]["data"] == "6869"
        and obj["fields"]["dir"] == "request"
    )


def test_unknown_protocol():
    r = decode("nope", data=b"x")
    assert r.returncode == 1 and b"unknown protocol 'nope'" in r.stderr


@pytest.mark.parametrize(
    "content,reason",
    [
        (None, "nope.xproto: no such file or directory"),
        ("raise SystemExit(42)\n", "cannot load: SystemExit: 42"),
        ("def broken(:\n", "cannot load: SyntaxError"),
        ("PROTOCOL = 'not a protocol'\n", "defines no PROTOCOL"),
    ],
)
def test_protocols_that_cannot_load_are_an_error_line(tmp_path, content, reason):
    """--protocols names a spec or a plug-in module: a missing one, or a module that exits,
    does not parse or defines no protocol, is one error line and exit 1, never a traceback or
    the module's own exit code."""
    path = tmp_path / ("nope.xproto" if content is None else "plugin.py")
    if content is not None:
        path.write_text(content)
    r = decode("--protocols", str(path), "bolt", "--hex", data=b"00")
    assert r.returncode == 1, r
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    assert r.stderr.decode().startswith("error: ") and reason in r.stderr.decode()


def test_a_connections_first_frame_is_read_as_its_handshake():
    """The input is a connection's bytes one way: for a protocol whose handshake has a layout
    of its own (tests/codec/zookeeper.xproto), its first frame is read as the handshake, unless
    ``--mid-stream`` says the input starts after it."""
    from tests.codec.test_first_frames import GET_DATA, connect_request, request

    spec = str(Path(__file__).parents[1] / "codec" / "zookeeper.xproto")
    data = connect_request(timeout=7000) + request(5, GET_DATA, b"/a")
    args = ("zookeeper", "--protocols", spec, "--direction", "request", "--roundtrip")
    r = decode(*args, data=data)
    assert r.returncode == 0, r.stderr
    hello, get = [json.loads(line) for line in r.stdout.splitlines()]
    assert (hello["method"], hello["fields"]["session_timeout"]) == ("connect", 7000)
    assert (get["method"], get["fields"]["xid"], get["fields"]["payload"]) == (
        "get_data",
        5,
        "2f61",
    )
    r = decode(*args, "--mid-stream", data=data)
    assert r.returncode == 0, r.stderr
    hello, get = [json.loads(line) for line in r.stdout.splitlines()]
    assert (hello["method"], hello["fields"]["xid"], hello["fields"]["op"]) == (
        "notification",
        0,
        "notification",
    )
    assert get["fields"]["xid"] == 5
