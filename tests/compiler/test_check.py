"""The checker (protoc_x/check.py) in-process, one small spec per check: a spec it refuses
with the exact ``line:col: message``, or one it accepts. Fast, and what ``make mutate`` kills
the checker's mutants with (test_bad_specs.py runs the same kind of table through the CLI)."""

from __future__ import annotations

import pytest

from protoc_x import check as check_mod
from protoc_x.diagnostics import SpecError
from protoc_x.parser import parse

from .test_bad_specs import GOOD

FRAME_TAIL = "size u16 = len(data)\n        data bytes[size]"
STATUS_MAP = """    status_map {
        0 ok <- 200 -> 200
        1 fail <- 400, 403, 404, 429, 500, 502, 503, 504 -> 500
    }
"""


def v(*pairs: str, text: str = GOOD) -> str:
    """GOOD with each (old, new) pair replaced once: v(old1, new1, old2, new2...)."""
    for old, new in zip(pairs[::2], pairs[1::2]):
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def field(decl: str) -> str:
    """GOOD with one more frame field after ``data``."""
    return v("data bytes[size]", "data bytes[size]\n        " + decl)


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
     "2:5: pool must be multiplex or pingpong, not 'sometimes'"),
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
    ("enum-width", v("enum Dir : u8", "enum Dir : u24"), "mini",
     "4:16: enum type must be 8, 16, 32 or 64 bits wide"),
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
    ("i24", v("id u32", "id i24"), "mini", "8:12: i24 is not supported; use u24"),
    ("map-length-not-int", field("m map(hessian2.string)[count 2]"), "mini",
     "11:15: a map's length prefix must be an integer type"),
    ("bytes-by-count", v("data bytes[size]", "data bytes[count size]"), "mini",
     "10:20: bytes are sized in bytes, not by count"),
    ("string-by-count", v("data bytes[size]", "data string[count size]"), "mini",
     "10:21: string are sized in bytes, not by count"),
    ("nullable-int", v("id u32", "id u32 nullable"), "mini",
     "8:9: only bytes and string fields can be nullable"),
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
    ("index-not-map", binding('service = id["x"]'), "mini", "14:15: only map fields can be indexed"),
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
]  # fmt: skip


@pytest.mark.parametrize("case_id,text,stem,expected", ERRORS, ids=[c[0] for c in ERRORS])
def test_refused(case_id, text, stem, expected):
    assert error_of(text, stem) == expected


# (id, spec text, stem): specs the checker accepts, each at the edge of a check above
ACCEPTED = [
    ("good", GOOD, "mini"),
    ("no-stem", GOOD, None),
    ("two-enums", v("enum Dir", "enum Other : u8 { x = 0 }\n    enum Dir"), "mini"),
    ("detect-last-byte", v("detect u8 == 0x4d", "detect u8 at 1023 == 0x4d"), "mini"),
    ("detect-widest-value", v("detect u8 == 0x4d", "detect u8 == 0xff"), "mini"),
    ("enum-signed-range", v("response = 1", "response = 1, low = -128, high = 127", "Dir : u8", "Dir : i8"),
     "mini"),
    ("enum-unsigned-top", v("response = 1", "response = 255"), "mini"),
    ("branch-field-same-type", v("id u32", "if dir == request { id u32 } else { id u32 }"), "mini"),
    ("bit-field-constant-top", v("dir Dir", "bits u8 { a : 2 = 3, b : 6 }\n        dir Dir"), "mini"),
    ("u24", v("id u32", "id u24"), "mini"),
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
]  # fmt: skip


@pytest.mark.parametrize("case_id,text,stem", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted(case_id, text, stem):
    result = checked(text, stem)
    assert result.spec.name == "mini"
