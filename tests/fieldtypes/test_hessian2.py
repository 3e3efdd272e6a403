"""hessian2 field types: the Hessian 2.0 specification's examples, bytes written by real
encoders (dubbo-ssl-python's, and hessian.js's recorded below), Java's canonical string and
int forms, round trips and fuzz."""

import pytest
from dubbo_ssl.codec.encoder import Object, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes import hessian2 as h2

T = h2.TYPES
STRING, INT, ANY, MAP = T["string"](), T["int"](), T["any"](), T["map"]()
Raw = h2.Raw
TEXT = settings(suppress_health_check=[HealthCheck.too_slow])  # st.text() is slow once


def x(text: str) -> bytes:
    """Bytes written like the specification's examples: hex pairs, and 'quoted' ASCII."""
    out = bytearray()
    for token in text.split():
        if token.startswith("'"):
            out += token.strip("'").encode()
        else:
            out += bytes.fromhex(token)
    return bytes(out)


def read(t, data, ctx=None):
    return t.read(data, 0, len(data), h2.new_context() if ctx is None else ctx)


def test_contract():
    assert set(T) == {"string", "int", "any", "map"}
    assert [T[n].VALUE for n in ("string", "int", "any", "map")] == ["str", "int", "raw", "map"]
    for cls in T.values():
        assert cls.PARAMS == () and cls.PARAM_TYPES == ()
    assert set(h2.FUNCTIONS) == {"arg_count", "sofa_exception"}
    ctx = h2.new_context()
    assert ctx.classes == [] and ctx.types == [] and h2.new_context() is not ctx
    assert h2.encode_string("x") == STRING.write("x", None)


def test_sofa_exception_in_the_draft_codes_sofa_writes():
    # what sofa-rpc-node's server writes for an error answer (tests/peers: its own error
    # answers), without the stack trace: 'O' definition, 'o' instance, fields, then values
    name = b"com.alipay.remoting.rpc.exception.RpcServerException"
    head = b"O\xc8\x34" + name + b"\x93\x0ddetailMessage\x0astackTrace\x05cause" + b"o\x90"
    sofa = h2.FUNCTIONS["sofa_exception"]
    assert sofa(name.decode(), "boom") == head + b"\x04boomNN"
    message = "protoc-x: 502 upstream unreachable or reset"  # 43 units: 'S' + u16, not 0x30
    assert sofa(name.decode(), message) == head + b"S\x00\x2b" + message.encode() + b"NN"
    assert sofa(name.decode(), None) == head + b"NNN"
    assert sofa(name.decode(), "😀") == head + b"\x02\xed\xa0\xbd\xed\xb8\x80NN"  # CESU-8
    long = "a" * 0x7FFF + "😀" + "b"  # the pair would straddle 0x8000: the chunk stops before
    body = sofa(name.decode(), long)[len(head) :]
    assert body.startswith(b"s\x7f\xff" + b"a" * 0x7FFF + b"S\x00\x03\xed\xa0\xbd")
    assert body.endswith(b"bNN")


# ---- ints ------------------------------------------------------------------------------

SPEC_INTS = [  # the specification's int and long examples
    ("90", 0),
    ("80", -16),
    ("bf", 47),
    ("c8 00", 0),
    ("c0 00", -2048),
    ("c7 00", -256),
    ("cf ff", 2047),
    ("d4 00 00", 0),
    ("d0 00 00", -262144),
    ("d7 ff ff", 262143),
    ("49 00 00 00 00", 0),
    ("49 00 00 01 2c", 300),
    ("e0", 0),
    ("d8", -8),
    ("ef", 15),
    ("f8 00", 0),
    ("f0 00", -2048),
    ("f7 00", -256),
    ("ff ff", 2047),
    ("3c 00 00", 0),
    ("38 00 00", -262144),
    ("3f ff ff", 262143),
    ("59 00 00 00 00", 0),
    ("59 00 00 01 2c", 300),
    ("4c 00 00 00 00 00 00 01 2c", 300),
]


@pytest.mark.parametrize("hexed,value", SPEC_INTS)
def test_int_spec_vectors(hexed, value):
    data = x(hexed)
    assert read(INT, data) == (value, len(data))
    assert read(ANY, data) == (data, len(data))


@pytest.mark.parametrize(
    "value,hexed",
    [
        (0, "90"),
        (-16, "80"),
        (47, "bf"),
        (48, "c8 30"),
        (-17, "c7 ef"),
        (-2048, "c0 00"),
        (-2049, "d3 f7 ff"),
        (2047, "cf ff"),
        (2048, "d4 08 00"),
        (-262144, "d0 00 00"),
        (-262145, "49 ff fb ff ff"),
        (262143, "d7 ff ff"),
        (262144, "49 00 04 00 00"),
        (-(2**31), "49 80 00 00 00"),
        (2**31 - 1, "49 7f ff ff ff"),
        (-(2**31) - 1, "4c ff ff ff ff 7f ff ff ff"),
        (2**31, "4c 00 00 00 00 80 00 00 00"),
        (-(2**63), "4c 80 00 00 00 00 00 00 00"),
        (2**63 - 1, "4c 7f ff ff ff ff ff ff ff"),
    ],
)
def test_int_writes_java_forms(value, hexed):
    assert INT.write(value, None) == x(hexed)


def test_int_errors():
    for too_big in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError) as e:
            INT.write(too_big, None)
        assert str(e.value) == f"hessian2 int {too_big} overflows 64 bits"
    with pytest.raises(ValueError) as e:
        INT.write(None, None)
    assert str(e.value) == "hessian2.int cannot write None"
    for bad, offset, reason in [
        ("", 0, "expected an int, found the end of the frame"),
        ("c8", 0, "int overruns the frame"),
        ("d0 00", 0, "int overruns the frame"),
        ("49 00 00", 0, "int overruns the frame"),
        ("f0", 0, "long overruns the frame"),
        ("38 00", 0, "long overruns the frame"),
        ("59 00 00 00", 0, "long overruns the frame"),
        ("4c 00 00 00 00 00 00 00", 0, "long overruns the frame"),
        ("4e", 0, "expected an int, found code 0x4e"),
        ("5b", 0, "expected an int, found code 0x5b"),  # a double is not an int
        ("05 'hello'", 0, "expected an int, found code 0x05"),
    ]:
        with pytest.raises(DecodeError) as e:
            read(INT, x(bad))
        assert (e.value.offset, e.value.reason) == (offset, reason)


@given(st.integers(-(2**63), 2**63 - 1))
def test_int_round_trip_and_dubbo_ssl_agrees(value):
    data = INT.write(value, None)
    assert read(INT, data) == (value, len(data))
    # dubbo-ssl-python's encoder writes the same forms (it masks bytes only at the end)
    assert data == bytes(b & 0xFF for b in Request._encode_int(value))


# ---- strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hexed,value",
    [
        ("00", ""),
        ("05 'hello'", "hello"),
        ("01 c3 83", "\u00c3"),
        ("53 00 05 'hello'", "hello"),
        ("30 03 'abc'", "abc"),
        ("52 00 02 'ab' 01 'c'", "abc"),  # chunk, then a short final part
        ("52 00 01 'a' 52 00 01 'b' 53 00 01 'c'", "abc"),
        ("52 00 01 'a' 30 01 'b'", "ab"),
        ("4e", None),
        # hessian.js: CJK (3 bytes, 1 unit each), and an emoji as CESU-8 surrogates
        ("07e4b8ade69687e5ad97e7aca6e4b8b2e6b58be8af95", "中文字符串测试"),
        ("0461eda0bdedb88062", "a😀b"),
        ("02 f0 9f 98 80", "😀"),  # 4-byte UTF-8: one character, two units
        ("52 00 01 ed a0 bd 01 ed b8 80", "😀"),  # a pair split across chunks
    ],
)
def test_string_vectors(hexed, value):
    data = x(hexed)
    assert read(STRING, data + b"\x90") == (value, len(data))
    assert read(ANY, data) == (data, len(data))


@pytest.mark.parametrize(
    "hexed,offset,reason",
    [
        ("", 0, "expected a string, found the end of the frame"),
        ("05 'hell'", 1, "string overruns the frame"),
        ("30", 0, "string length overruns the frame"),
        ("53 00", 0, "string length overruns the frame"),
        # a 2-unit character in a 1-unit string
        ("01 f0 9f 98 80", 1, "a character crosses the end of the string"),
        # a lone surrogate
        ("01 ed a0 bd", 0, "string holds an unpaired UTF-16 surrogate"),
        # not UTF-8
        ("02 'a' ff", 2, "string overruns the frame"),
        # overlong (Java's modified UTF-8 NUL): not UTF-8
        ("02 c0 80", 1, "invalid UTF-8 in a string"),
        # a chunk without the rest
        ("52 00 01 'a'", 4, "string chunk is not followed by the rest of the string"),
        # a chunk followed by an int
        ("52 00 01 'a' 90", 4, "expected a string chunk, found code 0x90"),
        # not a string
        ("91", 0, "expected a string, found code 0x91"),
        ("31", 0, "string length overruns the frame"),
        ("52 00", 0, "string length overruns the frame"),
        # a character cut by the end of the frame
        ("02 c3", 1, "string overruns the frame"),
    ],
)
def test_string_errors(hexed, offset, reason):
    with pytest.raises(DecodeError) as e:
        read(STRING, x(hexed))
    assert (e.value.offset, e.value.reason) == (offset, reason)


def test_string_never_reads_past_end():
    data = x("05 'hello'")
    with pytest.raises(DecodeError):
        STRING.read(data, 0, 5, None)
    with pytest.raises(DecodeError):
        STRING.read(x("03 e4 b8 ad e4 b8 ad e4 b8 ad"), 0, 8, None)


@pytest.mark.parametrize(
    "length,header",
    [
        (0, "00"),
        (31, "1f"),
        (32, "30 20"),
        (1023, "33 ff"),
        (1024, "53 04 00"),
        (0x8000, "53 80 00"),
    ],
)
def test_string_writes_java_forms(length, header):
    assert STRING.write("a" * length, None) == x(header) + b"a" * length
    assert STRING.write("é" * length, None) == x(header) + "é".encode() * length


def test_string_chunks_like_java():
    data = STRING.write("a" * 0x8001, None)
    assert data == b"R\x80\x00" + b"a" * 0x8000 + b"\x01a"
    # a chunk never ends on a high surrogate: the pair goes whole into the next part
    text = "a" * 0x7FFF + "😀" + "b"
    data = STRING.write(text, None)
    assert data == b"R\x7f\xff" + b"a" * 0x7FFF + x("03 ed a0 bd ed b8 80 'b'")
    assert read(STRING, data) == (text, len(data))
    big = "中" * 70000  # hessian.js writes the same chunks
    data = STRING.write(big, None)
    assert data.startswith(x("52 80 00 e4 b8 ad"))
    assert read(STRING, data) == (big, len(data))
    assert STRING.write(None, None) == b"N"
    assert STRING.write("😀", None) == x("02 ed a0 bd ed b8 80")  # CESU-8, as Java writes


@TEXT
@given(st.text())
def test_string_round_trip(text):
    data = STRING.write(text, None)
    assert read(STRING, data) == (text, len(data))
    assert read(ANY, data) == (data, len(data))


@TEXT
@given(st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=1100))
def test_string_matches_dubbo_ssl(text):
    # dubbo-ssl-python counts code points, which are UTF-16 units inside the BMP
    theirs = bytes(b & 0xFF for b in Request({})._encode_str(text))
    assert STRING.write(text, None) == theirs


@TEXT
@given(st.text(min_size=1, max_size=40), st.integers(0, 3))
def test_long_strings_with_every_width(piece, repeat):
    text = piece * (200 * repeat + 1)
    data = STRING.write(text, None)
    assert read(STRING, data) == (text, len(data))


# ---- any: every kind of value ----------------------------------------------------------

SPEC_VALUES = [
    "4e",  # null
    "46",
    "54",
    "20",  # empty binary
    "23 01 02 03",
    "34 03 " + "00" * 3,
    "42 00 02 aa bb",
    "41 00 01 aa 23 01 02 03",  # binary chunk then a short final part
    "41 00 01 aa 20",  # ... an empty one
    "41 00 01 aa 2f" + " 0f" * 15,  # ... one of 15 bytes
    "41 00 01 aa 34 00",  # ... a two-byte length of 0
    "41 00 01 aa 37 00" + " 37" * 0x300,  # ... the longest code, 0x300 bytes
    "42 00 00",  # an empty final chunk
    "43 01 'A' 90 44 3f f0 00 00 00 00 00 00",  # a class definition, then a double
    "43 01 'A' 90 43 01 'B' 91 01 'f' 61 90",  # two class definitions, then an object of B
    "51 90",  # a reference to the first object
    "4a 00 00 00 d0 4b 92 84 b8",  # date, 09:51:31 May 8, 1998 UTC
    "4b 00 e3 83 8f",  # date in minutes
    "5b",
    "5c",
    "5d 80",
    "5e 7f ff",
    "5f 00 00 2f da",
    "44 40 28 80 00 00 00 00 00",
    "56 04 '[int' 92 90 91",  # fixed typed list
    "55 04 '[int' 90 91 5a",  # variable typed list
    "57 90 91 5a",  # variable untyped list
    "58 92 90 91",  # fixed untyped list
    "72 04 '[int' 90 91",  # compact typed list
    "7a 90 91",  # compact untyped list
    "78",  # empty compact untyped list
    "48 91 03 'fee' 92 03 'fie' 93 03 'foe' 5a",
    "4d 13 'com.caucho.test.Car' 05 'color' 0a 'aquamarine' 05 'model' 06 'Beetle'"
    " 07 'mileage' 49 00 01 00 00 5a",
    "43 0b 'example.Car' 92 05 'color' 05 'model' 4f 90 03 'red' 08 'corvette'",
    "43 0a 'LinkedList' 92 04 'head' 04 'tail' 60 91 51 90",  # a ref to itself
    "43 00 90 60",  # a class with no fields
    # hessian.js 2.x
    "7c910374776f5f00000dac4e",  # [1, "two", 3.5, null]
    "72075b737472696e6701610162",  # typed list of strings
    "480161910162017801637a91925a",
    "4310636f6d2e6578616d706c652e5573657293046e616d650361676504746167736003626f62ae7a01780179",
    "7b4310636f6d2e6578616d706c652e5573657292046e616d65036167656003626f62ae6002616c934311636f6d"
    "2e6578616d706c652e47726f757091076d656d6265727361795191",  # objects, a ref
    "4310636f6d2e6578616d706c652e4e6f6465920176046e657874609160924e",  # nested objects
    "7a71075b737472696e67016171900162",  # the second list's type is a ref
    "430b636f6d2e782e436f6c6f7291046e616d656003524544",  # enum
    "410ffd" + "01" * 0xFFD + "34 03 " + "01" * 3,  # hessian.js binary chunks
]


@pytest.mark.parametrize("hexed", SPEC_VALUES)
def test_any_skips_exactly(hexed):
    data = x(hexed)
    assert ANY.read(data + b"\x90junk", 0, len(data), h2.new_context()) == (data, len(data))
    assert ANY.write(data, None) == data
    # one byte less is never a whole value
    with pytest.raises(DecodeError):
        ANY.read(data, 0, len(data) - 1, h2.new_context())


def test_context_is_shared_between_values():
    ctx = h2.new_context()
    first = x("43 0b 'example.Car' 92 05 'color' 05 'model' 60 03 'red' 08 'corvette'")
    second = x("60 05 'green' 05 'civic'")
    typed = x("72 04 '[int' 90 91")
    reuse = x("72 90 92 93")  # type 0 of this body
    body = first + typed + second + reuse
    pos = 0
    for part in (first, typed, second, reuse):
        value, pos = ANY.read(body, pos, len(body), ctx)
        assert value == part
    assert ctx.classes == [("example.Car", ("color", "model"))]
    assert ctx.types == ["[int"]
    # without the definition the object cannot be read
    with pytest.raises(DecodeError) as e:
        read(ANY, second)
    assert e.value.offset == 0
    with pytest.raises(DecodeError) as e:
        read(ANY, reuse)
    assert e.value.offset == 1


@pytest.mark.parametrize(
    "hexed,offset,reason",
    [
        ("", 0, "expected a value, found the end of the frame"),
        # end of list without a list
        ("5a", 0, "unexpected end of list or map ('Z')"),
        # reserved codes
        ("40", 0, "unknown value code 0x40"),
        ("45", 0, "unknown value code 0x45"),
        ("47", 0, "unknown value code 0x47"),
        ("50", 0, "unknown value code 0x50"),
        ("44 00 00", 0, "value 0x44 overruns the frame"),
        ("4a 00", 0, "value 0x4a overruns the frame"),
        ("23 01 02", 0, "value 0x23 overruns the frame"),
        ("34", 0, "binary length overruns the frame"),
        ("34 05 00", 0, "binary overruns the frame"),
        # binary chunk without the rest
        ("41 00 02 aa bb", 5, "binary chunk is not followed by the rest of the binary"),
        # binary chunk followed by an int
        ("41 00 01 aa 91", 4, "expected a binary chunk, found code 0x91"),
        # no 'Z'
        ("57 90 91", 3, "list has no end ('Z') before the end of the frame"),
        # negative length
        ("58 8f", 1, "bad list length -1"),
        # huge length
        ("58 49 7f ff ff ff 90", 1, "bad list length 2147483647"),
        ("56 04 '[int' 49 7f ff ff ff", 6, "bad list length 2147483647"),
        # a type must be a string or an int
        ("70 91", 1, "type reference 1 to an unknown type"),
        # type ref to an unknown type
        ("71 91 90", 1, "type reference 1 to an unknown type"),
        # a key without its value
        ("48 91 5a", 2, "unexpected end of list or map ('Z')"),
        ("4d", 1, "expected a type, found the end of the frame"),
        # object of an unknown class
        ("60", 0, "object of unknown class definition 0"),
        ("4f 90", 0, "object of unknown class definition 0"),
        # class definition without its value
        ("43 03 'Foo' 91 03 'bar'", 10, "class definition is not followed by a value"),
        # negative field count
        ("43 03 'Foo' 8f", 5, "bad field count -1 in class definition 'Foo'"),
        # more fields than bytes
        ("43 03 'Foo' 49 00 00 ff ff", 5, "bad field count 65535 in class definition 'Foo'"),
        # class name not a string
        ("43 91 90 60", 1, "expected a string, found code 0x91"),
        # negative ref
        ("51 8f", 0, "negative reference -1"),
        ("51", 1, "expected an int, found the end of the frame"),
        ("34 05 00", 0, "binary overruns the frame"),
        # a 2-byte binary length of 0x301
        ("37 01 02", 0, "binary overruns the frame"),
        ("41 00", 0, "binary length overruns the frame"),
        # a string code after a binary chunk
        ("41 00 01 aa 30", 4, "expected a binary chunk, found code 0x30"),
        # a short final part of 15 bytes, with one
        ("41 00 01 aa 2f 01", 4, "binary overruns the frame"),
        ("41 00 01 aa 37 00", 4, "binary overruns the frame"),
        ("42 00 01", 0, "binary overruns the frame"),
        ("57 90 91", 3, "list has no end ('Z') before the end of the frame"),
        # a key at the end of the frame
        ("48 91", 2, "expected a value, found the end of the frame"),
        # no 'Z'
        ("48 91 90", 3, "map has no end ('Z') before the end of the frame"),
        # one field, named '': as many fields as bytes left
        ("43 01 'A' 91 00", 5, "class definition is not followed by a value"),
        # five fields, one byte left
        ("43 01 'A' 95 00", 3, "bad field count 5 in class definition 'A'"),
        ("51 8e", 0, "negative reference -2"),
        ("c8", 0, "value 0xc8 overruns the frame"),
        ("5f 00 00 00", 0, "value 0x5f overruns the frame"),
        # 65 lists nested: one level too many
        ("79" * 65 + " 4e", 64, "values nested deeper than 64 levels"),
        # 65 maps nested
        ("48 90 " * 65 + "4e", 128, "values nested deeper than 64 levels"),
    ],
)
def test_any_errors(hexed, offset, reason):
    with pytest.raises(DecodeError) as e:
        read(ANY, x(hexed))
    assert (e.value.offset, e.value.reason) == (offset, reason)


def test_deep_nesting_is_a_decode_error():
    for opener, closer in [(b"\x79", b""), (b"\x57", b"Z"), (b"H\x90", b"Z"), (b"\x55\x01a", b"Z")]:
        data = opener * 500 + b"N" + closer * 500
        with pytest.raises(DecodeError):
            read(ANY, data)
        ok = opener * 30 + b"N" + closer * 30
        assert read(ANY, ok) == (ok, len(ok))
    objects = x("43 01 'A' 91 01 'f'") + b"\x60" * 500 + b"N"
    with pytest.raises(DecodeError):
        read(ANY, objects)
    with pytest.raises(DecodeError):  # in a map's values too
        read(MAP, b"H\x90" + b"\x79" * 500 + b"N")


# ---- maps ------------------------------------------------------------------------------


def test_map_spec_vectors():
    data = x("48 91 03 'fee' 92 03 'fie' 93 03 'foe' 5a")
    assert read(MAP, data) == ({1: "fee", 2: "fie", 3: "foe"}, len(data))
    car = x(
        "4d 13 'com.caucho.test.Car' 05 'color' 0a 'aquamarine' 05 'model' 06 'Beetle'"
        " 07 'mileage' 49 00 01 00 00 5a"
    )
    ctx = h2.new_context()
    assert MAP.read(car, 0, len(car), ctx) == (
        {"color": "aquamarine", "model": "Beetle", "mileage": 65536},
        len(car),
    )
    assert ctx.types == ["com.caucho.test.Car"]
    assert read(MAP, b"N") == (None, 1)
    assert read(MAP, x("48 5a")) == ({}, 2)


def test_map_values_of_every_kind():
    data = x(
        "48"
        " 01 'a' 4e"
        " 01 'b' 54"
        " 01 'c' 46"
        " 01 'd' 5f 00 00 2f da"  # 12.25 in thousandths
        " 01 'e' 5d 80"
        " 01 'f' 44 40 28 80 00 00 00 00 00"
        " 01 'g' e7"  # long 7
        " 01 'h' 7a 90 91"  # a list: kept raw
        " 7a 90 91 01 'i'"  # a list as a key
        " 01 'j' 43 01 'P' 91 01 'x' 60 90"  # an object with its class definition
        " 01 'k' 60 91"  # another object of that class
        " 5a"
    )
    value, pos = read(MAP, data)
    assert pos == len(data)
    assert value == {
        "a": None,
        "b": True,
        "c": False,
        "d": 12.25,
        "e": -128.0,
        "f": 12.25,
        "g": 7,
        "h": Raw(x("7a 90 91")),
        Raw(x("7a 90 91")): "i",
        "j": Raw(x("43 01 'P' 91 01 'x' 60 90")),
        "k": Raw(x("60 91")),
    }


def test_map_write():
    value = {"a": 1, "b": None, "c": True, "d": 1.5, "e": Raw(x("7a 90 91")), 2: "x", "l": 2**40}
    data = MAP.write(value, None)
    assert data == x(
        "48 01 'a' 91 01 'b' 4e 01 'c' 54 01 'd' 44 3f f8 00 00 00 00 00 00"
        " 01 'e' 7a 90 91 92 01 'x' 01 'l' 4c 00 00 01 00 00 00 00 00 5a"
    )
    assert read(MAP, data) == (value, len(data))
    assert MAP.write(None, None) == b"N"
    with pytest.raises(TypeError):
        MAP.write({"a": object()}, None)


def test_map_errors():
    for bad, offset, reason in [
        ("", 0, "expected a map, found the end of the frame"),
        ("91", 0, "expected a map, found code 0x91"),
        ("48", 1, "map has no end ('Z') before the end of the frame"),
        ("48 01 'a'", 3, "expected a value, found the end of the frame"),
        ("4d 91", 1, "type reference 1 to an unknown type"),
        ("48 01 'a' 5d", 3, "double overruns the frame"),
        ("48 01 'a' 5e 00", 3, "double overruns the frame"),
        ("48 01 'a' 5f 00 00 00", 3, "double overruns the frame"),
        ("48 01 'a' 44 00 00 00 00 00 00 00", 3, "double overruns the frame"),
    ]:
        with pytest.raises(DecodeError) as e:
            read(MAP, x(bad))
        assert (e.value.offset, e.value.reason) == (offset, reason)


def test_map_reads_every_double_form_to_its_end():
    # each form at the very end of the map's bytes, then the next key: exact sizes and values
    data = x(
        "48 01 'a' 5b 01 'b' 5c 01 'c' 5d 80 01 'd' 5e 80 00 01 'e' 5f ff ff fc 18"
        " 01 'f' 44 c0 28 80 00 00 00 00 00 01 'g' 5d 7f 5a"
    )
    assert read(MAP, data) == (
        {"a": 0.0, "b": 1.0, "c": -128.0, "d": -32768.0, "e": -1.0, "f": -12.25, "g": 127.0},
        len(data),
    )
    for form in ("5d 7f", "5e 7f ff", "5f 00 00 03 e8", "44 3f f0 00 00 00 00 00 00"):
        whole = x("48 01 'a' " + form + " 5a")
        assert read(MAP, whole)[1] == len(whole)


def test_map_writes_subclasses_of_simple_values_as_their_base():
    class Text(str):
        pass

    class Number(int):
        pass

    class Real(float):
        pass

    value = {Text("a"): Number(3), "b": Real(1.5), "c": Text("é")}
    assert MAP.write(value, None) == x(
        "48 01 'a' 93 01 'b' 44 3f f8 00 00 00 00 00 00 01 'c' 01 c3 a9 5a"
    )
    assert MAP.write({"t": True, "f": False}, None) == x("48 01 't' 54 01 'f' 46 5a")
    with pytest.raises(TypeError) as e:
        MAP.write({"a": object()}, None)
    assert str(e.value) == "hessian2.map cannot write a object"


def test_any_writes_raw_values_and_null():
    assert ANY.write(None, None) == b"N"
    assert ANY.write(Raw(x("7a 90 91")), None) == x("7a 90 91")
    assert ANY.write(bytearray(b"\x90"), None) == b"\x90"


def test_string_chunks_around_surrogate_pairs():
    for char, units in (("\U00010000", "ed a0 80 ed b0 80"), ("\U0010ffff", "ed af bf ed bf bf")):
        # the pair would straddle 0x8000 units: the chunk stops before its high surrogate
        text = "a" * 0x7FFF + char + "b"
        data = STRING.write(text, None)
        assert data == b"R\x7f\xff" + b"a" * 0x7FFF + x("03 " + units + " 'b'")
        assert read(STRING, data) == (text, len(data))
    text = "😀" * 0x4001  # 0x8002 units: the first chunk ends between two pairs
    data = STRING.write(text, None)
    assert data == b"R\x80\x00" + x("ed a0 bd ed b8 80") * 0x4000 + x("02 ed a0 bd ed b8 80")
    assert read(STRING, data) == (text, len(data))


@pytest.mark.parametrize(
    "text,head",
    [
        ("a" * 31, "1f"),
        ("a" * 32, "53 00 20"),
        ("é" * 31, "1f"),
        ("a" * 0x8000, "53 80 00"),
    ],
)
def test_sofa_draft_strings(text, head):
    sofa = h2.FUNCTIONS["sofa_exception"]
    body = sofa("E", text)
    assert body.endswith(x(head) + text.encode() + b"NN")


def test_sofa_draft_string_chunks():
    sofa = h2.FUNCTIONS["sofa_exception"]
    body = sofa("E", "a" * 0x8001)
    assert body.endswith(b"s\x80\x00" + b"a" * 0x8000 + b"S\x00\x01aNN")


SIMPLE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.sampled_from([Raw(x("7a 90 91")), Raw(b"\x20"), Raw(x("48 5a"))]),
)


@TEXT
@given(st.dictionaries(SIMPLE, SIMPLE, max_size=8))
def test_map_round_trip(value):
    data = MAP.write(value, None)
    assert read(MAP, data) == (value, len(data))
    assert read(ANY, data) == (data, len(data))


# ---- dubbo bodies written by dubbo-ssl-python ------------------------------------------


def _dubbo_body(arguments, context=None) -> bytes:
    request = Request(
        {
            "dubbo_version": "2.7.8",
            "path": "com.example.Svc",
            "version": "1.0.0",
            "method": "say",
            "arguments": arguments,
            "context": context,
            "group": "g",
        }
    )
    return bytes(request.encode())[16:]  # after dubbo's 16-byte header


def _read_body(body: bytes):
    ctx = h2.new_context()
    pos, end = 0, len(body)
    head = []
    for _ in range(5):
        value, pos = STRING.read(body, pos, end, ctx)
        head.append(value)
    args = []
    for _ in range(h2.arg_count(head[4])):
        raw, pos = ANY.read(body, pos, end, ctx)
        args.append(raw)
    attachments, pos = MAP.read(body, pos, end, ctx)
    assert pos == end
    return head, args, attachments, ctx


def test_dubbo_ssl_request_body():
    user = Object("com.example.User", {"name": "bob", "age": 30})
    other = Object("com.example.User", {"name": "al", "age": 3})
    arguments = ["hi", 5, 2**40, 1.5, True, [1, 2, 3], user, [other, user], ["a"] * 8, 3.14159]
    body = _dubbo_body(arguments, {"k": "v"})
    head, args, attachments, ctx = _read_body(body)
    assert head[:4] == ["2.7.8", "com.example.Svc", "1.0.0", "say"]
    assert head[4] == (
        "Ljava/lang/String;IJDZ[ILcom/example/User;[Lcom/example/User;[Ljava/lang/String;D"
    )
    assert args[0] == b"\x02hi" and args[1] == b"\x95" and args[4] == b"T"
    assert args[3] == x("5f 00 00 05 dc")  # 1.5 in thousandths, as Java writes it
    assert attachments == {
        "path": "com.example.Svc",
        "interface": "com.example.Svc",
        "version": "1.0.0",
        "group": "g",
        "k": "v",
    }
    assert ctx.classes == [("com.example.User", ("name", "age"))]
    assert ctx.types == ["[int", "[object", "[string"]
    # re-encoding what was read gives the body back
    rebuilt = b"".join(STRING.write(v, None) for v in head)
    rebuilt += b"".join(ANY.write(a, None) for a in args) + MAP.write(attachments, None)
    assert rebuilt == body


BMP_TEXT = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=40)
DUBBO_SCALARS = st.one_of(  # finite: dubbo-ssl-python fails on infinities
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(-1e300, 1e300),  # it multiplies by 1000 first
    BMP_TEXT,
)


@st.composite
def dubbo_argument(draw):
    kind = draw(st.sampled_from(["scalar", "list", "object"]))
    if kind == "scalar":
        return draw(DUBBO_SCALARS)
    if kind == "list":
        items = draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=9))
        return items
    name = draw(st.sampled_from(["com.a.A", "com.b.B"]))
    fields = draw(st.dictionaries(st.sampled_from(["x", "y", "z"]), DUBBO_SCALARS, max_size=3))
    return Object(name, {k: fields.get(k, 0) for k in ("x", "y", "z")})


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(dubbo_argument(), max_size=6),
    st.dictionaries(BMP_TEXT, BMP_TEXT, max_size=4),
)
def test_dubbo_ssl_random_bodies(arguments, context):
    body = _dubbo_body(arguments, context)
    head, args, attachments, _ = _read_body(body)
    assert len(args) == len(arguments)
    for key, value in context.items():
        assert attachments[key] == value


# ---- arg_count -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "descriptor,count",
    [
        (None, 0),
        ("", 0),
        ("I", 1),
        ("Ljava/lang/String;I[Ljava/lang/Object;[[J", 4),
        ("ZBCDSIFJ", 8),
        ("[[[Lcom/a/Outer$Inner;Ljava/util/Map;", 2),
        ("Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;", 3),  # generic $invoke
    ],
)
def test_arg_count(descriptor, count):
    assert h2.arg_count(descriptor) == count
    assert h2.FUNCTIONS["arg_count"](descriptor) == count


@pytest.mark.parametrize(
    "descriptor",
    ["Ljava/lang/String", "X", "[", "I[", "L;", "Ljava.lang.String;", "Ljava//String;", "I Z"],
)
def test_arg_count_malformed(descriptor):
    with pytest.raises(DecodeError) as e:
        h2.arg_count(descriptor)
    assert e.value.offset == 0


def test_arg_count_long_descriptors():
    assert h2.arg_count("Ljava/lang/String;" * 1000) == 1000
    with pytest.raises(DecodeError):
        h2.arg_count("I" * 1000 + "?")


# ---- buffers and fuzz ------------------------------------------------------------------


def test_memoryview_and_bytearray():
    body = _dubbo_body(["hi", [1, 2], Object("com.a.A", {"x": "中"})], {"k": "v"})
    expected = _read_body(body)
    for buf in (memoryview(body), bytearray(body)):
        ctx = h2.new_context()
        pos, end = 0, len(body)
        head = []
        for _ in range(5):
            value, pos = STRING.read(buf, pos, end, ctx)
            head.append(value)
        args = []
        for _ in range(3):
            raw, pos = ANY.read(buf, pos, end, ctx)
            assert type(raw) is bytes
            args.append(raw)
        attachments, pos = MAP.read(buf, pos, end, ctx)
        assert (head, args, attachments) == expected[:3]


def _outcome(reader, buf, end):
    try:
        return reader.read(buf, 0, end, h2.new_context())
    except DecodeError as e:
        return ("error", e.offset)


def _check(data: bytes, end: int):
    for reader in (STRING, INT, ANY, MAP):
        got = _outcome(reader, data, end)
        assert 0 <= got[1] <= end  # the position after a value, or the offset of an error
        assert _outcome(reader, data[:end] + b"\x52\x00\x05Z", end) == got


@settings(max_examples=400)
@given(st.binary(max_size=48))
def test_fuzz_random_bytes(data):
    _check(data, len(data))


FUZZ_SEEDS = [x(v) for v in SPEC_VALUES if len(v) < 400] + [
    _dubbo_body(["hi", [1, 2], Object("com.a.A", {"x": "中"}), 2**40], {"k": "v"})
]


@settings(max_examples=400)
@given(st.sampled_from(FUZZ_SEEDS), st.data())
def test_fuzz_mutated_values(seed, data):
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    end = data.draw(st.integers(0, len(buf)))
    _check(bytes(buf), end)
