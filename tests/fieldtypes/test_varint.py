"""varint field types: known LEB128/zigzag vectors, bounds, round trips, fuzz."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes import varint

U = varint.TYPES["unsigned"]()
S = varint.TYPES["signed"]()

UNSIGNED_VECTORS = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (300, "ac02"),  # the protobuf documentation's example
    (16383, "ff7f"),
    (16384, "808001"),
    (2**32 - 1, "ffffffff0f"),
    (2**63, "80808080808080808001"),
    (2**64 - 1, "ffffffffffffffffff01"),
]

SIGNED_VECTORS = [
    (0, "00"),
    (-1, "01"),
    (1, "02"),
    (-2, "03"),
    (2147483647, "feffffff0f"),
    (-2147483648, "ffffffff0f"),
    (2**63 - 1, "feffffffffffffffff01"),
    (-(2**63), "ffffffffffffffffff01"),
]


def test_contract():
    assert set(varint.TYPES) == {"unsigned", "signed"}
    for cls in varint.TYPES.values():
        assert cls.PARAMS == () and cls.PARAM_TYPES == () and cls.VALUE == "int"
    assert varint.FUNCTIONS == {}
    assert varint.new_context() is None


@pytest.mark.parametrize("value,hexed", UNSIGNED_VECTORS)
def test_unsigned_vectors(value, hexed):
    data = bytes.fromhex(hexed)
    assert U.write(value, None) == data
    assert U.read(data + b"\xff", 0, len(data), None) == (value, len(data))


@pytest.mark.parametrize("value,hexed", SIGNED_VECTORS)
def test_signed_vectors(value, hexed):
    data = bytes.fromhex(hexed)
    assert S.write(value, None) == data
    assert S.read(b"\x00" + data, 1, 1 + len(data), None) == (value, 1 + len(data))


def test_redundant_zero_groups_are_accepted():
    assert U.read(b"\x80\x00", 0, 2, None) == (0, 2)
    assert U.read(b"\x81\x80\x00", 0, 3, None) == (1, 3)


@pytest.mark.parametrize(
    "hexed,end,offset,reason",
    [
        ("", 0, 0, "expected a varint, found the end of the frame"),  # nothing
        ("80", 1, 1, "varint runs past the end of the frame"),  # continuation, then the end
        ("8080", 1, 1, "varint runs past the end of the frame"),  # the next byte is beyond end
        ("ffffffffffffffffff02", 10, 0, "varint overflows 64 bits"),  # 10th byte: bit 64
        ("80808080808080808002", 10, 0, "varint overflows 64 bits"),  # exactly 2**64
        ("8080808080808080808000", 11, 0, "varint longer than 10 bytes"),  # 11 bytes
    ],
)
def test_unsigned_errors(hexed, end, offset, reason):
    data = bytes.fromhex(hexed)
    with pytest.raises(DecodeError) as e:
        U.read(data, 0, end, None)
    assert (e.value.offset, e.value.reason) == (offset, reason)
    with pytest.raises(DecodeError) as e:
        S.read(data, 0, end, None)
    assert (e.value.offset, e.value.reason) == (offset, reason)


def test_write_range():
    with pytest.raises(ValueError, match=r"^unsigned varint cannot hold -1$"):
        U.write(-1, None)
    with pytest.raises(ValueError, match=r"^varint 18446744073709551616 overflows 64 bits$"):
        U.write(2**64, None)
    with pytest.raises(ValueError, match=r"^signed varint 9223372036854775808 overflows 64 bits$"):
        S.write(2**63, None)
    assert U.write(2**64 - 1, None) == bytes.fromhex("ffffffffffffffffff01")


def test_memoryview_and_bytearray():
    data = b"\x00\xac\x02"
    assert U.read(memoryview(data), 1, 3, None) == (300, 3)
    assert U.read(bytearray(data), 1, 3, None) == (300, 3)


@given(st.integers(0, 2**64 - 1))
def test_unsigned_round_trip(value):
    data = U.write(value, None)
    assert len(data) <= 10
    assert U.read(data, 0, len(data), None) == (value, len(data))


@given(st.integers(-(2**63), 2**63 - 1))
def test_signed_round_trip(value):
    data = S.write(value, None)
    assert S.read(data, 0, len(data), None) == (value, len(data))


def _outcome(t, buf, pos, end):
    try:
        return t.read(buf, pos, end, None)
    except DecodeError as e:
        return ("error", e.offset)


@settings(max_examples=300)
@given(st.binary(max_size=14), st.binary(max_size=4), st.data())
def test_fuzz_only_decode_error_and_never_past_end(data, junk, draw):
    end = draw.draw(st.integers(0, len(data)))
    for t in (U, S):
        got = _outcome(t, data, 0, end)
        if got[0] != "error":
            assert got[1] <= end
        # bytes past end must not change anything
        assert _outcome(t, data[:end] + junk, 0, end) == got
