"""Encoding: ``encode`` per layout, with the recomputed fields (lengths, counts, checksums)."""

from __future__ import annotations


from ... import nodes as n
from ...check import FieldInfo
from ...check import _walk_expr as _walk
from ...plan import Crc, Leaf, Run, Var, odd_width
from .code import Code
from .exprs import Exprs, _to_bytes


class EncodeEmitter:
    """Emits ``encode`` (a mixin of :class:`protoc_x.backends.python.module.Emitter`)."""

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
        ctx = self.ctx_of(t.ref)
        if t.size is None or info.window:
            return f"{ft}.write({value}, {ctx})"
        if fld.nullable:  # a counted list, null as a count of -1
            return f'None if {value} is None else b"".join([{ft}.write(item, {ctx}) for item in {value}])'
        return f'b"".join([{ft}.write(item, {ctx}) for item in {value}])'

    def len_code(self, fld: n.Field, info: FieldInfo, part: str, obj: str = "self") -> str:
        size = getattr(fld.type, "size", None)
        if isinstance(size, n.SizeCount) and fld.nullable:
            return f"(-1 if {obj}.{fld.name} is None else len({obj}.{fld.name}))"
        if isinstance(size, n.SizeCount):
            return f"len({obj}.{fld.name})"
        if fld.nullable:
            return f"(-1 if {part} is None else len({part}))"
        return f"len({part})"

    def run_values(self, run: Run, ex: Exprs) -> list[str]:
        values = [self.run_value(item, ex) for item in run.items]
        for i, item in enumerate(run.items):
            width = odd_width(item, self.c, self.p.order)
            if width is not None:  # a u24: packed as the bytes of the int
                values[i] = _to_bytes(values[i], width)
        return values

    def run_value(self, item, ex: Exprs) -> str:
        """The value an item of a run is packed from."""
        if isinstance(item, n.Bits):
            terms = []
            for bf in item.fields:
                shift, mask = self.bit_shift(item, bf.name)
                v = (
                    repr(bf.const)
                    if bf.const is not None
                    else f"({self.obj}.{bf.name} & {mask:#x})"
                )
                terms.append(f"{v} << {shift}" if shift else v)
            return " | ".join(terms)
        const = self.const_of(item)
        if const is not None:
            return repr(const)
        if item.value is not None:
            return ex(item.value)
        return f"{self.obj}.{item.name}"

    def encode_leaf(self, leaf: Leaf, w: Code) -> None:
        if leaf.fail is not None:
            w(f"raise ValueError({self.s.name + ': ' + leaf.fail.message!r})")
            return
        lens: dict[str, str] = {}
        parts: dict[str, str] = {}
        mods = self.contexts([s.field for s in leaf.steps if isinstance(s, Var)])
        for mod in mods:
            w(f"ctx_{mod} = {mod}.new_context()")
        computed = []  # field-type integers with a value (a varint length): written last
        for step in leaf.steps:
            if isinstance(step, Var):
                part = f"p_{step.field.name}"
                parts[step.field.name] = part
                if step.field.value is not None:
                    computed.append(step)
                    continue
                w(f"{part} = {self.part_code(step.field, step.info)}")
                lens[step.field.name] = self.len_code(step.field, step.info, part)
        for step in computed:
            t = step.field.type
            value = self.exprs("self", lens=lens)(step.field.value)
            ft, ctx = self.mod.fieldtype(t.ref), self.ctx_of(t.ref)
            w(f"p_{step.field.name} = {ft}.write({value}, {ctx})  # recomputed")
            lens[step.field.name] = f"len(p_{step.field.name})"
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
                s = self.mod.run_struct(step, self.c, doc)
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
