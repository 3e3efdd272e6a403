"""Parse .xproto text into the spec tree (protoc_x.nodes) with Lark; every node keeps its position."""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import lark
from lark import Token, Transformer, v_args

from . import nodes as n
from .diagnostics import Pos, SpecError

GRAMMAR_NAME = "xproto.lark"


def _grammar_text() -> str:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "grammars" / GRAMMAR_NAME, here / "grammars" / GRAMMAR_NAME):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise FileNotFoundError(f"{GRAMMAR_NAME} not found next to protoc_x")


@functools.lru_cache(maxsize=1)
def _lark() -> lark.Lark:
    return lark.Lark(_grammar_text(), parser="lalr", lexer="contextual", propagate_positions=True)


@functools.lru_cache(maxsize=1)
def _lark_all_tokens() -> lark.Lark:
    # the same parser keeping keywords and punctuation in the tree, for protoc_x.fmt: each
    # token there has the type the contextual lexer gave it where the parser stood (a name
    # spelled like a keyword, a unary or a binary '-'), which lexing alone cannot tell
    return lark.Lark(_grammar_text(), parser="lalr", lexer="contextual", keep_all_tokens=True)


def _pos(meta_or_token) -> Pos:
    line = getattr(meta_or_token, "line", None)
    col = getattr(meta_or_token, "column", None)
    return Pos(line or 1, col or 1)


_INT_TYPE = re.compile(r"([ui])(8|16|24|32|40|48|56|64)(le|be)?$")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}


def int_type(token: Token) -> n.IntType:
    m = _INT_TYPE.match(str(token))
    assert m, token
    order = {"le": "little", "be": "big", None: None}[m.group(3)]
    return n.IntType(int(m.group(2)), m.group(1) == "i", order, _pos(token))


#: the largest magnitude a number in a spec may have (every integer type is at most 64 bits)
MAX_INT = (1 << 64) - 1
#: how deeply constructs may nest (expressions inside expressions, ifs inside ifs); generated
#: code nests about as deeply, and Python refuses code nested past ~100 levels
MAX_DEPTH = 48


def _int(token: Token) -> int:
    text = str(token)
    pos = _pos(token)
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    if len(digits.lstrip("0")) > 20:
        raise SpecError(pos, f"number {text[:12]}... is too large (at most {MAX_INT:#x})")
    if len(text) > 1 and text[0] == "0" and text[1] not in "xX":
        raise SpecError(
            pos, f"number {text!r} has a leading zero (write {text.lstrip('0') or '0'})"
        )
    value = int(text, 0)
    if value > MAX_INT:
        raise SpecError(pos, f"number {text} is too large (at most {MAX_INT:#x})")
    return value


def _string(token: Token) -> str:
    body = str(token)[1:-1]
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            e = body[i + 1]
            if e == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES[e])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _typed_records(node, records: dict):
    """``node`` with every field typed by a record's name (parsed as an enum's) made a field
    of that record's type."""
    if isinstance(node, tuple):
        return tuple(_typed_records(x, records) for x in node)
    if isinstance(node, n.Field) and isinstance(node.type, n.EnumRef):
        if node.type.name in records:
            t = node.type
            ref = n.ExtRef("record", t.name, (), t.pos, spelled=t.name)
            return replace(node, type=n.ExtType(ref, None, t.pos))
        return node
    if isinstance(node, n.IfBlock):
        return replace(
            node,
            body=_typed_records(node.body, records),
            orelse=_typed_records(node.orelse, records),
        )
    if isinstance(node, (n.Record, n.Inside)):
        return replace(node, items=_typed_records(node.items, records))
    return node


#: what a use of a ``let`` may expand to: nodes in all, and depth of nesting (a chain of lets
#: each using the one before twice would otherwise double at every step)
MAX_LET_NODES = 4096
MAX_LET_DEPTH = 2 * MAX_DEPTH

#: the statements whose expressions may use a let (the routing view and stream rules: values
#: of a decoded frame, not the layout that decodes it)
_LET_USERS = ("bindings", "header_bindings", "stream", "answers", "heartbeat", "goaway")


def _layout_names(items) -> Iterator[str]:
    for item in items:
        if isinstance(item, n.IfBlock):
            yield from _layout_names(item.body)
            yield from _layout_names(item.orelse)
        elif isinstance(item, n.Bits):
            yield from (f.name for f in item.fields)
        elif isinstance(item, n.Field):
            yield item.name


def _resolve(e, lets: dict):
    """``e`` with each name of a let made a :class:`nodes.LetRef` to it."""
    if isinstance(e, n.Name) and e.name in lets:
        return n.LetRef(e.name, lets[e.name], e.pos)
    if isinstance(e, tuple):
        return tuple(_resolve(x, lets) for x in e)
    if isinstance(e, n.LetRef) or not hasattr(e, "__dataclass_fields__") or isinstance(e, Pos):
        return e
    changes = {}
    for key in e.__dataclass_fields__:
        value = getattr(e, key)
        new = _resolve(value, lets)
        if new is not value:
            changes[key] = new
    return replace(e, **changes) if changes else e


def _expanded(e, memo: dict) -> tuple[int, int]:
    """Nodes and depth of ``e`` with its lets written out (what an inlined use costs)."""
    if isinstance(e, n.LetRef):
        if e.name not in memo:
            memo[e.name] = _expanded(e.expr, memo)
        return memo[e.name]
    if not hasattr(e, "__dataclass_fields__") or isinstance(e, Pos):
        return 0, 0
    size, depth = 1, 0
    for key in e.__dataclass_fields__:
        value = getattr(e, key)
        for x in value if isinstance(value, tuple) else (value,):
            s, d = _expanded(x, memo)
            size, depth = size + s, max(depth, d)
    return size, depth + 1


def _with_lets(fields: dict, lets: tuple) -> dict:
    """Resolve the spec's lets (named expressions) where they are used: each may use the lets
    before it; a let's name may not be a field's or an enum member's."""
    taken = set(_layout_names(fields.get("frame", ())))
    for inside in fields.get("insides", ()):
        taken |= set(_layout_names(inside.items))
    for enum in fields.get("enums", ()):
        taken |= {m.name for m in enum.members}
    taken |= {"direction", "request", "response", "frame"}
    known: dict = {}
    memo: dict = {}
    resolved = []
    for let in lets:
        if let.name in taken:
            raise SpecError(
                let.pos, f"let {let.name!r}: the name is taken by a field or an enum member"
            )
        if let.name in known:
            raise SpecError(let.pos, f"duplicate let {let.name!r}")
        expr = _resolve(let.expr, known)
        size, depth = _expanded(expr, memo)
        if size > MAX_LET_NODES or depth > MAX_LET_DEPTH:
            raise SpecError(
                let.pos,
                f"let {let.name!r} written out is more than {MAX_LET_NODES} terms or "
                f"{MAX_LET_DEPTH} levels deep",
            )
        known[let.name] = expr
        resolved.append(replace(let, expr=expr))
    out = dict(fields, lets=tuple(resolved))
    for key in _LET_USERS:
        if key in fields:
            out[key] = _resolve(fields[key], known)
    return out


def _text(kind: str, size: n.SizeUntil, meta) -> n.ExtType:
    """``bytes[until "\\r\\n"]`` and its kin: a field type of runtime/fieldtypes/text.py."""
    spelled = f"{kind}[until {size.delimiter!r}]"
    return n.ExtType(
        n.ExtRef("texts", kind, (size.delimiter,), size.pos, spelled), None, _pos(meta)
    )


@v_args(meta=True)
class _ToNodes(Transformer):
    # ---- protocol items ------------------------------------------------------------
    def start(self, meta, children):
        return children[0]

    def protocol(self, meta, children):
        name, *items = children
        fields: dict = {"statements": []}
        for kind, pos, value in items:
            fields["statements"].append(n.Statement(kind, pos))
            if kind in n.REPEATABLE:
                fields.setdefault(kind, []).append(value)
            elif kind == "pool":
                fields["pool"], fields["ordered"] = value
            elif kind == "status_map":
                rows, others = value
                fields.setdefault("status_rows", rows)
                if others:
                    fields.setdefault("status_others", others[0][1])
                    fields.setdefault("status_others_pos", others[0][2])
            else:
                fields.setdefault(kind, value)
        for key in n.REPEATABLE + ("statements",):  # (lets: made a tuple as they resolve)
            if key in fields:
                fields[key] = tuple(fields[key])
        if "lets" in fields:
            fields = _with_lets(fields, tuple(fields["lets"]))
        records = {r.name: r for r in fields.get("records", ())}
        if records:  # a field of a record's type names it like an enum: say which it is
            for key in ("frame", "records", "insides"):
                if key in fields:
                    fields[key] = _typed_records(fields[key], records)
        return n.Protocol(name=str(name), pos=_pos(name), **fields)

    def record(self, meta, children):
        name, depth, *items = children
        bound = _int(depth) if depth is not None else None
        return ("records", _pos(meta), n.Record(str(name), bound, tuple(items), _pos(name)))

    def byte_order(self, meta, children):
        return ("byte_order", _pos(meta), str(children[0]))

    def pool(self, meta, children):
        return ("pool", _pos(meta), (str(children[0]), children[1] is not None))

    def detect(self, meta, children):
        return ("detect", _pos(meta), tuple(children))

    def probe_eq(self, meta, children):
        t, offset, value = children
        return n.Probe(int_type(t), _int(offset) if offset else 0, (_int(value),), _pos(meta))

    def probe_in(self, meta, children):
        t, offset, *values = children
        offs = _int(offset) if offset else 0
        return n.Probe(int_type(t), offs, tuple(_int(v) for v in values), _pos(meta))

    def enum_def(self, meta, children):
        name, t, *members = children
        return ("enums", _pos(meta), n.Enum(str(name), int_type(t), tuple(members), _pos(name)))

    def enum_member(self, meta, children):
        return n.EnumMember(str(children[0]), children[1], _pos(meta))

    def signed_int(self, meta, children):
        return (
            -_int(children[0])
            if len(children) == 1 and meta.column != children[0].column
            else _int(children[0])
        )

    def frame(self, meta, children):
        return ("frame", _pos(meta), tuple(children))

    def inside(self, meta, children):
        target, test, *items = children
        return ("insides", _pos(meta), n.Inside(str(target), test, tuple(items), _pos(meta)))

    def field_name(self, meta, children):
        return children[0]

    def field(self, meta, children):
        name, type_, value, nullable = children
        return n.Field(str(name), type_, value, nullable is not None, _pos(name))

    def if_block(self, meta, children):
        test, *rest = children
        orelse: tuple = ()
        if rest and isinstance(rest[-1], tuple) and rest[-1][:1] == ("else",):
            orelse = rest.pop()[1]
        elif rest and rest[-1] is None:
            rest.pop()
        return n.IfBlock(test, tuple(rest), orelse, _pos(meta))

    def else_block(self, meta, children):
        return ("else", tuple(children))

    def else_if(self, meta, children):
        return ("else", tuple(children))

    def fail(self, meta, children):
        return n.Fail(_string(children[0]), _pos(meta))

    def bits(self, meta, children):
        t, *fields = children
        return n.Bits(int_type(t), tuple(fields), _pos(meta))

    def bit_field(self, meta, children):
        name, width, enum, const = children
        return n.BitField(
            str(name),
            _int(width),
            str(enum) if enum is not None else None,
            _int(const) if const is not None else None,
            _pos(name),
        )

    # ---- types ---------------------------------------------------------------------
    def int_type(self, meta, children):
        return int_type(children[0])

    def named_type(self, meta, children):
        return n.EnumRef(str(children[0]), _pos(children[0]))

    def bytes_type(self, meta, children):
        if isinstance(children[0], n.SizeUntil):
            return _text("bytes", children[0], meta)
        return n.BytesType(children[0], _pos(meta))

    def string_type(self, meta, children):
        if isinstance(children[0], n.SizeUntil):
            return _text("string", children[0], meta)
        return n.StringType(children[0], _pos(meta))

    def decimal_type(self, meta, children):
        if not isinstance(children[0], n.SizeUntil):
            raise SpecError(_pos(meta), 'a decimal ends at a delimiter: decimal[until "..."]')
        return _text("decimal", children[0], meta)

    def token_type(self, meta, children):
        text = _string(children[0])
        ref = n.ExtRef("texts", "token", (text,), _pos(meta), spelled=f"the token {text!r}")
        return n.ExtType(ref, None, _pos(meta))

    def map_type(self, meta, children):
        return n.MapType(children[0], children[1], _pos(meta))

    def record_array(self, meta, children):
        name, size = children
        ref = n.ExtRef("record", str(name), (), _pos(name), spelled=str(name))
        return n.ExtType(ref, size, _pos(meta))

    def ext_type(self, meta, children):
        return n.ExtType(children[0], children[1], _pos(meta))

    def fieldtype_ref(self, meta, children):
        module, name, *args = children
        args = tuple(a for a in args if a is not None)
        return n.ExtRef(str(module), str(name), args, _pos(module))

    def literal(self, meta, children):
        c = children[0]
        if isinstance(c, Token) and c.type == "STRING":
            return _string(c)
        return c

    def fixed_length(self, meta, children):
        return int_type(children[0])

    def ext_length(self, meta, children):
        return children[0]

    def size_bytes(self, meta, children):
        return n.SizeBytes(children[0], _pos(meta))

    def size_count(self, meta, children):
        return n.SizeCount(children[0], _pos(meta))

    def size_rest(self, meta, children):
        return n.SizeRest(_pos(meta))

    def size_until(self, meta, children):
        return n.SizeUntil(_string(children[0]), _pos(meta))

    # ---- semantics -----------------------------------------------------------------
    def let(self, meta, children):
        name, expr = children
        return ("lets", _pos(name), n.Binding(str(name), expr, _pos(name)))

    def binding(self, meta, children):
        name, expr = children
        return ("bindings", _pos(name), n.Binding(str(name), expr, _pos(name)))

    def header_binding(self, meta, children):
        key, expr = children
        return ("header_bindings", _pos(meta), n.Binding(_string(key), expr, _pos(key)))

    def stream(self, meta, children):
        return ("stream", _pos(meta), tuple(children))

    def stream_when(self, meta, children):
        return n.StreamRule(children[0], str(children[1]), _pos(children[1]))

    def stream_else(self, meta, children):
        return n.StreamRule(None, str(children[0]), _pos(children[0]))

    def answer(self, meta, children):
        close, test, *assigns = children
        answer = n.Template("answer", tuple(assigns), _pos(meta))
        return ("answers", _pos(meta), n.LocalAnswer(test, answer, close is not None, _pos(meta)))

    def heartbeat(self, meta, children):
        test, *templates = children
        templates = tuple(t for t in templates if t is not None)
        return ("heartbeat", _pos(meta), n.Heartbeat(test, templates, _pos(meta)))

    def template(self, meta, children):
        name, *assigns = children
        return n.Template(str(name), tuple(assigns), _pos(name))

    def assign(self, meta, children):
        return n.Assign(str(children[0]), children[1], _pos(children[0]))

    def goaway(self, meta, children):
        return ("goaway", _pos(meta), children[0])

    def status_map(self, meta, children):
        rows = tuple(c for c in children if isinstance(c, n.StatusRow))
        others = [c for c in children if not isinstance(c, n.StatusRow)]
        return ("status_map", _pos(meta), (rows, others))

    def status_code(self, meta, children):
        code, name, forward, backward = children
        forward = forward or ()
        return n.StatusRow(
            code,
            str(name),
            tuple(_int(c) for c in forward),
            _int(backward),
            _pos(meta),
            forward_pos=tuple(_pos(c) for c in forward),
            backward_pos=_pos(backward),
        )

    def status_others(self, meta, children):
        return ("others", _int(children[0]), _pos(children[0]))

    def code_list(self, meta, children):
        return tuple(children)

    def error_response(self, meta, children):
        return (
            "error_response",
            _pos(meta),
            n.Template("error_response", tuple(children), _pos(meta)),
        )

    def no_error_response(self, meta, children):
        return ("no_error_response", _pos(meta), True)

    def success_response(self, meta, children):
        t = n.Template("success_response", tuple(children), _pos(meta))
        return ("success_response", _pos(meta), t)

    # ---- expressions ---------------------------------------------------------------
    def cond(self, meta, c):
        return n.Cond(c[0], c[1], c[2], _pos(meta))

    def coalesce(self, meta, c):
        return n.BinOp("??", c[0], c[1], _pos(meta))

    def or_(self, meta, c):
        return n.BinOp("or", c[0], c[1], _pos(meta))

    def and_(self, meta, c):
        return n.BinOp("and", c[0], c[1], _pos(meta))

    def not_(self, meta, c):
        return n.Unary("not", c[0], _pos(meta))

    def compare(self, meta, c):
        return n.BinOp(str(c[1]), c[0], c[2], _pos(meta))

    def in_(self, meta, c):
        return n.In(c[0], tuple(c[1:]), _pos(meta))

    def binop(self, meta, c):
        return n.BinOp(str(c[1]), c[0], c[2], _pos(meta))

    def neg(self, meta, c):
        if isinstance(c[0], n.IntLit):
            return n.IntLit(-c[0].value, _pos(meta))
        return n.Unary("-", c[0], _pos(meta))

    def index(self, meta, c):
        return n.Index(c[0], c[1], _pos(meta))

    def slice(self, meta, c):
        return n.Slice(c[0], c[1], c[2], c[3], _pos(meta))

    def attr(self, meta, c):
        return n.Attr(c[0], str(c[1]), _pos(meta))

    def call(self, meta, c):
        func, *args = c
        args = tuple(a for a in args if a is not None)
        if isinstance(func, n.Name):
            return n.Call(func.name, args, func.pos)
        if isinstance(func, n.Attr) and isinstance(func.obj, n.Name):
            return n.Call(func.name, args, func.obj.pos, module=func.obj.name)
        raise SpecError(_pos(meta), "only functions and field-type functions can be called")

    def int_lit(self, meta, c):
        return n.IntLit(_int(c[0]), _pos(c[0]))

    def str_lit(self, meta, c):
        return n.StrLit(_string(c[0]), _pos(c[0]))

    def name(self, meta, c):
        return n.Name(str(c[0]), _pos(c[0]))

    def param(self, meta, c):
        return n.Param(str(c[0]), _pos(meta))

    def null(self, meta, c):
        return n.Const(None, _pos(meta))

    def true(self, meta, c):
        return n.Const(True, _pos(meta))

    def false(self, meta, c):
        return n.Const(False, _pos(meta))

    def map_lit(self, meta, c):
        entries = [x for x in c if x is not None]
        if not entries:
            return n.Const({}, _pos(meta))
        keys = tuple(k for k, _ in entries)
        for i, k in enumerate(keys):
            if k in keys[:i]:
                raise SpecError(_pos(meta), f"key {k!r} appears twice in the map")
        return n.MapLit(keys, tuple(v for _, v in entries), _pos(meta))

    def map_entry(self, meta, c):
        return (_string(c[0]), c[1])


_TOKEN_NAMES = {
    "NAME": "a name",
    "INT": "a number",
    "STRING": "a string",
    "INT_TYPE": "an integer type",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "EQUAL": "'='",
    "COLON": "':'",
    "COMMA": "','",
    "$END": "end of file",
}


def _describe(expected) -> str:
    names = sorted({_TOKEN_NAMES.get(e, e.strip('"').lower()) for e in expected})
    if len(names) > 6:
        names = names[:6] + ["..."]
    return ", ".join(names)


def _check_depth(tree: lark.Tree) -> None:
    """Refuse trees nested deeper than MAX_DEPTH before anything recurses over them."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(
                _pos(node.meta),
                f"nested too deeply (more than {MAX_DEPTH} levels of expressions or blocks)",
            )
        for child in node.children:
            if isinstance(child, lark.Tree):
                stack.append((child, depth + 1))


def _lines(text: str) -> str:
    """Line ends as written on any system (CRLF, or a lone CR) read as one newline, so comments
    end at the line's end and positions count lines as an editor does."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def decode_source(data: bytes, path: str) -> str:
    """A spec file's bytes as text: UTF-8, with or without a byte-order mark; anything else is
    a SpecError at the first bad byte."""
    try:
        return _lines(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        good = data[: e.start].decode("utf-8-sig")
        lines = good.split("\n")
        pos = Pos(len(lines), len(lines[-1]) + 1)
        msg = f"invalid UTF-8 (byte {data[e.start]:#04x} at offset {e.start}): specs are UTF-8 text"
        raise SpecError(pos, msg).located(path, good) from None


def spec_text(source: str) -> str:
    """A spec's text as the parser reads it: no byte-order mark, every line end a newline."""
    if source.startswith("\ufeff"):
        source = source[1:]  # a byte-order mark: not part of the text
    return _lines(source)


def parse(source: str, path: str = "<spec>") -> n.Protocol:
    """Parse one spec; raise SpecError (already located at ``path``) on a syntax error."""
    source = spec_text(source)
    try:
        tree = _lark().parse(source)
        _check_depth(tree)
        return _ToNodes().transform(tree)
    except lark.exceptions.UnexpectedCharacters as e:
        err = SpecError(Pos(e.line, e.column), f"unexpected character {source[e.pos_in_stream]!r}")
    except lark.exceptions.UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            what = "unexpected end of file"
            lines = source.splitlines() or [""]
            pos = Pos(len(lines), len(lines[-1]) + 1)
        else:
            what = f"unexpected {str(tok)!r}"
            pos = Pos(tok.line, tok.column)
        err = SpecError(pos, f"{what}; expected {_describe(e.expected)}")
    except lark.exceptions.UnexpectedEOF:
        lines = source.splitlines() or [""]
        err = SpecError(Pos(len(lines), len(lines[-1]) + 1), "unexpected end of file")
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, SpecError):
            err = e.orig_exc
        else:
            raise
    except SpecError as e:
        err = e
    raise err.located(path, source)


def parse_file(path: str | Path) -> n.Protocol:
    path = Path(path)
    return parse(decode_source(path.read_bytes(), str(path)), str(path))


def token_tree(source: str) -> lark.Tree:
    """The parse tree of ``source`` (a :func:`spec_text`) with every token in it, keywords and
    punctuation too, in source order; for text that :func:`parse` accepts."""
    return _lark_all_tokens().parse(source)
