"""Every check of the compiler: a bad spec → ``file:line:col: error: message``, the source line,
a caret, exit 1, and no file written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from protoc_x import cli
from protoc_x.compiler import compile_source

GOOD = """\
protocol mini {
    pool multiplex
    detect u8 == 0x4d
    enum Dir : u8 { request = 0, response = 1 }
    frame {
        magic u8 = 0x4d
        dir Dir
        id u32
        size u16 = len(data)
        data bytes[size]
    }
    request_id = id
    body = data
    stream {
        dir == response => response
        else => request
    }
    status_map {
        0 ok <- 200 -> 200
        1 fail <- 400, 403, 404, 429, 500, 502, 503, 504 -> 500
    }
    error_response { dir = response, data = $message }
}
"""


def variant(*pairs: str, text: str = GOOD) -> str:
    """GOOD with each (old, new) pair replaced once: variant(old1, new1, old2, new2...)."""
    for old, new in zip(pairs[::2], pairs[1::2]):
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def SHIPPED(name: str, old: str, new: str) -> str:  # noqa: N802 - reads as a table column
    text = (Path(__file__).parents[2] / "specs" / f"{name}.xproto").read_text()
    assert old in text, old
    return text.replace(old, new, 1)


def _ifs_in_sequence(k: int) -> str:
    return "".join(f"        if id == {i} {{ a{i} u8 }}\n" for i in range(k))


def _else_if_chain(k: int, first: int = 0) -> str:
    return " else ".join(f"if id == {i} {{ a{i} u8 }}" for i in range(first, first + k))


def _nested_ifs(k: int, inner: str = "") -> str:
    return "".join(f"if id == {i} {{ a{i} u8 " for i in range(k)) + inner + "}" * k


def _after_id(layout: str) -> str:
    """GOOD with ``layout`` (if blocks over id) right after id."""
    return variant("id u32\n", "id u32\n" + layout)


# the planner's limits (64 layouts, tests nested 32 deep): specs just inside them build
AT_THE_LIMITS = {
    "six-ifs-in-sequence": _after_id(_ifs_in_sequence(6)),  # 63 tests, 64 layouts
    "32-nested-ifs": _after_id("        " + _nested_ifs(32) + "\n"),
    "20-else-ifs": _after_id("        " + _else_if_chain(20) + "\n"),
    "else-if-30-deep": _after_id("        " + _nested_ifs(30, _else_if_chain(2, 90)) + "\n"),
    # 5 layouts, each 12 more: 60 layouts in all
    "four-else-ifs-then-eleven": _after_id(
        "        " + _else_if_chain(4) + "\n        " + _else_if_chain(11, 10) + "\n"
    ),
}


# (id, spec text, stem, expected "line:col: error: message")
CASES = [
    ("syntax", variant("magic u8 = 0x4d", "magic u8 = }"), "mini",
     "6:20: error: unexpected '}'; expected"),
    ("unexpected-character", variant("id u32", "id u32 ;"), "mini",
     "8:16: error: unexpected character ';'"),
    ("unknown-field", variant("data bytes[size]", "data bytes[sise]"), "mini",
     "10:20: error: unknown field 'sise'"),
    ("unknown-type", variant("dir Dir", "dir Direction"), "mini",
     "7:13: error: unknown type 'Direction'"),
    ("unknown-enum-member", variant("dir == response", "dir == reply"), "mini",
     "15:16: error: 'reply' is not a member of enum Dir"),
    ("duplicate-field", variant("id u32", "id u32\n        id u16"), "mini",
     "9:9: error: duplicate field 'id' (first at line 8)"),
    ("duplicate-enum-member", variant("response = 1", "request = 1"), "mini",
     "4:34: error: duplicate enum member 'request' in Dir"),
    ("constant-overflow", variant("magic u8 = 0x4d", "magic u8 = 0x14d"), "mini",
     "6:20: error: constant 0x14d overflows 8-bit field 'magic'"),
    ("enum-overflow", variant("response = 1", "response = 256"), "mini",
     "4:34: error: enum value 256 of 'response' overflows 8 bits"),
    ("bits-width", variant("dir Dir", "bits u8 { a : 3, b : 4 }"), "mini",
     "7:9: error: bit fields add up to 7 bits, not 8"),
    ("multiplex-without-id", variant("request_id = id\n", ""), "mini",
     "1:10: error: a multiplex protocol needs a request_id binding (request_id = <field>)"),
    ("status-forward-twice", variant("0 ok <- 200 -> 200", "0 ok <- 200, 400 -> 200"), "mini",
     "20:9: error: runtime code 400 maps to two protocol codes (0 on line 19 and 1): the forward "
     "map must be a function"),
    ("status-backward-twice", variant("1 fail", "0 fail"), "mini",
     "20:9: error: protocol code 0 appears twice in the status map (also line 19): the reverse "
     "map must be a function"),
    ("status-incomplete", variant("1 fail <- 400, 403, 404, 429, 500, 502, 503, 504",
                                  "1 fail <- 400, 403, 404, 429, 500, 502, 503"), "mini",
     "1:10: error: the status map does not answer runtime code(s) 504"),
    ("status-unknown-code", variant("0 ok <- 200 -> 200", "0 ok <- 200, 418 -> 200"), "mini",
     "19:22: error: 418 is not a runtime code (one of 200, 400, 403, 404, 429, 500, 502, 503, 504)"),
    # the reverse side (protocol code -> runtime code): the number itself is pointed at
    ("status-backward-unknown-code", variant("0 ok <- 200 -> 200", "0 ok <- 200 -> 201"), "mini",
     "19:24: error: 201 is not a runtime code (one of 200, 400, 403, 404, 429, 500, 502, 503, 504)"),
    ("status-backward-zero", variant("-> 500\n", "-> 0\n"), "mini",
     "20:61: error: 0 is not a runtime code (one of 200, 400, 403, 404, 429, 500, 502, 503, 504)"),
    ("status-others-unknown-code", variant("-> 500\n", "-> 500\n        others -> 0x1f4f\n"), "mini",
     "21:19: error: 8015 is not a runtime code (one of 200, 400, 403, 404, 429, 500, 502, 503, 504)"),
    ("status-backward-unknown-code-shipped",
     SHIPPED("tars", "-1  server_decode_err      <- 400       -> 400",
             "-1  server_decode_err      <- 400       -> 401"), "tars",
     "62:52: error: 401 is not a runtime code (one of 200, 400, 403, 404, 429, 500, 502, 503, 504)"),
    ("name-differs-from-file", GOOD, "other",
     "1:10: error: protocol name 'mini' differs from its file name 'other'"),
    ("python-keyword", variant("id u32", "class u32"), "mini",
     "8:9: error: field name 'class' is a Python keyword"),
    ("dunder", variant("id u32", "__init__ u32"), "mini",
     "8:9: error: field name '__init__' may not start with '_' (reserved for generated code)"),
    ("reserved-name", variant("id u32", "encode u32"), "mini",
     "8:9: error: field name 'encode' is reserved for the frame API"),
    ("unknown-fieldtype", variant("data bytes[size]", "data hessian3.string"), "mini",
     "10:14: error: unknown field-type library 'hessian3' (have: hessian2, json, tars, thrift, varint)"),
    ("text-library-named", variant("data bytes[size]", 'data texts.bytes("x")'), "mini",
     '10:14: error: text types are spelled bytes[until "..."], string[until "..."], '
     'decimal[until "..."] and "token" (docs/language.md)'),
    ("until-map", variant("data bytes[size]", 'data map(u8)[until "x"]'), "mini",
     "10:22: error: only bytes, string and decimal end at a delimiter (until)"),
    ("decimal-sized", variant("data bytes[size]", "data decimal[size]"), "mini",
     '10:14: error: a decimal ends at a delimiter: decimal[until "..."]'),
    ("empty-delimiter", variant("data bytes[size]", 'data bytes[until ""]'), "mini",
     "10:20: error: bytes[until '']: a delimiter must not be empty"),
    ("unknown-binding", variant("body = data", "payload = data"), "mini",
     "13:5: error: unknown binding 'payload' (one of: request_id, timeout_ms, status, body, "
     "service, method, headers)"),
    ("unknown-stream-type", variant("=> response\n", "=> reply\n"), "mini",
     "15:28: error: unknown stream type 'reply' (one of: request, oneway, quiet, response)"),
    ("size-uses-later-field", variant("size u16 = len(data)\n        data bytes[size]",
                                      "data bytes[size]\n        size u16 = len(data)"), "mini",
     "9:20: error: field 'size' is read after 'data': a size may only use earlier fields"),
    ("condition-at-variable-offset",
     variant("data bytes[size]", "data bytes[size]\n        if id == 1 { x u8 }\n        tag u8\n        if tag == 1 { y u8 }"),
     "mini", "13:12: error: a layout condition may only test fields at a fixed offset before it; 'tag' is not one"),
    # (a part sized by fields read before it, or a varint, is measured: test_measured_frames.py)
    ("frame-end-unknown", variant("data bytes[size]", "data bytes[size]\n        extra hessian2.string"),
     "mini", "11:9: error: cannot tell where the frame ends at 'extra': field type hessian2.string cannot "
     "find its own end; give the frame a length field (= sizeof(frame) ...), or size the field by "
     "fields before it"),
    ("frame-end-rest", variant("data bytes[size]", "data bytes[size]\n        n u8\n        m bytes[n]\n        extra bytes[rest]"),
     "mini", "13:21: error: 'rest' needs a frame length field (= sizeof(frame) ...)"),
    ("frame-end-size-from-a-string-field-type",
     variant("data bytes[size]", "data bytes[size]\n        s thrift.string\n        d bytes[int(s) ?? 0]"),
     "mini", "12:9: error: cannot tell where the frame ends at 'd': its size reads 's', a field type's "
     "value that is not an integer; give the frame a length field (= sizeof(frame) ...), or size the "
     "field by fields before it"),
    ("varint-value-not-a-length", variant("data bytes[size]", "data bytes[size]\n        n varint.unsigned = 5"),
     "mini", "11:29: error: the value of 'n' (varint.unsigned) must be a sum of len() terms and numbers"),
    # widths struct has no code for (u24...) are read as bytes; the proxy rewrites an id in
    # place with a struct, and a map's entries are read by one
    ("u24-request-id", variant("id u32", "id u24"), "mini",
     "12:18: error: the request id must be 8, 16, 32 or 64 bits wide (the proxy rewrites it in place)"),
    ("u24-map-entry-length", variant("data bytes[size]", "data bytes[size]\n        m map(u24)[count 2]"),
     "mini", "11:15: error: a map's length prefix must be 8, 16, 32 or 64 bits wide"),
    ("seven-ifs-in-sequence", _after_id(_ifs_in_sequence(7)), "mini",
     "15:9: error: the frame's if/else blocks expand into more than 64 layouts or 32 nested tests; test "
     "fewer fields in sequence, or move the alternatives into an 'inside' layout"),
    ("33-nested-ifs", _after_id("        " + _nested_ifs(33) + "\n"), "mini",
     "9:661: error: the frame's if/else blocks expand into more than 64 layouts or 32 nested tests; test "
     "fewer fields in sequence, or move the alternatives into an 'inside' layout"),
    ("else-if-31-deep", _after_id("        " + _nested_ifs(31, _else_if_chain(2, 90)) + "\n"), "mini",
     "9:668: error: the frame's if/else blocks expand into more than 64 layouts or 32 nested tests; test "
     "fewer fields in sequence, or move the alternatives into an 'inside' layout"),
    # 5 layouts, each 13 more: the 64th test refused
    ("four-else-ifs-then-twelve", _after_id("        " + _else_if_chain(4) + "\n        " + _else_if_chain(12, 10) + "\n"),
     "mini", "10:317: error: the frame's if/else blocks expand into more than 64 layouts or 32 nested tests; test "
     "fewer fields in sequence, or move the alternatives into an 'inside' layout"),
    ("rest-without-length", variant("data bytes[size]", "data bytes[rest]"), "mini",
     "10:20: error: 'rest' needs a frame length field (= sizeof(frame) ...)"),
    ("template-unknown-field", variant("error_response { dir = response", "error_response { dir = response, colour = 1"),
     "mini", "22:38: error: unknown field 'colour' in error_response"),
    ("template-unknown-param", variant("data = $message", "data = $secret"), "mini",
     "22:45: error: $secret is not available here"),
    ("template-empty-map-to-int", variant("data = $message", "data = $message, id = {}"), "mini",
     "22:60: error: 'id' in error_response must be an integer; this expression is a map"),
    ("template-empty-map-to-bytes", variant("data = $message", "data = {}"), "mini",
     "22:45: error: 'data' in error_response must be bytes or null or a string; this expression is a map"),
    ("crc-not-last", variant("size u16 = len(data)", "check u32 = crc32(frame)\n        size u16 = len(data)"),
     "mini", "9:9: error: a crc32 field must be the last field of its layout"),
    ("missing-error-response", variant("    error_response { dir = response, data = $message }\n", ""), "mini",
     "1:10: error: the protocol needs an error_response (or 'error_response none')"),
    ("direction-in", variant("dir == response => response", "direction in (response) => response"),
     "mini", "15:9: error: direction compares with == or != (request or response)"),
    ("direction-as-request-id", variant("request_id = id", "request_id = direction"), "mini",
     "12:18: error: request_id must name a field"),
    ("bytes-equals-string", variant("body = data", "body = data\n    timeout_ms = data == \"x\" ? 1 : 2"),
     "mini", "14:18: error: '==' compares bytes with a string: never equal"),
    ("int-equals-string", variant("dir == response", "id == \"1\""), "mini",
     "15:9: error: '==' compares an integer with a string: never equal"),
    # a TARS field by tag is null when absent: arithmetic on it needs a default
    ("nullable-field-type-arithmetic", SHIPPED("tars", "timeout_ms = iTimeout", "timeout_ms = iTimeout - 1"),
     "tars", "36:18: error: '-' needs integers; this operand is an integer or null"),
    # a length that re-encodes other than it was read: the frame would not round-trip
    ("length-offset", SHIPPED("xexample", "= len(payload)", "= len(payload) - 1"), "xexample",
     "19:28: error: 'payload_len' is written back as payload_len-1, not as the payload_len it was read as"),
    ("length-offset-in-a-sum", SHIPPED("memcached", "= len(key)", "= len(key) + 2"), "memcached",
     "22:28: error: 'key_len' is written back as key_len+2, not as the key_len it was read as"),
]  # fmt: skip


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def _in_process(args, capsys):
    """``protoc-x ARGS`` in this process (so mutation testing sees the checker run): the exit
    code and stderr."""
    code = cli.main(args)
    return code, capsys.readouterr().err


def _assert_located(stderr, spec, text, expected):
    first, source_line, caret = stderr.splitlines()[:3]
    assert first.startswith(f"{spec}:{expected}"), first
    line, col = (int(x) for x in expected.split(":")[:2])
    assert source_line == text.splitlines()[line - 1]
    assert caret == " " * (col - 1) + "^"
    return first


@pytest.mark.parametrize("case_id,text,stem,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_spec_is_rejected_with_position_and_no_output(
    tmp_path, capsys, case_id, text, stem, expected
):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    spec = spec_dir / f"{stem}.xproto"
    spec.write_text(text)
    out = tmp_path / "out"
    code, err = _in_process(["build", str(spec_dir), "-o", str(out)], capsys)
    assert code == 1, err
    first = _assert_located(err, spec, text, expected)
    assert not out.exists(), "no file may be written"
    code, err = _in_process(["check", str(spec_dir)], capsys)
    assert code == 1 and err.splitlines()[0] == first


# the same, through the installed command in its own process, for a few kinds of error
SUBPROCESS_CASES = [c for c in CASES if c[0] in ("syntax", "unknown-field", "status-incomplete")]


@pytest.mark.parametrize(
    "case_id,text,stem,expected", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES]
)
def test_bad_spec_through_the_command(tmp_path, case_id, text, stem, expected):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    spec = spec_dir / f"{stem}.xproto"
    spec.write_text(text)
    out = tmp_path / "out"
    result = _run(["build", str(spec_dir), "-o", str(out)], cwd=Path(__file__).parents[2])
    assert result.returncode == 1, result.stderr
    first = _assert_located(result.stderr, spec, text, expected)
    assert not out.exists(), "no file may be written"
    check = _run(["check", str(spec_dir)], cwd=Path(__file__).parents[2])
    assert check.returncode == 1 and check.stderr.splitlines()[0] == first


@pytest.mark.parametrize("text", AT_THE_LIMITS.values(), ids=AT_THE_LIMITS)
def test_at_the_limits_of_the_planner_a_spec_builds(text):
    code = compile_source(text, "mini.xproto", "mini", fmt=False)
    assert "class MiniFrame" in code


def test_one_bad_spec_among_good_ones_writes_nothing(tmp_path):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "mini.xproto").write_text(GOOD)
    (spec_dir / "zbad.xproto").write_text(
        GOOD.replace("protocol mini", "protocol zbad").replace("id u32", "id u99")
    )
    out = tmp_path / "out"
    result = _run(["build", str(spec_dir), "-o", str(out)], cwd=Path(__file__).parents[2])
    assert result.returncode == 1
    assert "zbad.xproto:" in result.stderr
    assert not out.exists()


def test_good_spec_builds(tmp_path):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "mini.xproto").write_text(GOOD)
    out = tmp_path / "out"
    result = _run(["build", str(spec_dir), "-o", str(out)], cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    assert (out / "mini.py").is_file()


#: independent mistakes of one spec, each with the ``line:col: message`` the checker gives it
SEVERAL = {
    "declarations": (
        variant(
            "pool multiplex",
            "pool multiplex\n    byte_order middle",  # line 3 (the rest one line down)
            "response = 1 }",
            "response = 1, again = 1 }",  # line 5
            "id u32",
            "id Nope",  # line 9
            "size u16 = len(data)",
            "size u16 = len(data)\n        bits u8 { a : 3\n b : 3 }",  # line 11
        ),
        [
            "3:5: byte_order must be big or little, not 'middle'",
            "5:48: duplicate enum value 1 in Dir",
            "9:12: unknown type 'Nope'",
            "11:9: bit fields add up to 6 bits, not 8",
        ],
    ),
    "expressions and semantics": (
        variant(
            "size u16 = len(data)",
            "size u16 = len(data)\n        pad bytes[nope]",  # line 10
            "body = data",
            "body = size\n    speed = data",  # lines 14, 15 (after pad)
            "else => request",
            "else => request\n        dir == request => oneway",  # line 18
        ),
        [
            "10:19: unknown field 'nope'",
            "14:12: body must be a bytes field, 'size' is int",
            "15:5: unknown binding 'speed' (one of: ",
            "18:17: 'else' must be the last stream rule",
        ],
    ),
}


@pytest.mark.parametrize("text,expected", SEVERAL.values(), ids=SEVERAL)
def test_the_checker_reports_every_independent_error_in_one_run(tmp_path, text, expected):
    spec = tmp_path / "mini.xproto"
    spec.write_text(text)
    result = _run(["check", str(spec)], cwd=tmp_path)
    assert result.returncode == 1
    heads = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(heads) == len(expected), result.stderr
    for head, want in zip(heads, expected):  # (in source order)
        assert head.startswith(f"{spec}:{want.replace(': ', ': error: ', 1)}"), head
    # each error keeps its source line and caret
    lines = result.stderr.splitlines()
    for want in expected:
        line, col = (int(x) for x in want.split(":")[:2])
        at = next(i for i, h in enumerate(lines) if h.startswith(f"{spec}:{line}:{col}:"))
        assert lines[at + 1] == text.splitlines()[line - 1]
        assert lines[at + 2] == " " * (col - 1) + "^"


def test_every_bad_spec_of_a_build_is_reported(tmp_path):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "mini.xproto").write_text(variant("id u32", "id u99"))
    (spec_dir / "other.xproto").write_text(
        variant("protocol mini", "protocol other", "body = data", "body = size")
    )
    out = tmp_path / "out"
    result = _run(["build", str(spec_dir), "-o", str(out)], cwd=tmp_path)
    assert result.returncode == 1 and not out.exists()
    heads = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert [h.split(": error: ")[0] for h in heads] == [
        f"{spec_dir / 'mini.xproto'}:8:12",
        f"{spec_dir / 'other.xproto'}:13:12",
    ], result.stderr


def test_a_let_that_fails_is_reported_once_by_the_lets_that_read_it(tmp_path):
    """redis' `command` reads the let `args`: a mistake in `args` is its one error, not an
    internal error of `command`'s check (found by the compiler fuzz)."""
    root = Path(__file__).parents[2]
    spec = tmp_path / "redis.xproto"
    text = (root / "specs" / "redis.xproto").read_text()
    assert text.count("items.bulk.data") == 1
    spec.write_text(text.replace("items.bulk.data", "items5bulk.data"))
    result = _run(["check", str(spec)], cwd=tmp_path)
    assert result.returncode == 1
    heads = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(heads) == 1 and "only request.<field> can be read with '.'" in heads[0], heads
