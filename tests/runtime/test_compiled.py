"""The compiled runtime and its Python source agree (and an id written in place is what the
protocol's struct writes): where a ``.pxd`` gives a function C types,
it is run side by side with the source on the same hostile inputs (a compiled slice with C
offsets must not turn a length past the end into an OverflowError where Python refuses it); and
the typed reader's other entry, for buffers that are not bytes, reads what bytes would."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protoc_x.runtime import api, compiled, source_path
from protoc_x.runtime.api import XProtocol
from protoc_x.runtime.pool import UpstreamConnection
from protoc_x.runtime.fieldtypes import hessian2

compiled_only = pytest.mark.skipif(not compiled(), reason="the runtime is not compiled")


def source_module(name: str):
    spec = importlib.util.spec_from_file_location(f"source_{name}", source_path(name))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (a dataclass looks its module up while it is made)
    spec.loader.exec_module(module)
    return module


API_SOURCE = source_module("api") if compiled() else None
HESSIAN2_SOURCE = source_module("fieldtypes.hessian2") if compiled() else None


def outcome(read, *args):
    """What ``read`` returns, or the error it raises (a DecodeError with its offset)."""
    try:
        return ("value", read(*args))
    except Exception as e:
        return (type(e).__name__, getattr(e, "offset", None), getattr(e, "reason", str(e)))


LENGTHS = st.sampled_from([">I", ">i", "<H", ">Q", ">q", ">b"]).map(struct.Struct)


@st.composite
def header_maps(draw, lengths=LENGTHS):
    """A buffer holding a length-prefixed map after two bytes: mostly well formed, with lengths
    that are wrong, negative or near the width's limit, bytes that are not UTF-8, and cuts."""
    length = draw(lengths)
    bits = 8 * length.size
    low = -(1 << (bits - 1)) if length.format[-1].islower() else 0
    high = (1 << (bits - 1 if low else bits)) - 1
    text = st.binary(max_size=4) | st.sampled_from([b"\xff", b"\xc3", b"\x80d", "é".encode()])
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        for part in (draw(text), draw(text)):
            size = draw(st.one_of(st.just(len(part)), st.sampled_from([low, -1, high, 0, 7])))
            parts.append(length.pack(max(low, min(high, size))) + part)
    data = b"xx" + b"".join(parts)
    data = data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    end = draw(st.one_of(st.just(len(data)), st.integers(0, len(data) + 3)))
    return data, end, length, draw(st.booleans())


@compiled_only
@settings(max_examples=3000, deadline=None)
@given(header_maps(), st.booleans())
def test_read_kvmap_fixed_compiled_is_the_source(case, as_bytearray):
    data, end, length, signed = case
    buf = bytearray(data) if as_bytearray else data
    assert outcome(api.read_kvmap_fixed, buf, 2, end, length, signed) == outcome(
        API_SOURCE.read_kvmap_fixed, buf, 2, end, length, signed
    )


@settings(max_examples=1000, deadline=None)
@given(header_maps())
def test_read_kvmap_fixed_reads_a_bytearray_as_its_bytes(case):
    """A buffer that is not bytes is read from a copy of the map's own bytes (not the whole
    buffer), with the outcome bytes give: nothing past the map is read from either."""
    data, end, length, signed = case
    expected = outcome(api.read_kvmap_fixed, data, 2, end, length, signed)
    for buf in (bytearray(data), memoryview(data)):
        assert outcome(api.read_kvmap_fixed, buf, 2, end, length, signed) == expected


@settings(max_examples=2000, deadline=None)
@given(header_maps(st.sampled_from([">I", ">i", "!i", "!I"]).map(struct.Struct)))
def test_32_bit_lengths_read_byte_by_byte_as_struct_reads_them(case):
    """The common prefix's own loop (C arithmetic when compiled) reads every map, and refuses
    every broken one, as the loop that reads lengths with the Struct does."""
    data, end, length, signed = case
    if not 2 <= end <= len(data):  # (read_kvmap_fixed takes the Struct's loop for these)
        return
    lsigned = length.format[-1] == "i"
    assert outcome(api._read_kvmap_be32, data, 2, end, lsigned, signed) == outcome(
        api._read_kvmap_struct, data, 2, end, length, signed
    )


# hessian2 values around its typed short-string reader: short strings (ASCII or not, cut), the
# other string forms, null, ints, and maps and lists holding them
SHORT = st.binary(max_size=6).map(lambda b: bytes([len(b)]) + b)
HESSIAN_VALUES = st.lists(
    st.one_of(
        SHORT,
        SHORT.map(lambda b: b[:-1]),
        st.sampled_from(
            [
                b"N",
                b"\x91",
                b"\x30\x02ab",
                b"S\x00\x01a",
                b"R\x00\x01aS\x00\x01b",
                b"\x02\xc3\xa9",
                b"\x01\xed\xa0\x80",
                b"\x1f",
                b"Z",
                b"H",
                b"q",
            ]
        ),
        st.binary(max_size=3),
    ),
    max_size=6,
).map(b"".join)


@compiled_only
@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["String", "Map", "Any"]), st.booleans(), HESSIAN_VALUES,
       st.integers(0, 3))  # fmt: skip
def test_hessian2_compiled_reads_as_the_source(kind, as_map, body, cut):
    """Strings, maps and skipped values read the same compiled (C offsets, decoded from the
    buffer) as from the source, refusals included, wherever the value's end is."""
    data = b"xx" + (b"H" + body + b"Z" if as_map else body)
    end = max(2, len(data) - cut)
    got = outcome(getattr(hessian2, kind)().read, data, 2, end, hessian2.new_context())
    want = outcome(getattr(HESSIAN2_SOURCE, kind)().read, data, 2, end,
                   HESSIAN2_SOURCE.new_context())  # fmt: skip
    assert repr(got) == repr(want)


# ---- ids written in place -------------------------------------------------------------------


@functools.cache
def id_writer(fmt: str) -> UpstreamConnection:
    """An upstream connection of a protocol whose ids are packed with ``fmt`` (made on a loop,
    which writing an id does not use)."""

    class Proto(XProtocol):
        name = "ids"
        id_struct = struct.Struct(fmt)

    async def made() -> UpstreamConnection:
        return UpstreamConnection(None, Proto())

    return asyncio.run(made())


ID_FORMATS = [o + c for o in "<>!" for c in "bBhHiIlLqQ"]


@compiled_only
@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ID_FORMATS),
    st.one_of(
        st.integers(-(1 << 70), 1 << 70),
        st.sampled_from([0, 1, -1, 127, 128, -128, -129, 255, 256, 65535, 65536, -32769,
                         (1 << 31) - 1, 1 << 31, -(1 << 31) - 1, (1 << 32) - 1, 1 << 32,
                         (1 << 63) - 1, 1 << 63, -(1 << 63), True, 2.0, "7", None]),
    ),
    st.binary(min_size=0, max_size=12),
    st.integers(0, 12),
)  # fmt: skip
def test_an_id_written_in_place_is_what_the_struct_packs(fmt, value, frame, at):
    """The compiled connection writes a scanned frame's id itself for 1-, 2- and 4-byte ids
    (in C; the Python source uses the struct): the copy is what ``id_struct.pack_into`` makes
    of it, byte for byte, and a value the struct refuses is refused the same way."""
    conn = id_writer(fmt)
    buf = b"<<" + frame + b">>"
    expected = bytearray(frame)
    try:
        conn.id_struct.pack_into(expected, at, value)
    except Exception as e:
        expected = type(e)
    try:
        got = conn.with_id(buf, 2, len(frame), at, value)
    except Exception as e:
        got = type(e)
    assert got == expected
    if type(got) is bytearray:
        assert buf == b"<<" + frame + b">>"  # (a copy: the read buffer is untouched)


def test_ids_of_one_two_and_four_bytes_are_written_without_the_struct():
    """(the fast writer is the one the test above compares, not the struct's fallback)"""
    assert [id_writer(f).id_width for f in (">I", "<h", "!b", ">q", "<Q")] == [4, 2, 1, 0, 0]
