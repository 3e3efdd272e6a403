"""The decode contract under fuzzing, for every generated codec (iterated from the package, so a
new spec is covered without editing this file).

For arbitrary bytes, mutated and truncated sample frames, in every direction a protocol takes:
(a) decode returns a frame, None (need more) or raises DecodeError, nothing else; (b) a frame
that decodes re-encodes, unmodified, to exactly the bytes it came from; (c) every accessor of
a decoded frame (and the CLI's JSON view of it) returns, or raises DecodeError; (e) the fast
lane's scan agrees with decode, and reads nothing past the frame. (d) TARS
packets with fields in any order, duplicated, unknown or nested round-trip too, and setting
one field replaces only it. Requests also get answers (hijack, success, reply) that decode, and
a direction that is not a Direction is refused. Deterministic (derandomized), ~10 s."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections import Counter
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protoc_x.generated
from protoc_x.loader import use_typed_scan
from protoc_x.runtime import compiled
from protoc_x.cli import frame_json
from protoc_x.runtime.fieldtypes import tars
from protoc_x.runtime.api import (
    RUNTIME_CODES,
    DecodeError,
    Direction,
    Match,
    StreamType,
    XFrame,
    XProtocol,
)
from protoc_x.samples import SAMPLES

PROTOCOLS = sorted(m.name for m in pkgutil.iter_modules(protoc_x.generated.__path__))
#: the scans the contract holds for: the codec's own, and its typed scan where it is compiled
#: (typed/NAME.pyx; tests/codec/test_typed_scan.py compares the two)
SCANS = ("python", "typed")
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

ACCESSORS = (
    "get_request_id",
    "get_stream_type",
    "is_heartbeat",
    "is_goaway",
    "get_timeout",
    "get_status",
    "get_service",
    "get_method",
    "get_headers",
    "get_body",
    "field_values",
)


def codec(name, scan="python"):
    """The protocol ``name`` with the codec's own scan, or with its typed scan."""
    module = importlib.import_module(f"protoc_x.generated.{name}")
    proto = type(module.PROTOCOL)()  # (the loader gives the module's own its typed scan)
    if scan == "typed" and not use_typed_scan(module, proto):
        if compiled():  # (a compiled build compiles every typed scan beside its codec)
            pytest.fail(f"no typed scan for {name} in a compiled build")
        pytest.skip("typed scans are compiled only")
    return proto


def directions(proto):
    """What decode may be given: a Direction, or also None where the bytes say it (the
    runtime passes a Direction to every protocol)."""
    return list(Direction) if proto.needs_direction else [None, *Direction]


def seeds(name):
    return [s.data for s in SAMPLES if s.protocol == name] or [b""]


def test_every_shipped_spec_has_a_codec_and_samples():
    assert {"bolt", "boltv2", "dubbo", "kafka", "memcached", "tars", "thrift", "xexample"} <= set(
        PROTOCOLS
    )
    for name in PROTOCOLS:
        assert any(s.protocol == name for s in SAMPLES), name


def _accessors_return_or_decode_error(proto, frame) -> None:
    for name in ACCESSORS:
        try:
            value = getattr(frame, name)()
        except DecodeError:
            continue
        if name == "get_stream_type":
            assert isinstance(value, StreamType)
        elif name == "get_headers":
            assert isinstance(value, dict)
            assert all(isinstance(k, str) for k in value), value
            assert all(v is None or isinstance(v, str) for v in value.values()), value
            for key in list(value):
                try:
                    frame.get_header(key)
                except DecodeError:
                    pass
    try:
        view = frame_json(proto.name, frame)
    except DecodeError:
        return
    json.dumps(view)  # what `protoc-x decode` prints


def check_contract(proto, data: bytes, direction) -> XFrame | None:
    """(a), (b) and (c) for one buffer; the decoded frame, if any."""
    assert isinstance(proto.match(data), Match)
    try:
        size = proto.frame_size(data, 0, direction)
    except DecodeError:
        size = None
    assert size is None or isinstance(size, int)
    try:
        frame = proto.decode(data, 0, direction)
    except DecodeError as e:
        assert isinstance(e.offset, int) and e.reason
        check_scan(proto, data, direction, DecodeError)
        return None
    check_scan(proto, data, direction, frame)
    if frame is None:
        return None
    assert isinstance(frame, proto.frame_class)
    assert 0 < frame.length <= len(data)
    wire = data[: frame.length]
    assert frame.encode() == wire, "decoded, unmodified frame re-encodes differently"
    _accessors_return_or_decode_error(proto, frame)
    assert frame.encode() == wire, "reading a frame changed its bytes"
    # the same bytes inside a larger buffer, at an offset
    again = proto.decode(b"\x00" * 3 + data, 3, direction)
    assert again is not None and again.length == frame.length
    assert again.encode() == wire
    return frame


def scanned(scan, data: bytes, start: int, direction):
    try:
        return scan(data, start, direction)
    except DecodeError as e:
        assert isinstance(e.offset, int) and e.reason
        return DecodeError


def check_scan(proto, data: bytes, direction, decoded) -> None:
    """(e) The fast lane's scan agrees with decode: None where decode needs more bytes, a
    DecodeError where decode has one, else what the decoded frame says (XProtocol.scan, the
    decode-based default), or a DecodeError where the frame's own accessors raise one; at an
    offset the same; and a new id packed where the scan found it is what encode writes."""
    found = scanned(proto.scan, data, 0, direction)
    assert scanned(proto.scan, b"\x01\x02\x03" + data, 3, direction) == found
    if isinstance(found, tuple):  # a whole frame: what follows it in the read is not its own
        for after in (b"\xff" * 8, data, b"\x00" * 64):
            assert scanned(proto.scan, data[: found[0]] + after, 0, direction) == found
    if decoded is None or decoded is DecodeError:
        assert found is decoded
        return
    expected = scanned(lambda *a: XProtocol.scan(proto, *a), data, 0, direction)
    if expected is DecodeError:
        assert found is DecodeError
        return
    assert found is not DecodeError and len(found) == 8
    assert found[:2] + found[3:] == expected[:2] + expected[3:]
    at = found[2]
    if at >= 0:
        other = 2 if found[1] == 1 else 1
        patched = bytearray(data[: found[0]])
        proto.id_struct.pack_into(patched, at, other)
        frame = proto.decode(data, 0, direction)
        frame.set_request_id(other)
        assert bytes(patched) == frame.encode()


def mutate(data, raw: bytes) -> bytes:
    how = data.draw(st.sampled_from(["random", "flip", "truncate", "splice", "extreme", "two"]))
    buf = bytearray(raw)
    if how == "random" or not buf:
        buf = bytearray(data.draw(st.binary(max_size=120)))
        if raw and buf and data.draw(st.booleans()):
            buf[:4] = raw[:4]  # keep a magic / length, fuzz the rest
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    elif how == "splice":
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(max_size=12))
    elif how == "extreme":
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]))
    else:  # two frames back to back: the first must still be exactly one
        buf += data.draw(st.binary(max_size=8))
    return bytes(buf)


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("name", PROTOCOLS)
def test_samples_hold_the_contract(name, scan):
    proto = codec(name, scan)
    for raw in seeds(name):
        for d in directions(proto):
            check_contract(proto, raw, d)
            for cut in range(len(raw)):
                check_contract(proto, raw[:cut], d)


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("name", PROTOCOLS)
@FUZZ
@given(data=st.data())
def test_fuzzed_frames_hold_the_contract(name, scan, data):
    proto = codec(name, scan)
    raw = data.draw(st.sampled_from(seeds(name)))
    d = data.draw(st.sampled_from(directions(proto)))
    check_contract(proto, mutate(data, raw), d)


@pytest.mark.parametrize("name", PROTOCOLS)
@FUZZ
@given(data=st.data())
def test_fuzzed_requests_get_answers_that_decode(name, data):
    """What the runtime does with any request it decodes: answer it (hijack, success, reply)
    or forward it under a new id. Each built frame decodes back; DecodeError is the only
    exception (a request whose lazily read part is broken)."""
    proto = codec(name)
    raw = data.draw(st.sampled_from(seeds(name)))
    d = data.draw(st.sampled_from(directions(proto)))
    frame = check_contract(proto, mutate(data, raw), d)
    if frame is None:
        return
    answer = Direction.RESPONSE if proto.needs_direction else None
    try:
        if frame.get_stream_type() is StreamType.RESPONSE:
            return
        built = [proto.hijack(frame, code) for code in RUNTIME_CODES[1:]]
        built += [proto.success_response(frame), frame.is_heartbeat() and proto.reply(frame)]
        for out in (b.encode() for b in built if b):
            back = proto.decode(out, 0, answer)
            assert back is not None and back.length == len(out)
        has_id = frame.get_request_id() is not None  # (redis: no id; setting one does nothing)
        frame.set_request_id(12345)
        out = frame.encode()
    except DecodeError:
        return
    assert proto.decode(out, 0, d).get_request_id() == (12345 if has_id else None)


@pytest.mark.parametrize("name", [n for n in PROTOCOLS if codec(n).needs_direction])
@pytest.mark.parametrize("bad", ["request", "response", 0, True])
def test_a_direction_that_is_not_a_direction_is_refused(name, bad):
    proto = codec(name)
    raw = seeds(name)[0]
    with pytest.raises(TypeError, match="Direction"):
        proto.decode(raw, 0, bad)
    with pytest.raises(TypeError, match="Direction"):
        proto.frame_size(raw, 0, bad)
    with pytest.raises(TypeError, match="Direction"):
        list(proto.decode_all(raw, bad))


# ---- TARS: packets written field by field, in any order ----------------------------------

TARS_HEAD_TYPES = {"int": (0, 1, 2, 3, 12), "str": (6, 7), "bytes": (13, 9), "map": (8,)}


def _head(ty: int, tag: int, long: bool = False) -> bytes:
    return bytes(((tag << 4) | ty,)) if tag < 15 and not long else bytes((0xF0 | ty, tag))


def _tars_int(tag: int, value: int, width: int | None = None) -> bytes:
    if width is None:
        if value == 0:
            return _head(12, tag)
        width = next(w for w in (1, 2, 4, 8) if -(1 << (8 * w - 1)) <= value < 1 << (8 * w - 1))
    ty = {1: 0, 2: 1, 4: 2, 8: 3}[width]
    return _head(ty, tag) + value.to_bytes(width, "big", signed=True)


def _tars_str(tag: int, value: bytes, long: bool = False) -> bytes:
    if len(value) > 255 or long:
        return _head(7, tag) + len(value).to_bytes(4, "big") + value
    return _head(6, tag) + bytes((len(value),)) + value


@st.composite
def tars_field(draw, tag, depth=0):
    """One TARS field with ``tag``: any type, sometimes in a non-canonical form."""
    kind = draw(st.sampled_from(["int", "int", "str", "bytes", "map", "list", "struct", "dbl"]))
    if kind == "int":
        value = draw(st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-200, 200))
        width = draw(st.sampled_from([None, None, 8]))  # 8: not TarsGo's smallest width
        return _tars_int(tag, value, width)
    if kind == "str":
        return _tars_str(tag, draw(st.text(max_size=20)).encode(), draw(st.booleans()))
    if kind == "bytes":
        data = draw(st.binary(max_size=12))
        return _head(13, tag) + b"\x00" + _tars_int(0, len(data)) + data
    if kind == "map":
        items = draw(st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4)), max_size=3))
        out = _head(8, tag) + _tars_int(0, len(items))
        for k, v in items:  # duplicate keys included
            out += _tars_str(0, k.encode()) + _tars_str(1, v.encode())
        return out
    if kind == "dbl":
        return _head(5, tag) + draw(st.binary(min_size=8, max_size=8))
    if kind == "list" or depth >= 2:
        items = draw(st.lists(st.integers(-300, 300), max_size=3))
        return _head(9, tag) + _tars_int(0, len(items)) + b"".join(_tars_int(0, i) for i in items)
    inner = draw(st.lists(st.integers(0, 20), max_size=4))
    body = b"".join(draw(tars_field(t, depth + 1)) for t in inner)
    return _head(10, tag) + body + _head(11, 0)


@st.composite
def tars_typed_field(draw, tag, kind):
    """A field of the type the spec gives ``tag`` (so that packets decode), any wire form."""
    if kind == "int":
        value = draw(st.integers(-(1 << 40), 1 << 40) | st.integers(-3, 300))
        width = draw(st.sampled_from([None, None, None, 4, 8]))
        if width and not -(1 << (8 * width - 1)) <= value < 1 << (8 * width - 1):
            width = None
        return _tars_int(tag, value, width)
    if kind == "str":
        return _tars_str(tag, draw(st.text(max_size=10)).encode(), draw(st.booleans()))
    if kind == "bytes":
        data = draw(st.binary(max_size=10))
        if draw(st.booleans()):  # a plain list of int1 elements, as older writers do
            return (
                _head(9, tag)
                + _tars_int(0, len(data))
                + b"".join(b"\x00" + bytes((b,)) for b in data)
            )
        return _head(13, tag) + b"\x00" + _tars_int(0, len(data)) + data
    items = draw(st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4)), max_size=3))
    out = _head(8, tag) + _tars_int(0, len(items))
    for k, v in items:
        out += _tars_str(0, k.encode()) + _tars_str(1, v.encode())
    return out


TARS_LAYOUT = {
    Direction.REQUEST: {1: "int", 2: "int", 3: "int", 4: "int", 5: "str", 6: "str",
                        7: "bytes", 8: "int", 9: "map", 10: "map"},
    Direction.RESPONSE: {1: "int", 2: "int", 3: "int", 4: "int", 5: "int", 6: "bytes",
                         7: "map", 8: "str", 9: "map"},
}  # fmt: skip


@st.composite
def tars_packet(draw):
    """(direction, frame bytes): the spec's fields in shuffled order, some duplicated, some
    absent, with unknown tags (of any type, nested structs included) between them."""
    d = draw(st.sampled_from(list(Direction)))
    layout = TARS_LAYOUT[d]
    tags = draw(st.lists(st.sampled_from(sorted(layout)), unique=True, max_size=len(layout)))
    if draw(st.booleans()):
        tags.sort()
    tags += draw(st.lists(st.sampled_from(sorted(layout)), max_size=2))  # duplicates
    fields = [draw(tars_typed_field(t, layout[t])) for t in tags]
    for _ in range(draw(st.integers(0, 3))):  # unknown tags, anywhere
        tag = draw(st.sampled_from([0, 11, 12, 14, 15, 40, 255]))
        fields.insert(draw(st.integers(0, len(fields))), draw(tars_field(tag)))
    body = b"".join(fields)
    return d, (len(body) + 4).to_bytes(4, "big") + body


@FUZZ
@given(packet=tars_packet())
def test_tars_fields_in_any_order_round_trip(packet):
    d, data = packet
    check_contract(codec("tars"), data, d)


def test_tars_out_of_order_response_from_the_issue_round_trips():
    data = bytes.fromhex("0000001010012c4c30055c6d000c8600")
    frame = check_contract(codec("tars"), data, Direction.RESPONSE)
    assert frame is not None
    # TarsGo reads fields in tag order: the iRequestId after tag 4 is not seen
    assert frame.iMessageType == 0 and frame.iRet == 0 and frame.get_request_id() is None


@FUZZ
@given(packet=tars_packet(), new_id=st.integers(-(2**31), 2**31 - 1))
def test_tars_setting_the_request_id_replaces_only_it(packet, new_id):
    d, data = packet
    proto = codec("tars")
    frame = proto.decode(data, 0, d)
    before = {k: v for k, v in frame.field_values().items() if k not in ("packet_len", "unknown")}
    had_id = frame.get_request_id() is not None
    frame.set_request_id(new_id)
    out = frame.encode()
    again = proto.decode(out, 0, d)
    assert again.get_request_id() == new_id
    after = {k: v for k, v in again.field_values().items() if k not in ("packet_len", "unknown")}
    before.pop("iRequestId", None), after.pop("iRequestId")
    assert after == before
    # every field is still there (some perhaps moved), but the id's: one field out, one in
    was, now = Counter(tars_fields(data)), Counter(tars_fields(out))
    added, removed = list((now - was).elements()), list((was - now).elements())
    id_field = tars.TYPES["int"](4 if d is Direction.REQUEST else 3).write(new_id, None)
    assert added in ([id_field], [])  # [] when the id was already written so
    assert len(removed) == len(added) - (not had_id)


def tars_fields(data: bytes) -> list[bytes]:
    """The top-level fields of a TARS frame, as bytes."""
    out, pos = [], 4
    while pos < len(data):
        head = pos
        b = data[pos]
        pos += 2 if b >> 4 == 15 else 1
        pos = tars._skip(data, pos, len(data), b & 15, 1)
        out.append(data[head:pos])
    return out


def test_tars_request_through_a_proxy_keeps_fields_it_does_not_know():
    """A request from a newer peer: iVersion as an int4, tags 11 and 12 after the last field.
    Its id is rewritten and a header added, as the proxy does; the rest is unchanged."""
    proto = codec("tars")
    fields = bytes.fromhex("12 00000003" "2c 3c 40 07 56 01 53 66 01 6d 7d 00 0c 81 0bb8")
    newer = bytes.fromhex("b6 02 6869 ca 00 01 0b")
    data = (len(fields) + len(newer) + 4).to_bytes(4, "big") + fields + newer
    frame = proto.decode(data, 0, Direction.REQUEST)
    assert frame.encode() == data
    frame.set_request_id(1000)
    frame.set_header("x-color", "blue")
    out = frame.encode()
    assert out[4:9] == bytes.fromhex("12 00000003")  # iVersion as it came
    assert out.endswith(newer)
    again = proto.decode(out, 0, Direction.REQUEST)
    assert again.get_request_id() == 1000 and again.get_header("x-color") == "blue"
    assert (again.iVersion, again.get_service(), again.get_method()) == (3, "S", "m")


def test_dubbo_megabyte_parameter_descriptor_answers_in_milliseconds():
    """A 1 MB body whose param_types declares 10^6 'I's but carries 3 arguments: each accessor
    raises DecodeError at once (it used to take ~0.3 s each)."""
    from protoc_x.runtime.fieldtypes.hessian2 import encode_string

    body = b"".join(encode_string(s) for s in ("2.0.2", "svc", "1.0", "m", "I" * 1_000_000))
    body += b"\x91\x92\x93HZ"
    data = bytes.fromhex("dabbc200") + (1).to_bytes(8, "big") + len(body).to_bytes(4, "big")
    frame = codec("dubbo").decode(data + body)
    start = time.perf_counter()
    for name in ("get_service", "get_method", "get_timeout", "get_headers"):
        with pytest.raises(DecodeError, match="bad element count"):
            getattr(frame, name)()
    assert time.perf_counter() - start < 0.3
