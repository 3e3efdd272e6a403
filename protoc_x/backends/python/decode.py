"""Decoding: ``decode`` and ``frame_size`` from the plan's layout tree, fixed-width runs and
variable-size fields."""

from __future__ import annotations


from ... import nodes as n
from ...check import FieldInfo
from ...check import _walk_expr as _walk
from ...plan import Crc, Leaf, Run, Var, odd_width
from .code import Code
from .exprs import Exprs, _at, _from_bytes, _int_fields, _peek_bytes


class DecodeEmitter:
    """Emits ``decode`` and ``frame_size`` (a mixin of :class:`protoc_x.backends.python.module.Emitter`)."""

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

    @property
    def where(self) -> str:
        """The arguments that say where a frame travels, as the decoder's functions pass them
        on: its direction, and whether it is its connection's first frame that way."""
        return "direction, first" if self.c.uses_first else "direction"

    @property
    def first_arg(self) -> str:
        """``first`` passed on to decode after its ``into``, for a spec that reads it."""
        return ", first" if self.c.uses_first else ""

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
        shortest = min(
            (leaf.prefix.size if leaf.prefix else 0)
            for leaf in self._leaves(node)
            if leaf.fail is None
        )
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
        order = self.p.order
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
        targets, expand, copies, odd = [], [], [], []
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
            width = odd_width(item, self.c, self.p.order)
            if width is not None:  # read as bytes: the int is made from them below
                odd.append((targets[-1], f"o{len(odd)}", width))
                targets[-1] = odd[-1][1]
        doc = ", ".join(
            (f"bits({', '.join(b.name for b in it.fields)})" if isinstance(it, n.Bits) else it.name)
            for it in run.items
        )
        if self.typed and into == "v_" and (at == "start" or self.bounded):
            # the typed scan (a .pyx): each item read from the buffer's bytes in C
            named = dict(zip((tmp for _, tmp, _ in odd), (target for target, _, _ in odd)))
            self.typed_reads(run, w, at, [named.get(t, t) for t in targets])
        else:
            s = self.mod.run_struct(run, self.c, doc)
            if len(targets) == 1:
                w(f"({targets[0]},) = {s}.unpack_from(buf, {at})")
            else:
                w(f"({', '.join(targets)}) = {s}.unpack_from(buf, {at})")
            for target, tmp, width in odd:
                w(f"{target} = {_from_bytes(tmp, width)}")
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
        if size.mode == "parsed":  # no length announced: measured, once its bytes are there
            w(f"return measured(_measure(buf, start, {self.where}))")
            return True
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
            s = self.mod.run_struct(leaf.prefix, self.c, "")
            w(f"({', '.join(targets)},) = {s}.unpack_from(buf, start)")
            for target, item in zip(targets, leaf.prefix.items):
                width = odd_width(item, self.c, self.p.order)
                if target != "_" and width is not None:
                    w(f"{target} = {_from_bytes(target, width)}")
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
        if leaf.fail is not None:
            w(f"raise DecodeError(start, {self.s.name + ': ' + leaf.fail.message!r})")
            return
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
        if self.c.uses_first:
            w("f.first = first")
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
            total = ex(n.Name(size.length_field, self.s.pos)) + (
                f" - {size.delta}" if size.delta > 0 else f" + {-size.delta}" if size.delta else ""
            )
            w(f"end = start + {total}")
            w(f"if end - start < {prefix + leaf.fixed_tail}:")
            w(
                f"    raise DecodeError(start + {size.at}, {size.length_field + ': frame length %d is shorter than its header'!r} % (end - start))"
            )
        elif size.mode == "parsed":
            w(
                f"m = measured(_measure(buf, start, {self.where}))  # the frame ends where its fields do"
            )
            w("if m is None:")
            w("    return None")
            w("end = start + m")
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
        checked_bounds = size.mode in ("length_field", "parsed")
        # (a typed scan reads a run at pos in C only where its bounds were checked first)
        self.bounded = checked_bounds
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
            ctx = self.ctx_of(t.ref)
            if size is None:
                if obj and name in self.targets:  # the value's bytes, parsed by its 'inside'
                    w(f"{obj}._at_{name} = pos - start")
                w(f"{target}, pos = {ft}.read(buf, pos, end, {ctx})")
                return
            if info.window:  # one value filling the bytes its size gives
                stop = "end" if isinstance(size, n.SizeRest) else f"pos + {ex(size.expr)}"
                w(f"stop = {stop}")
                w("if stop > end or stop < pos:")
                w(f"    raise DecodeError(pos, {name + ': bad size'!r})")
                w(f"{target}, pos = {ft}.read(buf, pos, stop, {ctx})")
                w("if pos != stop:")
                w(f"    raise DecodeError(pos, {name + ': bytes after its value'!r})")
                return
            w("items = []")
            if isinstance(size, n.SizeCount):
                w(f"count = {ex(size.expr)}")
                if fld.nullable:
                    w("if count == -1:")
                    w("    items = None  # (null)")
                    w("elif count < 0 or count > end - pos:")
                else:
                    w("if count < 0 or count > end - pos:")
                w(f"    raise DecodeError(pos, {name + ': bad element count %d'!r} % count)")
                w("for _ in range(count):" + ("  # (none when null)" if fld.nullable else ""))
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
        if info.kind == "bytes" and not obj and not self.in_record:
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
