"""The typed scans (typed/NAME.pyx, each for the codec generated/NAME.py: ``protoc-x build
--typed typed``) answer exactly as the codec's own scan does: the same tuple, or the same error at
the same offset with the same reason, on every spec's samples cut at every byte, on fuzzed
frames, and on bolt header maps built to break a walk done in place (lengths past the map,
negative and -1 lengths, text that is not UTF-8, keys repeated). The loader uses a typed scan
only beside the codec it was generated with, and never under ``PROTOC_X_PURE``."""

from __future__ import annotations

import importlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protoc_x.loader import builtin_protocols, use_typed_scan
from protoc_x.runtime import compiled

from .test_fuzz_contract import FUZZ, PROTOCOLS, codec, directions, mutate, seeds

pytestmark = pytest.mark.skipif(not compiled(), reason="typed scans are compiled only")


def outcome(scan, data, start, direction):
    """What ``scan`` returns, or the error it raises with its offset and reason."""
    try:
        return ("value", scan(data, start, direction))
    except Exception as e:
        return (type(e).__name__, getattr(e, "offset", None), getattr(e, "reason", str(e)))


def same(name, data, direction) -> None:
    typed = codec(name, "typed")
    python = codec(name, "python")
    assert typed.scan is not python.scan
    for start, buf in ((0, data), (3, b"\x01\x02\x03" + data)):
        expected = outcome(python.scan, buf, start, direction)
        assert outcome(typed.scan, buf, start, direction) == expected, (name, buf, start)
        # a buffer that is not bytes, and a start past C's sizes: the codec's scan answers
        assert outcome(typed.scan, bytearray(buf), start, direction) == outcome(
            python.scan, bytearray(buf), start, direction
        )
    assert outcome(typed.scan, data, 2**70, direction) == outcome(
        python.scan, data, 2**70, direction
    )


@pytest.mark.parametrize("name", PROTOCOLS)
def test_samples_cut_at_every_byte(name):
    for raw in seeds(name):
        for d in directions(codec(name)):
            for cut in range(len(raw) + 1):
                same(name, raw[:cut], d)


@pytest.mark.parametrize("name", PROTOCOLS)
@FUZZ
@given(data=st.data())
def test_fuzzed_frames(name, data):
    raw = data.draw(st.sampled_from(seeds(name)))
    d = data.draw(st.sampled_from(directions(codec(name))))
    same(name, mutate(data, raw), d)


# ---- bolt header maps, walked in place by the typed scan -----------------------------------

KEYS = [b"service", b"sofa_head_target_service", b"sofa_head_method_name", b"servic", b"x"]
TEXT = st.one_of(
    st.sampled_from(KEYS),
    st.text(max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=6),  # (often not UTF-8)
    st.sampled_from([b"\xc3\xa9t\xc3\xa9", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]),
)


@st.composite
def header_map(draw) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 5))):
        for part in (draw(TEXT), draw(TEXT)):
            size = draw(st.sampled_from([len(part)] * 6 + [-1, -2, len(part) + 1, 2**31 - 1]))
            out += struct.pack(">i", size) + (b"" if size == -1 else part)
    if draw(st.booleans()):  # a map cut short
        out = out[: draw(st.integers(0, len(out)))]
    return out


def bolt_request(headers: bytes, class_name: bytes = b"com.acme.Hello") -> bytes:
    body = b"\x00\x01"
    head = struct.pack(">BBHBIBiHHI", 1, 1, 1, 1, 7, 1, 3000, len(class_name), len(headers),
                       len(body))  # fmt: skip
    return head + class_name + headers + body


@FUZZ
@given(headers=header_map())
def test_bolt_header_maps(headers):
    same("bolt", bolt_request(headers), None)


@FUZZ
@given(class_name=TEXT, headers=header_map())
def test_bolt_class_names_the_scan_checks_but_does_not_keep(class_name, headers):
    same("bolt", bolt_request(headers, class_name), None)


def test_a_class_name_that_is_not_utf8_is_refused_where_its_bad_byte_is():
    with pytest.raises(Exception) as e:
        codec("bolt", "typed").scan(bolt_request(b"", b"com.\xffacme"), 0, None)
    assert (e.value.offset, e.value.reason) == (22 + 4, "invalid UTF-8 in a string field")


def test_each_key_the_scan_reads_is_its_own_value():
    """Every key of the walk in its place: the service (before the target service, as the
    spec's binding says) and the method, whatever the map's order."""
    entries = [(b"sofa_head_method_name", b"m"), (b"sofa_head_target_service", b"t"),
               (b"x", b"y"), (b"service", b"s")]  # fmt: skip
    for order in (entries, entries[::-1]):
        headers = b"".join(struct.pack(">i", len(x)) + x for kv in order for x in kv)
        same("bolt", bolt_request(headers), None)
        found = codec("bolt", "typed").scan(bolt_request(headers), 0, None)
        assert found[5:7] == ("s", "m")
    alone = b"".join(struct.pack(">i", len(x)) + x for x in entries[1])  # the target service
    assert codec("bolt", "typed").scan(bolt_request(alone), 0, None)[5:7] == ("t", None)


def test_a_bolt_header_map_read_only_by_its_keys():
    """The map walk keeps the last of repeated keys, decodes the kept values, and still
    refuses a bad entry it does not keep."""
    entries = [(b"service", b"a"), (b"other", b"\xc3\xa9"), (b"service", b"b")]
    headers = b"".join(struct.pack(">i", len(x)) + x for kv in entries for x in kv)
    found = codec("bolt", "typed").scan(bolt_request(headers), 0, None)
    assert found[5] == "b"
    bad = headers + struct.pack(">i", 1) + b"k" + struct.pack(">i", 1) + b"\xff"
    with pytest.raises(Exception) as e:
        codec("bolt", "typed").scan(bolt_request(bad), 0, None)
    assert e.value.offset == 22 + 14 + len(headers) + 9
    assert e.value.reason == "invalid UTF-8 in a map entry"


# ---- the loader ----------------------------------------------------------------------------


def test_the_proxy_loads_every_typed_scan():
    for name, proto in builtin_protocols().items():
        assert (
            getattr(proto.scan, "__func__", None)
            is importlib.import_module(f"protoc_x.typed.{name}").scan
        ), name


def test_a_typed_scan_of_another_codec_is_not_used(monkeypatch):
    module = importlib.import_module("protoc_x.generated.bolt")
    typed = importlib.import_module("protoc_x.typed.bolt")
    monkeypatch.setattr(typed, "CODEC_SHA256", "0" * 64)
    proto = type(module.PROTOCOL)()
    assert not use_typed_scan(module, proto)
    assert "scan" not in vars(proto)


def test_no_typed_scan_under_protoc_x_pure(monkeypatch):
    module = importlib.import_module("protoc_x.generated.bolt")
    monkeypatch.setenv("PROTOC_X_PURE", "1")
    proto = type(module.PROTOCOL)()
    assert not use_typed_scan(module, proto)
    assert "scan" not in vars(proto)
