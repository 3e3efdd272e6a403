"""Spec expressions translated to Python expressions, and the byte-level helpers they use."""

from __future__ import annotations

import ast
import re


from ... import nodes as n
from ...check import Checked, _is_request
from .code import Module


class Exprs:
    """Compiles spec expressions to Python source. ``ref`` maps a field name to its access."""

    def __init__(
        self,
        checked: Checked,
        mod: Module,
        ref,
        direction: str = "self.direction",
        lens=None,
        total: str = "total",
        present: frozenset = frozenset(),
        obj: str | None = None,
        let_locals: frozenset = frozenset(),
    ):
        self.obj = obj  # the frame whose methods compute lets (None: lets are written out)
        self.let_locals = let_locals  # lets a method computed once into locals (let_NAME)
        self.present = present  # frame maps that every layout has (never None)
        self.temps = 0
        self.c = checked
        self.mod = mod
        self.ref = ref
        self.direction = direction
        # ``first`` (a connection's first frame) lives beside the direction: a local of the
        # decoder's functions, or the frame's (request's) slot
        self.first = direction[: -len("direction")] + "first"
        self.lens = lens or {}
        self.total = total
        self.reads_request = False  # set once an expression reads ``request.<field>``

    def member(self, enum: str, name: str) -> int:
        for m in self.c.enums[enum].members:
            if m.name == name:
                return m.value
        raise KeyError(name)

    def enum_of(self, e) -> str | None:
        if isinstance(e, n.LetRef):
            return self.c.let_enums.get(e.name)
        if isinstance(e, n.Attr) and not _is_request(e):
            return self.c.record_field_enum(e.name)
        if isinstance(e, (n.Name, n.Attr)):
            name = e.name
            info = self.c.fields.get(name)
            return info.enum if info else None
        return None

    def __call__(self, e, enum: str | None = None) -> str:
        c = self
        if isinstance(e, n.IntLit):
            return repr(e.value)
        if isinstance(e, n.StrLit):
            return repr(e.value)
        if isinstance(e, n.Const):
            return repr(e.value)
        if isinstance(e, n.MapLit):
            return "{" + ", ".join(f"{k!r}: {c(v)}" for k, v in zip(e.keys, e.values)) + "}"
        if isinstance(e, n.Name):
            if e.name in self.c.fields:
                return self.ref(e.name)
            if e.name == "first":  # (no field has that name)
                return self.first
            if enum is not None:
                return repr(self.member(enum, e.name))
            raise KeyError(e.name)
        if isinstance(e, n.LetRef):  # a frame's method computes it; elsewhere, written out
            if e.name in self.let_locals:
                return f"let_{e.name}"
            return f"{self.obj}._let_{e.name}()" if self.obj else c(e.expr, enum)
        if isinstance(e, n.Param):
            return f"p_{e.name}"
        if isinstance(e, n.Attr) and not _is_request(e):  # a field of a record value
            return f"value_attr({c(e.obj)}, {e.name!r})"
        if isinstance(e, n.Attr):
            self.reads_request = True
            return f"request.{e.name}"
        if isinstance(e, n.Slice):
            parts = ", ".join("None" if x is None else c(x) for x in (e.start, e.stop, e.step))
            return f"value_slice({c(e.obj)}, {parts})"
        if isinstance(e, n.Index) and not isinstance(e.key, n.StrLit):  # a list's element
            return f"value_item({c(e.obj)}, {c(e.key)})"
        if isinstance(e, n.Index):
            if isinstance(e.obj, n.Name) and e.obj.name in self.present:
                return f"{c(e.obj)}.get({c(e.key)})"  # a map every layout has: never None
            return f"map_get({c(e.obj)}, {c(e.key)})"
        if isinstance(e, n.Unary):
            return f"(not {c(e.operand)})" if e.op == "not" else f"(-{c(e.operand)})"
        if isinstance(e, n.BinOp):
            if e.op in ("==", "!="):
                for a, b in ((e.left, e.right), (e.right, e.left)):
                    if (
                        isinstance(a, n.Name)
                        and a.name == "direction"
                        and a.name not in self.c.fields
                    ):
                        which = "REQUEST" if b.name == "request" else "RESPONSE"
                        op = "is" if e.op == "==" else "is not"
                        return f"({self.direction} {op} Direction.{which})"
                    if isinstance(b, n.Const) and b.value is None:  # x == null: x is None
                        op = "is" if e.op == "==" else "is not"
                        return f"({c(a)} {op} None)"
                left_enum, right_enum = self.enum_of(e.left), self.enum_of(e.right)
                return f"({c(e.left, right_enum)} {e.op} {c(e.right, left_enum)})"
            if e.op == "??":
                tmp = f"c{self.temps}"
                self.temps += 1
                return (
                    f"({tmp} if ({tmp} := {c(e.left, enum)}) is not None else {c(e.right, enum)})"
                )
            if e.op == "+" and id(e) in self.c.text_joins:
                return f"join_text({c(e.left)}, {c(e.right)})"
            return f"({c(e.left)} {e.op} {c(e.right)})"
        if isinstance(e, n.In):
            item_enum = self.enum_of(e.item)
            opts = ", ".join(c(o, item_enum) for o in e.options)
            comma = "," if len(e.options) == 1 else ""  # (no trailing comma: black keeps it
            return f"({c(e.item)} in ({opts}{comma}))"  # on one line)
        if isinstance(e, n.Cond):
            return f"({c(e.then, enum)} if {c(e.test)} else {c(e.orelse, enum)})"
        if isinstance(e, n.Call):
            args = e.args
            if e.module is not None:
                fn = self.mod.function(e.module, e.func)
                return f"{fn}({', '.join(c(a) for a in args)})"
            if e.func == "len":
                return self.lens[args[0].name]
            if e.func == "sizeof":
                return self.total
            if e.func == "int":
                return f"to_int({c(args[0])})"
            if e.func == "name":
                info = self.c.fields[args[0].name]
                return f"_E_{info.enum}.get({c(args[0])})"
            if e.func in _TEXT_BUILTINS:
                return f"{_TEXT_BUILTINS[e.func]}({c(args[0])})"
            if e.func in ("before", "after"):
                return f"{e.func}(text({c(args[0])}), {c(args[1])})"
        raise AssertionError(f"cannot compile {e!r}")


#: spec builtins over text and lists, and the runtime.api helpers they are (total functions:
#: null in, null out; no TypeError whatever the frame holds)
_TEXT_BUILTINS = {"lower": "lower_text", "words": "split_words", "char": "byte_of"}


def _at(offset: int) -> str:
    """Code for the position ``offset`` bytes into the frame."""
    return f"start + {offset}" if offset else "start"


def _peek_bytes(off: int, width: int, order: str, signed: bool = False) -> str:
    """Code for the integer of ``width`` bytes at frame offset ``off``: one or two unsigned
    bytes by index (cheaper than a slice and ``int.from_bytes``), wider ones as bytes."""
    if width == 1 and not signed:
        return f"buf[{_at(off)}]"
    if width == 2 and not signed:
        high, low = (off, off + 1) if order == "big" else (off + 1, off)
        return f"(buf[{_at(high)}] << 8 | buf[{_at(low)}])"
    sign = ", signed=True" if signed else ""
    return f"int.from_bytes(buf[{_at(off)} : {_at(off + width)}], {order!r}{sign})"


def _from_bytes(code: str, width: tuple[int, str, bool]) -> str:
    """The int of the bytes ``code`` holds, ``width`` being :func:`protoc_x.plan.odd_width`'s."""
    return f"int.from_bytes({code}, {width[1]!r}{', signed=True' if width[2] else ''})"


def _to_bytes(code: str, width: tuple[int, str, bool]) -> str:
    """The bytes of the int ``code`` (OverflowError when it does not fit)."""
    if not _wrapped(code):
        code = f"({code})"
    return f"{code}.to_bytes({width[0]}, {width[1]!r}{', signed=True' if width[2] else ''})"


def _wrapped(code: str) -> bool:
    """``code`` is a name, an attribute or one parenthesized whole: ``.to_bytes`` binds to it."""
    if re.fullmatch(r"[A-Za-z_][\w.]*", code):
        return True
    if not (code.startswith("(") and code.endswith(")")):
        return False
    try:  # "(a) + (b)" is not one whole: its inside does not parse
        return ast.dump(ast.parse(code[1:-1], mode="eval")) == ast.dump(
            ast.parse(code, mode="eval")
        )
    except SyntaxError:
        return False


def _int_fields(item) -> list:
    return list(item.fields) if isinstance(item, n.Bits) else [item]
