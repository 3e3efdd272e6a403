"""Measuring: for a frame that ends where its last field ends (no length announced), the
module-level generator ``_measure`` that finds its length while the bytes arrive.

It takes the decoder's steps as far as sizes go: fixed-width runs are unpacked into locals (the
sizes after them read them), a part sized by earlier fields is stepped over without being read,
and a field type that ends where its value ends is measured by its own ``measure`` generator.
Before it reads a byte that is not there it yields the buffer length it needs, and resumes
there, so the work on a frame that arrives a byte at a time grows with the frame, not once per
arrival (runtime.api.XProtocol.measure)."""

from __future__ import annotations

from ... import nodes as n
from ...plan import Crc, Leaf, Run
from .code import Code
from .exprs import Exprs


class MeasureEmitter:
    """Emits ``_measure`` (a mixin of :class:`protoc_x.backends.python.module.Emitter`)."""

    def parsed(self) -> bool:
        """Whether some layout of the frame ends where its last field ends."""
        return any(leaf.size.mode == "parsed" for leaf in self._leaves(self.p.tree))

    def measure_body(self) -> str:
        w = Code()
        self.recording_id = False  # (the id's offset is the decoder's business)
        self.measure_node(self.p.tree, w)
        return w.text(1)

    @staticmethod
    def wait(w: Code, need: str) -> None:
        """Yield until ``buf`` holds ``need`` bytes."""
        w(f"while len(buf) < {need}:")
        w(f"    yield {need}")

    def measure_node(self, node, w: Code, have: int = 0) -> None:
        if isinstance(node, Leaf):
            self.measure_leaf(node, w)
            return
        need = max((off + self.peek_width(name) for name, off in node.peeks), default=0)
        if need > have:
            self.wait(w, f"start + {need}")
            have = need
        tests = {name: self.peek_code(name, off) for name, off in node.peeks}
        ex = Exprs(self.c, self.mod, lambda name: tests[name], direction="direction")
        w(f"if {ex(node.test)}:").indent()
        self.measure_node(node.then, w, have)
        w.dedent()("else:").indent()
        self.measure_node(node.orelse, w, have)
        w.dedent()

    def measure_leaf(self, leaf: Leaf, w: Code) -> None:
        if leaf.fail is not None:
            w(f"raise DecodeError(start, {self.s.name + ': ' + leaf.fail.message!r})")
            return
        ex = Exprs(self.c, self.mod, lambda name: f"v_{name}")
        for mod in self.contexts([s.field for s in leaf.steps if not isinstance(s, (Run, Crc))]):
            w(f"ctx_{mod} = {mod}.new_context()")
        w("pos = start")
        for step in leaf.steps:
            if isinstance(step, Run):
                self.wait(w, f"pos + {step.size}")
                self.unpack_run(step, w, "pos", "pos", into="v_")
                if leaf.size.mode == "length_field" and step is leaf.prefix:
                    d = leaf.size.delta
                    delta = f" - {d}" if d > 0 else f" + {-d}" if d else ""
                    w(f"return v_{leaf.size.length_field}{delta}")
                    return
                w(f"pos += {step.size}")
            elif isinstance(step, Crc):
                w("pos += 4")
            else:
                self.measure_var(step.field, step.info, w, ex)
        self.wait(w, "pos")
        w("return pos - start")

    def measure_var(self, fld: n.Field, info, w: Code, ex: Exprs) -> None:
        """Step over one variable-size field at ``pos``."""
        name = fld.name
        size = getattr(fld.type, "size", None)
        if info.kind == "ext" and not isinstance(size, n.SizeBytes):
            ft = self.mod.fieldtype(fld.type.ref)
            ctx = self.ctx_of(fld.type.ref)
            if size is None:  # (its value is kept where a size may read it: an integer)
                keep = f"v_{name}" if info.ext.VALUE == "int" else "_"
                w(f"{keep}, pos = yield from {ft}.measure(buf, pos, {ctx})")
                return
            w(f"count = {ex(size.expr)}")
            w("if count < -1:" if fld.nullable else "if count < 0:")
            w(f"    raise DecodeError(pos, {name + ': bad element count %d'!r} % count)")
            w("for _ in range(count):" + ("  # (-1: null)" if fld.nullable else ""))
            w(f"    _, pos = yield from {ft}.measure(buf, pos, {ctx})")
            return
        if info.kind == "map" and isinstance(size, n.SizeCount):
            length = fld.type.length
            w(f"count = {ex(size.expr)}")
            w("if count < 0:")
            w(f"    raise DecodeError(pos, {name + ': bad map entry count %d'!r} % count)")
            w("for _ in range(2 * count):  # a key, then its value: each a length and its bytes")
            w.indent()
            if isinstance(length, n.IntType):
                s = self.length_codec(fld.type)
                self.wait(w, f"pos + {length.nbytes}")
                w(f"(z,) = {s}.unpack_from(buf, pos)")
                w(f"pos += {length.nbytes}")
            else:
                ft = self.mod.fieldtype(length)
                w(f"z, pos = yield from {ft}.measure(buf, pos, None)")
            w("if z < 0:")
            if isinstance(length, n.IntType) and length.signed:
                w("    if z != -1:")
                w(f"        raise DecodeError(pos, {name + ': negative length %d'!r} % z)")
                w("    z = 0  # (null)")
            else:
                w(f"    raise DecodeError(pos, {name + ': negative length %d'!r} % z)")
            w("pos += z")
            w.dedent()
            return
        if isinstance(size, n.SizeRest):  # (the planner refuses it in a measured layout)
            raise AssertionError(name)
        w(f"z = {ex(size.expr)}")
        lo = -1 if fld.nullable else 0
        w(f"if z < {lo}:")
        w(f"    raise DecodeError(pos, {name + ': negative size %d'!r} % z)")
        w("pos += z" if not fld.nullable else "pos += z if z > 0 else 0")
