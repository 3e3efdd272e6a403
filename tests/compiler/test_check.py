"""The checker (protoc_x/check.py) in-process, one small spec per check: a spec it refuses
with the exact ``line:col: message``, or one it accepts. Fast, and what ``make mutate`` kills
the checker's mutants with (test_bad_specs.py runs the same kind of table through the CLI)."""

from __future__ import annotations

import pytest

from protoc_x import check as check_mod
from protoc_x.diagnostics import SpecError
from protoc_x.parser import parse

from .test_bad_specs import GOOD
from .test_bad_specs import variant as v

FRAME_TAIL = "size u16 = len(data)\n        data bytes[size]"
STATUS_MAP = """    status_map {
        0 ok <- 200 -> 200
        1 fail <- 400, 403, 404, 429, 500, 502, 503, 504 -> 500
    }
"""


def field(decl: str) -> str:
    """GOOD with one more frame field after ``data``."""
    return v("data bytes[size]", "data bytes[size]\n        " + decl)


#: a record for the request id to live in (``id R``, ``request_id = id.v``)
RECORD_R = "record R { v u32\n        k u8 }\n    frame"


def binding(line: str) -> str:
    """GOOD with one more binding after ``body = data``."""
    return v("body = data", "body = data\n    " + line)


def before_error_response(text: str) -> str:
    return v("    error_response", f"    {text}\n    error_response")


def answer(assign: str, decl: str | None = None, text: str = GOOD) -> str:
    """GOOD whose error_response also assigns ``assign``, with ``decl`` (a frame field) added
    after ``dir``: the field is on line 8, the error_response on line 23."""
    if decl is not None:
        text = v("dir Dir", "dir Dir\n        " + decl, text=text)
    return v("data = $message", "data = $message, " + assign, text=text)


def session(text: str) -> str:
    """``text`` with ``pool session`` (a client's own upstream connection) for its pool."""
    return v("pool multiplex", "pool session", text=text)


def inside(block: str) -> str:
    """GOOD with ``block`` (inside layouts) on line 12, before the bindings."""
    return v("    request_id = id", block + "\n    request_id = id")


def size_value(value: str, size: str) -> str:
    """GOOD with ``size u16 = VALUE`` and ``data bytes[SIZE]`` (line 9 and 10)."""
    return v(FRAME_TAIL, f"size u16 = {value}\n        data bytes[{size}]")


TWO_INSIDE_FIELDS = "    inside data when dir == request { svc hessian2.string\n m hessian2.map }\n"


def checked(text: str, stem: str | None = "mini") -> check_mod.Checked:
    return check_mod.check(parse(text, "mini.xproto"), stem)


def error_of(text: str, stem: str | None = "mini") -> str:
    with pytest.raises(SpecError) as info:
        checked(text, stem)
    e = info.value
    return f"{e.pos.line}:{e.pos.col}: {e.message}"


# (id, spec text, stem, "line:col: message")
ERRORS = [
    # ---- the protocol ----------------------------------------------------------------------
    ("protocol-underscore", v("protocol mini", "protocol _mini"), "_mini",
     "1:10: protocol name '_mini' may not start with '_' (reserved for generated code)"),
    ("protocol-keyword", v("protocol mini", "protocol class"), "class",
     "1:10: protocol name 'class' is a Python keyword"),
    ("protocol-soft-keyword", v("protocol mini", "protocol match"), "match",
     "1:10: protocol name 'match' is a Python keyword"),
    ("protocol-uppercase", v("protocol mini", "protocol Mini"), "Mini",
     "1:10: protocol name 'Mini' must be lowercase letters, digits, '_'"),
    ("protocol-uppercase-no-stem", v("protocol mini", "protocol Mini"), None,
     "1:10: protocol name 'Mini' must be lowercase letters, digits, '_'"),
    ("duplicate-pool", v("pool multiplex", "pool multiplex\n    pool multiplex"), "mini",
     "3:5: duplicate pool statement (first at line 2)"),
    ("duplicate-detect", v("detect u8 == 0x4d", "detect u8 == 0x4d\n    detect u8 == 0x4d"), "mini",
     "4:5: duplicate detect statement (first at line 3)"),
    ("duplicate-stream", v("    error_response", "    stream { else => request }\n    error_response"),
     "mini", "22:5: duplicate stream statement (first at line 14)"),
    ("byte-order", v("pool multiplex", "pool multiplex\n    byte_order middle"), "mini",
     "3:5: byte_order must be big or little, not 'middle'"),
    ("pool", v("pool multiplex", "pool sometimes"), "mini",
     "2:5: pool must be multiplex, pingpong, pipeline or session, not 'sometimes'"),
    ("no-frame", v("    frame {\n        magic u8 = 0x4d\n        dir Dir\n        id u32\n        "
                   f"{FRAME_TAIL}\n    }}\n", ""), "mini",
     "1:10: the protocol has no frame layout"),
    ("detect-offset", v("detect u8 == 0x4d", "detect u8 at 1024 == 0x4d"), "mini",
     "3:12: detect probe at offset 1024 reads past the first 1024 bytes of a frame"),
    ("detect-offset-width", v("detect u8 == 0x4d", "detect u16 at 1023 == 0x4d"), "mini",
     "3:12: detect probe at offset 1023 reads past the first 1024 bytes of a frame"),
    ("detect-value", v("detect u8 == 0x4d", "detect u8 == 0x100"), "mini",
     "3:12: detect value 0x100 does not fit in 8 bits"),
    ("detect-value-in", v("detect u8 == 0x4d", "detect u8 == 0x4d and u8 at 1 in (1, 0x100)"), "mini",
     "3:27: detect value 0x100 does not fit in 8 bits"),
    ("detect-value-signed", v("detect u8 == 0x4d", "detect i8 == 0x80"), "mini",
     "3:12: detect value 0x80 does not fit in 8 bits"),
    # ---- enums -----------------------------------------------------------------------------
    ("enum-underscore", v("enum Dir", "enum _Dir"), "mini",
     "4:10: enum name '_Dir' may not start with '_' (reserved for generated code)"),
    ("enum-twice", v("enum Dir : u8 { request = 0, response = 1 }",
                     "enum Dir : u8 { request = 0, response = 1 }\n    enum Dir : u8 { x = 0 }"), "mini",
     "5:10: duplicate enum 'Dir'"),
    ("enum-member-overflows-u24", v("enum Dir : u8", "enum Dir : u24", "response = 1", "response = 0x1000000"), "mini",
     "4:35: enum value 16777216 of 'response' overflows 24 bits"),
    ("enum-member-keyword", v("response = 1", "None = 1"), "mini",
     "4:34: enum member 'None' is a Python keyword"),
    ("enum-value-twice", v("response = 1", "response = 0"), "mini",
     "4:34: duplicate enum value 0 in Dir"),
    ("enum-signed-over", v("response = 1", "response = 1, high = 128", "Dir : u8", "Dir : i8"), "mini",
     "4:48: enum value 128 of 'high' overflows 8 bits"),
    ("enum-signed-under", v("response = 1", "response = 1, low = -129", "Dir : u8", "Dir : i8"), "mini",
     "4:48: enum value -129 of 'low' overflows 8 bits"),
    ("enum-unsigned-negative", v("response = 1", "response = -1"), "mini",
     "4:34: enum value -1 of 'response' overflows 8 bits"),
    # ---- fields ----------------------------------------------------------------------------
    ("fieldtype-unknown", v("data bytes[size]", "data hessian2.strin"), "mini",
     "10:14: unknown field type hessian2.strin"),
    ("fieldtype-no-argument", v("data bytes[size]", "data tars.int"), "mini",
     "10:14: tars.int takes 1 argument(s) (tag), got 0"),
    ("fieldtype-two-arguments", v("data bytes[size]", "data tars.int(1, 2)"), "mini",
     "10:14: tars.int takes 1 argument(s) (tag), got 2"),
    ("fieldtype-argument-type", v("data bytes[size]", 'data tars.int("a")'), "mini",
     "10:14: tars.int: tag must be int"),
    ("fieldtype-argument-value", v("data bytes[size]", "data tars.int(-1)"), "mini",
     "10:14: tars.int: tars tag -1 is not in 0..255"),
    ("fieldtype-argument-refused", v("data bytes[size]", 'data thrift.field(1, "no_such_kind")'),
     "mini", "10:14: thrift.field: unknown kind 'no_such_kind' (have: bool, byte, i16, i32, i64, "
     "double, string, binary, struct, list, set, map)"),
    ("fieldtype-takes-none", v("data bytes[size]", "data hessian2.string(1)"), "mini",
     "10:14: hessian2.string takes 0 argument(s) (), got 1"),
    ("branch-field-other-type", v("id u32", "if dir == request { id u32 } else { id Dir }"), "mini",
     "8:45: field 'id' has another type on another branch (line 8)"),
    ("bit-field-zero-wide", v("dir Dir", "bits u8 { a : 0, b : 8 }"), "mini",
     "7:19: a bit field is at least 1 bit wide"),
    ("bit-field-unknown-enum", v("dir Dir", "bits u8 { a : 1 as Nope, b : 7 }"), "mini",
     "7:19: unknown enum 'Nope'"),
    ("bit-field-enum-overflow", v("response = 1", "response = 2",
                                  "dir Dir", "bits u8 { dk : 1 as Dir, b : 7 }\n        dir Dir"), "mini",
     "7:19: enum Dir value 2 overflows the 1-bit field 'dk'"),
    ("bit-field-constant-overflow", v("dir Dir", "bits u8 { a : 2 = 4, b : 6 }\n        dir Dir"), "mini",
     "7:19: constant 0x4 overflows the 2-bit field 'a'"),
    ("map-length-not-int", field("m map(hessian2.string)[count 2]"), "mini",
     "11:15: a map's length prefix must be an integer type"),
    ("bytes-by-count", v("data bytes[size]", "data bytes[count size]"), "mini",
     "10:20: bytes are sized in bytes, not by count"),
    ("string-by-count", v("data bytes[size]", "data string[count size]"), "mini",
     "10:21: string are sized in bytes, not by count"),
    ("nullable-int", v("id u32", "id u32 nullable"), "mini",
     "8:9: only bytes, string and counted fields (a count of -1) can be nullable"),
    ("value-of-bytes", v("data bytes[size]", "data bytes[size] = 1"), "mini",
     "10:28: only integer fields can have a value, 'data' is bytes"),
    ("constant-overflow-signed", v("id u32", "id i8 = 128"), "mini",
     "8:17: constant 0x80 overflows 8-bit field 'id'"),
    ("value-unknown-enum-member", v("dir Dir", "dir Dir = reply"), "mini",
     "7:19: 'reply' is not a member of enum Dir"),
    ("value-not-recomputable", v("size u16 = len(data)", "size u16 = id"), "mini",
     "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, "
     "sizeof(frame) ± N or crc32(frame)"),
    ("value-product", v("size u16 = len(data)", "size u16 = len(data) * 2"), "mini",
     "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, "
     "sizeof(frame) ± N or crc32(frame)"),
    ("value-minus-len", v("size u16 = len(data)", "size u16 = 0 - len(data)"), "mini",
     "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, "
     "sizeof(frame) ± N or crc32(frame)"),
    ("crc-width", field("check u16 = crc32(frame)"), "mini",
     "11:9: a crc32 field must be 32 bits wide"),
    ("len-of-field-sized-otherwise", v(FRAME_TAIL, "size u16 = len(data)\n        n u16\n        data bytes[n]"),
     "mini", "9:24: 'size' = len(data) but 'data' is not sized by 'size' (data is sized by other fields)"),
    ("len-of-rest", v(FRAME_TAIL, "total u32 = sizeof(frame)\n        size u16 = len(data)\n        data bytes[rest]"),
     "mini", "10:24: 'size' = len(data) but 'data' is not sized by 'size' (data [rest])"),
    ("len-of-two", v(FRAME_TAIL, "size u16 = len(data) + len(more)\n        data bytes[size]\n        more bytes[3]"),
     "mini", "9:20: 'size' is written back as size+3, not as the size it was read as: its value and "
     "the sizes it measures must agree"),
    ("len-of-a-sum-size", v(FRAME_TAIL, "size u16 = len(data)\n        n u8\n        data bytes[size + n]"),
     "mini", "9:20: 'size' is written back as size + n+0, not as the size it was read as: its value "
     "and the sizes it measures must agree"),
    ("len-twice", v(FRAME_TAIL, "size u16 = len(data) + len(data)\n        data bytes[size]"),
     "mini", "9:20: 'size' is written back as 2*size+0, not as the size it was read as: its value "
     "and the sizes it measures must agree"),
    # ---- expressions -----------------------------------------------------------------------
    ("size-unknown-field", v("data bytes[size]", "data bytes[nope]"), "mini",
     "10:20: unknown field 'nope'"),
    ("template-reads-field", v("data = $message", "data = data"), "mini",
     "22:45: templates read fields as request.data"),
    ("attribute-outside-template", binding("timeout_ms = request.id"), "mini",
     "14:18: only request.<field> can be read with '.' (in reply and response templates)"),
    ("attribute-of-not-request", v("data = $message", "data = response.id"), "mini",
     "22:45: only request.<field> can be read with '.' (in reply and response templates)"),
    ("attribute-in-stream", v("dir == response", "request.dir == response"), "mini",
     "15:9: only request.<field> can be read with '.' (in reply and response templates)"),
    ("attribute-unknown", v("data = $message", "data = request.nope"), "mini",
     "22:45: unknown field 'nope'"),
    ("index-not-map", binding('service = id["x"]'), "mini", "14:15: only maps can be indexed by a string"),
    ("index-not-a-string", v("body = data", "body = data\n    service = m[1]",
                             "data bytes[size]", "data bytes[size]\n        m map(u8)[count 2]"), "mini",
     "15:17: a map key must be a string"),
    ("direction-with-a-field", v("dir == response", "direction == dir"), "mini",
     "15:22: direction compares with request or response"),
    ("direction-with-a-number", v("dir == response", "direction == 1"), "mini",
     "15:22: direction compares with request or response"),
    ("direction-on-the-right", v("dir == response", "dir == direction"), "mini",
     "15:9: direction compares with request or response"),
    ("equals-unknown-both-sides", v("dir == response", "nope == response"), "mini",
     "15:9: unknown field 'nope'"),
    ("equals-member-of-no-enum", v("dir == response", "id == reply"), "mini",
     "15:15: unknown field 'reply'"),
    ("in-enum-non-member", v("dir == response", "dir in (response, reply)"), "mini",
     "15:27: 'reply' is not a member of enum Dir"),
    ("in-unknown-field", v("dir == response", "id in (1, nope)"), "mini",
     "15:19: unknown field 'nope'"),
    ("cond-enum-non-member", v("error_response { dir = response", "error_response { dir = 1 == 1 ? response : reply"),
     "mini", "22:48: 'reply' is not a member of enum Dir"),
    ("function-unknown-in-library", binding("service = tars.nope(data)"), "mini",
     "14:15: unknown function tars.nope"),
    ("function-unknown-library", binding("service = nolib.f(data)"), "mini",
     "14:15: unknown function nolib.f"),
    ("function-arguments", binding("service = hessian2.arg_count()"), "mini",
     "14:15: hessian2.arg_count(): missing a required argument: 'descriptor'"),
    ("function-argument-unknown-field", binding("service = hessian2.arg_count(nope)"), "mini",
     "14:34: unknown field 'nope'"),
    ("function-unknown", binding("service = nope(data)"), "mini", "14:15: unknown function 'nope'"),
    ("function-argument-count", binding("method = name(dir, dir)"), "mini",
     "14:14: name() takes 1 argument(s)"),
    ("sizeof-in-a-binding", binding("timeout_ms = sizeof(frame)"), "mini",
     "14:18: sizeof() is only for recomputed frame fields"),
    ("sizeof-of-a-field", v(FRAME_TAIL, f"total u32 = sizeof(data)\n        {FRAME_TAIL}"), "mini",
     "9:28: sizeof() takes 'frame'"),
    ("len-of-a-number", v("size u16 = len(data)", "size u16 = len(1)"), "mini",
     "9:24: len() takes a field name"),
    ("len-of-unknown", v("size u16 = len(data)", "size u16 = len(nope)"), "mini",
     "9:24: len() takes a field name"),
    ("len-in-a-binding", binding("timeout_ms = len(data)"), "mini",
     "14:18: len() is only for recomputed fields"),
    ("len-of-an-int", v("size u16 = len(data)", "size u16 = len(id)"), "mini",
     "9:24: len() of an integer field 'id'"),
    ("name-of-an-int", binding("method = name(id)"), "mini", "14:19: name() takes an enum field"),
    ("name-of-a-number", binding("method = name(1)"), "mini", "14:19: name() takes an enum field"),
    ("name-of-unknown", binding("method = name(nope)"), "mini", "14:19: name() takes an enum field"),
    # ---- semantics -------------------------------------------------------------------------
    ("binding-twice", binding("body = data"), "mini", "14:5: duplicate binding 'body'"),
    ("body-not-a-field", v("body = data", 'body = "x"'), "mini", "13:12: body must name a field"),
    ("body-int", v("body = data", "body = id"), "mini",
     "13:12: body must be a bytes field, 'id' is int"),
    ("headers-bytes", binding("headers = data"), "mini",
     "14:15: headers must be a map field, 'data' is bytes"),
    ("request-id-bytes", v("request_id = id", "request_id = data"), "mini",
     "12:18: request_id must be a int field, 'data' is bytes"),
    ("body-string-field-type", v("body = data", "body = v", "data bytes[size]",
                                 "data bytes[size]\n        v hessian2.string"), "mini",
     "14:12: body must be a bytes field, 'v' is ext"),
    ("header-twice", binding('header "a" = id\n    header "a" = id'), "mini",
     "15:12: duplicate header 'a'"),
    ("header-unknown-field", binding('header "a" = nope'), "mini", "14:18: unknown field 'nope'"),
    ("no-stream", v("    stream {\n        dir == response => response\n        else => request\n    }\n", ""),
     "mini", "1:10: the protocol has no stream block (which frames are requests, responses...)"),
    ("else-not-last", v("dir == response => response\n        else => request",
                        "else => request\n        dir == response => response"), "mini",
     "15:17: 'else' must be the last stream rule"),
    ("no-else", v("\n        else => request", ""), "mini",
     "15:28: the stream block must end with an 'else' rule"),
    ("stream-unknown-field", v("dir == response => response", "nope == 1 => response"), "mini",
     "15:9: unknown field 'nope'"),
    ("heartbeat-unknown-template", before_error_response("heartbeat when id == 0 { pong { dir = request } }"),
     "mini", "22:30: heartbeat templates are ping and reply, not 'pong'"),
    ("heartbeat-ping-twice", before_error_response(
        "heartbeat when id == 0 { ping { dir = request } ping { dir = request } }"), "mini",
     "22:53: duplicate ping template"),
    ("reply-has-no-id", before_error_response("heartbeat when id == 0 { reply { dir = response, id = $id } }"),
     "mini", "22:59: $id is not available here"),
    ("ping-has-no-status", before_error_response(
        "heartbeat when id == 0 { ping { dir = response, id = $status } }"), "mini",
     "22:58: $status is not available here"),
    ("heartbeat-unknown-field", before_error_response("heartbeat when nope == 0"), "mini",
     "22:20: unknown field 'nope'"),
    ("goaway-unknown-field", before_error_response("goaway when nope == 0"), "mini",
     "22:17: unknown field 'nope'"),
    ("success-response-unknown-field", before_error_response("success_response { nope = 1 }"), "mini",
     "22:24: unknown field 'nope' in success_response"),
    ("template-assigns-twice", v("data = $message", 'data = $message, data = "x"'), "mini",
     "22:55: 'data' assigned twice"),
    ("template-assigns-a-computed-field", v("dir = response", "size = 1"), "mini",
     "22:22: 'size' is computed by the encoder; it cannot be assigned"),
    ("template-assigns-a-constant", v("dir = response", "magic = 1"), "mini",
     "22:22: 'magic' is computed by the encoder; it cannot be assigned"),
    ("template-assigns-an-enum-value", v("dir Dir", "dir Dir = response"), "mini",
     "22:22: 'dir' is computed by the encoder; it cannot be assigned"),
    ("template-assigns-a-constant-bit-field", v("dir Dir", "bits u8 { a : 2 = 3, b : 6 }\n        dir Dir",
                                                "dir = response", "dir = response, a = 1"), "mini",
     "23:38: 'a' is computed by the encoder; it cannot be assigned"),
    # ---- status map ------------------------------------------------------------------------
    ("no-status-map", v(STATUS_MAP, ""), "mini", "1:10: the protocol has no status_map"),
    ("status-name-keyword", v("1 fail", "1 pass"), "mini", "20:9: status name 'pass' is a Python keyword"),
    ("status-name-twice", v("1 fail", "1 ok"), "mini", "20:9: duplicate status name 'ok'"),
    ("status-missing-two", v("1 fail <- 400, 403, 404, 429, 500, 502, 503, 504",
                             "1 fail <- 400, 404, 429, 500, 502, 503"), "mini",
     "1:10: the status map does not answer runtime code(s) 403, 504"),
    # ---- types -----------------------------------------------------------------------------
    ("status-code-overflows-enum", v("1 fail", "300 fail", "body = data", "body = data\n    status = dir"),
     "mini", "21:9: status code: 300 does not fit in 'dir' (8 bits)"),
    ("status-code-overflows-bits", v("dir Dir", "dir Dir\n        bits u8 { st : 2, pad : 6 }",
                                     "body = data", "body = data\n    status = st", "1 fail", "4 fail"),
     "mini", "22:9: status code: 4 does not fit in 'st' (2 bits)"),
    ("status-bytes", binding("status = data"), "mini",
     "14:14: status must be an integer or null; this expression is bytes"),
    ("timeout-bytes", binding("timeout_ms = data"), "mini",
     "14:18: timeout_ms must be an integer or null; this expression is bytes"),
    ("service-map", v("body = data", "body = data\n    service = m",
                      "data bytes[size]", "data bytes[size]\n        m map(u8)[count 2]"), "mini",
     "15:15: service must be a boolean or bytes or an integer or null or a string; this expression is a map"),
    ("method-map", v("body = data", "body = data\n    method = m",
                     "data bytes[size]", "data bytes[size]\n        m map(u8)[count 2]"), "mini",
     "15:14: method must be a boolean or bytes or an integer or null or a string; this expression is a map"),
    ("header-map", v("body = data", 'body = data\n    header "k" = m',
                     "data bytes[size]", "data bytes[size]\n        m map(u8)[count 2]"), "mini",
     "15:18: header 'k' must be a boolean or bytes or an integer or null or a string; this expression is a map"),
    ("size-too-big", v(FRAME_TAIL, "size u16 = sizeof(frame)\n        data bytes[16777217]"), "mini",
     "10:20: the size of 'data' must be 0..16777216, not 16777217"),
    ("size-negative", v(FRAME_TAIL, "size u16 = sizeof(frame)\n        data bytes[-1]"), "mini",
     "10:20: the size of 'data' must be 0..16777216, not -1"),
    # templates: what a field takes, constants and ranges that must fit it
    ("template-int-from-string", answer('id = "x"'), "mini",
     "22:60: 'id' in error_response must be an integer; this expression is a string"),
    ("template-u32-plus-one", answer("id = request.id + 1"), "mini",
     "22:60: 'id' in error_response: a value in 1..4294967296 may not fit in 'id' (0..4294967295)"),
    ("template-u8-from-u32", answer("s = request.id", "s u8"), "mini",
     "23:59: 's' in error_response: a value in 0..4294967295 may not fit in 's' (0..255)"),
    ("template-i8-from-u8", answer("s = request.u", "u u8\n        s i8"), "mini",
     "24:59: 's' in error_response: a value in 0..255 may not fit in 's' (-128..127)"),
    ("template-i8-negated", answer("s = -request.s", "s i8"), "mini",
     "23:59: 's' in error_response: a value in -127..128 may not fit in 's' (-128..127)"),
    ("template-u8-subtracted-from-0", answer("s = 0 - request.s", "s u8"), "mini",
     "23:59: 's' in error_response: a value in -255..0 may not fit in 's' (0..255)"),
    ("template-bits-times-plus", answer("s = request.b * 32 + 32", "s u8\n        bits u8 { b : 3, c : 5 }"),
     "mini", "24:59: 's' in error_response: a value in 32..256 may not fit in 's' (0..255)"),
    ("template-status-over", v("1 fail", "256 fail", text=answer("s = $status", "s u8")), "mini",
     "21:9: 's' in error_response: 256 does not fit in 's' (8 bits)"),
    ("template-status-under", v("1 fail", "-129 fail", text=answer("s = $status", "s i8")), "mini",
     "21:9: 's' in error_response: -129 does not fit in 's' (8 bits)"),
    ("template-status-plus", answer("s = $status + 255", "s u8"), "mini",
     "23:59: 's' in error_response: a value in 255..256 may not fit in 's' (0..255)"),
    ("template-cond-then", answer("s = request.id == 1 ? 70000 : 3", "s u16"), "mini",
     "23:59: 's' in error_response: a value in 3..70000 may not fit in 's' (0..65535)"),
    ("template-cond-else", answer("s = request.id == 1 ? 3 : -1", "s u16"), "mini",
     "23:59: 's' in error_response: a value in -1..3 may not fit in 's' (0..65535)"),
    ("template-coalesce", answer("s = request.t ?? 256", "t tars.int(1)\n        s u8"), "mini",
     "24:59: 's' in error_response: a value in an unknown range may not fit in 's' (0..255)"),
    ("template-modulo", answer("s = request.id % 257", "s u8"), "mini",
     "23:59: 's' in error_response: a value in 0..256 may not fit in 's' (0..255)"),
    ("template-times-minus-one", answer("s = request.s * -1", "s i8"), "mini",
     "23:59: 's' in error_response: a value in -127..128 may not fit in 's' (-128..127)"),
    ("template-minus", answer("s = 254 - request.s", "s u8"), "mini",
     "23:59: 's' in error_response: a value in -1..254 may not fit in 's' (0..255)"),
    ("template-unknown-range", answer("s = int(request.data) ?? 0", "s u8"), "mini",
     "23:59: 's' in error_response: a value in an unknown range may not fit in 's' (0..255)"),
    ("template-constant-over", answer("s = 256", "s u8"), "mini",
     "23:59: 's' in error_response: 256 does not fit in 's' (8 bits)"),
    ("template-bit-field-over", answer("b = 8", "bits u8 { b : 3, c : 5 }"), "mini",
     "23:59: 'b' in error_response: 8 does not fit in 'b' (3 bits)"),
    ("template-tars-int-over", answer("t = 0xffffffffffffffff", "t tars.int(1)"), "mini",
     "23:59: 't' in error_response: 18446744073709551615 does not fit in 't': tars int "
     "18446744073709551615 overflows 64 bits"),
    ("template-tars-int-status-over", v("1 fail", "0xffffffffffffffff fail", text=answer("t = $status", "t tars.int(1)")),
     "mini", "21:9: 't' in error_response: 18446744073709551615 does not fit in 't': tars int "
     "18446744073709551615 overflows 64 bits"),
    ("template-string-field-type-int", answer("t = 1", "t hessian2.string"), "mini",
     "23:59: 't' in error_response must be bytes or null or a string; this expression is an integer"),
    ("template-list-int", answer("t = 1", "t varint.unsigned[count 2]"), "mini",
     "23:59: 't' in error_response must be a value of its field type; this expression is an integer"),
    ("template-any-int", answer("t = 1", "t hessian2.any"), "mini",
     "23:59: 't' in error_response must be a value of its field type; this expression is an integer"),
    ("template-varint-null", answer("t = null", "t varint.unsigned"), "mini",
     "23:59: 't' in error_response must be an integer; this expression is null"),
    ("template-bytes-int", v("data = $message", "data = 1"), "mini",
     "22:45: 'data' in error_response must be bytes or null or a string; this expression is an integer"),
    ("template-string-null", v("data = $message", "data = null", "data bytes[size]", "data string[size]",
                               "body = data\n", ""), "mini",
     "21:45: 'data' in error_response must be bytes or a string; this expression is null"),
    ("template-map-string", answer('m = "x"', "m map(u8)[count 2]"), "mini",
     "23:59: 'm' in error_response must be a map or null; this expression is a string"),
    # inside layouts
    ("inside-unknown-field", inside("    inside nope when dir == request { svc hessian2.string }"), "mini",
     "12:5: unknown frame field 'nope'"),
    ("inside-of-an-inside-field", inside("    inside data when dir == request { svc hessian2.string }\n"
                                         "    inside svc when dir == request { x u8 }"), "mini",
     "13:5: unknown frame field 'svc'"),
    ("inside-an-int", inside("    inside id when dir == request { svc hessian2.string }"), "mini",
     "12:5: 'inside' needs a bytes field; 'id' is int"),
    ("inside-condition-reads-its-field", inside('    inside data when data == "x" { svc hessian2.string }'),
     "mini", "12:22: an 'inside' condition reads other frame fields, not 'data' (reading it needs the "
     "layout this condition chooses)"),
    ("inside-condition-reads-an-inside-field", inside(
        '    inside data when dir == request { svc hessian2.string }\n    inside data when svc == "x" { x u8 }'),
     "mini", "13:22: an 'inside' condition reads other frame fields, not 'svc' (reading it needs the "
     "layout this condition chooses)"),
    ("inside-condition-unknown-field", inside("    inside data when nope == 1 { svc hessian2.string }"),
     "mini", "12:22: unknown field 'nope'"),
    ("inside-if-unknown-field", inside("    inside data when dir == request { k u8\n if nope == 1 { x u8 } }"),
     "mini", "13:5: unknown field 'nope'"),
    ("inside-field-named-like-a-frame-field", inside("    inside data when dir == request { id u8 }"),
     "mini", "12:39: duplicate field 'id' (first at line 8)"),
    ("two-insides-one-name", inside("    inside data when dir == request { x u8 }\n"
                                    "    inside data when dir == response { x u8 }"), "mini",
     "13:40: duplicate field 'x' (first at line 12)"),
    # tags
    ("tars-tag-twice", field("a tars.int(1)\n        b tars.int(1)"), "mini",
     "12:11: tag 1 is also the tag of 'a' (line 11)"),
    ("thrift-id-twice", field('a thrift.field(1, "i32")\n        b thrift.field(1, "string")'), "mini",
     "12:11: tag 1 is also the tag of 'a' (line 11)"),
    ("tag-on-a-branch-and-after", field("if id == 1 { a tars.int(1) } else { b tars.int(2) }\n"
                                        "        c tars.int(1)"), "mini",
     "12:11: tag 1 is also the tag of 'a' (line 11)"),
    # expression types
    ("index-a-tars-int", v("body = data", 'body = data\n    service = t["x"]',
                           "data bytes[size]", "data bytes[size]\n        t tars.int(1)"), "mini",
     "15:15: only maps can be indexed; this is an integer or null"),
    ("negate-bytes", binding("timeout_ms = -data"), "mini", "14:19: '-' needs integers; this operand is bytes"),
    ("modulo-a-field", binding("timeout_ms = id % id"), "mini",
     "14:23: the right side of '%' must be a number above 0 (a field may be 0)"),
    ("modulo-zero", binding("timeout_ms = id % 0"), "mini",
     "14:23: the right side of '%' must be a number above 0 (not 0)"),
    ("modulo-negative", binding("timeout_ms = id % -1"), "mini",
     "14:23: the right side of '%' must be a number above 0 (not -1)"),
    ("order-bytes-left", binding("timeout_ms = data < 1 ? 1 : 2"), "mini",
     "14:18: '<' compares integers or strings; this is bytes"),
    ("order-bytes-right", binding("timeout_ms = 1 >= data ? 1 : 2"), "mini",
     "14:23: '>=' compares integers or strings; this is bytes"),
    ("order-int-string", binding('timeout_ms = id < "x" ? 1 : 2'), "mini",
     "14:18: '<' compares an integer with a string"),
    ("order-nullable-string", binding('timeout_ms = name(dir) < "x" ? 1 : 2'), "mini",
     "14:18: '<' compares integers or strings; this is null or a string"),
    ("plus-nullable-left", binding("timeout_ms = int(data) + 1"), "mini",
     "14:18: '+' needs integers; this operand is an integer or null (it may be null: give a default with ??)"),
    ("plus-nullable-right", binding("timeout_ms = 1 * int(data)"), "mini",
     "14:22: '*' needs integers; this operand is an integer or null (it may be null: give a default with ??)"),
    ("plus-bytes-or-null", binding("timeout_ms = 1 - (data ?? null)"), "mini",
     "14:23: '-' needs integers; this operand is bytes or null"),
    ("and-is-one-of-its-operands", binding("timeout_ms = id and data"), "mini",
     "14:18: timeout_ms must be an integer or null; this expression is bytes or an integer"),
    ("separator-int", binding("service = before(data, 1)"), "mini",
     "14:28: before()'s separator must be a string, not an integer"),
    ("separator-null", binding("service = after(data, null)"), "mini",
     "14:27: after()'s separator must be a string, not null"),
    ("size-may-be-null", v("data bytes[size]", "data bytes[int(size)]"), "mini",
     "10:20: the size of 'data' must be an integer; this expression is an integer or null (it may be "
     "null: give a default with ??)"),
    ("direction-as-a-value", binding("timeout_ms = direction"), "mini",
     "14:18: direction is not a value: compare it (direction == request)"),
    ("direction-as-a-test", binding("timeout_ms = direction ? 1 : 2"), "mini",
     "14:18: direction is not a value: compare it (direction == request)"),
    ("in-option-type", binding("timeout_ms = id in (1, -data) ? 1 : 2"), "mini",
     "14:29: '-' needs integers; this operand is bytes"),
    ("in-item-type", binding("timeout_ms = -data in (1, 2) ? 1 : 2"), "mini",
     "14:19: '-' needs integers; this operand is bytes"),
    ("cond-test-type", binding("timeout_ms = -data ? 1 : 2"), "mini",
     "14:19: '-' needs integers; this operand is bytes"),
    ("not-operand-type", binding("timeout_ms = not -data ? 1 : 2"), "mini",
     "14:23: '-' needs integers; this operand is bytes"),
    ("not-equal-int-bytes", binding("timeout_ms = id != data ? 1 : 2"), "mini",
     "14:18: '!=' compares an integer with bytes: never equal"),
    ("equals-operand-type", binding("timeout_ms = -data == 1 ? 1 : 2"), "mini",
     "14:19: '-' needs integers; this operand is bytes"),
    ("function-argument-type", binding("timeout_ms = hessian2.arg_count(-data)"), "mini",
     "14:38: '-' needs integers; this operand is bytes"),
    ("int-argument-type", binding("timeout_ms = int(-data)"), "mini",
     "14:23: '-' needs integers; this operand is bytes"),
    ("before-argument-type", binding('service = before(-data, ":")'), "mini",
     "14:23: '-' needs integers; this operand is bytes"),
    ("heartbeat-test-type", before_error_response("heartbeat when -data == 1"), "mini",
     "22:21: '-' needs integers; this operand is bytes"),
    ("goaway-test-type", before_error_response("goaway when -data == 1"), "mini",
     "22:18: '-' needs integers; this operand is bytes"),
    ("stream-test-type", v("dir == response =>", "-data == 1 =>"), "mini",
     "15:10: '-' needs integers; this operand is bytes"),
    ("layout-test-type", field("if -data == 1 { x u8 }"), "mini",
     "11:13: '-' needs integers; this operand is bytes"),
    ("inside-test-type", inside('    inside data when id < "x" { x u8 }'), "mini",
     "12:22: '<' compares an integer with a string"),
    ("inside-if-test-type", inside("    inside data when dir == request { k u8\n if -data == 1 { x u8 } }"),
     "mini", "13:6: '-' needs integers; this operand is bytes"),
    # the type of each kind of expression, as timeout_ms (an integer or null) sees it
    ("request-field-on-a-branch", answer("s = request.code", "s u16\n        if dir == request { code u16 }"),
     "mini", "24:59: 's' in error_response must be an integer; this expression is an integer or null (it "
     "may be null: give a default with ??)"),
    ("request-field-on-the-else-branch", answer("s = request.code", "s u16\n        if dir == request { x u8 } "
                                                "else { code u16 }"), "mini",
     "24:59: 's' in error_response must be an integer; this expression is an integer or null (it "
     "may be null: give a default with ??)"),
    ("request-bit-field-on-a-branch", answer("s = request.b", "s u16\n        if dir == request { bits u8 { b : 3, "
                                             "c : 5 } }"), "mini",
     "24:59: 's' in error_response must be an integer; this expression is an integer or null (it "
     "may be null: give a default with ??)"),
    ("request-inside-field", v("data = $message", "data = $message, id = request.k",
                               text=inside("    inside data when dir == request { k u8 }")), "mini",
     "23:60: 'id' in error_response must be an integer; this expression is an integer or null (it "
     "may be null: give a default with ??)"),
    ("true", binding("timeout_ms = true"), "mini", "14:18: timeout_ms must be an integer or null; this expression is a boolean"),
    ("false", binding("timeout_ms = false"), "mini", "14:18: timeout_ms must be an integer or null; this expression is a boolean"),
    ("empty-map", binding("timeout_ms = {}"), "mini", "14:18: timeout_ms must be an integer or null; this expression is a map"),
    ("string", binding('timeout_ms = "x"'), "mini", "14:18: timeout_ms must be an integer or null; this expression is a string"),
    ("message-as-an-int", answer("id = $message"), "mini",
     "22:60: 'id' in error_response must be an integer; this expression is a string"),
    ("status-as-bytes", v("data = $message", "data = $status"), "mini",
     "22:45: 'data' in error_response must be bytes or null or a string; this expression is an integer"),
    ("id-plus-one", before_error_response("heartbeat when id == 0 { ping { dir = request, id = $id + 1 } }"),
     "mini", "22:57: 'id' in ping: a value in an unknown range may not fit in 'id' (0..4294967295)"),
    ("nullable-bytes", v("data bytes[size]", "data bytes[size] nullable", "body = data",
                         "body = data\n    timeout_ms = data"), "mini", "14:18: timeout_ms must be an integer or null; this expression is bytes or null"),
    ("hessian2-string", v("body = data", "body = data\n    timeout_ms = t", "data bytes[size]",
                          "data bytes[size]\n        t hessian2.string"), "mini", "15:18: timeout_ms must be an integer or null; this expression is null or a string"),
    ("map", v("body = data", "body = data\n    timeout_ms = m", "data bytes[size]",
              "data bytes[size]\n        m map(u8)[count 2]"), "mini", "15:18: timeout_ms must be an integer or null; this expression is a map"),
    ("string-field", v("body = data", "body = data\n    timeout_ms = t", "data bytes[size]",
                       "data bytes[size]\n        t string[2]"), "mini", "15:18: timeout_ms must be an integer or null; this expression is a string"),
    ("nullable-string-field", v("body = data", "body = data\n    timeout_ms = t", "data bytes[size]",
                                "data bytes[size]\n        t string[2] nullable"), "mini", "15:18: timeout_ms must be an integer or null; this expression is null or a string"),
    ("map-entry", v("body = data", 'body = data\n    timeout_ms = m["x"]', "data bytes[size]",
                    "data bytes[size]\n        m map(u8)[count 2]"), "mini", "15:18: timeout_ms must be an integer or null; this expression is null or a string"),
    ("name", binding("timeout_ms = name(dir)"), "mini", "14:18: timeout_ms must be an integer or null; this expression is null or a string"),
    ("before", binding('timeout_ms = before(data, ":")'), "mini", "14:18: timeout_ms must be an integer or null; this expression is null or a string"),
    ("cond-then", binding("timeout_ms = id == 1 ? data : 2"), "mini", "14:18: timeout_ms must be an integer or null; this expression is bytes or an integer"),
    ("cond-else", binding("timeout_ms = id == 1 ? 2 : data"), "mini", "14:18: timeout_ms must be an integer or null; this expression is bytes or an integer"),
    ("coalesce", binding("timeout_ms = int(data) ?? data"), "mini", "14:18: timeout_ms must be an integer or null; this expression is bytes or an integer"),
    ("order", binding("timeout_ms = id < 1"), "mini", "14:18: timeout_ms must be an integer or null; this expression is a boolean"),
    ("equals", binding("timeout_ms = id == 1"), "mini", "14:18: timeout_ms must be an integer or null; this expression is a boolean"),
    ("direction-equals", binding("timeout_ms = direction == request"), "mini", "14:18: timeout_ms must be an integer or null; this expression is a boolean"),
    ("in", binding("timeout_ms = id in (1, 2)"), "mini", "14:18: timeout_ms must be an integer or null; this expression is a boolean"),
    ("not", binding("timeout_ms = not id"), "mini", "14:18: timeout_ms must be an integer or null; this expression is a boolean"),
    ("or", binding("timeout_ms = id or data"), "mini", "14:18: timeout_ms must be an integer or null; this expression is bytes or an integer"),
    # names
    ("field-get-prefix", v("id u32", "get_x u32"), "mini",
     "8:9: field name 'get_x' is reserved for the frame API (names starting with get_, set_, del_ are methods)"),
    ("field-set-prefix", v("id u32", "set_x u32"), "mini",
     "8:9: field name 'set_x' is reserved for the frame API (names starting with get_, set_, del_ are methods)"),
    ("field-del-prefix", v("id u32", "del_x u32"), "mini",
     "8:9: field name 'del_x' is reserved for the frame API (names starting with get_, set_, del_ are methods)"),
    ("field-patch-request-id", v("id u32", "patch_request_id u32"), "mini",
     "8:9: field name 'patch_request_id' is reserved for the frame API"),
    ("field-FIELD_NAMES", v("id u32", "FIELD_NAMES u32"), "mini",
     "8:9: field name 'FIELD_NAMES' is reserved for the frame API"),
    ("field-soft-keyword", v("id u32", "case u32"), "mini", "8:9: field name 'case' is a Python keyword"),
    ("bit-field-twice", v("dir Dir", "bits u8 { a : 4, a : 4 }"), "mini",
     "7:26: duplicate field 'a' (first at line 7)"),
    ("bit-field-reserved", v("dir Dir", "bits u8 { length : 4, a : 4 }"), "mini",
     "7:19: field name 'length' is reserved for the frame API"),
    # one name on several branches
    ("branch-tars-int-and-string", v("id u32", "if dir == request { id tars.int(1) } else { id tars.string(2) }"),
     "mini", "8:53: field 'id' has another type on another branch (line 8)"),
    ("branch-tars-int-and-u32", v("id u32", "if dir == request { id tars.int(1) } else { id u32 }"),
     "mini", "8:53: field 'id' has another type on another branch (line 8)"),
    ("branch-u32-and-tars-int", v("id u32", "if dir == request { id u32 } else { id tars.int(1) }"),
     "mini", "8:45: field 'id' has another type on another branch (line 8)"),
    ("branch-tars-int-and-varint", v("id u32", "if dir == request { id tars.int(1) } else { id varint.unsigned }"),
     "mini", "8:53: field 'id' has another type on another branch (line 8)"),
    ("branch-two-enums", v("id u32", "if dir == request { id Dir } else { id Other }",
                           "enum Dir", "enum Other : u8 { a = 0 }\n    enum Dir"), "mini",
     "9:45: field 'id' has another type on another branch (line 9)"),
    ("branch-bit-field-and-u8", v("id u32", "if dir == request { bits u8 { id : 8 } } else { id u8 }"),
     "mini", "8:57: field 'id' has another type on another branch (line 8)"),
    # (a u32 on one branch and a u8 on the other read as a u32 on both; an i8 and a u8, as i8)
    ("branch-u32-and-u8", v("id u32", "id u32\n        if dir == request { code u32 } else { code u8 }"),
     "mini", "9:47: field 'code' has another type on another branch (line 9)"),
    ("branch-i8-and-u8", v("id u32", "id u32\n        if dir == request { code i8 } else { code u8 }"),
     "mini", "9:46: field 'code' has another type on another branch (line 9)"),
    ("branch-u32le-and-u32", v("id u32", "id u32\n        if dir == request { code u32le } else { code u32 }"),
     "mini", "9:49: field 'code' has another type on another branch (line 9)"),
    ("twice-on-one-branch", v("id u32", "if dir == request { id u32\n id u32 }"), "mini",
     "9:2: duplicate field 'id' (first at line 8)"),
    ("on-a-branch-and-after", v("id u32", "if dir == request { id u32 }\n        id u32"), "mini",
     "9:9: duplicate field 'id' (first at line 8)"),
    ("in-two-ifs", v("id u32", "if dir == request { id u32 }\n        if magic == 1 { id u32 }"), "mini",
     "9:25: duplicate field 'id' (first at line 8)"),
    # more edges
    ("len-of-an-unsized-field", v(FRAME_TAIL, "size u16 = len(h)\n        h hessian2.string\n        data bytes[3]"),
     "mini", "9:24: 'size' = len(h) but 'h' is not sized by 'size' (h has no size)"),
    ("fieldtype-two-parameters", v("data bytes[size]", "data thrift.field(1)"), "mini",
     "10:14: thrift.field takes 2 argument(s) (id, kind), got 1"),
    ("types-after-a-bit-field", v("dir Dir", "bits u8 { a : 2, b : 6 }\n        dir Dir",
                                  "data bytes[size]", "data bytes[int(size)]"), "mini",
     "11:20: the size of 'data' must be an integer; this expression is an integer or null (it may be "
     "null: give a default with ??)"),
    ("size-by-a-tars-int", field("n tars.int(1)\n        more bytes[n]"), "mini",
     "12:20: the size of 'more' must be an integer; this expression is an integer or null (it may be "
     "null: give a default with ??)"),
    ("template-negated-unknown", answer("s = -(request.t ?? 0)", "t tars.int(1)\n        s u8"), "mini",
     "24:59: 's' in error_response: a value in an unknown range may not fit in 's' (0..255)"),
    ("template-cond-low-then", answer("s = request.id == 1 ? request.u - 5 : request.u", "u u8\n        s u8"),
     "mini", "24:59: 's' in error_response: a value in -5..255 may not fit in 's' (0..255)"),
    ("template-cond-low-else", answer("s = request.id == 1 ? request.u : request.u - 5", "u u8\n        s u8"),
     "mini", "24:59: 's' in error_response: a value in -5..255 may not fit in 's' (0..255)"),
    ("template-plus-unknown-left", answer("s = (int(request.data) ?? 0) + 1", "s u8"), "mini",
     "23:59: 's' in error_response: a value in an unknown range may not fit in 's' (0..255)"),
    ("template-plus-unknown-right", answer("s = 1 + (int(request.data) ?? 0)", "s u8"), "mini",
     "23:59: 's' in error_response: a value in an unknown range may not fit in 's' (0..255)"),
    ("template-minus-range", answer("s = request.u - (request.u + 1)", "u u8\n        s u16"), "mini",
     "24:59: 's' in error_response: a value in -256..254 may not fit in 's' (0..65535)"),
    ("template-plus-range", answer("s = request.u + (request.u - 300)", "u u8\n        s u16"), "mini",
     "24:59: 's' in error_response: a value in -300..210 may not fit in 's' (0..65535)"),
    ("template-times-range", answer("s = request.u * (request.u - 300)", "u u8\n        s u16"), "mini",
     "24:59: 's' in error_response: a value in -76500..0 may not fit in 's' (0..65535)"),
    ("template-bit-field-range", answer("s = request.b + 250", "s u8\n        bits u8 { b : 3, c : 5 }"), "mini",
     "24:59: 's' in error_response: a value in 250..257 may not fit in 's' (0..255)"),
    ("template-signed-range", answer("s = request.t + 1", "s i8\n        t i8"), "mini",
     "24:59: 's' in error_response: a value in -127..128 may not fit in 's' (-128..127)"),
    ("template-enum-from-a-string", v("dir = response", 'dir = "x"'), "mini",
     "22:28: 'dir' in error_response must be an integer; this expression is a string"),
    ("not-equals", binding("timeout_ms = id != 1"), "mini", "14:18: timeout_ms must be an integer or null; this expression is a boolean"),
    ("request-field-equals-a-non-member", v("data = $message", 'data = request.dir == reply ? "a" : "b"'), "mini",
     "22:60: 'reply' is not a member of enum Dir"),
    ("size-compares-a-later-field", v("data bytes[size]", "data bytes[more == 1 ? size : 0]\n        more u8"),
     "mini", "10:20: field 'more' is read after 'data': a size may only use earlier fields"),
    ("size-compares-with-a-later-field", v("data bytes[size]", "data bytes[1 == more ? size : 0]\n        more u8"),
     "mini", "10:25: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-in-a-comparison", inside("    inside data when dir == request { x u32 = sizeof(frame) == 1 ? 1 : 2 }"),
     "mini", "12:47: sizeof() is only for recomputed frame fields"),
    ("inside-sizeof", inside("    inside data when dir == request { x u32 = sizeof(frame) }"), "mini",
     "12:47: sizeof() is only for recomputed frame fields"),
    # (once an internal compiler error)
    ("direction-among-in-options", binding("timeout_ms = id in (1, direction) ? 1 : 2"), "mini",
     "14:28: direction is not a value: compare it (direction == request)"),
    # recomputed values: their shapes, and what they give back
    ("sizeof-minus-a-field", size_value("sizeof(frame) - id", "rest"), "mini", "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, sizeof(frame) ± N or crc32(frame)"),
    ("sizeof-times-two", size_value("sizeof(frame) * 2", "rest"), "mini", "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, sizeof(frame) ± N or crc32(frame)"),
    ("len-minus-a-field", size_value("len(data) - id", "size"), "mini", "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, sizeof(frame) ± N or crc32(frame)"),
    ("len-minus-len", size_value("len(data) - len(data)", "size"), "mini", "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, sizeof(frame) ± N or crc32(frame)"),
    ("numbers-only", size_value("1 + 2", "size"), "mini", "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, sizeof(frame) ± N or crc32(frame)"),
    ("len-plus-sizeof", size_value("len(data) + sizeof(frame)", "size"), "mini", "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, sizeof(frame) ± N or crc32(frame)"),
    ("crc-plus-one", size_value("crc32(frame) + 1", "size"), "mini", "9:20: the value of 'size' must be a constant, a sum of len() terms and numbers, sizeof(frame) ± N or crc32(frame)"),
    ("size-minus-a-field", v(FRAME_TAIL, "size u16 = len(data)\n        n u8\n        data bytes[size - n]"),
     "mini", "9:20: 'size' is written back as size + -1*n+0, not as the size it was read as: its value and "
     "the sizes it measures must agree"),
    ("size-cancels-out", v(FRAME_TAIL, "size u16 = len(data)\n        data bytes[size - size + 3]"), "mini",
     "9:20: 'size' is written back as 0+3, not as the size it was read as: its value and the sizes it "
     "measures must agree"),
    ("len-of-two-sized-otherwise", v(FRAME_TAIL, "size u16 = len(a) + len(b)\n        a bytes[3]\n        "
                                     "b bytes[4]\n        data bytes[5]"), "mini",
     "9:24: 'size' = len(a) but 'a' is not sized by 'size' (a is sized by other fields)"),
    # (a size read with the direction: the decoder, which reads sizes, had none and failed)
    ("direction-in-a-size", v("data bytes[size]", "data bytes[direction == request ? size : size]"), "mini",
     "10:20: unknown field 'direction'"),
    ("direction-in-an-inside-size", inside("    inside data when dir == request { x bytes[direction == request ? 1 : 2] }"),
     "mini", "12:47: unknown field 'direction'"),
    ("len-in-a-size", v("data bytes[size]", "data bytes[len(magic)]"), "mini",
     "10:20: len() is only for recomputed fields"),
    # (an enum bit field's constant was written over what a template assigned, silently)
    ("template-assigns-a-constant-enum-bit-field", v("dir Dir", "bits u8 { k : 2 as Dir = 1, pad : 6 }\n        dir Dir",
                                                     "dir = response", "dir = response, k = request"), "mini",
     "23:38: 'k' is computed by the encoder; it cannot be assigned"),
    ("tag-on-both-branches-and-after", field("if id == 1 { a tars.int(1) } else { b tars.int(1) }\n"
                                             "        c tars.int(1)"), "mini",
     "12:11: tag 1 is also the tag of 'a' (line 11)"),
    ("branch-thrift-kinds", v("id u32", 'if dir == request { id thrift.field(1, "i32") } '
                              'else { id thrift.field(2, "string") }'), "mini",
     "8:64: field 'id' has another type on another branch (line 8)"),
    ("int-value-is-a-name", v("id u32", "id u32 = response"), "mini", "8:18: unknown field 'response'"),
    ("crc-enum", v("dir Dir", "dir Dir = crc32(frame)"), "mini", "7:9: a crc32 field must be 32 bits wide"),
    ("len-of-an-enum", v("size u16 = len(data)", "size u16 = len(dir)"), "mini",
     "9:24: len() of an integer field 'dir'"),
    ("len-of-a-bit-field", v("dir Dir", "bits u8 { b : 8 }\n        dir Dir", "size u16 = len(data)", "size u16 = len(b)"),
     "mini", "10:24: len() of an integer field 'b'"),
    ("int-of-unknown", binding("timeout_ms = int(nope)"), "mini", "14:22: unknown field 'nope'"),
    ("success-response-message", before_error_response("success_response { dir = response, data = $message }"),
     "mini", "22:47: $message is not available here"),
    ("success-response-status", before_error_response("success_response { dir = response, id = $status }"),
     "mini", "22:45: $status is not available here"),
    ("ping-reads-the-request", before_error_response(
        "heartbeat when id == 0 { ping { dir = request, data = request.data } }"), "mini",
     "22:59: only request.<field> can be read with '.' (in reply and response templates)"),
    ("name-of-bytes", binding("method = name(data)"), "mini", "14:19: name() takes an enum field"),
    ("stream-else-unknown-kind", v("else => request", "else => reply"), "mini",
     "16:17: unknown stream type 'reply' (one of: request, oneway, quiet, response)"),
    ("request-field-on-a-branch-after-bits", answer("s = request.code", "s u16\n        bits u8 { x : 8 }\n"
                                                    "        if dir == request { code u16 }"), "mini",
     "25:59: 's' in error_response must be an integer; this expression is an integer or null (it "
     "may be null: give a default with ??)"),
    ("ping-reads-a-field", before_error_response("heartbeat when id == 0 { ping { dir = request, data = data } }"),
     "mini", "22:59: templates read fields as request.data"),
    ("reply-reads-a-field", before_error_response("heartbeat when id == 0 { reply { dir = response, data = data } }"),
     "mini", "22:61: templates read fields as request.data"),
    ("success-response-reads-a-field", before_error_response("success_response { dir = response, data = data }"),
     "mini", "22:47: templates read fields as request.data"),
    ("headers-not-a-field", binding('headers = "x"'), "mini", "14:15: headers must name a field"),
    ("body-enum", v("body = data", "body = dir"), "mini", "13:12: body must be a bytes field, 'dir' is enum"),
    ("crc-of-a-field", field("check u32 = crc32(data)"), "mini", "11:27: crc32() takes 'frame'"),
    ("thrift-id-too-big", field('t thrift.field(70000, "i32")'), "mini",
     "11:11: thrift.field: id 70000 does not fit in an i16"),
    # an inside condition may not read inside fields, wherever in it they are
    ("inside-condition-index", inside(TWO_INSIDE_FIELDS + '    inside data when m["k"] == "v" { y u8 }'),
     "mini", "14:22: an 'inside' condition reads other frame fields, not 'm' (reading it needs the layout this condition chooses)"),
    ("inside-condition-in-item", inside(TWO_INSIDE_FIELDS + '    inside data when svc in ("a", "b") { y u8 }'),
     "mini", "14:22: an 'inside' condition reads other frame fields, not 'svc' (reading it needs the layout this condition chooses)"),
    ("inside-condition-in-option", inside(TWO_INSIDE_FIELDS + '    inside data when "a" in ("b", svc) { y u8 }'),
     "mini", "14:35: an 'inside' condition reads other frame fields, not 'svc' (reading it needs the layout this condition chooses)"),
    ("inside-condition-not", inside(TWO_INSIDE_FIELDS + '    inside data when not (svc == "a") { y u8 }'),
     "mini", "14:27: an 'inside' condition reads other frame fields, not 'svc' (reading it needs the layout this condition chooses)"),
    ("inside-condition-cond-then", inside(TWO_INSIDE_FIELDS + '    inside data when (id == 1 ? svc : "b") == "a" { y u8 }'),
     "mini", "14:33: an 'inside' condition reads other frame fields, not 'svc' (reading it needs the layout this condition chooses)"),
    ("inside-condition-cond-else", inside(TWO_INSIDE_FIELDS + '    inside data when (id == 1 ? "b" : svc) == "a" { y u8 }'),
     "mini", "14:39: an 'inside' condition reads other frame fields, not 'svc' (reading it needs the layout this condition chooses)"),
    ("inside-condition-cond-test", inside(TWO_INSIDE_FIELDS + '    inside data when (svc == "a" ? 1 : 2) == 1 { y u8 }'),
     "mini", "14:23: an 'inside' condition reads other frame fields, not 'svc' (reading it needs the layout this condition chooses)"),
    ("inside-condition-call", inside(TWO_INSIDE_FIELDS + '    inside data when int(svc) == 1 { y u8 }'),
     "mini", "14:26: an 'inside' condition reads other frame fields, not 'svc' (reading it needs the layout this condition chooses)"),
    ("inside-condition-right", inside(TWO_INSIDE_FIELDS + '    inside data when "a" == svc { y u8 }'),
     "mini", "14:29: an 'inside' condition reads other frame fields, not 'svc' (reading it needs the layout this condition chooses)"),
    ("index-a-request-field", v("data = $message", 'data = request.m["x"]', "dir Dir", "dir Dir\n        m map(u8)[count 2]"),
     "mini", "23:45: only maps can be indexed by a string"),
    # an unknown name anywhere in an expression
    ("unknown-negated", binding("timeout_ms = -nope"), "mini", "14:19: unknown field 'nope'"),
    ("unknown-not", binding("timeout_ms = not nope"), "mini", "14:22: unknown field 'nope'"),
    ("unknown-plus-left", binding("timeout_ms = nope + 1"), "mini", "14:18: unknown field 'nope'"),
    ("unknown-plus-right", binding("timeout_ms = 1 + nope"), "mini", "14:22: unknown field 'nope'"),
    ("unknown-in-item", binding("timeout_ms = nope in (1) ? 1 : 2"), "mini", "14:18: unknown field 'nope'"),
    ("unknown-cond-test", binding("timeout_ms = nope ? 1 : 2"), "mini", "14:18: unknown field 'nope'"),
    ("unknown-cond-then", binding("timeout_ms = id == 1 ? nope : 2"), "mini", "14:28: unknown field 'nope'"),
    ("unknown-cond-else", binding("timeout_ms = id == 1 ? 2 : nope"), "mini", "14:32: unknown field 'nope'"),
    ("unknown-indexed", binding('service = nope["x"]'), "mini", "14:15: unknown field 'nope'"),
    ("two-sized-by-one-length", v(FRAME_TAIL, "size u16 = len(a) + len(b)\n        a bytes[size]\n        b bytes[size]\n"
                                  "        data bytes[2]"), "mini",
     "9:20: 'size' is written back as 2*size+0, not as the size it was read as: its value and the sizes it "
     "measures must agree"),
    # the arguments of functions are checked where the call is
    ("int-of-direction", binding("timeout_ms = int(direction)"), "mini",
     "14:22: direction is not a value: compare it (direction == request)"),
    ("int-of-a-later-field", v("data bytes[size]", "data bytes[int(more) ?? 0]\n        more u8"), "mini",
     "10:24: field 'more' is read after 'data': a size may only use earlier fields"),
    ("int-of-sizeof-inside", inside("    inside data when dir == request { x u32 = int(sizeof(frame)) }"), "mini",
     "12:51: sizeof() is only for recomputed frame fields"),
    ("function-of-direction", binding("timeout_ms = hessian2.arg_count(direction)"), "mini",
     "14:37: direction is not a value: compare it (direction == request)"),
    ("function-of-a-later-field", field("l hessian2.any[count hessian2.arg_count(more)]\n        more hessian2.string"),
     "mini", "11:49: field 'more' is read after 'l': a size may only use earlier fields"),
    ("function-of-sizeof-inside", inside(
        "    inside data when dir == request { x u32 = hessian2.arg_count(sizeof(frame)) }"), "mini",
     "12:66: sizeof() is only for recomputed frame fields"),
    # each kind of expression passes on what it is checked for: a size's earlier fields, an
    # inside layout's owner (no sizeof), the context (direction only where it may be)
    ("size-reads-a-later-field-index", v("data bytes[size]", 'data bytes[int(more["k"]) ?? 0]\n        more u8'), "mini",
     "10:24: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-index", inside('    inside data when dir == request { x u32 = int(sizeof(frame)["k"]) ?? 0 }'), "mini",
     "12:51: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-negated", v("data bytes[size]", "data bytes[-more]\n        more u8"), "mini",
     "10:21: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-negated", inside("    inside data when dir == request { x u32 = -sizeof(frame) }"), "mini",
     "12:48: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-not", v("data bytes[size]", "data bytes[(not more) ? 1 : 0]\n        more u8"), "mini",
     "10:25: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-not", inside("    inside data when dir == request { x u32 = (not sizeof(frame)) ? 1 : 0 }"), "mini",
     "12:52: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-plus-left", v("data bytes[size]", "data bytes[more + 1]\n        more u8"), "mini",
     "10:20: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-plus-left", inside("    inside data when dir == request { x u32 = sizeof(frame) + 1 }"), "mini",
     "12:47: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-plus-right", v("data bytes[size]", "data bytes[1 + more]\n        more u8"), "mini",
     "10:24: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-plus-right", inside("    inside data when dir == request { x u32 = 1 + sizeof(frame) }"), "mini",
     "12:51: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-in-item", v("data bytes[size]", "data bytes[more in (1) ? 1 : 0]\n        more u8"), "mini",
     "10:20: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-in-item", inside("    inside data when dir == request { x u32 = sizeof(frame) in (1) ? 1 : 0 }"), "mini",
     "12:47: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-in-option", v("data bytes[size]", "data bytes[1 in (more) ? 1 : 0]\n        more u8"), "mini",
     "10:26: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-in-option", inside("    inside data when dir == request { x u32 = 1 in (sizeof(frame)) ? 1 : 0 }"), "mini",
     "12:53: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-cond-test", v("data bytes[size]", "data bytes[more ? 1 : 0]\n        more u8"), "mini",
     "10:20: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-cond-test", inside("    inside data when dir == request { x u32 = sizeof(frame) ? 1 : 0 }"), "mini",
     "12:47: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-cond-then", v("data bytes[size]", "data bytes[id == 1 ? more : 0]\n        more u8"), "mini",
     "10:30: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-cond-then", inside("    inside data when dir == request { x u32 = id == 1 ? sizeof(frame) : 0 }"), "mini",
     "12:57: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-cond-else", v("data bytes[size]", "data bytes[id == 1 ? 0 : more]\n        more u8"), "mini",
     "10:34: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-cond-else", inside("    inside data when dir == request { x u32 = id == 1 ? 0 : sizeof(frame) }"), "mini",
     "12:61: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-equals-left", v("data bytes[size]", "data bytes[more == 1 ? 1 : 0]\n        more u8"), "mini",
     "10:20: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-equals-left", inside("    inside data when dir == request { x u32 = sizeof(frame) == 1 ? 1 : 0 }"), "mini",
     "12:47: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-equals-right", v("data bytes[size]", "data bytes[1 == more ? 1 : 0]\n        more u8"), "mini",
     "10:25: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-equals-right", inside("    inside data when dir == request { x u32 = 1 == sizeof(frame) ? 1 : 0 }"), "mini",
     "12:52: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-int", v("data bytes[size]", "data bytes[int(more) ?? 0]\n        more u8"), "mini",
     "10:24: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-int", inside("    inside data when dir == request { x u32 = int(sizeof(frame)) ?? 0 }"), "mini",
     "12:51: sizeof() is only for recomputed frame fields"),
    ("size-reads-a-later-field-function", v("data bytes[size]", "data bytes[hessian2.arg_count(more)]\n        more u8"), "mini",
     "10:39: field 'more' is read after 'data': a size may only use earlier fields"),
    ("inside-sizeof-function", inside("    inside data when dir == request { x u32 = hessian2.arg_count(sizeof(frame)) }"), "mini",
     "12:66: sizeof() is only for recomputed frame fields"),
    ("direction-in-index", binding('service = direction["k"]'), "mini",
     "14:15: only maps can be indexed by a string"),
    ("direction-in-int", binding('service = int(direction)'), "mini",
     "14:19: direction is not a value: compare it (direction == request)"),
    ("direction-in-function", binding('service = hessian2.arg_count(direction)'), "mini",
     "14:34: direction is not a value: compare it (direction == request)"),
    ("direction-in-before", binding('service = before(direction, ":")'), "mini",
     "14:22: direction is not a value: compare it (direction == request)"),
    ("size-reads-its-own-field", v("data bytes[size]", "data bytes[data]"), "mini",
     "10:20: field 'data' is read after 'data': a size may only use earlier fields"),
    ("tags-after-an-untagged-field-type", field("h hessian2.string\n        a tars.int(1)\n        b tars.int(1)"),
     "mini", "13:11: tag 1 is also the tag of 'a' (line 12)"),
    # ---- a request id in a record or a map, a value that fills its bytes, map literals ----
    ("json-without-size", v("data bytes[size]", "data json.object"), "mini",
     "10:14: json.object fills the bytes it is given: write json.object[n] with n its size in bytes, or json.object[rest]"),
    ("json-by-count", v("data bytes[size]", "data json.object[count size]"), "mini",
     "10:14: json.object fills the bytes it is given: write json.object[n] with n its size in bytes, or json.object[rest]"),
    ("request-id-arithmetic", v("request_id = id", "request_id = id + 1"), "mini",
     '12:18: request_id must name an integer field, a field of a record field (rec.id) or a map field\'s key (m["id"])'),
    ("request-id-in-bytes", v("request_id = id", 'request_id = data["x"]'), "mini",
     "12:18: only maps can be indexed by a string"),
    ("request-id-record-unknown", v("frame", RECORD_R, "id u32", "id R", "request_id = id", "request_id = id.nope"),
     "mini", "14:18: the request id must be an integer field of record R"),
    ("request-id-record-not-int", v("frame", "record R { n u8 = len(s)\n        s string[n] }\n    frame", "id u32", "id R",
                                    "request_id = id", "request_id = id.s"),
     "mini", "14:18: the request id must be an integer field of record R"),
    ("request-id-record-list", v("frame", RECORD_R, "id u32", "id R[count 2]", "request_id = id", "request_id = id.v"),
     "mini", '14:18: request_id must name an integer field, a field of a record field (rec.id) or a map field\'s key (m["id"])'),
    ("request-id-record-u24", v("frame", "record R { v u24 }\n    frame", "id u32", "id R", "request_id = id", "request_id = id.v"),
     "mini", "13:18: the request id must be 8, 16, 32 or 64 bits wide"),
    ("map-literal-in-binding", binding('service = {"a": 1}'), "mini", "14:15: a map is written in templates only"),
    ("map-literal-twice", v("data = $message", 'data = {"a": 1, "a": 2}'), "mini", "22:45: key 'a' appears twice in the map"),
    ("map-literal-to-bytes", v("data = $message", 'data = {"a": 1}'), "mini",
     "22:45: 'data' in error_response must be bytes or null or a string; this expression is a map"),
    ("nullable-count-unsigned", v("size u16 = len(data)\n        data bytes[size]",
                                  "size u16 = len(data)\n        data varint.unsigned[count size] nullable"),
     "mini", "10:36: a nullable list is null when its count is -1: 'size' must be signed (or a decimal)"),
    ("hessian2-in-a-record", v("frame", "record R { h hessian2.string }\n    frame"), "mini",
     "5:18: hessian2 values keep per-message state that a record does not carry yet: put this field in the frame's layout"),
    ("index-of-an-int-let", v("body = data", 'body = data\n    let x = id\n    service = x["k"]'), "mini",
     "15:15: only maps can be indexed; this is an integer"),
    # ---- a connection's first frame, and session pools -----------------------------------
    ("first-needs-session", v("id u32", "id u32\n        if first { hello u8 }"), "mini",
     "2:5: a layout of a connection's first frame needs 'pool session': on a connection "
     "clients share, a client's first frame is not the upstream connection's first"),
    ("first-in-record", session(v("    frame", "    record R { v u8\n        if first { k u8 } }\n    frame",
                                  "id u32", "id u32\n        r R")), "mini",
     "6:12: a record's layout does not depend on first"),
    ("first-in-inside", session(inside("    inside data when first { svc hessian2.string }")), "mini",
     "12:22: an 'inside' layout does not depend on first (the frame's does)"),
    ("first-in-inside-if", session(inside("    inside data when dir == request { if first { k u8 } }")),
     "mini", "12:42: an 'inside' layout does not depend on first (the frame's does)"),
    ("first-field", v("id u32", "id u32\n        first u8"), "mini",
     "9:9: field name 'first' is reserved for the frame API"),
    ("first-in-size", session(v("data bytes[size]", "data bytes[first]")), "mini",
     "10:20: unknown field 'first'"),
    ("first-timeout", session(binding("timeout_ms = first")), "mini",
     "14:18: timeout_ms must be an integer or null; this expression is a boolean"),
    ("first-in-template", session(answer("id = first")), "mini", "22:60: unknown field 'first'"),
    ("session-quiet", session(v("dir == response => response",
                                "dir == response => response\n        id == 7 => quiet")), "mini",
     "16:20: a session protocol matches answers by position: a quiet request, answered only "
     "sometimes, would shift every answer after it"),
]  # fmt: skip


@pytest.mark.parametrize("case_id,text,stem,expected", ERRORS, ids=[c[0] for c in ERRORS])
def test_refused(case_id, text, stem, expected):
    assert error_of(text, stem) == expected


# (id, spec text, stem): specs the checker accepts, each at the edge of a check above
ACCEPTED = [
    ("good", GOOD, "mini"),
    ("no-stem", GOOD, None),
    ("session-first", session(field("if first and dir == request { hello u8 } else { other u16 }")),
     "mini"),
    ("two-enums", v("enum Dir", "enum Other : u8 { x = 0 }\n    enum Dir"), "mini"),
    ("detect-last-byte", v("detect u8 == 0x4d", "detect u8 at 1023 == 0x4d"), "mini"),
    ("detect-widest-value", v("detect u8 == 0x4d", "detect u8 == 0xff"), "mini"),
    ("enum-signed-range", v("response = 1", "response = 1, low = -128, high = 127", "Dir : u8", "Dir : i8"),
     "mini"),
    ("enum-unsigned-top", v("response = 1", "response = 255"), "mini"),
    ("branch-field-same-type", v("id u32", "if dir == request { id u32 } else { id u32 }"), "mini"),
    ("bit-field-constant-top", v("dir Dir", "bits u8 { a : 2 = 3, b : 6 }\n        dir Dir"), "mini"),
    ("u24-i40-u56", v("id u32", "id u32\n        a u24\n        b i40le\n        c u56"), "mini"),
    ("enum-u24", v("enum Dir : u8", "enum Dir : u24"), "mini"),
    ("map-length-varint", field("m map(varint.unsigned)[count 2]"), "mini"),
    ("nullable-string", v("data bytes[size]", "data string[size] nullable", "body = data\n", ""), "mini"),
    ("constant-signed-bottom", v("id u32", "id i8 = -128"), "mini"),
    ("rest", v(FRAME_TAIL, "size u16 = sizeof(frame)\n        data bytes[rest]"), "mini"),
    ("crc", field("check u32 = crc32(frame)"), "mini"),
    ("len-minus-one", v(FRAME_TAIL, "size u16 = len(data) - 1\n        data bytes[size + 1]"), "mini"),
    ("size-not-judged", v(FRAME_TAIL, "size u16 = len(data)\n        data bytes[size * 1]"), "mini"),
    ("direction-on-the-left", v("dir == response", "response == direction"), "mini"),
    ("in-enum", v("dir == response", "dir in (response, request)"), "mini"),
    ("name-of-an-enum", binding("method = name(dir)"), "mini"),
    ("request-id-enum", v("request_id = id", "request_id = dir"), "mini"),
    ("request-id-varint", v("request_id = id", "request_id = v", "data bytes[size]",
                            "data bytes[size]\n        v varint.unsigned"), "mini"),
    ("body-tars-bytes", v("body = data", "body = v", "data bytes[size]",
                          "data bytes[size]\n        v tars.bytes(1)"), "mini"),
    ("headers-hessian2-map", v("body = data", "body = data\n    headers = v", "data bytes[size]",
                               "data bytes[size]\n        v hessian2.map"), "mini"),
    ("pingpong-without-request-id", v("pool multiplex", "pool pingpong", "request_id = id\n", ""), "mini"),
    ("heartbeat", before_error_response(
        "heartbeat when id == 0 { ping { dir = request, id = $id } reply { dir = response, "
        "data = request.data } }"), "mini"),
    ("goaway", before_error_response("goaway when id == 0"), "mini"),
    ("no-error-response", v("error_response { dir = response, data = $message }", "error_response none"),
     "mini"),
    ("status-others", v("-> 500\n", "-> 500\n        others -> 502\n"), "mini"),
    ("status-negative", v("1 fail", "-1 fail"), "mini"),
    ("status-enum", binding("status = dir"), "mini"),
    ("status-bits-top", v("dir Dir", "dir Dir\n        bits u8 { st : 2, pad : 6 }",
                          "body = data", "body = data\n    status = st", "1 fail", "3 fail"), "mini"),
    ("status-expression", binding("status = id + 1"), "mini"),
    ("size-largest", v(FRAME_TAIL, "size u16 = sizeof(frame)\n        data bytes[16777216]"), "mini"),
    ("size-zero", v(FRAME_TAIL, "size u16 = sizeof(frame)\n        data bytes[0]"), "mini"),
    ("template-u32-copied", answer("id = request.id"), "mini"),
    ("template-u8-copied", answer("s = request.s", "s u8"), "mini"),
    ("template-i8-copied", answer("s = request.s", "s i8"), "mini"),
    ("template-bits-times-plus", answer("s = request.b * 32 + 31", "s u8\n        bits u8 { b : 3, c : 5 }"),
     "mini"),
    ("template-status", answer("s = $status", "s u8"), "mini"),
    ("template-status-plus", answer("s = $status + 254", "s u8"), "mini"),
    ("template-cond", answer("s = request.id == 1 ? 65535 : 0", "s u16"), "mini"),
    ("template-modulo", answer("s = request.id % 256", "s u8"), "mini"),
    ("template-minus", answer("s = 255 - request.s", "s u8"), "mini"),
    ("template-bit-field-top", answer("b = 7", "bits u8 { b : 3, c : 5 }"), "mini"),
    ("template-tars-int-null", answer("t = null", "t tars.int(1)"), "mini"),
    ("template-tars-int-top", answer("t = 0x7fffffffffffffff", "t tars.int(1)"), "mini"),
    ("template-hessian2-string-null", answer("t = null", "t hessian2.string"), "mini"),
    ("template-bytes-null", v("data = $message", "data = null"), "mini"),
    ("template-nullable-string-null", v("data = $message", "data = null", "data bytes[size]",
                                        "data string[size] nullable", "body = data\n", ""), "mini"),
    ("template-string-from-bytes", v("data = $message", "data = request.data", "data bytes[size]",
                                     "data string[size]", "body = data\n", ""), "mini"),
    ("template-map-null", answer("m = null", "m map(u8)[count 2]"), "mini"),
    ("template-map-empty", answer("m = {}", "m map(u8)[count 2]"), "mini"),
    ("template-any-copied", answer("t = request.t", "t hessian2.any"), "mini"),
    ("inside", inside("    inside data when dir == request { svc hessian2.string }"), "mini"),
    ("inside-if", inside("    inside data when dir == request { k u8\n if k == 1 { svc hessian2.string } }"),
     "mini"),
    ("tags-of-two-libraries", field('a thrift.field(1, "i32")\n        b tars.int(1)'), "mini"),
    ("tags-on-exclusive-branches", field("if id == 1 { a tars.int(1) } else { b tars.int(1) }"), "mini"),
    ("tags-apart", field("a tars.int(1)\n        b tars.int(2)"), "mini"),
    ("tags-in-the-frame-and-inside", v("data bytes[size]", "data bytes[size]\n        a tars.int(1)",
                                       text=inside("    inside data when dir == request { b tars.int(1) }")),
     "mini"),
    ("index-hessian2-map", v("body = data", 'body = data\n    service = m["x"]',
                             "data bytes[size]", "data bytes[size]\n        m hessian2.map"), "mini"),
    ("not", binding("timeout_ms = not data ? 1 : 2"), "mini"),
    ("coalesce-then-plus", binding("timeout_ms = (int(data) ?? 0) + 1"), "mini"),
    ("separator", binding('service = after(data, ":")'), "mini"),
    ("equals-null", binding("timeout_ms = data == null ? 1 : 2"), "mini"),
    ("equals-any", v("body = data", "body = data\n    timeout_ms = id == a ? 1 : 2",
                     "data bytes[size]", "data bytes[size]\n        a hessian2.any"), "mini"),
    ("direction-in-a-binding", binding("timeout_ms = direction == request ? 1 : 2"), "mini"),
    ("direction-on-the-right-in-a-binding", binding("timeout_ms = request == direction ? 1 : 2"), "mini"),
    ("member-on-the-left", binding("timeout_ms = request == dir ? 1 : 2"), "mini"),
    ("request-field-on-both-branches", answer("s = request.code", "s u16\n        if dir == request { code u16 } "
                                              "else { code u16 }"), "mini"),
    ("request-bit-field-on-both-branches", answer("s = request.b", "s u16\n        if dir == request { bits u8 { b "
                                                  ": 3, c : 5 } } else { bits u8 { b : 3, c : 5 } }"), "mini"),
    ("timeout-null", binding("timeout_ms = null"), "mini"),
    ("timeout-list", v("body = data", "body = data\n    timeout_ms = t", "data bytes[size]",
                       "data bytes[size]\n        t varint.unsigned[count 2]"), "mini"),
    ("timeout-varint", v("body = data", "body = data\n    timeout_ms = t", "data bytes[size]",
                         "data bytes[size]\n        t varint.unsigned"), "mini"),
    ("timeout-any", v("body = data", "body = data\n    timeout_ms = t", "data bytes[size]",
                      "data bytes[size]\n        t hessian2.any"), "mini"),
    ("timeout-int", binding("timeout_ms = int(data)"), "mini"),
    ("timeout-negated", binding("timeout_ms = -id"), "mini"),
    ("timeout-modulo", binding("timeout_ms = id % 2"), "mini"),
    ("timeout-function", binding("timeout_ms = hessian2.arg_count(data)"), "mini"),
    ("timeout-len-is-for-values", binding("timeout_ms = id == 1 ? id : null"), "mini"),
    ("field-is-prefix", v("id u32", "is_x u32", "request_id = id", "request_id = is_x"), "mini"),
    ("field-type", v("id u32", "type u32", "request_id = id", "request_id = type"), "mini"),
    ("field-double-underscore-inside", v("id u32", "a__b__ u32", "request_id = id", "request_id = a__b__"),
     "mini"),
    ("branch-tars-ints", v("id u32", "if dir == request { id tars.int(1) } else { id tars.int(2) }"), "mini"),
    ("branch-u16s", v("id u32", "id u32\n        if dir == request { code u16 } else { code u16 }"), "mini"),
    ("branch-bit-fields-of-two-widths", v("id u32", "id u32\n        if dir == request { bits u8 { code : 8 } } "
                                          "else { bits u8 { pad : 4, code : 4 } }"), "mini"),
    ("branch-nested", v("id u32", "if dir == request { if magic == 1 { id u32 } else { id u32 } } "
                        "else { id u32 }"), "mini"),
    ("bit-field-constant-zero", v("dir Dir", "bits u8 { a : 2 = 0, b : 6 }\n        dir Dir"), "mini"),
    ("rest-after-a-bit-field", v("dir Dir", "bits u8 { a : 2, b : 6 }\n        dir Dir", FRAME_TAIL,
                                 "size u16 = sizeof(frame)\n        data bytes[rest]"), "mini"),
    ("template-coalesce-in-range", answer("s = request.code ?? 0", "s u8\n        if dir == request { code u8 }"),
     "mini"),
    ("equals-any-on-the-left", v("body = data", "body = data\n    timeout_ms = a == id ? 1 : 2",
                                 "data bytes[size]", "data bytes[size]\n        a hessian2.any"), "mini"),
    ("null-equals", binding("timeout_ms = null == data ? 1 : 2"), "mini"),
    ("modulo-one", binding("timeout_ms = id % 1"), "mini"),
    ("order-strings", binding('timeout_ms = (name(dir) ?? "") < "x" ? 1 : 2'), "mini"),
    ("order-any", v("body = data", "body = data\n    timeout_ms = a < 1 ? 1 : 2",
                    "data bytes[size]", "data bytes[size]\n        a hessian2.any"), "mini"),
    ("size-by-a-varint", field("n varint.unsigned\n        more bytes[n]"), "mini"),
    ("request-field-equals-a-member", v("data = $message", 'data = request.dir == response ? "a" : "b"'), "mini"),
    ("a-member-equals-a-request-field", v("data = $message", 'data = response == request.dir ? "a" : "b"'), "mini"),
    ("sizeof-minus-four", size_value("sizeof(frame) - 4", "rest"), "mini"),
    ("sizeof-plus-four", size_value("sizeof(frame) + 4", "rest"), "mini"),
    ("len-plus-two", size_value("len(data) + 2", "size - 2"), "mini"),
    ("two-plus-len", size_value("2 + len(data)", "size - 2"), "mini"),
    ("len-minus-one-minus-one", size_value("len(data) - 1 - 1", "size + 2"), "mini"),
    ("len-of-an-unsized-field-not-judged", v(FRAME_TAIL, "size u16 = len(data) + len(h)\n        h hessian2.string\n"
                                             "        data bytes[size]"), "mini"),
    ("size-plus-n-minus-n", v(FRAME_TAIL, "size u16 = len(data)\n        n u8\n        data bytes[size + n - n]"), "mini"),
    ("len-of-a-count", v(FRAME_TAIL, "size u16 = len(data)\n        data map(u8)[count size]", "body = data\n", "",
                         ", data = $message", ""), "mini"),
    ("len-of-two-the-second-sized", v(FRAME_TAIL, "size u16 = len(a) + len(data)\n        a bytes[3]\n"
                                      "        data bytes[size - 3]"), "mini"),
    ("two-insides", inside("    inside data when dir == request { x u8 }\n    inside data when dir == response { y u8 }"),
     "mini"),
    ("two-headers", binding('header "a" = id\n    header "b" = id'), "mini"),
    ("branch-thrift-ids", v("id u32", 'if dir == request { id thrift.field(1, "i32") } '
                            'else { id thrift.field(2, "i32") }'), "mini"),
    ("rest-inside", inside("    inside data when dir == request { x u8\n rb bytes[rest] }"), "mini"),
    ("success-response-reads-the-request", before_error_response(
        "success_response { dir = response, data = request.data }"), "mini"),
    ("error-response-status", answer("id = $status"), "mini"),
    ("reply-reads-the-request", before_error_response(
        "heartbeat when id == 0 { reply { dir = response, data = request.data } }"), "mini"),
    ("detect-in", v("detect u8 == 0x4d", "detect u8 in (0x4d, 0xff)"), "mini"),
    ("timeout-hessian2-map-entry", v("body = data", 'body = data\n    timeout_ms = m["x"]',
                                     "data bytes[size]", "data bytes[size]\n        m hessian2.map"), "mini"),
    ("every-stream-type", v("dir == response => response", "dir == response => response\n        id == 1 => oneway\n"
                            "        id == 2 => quiet"), "mini"),
    ("enum-u16", v("enum Dir : u8", "enum Dir : u16"), "mini"),
    ("enum-u32", v("enum Dir : u8", "enum Dir : u32"), "mini"),
    ("enum-i64", v("enum Dir : u8", "enum Dir : i64"), "mini"),
    ("frame-field-sized-by-an-inside-field", v(FRAME_TAIL, "size u16 = sizeof(frame)\n        data bytes[1]\n"
                                               "        more bytes[k]",
                                               text=inside("    inside data when dir == request { k u8 }")), "mini"),
    ("tars-rest", field("r tars.rest"), "mini"),
    ("byte-order-little", v("pool multiplex", "pool multiplex\n    byte_order little"), "mini"),
    ("byte-order-big", v("pool multiplex", "pool multiplex\n    byte_order big"), "mini"),
    ("cond-of-enums-in-members", binding("timeout_ms = (id == 1 ? dir : dir) in (request) ? 1 : 2"), "mini"),
    ("size-plus-a-product-not-judged", size_value("len(data)", "size + 1 * 0"), "mini"),
    ("a-product-plus-size-not-judged", size_value("len(data)", "1 * 0 + size"), "mini"),
    ("not-equals-a-member", v("dir == response", "dir != request"), "mini"),
]  # fmt: skip


@pytest.mark.parametrize("case_id,text,stem", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted(case_id, text, stem):
    result = checked(text, stem)
    assert result.spec.name == "mini"


# a frame's direction is taken by the decoder when any of these reads it
DIRECTION = [
    ("none", GOOD, False),
    ("stream", v("dir == response", "direction == response"), True),
    ("binding", binding("timeout_ms = direction == request ? 1 : 2"), True),
    ("header", binding('header "h" = direction == request ? 1 : 2'), True),
    ("heartbeat", before_error_response("heartbeat when direction == request"), True),
    ("goaway", before_error_response("goaway when direction == request"), True),
    ("layout-if", field("if direction == request { x u8 }"), True),
    ("nested-layout-if", field("if id == 1 { if direction == request { x u8 } }"), True),
    ("inside", inside("    inside data when direction == request { x u8 }"), True),
    ("inside-if", inside("    inside data when id == 1 { if direction == request { x u8 } }"), True),
    ("not", v("dir == response", "not (direction == request)"), True),
    ("cond-then", binding("timeout_ms = id == 1 ? (direction == request ? 1 : 2) : 3"), True),
    ("cond-else", binding("timeout_ms = id == 1 ? 3 : (direction == request ? 1 : 2)"), True),
    ("in-item", binding("timeout_ms = (direction == request) in (true) ? 1 : 2"), True),
    ("in-option", binding("timeout_ms = true in (direction == request) ? 1 : 2"), True),
    ("call-argument", binding('service = before(direction == request ? "a" : "b", ":")'), True),
    ("inside-without", inside("    inside data when id == 1 { if id == 2 { x u8 } }"), False),
]  # fmt: skip


@pytest.mark.parametrize("case_id,text,expected", DIRECTION, ids=[c[0] for c in DIRECTION])
def test_uses_direction(case_id, text, expected):
    assert checked(text).uses_direction is expected


# ``first`` (a connection's first frame) is taken by the decoder when any of these reads it
FIRST = [
    ("none", session(GOOD), False),
    ("layout-if", session(field("if first { x u8 }")), True),
    ("nested-layout-if", session(field("if id == 1 { if not first { x u8 } }")), True),
    ("stream", session(v("dir == response", "dir == response and not first")), True),
    ("binding", session(binding('method = first ? "hello" : "call"')), True),
    ("header", session(binding('header "h" = first ? 1 : 2')), True),
    ("direction-only", session(field("if direction == request { x u8 }")), False),
]  # fmt: skip


@pytest.mark.parametrize("case_id,text,expected", FIRST, ids=[c[0] for c in FIRST])
def test_uses_first(case_id, text, expected):
    c = checked(text)
    assert (c.uses_first, c.uses_direction) == (expected, case_id == "direction-only")


def test_direction_in_an_inside_condition_makes_the_decoder_take_one():
    """An inside layout chosen by direction: the decoder must take one (it once read the
    layout as absent on every frame, the direction unknown)."""
    import struct

    from protoc_x.compiler import compile_source
    from protoc_x.loader import load_module_source
    from protoc_x.runtime.api import Direction

    text = inside("    inside data when direction == request { x u8 }")
    proto = load_module_source(
        "mini", compile_source(text, "mini.xproto", "mini", fmt=False), "mini"
    )
    proto = proto.PROTOCOL
    raw = bytes([0x4D, 0]) + struct.pack(">IH", 1, 1) + b"\x07"
    assert proto.needs_direction
    assert proto.decode(raw, direction=Direction.REQUEST).x == 7
    assert proto.decode(raw, direction=Direction.RESPONSE).x is None


RICH = v(
    "data bytes[size]",
    "data bytes[size]\n        bits u8 { b : 3 as Dir, c : 5 }\n        m map(u8)[count 2]\n"
    "        s string[2] nullable\n        h hessian2.string",
    text=inside(
        "    inside data when dir == request { svc hessian2.string\n"
        " if dir == request { t tars.int(1) } else { t tars.int(2) }\n l varint.unsigned[count 2] }"
    ),
)


def test_the_symbol_table():
    c = checked(RICH)
    table = {
        name: (f.kind, f.enum, f.owner, f.int_type and (f.int_type.width, f.int_type.signed),
               type(f.ext).__name__ if f.ext else None, f.count, len(f.paths), (f.pos.line, f.pos.col))
        for name, f in c.fields.items()
    }  # fmt: skip
    assert table == {
        "magic": ("int", None, None, (8, False), None, False, 1, (6, 9)),
        "dir": ("enum", "Dir", None, (8, False), None, False, 1, (7, 9)),
        "id": ("int", None, None, (32, False), None, False, 1, (8, 9)),
        "size": ("int", None, None, (16, False), None, False, 1, (9, 9)),
        "data": ("bytes", None, None, None, None, False, 1, (10, 9)),
        "b": ("enum", "Dir", None, None, None, False, 1, (11, 19)),
        "c": ("bits", None, None, None, None, False, 1, (11, 33)),
        "m": ("map", None, None, None, None, True, 1, (12, 9)),
        "s": ("string", None, None, None, None, False, 1, (13, 9)),
        "h": ("ext", None, None, None, "String", False, 1, (14, 9)),
        "svc": ("ext", None, "data", None, "String", False, 1, (16, 39)),
        "t": ("ext", None, "data", None, "Int", False, 2, (17, 22)),
        "l": ("ext", None, "data", None, "Unsigned", True, 1, (18, 2)),
    }
    assert c.modules == {"hessian2", "tars", "varint"}
    assert list(c.body_targets) == ["data"] and len(c.body_targets["data"]) == 1
    assert c.body_targets["data"][0] is c.spec.insides[0]
    assert sorted(c.bindings) == ["body", "request_id"]
    assert c.bindings["body"] is c.spec.bindings[1]
    assert set(c.enums) == {"Dir"} and c.enums["Dir"] is c.spec.enums[0]
    assert c.spec is not None and c.uses_direction is False


def test_modules_come_from_functions_too():
    assert checked(binding("timeout_ms = hessian2.arg_count(data)")).modules == {"hessian2"}
    assert checked(GOOD).modules == set()


def test_bit_fields_inside_a_layout_belong_to_its_field():
    c = checked(inside("    inside data when dir == request { bits u8 { ib : 4 as Dir, ic : 4 } }"))
    assert [(f.kind, f.enum, f.owner) for f in (c.fields["ib"], c.fields["ic"])] == [
        ("enum", "Dir", "data"),
        ("bits", None, "data"),
    ]


def test_two_insides_of_one_field_are_both_its_layouts():
    c = checked(
        inside(
            "    inside data when dir == request { x u8 }\n    inside data when dir == response { y u8 }"
        )
    )
    assert c.body_targets == {"data": list(c.spec.insides)} and len(c.spec.insides) == 2
    assert (c.fields["x"].owner, c.fields["y"].owner) == ("data", "data")


def test_fields_on_both_branches_of_an_inside_if_belong_to_its_field():
    c = checked(
        inside("    inside data when dir == request { k u8\n if k == 1 { a u8 } else { b u8 } }")
    )
    assert [c.fields[name].owner for name in ("k", "a", "b")] == ["data", "data", "data"]
