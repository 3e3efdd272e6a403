"""Semantics: the spec's bindings (request id, stream type, status, routing view) as XFrame
methods, the heartbeat and error templates, and field defaults."""

from __future__ import annotations


from ... import nodes as n
from .code import Code
from collections import Counter

from ...check import _walk_expr as _walk
from .exprs import Exprs, _int_fields


class SemanticsEmitter:
    """Emits the XFrame methods of the bindings and templates (a mixin of
    :class:`protoc_x.backends.python.module.Emitter`)."""

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

    def body(self, e, text: bool = False) -> str:
        """The body of a frame method returning ``e`` (``text``: as text): a let that ``e``
        reads more than once is computed once, into a local, first."""
        uses = Counter(x.name for x in _walk(e, into_lets=False) if isinstance(x, n.LetRef))
        shared = [let.name for let in self.s.lets if uses[let.name] > 1]
        code = self.exprs("self", let_locals=frozenset(shared))(e)
        if text and not self.is_text(e):
            code = f"text({code})"
        lines = [f"let_{name} = self._let_{name}()" for name in shared] + [f"return {code}"]
        return "\n        ".join(lines)

    def bindings(self) -> dict[str, str]:
        ex = self.exprs("self")
        out = {}
        b = self.c.bindings
        if "request_id" in b:
            out["request_id"] = self.id_get(ex)
            out["request_id_set"] = self.id_set()
        for key in ("timeout_ms", "status", "service", "method"):
            if key in b:  # (a method's body)
                out[key] = self.body(b[key].expr, text=key in ("service", "method"))
        guards = {}
        for key in ("request_id", "body", "headers"):
            if key in b:
                e = b[key].expr
                name = out[f"{key}_field"] = (e if isinstance(e, n.Name) else e.obj).name
                where = self.presence(name)
                if where is not None:
                    why = f"this {self.s.name} frame's layout has no {key} ({name} is not in it)"
                    guards[key] = Code()(f"if not {where}:")(
                        f"    raise NotImplementedError({why!r})"
                    )
                    guards[key] = guards[key].text()
        out["guards"] = guards
        # a header computed by more than reading a field is a method of its own, which
        # get_headers, get_header and get_header_values call
        out["header_methods"] = []
        out["header_extras"] = []
        for i, hb in enumerate(self.s.header_bindings):
            code = ex(hb.expr)
            if not isinstance(hb.expr, n.Name):
                body = self.body(hb.expr)
                out["header_methods"].append((f"_header_{i}", hb.name, hb.pos.line, body))
                code = f"self._header_{i}()"
            out["header_extras"].append((hb.name, code, hb.name in self.c.list_headers))
        out["lets"] = [(let.name, self.body(let.expr), let.pos.line) for let in self.s.lets]
        rules = []
        for rule in self.s.stream:
            rules.append((ex(rule.test) if rule.test is not None else None, rule.kind.upper()))
        out["stream"] = rules
        if self.s.heartbeat is not None:
            out["heartbeat"] = ex(self.s.heartbeat.test)
        if self.s.goaway is not None:
            out["goaway"] = ex(self.s.goaway)
        return out

    def id_get(self, ex: Exprs) -> str:
        """The request id's value: a field, a record value's field, or a map's value (an
        integer, or its decimal text)."""
        e = self.c.bindings["request_id"].expr
        return f"to_int({ex(e)})" if isinstance(e, n.Index) else ex(e)

    def id_set(self) -> str:
        """``set_request_id``'s body after its guard: the id written where it was read (a
        record value's field in place; a map's value as the kind it was, the map assigned
        back so a map kept as bytes is written anew)."""
        e = self.c.bindings["request_id"].expr
        w = Code()
        if isinstance(e, n.Name):
            w(f"self.{e.name} = request_id")
            return w.text()
        root = e.obj.name
        w(f"value = self.{root}")
        if isinstance(e, n.Attr):
            why = f"this {self.s.name} frame has no {root} to hold the request id"
            w("if value is None:")
            w(f"    raise NotImplementedError({why!r})")
            w(f"value.{e.name} = request_id")
        else:
            key = e.key.value
            w("if value is None:")
            w("    value = {}  # (a frame built without it)")
            w(f"value[{key!r}] = id_like(request_id, value.get({key!r}))")
            w(f"self.{root} = value")
        return w.text()

    def template_body(
        self, t: n.Template, direction: str, id_code: str | None, ret: str = "f", base: int = 2
    ) -> str:
        """Code that builds the frame ``t`` describes into ``f`` and returns ``ret``, indented
        ``base`` levels."""
        w = Code()
        w(f"f = {self.cls}.blank()")
        if self.c.uses_direction:
            w(f"f.direction = Direction.{direction}")
        if self.c.uses_first and direction == "RESPONSE":
            w("f.first = request.first  # the answer to a connection's first request is first")
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
            elif info.kind == "ext" and info.ext.VALUE == "record" and ex.reads_request:
                value = f"copied({value})"  # the reply's own (its request id is set in it)
            if ex.reads_request and info.kind == "ext" and hasattr(info.ext, "detach"):
                # a value read from the request may carry its frame's other bytes: the field
                # type detaches it before it goes into another frame
                value = f"{self.mod.fieldtype(info.node.type.ref)}.detach({value})"
            w(f"f.{a.name} = {value}")
        rid = self.c.bindings.get("request_id")
        if id_code is not None and rid is not None and isinstance(rid.expr, n.Name):
            # the id's field directly: a reply whose layout has no id simply does not carry it
            w(f"f.{rid.expr.name} = {id_code}")
        elif id_code is not None and rid is not None:  # in a record value or a map
            w(f"f.set_request_id({id_code})")
        w(f"return {ret}")
        return w.text(base)

    def answer_body(self) -> str:
        """``local_answer``: the frame of the first ``answer when`` whose test holds for
        ``request`` (None when none does)."""
        tests = [r.test for r in self.s.answers]
        uses = Counter(x.name for t in tests for x in _walk(t, into_lets=False)
                       if isinstance(x, n.LetRef))  # fmt: skip
        shared = frozenset(let.name for let in self.s.lets if uses[let.name] > 1)
        ex = Exprs(self.c, self.mod, lambda name: f"request.{name}",
                   direction="request.direction", obj="request", let_locals=shared)  # fmt: skip
        w = Code()
        for let in self.s.lets:
            if let.name in shared:
                w(f"let_{let.name} = request._let_{let.name}()")
        for r in self.s.answers:
            w(f"if {ex(r.test)}:  # line {r.pos.line}").indent()
            answer = self.template_body(
                r.answer, "RESPONSE", "request.get_request_id()", f"f, {r.close}", base=0
            )
            for line in answer.splitlines():
                w(line)
            w.dedent()
        w("return None")
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
                value = "[]" if f.many else "None"
            out.append((name, value))
        for t in self.targets:
            out.append((f"_state_{t}", "1"))
            out.append((f"_at_{t}", "0"))
        out.append(("length", "0"))
        if self.id_field is not None:
            out.append(("_ido", "-1"))  # built, not decoded: no bytes to patch
        if self.c.uses_direction:
            out.append(("direction", "None"))
        if self.c.uses_first:
            out.append(("first", "False"))
        return out
