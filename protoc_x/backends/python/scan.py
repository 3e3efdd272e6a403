"""The fast lane's ``scan``: a frame's bounds, id, stream type and routing view in one pass,
with no frame built."""

from __future__ import annotations


from ... import nodes as n
from ...check import _walk_expr as _walk
from ...plan import Crc, Leaf, Var
from .code import Code
from .exprs import Exprs


class ScanEmitter:
    """Emits ``scan`` (a mixin of :class:`protoc_x.backends.python.module.Emitter`)."""

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
        """The fields the bindings ``keys`` read ("stream": the stream rules, local answers,
        heartbeat and goaway)."""
        b = self.c.bindings
        exprs = [b[k].expr for k in keys if k in b]
        if "stream" in keys:
            exprs += [rule.test for rule in self.s.stream if rule.test is not None]
            exprs += [e for e in (self.s.heartbeat and self.s.heartbeat.test, self.s.goaway) if e]
            exprs += [r.test for r in self.s.answers]
        return {
            e.name
            for x in exprs
            for e in _walk(x)
            if isinstance(e, n.Name) and e.name in self.c.fields
        }

    def parse_maps(self, w: Code, names: set) -> None:
        """The lazy maps ``names``, parsed from their bytes into locals (``m_<name>``)."""
        for name in sorted(names):
            t = self.c.fields[name].node.type
            codec, signed = self.length_codec(t), self.signed_length(t)
            w(f"m_{name} = read_kvmap_fixed(buf, at_{name}, at_{name} + z_{name}, {codec}, {signed}) if z_{name} else {{}}")  # fmt: skip

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
        w(
            f"f = {self.cls[: -len('Frame')]}Protocol.decode(self, buf, start, direction, _SCRATCH{self.first_arg})"
        )
        w("if f is None:")
        w("    return None")
        self.scan_tail(
            w, lambda name: f"f.{name}", "f.length", "f._ido" if self.id_field else "-1", obj="f"
        )

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
                return f"(f or (f := {proto}.decode(self, buf, start, direction, _SCRATCH{self.first_arg}))).{name}"
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
        obj: str | None = None,
    ) -> None:
        """Stream type, heartbeat and id, then the response's status or the request's
        service, method and timeout, read through ``ref`` (the request's through
        ``request_ref``, after ``request_lines``). ``maps``: the lazy maps in locals (None:
        ``ref`` reads a decoded frame, ``obj``, whose methods compute the lets)."""
        b = self.c.bindings
        ex = Exprs(
            self.c, self.mod, ref, direction="direction", present=frozenset(maps or ()), obj=obj
        )
        # the maps the stream rules, the id and a response's status read: parsed first
        early = self.scan_names(("stream", "request_id", "status")) & set(maps or ())
        self.parse_maps(w, early)
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
        rid = self.id_get(ex) if "request_id" in b else "None"
        head = f"{length}, {rid}, {ido}, kind, {' or '.join(tests) or 'False'}"
        # a binding that reads lets, of a decoded frame (``obj``): the frame's own method,
        # which computes each let once; otherwise the binding's expression, in place
        getter = {"status": "get_status", "service": "get_service", "method": "get_method",
                  "timeout_ms": "get_timeout"}  # fmt: skip

        def value(key: str, code) -> str:
            if key not in b:
                return "None"
            if obj and any(isinstance(x, n.LetRef) for x in _walk(b[key].expr)):
                return f"{obj}.{getter[key]}()"
            return code()

        w("if kind is _RESPONSE:")
        w(f"    return ({head}, None, None, {value('status', lambda: ex(b['status'].expr))})")
        for line in request_lines:
            w(line)
        if request_ref is not None:
            ex = Exprs(
                self.c, self.mod, request_ref, direction="direction", present=frozenset(maps or ())
            )
        if self.s.answers:  # a request the spec answers takes the full path, which does
            if obj:
                refused = [f"self.local_answer({obj}) is not None"]
            else:
                refused = [ex(r.test) for r in self.s.answers]
            special = " or ".join(tests + refused)
            head = f"{length}, {rid}, {ido}, kind, {special}"
        used = self.scan_names(("timeout_ms", "service", "method"))
        used |= {e.name for r in self.s.answers for e in _walk(r.test) if isinstance(e, n.Name)}
        self.parse_maps(w, (used & set(maps or ())) - early)

        def routing(key: str) -> str:
            code = ex(b[key].expr)
            return code if self.is_text(b[key].expr) else f"text({code})"

        values = [
            value("service", lambda: routing("service")),
            value("method", lambda: routing("method")),
        ]
        values.append(value("timeout_ms", lambda: ex(b["timeout_ms"].expr)))
        w(f"return ({head}, {', '.join(values)})")
