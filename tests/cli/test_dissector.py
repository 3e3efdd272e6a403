"""`protoc-x dissector`: each spec's generated Wireshark Lua dissector, loaded by Debian's
tshark (`-X lua_script:NAME.lua -d tcp.port==PORT,NAME`) on captures written from frames real
peers put on the wire (and the protocols' sample frames), cut into segments that split frames
and hold several. Every frame tshark finds is compared with what `protoc-x decode --pcap` says
of the same capture: the same frames in each direction of each connection, completed by the
same packet, and for each frame every field of its layout (inside layouts, records and lists
included), the request id, stream type, status, service, method, timeout, headers, heartbeat,
goaway and body length. Two specs written only for the tests (tests/compiler/
test_language_reach's `reach` and `widths`) get the same check, so the dissector is not tuned
to the shipped ones."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protoc_x.backends.lua import spec_data
from protoc_x.compiler import plan_source
from protoc_x.samples import SAMPLES
from tests.peers.pcaps import write_capture

from .test_decode import ROOT

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (make system-deps)")

PORT = 12400
VIEW = ("request_id", "stream_type", "status", "service", "method", "timeout_ms", "headers",
        "heartbeat", "goaway", "body_length")  # fmt: skip


def run(*args: str, cwd: Path = ROOT, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", *args], capture_output=True, cwd=cwd, input=stdin
    )


def dissector(spec: Path, out: Path) -> Path:
    r = run("dissector", str(spec), "-o", str(out))
    assert r.returncode == 0, r.stderr.decode()
    return out / f"{spec.stem}.lua"


def registered(lua: Path) -> str:
    """The name the dissector registered its protocol under: the spec's, or NAME_x where
    Wireshark has a protocol of that name (kafka, thrift); `tshark -G protocols` lists it."""
    r = subprocess.run(
        [TSHARK, "-G", "protocols", "-X", f"lua_script:{lua}"], capture_output=True, text=True
    )
    names = [line.split("\t")[2] for line in r.stdout.splitlines() if "(protoc-x)" in line]
    assert len(names) == 1, r.stdout + r.stderr
    return names[0]


def tshark(
    lua: Path, capture: Path, name: str, port: int = PORT, how: str = "decode_as"
) -> list[dict]:
    """The frames tshark's dissector finds, in packet order: {connection, direction, packet,
    layer} (layer: the protocol's tree as (key, value) pairs: tshark repeats keys, for several
    frames in a packet and several entries of a map, which a dict would lose)."""
    pick = {  # Decode As, the dissector's own ports preference, or nothing (its heuristic)
        "decode_as": ["-d", f"tcp.port=={port},{name}"],
        "preference": ["-o", f"{name}.ports:{port}"],
        "heuristic": [],
    }[how]
    r = subprocess.run(
        [TSHARK, "-r", str(capture), "-X", f"lua_script:{lua}", *pick, "-T", "json"],
        capture_output=True, cwd=lua.parent,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert b"Lua: Error" not in r.stderr, r.stderr.decode()
    frames = []
    for packet in json.loads(r.stdout, object_pairs_hook=list):
        layers = dict(dict(packet)["_source"])["layers"]
        tcp = dict(dict(layers)["tcp"])
        number = int(dict(dict(layers)["frame"])["frame.number"])
        to_server = int(tcp["tcp.dstport"]) == port
        for key, layer in layers:
            if key == name:
                frames.append(
                    {
                        "connection": int(tcp["tcp.stream"]),
                        "direction": "to_server" if to_server else "to_client",
                        "packet": number,
                        "layer": layer,
                    }
                )
    return frames


def decoded(name: str, capture: Path, port: int = PORT, extra: list[str] = ()) -> list[dict]:
    r = run("decode", name, "--pcap", str(capture), "--port", str(port), *extra)
    assert r.returncode == 0, r.stderr.decode()
    return [json.loads(line) for line in r.stdout.splitlines()]


# ---- tshark's tree as decode's JSON --------------------------------------------------------


class Schema:
    """The field types of a spec (from the dissector back end's own description of it)."""

    def __init__(self, data: dict):
        self.data = data
        self.enums = {
            name: {m["name"]: m["value"] for m in e["members"]} for name, e in data["enums"].items()
        }
        self.scopes: dict = {None: {}}
        self._collect(data["frame"], None)
        for inside in data["insides"]:
            for layout in inside["layouts"]:
                self._collect(layout["items"], None)
        for rec, r in data["records"].items():
            self.scopes.setdefault(rec, {})
            self._collect(r["items"], rec)

    def _collect(self, items, scope):
        table = self.scopes.setdefault(scope, {})
        for item in items:
            if item["item"] == "field":
                table[item["name"]] = item["type"]
            elif item["item"] == "bits":
                for f in item["fields"]:
                    t = {"kind": "int", "width": item["width"], "signed": False}
                    if f.get("enum"):
                        t["enum"] = f["enum"]
                    table[f["name"]] = t
            elif item["item"] == "if":
                self._collect(item["body"], scope)
                self._collect(item["orelse"], scope)

    def is_map(self, t) -> bool:
        return t["kind"] == "map" or (
            t["kind"] == "ext" and t.get("value") not in ("int", "str", "bytes", "raw")
        )


def _hexes(text: str) -> str:
    return text.replace(":", "")


def _children(value) -> list:
    """A container's children (tshark writes one without any as "")."""
    return value if isinstance(value, list) else []


def actual_value(schema: Schema, t: dict, value, name: str):
    """A value of tshark's tree in decode's JSON terms (enums by number, bytes as hex)."""
    if t.get("size") is not None and t["kind"] in ("ext", "record") and not t.get("window"):
        elem = {k: v for k, v in t.items() if k != "size"}
        return [
            actual_value(schema, elem, v, name) for k, v in _children(value) if k.endswith(".item")
        ]
    if t["kind"] == "record":
        return actual_fields(schema, _children(value), t["record"], name)
    if schema.is_map(t):
        out, key = {}, None
        for k, v in _children(value):
            if k.endswith(".key"):
                key = v
            else:
                out[key] = v
        return out
    if t["kind"] == "int" or (t["kind"] == "ext" and t.get("value") == "int"):
        return int(value)
    if t["kind"] == "bytes" or (t["kind"] == "ext" and t.get("value") in ("bytes", "raw")):
        return _hexes(value)
    return value


def actual_fields(schema: Schema, pairs, scope: str | None, name: str) -> dict:
    """The fields of a layout (``scope``: a record's name, or None for the frame) in the tree
    of protocol ``name``: `NAME.FIELD`, `NAME.RECORD.FIELD` in records, `NAME.field.FIELD`
    for a frame field named like a routing view's field it is not."""
    out = {}
    for key, value in pairs:
        if key.endswith("_tree") and scope is None:  # a bytes field's inside layout
            out.update(actual_fields(schema, value, None, name))
            continue
        for prefix in (f"{name}.{scope}." if scope else f"{name}.", f"{name}.field."):
            if key.startswith(prefix) and key[len(prefix) :] in schema.scopes[scope]:
                field = key[len(prefix) :]
                t = schema.scopes[scope][field]
                out[field] = actual_value(schema, t, value, name)
                break
    return out


def expected_value(schema: Schema, t: dict, value, scope):
    """decode's JSON value as the tree shows it: an enum member by its number, map values as
    text (JSON for what is not text), records and lists field by field."""
    if isinstance(value, list):
        elem = {k: v for k, v in t.items() if k != "size"}
        return [expected_value(schema, elem, v, scope) for v in value]
    if t["kind"] == "record":
        return expected_fields(schema, value, t["record"])
    if schema.is_map(t) and isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    if t.get("enum") and isinstance(value, str):
        return schema.enums[t["enum"]][value]
    return value


def expected_fields(schema: Schema, fields: dict, scope) -> dict:
    return {k: expected_value(schema, schema.scopes[scope][k], v, scope) for k, v in fields.items()}


def as_text(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def actual_view(name: str, pairs) -> dict:
    """The routing view from the tree: `NAME.request_id` and its kin (a frame field of the
    same name, where the view reads just it)."""
    out: dict = {}
    for key, value in pairs:
        if key.startswith(name + ".") and key[len(name) + 1 :] in VIEW:
            out[key[len(name) + 1 :]] = value
    view = {
        "request_id": int(out["request_id"]) if "request_id" in out else None,
        "stream_type": out["stream_type"],
        "status": int(out["status"]) if "status" in out else None,
        "service": out.get("service"),
        "method": out.get("method"),
        "timeout_ms": int(out["timeout_ms"]) if "timeout_ms" in out else None,
        "heartbeat": out["heartbeat"] == "1",
        "goaway": out["goaway"] == "1",
        "body_length": int(out["body_length"]),
    }
    headers, key = {}, None
    for k, v in _children(out.get("headers")):
        if k.endswith(".key"):
            key = v
        else:
            headers[key] = v
    view["headers"] = headers
    return view


def expected_view(obj: dict) -> dict:
    view = {k: obj[k] for k in VIEW}
    view["headers"] = {k: v for k, v in obj["headers"].items() if v is not None}
    return view


def check_capture(
    spec: Path, capture: Path, tmp: Path, shipped: bool = True, how: str = "decode_as"
) -> int:
    """Dissect ``capture`` with the spec's dissector and compare with decode; the number of
    frames compared."""
    name = spec.stem
    schema = Schema(spec_data(plan_source(spec.read_text(), str(spec), name))[0])
    lua = dissector(spec, tmp)
    proto = registered(lua)
    got = tshark(lua, capture, proto, how=how)
    want = decoded(name, capture, extra=[] if shipped else ["--protocols", str(spec)])
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        where = (w["connection"], w["direction"], w["packet"], w["offset"])
        assert (g["connection"], g["direction"], g["packet"]) == where[:3], where
        assert actual_view(proto, g["layer"]) == expected_view(w), where
        assert actual_fields(schema, g["layer"], None, proto) == expected_fields(
            schema, w["fields"], None
        ), where
    return len(got)


# ---- the shipped specs -------------------------------------------------------------------


def sample_connection(protocol: str) -> list[tuple[str, bytes]]:
    out = []
    for s in SAMPLES:
        if s.protocol == protocol:
            direction = s.direction or (
                "response" if s.expect.get("stream_type") == "response" else "request"
            )
            out.append((direction, s.data))
    return out


SHIPPED = sorted(p.stem for p in (ROOT / "specs").glob("*.xproto"))


@pytest.mark.parametrize("protocol", SHIPPED)
def test_sample_frames(protocol, tmp_path):
    capture = tmp_path / "samples.pcap"
    write_capture(capture, [sample_connection(protocol)], PORT)
    n = check_capture(ROOT / "specs" / f"{protocol}.xproto", capture, tmp_path)
    assert n == len(sample_connection(protocol))


@pytest.mark.parametrize("how", ["preference", "heuristic"])
def test_found_by_port_preference_and_by_detect(how, tmp_path):
    """Without Decode As: on the ports the dissector's preference names, or anywhere by the
    spec's `detect` (bolt's first byte), which also tells the client (it spoke first)."""
    capture = tmp_path / "bolt.pcap"
    frames = sample_connection("bolt")
    write_capture(capture, [frames, frames[1:]], PORT)
    assert check_capture(ROOT / "specs" / "bolt.xproto", capture, tmp_path, how=how) == 5


def test_a_bad_frame_ends_its_direction_and_nothing_else(tmp_path):
    """Bytes that are no frame: the frames before them are shown, then one malformed item with
    the reason (an expert error); the other direction and connection are whole."""
    good = sample_connection("bolt")
    bad = [good[0], ("request", b"\x07garbage that is no bolt frame"), good[1]]
    capture = tmp_path / "bad.pcap"
    write_capture(capture, [bad, good], PORT, cuts=(1400,))
    lua = dissector(ROOT / "specs" / "bolt.xproto", tmp_path)
    frames = tshark(lua, capture, "bolt")
    first = [f for f in frames if (f["connection"], f["direction"]) == (0, "to_server")]
    assert [dict(f["layer"]).get("bolt.request_id") for f in first] == ["2", None]
    malformed = dict(first[1]["layer"])
    assert "_ws.expert" in malformed and "proto: expected 1, got 7" in json.dumps(malformed)
    others = [f for f in frames if f["connection"] == 1]
    assert len(others) == len(good)
    r = run("decode", "bolt", "--pcap", str(capture), "--port", str(PORT))
    assert r.returncode == 1 and len(r.stdout.splitlines()) == len(good) + 1


@pytest.fixture(scope="module")
def peers():
    from tests.peers.captures import all_captures

    return all_captures()


@pytest.mark.parametrize("protocol", SHIPPED)
def test_real_peer_frames(protocol, peers, tmp_path):
    """Every frame a real peer library sent (tests/peers/captures.py), one connection per ten
    frames, segments split and coalesced."""
    caps = peers.get(protocol)
    if not caps:
        pytest.skip(f"no real peer speaks {protocol} (its sample frames are checked above)")
    connections = [
        [(c.direction, c.data) for c in caps[i : i + 10]] for i in range(0, len(caps), 10)
    ]
    capture = tmp_path / "peers.pcapng"
    write_capture(capture, connections, PORT, pcapng=True)
    assert check_capture(ROOT / "specs" / f"{protocol}.xproto", capture, tmp_path) == len(caps)


# ---- specs written only for the tests ------------------------------------------------------


def test_specs_written_for_the_tests(tmp_path):
    """`widths` (u24, u40, u48, u56, i24le, a 24-bit enum, bit fields across three bytes, an
    inside layout of odd widths) and `reach` (little-endian, a summed frame length, if/else
    layouts, a varint-keyed map, nullable text, varint lists, a u64 beyond 2^63, a CRC, an
    inside layout, bindings through name() and map values), with frames built by hand."""
    from tests.compiler import test_language_reach as lr

    cases = {
        "widths": (
            lr.WIDTHS,
            [
                ("request", lr.widths_frame(b"hello world")),
                ("request", lr.widths_frame(b"x" * 70000, big=2**55 - 1)),
                ("response", lr.widths_frame(b"", kind=2, offset=2**23 - 1)),
                ("request", lr.widths_frame(
                    (5).to_bytes(3, "big") + b"hello" + (-(2**39)).to_bytes(5, "little", signed=True),
                    kind=1,
                )),  # fmt: skip
            ],
        ),
        "reach": (
            lr.SPEC.replace("map(varint.unsigned)[count ntags]", "map(varint.unsigned)[count 2]"),
            [
                ("request", lr.call_frame(b"alice")),
                ("request", lr.call_frame(None)),
                ("response", lr.reply_frame()),
            ],
        ),
    }
    for name, (text, frames) in cases.items():
        spec = tmp_path / f"{name}.xproto"
        spec.write_text(text)
        capture = tmp_path / f"{name}.pcap"
        write_capture(capture, [frames, list(reversed(frames))], PORT)
        assert check_capture(spec, capture, tmp_path, shipped=False) == 2 * len(frames), name


def test_spec_strings_reach_the_dissector_as_lua_strings_only(tmp_path):
    """A spec's strings (a fail message, a text delimiter, a header name, a string literal)
    that would close a Lua string or comment and call os.exit reach the file as escaped
    literals: tshark loads it and dissects, and nothing of them is Lua code."""
    from tests.compiler.test_bad_specs import variant

    evil = '\\"]]) os.exit(3) --[[\\n'
    text = variant(
        "size u16 = len(data)",
        f'size u16 = len(data)\n        tag string[until "{evil}"]',
        "body = data",
        f'body = data\n    header "{evil}" = tag == "{evil}" ? "x" : "y"',
    )
    spec = tmp_path / "mini.xproto"
    spec.write_text(text)
    lua = dissector(spec, tmp_path)
    code = lua.read_text()
    data = code[code.index("local SPEC = ") : code.index("\nlocal V = ")]
    assert "os.exit(3)" in data  # (inside a string literal, as printable ASCII is)
    literals = re.compile(r'"(?:[^"\\\n]|\\[0-9]{3})*"')  # the back end's only form
    outside = literals.sub('""', data)
    assert "os.exit" not in outside and "--" not in outside and "]]" not in outside
    assert data.isascii()
    listed = subprocess.run(
        [TSHARK, "-G", "protocols", "-X", f"lua_script:{lua}"], capture_output=True, text=True
    )
    assert listed.returncode == 0 and "mini (protoc-x)" in listed.stdout, listed.stderr


def test_an_inside_layout_that_cannot_be_read_is_an_error_under_a_whole_frame(tmp_path):
    """dubbo's request body that is no hessian2: the frame and its routing fields are shown,
    with the body's error (an expert error naming the body) where decode fails the frame."""
    import struct

    body = b"\x05hello\xff not hessian"
    head = struct.pack(">HBBQI", 0xDABB, 0xC2, 0, 9, len(body))
    capture = tmp_path / "bad_body.pcap"
    write_capture(capture, [[("request", head + body)]], PORT)
    lua = dissector(ROOT / "specs" / "dubbo.xproto", tmp_path)
    (frame,) = tshark(lua, capture, "dubbo")
    layer = dict(frame["layer"])
    assert layer["dubbo.request_id"] == "9" and layer["dubbo.stream_type"] == "request"
    assert "body: " in json.dumps(layer["_ws.expert"])
    r = run("decode", "dubbo", "--pcap", str(capture), "--port", str(PORT))
    assert r.returncode == 1 and b"body: " in r.stderr
