"""The ``dissector`` back end: a Wireshark dissector in Lua (``protoc-x dissector``).

The generated ``NAME.lua`` is one file Wireshark loads as it is (``-X lua_script:NAME.lua``, or
the personal plugins folder). It holds, in order:

1. ``SPEC``: the spec as Lua data: its enums, records, frame layout (if/else kept), inside
   layouts, lets, routing view, stream rules, heartbeat, goaway and status names, with every
   expression as a small tree (``{"eq", a, b}``). Spec text reaches it only as quoted Lua
   strings (every byte outside printable ASCII, quotes and backslashes as decimal escapes) and
   names the grammar restricts to identifiers: nothing in a spec becomes Lua code.
2. The value model (``values.lua``), the field-type readers the spec names (the ``.lua`` files
   beside the Python ones in ``runtime/fieldtypes``) and the interpreter that reads a frame
   from ``SPEC`` (``core.lua``): plain Lua 5.2, no Wireshark API.
3. The Wireshark part (``wireshark.lua``): one ProtoField per field, the tree, the Info column,
   TCP reassembly, registration for Decode As on a TCP port and as a heuristic from ``detect``.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from ... import nodes as n
from ...check import Checked, _is_request
from ...diagnostics import SpecError
from ...plan import Plan, leaves

#: names Lua reserves: a spec name that is one is written as a quoted key (``["end"]``)
_LUA_KEYWORDS = frozenset(
    "and break do else elseif end false for function goto if in local nil not or repeat "
    "return then true until while".split()
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_EXACT = 1 << 53


def lua_string(text: str | bytes) -> str:
    """A Lua string literal of ``text`` (UTF-8 for str): printable ASCII as it is, every other
    byte, quote and backslash as a decimal escape."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    out = []
    for b in data:
        if 0x20 <= b < 0x7F and b not in (0x22, 0x5C):
            out.append(chr(b))
        else:
            out.append("\\%03d" % b)
    return '"' + "".join(out) + '"'


def lua_key(key: str) -> str:
    if _IDENT.match(key) and key not in _LUA_KEYWORDS:
        return key
    return f"[{lua_string(key)}]"


class Raw(str):
    """Lua source already made (a nested table), written as it is."""


def lua(value, indent: int = 0) -> str:
    """``value`` (None, bool, int, str, list, dict with str keys, Raw) as a Lua constructor."""
    if value is None:
        return "nil"
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if -MAX_EXACT < value < MAX_EXACT:
            return str(value)
        raise ValueError("integer beyond 2^53 (write it with big())")
    if isinstance(value, str):
        return lua_string(value)
    pad, inner = "    " * indent, "    " * (indent + 1)
    if isinstance(value, (list, tuple)):
        parts = [lua(v, indent + 1) for v in value]
        one = "{ " + ", ".join(parts) + " }" if parts else "{}"
        if len(one) + len(pad) <= 96 and "\n" not in one:
            return one
        return "{\n" + "".join(f"{inner}{p},\n" for p in parts) + pad + "}"
    if isinstance(value, dict):
        parts = [f"{lua_key(k)} = {lua(v, indent + 1)}" for k, v in value.items() if v is not None]
        one = "{ " + ", ".join(parts) + " }" if parts else "{}"
        if len(one) + len(pad) <= 96 and "\n" not in one:
            return one
        return "{\n" + "".join(f"{inner}{p},\n" for p in parts) + pad + "}"
    raise TypeError(f"no Lua form for {value!r}")


def big(value: int) -> Raw:
    """An integer literal beyond 2^53: its sign and decimal digits (values.lua's big)."""
    return Raw("{ %s, %s, %s }" % (lua("bigint"), lua(value < 0), lua(str(abs(value)))))


def int_lit(value: int):
    return value if -MAX_EXACT < value < MAX_EXACT else big(value)


class Lowering:
    """Turns the checked spec into ``SPEC``'s data: layouts, types and expressions."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.c: Checked = plan.checked
        self.s = plan.checked.spec
        self.modules: set[str] = set()
        # the frame's length fields: name → k, where sizeof(frame) = value - k
        self.lengths = {
            leaf.size.length_field: leaf.size.delta
            for leaf in leaves(plan.tree)
            if leaf.size.mode == "length_field"
        }

    # ---- expressions ------------------------------------------------------------------
    def enum_of(self, e, c: Checked) -> str | None:
        if isinstance(e, n.LetRef):
            return self.c.let_enums.get(e.name)
        if isinstance(e, n.Attr) and not _is_request(e):
            return c.record_field_enum(e.name)
        if isinstance(e, n.Name):
            info = c.fields.get(e.name)
            return info.enum if info else None
        return None

    def member(self, enum: str, name: str) -> int:
        for m in self.c.enums[enum].members:
            if m.name == name:
                return m.value
        raise KeyError(name)

    def expr(self, e, c: Checked, enum: str | None = None):
        x = lambda sub, en=None: self.expr(sub, c, en)  # noqa: E731
        if isinstance(e, n.IntLit):
            return ["lit", int_lit(e.value)]
        if isinstance(e, n.StrLit):
            return ["lit", e.value]
        if isinstance(e, n.Const):
            if e.value is None:
                return ["null"]
            if isinstance(e.value, bool):
                return ["bool", e.value]
            return ["emptymap"]
        if isinstance(e, n.Name):
            if e.name in c.fields:
                return ["field", e.name]
            if e.name == "first":
                return ["first"]
            if e.name == "direction":
                return ["direction"]
            if enum is not None:
                return ["lit", int_lit(self.member(enum, e.name))]
            raise SpecError(e.pos, f"the dissector cannot read {e.name!r} here")
        if isinstance(e, n.LetRef):
            return ["let", e.name]
        if isinstance(e, n.Attr) and not _is_request(e):
            return ["attr", x(e.obj), e.name]
        if isinstance(e, n.Slice):
            return (
                ["slice"]
                + [x(e.obj)]
                + [["null"] if p is None else x(p) for p in (e.start, e.stop, e.step)]
            )
        if isinstance(e, n.Index):  # a list's element, or a map's value (a string key)
            return ["get" if isinstance(e.key, n.StrLit) else "item", x(e.obj), x(e.key)]
        if isinstance(e, n.Unary):
            return ["not" if e.op == "not" else "neg", x(e.operand)]
        if isinstance(e, n.BinOp):
            if e.op in ("==", "!="):
                for a, b in ((e.left, e.right), (e.right, e.left)):
                    if isinstance(a, n.Name) and a.name == "direction" and a.name not in c.fields:
                        test = ["dir_is", b.name]
                        return test if e.op == "==" else ["not", test]
                left_enum, right_enum = self.enum_of(e.left, c), self.enum_of(e.right, c)
                return [e.op, x(e.left, right_enum), x(e.right, left_enum)]
            if e.op == "??":
                return ["??", x(e.left, enum), x(e.right, enum)]
            if e.op == "+" and id(e) in self.c.text_joins:
                return ["join", x(e.left), x(e.right)]
            return [e.op, x(e.left), x(e.right)]
        if isinstance(e, n.In):
            item_enum = self.enum_of(e.item, c)
            return ["in", x(e.item)] + [x(o, item_enum) for o in e.options]
        if isinstance(e, n.Cond):
            return ["cond", x(e.test), x(e.then, enum), x(e.orelse, enum)]
        if isinstance(e, n.Call):
            if e.module is not None:
                self.modules.add(e.module)
                return ["fn", e.module, e.func] + [x(a) for a in e.args]
            if e.func == "name":
                info = c.fields[e.args[0].name]
                return ["name", x(e.args[0]), info.enum]
            if e.func in ("int", "lower", "words", "char", "len"):
                return [e.func, x(e.args[0])]
            if e.func in ("before", "after"):
                return [e.func, x(e.args[0]), x(e.args[1])]
        raise SpecError(e.pos, "the dissector cannot compute this expression")

    # ---- layouts ----------------------------------------------------------------------
    def int_type(self, t: n.IntType) -> dict:
        return {"width": t.width, "signed": t.signed, "order": t.order or self.s.byte_order}

    def size(self, size, c: Checked):
        if size is None:
            return None
        if isinstance(size, n.SizeRest):
            return ["rest"]
        if isinstance(size, n.SizeCount):
            return ["count", self.expr(size.expr, c)]
        return ["bytes", self.expr(size.expr, c)]

    def ftype(self, f: n.Field, c: Checked) -> dict:
        t = f.type
        info = c.fields[f.name]
        if isinstance(t, (n.IntType, n.EnumRef)):
            it = info.int_type
            out = {"kind": "int", **self.int_type(it)}
            if info.enum:
                out["enum"] = info.enum
            return out
        if isinstance(t, n.BytesType):
            return {"kind": "bytes", "size": self.size(t.size, c)}
        if isinstance(t, n.StringType):
            return {"kind": "string", "size": self.size(t.size, c)}
        if isinstance(t, n.MapType):
            if isinstance(t.length, n.IntType):
                length = {"kind": "int", **self.int_type(t.length)}
            else:
                self.modules.add(t.length.module)
                length = {
                    "kind": "ext",
                    "module": t.length.module,
                    "name": t.length.name,
                    "args": list(t.length.args),
                }
            return {"kind": "map", "length": length, "size": self.size(t.size, c)}
        assert isinstance(t, n.ExtType)
        if t.ref.module == "record":
            return {"kind": "record", "record": t.ref.name, "size": self.size(t.size, c)}
        self.modules.add(t.ref.module)
        try:  # what its values are (some types say it per instance: thrift.field's kind)
            value = info.ext(*t.ref.args).VALUE
        except Exception:
            value = info.ext.VALUE
        return {
            "kind": "ext",
            "value": value,
            "module": t.ref.module,
            "name": t.ref.name,
            "args": list(t.ref.args),
            "size": self.size(t.size, c),
            "window": info.window or None,
            "spelled": t.ref.spelled or f"{t.ref.module}.{t.ref.name}",
        }

    def items(self, items, c: Checked) -> list:
        out = []
        for item in items:
            if isinstance(item, n.Field):
                d = {
                    "item": "field",
                    "name": item.name,
                    "type": self.ftype(item, c),
                    "nullable": item.nullable or None,
                }
                if isinstance(item.value, n.IntLit):
                    d["const"] = int_lit(item.value.value)
                if c is self.c and item.name in self.lengths:
                    d["frame_length"] = self.lengths[item.name]
                out.append(d)
            elif isinstance(item, n.Bits):
                fields = []
                for bf in item.fields:
                    fields.append(
                        {
                            "name": bf.name,
                            "width": bf.width,
                            "enum": bf.enum,
                            "const": bf.const,
                        }
                    )
                out.append({"item": "bits", **self.int_type(item.type), "fields": fields})
            elif isinstance(item, n.IfBlock):
                out.append(
                    {
                        "item": "if",
                        "test": self.expr(item.test, c),
                        "body": self.items(item.body, c),
                        "orelse": self.items(item.orelse, c),
                    }
                )
            else:
                assert isinstance(item, n.Fail)
                out.append({"item": "fail", "message": item.message})
        return out

    # ---- the whole spec ---------------------------------------------------------------
    def spec(self) -> dict:
        s, c = self.s, self.c
        records = {}
        for rec in s.records:
            rc = c.records[rec.name]
            records[rec.name] = {"depth": rec.depth, "items": self.items(rec.items, rc)}
        insides = [
            {
                "target": target,
                "layouts": [
                    {"test": self.expr(ip.inside.test, c), "items": self.items(ip.items, c)}
                    for ip in lst
                ],
            }
            for target, lst in self.plan.insides.items()
        ]
        frame = self.items(s.frame, c)
        lets = {let.name: self.expr(let.expr, c) for let in s.lets}
        bindings = {}
        for b in s.bindings:
            bindings[b.name] = self.expr(b.expr, c)
        headers = [{"name": hb.name, "expr": self.expr(hb.expr, c)} for hb in s.header_bindings]
        stream = [
            {"test": None if r.test is None else self.expr(r.test, c), "kind": r.kind}
            for r in s.stream
        ]
        enums = {}
        for e in s.enums:
            enums[e.name] = {
                "width": e.type.width,
                "signed": e.type.signed,
                "members": [{"name": m.name, "value": int_lit(m.value)} for m in e.members],
            }
        status = [{"code": int_lit(r.code), "name": r.name} for r in s.status_rows]
        detect = [
            {
                "offset": p.offset,
                "width": p.type.nbytes,
                "order": p.type.order or s.byte_order,
                "signed": p.type.signed,
                "values": [int_lit(v) for v in p.values],
            }
            for p in s.detect
        ]
        rid = s.bindings and next((b.expr for b in s.bindings if b.name == "request_id"), None)
        rid_type = c.fields[rid.name].int_type if isinstance(rid, n.Name) else None
        return {
            "name": s.name,
            "request_id_signed": rid_type is None or rid_type.signed,
            "order": s.byte_order,
            "needs_direction": c.uses_direction or None,
            "uses_first": c.uses_first or None,
            "detect": detect,
            "detect_length": self.plan.detect_length,
            "enums": enums,
            "records": records,
            "frame": frame,
            "insides": insides,
            "lets": lets,
            "bindings": bindings,
            "headers": headers,
            "list_headers": sorted(c.list_headers),
            "stream": stream,
            "heartbeat": None if s.heartbeat is None else self.expr(s.heartbeat.test, c),
            "goaway": None if s.goaway is None else self.expr(s.goaway, c),
            "status": status,
        }


def _source(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text("utf-8")


def _fieldtype_source(library: str, plan: Plan) -> str:
    """The Lua readers of a field-type library: ``NAME.lua`` beside its Python module (a
    plug-in library ships its own the same way; docs/api.md)."""
    from protoc_x.runtime import fieldtypes

    module = fieldtypes.library(library)
    file = getattr(module, "__file__", None)
    if file is not None:
        path = Path(file).parent / f"{module.__name__.rsplit('.', 1)[-1]}.lua"
        if path.is_file():
            return path.read_text("utf-8")
    raise SpecError(
        plan.checked.spec.pos,
        f"field-type library {library!r} has no Lua readers ({library}.lua beside its module): "
        "the dissector cannot read its fields",
    )


def _chunk(name: str, text: str, arg: str) -> str:
    """A Lua file pasted in as a function called with ``arg`` (its ``...``)."""
    body = text.rstrip("\n")
    return (
        f"-- ---- {name} " + "-" * max(4, 86 - len(name)) + f"\n(function(...)\n{body}\nend)({arg})"
    )


def spec_data(plan: Plan) -> tuple[dict, list[str]]:
    """``SPEC`` as Python data, and the field-type libraries it reads."""
    low = Lowering(plan)
    data = low.spec()
    return data, sorted(low.modules)


def render(plan: Plan, source_name: str, source: str = "") -> dict[str, str]:
    """``{NAME.lua: text}``: the dissector of the planned spec."""
    data, modules = spec_data(plan)
    name = plan.checked.spec.name
    parts = [
        f"-- {name}: a Wireshark dissector generated by protoc-x from {source_name}. Do not edit:",
        f"-- run `protoc-x dissector {source_name}` again. Load it with",
        f"--   wireshark -X lua_script:{name}.lua   (or copy it into the personal Lua plugins folder)",
        f"-- and pick the protocol with Decode As (`-d tcp.port==PORT,{name}` in tshark); frames that",
        "-- match the spec's `detect` are found on any port by the heuristic dissector.",
        "",
        "-- The spec as data: layouts, types and expressions (read by the interpreter below).",
        f"local SPEC = {lua(data)}",
        "",
        f"local V = {_chunk('values.lua', _source('values.lua'), '')}",
        "",
        "local FIELDTYPES = {}",
    ]
    for mod in modules:
        parts.append(
            f"FIELDTYPES[{lua_string(mod)}] = "
            + _chunk(f"fieldtypes/{mod}.lua", _fieldtype_source(mod, plan), "V")
        )
    parts += [
        "",
        f"local CORE = {_chunk('core.lua', _source('core.lua'), 'V, FIELDTYPES, SPEC')}",
        "",
        # (the ';' keeps Lua from reading the parenthesis as a call of the line before)
        ";" + _chunk("wireshark.lua", _source("wireshark.lua"), "V, CORE, SPEC"),
        "",
    ]
    return {f"{name}.lua": "\n".join(parts)}
