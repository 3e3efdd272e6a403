"""The generated codecs on frames written from the published layouts (protoc_x.samples):
expected values, byte-exact re-encoding, need-more on every proper prefix, several frames in
one buffer, and fuzzing that only ever yields DecodeError or need-more."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protoc_x.cli import frame_json
from protoc_x.samples import SAMPLES
from protoc_x.runtime.api import DecodeError, Direction

PROTOCOLS = ["bolt", "boltv2", "dubbo", "thrift", "memcached", "tars", "kafka", "xexample"]


def codec(name):
    return importlib.import_module(f"protoc_x.generated.{name}").PROTOCOL


def direction(sample):
    return Direction(sample.direction) if sample.direction else None


@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{s.protocol}:{s.name}" for s in SAMPLES])
def test_sample_decodes_to_expected_values_and_reencodes(sample):
    proto = codec(sample.protocol)
    frame = proto.decode(sample.data, 0, direction(sample))
    assert frame is not None
    assert frame.length == len(sample.data)
    view = frame_json(proto.name, frame)
    for key, want in sample.expect.items():
        if key == "headers":
            for k, v in want.items():
                assert view["headers"].get(k) == v, (k, view["headers"])
        else:
            assert view[key] == want, (key, view)
    assert frame.encode() == sample.data


@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{s.protocol}:{s.name}" for s in SAMPLES])
def test_every_proper_prefix_needs_more(sample):
    proto = codec(sample.protocol)
    for cut in range(len(sample.data)):
        assert proto.decode(sample.data[:cut], 0, direction(sample)) is None, cut


@pytest.mark.parametrize("name", PROTOCOLS)
def test_several_frames_in_one_buffer(name):
    proto = codec(name)
    by_dir: dict = {}
    for s in SAMPLES:
        if s.protocol == name:
            by_dir.setdefault(s.direction, []).append(s)
    for d, samples in by_dir.items():
        buf = b"".join(s.data for s in samples) * 2
        frames = list(proto.decode_all(buf, Direction(d) if d else None))
        assert [f.length for f in frames] == [len(s.data) for s in samples] * 2
        assert b"".join(f.encode() for f in frames) == buf


def _exercise(proto, data: bytes, d) -> None:
    """Decode ``data`` and read everything a frame offers: only DecodeError may escape."""
    pos = 0
    for _ in range(8):
        try:
            frame = proto.decode(data, pos, d)
        except DecodeError:
            return
        if frame is None:
            return
        assert frame.length > 0
        try:
            frame_json(proto.name, frame)
            frame.encode()
        except DecodeError:
            return
        pos += frame.length
        if pos >= len(data):
            return


@pytest.mark.parametrize("name", PROTOCOLS)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_only_decode_error_or_need_more(name, data):
    proto = codec(name)
    samples = [s for s in SAMPLES if s.protocol == name]
    sample = data.draw(st.sampled_from(samples))
    d = direction(sample)
    how = data.draw(st.sampled_from(["random", "flip", "truncate", "splice", "lengths"]))
    raw = bytearray(sample.data)
    if how == "random":
        raw = bytearray(data.draw(st.binary(max_size=200)))
        if raw and data.draw(st.booleans()):
            raw[: len(sample.data[:2])] = sample.data[:2]  # keep the magic, fuzz the rest
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif how == "splice":
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = data.draw(st.binary(max_size=16))
    else:  # overwrite bytes with extreme values, as a length field gone wrong would be
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
    _exercise(proto, bytes(raw), d)


@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{s.protocol}:{s.name}" for s in SAMPLES])
def test_frame_size_announced_by_the_header(sample):
    proto = codec(sample.protocol)
    d = direction(sample)
    assert proto.frame_size(sample.data, 0, d) == len(sample.data)
    for cut in range(len(sample.data)):
        assert proto.frame_size(sample.data[:cut], 0, d) in (None, len(sample.data)), cut
