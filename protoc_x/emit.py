"""Emit a planned spec as a Python module: method bodies are written here from the plan, the
module around them comes from the Jinja2 templates in protoc_x/templates/, and black formats
the result. Spec strings reach the output only through ``repr``; spec names only after the
checker has accepted them as plain identifiers."""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import black
import jinja2

from . import nodes as n
from .check import Checked, FieldInfo
from .check import _walk_expr as _walk
from .diagnostics import SpecError
from .plan import Branch, Crc, Leaf, Plan, Run, Var, single_run

#: the runtime.api names generated code may use; the module imports those it does use
API_NAMES = (
    "DecodeError", "Direction", "PoolMode", "StreamType", "Struct", "XFrame", "XProtocol",
    "after", "as_bytes", "before", "coalesce", "crc32", "default_message", "map_get", "overrun",
    "read_kvmap", "read_kvmap_count", "read_kvmap_fixed", "text", "to_int", "utf8", "write_kvmap",
    "write_kvmap_fixed",
)  # fmt: skip


class Code:
    """Indented lines of Python."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, line: str) -> "Code":
        self.lines.append("    " * self.depth + line)
        return self

    def indent(self) -> "Code":
        self.depth += 1
        return self

    def dedent(self) -> "Code":
        self.depth -= 1
        return self

    def text(self, base: int = 2) -> str:
        pad = "    " * base
        return "\n".join(pad + line if line else line for line in self.lines)


@dataclass
class Module:
    """Module-level constants the method bodies refer to."""

    order: str
    structs: dict[str, str] = field(default_factory=dict)  # fmt → name
    struct_docs: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # constructor source → name
    functions: dict[str, str] = field(default_factory=dict)  # module.func → name

    def struct(self, fmt: str, doc: str, order: str | None = None) -> str:
        full = (order or self.order) + fmt
        if full not in self.structs:
            self.structs[full] = f"_S{len(self.structs)}"
            self.struct_docs[full] = doc
        return self.structs[full]

    def fieldtype(self, ref: n.ExtRef) -> str:
        args = ", ".join(repr(a) for a in ref.args)
        src = f"{ref.module}.TYPES[{ref.name!r}]({args})"
        if src not in self.types:
            self.types[src] = f"_T{len(self.types)}"
        return self.types[src]

    def function(self, module: str, func: str) -> str:
        key = f"{module}.FUNCTIONS[{func!r}]"
        if key not in self.functions:
            self.functions[key] = f"_F{len(self.functions)}"
        return self.functions[key]


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
    ):
        self.present = present  # frame maps that every layout has (never None)
        self.temps = 0
        self.c = checked
        self.mod = mod
        self.ref = ref
        self.direction = direction
        self.lens = lens or {}
        self.total = total
        self.reads_request = False  # set once an expression reads ``request.<field>``

    def member(self, enum: str, name: str) -> int:
        for m in self.c.enums[enum].members:
            if m.name == name:
                return m.value
        raise KeyError(name)

    def enum_of(self, e) -> str | None:
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
        if isinstance(e, n.Name):
            if e.name in self.c.fields:
                return self.ref(e.name)
            if enum is not None:
                return repr(self.member(enum, e.name))
            raise KeyError(e.name)
        if isinstance(e, n.Param):
            return f"p_{e.name}"
        if isinstance(e, n.Attr):
            self.reads_request = True
            return f"request.{e.name}"
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
                left_enum, right_enum = self.enum_of(e.left), self.enum_of(e.right)
                return f"({c(e.left, right_enum)} {e.op} {c(e.right, left_enum)})"
            if e.op == "??":
                tmp = f"c{self.temps}"
                self.temps += 1
                return (
                    f"({tmp} if ({tmp} := {c(e.left, enum)}) is not None else {c(e.right, enum)})"
                )
            return f"({c(e.left)} {e.op} {c(e.right)})"
        if isinstance(e, n.In):
            item_enum = self.enum_of(e.item)
            opts = ", ".join(c(o, item_enum) for o in e.options)
            return f"({c(e.item)} in ({opts},))"
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
            if e.func in ("before", "after"):
                return f"{e.func}(text({c(args[0])}), {c(args[1])})"
        raise AssertionError(f"cannot compile {e!r}")


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


def _int_fields(item) -> list:
    return list(item.fields) if isinstance(item, n.Bits) else [item]


class Emitter:
    def __init__(self, plan: Plan, source_name: str):
        self.p = plan
        self.c = plan.checked
        self.s = plan.checked.spec
        self.mod = Module(plan.order)
        self.source_name = source_name
        self.cls = "".join(part.capitalize() for part in self.s.name.split("_")) + "Frame"
        self.leaves: list[Leaf] = []
        self.frame_fields = [f for f in self.c.fields.values() if f.owner is None]
        self.inner_fields = [f for f in self.c.fields.values() if f.owner is not None]
        self.targets = sorted(plan.insides)
        rid = self.c.bindings.get("request_id")
        info = (
            self.c.fields.get(rid.expr.name)
            if rid is not None and isinstance(rid.expr, n.Name)
            else None
        )
        self.id_field = (
            info.name
            if info is not None and info.owner is None and info.kind in ("int", "enum")
            else None
        )
        self.recording_id = False
        self.size_only = False  # emitting frame_size: stop once the length is known
        self.scanning = False  # emitting scan: fields into v_ locals, no frame
        # frame maps kept as their bytes until read: a forwarded frame never builds them
        self.lazy_maps = {
            f.name
            for f in self.frame_fields
            if f.kind == "map"
            and isinstance(f.node.type.length, n.IntType)
            and isinstance(f.node.type.size, (n.SizeBytes, n.SizeRest))
            and f.name not in self.targets
        }
        #: inside targets the scan reads without a frame: target → the outer fields (and
        #: ``direction``) its layouts read, the parameters of its ``_scan_<target>``
        self.scan_insides = {
            t: params for t in self.targets if (params := self.scan_inside_params(t)) is not None
        }
        leaves = list(self._leaves(plan.tree))
        names = [
            {it.name for st in leaf.steps if isinstance(st, Var) for it in [st.field]}
            for leaf in leaves
        ]
        self.always_present = (
            frozenset(
                name
                for name in set.intersection(*names)
                if self.c.fields[name].kind == "map" and name not in self.targets
            )
            if names
            else frozenset()
        )

    def _leaves(self, node):
        if isinstance(node, Leaf):
            yield node
        else:
            yield from self._leaves(node.then)
            yield from self._leaves(node.orelse)

    # ---- helpers -------------------------------------------------------------------
    def attr(self, name: str, obj: str = "self") -> str:
        return f"{obj}.{name}"

    def exprs(self, obj: str, **kw) -> Exprs:
        kw.setdefault("present", self.always_present if obj == "self" else frozenset())
        return Exprs(self.c, self.mod, lambda name: f"{obj}.{name}", **kw)

    def is_text(self, e) -> bool:
        """The expression is already str or None: no text() conversion needed."""
        if isinstance(e, n.StrLit):
            return True
        if isinstance(e, n.Name):
            info = self.c.fields.get(e.name)
            return info is not None and info.kind == "string"
        if isinstance(e, n.Index):
            info = self.c.fields.get(getattr(e.obj, "name", ""))
            return info is not None and info.kind == "map"  # length-prefixed text pairs
        if isinstance(e, n.BinOp) and e.op == "??":
            return self.is_text(e.left) and self.is_text(e.right)
        if isinstance(e, n.Cond):
            return self.is_text(e.then) and self.is_text(e.orelse)
        return isinstance(e, n.Call) and e.module is None and e.func in ("name", "before", "after")

    def length_codec(self, t: n.MapType) -> str:
        if isinstance(t.length, n.IntType):
            fmt = {8: "B", 16: "H", 32: "I", 64: "Q"}[t.length.width]
            if t.length.signed:
                fmt = fmt.lower()
            return self.mod.struct(fmt, "map entry length")
        return self.mod.fieldtype(t.length)

    def contexts(self, items) -> list[str]:
        mods = set()
        for item in items:
            info = self.c.fields.get(getattr(item, "name", ""))
            if info is not None and info.kind == "ext":
                mods.add(info.node.type.ref.module)
        return sorted(mods)

    # ---- decode --------------------------------------------------------------------
    def decode_body(self) -> str:
        w = Code()
        w("n = len(buf)")
        if self.c.uses_direction:
            self.direction_guard(w)
        self.early_constants(w)
        body = Code()
        self.decode_node(self.p.tree, body)
        self.guard_utf8(body, w)
        return w.text()

    def direction_guard(self, w: Code) -> None:
        """The layouts test ``direction is Direction.REQUEST``: anything but the two members
        (None, a str 'request') would be read as a response, so it is refused first."""
        name = self.s.name
        w("if direction is not Direction.REQUEST and direction is not Direction.RESPONSE:")
        w("    if direction is None:")
        w(f"        raise ValueError({name + ' frames need a direction'!r})")
        w("    raise TypeError(")
        w(f"        {name + ': direction must be Direction.REQUEST or Direction.RESPONSE, not '!r}")
        w("        + repr(direction)")
        w("    )")

    def size_body(self) -> str:
        """``frame_size``: the decoder's path as far as the frame's announced length."""
        self.size_only = True
        try:
            w = Code()
            w("n = len(buf)")
            if self.c.uses_direction:
                self.direction_guard(w)
            self.early_constants(w)
            self.decode_node(self.p.tree, w)
            return w.text()
        finally:
            self.size_only = False

    # ---- scan ----------------------------------------------------------------------
    # What the runtime's fast lane needs of a frame, in one pass with no frame built: the
    # decoder's own steps (so it refuses what decode refuses) into locals, then the spec's
    # bindings over them. A layout whose bindings need more than its plain fields (a field
    # type, an 'inside', a checksum) is decoded into a frame reused from call to call.

    def scan_body(self) -> str:
        """``scan``: the decoder's body with its leaves read into locals (``scanning``)."""
        self.scanning = True
        try:
            return self.decode_body()
        finally:
            self.scanning = False

    def scan_names(self, keys: tuple) -> set[str]:
        """The fields the bindings ``keys`` read ("stream": the stream rules, heartbeat and
        goaway)."""
        b = self.c.bindings
        exprs = [b[k].expr for k in keys if k in b]
        if "stream" in keys:
            exprs += [rule.test for rule in self.s.stream if rule.test is not None]
            exprs += [e for e in (self.s.heartbeat and self.s.heartbeat.test, self.s.goaway) if e]
        return {
            e.name
            for x in exprs
            for e in _walk(x)
            if isinstance(e, n.Name) and e.name in self.c.fields
        }

    def inside(self, keys: tuple) -> bool:
        """The bindings ``keys`` read a field of an 'inside' layout (a decoded frame has it)."""
        return any(self.c.fields[name].owner is not None for name in self.scan_names(keys))

    def leaf_scannable(self, leaf: Leaf) -> bool:
        """The leaf's steps can be read into locals: no checksum, no field type, and the
        stream rules read no field of an 'inside' layout."""
        if any(isinstance(st, Crc) for st in leaf.steps):
            return False
        for st in leaf.steps:
            if isinstance(st, Var):
                kind = st.info.kind
                if kind == "ext" or (kind == "map" and st.field.name not in self.lazy_maps):
                    return False
        return not self.inside(("stream", "request_id"))

    def scan_decoded(self, w: Code) -> None:
        """A leaf the scan cannot read in locals: decoded into the reused frame."""
        w(f"f = {self.cls[: -len('Frame')]}Protocol.decode(self, buf, start, direction, _SCRATCH)")
        w("if f is None:")
        w("    return None")
        self.scan_tail(w, lambda name: f"f.{name}", "f.length", "f._ido" if self.id_field else "-1")

    def scan_return(self, w: Code, present: set) -> None:
        """The scanned leaf's answer, over its locals; its maps parsed only if read."""

        proto = self.cls[: -len("Frame")] + "Protocol"
        # an 'inside' whose fields a binding reads: read into a tuple by _scan_<target> when
        # its place and the fields its layouts test are in locals, else from a decoded frame
        local = {
            t: params
            for t, params in self.scan_insides.items()
            if t in present and all(p == "direction" or p in present for p in params)
        }

        def call(owner: str) -> str:
            args = "".join(", " + (p if p == "direction" else f"v_{p}") for p in local[owner])
            return f"_scan_{owner}(buf, at_{owner}, at_{owner} + z_{owner}{args})"

        def ref(name: str, eager: frozenset = frozenset()) -> str:
            owner = self.c.fields[name].owner
            if owner in local:
                k = [f.name for f in self.inner_fields if f.owner == owner].index(name)
                if owner in eager:  # read before the request's bindings
                    return f"t_{owner}[{k}]"
                return f"(t_{owner} or (t_{owner} := {call(owner)}))[{k}]"
            if owner is not None:  # decoded when (and if) it is read
                return f"(f or (f := {proto}.decode(self, buf, start, direction, _SCRATCH))).{name}"
            if name not in present:
                return "None"
            return f"m_{name}" if name in self.lazy_maps else f"v_{name}"

        def owners(keys: tuple) -> set:
            return {self.c.fields[name].owner for name in self.scan_names(keys)} - {None}

        # a response's status reads an 'inside' when (and if) it must; a request's service,
        # method and timeout read theirs once, before they are computed
        lazy = owners(("status",)) & set(local)
        eager = frozenset(owners(("timeout_ms", "service", "method")) & set(local))
        for owner in sorted(lazy):
            w(f"t_{owner} = None  # {owner}'s 'inside' fields, read if the status needs them")
        if (owners(("status",)) | owners(("timeout_ms", "service", "method"))) - set(local):
            w("f = None  # the frame, decoded once a binding reads a field of an 'inside'")
        ido = "ido" if self.recording_id else "-1"
        reads = tuple(f"t_{o} = {call(o)}  # {o}'s 'inside' fields" for o in sorted(eager))
        self.scan_tail(
            w, ref, "end - start", ido, present & self.lazy_maps,
            request_ref=lambda name: ref(name, eager), request_lines=reads,
        )  # fmt: skip

    def scan_tail(
        self,
        w: Code,
        ref,
        length: str,
        ido: str,
        maps: set | None = None,
        request_ref=None,
        request_lines: tuple[str, ...] = (),
    ) -> None:
        """Stream type, heartbeat and id, then the response's status or the request's
        service, method and timeout, read through ``ref`` (the request's through
        ``request_ref``, after ``request_lines``). ``maps``: the lazy maps in locals (None:
        ``ref`` reads a decoded frame)."""
        b = self.c.bindings
        ex = Exprs(self.c, self.mod, ref, direction="direction", present=frozenset(maps or ()))
        for i, rule in enumerate(self.s.stream):
            kind = rule.kind.upper()
            if rule.test is None:
                if i:
                    w("else:").indent()
                w(f"kind = _{kind}")
                if i:
                    w.dedent()
                break
            w(f"{'elif' if i else 'if'} {ex(rule.test)}:")
            w(f"    kind = _{kind}")
        else:
            w("else:")
            w("    kind = None")
        tests = [ex(e) for e in (self.s.heartbeat and self.s.heartbeat.test, self.s.goaway) if e]
        rid = ex(b["request_id"].expr) if "request_id" in b else "None"
        head = f"{length}, {rid}, {ido}, kind, {' or '.join(tests) or 'False'}"
        w("if kind is _RESPONSE:")
        w(f"    return ({head}, None, None, {ex(b['status'].expr) if 'status' in b else 'None'})")
        for line in request_lines:
            w(line)
        if request_ref is not None:
            ex = Exprs(
                self.c, self.mod, request_ref, direction="direction", present=frozenset(maps or ())
            )
        used = self.scan_names(("timeout_ms", "service", "method"))
        for name in sorted(used & set(maps or ())):
            t = self.c.fields[name].node.type
            codec, signed = self.length_codec(t), self.signed_length(t)
            w(f"m_{name} = read_kvmap_fixed(buf, at_{name}, at_{name} + z_{name}, {codec}, {signed}) if z_{name} else {{}}")  # fmt: skip
        values = []
        for key in ("service", "method"):
            if key not in b:
                values.append("None")
                continue
            code = ex(b[key].expr)
            values.append(code if self.is_text(b[key].expr) else f"text({code})")
        values.append(ex(b["timeout_ms"].expr) if "timeout_ms" in b else "None")
        w(f"return ({head}, {', '.join(values)})")

    def early_constants(self, w: Code) -> None:
        """Check the leading constants (magic) as soon as their bytes arrive, so garbage is
        refused at once instead of after a whole header; later reads need not check again."""
        self.checked_early: set[str] = set()
        offset = 0
        for item in self.s.frame:
            if isinstance(item, n.IfBlock) or not self._fixed(item):
                break
            for fld in _int_fields(item):
                const = self.const_of(fld)
                if const is None:
                    continue
                width = self.peek_width(fld.name)
                where = offset + (
                    self.bit_offset(item, fld.name) if isinstance(item, n.Bits) else 0
                )
                w(
                    f"if n - start >= {offset + width} and {self.peek_code(fld.name, offset)} != {const!r}:"
                )
                w(
                    f"    raise DecodeError({_at(where)}, {fld.name + ': expected %#x, got %#x'!r} % ({const!r}, {self.peek_code(fld.name, offset)}))"
                )
                self.checked_early.add(fld.name)
            offset += (
                item.type.nbytes
                if isinstance(item, n.Bits)
                else self.c.fields[item.name].int_type.nbytes
            )

    def _fixed(self, item) -> bool:
        if isinstance(item, n.Bits):
            return True
        info = self.c.fields[item.name]
        return info.kind in ("int", "enum")

    @staticmethod
    def bit_offset(bits: n.Bits, name: str) -> int:
        """Byte offset of a bit field's first byte within its container."""
        used = 0
        for f in bits.fields:
            if f.name == name:
                return used // 8
            used += f.width
        return 0

    @staticmethod
    def guard_utf8(body: Code, w: Code) -> None:
        """Strings decode inline; one handler turns bad UTF-8 into a DecodeError at the field."""
        if not any(".decode()" in line for line in body.lines):
            w.lines.extend("    " * w.depth + line for line in body.lines)
            return
        w("try:")
        w.lines.extend("    " * (w.depth + 1) + line for line in body.lines)
        w("except UnicodeDecodeError as e:")
        w("    raise DecodeError(pos + e.start, 'invalid UTF-8 in a string field') from None")

    def decode_node(self, node, w: Code, have: int = 0) -> None:
        """Decode code for a branch or leaf; ``have``: bytes already known to be there."""
        if isinstance(node, Leaf):
            self.decode_leaf(node, w, have)
            return
        need = 0
        for name, off in node.peeks:
            need = max(need, off + self.peek_width(name))
        # wait for the shortest header of any layout below at once: one check, not two
        shortest = min((leaf.prefix.size if leaf.prefix else 0) for leaf in self._leaves(node))
        need = max(need, shortest)
        if need > have:
            w(f"if n - start < {need}:")
            w("    return None")
            have = need
        tests = {name: self.peek_code(name, off) for name, off in node.peeks}
        uses = {
            name: sum(1 for e in _walk(node.test) if isinstance(e, n.Name) and e.name == name)
            for name in tests
        }
        for name, code in tests.items():
            if uses[name] > 1:
                w(f"pk_{name} = {code}")
        ex = Exprs(
            self.c,
            self.mod,
            lambda name: f"pk_{name}" if uses[name] > 1 else tests[name],
            direction="direction",
        )
        w(f"if {ex(node.test)}:").indent()
        self.decode_node(node.then, w, have)
        w.dedent()("else:").indent()
        self.decode_node(node.orelse, w, have)
        w.dedent()

    def peek_width(self, name: str) -> int:
        info = self.c.fields[name]
        if isinstance(info.node, n.BitField):
            return self.bits_of(name).type.nbytes
        return info.int_type.nbytes

    def bits_of(self, name: str) -> n.Bits:
        def walk(items):
            for item in items:
                if isinstance(item, n.Bits) and any(f.name == name for f in item.fields):
                    return item
                if isinstance(item, n.IfBlock):
                    found = walk(item.body) or walk(item.orelse)
                    if found:
                        return found
            return None

        return walk(self.s.frame)

    def peek_code(self, name: str, off: int) -> str:
        info = self.c.fields[name]
        order = "big" if self.p.order == ">" else "little"
        if isinstance(info.node, n.BitField):
            bits = self.bits_of(name)
            shift, mask = self.bit_shift(bits, name)
            raw = _peek_bytes(off, bits.type.nbytes, order)
            return f"({raw} >> {shift}) & {mask:#x}"
        t = info.int_type
        return _peek_bytes(off, t.nbytes, t.order or order, t.signed)

    @staticmethod
    def bit_shift(bits: n.Bits, name: str) -> tuple[int, int]:
        shift = bits.type.width
        for f in bits.fields:
            shift -= f.width
            if f.name == name:
                return shift, (1 << f.width) - 1
        raise KeyError(name)

    def unpack_run(
        self,
        run: Run,
        w: Code,
        at: str,
        base: str,
        local: frozenset = frozenset(),
        into: str = "f.",
    ) -> None:
        """Unpack ``run`` at position ``at`` into ``into<name>`` (``self._`` for inside layouts);
        ``base`` is the code for its start in errors. Fields in ``local`` also land in
        ``v_<name>`` locals, for the size arithmetic after."""
        targets, expand, copies = [], [], []
        for i, item in enumerate(run.items):
            if isinstance(item, n.Bits):
                tmp = f"b{len(expand)}"
                targets.append(tmp)
                expand.append((tmp, item))
            elif item.name in local:
                targets.append(f"v_{item.name}")
                copies.append(item.name)
            else:
                targets.append(f"{into}{item.name}")
        doc = ", ".join(
            (f"bits({', '.join(b.name for b in it.fields)})" if isinstance(it, n.Bits) else it.name)
            for it in run.items
        )
        s = self.mod.struct(run.fmt, doc, run.order)
        if len(targets) == 1:
            w(f"({targets[0]},) = {s}.unpack_from(buf, {at})")
        else:
            w(f"({', '.join(targets)}) = {s}.unpack_from(buf, {at})")
        if copies and into != "v_":
            for c in copies:
                w(f"{into}{c} = v_{c}")
        for tmp, bits in expand:
            for bf in bits.fields:
                shift, mask = self.bit_shift(bits, bf.name)
                w(
                    f"{into}{bf.name} = ({tmp} >> {shift}) & {mask:#x}"
                    if shift
                    else f"{into}{bf.name} = {tmp} & {mask:#x}"
                )
        rel = 0
        for item in run.items:
            if (
                into in ("f.", "v_")
                and isinstance(item, n.Field)
                and item.name == self.id_field
                and self.recording_id
            ):
                # where the id sits, so a forwarded frame can get a new id without re-encoding
                ido = "f._ido" if into == "f." else "ido"
                w(f"{ido} = {rel}" if at == "start" else f"{ido} = {at} + {rel} - start")
            for fld in _int_fields(item):
                const = self.const_of(fld)
                if const is not None and fld.name not in getattr(self, "checked_early", ()):
                    at_ = f"{base} + {rel}" if rel else base
                    w(f"if {into}{fld.name} != {const!r}:")
                    w(
                        f"    raise DecodeError({at_}, {fld.name + ': expected %#x, got %#x'!r} % ({const!r}, {into}{fld.name}))"
                    )
            rel += (
                item.type.nbytes
                if isinstance(item, n.Bits)
                else self.c.fields[item.name].int_type.nbytes
            )

    def const_of(self, fld) -> int | None:
        if isinstance(fld, n.BitField):
            return fld.const
        if isinstance(fld.value, n.IntLit):
            return fld.value.value
        info = self.c.fields[fld.name]
        if isinstance(fld.value, n.Name) and info.enum:
            return Exprs(self.c, self.mod, str).member(info.enum, fld.value.name)
        return None

    def size_locals(self, leaf: Leaf) -> frozenset:
        """Prefix fields the leaf's size arithmetic reads: kept in locals as well."""
        names = set()
        if leaf.size.mode == "length_field":
            names.add(leaf.size.length_field)
        for var in leaf.size.sized:
            names.update(
                e.name
                for e in _walk(var.field.type.size.expr)
                if isinstance(e, n.Name) and e.name in self.c.fields
            )
        prefix = set()
        if leaf.prefix:
            prefix = {it.name for it in leaf.prefix.items if isinstance(it, n.Field)}
        return frozenset(names & prefix)

    def leaf_has_fixed_id(self, leaf: Leaf) -> bool:
        if any(isinstance(st, Crc) for st in leaf.steps):
            return False  # a checksum covers the id: patching would break it
        return self.id_field is not None and any(
            isinstance(st, Run)
            and any(isinstance(it, n.Field) and it.name == self.id_field for it in st.items)
            for st in leaf.steps
        )

    def size_from_locals(self, leaf: Leaf, w: Code) -> bool:
        """``frame_size``'s leaf: unpack only the fields the length needs, into locals (no
        frame is built). False when the length needs more than plain header fields."""
        size = leaf.size
        local = self.size_locals(leaf)
        exprs = [v.field.type.size.expr for v in size.sized]
        needed = {
            e.name
            for x in exprs
            for e in _walk(x)
            if isinstance(e, n.Name) and e.name in self.c.fields
        }
        if size.mode == "length_field":
            needed.add(size.length_field)
        if not needed <= local:
            return False
        prefix = leaf.prefix.size if leaf.prefix else 0
        if needed:
            targets = ["_" if isinstance(it, n.Bits) or it.name not in needed else f"v_{it.name}"
                       for it in leaf.prefix.items]  # fmt: skip
            s = self.mod.struct(leaf.prefix.fmt, "", leaf.prefix.order)
            w(f"({', '.join(targets)},) = {s}.unpack_from(buf, start)")
        ex = Exprs(self.c, self.mod, lambda name: f"v_{name}")
        if size.mode == "length_field":
            delta = (
                f" - {size.delta}" if size.delta > 0 else f" + {-size.delta}" if size.delta else ""
            )
            w(f"return v_{size.length_field}{delta}")
            return True
        terms = [str(prefix + leaf.fixed_tail)] if prefix + leaf.fixed_tail else []
        for var, expr in zip(size.sized, exprs):
            code = ex(expr)
            terms.append(f"max({code}, 0)" if var.field.nullable else code)
        w(f"return {' + '.join(terms) or '0'}")
        return True

    def decode_leaf(self, leaf: Leaf, w: Code, have: int = 0) -> None:
        present = set()
        for step in leaf.steps:
            if isinstance(step, Run):
                for item in step.items:
                    present.update(f.name for f in _int_fields(item))
            else:
                present.add(step.field.name)
        prefix = leaf.prefix.size if leaf.prefix else 0
        if prefix > have:
            w(f"if n - start < {prefix}:")
            w("    return None")
        if self.size_only and self.size_from_locals(leaf, w):
            return
        self.recording_id = self.leaf_has_fixed_id(leaf)
        if self.scanning:
            if not self.leaf_scannable(leaf):
                self.scan_decoded(w)
                return
            self.decode_steps(leaf, w, "v_")
            self.scan_return(w, present)
            return
        w(f"f = {self.cls}() if into is None else into")
        if self.id_field is not None and not self.recording_id:
            w("f._ido = -1  # the id is not at a fixed place in this layout")
        absent = [
            f.name
            for f in self.frame_fields
            if f.name not in present and f.name not in self.targets
        ]
        absent = [a for a in absent if a not in self.lazy_maps] + [
            f"{prefix}{a}" for a in absent if a in self.lazy_maps for prefix in ("_lz_", "_mp_")
        ]
        absent += [f"_raw_{t}" for t in self.targets if t not in present]
        if absent:
            w(" = ".join(f"f.{a}" for a in absent) + " = None")
        for t in self.targets:
            w(f"f._state_{t} = 0")
            if t not in present:
                w(f"f._at_{t} = 0")
        self.decode_steps(leaf, w, "f.")
        if self.size_only:
            return
        w("f.length = end - start")
        if self.c.uses_direction:
            w("f.direction = direction")
        w("return f")

    def decode_steps(self, leaf: Leaf, w: Code, into: str) -> None:
        """A leaf's fields from its length on, into ``f.<name>`` (decode) or ``v_<name>``
        locals (scan: no frame; maps kept as their place until a binding reads them)."""
        prefix = leaf.prefix.size if leaf.prefix else 0
        size = leaf.size
        local = self.size_locals(leaf)
        if leaf.prefix:
            self.unpack_run(leaf.prefix, w, "start", "start", local, into)
        ex = Exprs(self.c, self.mod, lambda name: f"v_{name}" if name in local else f"{into}{name}")
        sizes: dict[str, str] = {}
        if size.mode == "length_field":
            fld = self.c.fields[size.length_field]
            total = ex(n.Name(size.length_field, self.s.pos)) + (
                f" - {size.delta}" if size.delta > 0 else f" + {-size.delta}" if size.delta else ""
            )
            w(f"end = start + {total}")
            w(f"if end - start < {prefix + leaf.fixed_tail}:")
            w(
                f"    raise DecodeError(start + {size.at}, {size.length_field + ': frame length %d is shorter than its header'!r} % (end - start))"
            )
        else:
            terms = [str(prefix + leaf.fixed_tail)] if prefix + leaf.fixed_tail else []
            for i, var in enumerate(size.sized):
                name = var.field.name
                z = f"z{i}"
                expr = var.field.type.size.expr
                if isinstance(expr, n.Name) and expr.name in local:
                    z = f"v_{expr.name}"  # the size is a header field: use it as it is
                else:
                    w(f"{z} = {ex(expr)}")
                sizes[name] = z
                if self.never_negative(var.field.type.size.expr):
                    terms.append(z)
                elif var.field.nullable:
                    w(f"if {z} < -1:")
                    w(f"    raise DecodeError(start, {name + ': negative size %d'!r} % {z})")
                    terms.append(f"({z} if {z} > 0 else 0)")
                else:
                    w(f"if {z} < 0:")
                    w(f"    raise DecodeError(start, {name + ': negative size %d'!r} % {z})")
                    terms.append(z)
            w(f"end = start + {' + '.join(terms) or '0'}")
        if self.size_only:
            w("return end - start")
            return
        w("if end > n:")
        w("    return None")
        w(f"pos = start + {prefix}")
        checked_bounds = size.mode == "length_field"
        for mod in self.contexts([s.field for s in leaf.steps if isinstance(s, Var)]):
            w(f"ctx_{mod} = {mod}.new_context()")
        for step in leaf.steps:
            if step is leaf.prefix:
                continue
            if isinstance(step, Run):
                if checked_bounds:
                    w(f"if pos + {step.size} > end:")
                    w(
                        f"    raise overrun(pos, {step.items[0].fields[0].name if isinstance(step.items[0], n.Bits) else step.items[0].name!r}, {step.size})"
                    )
                self.unpack_run(step, w, "pos", "pos", into=into)
                w(f"pos += {step.size}")
            elif isinstance(step, Crc):
                name = step.field.name
                s = self.mod.struct("I", "crc32")
                w(f"({'f.' + name},) = {s}.unpack_from(buf, pos)")
                w(f"if f.{name} != crc32(memoryview(buf)[start:pos]):")
                w(f"    raise DecodeError(pos, {name + ': crc32 mismatch'!r})")
                w("pos += 4")
            else:
                self.decode_var(
                    step.field, step.info, w, sizes.get(step.field.name), checked_bounds, ex,
                    "f" if into == "f." else "",
                )  # fmt: skip
        if checked_bounds:
            w("if pos != end:")
            w(
                "    raise DecodeError(pos, '%d unexpected bytes at the end of the frame' % (end - pos))"
            )
        if (
            not checked_bounds
            and w.lines[-1] == "    " * w.depth + w.lines[-1].strip()
            and w.lines[-1].strip().startswith("pos += ")
        ):
            w.lines.pop()  # nothing reads pos after the last field

    def decode_var(
        self,
        fld: n.Field,
        info: FieldInfo,
        w: Code,
        z: str | None,
        checked: bool,
        ex: Exprs,
        obj: str,
    ) -> None:
        """Read one variable-size field at ``pos`` (bounded by ``end``) into ``obj``."""
        name = fld.name
        t = fld.type
        if not obj:
            target = f"v_{name}"  # scan: a local
        elif info.owner is not None:
            target = f"{obj}._f_{name}"  # an inside field: its slot, not its property
        else:
            target = f"{obj}._raw_{name}" if name in self.targets else f"{obj}.{name}"
        size = getattr(t, "size", None)
        if info.kind == "ext":
            ft = self.mod.fieldtype(t.ref)
            ctx = f"ctx_{t.ref.module}"
            if size is None:
                w(f"{target}, pos = {ft}.read(buf, pos, end, {ctx})")
                return
            w("items = []")
            if isinstance(size, n.SizeCount):
                w(f"count = {ex(size.expr)}")
                w("if count < 0 or count > end - pos:")
                w(f"    raise DecodeError(pos, {name + ': bad element count %d'!r} % count)")
                w("for _ in range(count):")
                w(f"    item, pos = {ft}.read(buf, pos, end, {ctx})")
                w("    items.append(item)")
            else:
                stop = "end" if isinstance(size, n.SizeRest) else f"pos + {ex(size.expr)}"
                w(f"stop = {stop}")
                w("if stop > end or stop < pos:")
                w(f"    raise DecodeError(pos, {name + ': bad size'!r})")
                w("while pos < stop:")
                w(f"    item, pos = {ft}.read(buf, pos, stop, {ctx})")
                w("    items.append(item)")
            w(f"{target} = items")
            return
        if isinstance(size, n.SizeCount):
            codec = self.length_codec(t)
            w(
                f"{target}, pos = read_kvmap_count(buf, pos, end, {ex(size.expr)}, {codec}, {self.signed_length(t)})"
            )
            return
        if z is None:
            z = "z"
            if isinstance(size, n.SizeRest):
                w("z = end - pos")
            else:
                w(f"z = {ex(size.expr)}")
                lo = "-1" if fld.nullable else "0"
                w(f"if z < {lo}:")
                w(f"    raise DecodeError(pos, {name + ': negative size %d'!r} % z)")
                w("if pos + z > end:")
                w(f"    raise overrun(pos, {name!r}, z)")
        if fld.nullable:
            w(f"if {z} == -1:")
            w(f"    {target} = None")
            w("else:").indent()
        if info.kind == "bytes" and not obj:
            if name in self.scan_insides:  # its 'inside' fields are read from there if needed
                w(f"at_{name}, z_{name} = pos, {z}")
        elif info.kind == "bytes":
            w(f"{target} = buf[pos : pos + {z}]")
            if name in self.targets:
                w(f"{obj}._at_{name} = pos - start")
        elif info.kind == "string" and not obj:
            w(f"{target} = buf[pos : pos + {z}].decode()  # (UTF-8 checked)")
        elif info.kind == "string":
            w(f"{target} = buf[pos : pos + {z}].decode()")  # UnicodeDecodeError: see guard_utf8
        elif info.kind == "map" and name in self.lazy_maps and obj == "f":
            w(f"f._lz_{name} = buf[pos : pos + {z}]  # parsed on first read")
            w(f"f._mp_{name} = None")
        elif info.kind == "map" and name in self.lazy_maps:
            w(f"at_{name}, z_{name} = pos, {z}  # parsed if a binding reads it")
        elif info.kind == "map":
            codec, signed = self.length_codec(t), self.signed_length(t)
            reader = "read_kvmap_fixed" if isinstance(t.length, n.IntType) else "read_kvmap"
            w(f"{target} = {reader}(buf, pos, pos + {z}, {codec}, {signed}) if {z} else {{}}")
        w(f"pos += {z}")
        if fld.nullable:
            w.dedent()

    def never_negative(self, e) -> bool:
        """A size that is an unsigned field cannot be negative: no check needed."""
        if isinstance(e, n.Name) and e.name in self.c.fields:
            t = self.c.fields[e.name].int_type
            return t is not None and not t.signed
        return isinstance(e, n.IntLit) and e.value >= 0

    @staticmethod
    def signed_length(t: n.MapType) -> bool:
        return isinstance(t.length, n.IntType) and t.length.signed

    # ---- encode --------------------------------------------------------------------
    def encode_body(self) -> str:
        w = Code()
        self.encode_node(self.p.tree, w)
        return w.text()

    def encode_node(self, node, w: Code) -> None:
        if isinstance(node, Leaf):
            self.encode_leaf(node, w)
            return
        ex = self.exprs("self")
        w(f"if {ex(node.test)}:").indent()
        self.encode_node(node.then, w)
        w.dedent()("else:").indent()
        self.encode_node(node.orelse, w)
        w.dedent()

    def part_code(self, fld: n.Field, info: FieldInfo, obj: str = "self") -> str:
        value = f"{obj}.{fld.name}"
        t = fld.type
        if info.kind == "bytes":
            return value
        if info.kind == "string":
            if fld.nullable:
                return f"None if {value} is None else {value}.encode()"
            return f"{value}.encode()"
        if info.kind == "map" and fld.name in self.lazy_maps and obj == "self":
            lz = f"self._lz_{fld.name}"  # unread since decoded: its bytes as they came
            return f"{lz} if {lz} is not None else write_kvmap_fixed(self._mp_{fld.name}, {self.length_codec(t)})"
        if info.kind == "map":
            writer = "write_kvmap_fixed" if isinstance(t.length, n.IntType) else "write_kvmap"
            return f"{writer}({value}, {self.length_codec(t)})"
        ft = self.mod.fieldtype(t.ref)
        ctx = f"ctx_{t.ref.module}"
        if t.size is None:
            return f"{ft}.write({value}, {ctx})"
        return f'b"".join([{ft}.write(item, {ctx}) for item in {value}])'

    def len_code(self, fld: n.Field, info: FieldInfo, part: str, obj: str = "self") -> str:
        size = getattr(fld.type, "size", None)
        if isinstance(size, n.SizeCount):
            return f"len({obj}.{fld.name})"
        if fld.nullable:
            return f"(-1 if {part} is None else len({part}))"
        return f"len({part})"

    def run_values(self, run: Run, ex: Exprs) -> list[str]:
        values = []
        for item in run.items:
            if isinstance(item, n.Bits):
                terms = []
                for bf in item.fields:
                    shift, mask = self.bit_shift(item, bf.name)
                    v = repr(bf.const) if bf.const is not None else f"(self.{bf.name} & {mask:#x})"
                    terms.append(f"{v} << {shift}" if shift else v)
                values.append(" | ".join(terms))
                continue
            const = self.const_of(item)
            if const is not None:
                values.append(repr(const))
            elif item.value is not None:
                values.append(ex(item.value))
            else:
                values.append(f"self.{item.name}")
        return values

    def encode_leaf(self, leaf: Leaf, w: Code) -> None:
        lens: dict[str, str] = {}
        parts: dict[str, str] = {}
        mods = self.contexts([s.field for s in leaf.steps if isinstance(s, Var)])
        for mod in mods:
            w(f"ctx_{mod} = {mod}.new_context()")
        for step in leaf.steps:
            if isinstance(step, Var):
                part = f"p_{step.field.name}"
                w(f"{part} = {self.part_code(step.field, step.info)}")
                parts[step.field.name] = part
                lens[step.field.name] = self.len_code(step.field, step.info, part)
        fixed = sum(s.size for s in leaf.steps if isinstance(s, Run)) + sum(
            4 for s in leaf.steps if isinstance(s, Crc)
        )
        needs_total = any(
            isinstance(e, n.Call) and e.func == "sizeof"
            for s in leaf.steps
            if isinstance(s, Run)
            for item in s.items
            if isinstance(item, n.Field) and item.value is not None
            for e in _walk(item.value)
        )
        if needs_total:
            terms = [str(fixed)] + [
                (
                    f"(len({p}) if {p} is not None else 0)"
                    if self.c.fields[name].node.nullable
                    else f"len({p})"
                )
                for name, p in parts.items()
            ]
            w(f"total = {' + '.join(terms)}")
        ex = self.exprs("self", lens=lens)
        chunks = []
        for step in leaf.steps:
            if isinstance(step, Run):
                doc = ", ".join(
                    (
                        f"bits({', '.join(b.name for b in it.fields)})"
                        if isinstance(it, n.Bits)
                        else it.name
                    )
                    for it in step.items
                )
                s = self.mod.struct(step.fmt, doc, step.order)
                chunks.append(f"{s}.pack({', '.join(self.run_values(step, ex))})")
            elif isinstance(step, Var):
                p = parts[step.field.name]
                chunks.append(f"{p} or b''" if step.field.nullable else p)
        crc = next((s for s in leaf.steps if isinstance(s, Crc)), None)
        joined = (
            "b''.join([" + ", ".join(chunks) + "])"
            if len(chunks) > 1
            else (chunks[0] if chunks else "b''")
        )
        if crc is not None:
            s = self.mod.struct("I", "crc32")
            w(f"data = {joined}")
            w(f"return data + {s}.pack(crc32(data))")
        else:
            w(f"return {joined}")

    # ---- inside layouts ------------------------------------------------------------
    def inside_parse(self, target: str) -> str:
        w = Code()
        inner = [f for f in self.inner_fields if f.owner == target]
        w(f"buf = self._raw_{target}")
        w("pos = 0")
        w("end = len(buf)")
        if inner:
            w(" = ".join(f"self._f_{f.name}" for f in inner) + " = None")
        ex = self.exprs("self")
        first = True
        for ip in self.p.insides[target]:
            w(f"{'if' if first else 'elif'} {ex(ip.inside.test)}:").indent()
            first = False
            for mod in self.contexts(list(self._flat(ip.items))):
                w(f"ctx_{mod} = {mod}.new_context()")
            w("try:").indent()
            items = Code()
            self.inside_items(ip.items, items)
            self.guard_utf8(items, w)
            w("if pos != end:")
            w(
                "    raise DecodeError(pos, '%d unexpected bytes after the last field' % (end - pos))"
            )
            w.dedent()("except DecodeError as e:")
            w(
                f"    raise DecodeError(e.offset + self._at_{target}, {target + ': '!r} + e.reason) from None"
            )
            w.dedent()
        w(f"self._state_{target} = 1")
        return w.text()

    #: field kinds a scan reads into a local as decode reads them (a bytes field it skips)
    SCAN_KINDS = frozenset({"int", "enum", "bits", "string", "map", "ext"})

    def scan_inside_params(self, target: str) -> tuple[str, ...] | None:
        """The parameters of ``_scan_<target>`` (outer fields its layouts read, and
        ``direction``), or None when the scan must decode a frame to read ``target``'s
        fields (a field it would not keep, or a layout that reads one)."""
        inner = [f for f in self.inner_fields if f.owner == target]
        if self.c.fields[target].node.nullable or any(f.kind not in self.SCAN_KINDS for f in inner):
            return None
        names: set[str] = set()

        def visit(node) -> None:
            if isinstance(node, n.Name):
                names.add(node.name)
            if isinstance(node, (list, tuple)):
                for x in node:
                    visit(x)
            elif hasattr(node, "__dataclass_fields__"):
                for key in node.__dataclass_fields__:
                    visit(getattr(node, key))

        for ip in self.p.insides[target]:
            visit(ip.inside.test)
            visit(list(ip.items))
        outer = sorted(x for x in names if x in self.c.fields and self.c.fields[x].owner is None)
        if any(self.c.fields[x].kind not in ("int", "enum", "bits", "string") for x in outer):
            return None
        return tuple(outer) + (("direction",) if self.c.uses_direction else ())

    def scan_inside(self, target: str) -> str:
        """``_scan_<target>``'s body: ``inside_parse`` into locals, returned as a tuple."""
        w = Code()
        inner = [f.name for f in self.inner_fields if f.owner == target]
        w(" = ".join(f"v_{x}" for x in inner) + " = None")
        ex = Exprs(self.c, self.mod, lambda name: f"v_{name}", direction="direction")
        for i, ip in enumerate(self.p.insides[target]):
            w(f"{'elif' if i else 'if'} {ex(ip.inside.test)}:").indent()
            for mod in self.contexts(list(self._flat(ip.items))):
                w(f"ctx_{mod} = {mod}.new_context()")
            items = Code()
            self.inside_items(ip.items, items, ex, "")
            self.guard_utf8(items, w)
            w("if pos != end:")
            w(
                "    raise DecodeError(pos, '%d unexpected bytes after the last field' % (end - pos))"
            )
            w.dedent()
        w(f"return ({', '.join('v_' + x for x in inner)},)")
        return w.text(1)

    def _flat(self, items):
        for item in items:
            if isinstance(item, n.IfBlock):
                yield from self._flat(item.body)
                yield from self._flat(item.orelse)
            else:
                yield item

    def inside_items(self, items, w: Code, ex: Exprs | None = None, obj: str = "self") -> None:
        """Read an 'inside' layout's items at ``pos`` into the frame's slots (``obj``), or into
        ``v_`` locals (``obj`` empty: the scan, where ``ex`` reads every field as a local)."""
        if ex is None:
            ex = Exprs(
                self.c,
                self.mod,
                lambda name: f"self._f_{name}" if self.c.fields[name].owner else f"self.{name}",
            )
        for item in items:
            if isinstance(item, n.IfBlock):
                w(f"if {ex(item.test)}:").indent()
                self.inside_items(item.body, w, ex, obj)
                w.dedent()
                if item.orelse:
                    w("else:").indent()
                    self.inside_items(item.orelse, w, ex, obj)
                    w.dedent()
                continue
            if isinstance(item, n.Bits) or self.c.fields[item.name].kind in ("int", "enum"):
                run = single_run(item, self.c, self.p.order)
                w(f"if pos + {run.size} > end:")
                w(f"    raise overrun(pos, {getattr(item, 'name', 'bits')!r}, {run.size})")
                self.unpack_run(run, w, "pos", "pos", into="self._f_" if obj else "v_")
                w(f"pos += {run.size}")
                continue
            self.decode_var(item, self.c.fields[item.name], w, None, True, ex, obj)

    def inside_build(self, target: str) -> str:
        """Bytes of ``target`` from its inside fields (read through their properties: the
        state is 'modified', so they do not re-parse). Variable parts are encoded first so that
        recomputed lengths can use them."""
        w = Code()
        ex = self.exprs("self")
        for ip in self.p.insides[target]:
            w(f"if {ex(ip.inside.test)}:").indent()
            for mod in self.contexts(list(self._flat(ip.items))):
                w(f"ctx_{mod} = {mod}.new_context()")
            lens: dict[str, str] = {}
            self.build_parts(ip.items, w, lens)
            w("parts = []")
            self.build_items(ip.items, w, lens)
            w("return b''.join(parts)")
            w.dedent()
        w(f"return self._raw_{target}")
        return w.text()

    def build_parts(self, items, w: Code, lens: dict) -> None:
        for item in self._flat(items):
            if isinstance(item, n.Field) and self.c.fields[item.name].kind not in ("int", "enum"):
                info = self.c.fields[item.name]
                part = f"p_{item.name}"
                w(f"{part} = {self.part_code(item, info)}")
                lens[item.name] = self.len_code(item, info, part)

    def build_items(self, items, w: Code, lens: dict) -> None:
        ex = self.exprs("self", lens=lens)
        for item in items:
            if isinstance(item, n.IfBlock):
                w(f"if {ex(item.test)}:").indent()
                self.build_items(item.body, w, lens)
                w.dedent()
                if item.orelse:
                    w("else:").indent()
                    self.build_items(item.orelse, w, lens)
                    w.dedent()
                continue
            if isinstance(item, n.Bits) or self.c.fields[item.name].kind in ("int", "enum"):
                run = single_run(item, self.c, self.p.order)
                s = self.mod.struct(run.fmt, getattr(item, "name", "bits"), run.order)
                w(f"parts.append({s}.pack({', '.join(self.run_values(run, ex))}))")
                continue
            empty = " or b''" if item.nullable else ""  # a null string takes no bytes
            w(f"parts.append(p_{item.name}{empty})")

    # ---- semantics -----------------------------------------------------------------
    def presence(self, name: str) -> str | None:
        """Code that holds when field ``name`` is part of this frame's layout (the tests of
        the ifs and the 'inside' it sits in); None when it always is. A setter checks it, so
        a value the encoder would not write is refused instead of silently dropped."""
        ex = self.exprs("self")

        def cond(items):  # True: always; False: never; else the code of when
            alts = []
            for item in items:
                if isinstance(item, n.IfBlock):
                    then, orelse = cond(item.body), cond(item.orelse)
                    if then is True and orelse is True:
                        return True
                    test = ex(item.test)
                    for code, branch in ((test, then), (f"(not {test})", orelse)):
                        if branch is True:
                            alts.append(code)
                        elif branch:
                            alts.append(f"({code} and {branch})")
                elif name in [f.name for f in _int_fields(item)]:
                    return True
            if not alts:
                return False
            return alts[0] if len(alts) == 1 else f"({' or '.join(alts)})"

        where = cond(self.s.frame)
        if where is True:
            return None
        alts = [where] if where else []
        for inside in self.s.insides:
            inner = cond(inside.items)
            test = ex(inside.test)
            if inner is True:
                alts.append(test)
            elif inner:
                alts.append(f"({test} and {inner})")
        if not alts:
            return None
        return alts[0] if len(alts) == 1 else f"({' or '.join(alts)})"

    def bindings(self) -> dict[str, str]:
        ex = self.exprs("self")
        out = {}
        b = self.c.bindings
        for key in ("request_id", "timeout_ms", "status", "service", "method"):
            if key in b:
                code = ex(b[key].expr)
                if key in ("service", "method") and not self.is_text(b[key].expr):
                    code = f"text({code})"
                out[key] = code
        guards = {}
        for key in ("request_id", "body", "headers"):
            if key in b:
                name = out[f"{key}_field"] = b[key].expr.name
                where = self.presence(name)
                if where is not None:
                    why = f"this {self.s.name} frame's layout has no {key} ({name} is not in it)"
                    guards[key] = Code()(f"if not {where}:")(
                        f"    raise NotImplementedError({why!r})"
                    )
                    guards[key] = guards[key].text()
        out["guards"] = guards
        out["header_extras"] = [(hb.name, ex(hb.expr)) for hb in self.s.header_bindings]
        rules = []
        for rule in self.s.stream:
            rules.append((ex(rule.test) if rule.test is not None else None, rule.kind.upper()))
        out["stream"] = rules
        if self.s.heartbeat is not None:
            out["heartbeat"] = ex(self.s.heartbeat.test)
        if self.s.goaway is not None:
            out["goaway"] = ex(self.s.goaway)
        return out

    def template_body(self, t: n.Template, direction: str, id_code: str | None) -> str:
        w = Code()
        w(f"f = {self.cls}.blank()")
        if self.c.uses_direction:
            w(f"f.direction = Direction.{direction}")
        for a in t.assigns:
            info = self.c.fields[a.name]
            ex = Exprs(self.c, self.mod, lambda name: f"request.{name}")
            value = ex(a.expr, info.enum)
            if info.kind == "bytes":
                value = f"as_bytes({value})"
            elif info.kind == "string":
                value = f"text({value})"
            elif info.kind == "map" or (info.kind == "ext" and info.ext.VALUE == "map"):
                if not (isinstance(a.expr, n.Const) and a.expr.value == {}):  # {}: already one
                    value = f"dict({value} or {{}})"
            elif info.kind == "ext" and info.ext.VALUE == "bytes":
                value = f"as_bytes({value})"
            elif info.kind == "ext" and info.ext.VALUE == "str":
                value = f"text({value})"
            if ex.reads_request and info.kind == "ext" and hasattr(info.ext, "detach"):
                # a value read from the request may carry its frame's other bytes: the field
                # type detaches it before it goes into another frame
                value = f"{self.mod.fieldtype(info.node.type.ref)}.detach({value})"
            w(f"f.{a.name} = {value}")
        if id_code is not None and "request_id" in self.c.bindings:
            # the id's field directly: a reply whose layout has no id simply does not carry it
            w(f"f.{self.c.bindings['request_id'].expr.name} = {id_code}")
        w("return f")
        return w.text()

    def defaults(self) -> list[tuple[str, str]]:
        out = []
        for f in self.c.fields.values():
            name = (
                f"_f_{f.name}"
                if f.owner
                else (f"_raw_{f.name}" if f.name in self.targets else f.name)
            )
            node = f.node
            if f.kind in ("int", "enum", "bits"):
                const = self.const_of(node)
                value = repr(const) if const is not None else "0"
                if f.owner:
                    value = "None"
            elif f.kind == "bytes":
                value = 'b""'
            elif f.kind == "string":
                value = '""'
            elif f.kind == "map" and f.name in self.lazy_maps:
                out.append((f"_lz_{f.name}", "None"))
                name, value = f"_mp_{f.name}", "{}"
            elif f.kind == "map":
                value = "{}"
            else:
                value = "[]" if getattr(node.type, "size", None) is not None else "None"
            out.append((name, value))
        for t in self.targets:
            out.append((f"_state_{t}", "1"))
            out.append((f"_at_{t}", "0"))
        out.append(("length", "0"))
        if self.id_field is not None:
            out.append(("_ido", "-1"))  # built, not decoded: no bytes to patch
        if self.c.uses_direction:
            out.append(("direction", "None"))
        return out

    # ---- module --------------------------------------------------------------------
    def render(self, fmt: bool = True) -> str:
        s = self.s
        decode = self.decode_body()
        frame_size = self.size_body()
        encode = self.encode_body()
        insides = {t: (self.inside_parse(t), self.inside_build(t)) for t in self.targets}
        scan_insides = {
            t: (
                "".join(", " + (p if p == "direction" else f"v_{p}") for p in params),
                self.scan_inside(t),
            )
            for t, params in self.scan_insides.items()
        }
        binds = self.bindings()
        scan = self.scan_body()
        templates = {}
        hb = {t.name: t for t in (s.heartbeat.templates if s.heartbeat else ())}
        if "ping" in hb:
            templates["ping"] = self.template_body(hb["ping"], "REQUEST", "p_id")
        if "reply" in hb:
            templates["reply"] = self.template_body(
                hb["reply"], "RESPONSE", "request.get_request_id()"
            )
        if s.error_response is not None:
            templates["error"] = self.template_body(
                s.error_response, "RESPONSE", "request.get_request_id()"
            )
        if s.success_response is not None:
            templates["success"] = self.template_body(
                s.success_response, "RESPONSE", "request.get_request_id()"
            )
        slots = []
        for f in self.frame_fields:
            if f.name in self.lazy_maps:
                slots += [f"_lz_{f.name}", f"_mp_{f.name}"]
            else:
                slots.append(f"_raw_{f.name}" if f.name in self.targets else f.name)
        for t in self.targets:
            slots += [f"_state_{t}", f"_at_{t}", f"_err_{t}"]
        slots += [f"_f_{f.name}" for f in self.inner_fields]
        if self.c.uses_direction:
            slots.append("direction")
        id_struct = None
        if self.id_field is not None:
            slots.append("_ido")
            t = self.c.fields[self.id_field].int_type
            from .plan import _FMT

            order = {"big": ">", "little": "<"}.get(t.order or "", self.p.order)
            id_struct = self.mod.struct(
                _FMT[(t.width, t.signed)], f"the request id ({self.id_field})", order
            )
        forward = {}
        for row in s.status_rows:
            for code in row.forward:
                forward[code] = row.code
        backward = {row.code: row.backward for row in s.status_rows}
        enums = {e.name: sorted(((m.value, m.name) for m in e.members)) for e in s.enums}
        field_enums = {f.name: f.enum for f in self.c.fields.values() if f.enum}
        detect = [
            (
                p.offset,
                p.type.nbytes,
                "big" if (p.type.order or s.byte_order) == "big" else "little",
                sorted(p.values),
            )
            for p in s.detect
        ]
        text = _template().render(
            spec=s,
            source_name=self.source_name,
            cls=self.cls,
            proto_cls=self.cls[: -len("Frame")] + "Protocol",
            modules=sorted(self.c.modules),
            mod=self.mod,
            decode=decode,
            encode=encode,
            insides=insides,
            scan_insides=scan_insides,
            inner_fields=self.inner_fields,
            b=binds,
            scan=scan,
            templates=templates,
            slots=slots,
            field_names=[f.name for f in self.c.fields.values()],
            defaults=self.defaults(),
            forward=sorted(forward.items()),
            backward=sorted(backward.items()),
            others=s.status_others if s.status_others is not None else 500,
            enums=enums,
            field_enums=sorted(field_enums.items()),
            detect=detect,
            detect_length=self.p.detect_length,
            recomputed=self.p.recomputed,
            has_error=not s.no_error_response,
            needs_direction=self.c.uses_direction,
            id_struct=id_struct,
            frame_size=frame_size,
            lazy_maps=[
                (name, self.length_codec(self.c.fields[name].node.type),
                 self.signed_length(self.c.fields[name].node.type))
                for name in sorted(self.lazy_maps)
            ],  # fmt: skip
        )
        used = sorted(name for name in API_NAMES if re.search(rf"\b{name}\b", text))
        text = text.replace(
            "from protoc_x.runtime.api import IMPORTS",
            f"from protoc_x.runtime.api import ({', '.join(used)},)",
        )
        if not fmt:
            return text
        verify(text, self.p)  # black needs code that parses: say why it does not first
        return black.format_str(text, mode=black.Mode(line_length=100))


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    """The module template, compiled once per process (a build renders it once per spec)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["pyrepr"] = repr
    env.filters["docsafe"] = docsafe
    return env.get_template("module.py.j2")


def docsafe(value: str) -> str:
    """``value`` as text that stays inside a triple-quoted docstring whatever it holds: ASCII,
    backslashes and control characters as escapes, quotes as \\x22."""
    return value.encode("unicode_escape").decode("ascii").replace('"', "\\x22")


def emit(plan: Plan, source_name: str, fmt: bool = True) -> str:
    return Emitter(plan, source_name).render(fmt)


# ---- verification ----------------------------------------------------------------------
_IMPORTABLE = ("protoc_x.runtime.api", "protoc_x.runtime.fieldtypes")


def _names_of(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
        return [stmt.name]
    return []


def verify(code: str, plan: Plan) -> None:
    """Compile a generated module and check the names it defines, without running it: only
    imports from the runtime API, assignments, classes, functions (the scan's readers of
    'inside' layouts) and the docstring at module level; no
    name defined twice; no slot that is also a class member. A failure is a SpecError at the
    spec construct responsible (the field whose name collides), else at the protocol."""
    spec = plan.checked.spec

    def fail(name: str | None, why: str) -> SpecError:
        pos = spec.pos
        if name is not None:  # a field's own name, or an internal one made from it
            bare = re.sub(r"^_(f|raw|state|at|err|lz|mp|parse|read|build|scan)_", "", name)
            info = plan.checked.fields.get(bare)
            pos = info.pos if info is not None else pos
        return SpecError(pos, f"the generated module would not load: {why}")

    try:
        tree = ast.parse(code, filename=f"{spec.name}.py")
        compile(tree, f"{spec.name}.py", "exec")
    except (SyntaxError, ValueError, MemoryError) as e:
        line = getattr(e, "lineno", None)
        raise fail(None, f"{type(e).__name__}: {getattr(e, 'msg', e)} (line {line})") from None
    body = tree.body
    if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)):
        raise fail(None, "no module docstring")
    defined: set[str] = set()
    for stmt in body[1:]:
        if isinstance(stmt, ast.ImportFrom):
            if stmt.module not in _IMPORTABLE or stmt.level:
                raise fail(None, f"imports {stmt.module}")
            for alias in stmt.names:
                name = alias.asname or alias.name
                if name in defined:
                    raise fail(None, f"{name!r} is imported twice")
                defined.add(name)
            continue
        if not isinstance(stmt, (ast.Assign, ast.ClassDef, ast.FunctionDef)):
            raise fail(None, f"a {type(stmt).__name__} statement at module level")
        for name in _names_of(stmt):
            if name in defined:
                raise fail(
                    name,
                    f"{name!r} is defined twice (the protocol's or an enum's name "
                    "makes a name the module already has)",
                )
            defined.add(name)
        if isinstance(stmt, ast.ClassDef):
            _verify_class(stmt, fail)


def _verify_class(cls: ast.ClassDef, fail) -> None:
    members: set[str] = set()
    slots: list[str] = []
    for stmt in cls.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # the docstring
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in stmt.targets
        ):
            slots = [
                e.value for e in getattr(stmt.value, "elts", []) if isinstance(e, ast.Constant)
            ]
            continue
        is_setter = isinstance(stmt, ast.FunctionDef) and any(
            isinstance(d, ast.Attribute) and d.attr == "setter" for d in stmt.decorator_list
        )
        for name in _names_of(stmt):
            if name in members and not is_setter:
                raise fail(name, f"{cls.name}.{name} is defined twice")
            members.add(name)
    seen: set[str] = set()
    for name in slots:
        if name in seen:
            raise fail(name, f"slot {name!r} of {cls.name} appears twice")
        if name in members:
            raise fail(name, f"slot {name!r} of {cls.name} is also a class member")
        seen.add(name)
