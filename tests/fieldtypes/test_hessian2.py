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
        (2047, "cf ff"),
        (2048, "d4 08 00"),
        (-262144, "d0 00 00"),
        (262143, "d7 ff ff"),
        (262144, "49 00 04 00 00"),
        (-(2**31), "49 80 00 00 00"),
        (2**31, "4c 00 00 00 00 80 00 00 00"),
        (-(2**63), "4c 80 00 00 00 00 00 00 00"),
    ],
)
def test_int_writes_java_forms(value, hexed):
    assert INT.write(value, None) == x(hexed)


def test_int_errors():
    with pytest.raises(ValueError):
        INT.write(2**63, None)
    for bad, offset in [("", 0), ("c8", 0), ("49 00 00", 0), ("4e", 0), ("05 'hello'", 0)]:
        with pytest.raises(DecodeError) as e:
            read(INT, x(bad))
        assert e.value.offset == offset


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
    "hexed,offset",
    [
        ("", 0),
        ("05 'hell'", 1),
        ("30", 0),
        ("53 00", 0),
        ("01 f0 9f 98 80", 1),  # a 2-unit character in a 1-unit string
        ("01 ed a0 bd", 0),  # a lone surrogate
        ("02 'a' ff", 2),  # not UTF-8
        ("02 c0 80", 1),  # overlong (Java's modified UTF-8 NUL): not UTF-8
        ("52 00 01 'a'", 4),  # a chunk without the rest
        ("52 00 01 'a' 90", 4),  # a chunk followed by an int
        ("91", 0),  # not a string
    ],
)
def test_string_errors(hexed, offset):
    with pytest.raises(DecodeError) as e:
        read(STRING, x(hexed))
    assert e.value.offset == offset


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
    "hexed,offset",
    [
        ("", 0),
        ("5a", 0),  # end of list without a list
        ("40", 0),  # reserved codes
        ("45", 0),
        ("47", 0),
        ("50", 0),
        ("44 00 00", 0),
        ("4a 00", 0),
        ("23 01 02", 0),
        ("34", 0),
        ("34 05 00", 0),
        ("41 00 02 aa bb", 5),  # binary chunk without the rest
        ("41 00 01 aa 91", 4),  # binary chunk followed by an int
        ("57 90 91", 3),  # no 'Z'
        ("58 8f", 1),  # negative length
        ("58 49 7f ff ff ff 90", 1),  # huge length
        ("56 04 '[int' 49 7f ff ff ff", 6),
        ("70 91", 1),  # a type must be a string or an int
        ("71 91 90", 1),  # type ref to an unknown type
        ("48 91 5a", 2),  # a key without its value
        ("4d", 1),
        ("60", 0),  # object of an unknown class
        ("4f 90", 0),
        ("43 03 'Foo' 91 03 'bar'", 10),  # class definition without its value
        ("43 03 'Foo' 8f", 5),  # negative field count
        ("43 03 'Foo' 49 00 00 ff ff", 5),  # more fields than bytes
        ("43 91 90 60", 1),  # class name not a string
        ("51 8f", 0),  # negative ref
        ("51", 1),
    ],
)
def test_any_errors(hexed, offset):
    with pytest.raises(DecodeError) as e:
        read(ANY, x(hexed))
    assert e.value.offset == offset


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
    for bad, offset in [("", 0), ("91", 0), ("48", 1), ("48 01 'a'", 3), ("4d 91", 1)]:
        with pytest.raises(DecodeError) as e:
            read(MAP, x(bad))
        assert e.value.offset == offset


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
