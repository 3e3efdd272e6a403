"""Records: named layouts used as field types (``v Value``, ``items Value[count n]``).

Each record compiles to a value class (its fields as slots, None when absent from its layout)
and, beside it, a codec object ``_R_<name>`` with the field-type contract of
runtime/fieldtypes (``read``, ``measure``, ``write``), so that a frame's field of a record's type
is read, measured and written as any field type's is. The ``ctx`` a record codec takes is the
depth it is nested at: a record that contains itself refuses to nest deeper than its bound.

A record's layout is read in order, its if/else blocks tested in place on its own earlier
integer fields (a frame's are planned into variants instead). Its parts are emitted by a child
:class:`~protoc_x.backends.python.module.Emitter` over the record's own symbol table."""

from __future__ import annotations

from ... import nodes as n
from ...check import _is_call
from ...check import _walk_expr as _walk
from ...plan import Plan, odd_width, single_run
from .code import Code
from .exprs import Exprs, _to_bytes


def records_code(parent) -> str:
    """The classes and codecs of every record of ``parent``'s spec, in declaration order."""
    from .module import Emitter  # (the module assembles records: imported when it runs)

    w = Code()
    for record in parent.s.records:
        table = parent.c.records[record.name]
        child = Emitter(
            Plan(table, parent.p.order, None, {}, [], 0), parent.source_name, parent.mod
        )
        RecordEmitter(child, record).emit(w)
    return w.text(0)


class RecordEmitter:
    def __init__(self, e, record: n.Record):
        self.e = e  # the child emitter: its ``c`` is the record's table
        self.r = record
        self.fields = list(e.c.fields.values())

    # ---- the value class -------------------------------------------------------------
    def emit(self, w: Code) -> None:
        name = self.r.name
        names = [f.name for f in self.fields]
        w("")
        w("")
        w(f"class {name}(XRecord):")
        w.indent()
        w(f'"""record {name}: its fields as attributes, None when absent from its layout."""')
        w("")
        w(f"__slots__ = {tuple(names)!r}")
        w(f"FIELD_NAMES = {tuple(names)!r}")
        enums = {f.name: f"_E_{f.enum}" for f in self.fields if f.enum}
        if enums:
            w("FIELD_ENUMS = {" + ", ".join(f"{k!r}: {v}" for k, v in enums.items()) + "}")
        w("")
        w(f"def __init__(self, {', '.join(f'{x}=None' for x in names)}):")
        for x in names:
            w(f"    self.{x} = {x}")
        w.dedent()
        # ---- its codec ----
        w("")
        w("")
        w(f"class _{name}Codec:")
        w.indent()
        w(f'"""Reads, measures and writes record {name}; ``depth`` is how deep it is nested."""')
        w("")
        w('VALUE = "record"')
        w("__slots__ = ()")
        w("")
        w("def read(self, buf, pos, end, depth=0):")
        self.read(w)
        w("")
        w("def measure(self, buf, pos, depth=0):")
        self.measure(w)
        w("")
        w("def write(self, v, depth=0):")
        self.write(w)
        w.dedent()
        w("")
        w("")
        w(f"_R_{name} = _{name}Codec()")

    def guard(self, w: Code, error: str) -> None:
        """A record that contains itself stops at its depth bound."""
        if self.r.depth is not None:
            w(f"if depth >= {self.r.depth}:")
            w(f"    {error}")

    def contexts(self, w: Code) -> None:
        e = self.e
        for mod in e.contexts(list(e._flat(self.r.items))):
            w(f"ctx_{mod} = {mod}.new_context()")

    def locals(self) -> Exprs:
        return Exprs(self.e.c, self.e.mod, lambda x: f"v_{x}")

    # ---- read ------------------------------------------------------------------------
    def read(self, w: Code) -> None:
        w.indent()
        depth = f"{self.r.name} nested deeper than {self.r.depth}"
        self.guard(w, f"raise DecodeError(pos, {depth!r})")
        self.contexts(w)
        if self.fields:
            w(" = ".join(f"v_{f.name}" for f in self.fields) + " = None")
        body = Code()
        self.e.inside_items(self.r.items, body, self.locals(), "")
        self.e.guard_utf8(body, w)
        w(f"return {self.r.name}({', '.join(f'v_{f.name}' for f in self.fields)}), pos")
        w.dedent()

    # ---- measure ---------------------------------------------------------------------
    def measure(self, w: Code) -> None:
        w.indent()
        depth = f"{self.r.name} nested deeper than {self.r.depth}"
        self.guard(w, f"raise DecodeError(pos, {depth!r})")
        self.contexts(w)
        if self.fields:
            w(" = ".join(f"v_{f.name}" for f in self.fields) + " = None")
        start = len(w.lines)
        self.measure_items(self.r.items, w, self.locals())
        w("return None, pos")
        if not any("yield" in line for line in w.lines[start:]):
            w("yield  # (a generator, though this layout never waits)")
        w.dedent()

    def measure_items(self, items, w: Code, ex: Exprs) -> None:
        e = self.e
        for item in items:
            if isinstance(item, n.IfBlock):
                _if(w, ex(item.test), item, lambda items, b: self.measure_items(items, b, ex))
                continue
            if isinstance(item, n.Fail):
                w(f"raise DecodeError(pos, {self.r.name + ': ' + item.message!r})")
                return
            if isinstance(item, n.Bits) or e.c.fields[item.name].kind in ("int", "enum"):
                run = single_run(item, e.c, e.p.order)
                e.wait(w, f"pos + {run.size}")
                e.unpack_run(run, w, "pos", "pos", into="v_")
                w(f"pos += {run.size}")
                continue
            e.measure_var(item, e.c.fields[item.name], w, ex)

    # ---- write -----------------------------------------------------------------------
    def write(self, w: Code) -> None:
        w.indent()
        depth = f"{self.r.name} nested deeper than {self.r.depth}"
        self.guard(w, f"raise ValueError({depth!r})")
        self.contexts(w)
        w("parts = []")
        # a recomputed field is read as c_<name>: the value given until it is computed (a
        # test outside the block that computes it reads it either way)
        self.computed_names = [f.node.name for f in self.fields if self.is_computed(f.node)]
        for name in self.computed_names:
            w(f"c_{name} = v.{name}")
        self.lens: dict[str, str] = {}
        self.write_items(self.r.items, w)
        w("return b''.join(parts)")
        w.dedent()

    def values(self) -> Exprs:
        """Field values as the writer knows them: a recomputed one once computed."""
        return Exprs(
            self.e.c,
            self.e.mod,
            lambda x: f"c_{x}" if x in self.computed_names else f"v.{x}",
            lens=dict(self.lens),
        )

    def write_items(self, items, w: Code) -> None:
        e = self.e
        pending: list[n.Field] = []  # recomputed fields waiting for what they measure
        for item in items:
            if isinstance(item, n.IfBlock):
                _if(w, self.values()(item.test), item, self.write_items)
                continue
            if isinstance(item, n.Fail):
                w(f"raise ValueError({self.r.name + ': ' + item.message!r})")
                return
            info = e.c.fields[item.name] if isinstance(item, n.Field) else None
            if info is not None and self.is_computed(item):
                w("parts.append(b'')  # (recomputed below, once what it measures is written)")
                w(f"i_{item.name} = len(parts) - 1")
                pending.append(item)
            elif isinstance(item, n.Bits) or info.kind in ("int", "enum"):
                run = single_run(item, e.c, e.p.order)
                doc = getattr(item, "name", "bits")
                s = e.mod.run_struct(run, e.c, doc)
                w(f"parts.append({s}.pack({', '.join(e.run_values(run, self.values()))}))")
            else:
                part = f"p_{item.name}"
                w(f"{part} = {e.part_code(item, info, obj='v')}")
                self.lens[item.name] = e.len_code(item, info, part, obj="v")
                w(f"parts.append({part} or b'')" if item.nullable else f"parts.append({part})")
            for fld in list(pending):
                targets = [x.args[0].name for x in _walk(fld.value) if _is_call(x, "len")]
                if all(t in self.lens for t in targets):
                    self.computed(fld, w)
                    pending.remove(fld)

    def is_computed(self, fld) -> bool:
        """A field the writer recomputes (a length, a count), not a constant."""
        return (
            isinstance(fld, n.Field)
            and fld.value is not None
            and self.e.const_of(fld) is None
            and not isinstance(fld.value, n.IntLit)
        )

    def computed(self, fld: n.Field, w: Code) -> None:
        e = self.e
        info = e.c.fields[fld.name]
        w(f"c_{fld.name} = {self.values()(fld.value)}")
        if info.kind == "ext":  # an integer field type (a decimal, a varint)
            ft = e.mod.fieldtype(fld.type.ref)
            w(f"parts[i_{fld.name}] = {ft}.write(c_{fld.name}, {e.ctx_of(fld.type.ref)})")
            return
        run = single_run(fld, e.c, e.p.order)
        s = e.mod.run_struct(run, e.c, fld.name)
        width = odd_width(fld, e.c, e.p.order)
        value = _to_bytes(f"c_{fld.name}", width) if width is not None else f"c_{fld.name}"
        w(f"parts[i_{fld.name}] = {s}.pack({value})")


def _if(w: Code, test: str, block: n.IfBlock, emit) -> None:
    """``if test:`` with ``emit(items, code)`` for the block's body and its else."""
    for header, items in ((f"if {test}:", block.body), ("else:", block.orelse)):
        if header == "else:" and not items:
            break
        body = Code()
        body.depth = w.depth + 1
        emit(items, body)
        w(header)
        w.lines.extend(body.lines or ["    " * (w.depth + 1) + "pass"])
