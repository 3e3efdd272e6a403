"""'inside' layouts: a bytes field parsed into fields of its own, built back on encode, and
read in place by the scan."""

from __future__ import annotations


from ... import nodes as n
from ...plan import single_run
from .code import Code
from .exprs import Exprs


class InsideEmitter:
    """Emits the inside layouts' parse, build and scan functions (a mixin of
    :class:`protoc_x.backends.python.module.Emitter`)."""

    # ---- inside layouts ------------------------------------------------------------
    def inside_parse(self, target: str) -> str:
        w = Code()
        inner = [f for f in self.inner_fields if f.owner == target]
        if inner:
            w(" = ".join(f"self._f_{f.name}" for f in inner) + " = None")
        w(f"buf = self._raw_{target}")
        w("if buf is None:  # (a layout without it: none of its inside fields)")
        w(f"    self._state_{target} = 1")
        w("    return")
        w("pos = 0")
        w("end = len(buf)")
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
            if isinstance(item, n.Fail):  # (records only)
                w(f"raise DecodeError(pos, {self.c.record.name + ': ' + item.message!r})")
                return
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
                s = self.mod.run_struct(run, self.c, getattr(item, "name", "bits"))
                w(f"parts.append({s}.pack({', '.join(self.run_values(run, ex))}))")
                continue
            empty = " or b''" if item.nullable else ""  # a null string takes no bytes
            w(f"parts.append(p_{item.name}{empty})")
