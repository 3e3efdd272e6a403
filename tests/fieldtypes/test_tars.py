"""tars field types: TarsGo's byte layouts, a stream written by the @tars/stream encoder,
tagged-field semantics, round trips and fuzz."""

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes import tars

T = tars.TYPES
Int, String, Bytes, Map, Any = T["int"], T["string"], T["bytes"], T["map"], T["any"]

# Written by @tars/stream 2.0.3 (TarsOutputStream, which follows TarsGo/Java byte for byte):
#   writeInt32(0, 0) writeInt64(1, 300) writeString(2, "hello") writeBytes(3, [1, 2, 3])
#   writeMap(4, {k1: v1, k2: 值}) writeStruct(5, {0: int 7, 1: "in"})
#   writeList(6, List<Int32>[1, -200, 100000]) writeDouble(7, 1.5) writeFloat(8, 0)
#   writeInt64(9, -5000000000) writeString(16, "x" * 300) writeInt32(200, -70000)
#   writeBytes(201, []) writeMap(202, {})
NODE_STREAM = bytes.fromhex(
    "0c11012c260568656c6c6f3d00000301020348000206026b311602763106026b321603e580bc5a0007"
    "1602696e0b690003000101ff3802000186a0753ff80000000000008c93fffffffed5fa0e00f71000"
    "00012c" + "78" * 300 + "f2c8fffeee90fdc9000cf8ca0c"
)
NODE_FIELDS = [
    (Int, 0, 0),
    (Int, 1, 300),
    (String, 2, "hello"),
    (Bytes, 3, b"\x01\x02\x03"),
    (Map, 4, {"k1": "v1", "k2": "值"}),
    (Any, 5, bytes.fromhex("5a00071602696e0b")),
    (Any, 6, bytes.fromhex("690003000101ff3802000186a0")),
    (Any, 7, bytes.fromhex("753ff8000000000000")),
    (Any, 8, b"\x8c"),
    (Int, 9, -5000000000),
    (String, 16, "x" * 300),
    (Int, 200, -70000),
    (Bytes, 201, b""),
    (Map, 202, {}),
]


def test_contract():
    assert set(T) == {"int", "string", "bytes", "map", "any", "rest"}
    for name in ("int", "string", "bytes", "map", "any"):
        assert T[name].PARAMS == ("tag",) and T[name].PARAM_TYPES == (int,)
    assert T["rest"].PARAMS == () and T["rest"].VALUE == "raw"
    assert [T[n].VALUE for n in ("int", "string", "bytes", "map", "any")] == [
        "int",
        "str",
        "bytes",
        "map",
        "raw",
    ]
    assert tars.FUNCTIONS == {}
    first, second = tars.new_context(), tars.new_context()
    assert isinstance(first, tars.Context) and first is not second  # one per message
    with pytest.raises(ValueError):
        Int(256)


def test_node_stream_reads_and_reencodes_byte_exactly():
    pos, end = 0, len(NODE_STREAM)
    for cls, tag, expected in NODE_FIELDS:
        reader = cls(tag)
        value, new = reader.read(NODE_STREAM, pos, end, None)
        assert value == expected, tag
        assert reader.write(value, None) == NODE_STREAM[pos:new], tag
        pos = new
    assert pos == end


def test_skipping_every_type_to_a_late_tag():
    end = len(NODE_STREAM)
    assert Int(200).read(NODE_STREAM, 0, end, None)[0] == -70000
    assert Map(202).read(NODE_STREAM, 0, end, None) == ({}, end)


@pytest.mark.parametrize(
    "value,tag,hexed",
    [
        (0, 0, "0c"),
        (1, 1, "1001"),
        (-1, 1, "10ff"),
        (127, 2, "207f"),
        (-128, 2, "2080"),
        (128, 3, "310080"),
        (-32768, 3, "318000"),
        (32768, 4, "4200008000"),
        (-(2**31), 4, "4280000000"),
        (2**31, 5, "530000000080000000"),
        (-(2**63), 5, "538000000000000000"),
        (0, 15, "fc0f"),
        (5, 255, "f0ff05"),
        (None, 3, ""),
    ],
)
def test_int_vectors(value, tag, hexed):
    data = bytes.fromhex(hexed)
    assert Int(tag).write(value, None) == data
    if value is not None:
        assert Int(tag).read(data, 0, len(data), None) == (value, len(data))


def test_int_reads_every_integer_width():
    # a writer need not use the smallest width: a 1 in an int8 is still 1
    data = bytes.fromhex("030000000000000001")
    assert Int(0).read(data, 0, len(data), None) == (1, 9)
    with pytest.raises(DecodeError) as e:  # but a float is not an int
        Int(0).read(b"\x04\x00\x00\x00\x00", 0, 5, None)
    assert e.value.offset == 0


def test_string_vectors():
    assert String(0).write("", None) == b"\x06\x00"
    assert String(1).write("abc", None) == b"\x16\x03abc"
    assert String(1).write("a" * 255, None) == b"\x16\xff" + b"a" * 255
    assert String(1).write("a" * 256, None) == b"\x17\x00\x00\x01\x00" + b"a" * 256
    assert String(20).write("é", None) == b"\xf6\x14\x02\xc3\xa9"
    data = b"\x17\x00\x00\x00\x02hi"
    assert String(1).read(data, 0, len(data), None) == ("hi", len(data))
    with pytest.raises(DecodeError) as e:
        String(1).read(b"\x16\x02\xc3\x28", 0, 4, None)
    assert e.value.offset == 2
    with pytest.raises(DecodeError):  # type mismatch
        String(1).read(b"\x10\x05", 0, 2, None)


def test_bytes_vectors():
    assert Bytes(1).write(b"\x01\x02", None) == bytes.fromhex("1d00000201 02".replace(" ", ""))
    assert Bytes(1).write(b"", None) == bytes.fromhex("1d000c")
    # a plain list of int1 elements (0 written as ZERO) is accepted too
    data = bytes.fromhex("19 0003 0041 0c 0042".replace(" ", ""))
    assert Bytes(1).read(data, 0, len(data), None) == (b"A\x00B", len(data))
    with pytest.raises(DecodeError):  # a list of int2 is not bytes
        Bytes(1).read(bytes.fromhex("190001010041"), 0, 6, None)
    with pytest.raises(DecodeError):  # a simple list of something other than int1
        Bytes(1).read(bytes.fromhex("1d010001"), 0, 4, None)


def test_map_vectors():
    data = bytes.fromhex("28 0001 0601 61 1601 62".replace(" ", ""))
    assert Map(2).write({"a": "b"}, None) == data
    assert Map(2).read(data, 0, len(data), None) == ({"a": "b"}, len(data))
    assert Map(2).write({}, None) == b"\x28\x0c"
    with pytest.raises(DecodeError):  # value with tag 0
        bad = bytes.fromhex("28 0001 0601 61 0601 62".replace(" ", ""))
        Map(2).read(bad, 0, len(bad), None)
    with pytest.raises(DecodeError):  # int value in a map<string, string>
        bad = bytes.fromhex("28 0001 0601 61 1001".replace(" ", ""))
        Map(2).read(bad, 0, len(bad), None)
    with pytest.raises(DecodeError):  # negative length
        Map(2).read(bytes.fromhex("2800ff"), 0, 3, None)


def test_tagged_semantics():
    data = Int(1).write(7, None) + String(3).write("x", None) + b"\x0b" + Int(9).write(1, None)
    end = len(data)
    # lower tags are skipped
    assert String(3).read(data, 0, end, None) == ("x", 5)
    # a higher tag: absent, nothing consumed
    assert Int(2).read(data, 2, end, None) == (None, 2)
    # a struct end: absent, not consumed, even for a higher tag beyond it
    assert Int(9).read(data, 5, end, None) == (None, 5)
    # the end of the frame
    assert Int(9).read(data, end, end, None) == (None, end)
    # the tag matches, the type does not
    with pytest.raises(DecodeError) as e:
        Map(3).read(data, 0, end, None)
    assert e.value.offset == 2
    # None writes nothing
    for cls in (Int, String, Bytes, Map, Any):
        assert cls(4).write(None, None) == b""
    assert T["rest"]().write(None, None) == b""


def test_any_keeps_the_whole_field():
    nested = bytes.fromhex("1a 0a 0001 0b 0b".replace(" ", ""))  # struct{struct{int}}
    assert Any(1).read(nested, 0, len(nested), None) == (nested, len(nested))
    assert Any(1).write(nested, None) == nested


@pytest.mark.parametrize(
    "hexed,offset",
    [
        ("f0", 0),  # extended head without its tag byte
        ("02000000", 1),  # int4 cut short
        ("06", 1),  # string1 without its length
        ("0605616263", 1),  # string1 too short
        ("07ffffffff", 1),  # string4 overruns
        ("0e", 1),  # unknown type 14 (the offset of its value)
        ("0a0001", 3),  # struct without its end
        ("0900ff", 1),  # negative list length
        ("09 02 7fffffff".replace(" ", ""), 6),  # huge list
        ("08 00 01 0600".replace(" ", ""), 5),  # map of one pair with one field
        ("0d0100", 1),  # simple list of int2
        ("09 10 01".replace(" ", ""), 1),  # length with tag 1
        ("09 03 0000000000000001".replace(" ", ""), 1),  # length as int8
    ],
)
def test_any_errors(hexed, offset):
    data = bytes.fromhex(hexed)
    with pytest.raises(DecodeError) as e:
        Any(0).read(data, 0, len(data), None)
    assert e.value.offset == offset


def test_deep_nesting_is_a_decode_error():
    data = b"\x0a" * 500 + b"\x0b" * 500
    with pytest.raises(DecodeError):
        Any(0).read(data, 0, len(data), None)
    lists = b"\x09\x00\x01" * 500 + b"\x0c"
    with pytest.raises(DecodeError):
        Any(0).read(lists, 0, len(lists), None)
    with pytest.raises(DecodeError):  # also when skipping to a later tag
        Int(5).read(data, 0, len(data), None)
    shallow = b"\x0a" * 20 + b"\x0b" * 20
    assert Any(0).read(shallow, 0, len(shallow), None) == (shallow, len(shallow))


def test_memoryview_and_bytearray():
    end = len(NODE_STREAM)
    for buf in (memoryview(NODE_STREAM), bytearray(NODE_STREAM)):
        assert Map(4).read(buf, 0, end, None)[0] == {"k1": "v1", "k2": "值"}
        assert Bytes(3).read(buf, 0, end, None)[0] == b"\x01\x02\x03"
        assert Any(5).read(buf, 0, end, None)[0] == bytes.fromhex("5a00071602696e0b")


# ---- round trips -----------------------------------------------------------------------

TAGS = st.integers(0, 255)
TEXT = settings(suppress_health_check=[HealthCheck.too_slow])  # st.text() is slow once


@given(st.integers(-(2**63), 2**63 - 1), TAGS)
def test_int_round_trip(value, tag):
    data = Int(tag).write(value, None)
    assert Int(tag).read(data, 0, len(data), None) == (value, len(data))
    assert Any(tag).read(data, 0, len(data), None) == (data, len(data))


@TEXT
@given(st.text(), TAGS)
def test_string_round_trip(value, tag):
    data = String(tag).write(value, None)
    assert String(tag).read(data, 0, len(data), None) == (value, len(data))


@given(st.binary(max_size=300), TAGS)
def test_bytes_round_trip(value, tag):
    data = Bytes(tag).write(value, None)
    assert Bytes(tag).read(data, 0, len(data), None) == (value, len(data))


@TEXT
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=8), TAGS)
def test_map_round_trip(value, tag):
    data = Map(tag).write(value, None)
    assert Map(tag).read(data, 0, len(data), None) == (value, len(data))
    assert list(Map(tag).read(data, 0, len(data), None)[0]) == list(value)  # order kept


@TEXT
@given(st.dictionaries(TAGS, st.sampled_from([Int, String, Bytes]), max_size=8), st.data())
def test_sequences_of_fields(kinds, data):
    # fields in tag order: each is found behind the others; missing tags read as None
    fields = sorted(kinds.items())
    make = {Int: st.integers(-(2**63), 2**63 - 1), String: st.text(max_size=5), Bytes: st.binary()}
    values = {tag: data.draw(make[cls]) for tag, cls in fields}
    encoded = b"".join(cls(tag).write(values[tag], None) for tag, cls in fields)
    end = len(encoded)
    for tag, cls in fields:
        assert cls(tag).read(encoded, 0, end, None)[0] == values[tag]
    missing = next(t for t in range(256) if t not in kinds)
    assert Any(missing).read(encoded, 0, end, None)[0] is None
    pos = 0
    for tag, cls in fields:
        value, pos = cls(tag).read(encoded, pos, end, None)
        assert value == values[tag]
    assert pos == end


# ---- fuzz ------------------------------------------------------------------------------

READERS = [cls(tag) for cls in (Int, String, Bytes, Map, Any) for tag in (0, 3, 16)]


def _outcome(reader, buf, pos, end):
    try:
        return reader.read(buf, pos, end, None)
    except DecodeError as e:
        return ("error", e.offset)


def _check(data: bytes, end: int):
    for reader in READERS:
        got = _outcome(reader, data, 0, end)
        assert 0 <= got[1] <= end  # the position after a value, or the offset of an error
        assert _outcome(reader, data[:end] + b"\x09\x00\xff", 0, end) == got


@settings(max_examples=300)
@given(st.binary(max_size=48))
@example(b"\x0d\xf0")  # a simple list whose element head wants a tag byte past the end
@example(b"\x3d\xf0")  # the same at tag 3
def test_fuzz_random_bytes(data):
    _check(data, len(data))


@settings(max_examples=300)
@given(st.data())
def test_fuzz_mutated_stream(data):
    buf = bytearray(NODE_STREAM[:120])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    end = data.draw(st.integers(0, len(buf)))
    _check(bytes(buf), end)


# ---- exact errors, exact boundaries ------------------------------------------------------


def _h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize(
    "value,hexed",
    [
        (-128, "10 80"),
        (-129, "11 ff7f"),
        (127, "10 7f"),
        (128, "11 0080"),
        (-32768, "11 8000"),
        (-32769, "12 ffff7fff"),
        (32767, "11 7fff"),
        (32768, "12 00008000"),
        (-(2**31), "12 80000000"),
        (-(2**31) - 1, "13 ffffffff7fffffff"),
        (2**31 - 1, "12 7fffffff"),
        (2**31, "13 0000000080000000"),
        (-(2**63), "13 8000000000000000"),
        (2**63 - 1, "13 7fffffffffffffff"),
    ],
)
def test_int_widths_on_both_sides_of_each_limit(value, hexed):
    data = _h(hexed)
    assert Int(1).write(value, None) == data
    assert Int(1).read(data, 0, len(data), None) == (value, len(data))


def test_int_and_tag_limits_say_what():
    for too_big in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError) as e:
            Int(1).write(too_big, None)
        assert str(e.value) == f"tars int {too_big} overflows 64 bits"
    for tag in (-1, 256):
        with pytest.raises(ValueError) as e:
            Int(tag)
        assert str(e.value) == f"tars tag {tag} is not in 0..255"
    assert Int(255).write(1, None) == _h("f0 ff 01")


@pytest.mark.parametrize(
    "reader,hexed,offset,reason",
    [
        (Map(2), "20 01", 0, "expected a map, found int1"),
        (Map(2), "28 00 02 06 00 16 00", 3, "map of 2 entries overruns the frame"),
        (Map(2), "28 00 01 06 02 61 62 16", 8, "string length overruns the frame"),
        (Map(2), "28 00 01 06 01 61 10 05", 6, "expected a string, found int1"),
        (Map(2), "28 00 01 f6 01 01 61 16 01 62", 3, "map entry has tag 1, expected 0"),
        (Map(2), "28 00 01 06 00 16", 3, "map of 1 entries overruns the frame"),
        (Map(2), "28 00 01 06 00 16 02 61", 6, "string overruns the frame"),
        (Map(2), "28 00 01 06 02 6162 f6", 7, "head overruns the frame"),
        (Map(2), "28 00 01 06 03 616263", 8, "map overruns the frame"),
        (Map(2), "28 00 ff", 1, "negative length -1"),
        (Map(2), "28", 1, "expected a length, found the end of the frame"),
        (Map(2), "28 1001", 1, "expected a length (int, tag 0), found int1 tag 1"),
        (String(1), "10 05", 0, "expected a string, found int1"),
        (String(1), "16", 1, "string length overruns the frame"),
        (String(1), "17 000000", 1, "string length overruns the frame"),
        (String(1), "16 03 6162", 1, "string overruns the frame"),
        (String(1), "16 02 c328", 2, "invalid UTF-8 in a string"),
        (Int(1), "14 00000000", 0, "expected an integer, found float"),
        (Int(1), "12 000000", 1, "int4 overruns the frame"),
        (Int(1), "f0", 0, "head overruns the frame"),
        (Bytes(1), "10 05", 0, "expected bytes (simple list), found int1"),
        (Bytes(1), "1d", 1, "simple list overruns the frame"),
        (Bytes(1), "1d 01", 1, "simple list of int2, expected int1"),
        (Bytes(1), "1d f0", 1, "head overruns the frame"),
        (Bytes(1), "1d 00 00 03 6162", 4, "simple list of 3 bytes overruns the frame"),
        (Bytes(1), "19 00 03 00", 3, "list of 3 elements overruns the frame"),
        (Bytes(1), "19 00 01 00", 3, "list element overruns the frame"),
        (Bytes(1), "19 00 01 01 00 05", 3, "a byte list element must be an int1 with tag 0"),
        (Any(1), "1e", 1, "value of unknown type 14"),
        (Any(1), "19 00 02 0c", 3, "list of 2 fields overruns the frame"),
        (Any(1), "18 00 01 0c", 3, "map of 2 fields overruns the frame"),
        (Any(1), "19 00 01 f0", 3, "head overruns the frame"),
        (Any(1), "1a f0", 1, "head overruns the frame"),
        (Any(1), "1a 0c", 2, "struct has no end before the end of the frame"),
        (Any(1), "1d f0", 1, "head overruns the frame"),
        (Any(1), "1d 00 00 02 61", 4, "simple list of 2 bytes overruns the frame"),
        (Any(1), "17 00000002 61", 1, "string overruns the frame"),
        (Any(1), "16 02 61", 1, "string overruns the frame"),
        (Any(1), "15 000000", 1, "double overruns the frame"),
        (T["rest"](), "f0", 0, "head overruns the frame"),
        (T["rest"](), "0c f0", 1, "head overruns the frame"),
        (T["rest"](), "f0 0c", 2, "int1 overruns the frame"),
    ],
)
def test_errors_say_where_and_what(reader, hexed, offset, reason):
    data = _h(hexed)
    with pytest.raises(DecodeError) as e:
        reader.read(data, 0, len(data), None)
    assert (e.value.offset, e.value.reason) == (offset, reason)


def _structs(k: int) -> bytes:
    return b"\x0a" * k + b"\x0b" * k


def test_nesting_limit_is_exact_for_every_reader():
    """64 structs nested read, skipped, kept after a value and kept as rest; 65 do not."""
    rest = T["rest"]()
    for k, ok in ((64, True), (65, False)):
        data = _structs(k)
        after = b"\x10\x01" + data  # structs of tag 0 after an int of tag 1: kept with it
        # (reader, bytes, where it stops when the nesting is allowed)
        for reader, buf, stop in (
            (Any(0), data, len(data)),
            (Int(5), data, 0),  # skipped, then absent at the end: nothing consumed
            (rest, data, len(data)),
            (Int(1), after, len(after)),
        ):
            if ok:
                assert reader.read(buf, 0, len(buf), None)[1] == stop
            else:
                with pytest.raises(DecodeError) as e:
                    reader.read(buf, 0, len(buf), None)
                where = 65 + (2 if buf is after else 0)
                assert (e.value.offset, e.value.reason) == (
                    where,
                    "values nested deeper than 64 levels",
                )
