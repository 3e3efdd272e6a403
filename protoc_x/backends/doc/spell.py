"""Spec nodes written back as spec text (for the reference page): expressions, types and
sizes, in the language's own spelling. Numbers come out in decimal (the parser keeps values,
not how they were written)."""

from __future__ import annotations

import json

from ... import nodes as n

#: binding strength of binary operators, loosest first (as the grammar nests them)
_LEVEL = {"??": 1, "or": 2, "and": 3, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
          "+": 5, "-": 5, "*": 6, "%": 6}  # fmt: skip


def expr(e, level: int = 0) -> str:
    """``e`` as the spec would write it; parenthesised where ``level`` (its context's binding
    strength) needs it."""
    if isinstance(e, n.IntLit):
        return str(e.value)
    if isinstance(e, n.StrLit):
        return json.dumps(e.value, ensure_ascii=False)
    if isinstance(e, n.Const):
        if isinstance(e.value, dict):
            return "{}"
        return {None: "null", True: "true", False: "false"}[e.value]
    if isinstance(e, n.MapLit):
        items = ", ".join(f"{json.dumps(k)}: {expr(v)}" for k, v in zip(e.keys, e.values))
        return "{" + items + "}"
    if isinstance(e, (n.Name, n.LetRef)):
        return e.name
    if isinstance(e, n.Param):
        return f"${e.name}"
    if isinstance(e, n.Attr):
        return f"{expr(e.obj, 9)}.{e.name}"
    if isinstance(e, n.Index):
        return f"{expr(e.obj, 9)}[{expr(e.key)}]"
    if isinstance(e, n.Slice):
        parts = [expr(x) if x is not None else "" for x in (e.start, e.stop)]
        if e.step is not None:
            parts.append(expr(e.step))
        return f"{expr(e.obj, 9)}[{':'.join(parts)}]"
    if isinstance(e, n.Call):
        name = f"{e.module}.{e.func}" if e.module else e.func
        return f"{name}({', '.join(expr(a) for a in e.args)})"
    if isinstance(e, n.Unary):
        text = f"-{expr(e.operand, 8)}" if e.op == "-" else f"not {expr(e.operand, 4)}"
        return f"({text})" if level > 7 else text
    if isinstance(e, n.BinOp):
        mine = _LEVEL[e.op]
        text = f"{expr(e.left, mine)} {e.op} {expr(e.right, mine + 1)}"
        return f"({text})" if level > mine else text
    if isinstance(e, n.In):
        text = f"{expr(e.item, 5)} in ({', '.join(expr(o) for o in e.options)})"
        return f"({text})" if level > 4 else text
    if isinstance(e, n.Cond):
        text = f"{expr(e.test, 1)} ? {expr(e.then, 1)} : {expr(e.orelse)}"
        return f"({text})" if level > 0 else text
    return type(e).__name__  # (every node kind is above; a new one shows its name)


def int_type(t: n.IntType) -> str:
    order = {"big": "be", "little": "le"}.get(t.order or "", "")
    return f"{'i' if t.signed else 'u'}{t.width}{order}"


def size(s) -> str:
    if isinstance(s, n.SizeBytes):
        return f"[{expr(s.expr)}]"
    if isinstance(s, n.SizeCount):
        return f"[count {expr(s.expr)}]"
    if isinstance(s, n.SizeRest):
        return "[rest]"
    if isinstance(s, n.SizeUntil):
        return f"[until {json.dumps(s.delimiter)}]"
    return ""


def ext_ref(r: n.ExtRef) -> str:
    if r.spelled:
        return r.spelled
    if r.module == "record":
        return f"record {r.name}"
    args = f"({', '.join(json.dumps(a) if isinstance(a, str) else str(a) for a in r.args)})"
    return f"{r.module}.{r.name}{args if r.args else ''}"


def type_text(t) -> str:
    """A field's type as the spec writes it."""
    if isinstance(t, n.IntType):
        return int_type(t)
    if isinstance(t, n.EnumRef):
        return t.name
    if isinstance(t, n.BytesType):
        return f"bytes{size(t.size)}"
    if isinstance(t, n.StringType):
        return f"string{size(t.size)}"
    if isinstance(t, n.MapType):
        length = int_type(t.length) if isinstance(t.length, n.IntType) else ext_ref(t.length)
        return f"map({length}){size(t.size)}"
    if isinstance(t, n.ExtType):
        return ext_ref(t.ref) + (size(t.size) if t.size is not None else "")
    return type(t).__name__
