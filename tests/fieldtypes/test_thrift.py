"""thrift field types: vectors from the binary protocol, structs encoded by the ``thrift`` and
``thriftpy2`` packages, tagged-field semantics, round trips and fuzz."""

import struct

import pytest
import thriftpy2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TMessageType
from thrift.transport.TTransport import TMemoryBuffer
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.utils import serialize

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes import thrift

T = thrift.TYPES
STRING = T["string"]()
STRUCT = T["struct"]()
STOP = T["stop"]()
field = T["field"]

IDL = """
struct Inner { 1: i32 a, 2: string b }
struct All {
  1: bool flag, 2: byte tiny, 3: i16 small, 4: i32 mid, 5: i64 big, 6: double ratio,
  7: string name, 8: binary blob, 9: Inner inner, 10: list<Inner> items,
  11: map<string, list<i32>> index, 12: set<i64> ids, 14: map<i32, i16> fixed,
  20: list<string> names
}
"""

ALL_FIELDS = [  # (id, kind, attribute)
    (1, "bool", "flag"),
    (2, "byte", "tiny"),
    (3, "i16", "small"),
    (4, "i32", "mid"),
    (5, "i64", "big"),
    (6, "double", "ratio"),
    (7, "string", "name"),
    (8, "binary", "blob"),
    (9, "struct", "inner"),
    (10, "list", "items"),
    (11, "map", "index"),
    (12, "set", "ids"),
    (14, "map", "fixed"),
    (20, "list", "names"),
]


@pytest.fixture(scope="module")
def idl(tmp_path_factory):
    path = tmp_path_factory.mktemp("idl") / "all.thrift"
    path.write_text(IDL)
    return thriftpy2.load(str(path), module_name="all_thrift")


def _all(idl):
    return idl.All(
        flag=True,
        tiny=-3,
        small=-300,
        mid=70000,
        big=-(2**40),
        ratio=0.25,
        name="héllo 😀",
        blob=b"\x00\xff",
        inner=idl.Inner(1, "x"),
        items=[idl.Inner(2, "y"), idl.Inner(3, "z")],
        index={"a": [1, 2], "b": []},
        ids={5, -6},
        fixed={1: 2},
        names=["p", "q"],
    )


def _ser(obj) -> bytes:
    return serialize(obj, TBinaryProtocolFactory())


def test_contract():
    assert set(T) == {"string", "struct", "field", "stop"}
    assert T["field"].PARAMS == ("id", "kind") and T["field"].PARAM_TYPES == (int, str)
    assert (STRING.VALUE, STRUCT.VALUE, STOP.VALUE) == ("str", "bytes", "none")
    for name, cls in T.items():
        assert len(cls.PARAMS) == len(cls.PARAM_TYPES)
        assert cls.VALUE in ("str", "int", "bytes", "map", "raw", "list", "none")
    assert field(1, "i32").VALUE == "int"
    assert field(1, "string").VALUE == "str"
    assert field(1, "binary").VALUE == "bytes"
    assert field(1, "map").VALUE == "raw"
    assert thrift.new_context() is None and thrift.FUNCTIONS == {}
    with pytest.raises(ValueError):
        field(1, "float")
    with pytest.raises(ValueError):
        field(40000, "i32")


def test_string_vectors():
    data = b"\x00\x00\x00\x05hello"
    assert STRING.read(data, 0, len(data), None) == ("hello", 9)
    assert STRING.write("hello", None) == data
    assert STRING.write("", None) == b"\x00\x00\x00\x00"
    assert STRING.write("é", None) == b"\x00\x00\x00\x02\xc3\xa9"
    with pytest.raises(DecodeError) as e:
        STRING.read(b"\xff\xff\xff\xff", 0, 4, None)
    assert e.value.offset == 0
    with pytest.raises(DecodeError) as e:
        STRING.read(b"\x00\x00\x00\x05hell", 0, 8, None)
    with pytest.raises(DecodeError) as e:  # the bytes exist, but past end
        STRING.read(b"\x00\x00\x00\x05hello", 0, 8, None)
    with pytest.raises(DecodeError) as e:
        STRING.read(b"xx\x00\x00\x00\x02a\xff", 2, 8, None)
    assert e.value.offset == 7


def test_application_exception_from_the_thrift_package():
    buf = TMemoryBuffer()
    proto = TBinaryProtocol(buf)
    proto.writeMessageBegin("ping", TMessageType.EXCEPTION, 7)
    TApplicationException(TApplicationException.UNKNOWN_METHOD, "no such method 😀").write(proto)
    proto.writeMessageEnd()
    data = buf.getvalue()
    # envelope: version | type, name, seqid — the spec's part; the struct starts after it
    (word,) = struct.unpack_from(">I", data, 0)
    assert word == 0x80010000 | TMessageType.EXCEPTION
    name, pos = STRING.read(data, 4, len(data), None)
    assert name == "ping"
    pos += 4
    start = pos
    message, pos = field(1, "string").read(data, pos, len(data), None)
    kind, pos = field(2, "i32").read(data, pos, len(data), None)
    _, pos = STOP.read(data, pos, len(data), None)
    assert (message, kind, pos) == (
        "no such method 😀",
        TApplicationException.UNKNOWN_METHOD,
        len(data),
    )
    assert STRUCT.read(data, start, len(data), None) == (data[start:], len(data))
    rebuilt = (
        field(1, "string").write(message, None)
        + field(2, "i32").write(kind, None)
        + STOP.write(None, None)
    )
    assert rebuilt == data[start:]


def test_every_kind_against_thriftpy2(idl):
    obj = _all(idl)
    data = _ser(obj)
    end = len(data)
    assert STRUCT.read(data, 0, end, None) == (data, end)
    pos = 0
    parts = []
    for fid, kind, attr in ALL_FIELDS:
        f = field(fid, kind)
        value, new = f.read(data, pos, end, None)
        expected = getattr(obj, attr)
        if kind in ("struct", "list", "set", "map"):
            # the raw bytes are exactly what thriftpy2 writes for that value alone
            wrapper = idl.All(**{attr: expected})
            assert f.write(value, None) + b"\x00" == _ser(wrapper)
        else:
            assert value == expected
        parts.append(data[pos:new])
        assert f.write(value, None) == data[pos:new]
        pos = new
    assert STOP.read(data, pos, end, None) == (None, end)
    assert b"".join(parts) + b"\x00" == data


def test_tagged_semantics(idl):
    data = _ser(_all(idl))
    end = len(data)
    # skipping: field 12 is found behind eleven fields of every type
    ids, pos = field(12, "set").read(data, 0, end, None)
    assert ids is not None
    # absent: id 13 is missing, the reader stops before field 14 and consumes nothing
    assert field(13, "i32").read(data, pos, end, None) == (None, pos)
    # absent at the end of a struct: STOP is not consumed
    last = data.rindex(b"\x00")
    assert field(30, "i32").read(data, pos, end, None) == (None, last)
    assert field(30, "i32").read(data, last, end, None) == (None, last)
    # absent at the end of the frame
    assert field(1, "i32").read(data, end, end, None) == (None, end)
    # the wrong wire type for the id
    with pytest.raises(DecodeError) as e:
        field(4, "string").read(data, 0, end, None)
    assert e.value.offset == data.index(b"\x08\x00\x04")
    assert field(5, "i64").write(None, None) == b""
    # stop skips what is left
    assert STOP.read(data, 0, end, None) == (None, end)


def test_binary_vs_string():
    data = b"\x0b\x00\x01\x00\x00\x00\x02\xff\xfe\x00"
    assert field(1, "binary").read(data, 0, len(data), None) == (b"\xff\xfe", 9)
    with pytest.raises(DecodeError) as e:
        field(1, "string").read(data, 0, len(data), None)
    assert e.value.offset == 7


def test_bool_and_numbers():
    assert field(1, "bool").write(True, None) == b"\x02\x00\x01\x01"
    assert field(1, "bool").write(False, None) == b"\x02\x00\x01\x00"
    assert field(1, "bool").read(b"\x02\x00\x01\x02", 0, 4, None) == (True, 4)
    assert field(-1, "i16").write(-2, None) == b"\x06\xff\xff\xff\xfe"
    assert field(2, "double").write(1.5, None) == b"\x04\x00\x02" + struct.pack(">d", 1.5)


def test_empty_containers_may_carry_any_element_type():
    # nothing is skipped, so the element types are not looked at
    data = b"\x0f\x00\x01\x00\x00\x00\x00\x00" + b"\x0d\x00\x02\x00\x00\x00\x00\x00\x00" + b"\x00"
    assert STRUCT.read(data, 0, len(data), None) == (data, len(data))


@pytest.mark.parametrize(
    "hexed,offset",
    [
        ("", 0),  # no STOP
        ("08000100", 3),  # i32 cut short
        ("0800", 0),  # header cut short
        ("07000100", 0),  # unknown type 7
        ("0f0001" "08ffffffff" "00", 4),  # negative list size
        ("0f0001" "0800000002" "00000001" "00", 8),  # list overruns
        ("0f0001" "0c7fffffff" "00", 8),  # huge list of structs
        ("0d0001" "0b0b00000001" "00", 9),  # map entry overruns
        ("0f0001" "0900000001" "00", 3),  # unknown element type
        ("0b0001" "ffffffff" "00", 3),  # negative string length
    ],
)
def test_struct_errors(hexed, offset):
    data = bytes.fromhex(hexed)
    with pytest.raises(DecodeError) as e:
        STRUCT.read(data, 0, len(data), None)
    assert e.value.offset == offset
    with pytest.raises(DecodeError):
        STOP.read(data, 0, len(data), None)


def test_deep_nesting_is_a_decode_error():
    depth = 200
    data = b"\x0c\x00\x01" * depth + b"\x00" * (depth + 1)
    with pytest.raises(DecodeError):
        STRUCT.read(data, 0, len(data), None)
    lists = b"\x0f\x00\x01" + b"\x0f\x00\x00\x00\x01" * depth + b"\x08\x00\x00\x00\x00" + b"\x00"
    with pytest.raises(DecodeError):
        STRUCT.read(lists, 0, len(lists), None)
    shallow = b"\x0c\x00\x01" * 10 + b"\x00" * 11
    assert STRUCT.read(shallow, 0, len(shallow), None) == (shallow, len(shallow))


def test_memoryview_and_bytearray(idl):
    data = _ser(_all(idl))
    for buf in (memoryview(data), bytearray(data)):
        assert STRUCT.read(buf, 0, len(data), None) == (data, len(data))
        assert field(7, "string").read(buf, 0, len(data), None)[0] == "héllo 😀"
        assert field(8, "binary").read(buf, 0, len(data), None)[0] == b"\x00\xff"


# ---- round trips -----------------------------------------------------------------------

KIND_VALUES = {
    "bool": st.booleans(),
    "byte": st.integers(-128, 127),
    "i16": st.integers(-(2**15), 2**15 - 1),
    "i32": st.integers(-(2**31), 2**31 - 1),
    "i64": st.integers(-(2**63), 2**63 - 1),
    "double": st.floats(allow_nan=False),
    "string": st.text(),
    "binary": st.binary(),
}


# st.text() builds its character tables on first use: slow once on a fresh machine
TEXT = settings(suppress_health_check=[HealthCheck.too_slow])


@TEXT
@given(st.sampled_from(sorted(KIND_VALUES)), st.data(), st.integers(-(2**15), 2**15 - 1))
def test_field_round_trip(kind, data, fid):
    value = data.draw(KIND_VALUES[kind])
    f = field(fid, kind)
    encoded = f.write(value, None) + b"\x00"
    assert f.read(encoded, 0, len(encoded), None) == (value, len(encoded) - 1)
    assert STRUCT.read(encoded, 0, len(encoded), None) == (encoded, len(encoded))


@TEXT
@given(st.text())
def test_string_round_trip(text):
    data = STRING.write(text, None)
    assert STRING.read(data, 0, len(data), None) == (text, len(data))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.builds(
        dict,
        flag=st.booleans(),
        mid=st.integers(-(2**31), 2**31 - 1),
        name=st.text(max_size=20),
        ids=st.sets(st.integers(-(2**63), 2**63 - 1), max_size=5),
        names=st.lists(st.text(max_size=5), max_size=5),
        index=st.dictionaries(
            st.text(max_size=5), st.lists(st.integers(-(2**31), 2**31 - 1), max_size=3), max_size=3
        ),
    )
)
def test_thriftpy2_structs_skip_exactly(idl, kwargs):
    data = _ser(idl.All(**kwargs))
    assert STRUCT.read(data + b"junk", 0, len(data), None) == (data, len(data))
    assert STOP.read(data, 0, len(data), None) == (None, len(data))


# ---- fuzz ------------------------------------------------------------------------------

READERS = [STRING, STRUCT, STOP] + [field(i, k) for i, k, _ in ALL_FIELDS]


def _outcome(reader, buf, pos, end):
    try:
        return reader.read(buf, pos, end, None)
    except DecodeError as e:
        return ("error", e.offset)


def _check(data: bytes, end: int):
    for reader in READERS:
        got = _outcome(reader, data, 0, end)
        assert 0 <= got[1] <= end  # the position after a value, or the offset of an error
        # whatever lies past end changes nothing
        assert _outcome(reader, data[:end] + b"\x0c\x0f\xff", 0, end) == got


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data):
    _check(data, len(data))


@pytest.fixture(scope="module")
def valid_struct(idl):
    return _ser(_all(idl))


@settings(max_examples=300)
@given(st.data())
def test_fuzz_mutated_structs(valid_struct, data):
    buf = bytearray(valid_struct)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    end = data.draw(st.integers(0, len(buf)))
    _check(bytes(buf), end)


# ---- exact errors, exact boundaries ------------------------------------------------------


@pytest.mark.parametrize(
    "hexed,offset,reason",
    [
        ("", 0, "struct has no STOP before the end of the frame"),
        ("0800", 0, "field header overruns the frame"),
        ("070001", 0, "unknown field type 7"),
        ("08000100", 3, "i32 value overruns the frame"),
        ("080001", 3, "i32 value overruns the frame"),  # a whole header, no value
        ("0a0001" "00000000000000", 3, "i64 value overruns the frame"),
        ("0b0001" "000000", 3, "string length overruns the frame"),
        ("0b0001" "ffffffff", 3, "negative string length -1"),
        ("0b0001" "00000005abcd", 3, "string of 5 bytes overruns the frame"),
        ("0d0001" "000000", 3, "map header overruns the frame"),
        ("0d0001" "0b0bffffffff", 5, "negative map size -1"),
        ("0d0001" "070b00000001", 3, "unknown map key type 7"),
        ("0d0001" "0b0700000001", 4, "unknown map value type 7"),
        (
            "0d0001" "080800000002" "0000000100000002" "000000",
            9,
            "map of 2 entries overruns the frame",
        ),
        ("0d0001" "0b0b00000002" "00", 9, "map of 2 entries overruns the frame"),
        ("0f0001" "0800", 3, "list header overruns the frame"),
        ("0e0001" "0800", 3, "set header overruns the frame"),
        ("0f0001" "08fffffffe", 4, "negative list size -2"),
        ("0e0001" "0700000001", 3, "unknown set element type 7"),
        ("0f0001" "0800000002" "00000001", 8, "list of 2 elements overruns the frame"),
        ("0f0001" "0b00000002" "00", 8, "list of 2 elements overruns the frame"),
        ("0e0001" "1000000001" + "00" * 15, 8, "set of 1 elements overruns the frame"),
    ],
)
def test_struct_errors_say_where_and_what(hexed, offset, reason):
    data = bytes.fromhex(hexed)
    with pytest.raises(DecodeError) as e:
        STRUCT.read(data, 0, len(data), None)
    assert (e.value.offset, e.value.reason) == (offset, reason)


@pytest.mark.parametrize(
    "kind,hexed,offset,reason",
    [
        ("bool", "020001", 3, "bool overruns the frame"),
        ("byte", "030001", 3, "byte overruns the frame"),
        ("i16", "06000100", 3, "i16 overruns the frame"),
        ("i32", "080001000000", 3, "i32 overruns the frame"),
        ("i32", "080001", 3, "i32 overruns the frame"),
        ("i64", "0a0001" "00000000000000", 3, "i64 overruns the frame"),
        ("double", "040001" "00000000000000", 3, "double overruns the frame"),
        ("binary", "0b0001" "000000", 3, "binary length overruns the frame"),
        ("binary", "0b0001" "ffffffff", 3, "negative binary length -1"),
        ("binary", "0b0001" "00000003ab", 3, "binary of 3 bytes overruns the frame"),
        ("string", "0b0001" "000000", 3, "string length overruns the frame"),
        ("string", "0b0001" "fffffffe", 3, "negative string length -2"),
        ("string", "0b0001" "00000003ab", 3, "string of 3 bytes overruns the frame"),
        ("string", "0b0001" "00000003" "61c328", 8, "invalid UTF-8 in a string"),
        ("i32", "07" "0001", 0, "field 1 is type 7 on the wire, expected i32"),
        ("string", "08" "0001" "00000001", 0, "field 1 is i32 on the wire, expected string"),
        ("i32", "0b", 0, "field header overruns the frame"),
        ("i32", "0b00", 0, "field header overruns the frame"),
        ("i32", "070000", 0, "unknown field type 7"),  # a lower id, skipped: a type is needed
        ("list", "0f0001" "0800000001", 8, "list of 1 elements overruns the frame"),
    ],
)
def test_field_errors_say_where_and_what(kind, hexed, offset, reason):
    data = bytes.fromhex(hexed)
    with pytest.raises(DecodeError) as e:
        field(1, kind).read(data, 0, len(data), None)
    assert (e.value.offset, e.value.reason) == (offset, reason)


def test_field_parameters_are_checked_with_their_message():
    with pytest.raises(ValueError) as e:
        field(1, "float")
    assert str(e.value) == (
        "thrift.field: unknown kind 'float' (have: bool, byte, i16, i32, i64, double, string,"
        " binary, struct, list, set, map)"
    )
    for bad in (-(2**15) - 1, 2**15):
        with pytest.raises(ValueError) as e:
            field(bad, "i32")
        assert str(e.value) == f"thrift.field: id {bad} does not fit in an i16"
    for good in (-(2**15), 2**15 - 1):
        assert (
            field(good, "i32").write(5, None)
            == b"\x08" + struct.pack(">h", good) + b"\x00\x00\x00\x05"
        )


# (kind, one value of it on the wire, what field() reads it as; None: its raw bytes)
EXACT = [
    ("bool", "01", True),
    ("byte", "ff", -1),
    ("i16", "fffe", -2),
    ("i32", "00010000", 65536),
    ("i64", "8000000000000000", -(2**63)),
    ("double", "3ff8000000000000", 1.5),
    ("string", "00000003" "616263", "abc"),
    ("string", "00000000", ""),
    ("binary", "00000002" "00ff", b"\x00\xff"),
    ("struct", "08000100000007" "00", None),
    ("struct", "00", None),
    ("list", "0800000002" "0000000100000002", None),  # fixed-size elements
    ("list", "0b00000002" "00000001" "61" "00000000", None),  # variable-size elements
    ("list", "0c00000003" "000000", None),  # three empty structs: one byte each
    ("list", "0000000000", None),  # empty, with element type 0
    ("set", "0a00000001" "0000000000000005", None),
    ("map", "080600000002" "000000010002" "000000030004", None),  # fixed-size entries
    ("map", "0b0b00000001" "00000001" "6b" "00000001" "76", None),
    ("map", "080b00000002" "00000005" "00000001" "61" "00000006" "00000000", None),  # i32 keys
    ("map", "0c0c00000002" "00000000", None),  # empty structs: two bytes an entry
    ("map", "000000000000", None),  # empty, element types 0
]


@pytest.mark.parametrize("kind,hexed,value", EXACT)
def test_a_value_that_ends_the_frame_exactly_is_read_and_skipped(kind, hexed, value):
    f = field(1, kind)
    body = bytes.fromhex(hexed)
    data = f._header + body
    end = len(data)
    expected = body if value is None else value
    assert f.read(data, 0, end, None) == (expected, end)
    assert f.write(expected, None) == data
    # skipped on the way to a higher id, which is absent at the end of the frame
    assert field(2, "i32").read(data, 0, end, None) == (None, end)
    assert STOP.read(data + b"\x00", 0, end + 1, None) == (None, end + 1)
    # one byte short: an error, never a value read past the end
    with pytest.raises(DecodeError):
        f.read(data, 0, end - 1, None)
    with pytest.raises(DecodeError):
        field(2, "i32").read(data, 0, end - 1, None)


def test_a_uuid_is_skipped_whole():
    data = b"\x10\x00\x01" + bytes(range(16))
    assert field(2, "i32").read(data, 0, len(data), None) == (None, len(data))
    with pytest.raises(DecodeError) as e:
        field(2, "i32").read(data, 0, len(data) - 1, None)
    assert (e.value.offset, e.value.reason) == (3, "uuid value overruns the frame")


def _structs(k: int) -> bytes:
    """A struct holding k structs nested in field 1, each inside the one before."""
    return b"\x0c\x00\x01" * k + b"\x00" * (k + 1)


def _lists(k: int) -> bytes:
    """A struct whose field 1 is a list holding k lists nested, the last of no i32."""
    return b"\x0f\x00\x01" + b"\x0f\x00\x00\x00\x01" * k + b"\x08\x00\x00\x00\x00" + b"\x00"


def _maps(k: int) -> bytes:
    """A struct whose field 1 is a map<i32, map<...>> holding k maps nested, the last empty."""
    entry = b"\x08\x0d\x00\x00\x00\x01" + b"\x00\x00\x00\x07"  # one entry: key 7, a map
    return b"\x0d\x00\x01" + entry * k + b"\x08\x08\x00\x00\x00\x00" + b"\x00"


def test_nesting_limit_is_exact_for_every_reader():
    ok, deep = _structs(64), _structs(65)
    assert STRUCT.read(ok, 0, len(ok), None) == (ok, len(ok))
    assert STOP.read(ok, 0, len(ok), None) == (None, len(ok))
    assert field(1, "struct").read(ok, 0, len(ok), None) == (ok[3:-1], len(ok) - 1)
    assert field(2, "i32").read(ok, 0, len(ok), None) == (None, len(ok) - 1)
    for reader in (STRUCT, STOP, field(1, "struct"), field(2, "i32")):
        with pytest.raises(DecodeError) as e:
            reader.read(deep, 0, len(deep), None)
        assert (e.value.offset, e.value.reason) == (3 * 65, "structs nested deeper than 64 levels")
    ok, deep = _lists(63), _lists(64)
    assert STRUCT.read(ok, 0, len(ok), None) == (ok, len(ok))
    assert field(1, "list").read(ok, 0, len(ok), None) == (ok[3:-1], len(ok) - 1)
    assert field(2, "i32").read(ok, 0, len(ok), None) == (None, len(ok) - 1)
    for reader in (STRUCT, STOP, field(1, "list"), field(2, "i32")):
        with pytest.raises(DecodeError) as e:
            reader.read(deep, 0, len(deep), None)
        assert (e.value.offset, e.value.reason) == (
            3 + 5 * 64,
            "values nested deeper than 64 levels",
        )
    ok, deep = _maps(63), _maps(64)
    assert STRUCT.read(ok, 0, len(ok), None) == (ok, len(ok))
    assert field(1, "map").read(ok, 0, len(ok), None) == (ok[3:-1], len(ok) - 1)
    for reader in (STRUCT, STOP, field(1, "map"), field(2, "i32")):
        with pytest.raises(DecodeError) as e:
            reader.read(deep, 0, len(deep), None)
        assert (e.value.offset, e.value.reason) == (
            3 + 10 * 64,
            "values nested deeper than 64 levels",
        )


def test_struct_writes_its_bytes_back():
    data = bytes.fromhex("08000100000007" "00")
    assert STRUCT.write(data, None) == data
    assert STRUCT.write(bytearray(data), None) == data
    assert STOP.write(None, None) == b"\x00"
    for bad in (data[:-1], data + b"\x00", b""):  # not exactly one struct: refused
        with pytest.raises(ValueError, match="not one struct"):
            STRUCT.write(bad, None)


# ---- measure: the same walk over a buffer that grows while it waits ----------------------
class Growing(bytearray):
    """A buffer whose reads by index or slice are counted."""

    def __getitem__(self, key):
        got = super().__getitem__(key)
        self.examined = getattr(self, "examined", 0) + (len(got) if isinstance(key, slice) else 1)
        return got


def _measured(reader, data: bytes, step: int = 1):
    """Feed ``data`` to ``reader.measure`` ``step`` bytes at a time, resuming it each time it
    waits: (the value and position it returns, the bytes it examined, how often it waited)."""
    buf = Growing()
    gen = reader.measure(buf, 0, None)
    waits = 0
    need = 0
    try:
        while True:
            need = gen.send(None)
            waits += 1
            assert need > len(buf), (need, len(buf))  # it waits only for bytes not there
            while len(buf) < need:
                if len(buf) >= len(data):
                    return ("needs", need), buf.examined if hasattr(buf, "examined") else 0, waits  # fmt: skip
                buf += data[len(buf) : len(buf) + step]
    except StopIteration as stop:
        return stop.value, getattr(buf, "examined", 0), waits


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_measure_finds_the_end_read_finds(idl, step):
    data = _ser(_all(idl))
    text = "Grüße".encode()
    assert _measured(STRING, struct.pack(">i", len(text)) + text, step)[0] == (None, 4 + len(text))  # fmt: skip
    long = _ser(idl.All(name="n" * 300, names=["x" * 100, "y" * 70000], blob=b"b" * 5000))
    for reader, data in [(r, d) for d in (data, long) for r in READERS[1:]]:  # a struct's readers
        got, examined, _ = _measured(reader, data, step)
        value, end = reader.read(data, 0, len(data), None)
        # the end read finds; the value only where a size may read it (an integer)
        assert got == (value if reader.VALUE == "int" else None, end), reader
        # headers looked at once however the bytes arrive, values stepped over unread (an
        # integer read once more when it is returned)
        assert examined <= len(data) // 4, (reader, examined, len(data))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.builds(dict, names=st.lists(st.text(max_size=5), max_size=50), ids=st.sets(st.integers(-(2**63), 2**63 - 1), max_size=50)), st.integers(1, 9))  # fmt: skip
def test_measure_agrees_with_read_on_thriftpy2_structs(idl, kwargs, step):
    data = _ser(idl.All(**kwargs))
    assert _measured(STRUCT, data + b"\x0c", step)[0] == (None, len(data))
    for cut in range(0, len(data), max(1, len(data) // 13)):  # an unfinished struct waits
        assert _measured(STRUCT, data[:cut], step)[0][0] == "needs"


def _measure_outcome(reader, data: bytes):
    try:
        got, _, _ = _measured(reader, data, len(data) or 1)
    except DecodeError as e:
        return ("error", e.offset)
    if got[0] != "needs" and got[1] > len(data):  # a value stepped over that is not all there
        return ("needs", got[1])
    return got


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_measure_fuzz_agrees_with_read(data):
    for reader in READERS:
        read = _outcome(reader, data, 0, len(data))
        measured = _measure_outcome(reader, data)
        if measured[0] == "needs":  # more bytes wanted than there are: read finds an overrun
            assert read[0] == "error" or reader is not STRUCT and read[1] == len(data), (reader, read)  # fmt: skip
        elif measured[0] != "error" and reader.VALUE != "int":  # (a value measure keeps not)
            assert (read[0] != "error", read[1]) == (True, measured[1]), reader
        else:
            assert measured == read, reader


def test_measure_of_a_huge_count_asks_for_the_bytes_at_once():
    """A list of 2**31 - 1 i64s is not walked: the bytes it needs are asked for in one step."""
    data = b"\x0f\x00\x01\x0a\x7f\xff\xff\xff"
    gen = STRUCT.measure(bytearray(data), 0, None)
    assert next(gen) == 3 + 5 + 8 * (2**31 - 1) + 1  # and its STOP
    for reader in (STRUCT, STOP, field(1, "struct"), field(2, "i32")):  # as read refuses it
        with pytest.raises(DecodeError) as e:
            _measured(reader, _structs(65))
        assert (e.value.offset, e.value.reason) == (3 * 65, "structs nested deeper than 64 levels")
