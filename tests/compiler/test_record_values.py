"""Expressions over record values and lists (issue 13): `v.field`, `list[i]`, slices, `lower`,
`words`, `char`, `+` on text, `let`, multi-valued headers, and `pool pipeline`, on the shipped
redis spec (its routing view is inside records)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from protoc_x.compiler import compile_source
from protoc_x.diagnostics import SpecError
from protoc_x.runtime import api
from protoc_x.runtime.api import Direction

from ..peers.redis_peer import command
from .test_bad_specs import SHIPPED

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "redis.xproto"


def compile_with(old: str, new: str) -> str:
    return compile_source(SHIPPED("redis", old, new), "redis.xproto", "redis", fmt=False)


@pytest.mark.parametrize(
    "words, method, keys",
    [
        ([b"GET", b"k"], "get", ["k"]),
        ([b"get", b"k"], "get", ["k"]),
        ([b"MGET", b"a", b"b", b"c"], "mget", ["a", "b", "c"]),
        ([b"MSET", b"a", b"1", b"b", b"2"], "mset", ["a", "b"]),
        ([b"BLPOP", b"q1", b"q2", b"5"], "blpop", ["q1", "q2"]),
        ([b"EVAL", b"return 1", b"2", b"k1", b"k2", b"arg"], "eval", ["k1", "k2"]),
        ([b"EVAL", b"return 1", b"nope", b"k1"], "eval", []),  # a count that is no number
        ([b"PING"], "ping", []),
        ([b"INFO", b"server"], "info", []),
        ([b"GET"], "get", []),  # too short: no key, no error
        ([b"HSET", "ключ".encode(), b"f", b"v"], "hset", ["ключ"]),
    ],
)
def test_the_redis_routing_view(words, method, keys):
    from protoc_x.generated.redis import PROTOCOL

    inline = b" ".join(words) + b"\r\n"
    spaced = any(b" " in w for w in words)  # (words with spaces in them: arrays only)
    for data in [command(*words)] + ([] if spaced else [inline]):  # an array; an inline command
        frame = PROTOCOL.decode(data, 0, Direction.REQUEST)
        assert frame.length == len(data)
        assert frame.get_method() == method
        assert frame.get_header_values("key") == keys
        assert frame.get_header("key") == (keys[0] if keys else None)
        assert frame.get_headers() == ({"key": keys[0]} if keys else {})
        scanned = PROTOCOL.scan(data, 0, Direction.REQUEST)
        assert scanned[0] == len(data) and scanned[6] == method


def test_an_error_reply_s_first_word_is_its_status():
    from protoc_x.generated.redis import PROTOCOL

    for text, status in [(b"WRONGTYPE x", 2), (b"ERR x", 1), (b"NOAUTH x", 3), (b"BUSY", 4)]:
        frame = PROTOCOL.decode(b"-" + text + b"\r\n", 0, Direction.RESPONSE)
        assert frame.get_status() == status
    assert PROTOCOL.decode(b"$-1\r\n", 0, Direction.RESPONSE).get_status() == 0
    # the proxy's own errors are Redis errors, and say so
    request = PROTOCOL.decode(command(b"GET", b"k"), 0, Direction.REQUEST)
    assert PROTOCOL.hijack(request, 503, "protoc-x: 503 x").encode() == b"-ERR protoc-x: 503 x\r\n"


@pytest.mark.parametrize(
    "old, new, error",
    [
        ("let command = lower(args[0])", "let kind = lower(args[0])",
         "let 'kind': the name is taken by a field or an enum member"),
        ("let command = lower(args[0])", "let args = lower(args[0])", "duplicate let 'args'"),
        ("method = command", "method = items.bulk.nope", "record Bulk has no field 'nope'"),
        ("method = command", "method = count.bulk", "'.bulk' reads a field of a record value; this is an integer"),
        ("method = command", "method = count[0]", "only lists can be indexed by a number; this is an integer"),
        ("method = command", 'method = items["x"]', "only maps can be indexed; this is a list of Value records or null"),
        ("method = command", "method = inline[1:]", "only lists can be sliced; this is bytes"),
        ("method = command", "method = args[\"a\":]", "a slice's bound must be an integer"),
        ("method = command", "method = lower(items)", "lower() takes text; this is a list of Value records or null"),
        ("method = command", 'method = char("a")', "char()'s argument must be an integer"),
        ("method = command", "method = args[count]", None),  # an integer index: fine
        ('header "key" =', 'header "key" = items\n    header "k2" =',
         "header 'key' must be a value or a list of values; this expression is a list of Value records or null"),
        ("direction == response => response", "direction == response => response\n        kind == integer => quiet",
         "a pipeline protocol matches answers by position: a quiet request"),
        ("count   decimal[until \"\\r\\n\"] = len(items)\n            items   Value[count count] nullable\n        } else if kind == bulk_string",
         "count   decimal[until \"\\r\\n\"] = len(items)\n            items   Value[count count] nullable\n            if items[0] == null { x u8 }\n        } else if kind == bulk_string",
         "record values and lists are read in bindings, headers and stream rules"),
        ("let command = lower(args[0])", "let command = lower(late[0])\n    let late = args",
         "unknown field 'late'"),  # a let uses the lets before it
        ("method = command", "method = args", "method must be a boolean or bytes or an integer or null or a string; this expression is a list of byte strings or null"),
        # answer when: a reply template, tested like a stream rule
        ('answer and close when command == "quit" { kind = simple_string, text = "OK" }',
         'answer when command == "quit" { kind = simple_string, nope = "OK" }', "unknown field 'nope' in answer"),
        ('answer and close when command == "quit" { kind = simple_string, text = "OK" }',
         'answer when command == "quit" { kind = simple_string, text = 3 }', "'text' in answer must be bytes or a string"),
        ('answer and close when command == "quit" {', 'answer and close when nope == "quit" {', "unknown field 'nope'"),
        ('answer and close when command == "quit" {', 'answer or close when command == "quit" {', "124:12: error: unexpected 'or'; expected and_close, when"),
        # fail: in a frame's layout and a record's, not an inside layout's
        ('fail "expected a RESP2 type byte (+ - : $ *) or an inline command"', 'fail 3', "47:18: error: unexpected '3'; expected a string"),
    ],
)  # fmt: skip
def test_what_the_language_refuses(old, new, error):
    if error is None:
        compile_with(old, new)
        return
    with pytest.raises(SpecError) as e:
        compile_with(old, new)
    assert error in str(e.value), str(e.value)


def test_lets_that_double_at_every_step_are_refused_not_expanded():
    chain = "".join(f"    let l{i + 1} = l{i} + l{i}\n" for i in range(40))
    with pytest.raises(SpecError, match=r"let 'l\d+' written out is more than 4096 terms"):
        compile_with("let command", "let l0 = lower(args[0])\n" + chain + "    let command")


def test_a_let_is_one_method_of_the_frame_and_headers_call_theirs():
    code = SPEC.read_text()
    module = compile_source(code, "redis.xproto", "redis")
    assert module.count("def _let_args(self):") == 1
    assert module.count("def _header_0(self):") == 1
    assert "self._header_0()" in module
    # a method reading a let more than once computes it once, into a local
    header = module[module.index("def _header_0(self):") :]
    header = header[: header.index("\n    def ")]
    assert header.count("self._let_command()") == 1 and header.count("let_command") > 3


values = st.recursive(
    st.none() | st.integers() | st.binary(max_size=8) | st.text(max_size=8) | st.booleans(),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(values, values, st.one_of(st.none(), st.integers(-5, 5)))
def test_the_helpers_are_total(a, b, i):
    """Whatever a frame holds, the helpers of spec expressions return a value, never raise."""
    api.value_attr(a, "bulk")
    api.value_item(a, i)
    api.value_slice(a, i, i, i)
    api.lower_text(a)
    api.split_words(a)
    api.byte_of(a)
    api.first_value(a)
    api.header_values(a)
    if isinstance(a, (str, bytes, type(None))) and isinstance(b, (str, bytes, type(None))):
        joined = api.join_text(a, b)
        assert isinstance(joined, bytes if isinstance(a, bytes) or isinstance(b, bytes) else str)


def test_the_helpers_values():
    assert api.value_item([1, 2, 3], -1) == 3 and api.value_item([1], 5) is None
    assert api.value_slice([0, 1, 2, 3, 4], 1, None, 2) == [1, 3]
    assert api.value_slice([0, 1], 0, None, 0) is None
    assert api.lower_text([b"GET", "MiX", None, 7]) == ["get", "mix", None, "7"]
    assert api.split_words(b" a  b\tc ") == [b"a", b"b", b"c"]
    assert api.byte_of(0x50) == b"P" and api.byte_of(256) == b"" and api.byte_of(-1) == b""
    assert api.join_text(b"P", "ING") == b"PING" and api.join_text(None, "x") == "x"
    assert api.header_values([b"a", None, "b"]) == ["a", "b"] and api.header_values(None) == []
    assert api.first_value([]) is None and api.first_value(["a", "b"]) == "a"


def test_an_enum_member_against_a_record_value_s_field():
    """``items[0].kind != error`` resolves ``error`` in Value's enum; when two records give a
    field of that name different types, a member name there is refused, not guessed."""
    module = compile_with("status = kind != error ? 0", "status = items[0].kind != error ? 0")
    assert "value_attr(value_item(self.items, 0), 'kind') != 45" in module  # (before black)
    text = (
        SPEC.read_text()
        .replace("record Bulk {", "record Other { kind u8 }\n    record Bulk {", 1)
        .replace("status = kind != error ? 0", "status = items[0].kind != error ? 0", 1)
    )
    with pytest.raises(SpecError, match="records give their field 'kind' different types"):
        compile_source(text, "redis.xproto", "redis", fmt=False)


def test_a_frame_layout_that_fails_is_refused_on_decode_measure_and_encode():
    """The frame's ``fail``: a reply that is no RESP2 value (RESP3's types among them) is
    refused at its first byte, however it arrives, instead of read as an inline line."""
    from protoc_x.generated.redis import PROTOCOL, RedisFrame

    for data in [b"%1\r\n+a\r\n+b\r\n", b"_\r\n", b",1.5\r\n", b"#t\r\n", b"\r\n", b"1\r\n"]:
        for direction in (Direction.REQUEST, Direction.RESPONSE):
            for decode in (PROTOCOL.decode, PROTOCOL.scan):
                with pytest.raises(api.DecodeError, match="expected a RESP2 type byte") as e:
                    decode(data, 0, direction)
                assert e.value.offset == 0
            steps = PROTOCOL.measure(bytearray(data[:1]), 0, direction)
            with pytest.raises(api.DecodeError, match="expected a RESP2 type byte"):
                next(steps)
    # letters are inline commands
    assert PROTOCOL.decode(b"ping\r\n", 0, Direction.REQUEST).get_method() == "ping"
    frame = RedisFrame.blank()
    frame.kind = ord("%")
    with pytest.raises(ValueError, match="expected a RESP2 type byte"):
        frame.encode()


#: the proxy's own answers, as redis.xproto writes them
NOPROTO = b"-NOPROTO protoc-x speaks RESP2 to redis, on connections clients share: connect with protocol 2\r\n"
CHANGES = (
    b"-ERR protoc-x: this command would change the connection to redis, which clients share\r\n"
)
TRANSACTION = b"-ERR protoc-x: transactions need a connection of their own; connections to redis are shared\r\n"
BLOCKING = b"-ERR protoc-x: blocking commands, pub/sub and MONITOR would hold a connection clients share\r\n"


@pytest.mark.parametrize(
    "words, answer, close",
    [
        ([b"HELLO", b"3"], NOPROTO, False),
        ([b"hello", b"3", b"AUTH", b"u", b"p"], NOPROTO, False),
        ([b"HELLO", b"2", b"AUTH", b"u", b"p"], CHANGES, False),
        ([b"AUTH", b"p"], CHANGES, False),
        ([b"SELECT", b"1"], CHANGES, False),
        ([b"CLIENT", b"REPLY", b"OFF"], CHANGES, False),
        ([b"MULTI"], TRANSACTION, True),
        ([b"EXEC"], TRANSACTION, False),
        ([b"BLPOP", b"q", b"0"], BLOCKING, False),
        ([b"SUBSCRIBE", b"c"], BLOCKING, False),
        ([b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s", b"$"], BLOCKING, False),
        ([b"xread", b"COUNT", b"2", b"block", b"10", b"STREAMS", b"s", b"0"], BLOCKING, False),  # fmt: skip
        ([b"XREADGROUP", b"GROUP", b"g", b"c", b"BLOCK", b"0", b"STREAMS", b"s", b">"], BLOCKING, False),  # fmt: skip
        ([b"XREADGROUP", b"GROUP", b"g", b"c", b"NOACK", b"BLOCK", b"0", b"STREAMS", b"s", b">"], BLOCKING, False),  # fmt: skip
        ([b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", b"1", b"BLOCK", b"0", b"STREAMS", b"s", b">"], BLOCKING, False),  # fmt: skip
        ([b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", b"1", b"NOACK", b"BLOCK", b"0", b"STREAMS", b"s", b">"], BLOCKING, False),  # fmt: skip
        ([b"XREADGROUP", b"GROUP", b"g", b"c", b"NOACK", b"COUNT", b"1", b"BLOCK", b"0", b"STREAMS", b"s", b">"], BLOCKING, False),  # fmt: skip
        ([b"XREAD", b"STREAMS", b"block", b"0"], None, False),  # (a stream named "block")
        ([b"XREAD", b"COUNT", b"2", b"STREAMS", b"s", b"0"], None, False),
        ([b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"block", b">"], None, False),
        ([b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", b"1", b"STREAMS", b"block", b">"], None, False),  # fmt: skip
        ([b"QUIT"], b"+OK\r\n", True),
        ([b"HELLO", b"2"], None, False),
        ([b"HELLO"], None, False),
        ([b"SELECT", b"0"], None, False),
        ([b"GET", b"multi"], None, False),
    ],
)
def test_the_requests_redis_answers_itself(words, answer, close):
    from protoc_x.generated.redis import PROTOCOL

    for data in (command(*words), b" ".join(words) + b"\r\n"):
        request = PROTOCOL.decode(data, 0, Direction.REQUEST)
        got = PROTOCOL.local_answer(request)
        special = PROTOCOL.scan(data, 0, Direction.REQUEST)[4]
        if answer is None:
            assert got is None and not special
            continue
        frame, closes = got
        assert frame.encode() == answer and closes is close
        assert special  # the scan sends it down the full path, which answers it
        assert PROTOCOL.runtime_status(frame.get_status()) == (200 if words == [b"QUIT"] else 400)


def test_fail_is_refused_in_an_inside_layout():
    text = (ROOT / "specs" / "thrift.xproto").read_text()
    old = "inside body when type == exception {"
    assert old in text
    with pytest.raises(SpecError, match="'fail' is for frames and records, not 'inside' layouts"):
        compile_source(text.replace(old, old + '\n        fail "no"', 1), "thrift.xproto", "thrift")


def test_an_answer_read_by_a_scan_in_locals():
    """bolt's scan reads a request into locals (no frame): an ``answer when`` test over a
    header (a map kept as bytes) is written there, and only a request it holds for is special."""
    from protoc_x.loader import load_module_source
    from protoc_x.samples import _bolt_headers, _bolt_request

    text = (ROOT / "specs" / "bolt.xproto").read_text()
    rule = ('answer when kind == request and headers["sofa_head_method_name"] == "forbidden" {\n'
            "    kind = response, cmd = response, ver2 = request.ver2, codec = request.codec,\n"
            '    status = 0x05, class_name = "java.lang.String", content = "no"\n}\n')  # fmt: skip
    text = text.replace("    stream {", rule + "    stream {", 1)
    code = compile_source(text, "bolt.xproto", "bolt", fmt=False)
    assert "self.local_answer(" not in code  # (in locals, not through a decoded frame)
    proto = load_module_source("bolt_answers", code, "bolt.xproto").PROTOCOL
    allowed = _bolt_request()
    assert proto.scan(allowed, 0)[4] is False
    assert proto.local_answer(proto.decode(allowed, 0)) is None
    headers = _bolt_headers([("sofa_head_method_name", "forbidden")])
    forbidden = struct.pack(">BBHBIBiHHI", 1, 1, 1, 1, 9, 1, 3000, 0, len(headers), 2)
    forbidden += headers + b"hi"
    request = proto.decode(forbidden, 0)
    assert request.get_method() == "forbidden"
    assert proto.scan(forbidden, 0)[4] is True
    frame, close = proto.local_answer(request)
    assert close is False and frame.get_request_id() == request.get_request_id()
    assert proto.runtime_status(frame.get_status()) == proto.runtime_status(0x05)
