"""Check a spec tree: names, references, widths, semantics, status map. Produces a ``Checked``
symbol table that the planner uses; every problem is a SpecError at the offending position."""

from __future__ import annotations

import inspect
import keyword
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from protoc_x.runtime import api

from . import nodes as n
from .diagnostics import Pos, SpecError, combined  # noqa: F401 (Pos re-exported)

#: names a field may not take: they are the frame's API or the generated code's own
RESERVED = {
    "encode", "length", "direction", "first", "protocol", "request", "frame", "field_values",
    "blank",
    "self", "null", "true", "false", "FIELD_NAMES", "FIELD_ENUMS",
    "get_request_id", "set_request_id", "get_stream_type", "is_heartbeat", "is_goaway",
    "get_timeout", "get_status", "get_service", "get_method", "get_headers", "get_header",
    "set_header", "del_header", "get_body", "set_body",
}  # fmt: skip
#: every public member of the frame class a spec's fields become attributes of
RESERVED |= {name for name in dir(api.XFrame) if not name.startswith("_")}
RESERVED |= {"patch_request_id"}
#: the frame API's verbs: a field named like a method, present or future, is refused
RESERVED_PREFIXES = ("get_", "set_", "del_")
#: the largest constant size or element count of a field (a frame waits for its bytes)
MAX_SIZE = 1 << 24
#: the furthest byte a detect probe may read (the codec waits for that many bytes)
MAX_DETECT_OFFSET = 1024
SEMANTIC_BINDINGS = ("request_id", "timeout_ms", "status", "body", "service", "method", "headers")
STREAM_KINDS = ("request", "oneway", "quiet", "response")
POOLS = ("multiplex", "pingpong", "pipeline", "session")
TEMPLATE_CONTEXTS = ("ping", "reply", "error_response", "success_response")
TEMPLATE_PARAMS = {"error_response": {"status", "message"}, "ping": {"id"}}
BUILTINS = {"len": 1, "sizeof": 1, "crc32": 1, "int": 1, "name": 1, "before": 2, "after": 2,
            "lower": 1, "words": 1, "char": 1}  # fmt: skip


@dataclass
class FieldInfo:
    """One named field of the frame or of an ``inside`` layout."""

    name: str
    kind: str  # int | enum | bits | bytes | string | map | ext
    node: object  # n.Field or n.BitField
    pos: Pos
    enum: str | None = None
    owner: str | None = None  # None: the frame; else the bytes field an inside layout reads
    int_type: n.IntType | None = None
    ext: object | None = None  # the field-type class for ext fields
    count: bool = False  # sized by element count: len() is a count
    window: bool = False  # one field-type value filling the bytes its size gives (json.object[n])
    paths: list = field(default_factory=list)  # branch paths it appears on

    @property
    def many(self) -> bool:
        """A list of field-type values (``T[count n]``, or as many as fill ``T[n]``)."""
        return self.kind == "ext" and self.node.type.size is not None and not self.window


@dataclass
class Checked:
    spec: n.Protocol
    enums: dict[str, n.Enum]
    fields: dict[str, FieldInfo]
    bindings: dict[str, n.Binding]
    uses_direction: bool
    body_targets: dict[str, list[n.Inside]]
    modules: set[str] = field(default_factory=set)
    #: record name → its own symbol table (a record's fields are its own namespace)
    records: dict[str, "Checked"] = field(default_factory=dict)
    record: n.Record | None = None  # set on a record's own table
    #: header bindings whose value may be a list (every key of a command): the frame gives
    #: them all by get_header_values, the first by get_header
    list_headers: frozenset = frozenset()
    #: the layouts or semantics read ``first`` (a connection's first frame in its direction):
    #: the decoder takes it and the frame keeps it
    uses_first: bool = False
    #: the ``+`` of text (by the node's id), compiled to runtime.api's join_text
    text_joins: frozenset = frozenset()
    let_enums: dict = field(default_factory=dict)  # let name → the enum of its value

    def record_field_enum(self, name: str) -> str | None:
        return _record_field_enum(self.records, name)


def _record_field_enum(tables: dict, name: str) -> str | None:
    """The enum of the record fields called ``name`` (for a member on the other side of ==);
    None when no such field has one, or when records give it different enums (the checker
    refuses a member name there)."""
    enums = {t.fields[name].enum for t in tables.values() if name in t.fields}
    return enums.pop() if len(enums) == 1 else None


#: the deepest bound a record that contains itself may declare
MAX_RECORD_DEPTH = 256


class RecordType:
    """A record used as a field type: what the checker and the planner ask of a field type
    (its value, and that it finds its own end); the generated module holds its code."""

    PARAMS: tuple[str, ...] = ()
    PARAM_TYPES: tuple[type, ...] = ()
    VALUE = "record"

    def __init__(self, record: n.Record):
        self.record = record

    def measure(self, buf, pos, ctx=None):  # (generated per record: see emit/records.py)
        raise NotImplementedError


def _library(name: str, pos: Pos | None = None):
    """The field-type library ``name``, built in or a plug-in's (runtime.fieldtypes.library),
    None when there is none; a plug-in that is refused is a SpecError at ``pos``."""
    from protoc_x.runtime import fieldtypes

    if name == "record":  # (a spec's own records: ``record.Name``)
        return None
    try:
        return fieldtypes.library(name)
    except api.PluginError as e:
        raise SpecError(pos or Pos(1, 1), str(e)) from None


def _library_names(pos: Pos) -> list[str]:
    """The libraries a spec may name, for a message."""
    from protoc_x.runtime import fieldtypes

    try:
        return [name for name in fieldtypes.library_names() if name != "texts"]
    except api.PluginError as e:
        raise SpecError(pos, str(e)) from None


def _walk_expr(e, into_lets: bool = True) -> Iterator:
    """``e`` and every expression in it (with ``into_lets`` False, a let's use but not the
    let's own expression)."""
    yield e
    if not into_lets and isinstance(e, n.LetRef):
        return
    for attr in (
        "obj",
        "key",
        "start",
        "stop",
        "step",
        "operand",
        "left",
        "right",
        "item",
        "test",
        "then",
        "orelse",
        "expr",
    ):  # fmt: skip (expr: a let's)
        sub = getattr(e, attr, None)
        if sub is not None:
            yield from _walk_expr(sub, into_lets)
    for sub in getattr(e, "options", ()) + getattr(e, "args", ()) + getattr(e, "values", ()):
        yield from _walk_expr(sub, into_lets)


def check_identifier(name: str, pos: Pos, what: str) -> None:
    if name.startswith("_"):
        raise SpecError(
            pos, f"{what} {name!r} may not start with '_' (reserved for generated code)"
        )
    # (the grammar's NAME is [A-Za-z_][A-Za-z0-9_]*: with no leading '_', an identifier)
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) and name != "type":
        raise SpecError(pos, f"{what} {name!r} is a Python keyword")


def check_protocol_name(name: str, pos: Pos) -> None:
    """A protocol's name: lowercase letters, digits and '_', not a Python keyword (``protoc-x
    new`` holds a plug-in's name to it too)."""
    check_identifier(name, pos, "protocol name")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise SpecError(pos, f"protocol name {name!r} must be lowercase letters, digits, '_'")


def _check_field_name(name: str, pos: Pos) -> None:
    check_identifier(name, pos, "field name")
    if name in RESERVED:
        raise SpecError(pos, f"field name {name!r} is reserved for the frame API")
    if name.startswith(RESERVED_PREFIXES):
        raise SpecError(
            pos,
            f"field name {name!r} is reserved for the frame API (names starting with "
            f"{', '.join(RESERVED_PREFIXES)} are methods)",
        )


def _is_request(e: n.Attr) -> bool:
    """``request.<field>`` (a template's read of the request), not a record value's field."""
    return isinstance(e.obj, n.Name) and e.obj.name == "request"


def _is_call(e, func: str) -> bool:
    return isinstance(e, n.Call) and e.module is None and e.func == func


def _linear(e) -> tuple[dict[str, int], int] | None:
    """``e`` as coefficients of field names (``len(x)`` counts as x) plus a constant, when it is
    a sum of them; None otherwise."""
    if isinstance(e, n.IntLit):
        return {}, e.value
    if isinstance(e, n.Name):
        return {e.name: 1}, 0
    if _is_call(e, "len") and len(e.args) == 1 and isinstance(e.args[0], n.Name):
        return {e.args[0].name: 1}, 0
    if isinstance(e, n.BinOp) and e.op in ("+", "-"):
        a, b = _linear(e.left), _linear(e.right)
        if a is None or b is None:
            return None
        sign = 1 if e.op == "+" else -1
        out = dict(a[0])
        for name, c in b[0].items():
            out[name] = out.get(name, 0) + sign * c
        return out, a[1] + sign * b[1]
    return None


def _recomputable(e, top: bool = True) -> bool:
    """The shapes of a recomputed value whose decoded and re-encoded values agree: crc32(frame),
    sizeof(frame) ± N, or len(x) + len(y) ... ± N (at least one len)."""
    if top and (_is_call(e, "crc32") or _is_call(e, "sizeof")):
        return True
    if top and isinstance(e, n.BinOp) and e.op in ("+", "-") and _is_call(e.left, "sizeof"):
        return isinstance(e.right, n.IntLit)

    def lengths(x) -> bool:
        if _is_call(x, "len") or isinstance(x, n.IntLit):
            return True
        if isinstance(x, n.BinOp) and x.op == "+":
            return lengths(x.left) and lengths(x.right)
        return (
            isinstance(x, n.BinOp)
            and x.op == "-"
            and lengths(x.left)
            and (isinstance(x.right, n.IntLit))
        )

    return lengths(e) and any(_is_call(x, "len") for x in _walk_expr(e))


def _type_text(size) -> str:
    if isinstance(size, n.SizeRest):
        return "[rest]"
    if size is None:
        return "has no size"
    return "is sized by other fields"


def _int_shape(t: n.IntType | None) -> tuple | None:
    """What an integer type reads: a name on two branches must read the same on both (the
    codec keeps one decoder and one encoder per name)."""
    return None if t is None else (t.width, t.signed, t.order)


def fits(value: int, t: n.IntType) -> bool:
    if t.signed:
        return -(1 << (t.width - 1)) <= value < (1 << (t.width - 1))
    return 0 <= value < (1 << t.width)


class Checker:
    def __init__(self, spec: n.Protocol, stem: str | None):
        self.spec = spec
        self.stem = stem
        self.enums: dict[str, n.Enum] = {}
        self.fields: dict[str, FieldInfo] = {}
        self.modules: set[str] = set()
        self.read_order: list[str] = []
        self.len_fields: list[tuple[n.Field, list]] = []  # recomputed fields using len()
        self.records: dict[str, n.Record] = {r.name: r for r in spec.records}
        self.record_tables: dict[str, Checked] = {}
        self.in_record: n.Record | None = None  # checking a record's layout, not the frame's
        self.list_headers: set[str] = set()  # (filled by Types)
        self.text_joins: set[int] = set()  # ids of the '+' nodes that join text (Types)
        self.let_enums: dict[str, str | None] = {}  # let name → the enum of its value
        self.again: list[FieldInfo] = []  # a field's declarations after its first
        self.errors: list[SpecError] = []  # (collected by ``each``, raised by ``barrier``)
        self.libraries: dict[str, object] = {}  # field-type libraries found (``library``)

    def library(self, name: str, pos: Pos):
        """:func:`_library`, found once per spec."""
        if name not in self.libraries:
            self.libraries[name] = _library(name, pos)
        return self.libraries[name]

    # ---- errors: every independent one in one run -----------------------------------
    @contextmanager
    def each(self):
        """Check one independent part (a statement, an enum, a field, a binding): its error
        is kept and checking goes on with the next part."""
        try:
            yield
        except SpecError as e:
            self.errors.append(e)

    def barrier(self) -> None:
        """The end of a phase: the next one reads what this one declared, so after an error
        it would only report the same mistake again (an unknown field...); stop here."""
        if self.errors:
            raise combined(self.errors)

    # ---- entry point ---------------------------------------------------------------
    def run(self) -> Checked:
        s = self.spec
        # phase 1: the protocol's statements, enums, records and probes, each on its own
        with self.each():
            self.protocol_name()
        seen: dict[str, Pos] = {}
        for st in s.statements:
            if st.kind in n.REPEATABLE:
                continue
            if st.kind in seen:
                self.errors.append(
                    SpecError(
                        st.pos,
                        f"duplicate {st.kind} statement (first at line {seen[st.kind].line})",
                    )
                )
                continue
            seen[st.kind] = st.pos
        # (a value other than the default comes from its statement: the error points at it)
        if s.byte_order not in ("big", "little"):
            self.errors.append(
                SpecError(
                    seen["byte_order"], f"byte_order must be big or little, not {s.byte_order!r}"
                )
            )
        if s.pool not in POOLS:
            self.errors.append(
                SpecError(
                    seen["pool"],
                    f"pool must be multiplex, pingpong, pipeline or session, not {s.pool!r}",
                )
            )
        if not s.frame:
            self.errors.append(SpecError(s.pos, "the protocol has no frame layout"))
        for e in s.enums:
            with self.each():
                self.enum(e)
        with self.each():
            self.check_records()
        for p in s.detect:
            with self.each():
                self.probe(p)
        # phase 2: the frame's fields, each declared on its own
        self.layout(s.frame, owner=None, path=())
        self.barrier()
        # a frame's direction is needed when its layout, its stream type or any other
        # semantic reads it: then the decoder takes it and the frame keeps it
        semantic = [r.test for r in s.stream if r.test is not None]
        semantic += [b.expr for b in s.bindings + s.header_bindings]
        semantic += [r.test for r in s.answers]
        semantic += [s.heartbeat.test] if s.heartbeat is not None else []
        semantic += [s.goaway] if s.goaway is not None else []
        semantic += [item.test for item in self._all_items(s.frame) if isinstance(item, n.IfBlock)]
        for inside in s.insides:  # an inside layout is chosen and read on a frame, too
            semantic.append(inside.test)
            semantic += [i.test for i in self._all_items(inside.items) if isinstance(i, n.IfBlock)]
        names = {x.name for e in semantic for x in _walk_expr(e) if isinstance(x, n.Name)}
        uses_direction = "direction" in names  # (no field has that name)
        uses_first = "first" in names  # (nor that one)
        if uses_first and s.pool != "session":
            self.errors.append(
                SpecError(
                    seen.get("pool", s.pos),
                    "a layout of a connection's first frame needs 'pool session': on a "
                    "connection clients share, a client's first frame is not the upstream "
                    "connection's first",
                )
            )
        body_targets: dict[str, list[n.Inside]] = {}
        for inside in s.insides:
            with self.each():
                self.inside(inside, body_targets)
        self.barrier()
        # phase 3: expressions (inside layouts need every field known first), each on its own
        with self.each():
            self.tags()
        failed: set[str] = set()  # fields whose sizes or values are wrong
        for info in list(self.fields.values()) + self.again:
            before = len(self.errors)
            with self.each():
                self.field_exprs(info)
            if len(self.errors) > before:
                failed.add(info.name)
        for f, targets in self.len_fields:
            # (a recomputed length needs the sizes it matches right: else a second error)
            if f.name not in failed and not failed & {t.name for t in targets}:
                with self.each():
                    self._sizes(f, targets)
        for item in self._all_items(s.frame):
            if isinstance(item, n.IfBlock):
                with self.each():
                    self.expr(item.test, ctx="condition")
        for inside in s.insides:
            for item in self._all_items(inside.items):
                if isinstance(item, n.IfBlock):
                    with self.each():
                        self.expr(item.test, ctx="frame")
        before = len(self.errors)
        for let in s.lets:  # (each may use those before it: the parser resolved them)
            with self.each():
                check_identifier(let.name, let.pos, "let name")
                self.let_enums[let.name] = self.expr(let.expr, ctx="frame")
        if len(self.errors) > before:
            self.barrier()  # (bindings read the lets' types)
        bindings = self.semantics()
        self.barrier()
        Types(self).run()
        return Checked(
            s,
            self.enums,
            self.fields,
            bindings,
            uses_direction,
            body_targets,
            self.modules,
            self.record_tables,
            list_headers=frozenset(self.list_headers),
            uses_first=uses_first,
            text_joins=frozenset(self.text_joins),
            let_enums=self.let_enums,
        )

    def inside(self, inside: n.Inside, body_targets: dict[str, list[n.Inside]]) -> None:
        target = self.fields.get(inside.target)
        if target is None or target.owner is not None:
            raise SpecError(inside.pos, f"unknown frame field {inside.target!r}")
        whole = (  # a field type whose one value is bytes (a thrift struct) holds one too
            target.kind == "ext" and target.ext.VALUE == "bytes" and not target.many
        )
        if target.kind != "bytes" and not whole:
            raise SpecError(
                inside.pos, f"'inside' needs a bytes field; {inside.target!r} is {target.kind}"
            )
        self.expr(inside.test, ctx="frame")
        tests = [inside.test]
        tests += [i.test for i in self._all_items(inside.items) if isinstance(i, n.IfBlock)]
        for x in (x for test in tests for x in _walk_expr(test)):
            if isinstance(x, n.Name) and x.name == "first":
                raise SpecError(
                    x.pos, "an 'inside' layout does not depend on first (the frame's does)"
                )
        for x in _walk_expr(inside.test):
            if isinstance(x, n.Name) and x.name in {inside.target} | {
                i.name for i in self.fields.values() if i.owner is not None
            }:
                raise SpecError(
                    x.pos,
                    f"an 'inside' condition reads other frame fields, not {x.name!r} "
                    "(reading it needs the layout this condition chooses)",
                )
        body_targets.setdefault(inside.target, []).append(inside)
        self.layout(inside.items, owner=inside.target, path=(("inside", id(inside)),))

    def protocol_name(self) -> None:
        s = self.spec
        check_protocol_name(s.name, s.pos)
        if self.stem is not None and s.name != self.stem:
            raise SpecError(
                s.pos, f"protocol name {s.name!r} differs from its file name {self.stem!r}"
            )

    def probe(self, p: n.Probe) -> None:
        if p.offset + p.type.nbytes > MAX_DETECT_OFFSET:
            raise SpecError(
                p.pos,
                f"detect probe at offset {p.offset} reads past the first {MAX_DETECT_OFFSET} "
                "bytes of a frame",
            )
        for v in p.values:
            if not fits(v, p.type):
                raise SpecError(p.pos, f"detect value {v:#x} does not fit in {p.type.width} bits")

    # ---- records -------------------------------------------------------------------
    def check_records(self) -> None:
        from .backends.python.code import API_NAMES  # (the names a generated module imports)

        stem = "".join(part.capitalize() for part in self.spec.name.split("_"))
        taken = set(API_NAMES) | {"PROTOCOL", "API_VERSION", f"{stem}Frame", f"{stem}Protocol"}
        seen: dict[str, n.Record] = {}
        for r in self.spec.records:
            check_identifier(r.name, r.pos, "record name")
            if not r.name[0].isupper():
                raise SpecError(
                    r.pos, f"a record's name starts with a capital letter, not {r.name!r}"
                )
            if r.name in taken:
                raise SpecError(
                    r.pos, f"record name {r.name!r} is a name the generated module uses"
                )
            if r.name in seen:
                raise SpecError(
                    r.pos, f"duplicate record {r.name!r} (first at line {seen[r.name].pos.line})"
                )
            if r.name in self.enums:
                raise SpecError(r.pos, f"{r.name!r} is an enum's name too")
            seen[r.name] = r
        uses = {r.name: self._record_refs(r.items) for r in self.spec.records}
        for r in self.spec.records:
            reach, todo = set(), list(uses[r.name])
            while todo:
                x = todo.pop()
                if x in reach or x not in uses:
                    continue
                reach.add(x)
                todo.extend(uses[x])
            if r.name in reach and r.depth is None:
                raise SpecError(
                    r.pos,
                    f"record {r.name!r} contains itself: bound its nesting (record {r.name} "
                    "depth 32)",
                )
            if r.name not in reach and r.depth is not None:
                raise SpecError(
                    r.pos, f"a depth bounds a record that contains itself; {r.name!r} does not"
                )
            if r.depth is not None and not 1 <= r.depth <= MAX_RECORD_DEPTH:
                raise SpecError(
                    r.pos, f"a record's depth must be 1..{MAX_RECORD_DEPTH}, not {r.depth}"
                )
        for r in self.spec.records:
            self.record_tables[r.name] = self.check_record(r)

    def _record_refs(self, items) -> set[str]:
        out = set()
        for item in self._all_items(items):
            t = getattr(item, "type", None)
            if isinstance(t, n.ExtType) and t.ref.module == "record":
                out.add(t.ref.name)
        return out

    def check_record(self, r: n.Record) -> Checked:
        """A record's layout, checked like a frame's in a namespace of its own: its sizes and
        values read its own earlier fields, its conditions test its own integers."""
        sub = Checker(self.spec, None)
        sub.enums, sub.records, sub.in_record = self.enums, self.records, r
        sub.record_tables = self.record_tables  # (filled as records are checked)
        sub.layout(r.items, owner=None, path=())
        sub.barrier()
        sub.tags()
        for info in list(sub.fields.values()) + sub.again:
            with sub.each():
                sub.field_exprs(info)
        sub.barrier()
        for f, targets in sub.len_fields:
            sub._sizes(f, targets)
        blocks = {}  # field → the list of items it sits in (a recomputed value and what it
        # measures are written in one pass: they share a block)

        def place(items) -> None:
            for item in items:
                if isinstance(item, n.IfBlock):
                    place(item.body)
                    place(item.orelse)
                elif isinstance(item, n.Field):
                    blocks[item.name] = id(items)

        place(r.items)
        for f, targets in sub.len_fields:
            for t in targets:
                if blocks[t.name] != blocks[f.name]:
                    raise SpecError(
                        t.pos,
                        f"in a record, {f.name!r} and the {t.name!r} it measures must be in the "
                        "same block (not one inside an if the other is outside of)",
                    )
        for item in self._all_items(r.items):
            if isinstance(item, n.IfBlock):
                sub.expr(item.test, ctx="condition")
                for x in _walk_expr(item.test):
                    if not isinstance(x, n.Name):
                        continue
                    if x.name in ("direction", "first"):
                        raise SpecError(x.pos, f"a record's layout does not depend on {x.name}")
                    info = sub.fields.get(x.name)
                    if info is not None and not (
                        info.kind in ("int", "enum", "bits")
                        or (info.kind == "ext" and info.ext.VALUE == "int" and not info.count)
                    ):
                        raise SpecError(
                            x.pos, f"a record's condition tests integers; {x.name!r} is {info.kind}"
                        )
        Types(sub).sizes()
        self.modules |= sub.modules
        return Checked(self.spec, self.enums, sub.fields, {}, False, {}, sub.modules, record=r)

    def tags(self) -> None:
        """Tagged field types (tars tags, thrift field ids) are found by tag: two fields of one
        layout with the same tag would read the same bytes and write them twice."""
        seen: dict[tuple, FieldInfo] = {}
        for info in self.fields.values():
            if info.kind != "ext":
                continue
            tag = getattr(info.ext, "tag", getattr(info.ext, "id", None))
            if not isinstance(tag, int):
                continue
            key = (info.owner, info.node.type.ref.module, tag)
            old = seen.get(key)
            if old is not None and not all(
                self._exclusive(p, q) for p in old.paths for q in info.paths
            ):
                raise SpecError(
                    info.node.type.ref.pos,
                    f"tag {tag} is also the tag of {old.name!r} (line {old.pos.line})",
                )
            seen.setdefault(key, info)

    def _all_items(self, items) -> Iterator:
        for item in items:
            yield item
            if isinstance(item, n.IfBlock):
                yield from self._all_items(item.body)
                yield from self._all_items(item.orelse)

    # ---- declarations --------------------------------------------------------------
    def enum(self, e: n.Enum) -> None:
        check_identifier(e.name, e.pos, "enum name")
        if e.name in self.enums:
            raise SpecError(e.pos, f"duplicate enum {e.name!r}")
        self.enums[e.name] = e  # (known even when a member is wrong: fields using it check)
        names: set[str] = set()
        values: set[int] = set()
        for m in e.members:
            check_identifier(m.name, m.pos, "enum member")
            if m.name in names:
                raise SpecError(m.pos, f"duplicate enum member {m.name!r} in {e.name}")
            if m.value in values:
                raise SpecError(m.pos, f"duplicate enum value {m.value} in {e.name}")
            if not fits(m.value, e.type):
                raise SpecError(
                    m.pos, f"enum value {m.value} of {m.name!r} overflows {e.type.width} bits"
                )
            names.add(m.name)
            values.add(m.value)
        self.enums[e.name] = e

    def _ext_class(self, ref: n.ExtRef):
        if ref.module == "record":
            record = self.records.get(ref.name)
            if record is None:
                raise SpecError(ref.pos, f"unknown record {ref.name!r}")
            return RecordType(record)
        module = self.library(ref.module, ref.pos)
        if ref.module == "texts" and ref.spelled is None:  # (the language's own types)
            raise SpecError(
                ref.pos,
                'text types are spelled bytes[until "..."], string[until "..."], '
                'decimal[until "..."] and "token" (docs/language.md)',
            )
        if module is None:
            raise SpecError(
                ref.pos,
                f"unknown field-type library {ref.module!r} (have: {', '.join(_library_names(ref.pos))})",
            )
        cls = module.TYPES.get(ref.name)
        if cls is None:
            raise SpecError(ref.pos, f"unknown field type {ref.module}.{ref.name}")
        params, kinds = cls.PARAMS, cls.PARAM_TYPES
        if len(ref.args) != len(params):
            raise SpecError(
                ref.pos,
                f"{ref.module}.{ref.name} takes {len(params)} argument(s) ({', '.join(params)}), got {len(ref.args)}",
            )
        for arg, kind, pname in zip(ref.args, kinds, params):
            if not isinstance(arg, kind):
                raise SpecError(
                    ref.pos, f"{ref.module}.{ref.name}: {pname} must be {kind.__name__}"
                )
        try:  # the generated module builds the same object when it loads: build it now
            instance = cls(*ref.args)
        except (ValueError, TypeError, OverflowError) as e:
            what = ref.spelled or f"{ref.module}.{ref.name}"
            raise SpecError(
                ref.pos, str(e) if str(e).startswith(what) else f"{what}: {e}"
            ) from None
        self.modules.add(ref.module)
        return instance

    def _declare(self, info: FieldInfo, path: tuple) -> None:
        _check_field_name(info.name, info.pos)
        old = self.fields.get(info.name)
        if old is None:
            info.paths.append(path)
            self.fields[info.name] = info
            return
        # the same name may appear on exclusive branches (a request and a response layout)
        # (a frame field and an inside field, or fields of two insides, are never exclusive)
        exclusive = all(self._exclusive(p, path) for p in old.paths)
        if not exclusive:
            raise SpecError(
                info.pos, f"duplicate field {info.name!r} (first at line {old.pos.line})"
            )
        same_ext = old.ext is None or (
            type(old.ext) is type(info.ext) and old.ext.VALUE == info.ext.VALUE
        )
        if (
            old.kind != info.kind
            or old.enum != info.enum
            or not same_ext
            or _int_shape(old.int_type) != _int_shape(info.int_type)
        ):
            raise SpecError(
                info.pos,
                f"field {info.name!r} has another type on another branch (line {old.pos.line})",
            )
        old.paths.append(path)
        self.again.append(info)  # (its own sizes and value are checked too)

    @staticmethod
    def _exclusive(a: tuple, b: tuple) -> bool:
        for x, y in zip(a, b):
            if x != y:
                return x[0] == y[0] and x[0] not in ("inside",)
        return False

    def layout(self, items, owner: str | None, path: tuple) -> None:
        for item in items:
            if isinstance(item, n.IfBlock):
                self.layout(item.body, owner, path + ((id(item), True),))
                self.layout(item.orelse, owner, path + ((id(item), False),))
            elif isinstance(item, n.Bits):
                with self.each():
                    self.bits(item, owner, path)
            elif isinstance(item, n.Fail):
                if owner is not None:
                    self.errors.append(
                        SpecError(
                            item.pos, "'fail' is for frames and records, not 'inside' layouts"
                        )
                    )
            else:
                with self.each():
                    self.field_decl(item, owner, path)

    def bits(self, b: n.Bits, owner, path) -> None:
        total = sum(f.width for f in b.fields)
        if total != b.type.width:
            raise SpecError(b.pos, f"bit fields add up to {total} bits, not {b.type.width}")
        for f in b.fields:
            if f.width < 1:
                raise SpecError(f.pos, "a bit field is at least 1 bit wide")
            if f.enum is not None:
                e = self.enums.get(f.enum)
                if e is None:
                    raise SpecError(f.pos, f"unknown enum {f.enum!r}")
                for m in e.members:
                    if not 0 <= m.value < (1 << f.width):
                        raise SpecError(
                            f.pos,
                            f"enum {f.enum} value {m.value} overflows the {f.width}-bit field {f.name!r}",
                        )
            if f.const is not None and not 0 <= f.const < (1 << f.width):
                raise SpecError(
                    f.pos, f"constant {f.const:#x} overflows the {f.width}-bit field {f.name!r}"
                )
            kind = "enum" if f.enum else "bits"
            self._declare(FieldInfo(f.name, kind, f, f.pos, enum=f.enum, owner=owner), path)

    def field_decl(self, f: n.Field, owner, path) -> None:
        t = f.type
        info = FieldInfo(f.name, "", f, f.pos, owner=owner)
        if isinstance(t, n.IntType):
            info.kind, info.int_type = "int", t
        elif isinstance(t, n.EnumRef):
            e = self.enums.get(t.name)
            if e is None:
                raise SpecError(t.pos, f"unknown type {t.name!r}")
            info.kind, info.enum, info.int_type = "enum", t.name, e.type
        elif isinstance(t, n.BytesType):
            info.kind = "bytes"
        elif isinstance(t, n.StringType):
            info.kind = "string"
        elif isinstance(t, n.MapType):
            info.kind = "map"
            if isinstance(t.length, n.ExtRef):
                cls = self._ext_class(t.length)
                if cls.VALUE != "int":
                    raise SpecError(t.length.pos, "a map's length prefix must be an integer type")
            elif t.length.odd:
                raise SpecError(
                    t.length.pos, "a map's length prefix must be 8, 16, 32 or 64 bits wide"
                )
        elif isinstance(t, n.ExtType):
            info.kind = "ext"
            info.ext = self._ext_class(t.ref)
        size = getattr(t, "size", None)
        if info.kind == "ext" and self.in_record is not None and t.ref.module != "record":
            if self.library(t.ref.module, t.pos).new_context() is not None:
                # (a record's values are read one by one: the frame's state, hessian2's class
                # definitions or TARS's, would not be shared between them)
                raise SpecError(
                    t.pos,
                    f"{t.ref.module} values keep per-message state that a record does not carry "
                    "yet: put this field in the frame's layout",
                )
        if info.kind == "ext" and getattr(info.ext, "WINDOW", False):
            # a value that cannot tell where it ends (a JSON object): the frame must say
            if not isinstance(size, (n.SizeBytes, n.SizeRest)):
                spelled = f"{t.ref.module}.{t.ref.name}"
                raise SpecError(
                    t.pos,
                    f"{spelled} fills the bytes it is given: write {spelled}[n] with n its size "
                    f"in bytes, or {spelled}[rest]",
                )
            info.window = True
        if isinstance(size, n.SizeUntil):
            raise SpecError(size.pos, "only bytes, string and decimal end at a delimiter (until)")
        if isinstance(size, n.SizeCount):
            if info.kind in ("bytes", "string"):
                raise SpecError(size.pos, f"{info.kind} are sized in bytes, not by count")
            info.count = True
        if f.nullable and info.count and isinstance(size.expr, n.Name):
            counter = self.fields.get(size.expr.name)
            if counter is not None and counter.int_type is not None and not counter.int_type.signed:
                raise SpecError(
                    size.expr.pos,
                    f"a nullable list is null when its count is -1: {size.expr.name!r} must be "
                    "signed (or a decimal)",
                )
        if (
            f.nullable
            and info.kind not in ("bytes", "string")
            and not (info.kind == "ext" and info.count)
        ):
            raise SpecError(
                f.pos, "only bytes, string and counted fields (a count of -1) can be nullable"
            )
        if f.value is not None and info.kind not in ("int", "enum"):
            # a field type of integers (a varint) may be recomputed, as a sum of len() terms
            if not (info.kind == "ext" and info.ext.VALUE == "int" and not info.count):
                raise SpecError(
                    f.value.pos,
                    f"only integer fields can have a value, {f.name!r} is {info.kind}",
                )
            if (
                getattr(t, "size", None) is not None
                or not any(_is_call(e, "len") for e in _walk_expr(f.value))
                or any(_is_call(e, "sizeof") or _is_call(e, "crc32") for e in _walk_expr(f.value))
            ):
                raise SpecError(
                    f.value.pos,
                    f"the value of {f.name!r} ({t.ref.spelled or t.ref.module + '.' + t.ref.name}) must be a sum of "
                    "len() terms and numbers",
                )
        if (
            isinstance(f.value, n.IntLit)
            and info.int_type
            and not fits(f.value.value, info.int_type)
        ):
            raise SpecError(
                f.value.pos,
                f"constant {f.value.value:#x} overflows {info.int_type.width}-bit field {f.name!r}",
            )
        self._declare(info, path)

    def field_exprs(self, info: FieldInfo) -> None:
        f = info.node
        if not isinstance(f, n.Field):
            return
        size = getattr(f.type, "size", None)
        if isinstance(size, (n.SizeBytes, n.SizeCount)):
            # (no direction in a size: the decoder reads sizes before it knows the frame)
            self.expr(size.expr, ctx="size", before=info)
        if isinstance(size, n.SizeRest) and info.owner is None:
            if not self._has_frame_size():
                raise SpecError(size.pos, "'rest' needs a frame length field (= sizeof(frame) ...)")
        if f.value is not None and not isinstance(f.value, n.IntLit):
            if isinstance(f.value, n.Name) and info.kind == "enum":
                self.enum_member(info.enum, f.value)
                return
            self.expr(f.value, ctx="recompute", owner=info.owner)
            if not _recomputable(f.value):
                raise SpecError(
                    f.value.pos,
                    f"the value of {f.name!r} must be a constant, a sum of len() terms and "
                    "numbers, sizeof(frame) ± N or crc32(frame)",
                )
            targets = [
                e.args[0]
                for e in _walk_expr(f.value)
                if isinstance(e, n.Call) and e.func == "len" and e.module is None
            ]
            if targets:
                self.len_fields.append((f, targets))
            for e in _walk_expr(f.value):
                if isinstance(e, n.Call) and e.func == "crc32" and e.module is None:
                    if info.int_type.width != 32:  # (an int or an enum: it has a value)
                        raise SpecError(f.pos, "a crc32 field must be 32 bits wide")

    def _sizes(self, f: n.Field, targets: list[n.Name]) -> None:
        """``f = len(x) ...``: one of the x must be sized by f, so that the length the decoder
        reads is the length the encoder writes back (an unmodified frame re-encodes to its
        bytes)."""
        for target in targets:
            size = self.fields[target.name].node.type.size
            if isinstance(size, (n.SizeBytes, n.SizeCount)) and any(
                isinstance(x, n.Name) and x.name == f.name for x in _walk_expr(size.expr)
            ):
                self._gives_back(f)
                return
        target = targets[0]  # (never empty: f's value has a len())
        size = self.fields[target.name].node.type.size
        raise SpecError(
            target.pos,
            f"{f.name!r} = len({target.name}) but {target.name!r} is not sized by "
            f"{f.name!r} ({target.name} {_type_text(size)})",
        )

    def _gives_back(self, f: n.Field) -> None:
        """With every len(x) of ``f``'s value replaced by the size x is read with, the value
        must be ``f`` itself: ``n = len(data) - 1`` beside ``data bytes[n]`` would re-encode
        one less than it read. Sizes that are not sums of fields and numbers are not judged."""
        total: dict[str, int] = {}
        const = 0
        value = _linear(f.value)  # (a sum of len() terms and numbers: always linear)
        for term, coeff in value[0].items():
            size = self.fields[term].node.type.size  # (a len() target: sized)
            if not isinstance(size, (n.SizeBytes, n.SizeCount)):
                return
            form = _linear(size.expr)
            if form is None:
                return
            for name, c in form[0].items():
                total[name] = total.get(name, 0) + coeff * c
            const += coeff * form[1]
        const += value[1]
        total = {name: c for name, c in total.items() if c}
        if total != {f.name: 1} or const:
            back = " + ".join(f"{c}*{name}" if c != 1 else name for name, c in total.items())
            raise SpecError(
                f.value.pos,
                f"{f.name!r} is written back as {back or 0}{const:+d}, not as the {f.name} it "
                f"was read as: its value and the sizes it measures must agree",
            )

    def _has_frame_size(self) -> bool:
        for info in self.fields.values():
            v = getattr(info.node, "value", None)
            if v is not None and any(
                isinstance(e, n.Call) and e.func == "sizeof" for e in _walk_expr(v)
            ):
                return True
        return False

    def enum_member(self, enum: str, name: n.Name) -> int:
        for m in self.enums[enum].members:
            if m.name == name.name:
                return m.value
        raise SpecError(name.pos, f"{name.name!r} is not a member of enum {enum}")

    # ---- expressions ---------------------------------------------------------------
    def expr(
        self,
        e,
        ctx: str,
        before: FieldInfo | None = None,
        owner=None,
        target: FieldInfo | None = None,
    ):
        """Check an expression. ``ctx``: frame | condition | recompute | size | a template kind.
        Returns the enum name of the value when it is an enum field, for member resolution."""
        if isinstance(e, (n.IntLit, n.StrLit, n.Const)):
            return None
        if isinstance(e, n.Name):
            if e.name == "direction" and ctx in ("condition", "frame"):
                return "$direction"
            if e.name == "first" and ctx in ("condition", "frame"):
                return None  # (a boolean: Types checks where it stands)
            info = self.fields.get(e.name)
            if info is None:
                if target is not None and target.enum:
                    self.enum_member(target.enum, e)
                    return None
                raise SpecError(e.pos, f"unknown field {e.name!r}")
            if ctx in TEMPLATE_CONTEXTS:
                raise SpecError(e.pos, f"templates read fields as request.{e.name}")
            if (
                before is not None
                and info.owner == before.owner
                and self._order(info) >= self._order(before)
            ):
                raise SpecError(
                    e.pos,
                    f"field {e.name!r} is read after {before.name!r}: a size may only use earlier fields",
                )
            return info.enum
        if isinstance(e, n.LetRef):
            if ctx != "frame":
                raise SpecError(
                    e.pos,
                    f"let {e.name!r} is read in bindings, headers and stream rules, not here",
                )
            # (a let whose own check failed has no entry: its error is reported already)
            return self.let_enums.get(e.name)
        if isinstance(e, n.Param):
            allowed = TEMPLATE_PARAMS.get(ctx, set())
            if e.name not in allowed:
                raise SpecError(e.pos, f"${e.name} is not available here")
            return None
        if isinstance(e, n.Attr):
            plain = isinstance(e.obj, n.Name) and e.obj.name not in self.fields
            if plain and not (
                _is_request(e) and ctx in ("reply", "error_response", "success_response")
            ):
                raise SpecError(
                    e.pos,
                    "only request.<field> can be read with '.' (in reply and response templates)",
                )
            if not _is_request(e):
                self._values_here(e, ctx)
                self.expr(e.obj, ctx, before, owner)
                # (a field of a record value: Types finds the record and checks the name)
                return self._record_field_enum(e.name)
            info = self.fields.get(e.name)
            if info is None:
                raise SpecError(e.pos, f"unknown field {e.name!r}")
            return info.enum
        if isinstance(e, n.Index):
            self.expr(e.obj, ctx, before, owner)
            # (direction is a name but no field: indexing it was an internal compiler error)
            info = self.fields.get(e.obj.name) if isinstance(e.obj, n.Name) else None
            if info is not None and info.kind == "map" or isinstance(e.key, n.StrLit):
                # a map field, a field type's map (JSON), or a value read from one or a let
                # (Types checks that those are maps)
                nested = isinstance(e.obj, (n.Index, n.LetRef))
                if (
                    info is None
                    and not nested
                    or info is not None
                    and info.kind not in ("map", "ext")
                ):
                    raise SpecError(e.pos, "only maps can be indexed by a string")
                if not isinstance(e.key, n.StrLit):
                    raise SpecError(e.key.pos, "a map key must be a string")
                return None
            # an element of a list (Types checks that it is one, and the index an integer)
            self._values_here(e, ctx)
            self.expr(e.key, ctx, before, owner)
            return None
        if isinstance(e, n.Slice):
            self._values_here(e, ctx)
            for part in (e.obj, e.start, e.stop, e.step):
                if part is not None:
                    self.expr(part, ctx, before, owner)
            return None
        if isinstance(e, n.Unary):
            self.expr(e.operand, ctx, before, owner)
            return None
        if isinstance(e, n.MapLit):
            if ctx not in TEMPLATE_CONTEXTS:
                raise SpecError(e.pos, "a map is written in templates only")
            for v in e.values:
                self.expr(v, ctx, before, owner)
            return None
        if isinstance(e, n.BinOp):
            if e.op in ("==", "!="):
                le = self._side(e.left, e.right, ctx, before, owner)
                re_ = self._side(e.right, e.left, ctx, before, owner)
                if "$direction" in (le, re_):
                    other = e.right if le == "$direction" else e.left
                    if not (isinstance(other, n.Name) and other.name in ("request", "response")):
                        raise SpecError(other.pos, "direction compares with request or response")
                return None
            self.expr(e.left, ctx, before, owner)
            self.expr(e.right, ctx, before, owner)
            return None
        if isinstance(e, n.In):
            enum = self.expr(e.item, ctx, before, owner)
            if enum == "$direction":
                raise SpecError(e.pos, "direction compares with == or != (request or response)")
            for o in e.options:
                if isinstance(o, n.Name) and o.name not in self.fields and enum:
                    self.enum_member(enum, o)
                else:  # (direction here is refused by Types: it is not a value)
                    self.expr(o, ctx, before, owner)
            return None
        if isinstance(e, n.Cond):
            self.expr(e.test, ctx, before, owner)
            a = self.expr(e.then, ctx, before, owner, target)
            self.expr(e.orelse, ctx, before, owner, target)
            return a
        return self.call(e, ctx, before, owner)  # the last kind of expression: n.Call

    @staticmethod
    def _values_here(e, ctx: str) -> None:
        """Record values and lists are read by the routing view and the stream rules (of a
        decoded frame), not by the layout that decodes it."""
        if ctx not in ("frame",) + TEMPLATE_CONTEXTS:
            raise SpecError(
                e.pos,
                "record values and lists are read in bindings, headers and stream rules, "
                "not in a layout's sizes and conditions",
            )

    def _record_field_enum(self, name: str) -> str | None:
        return _record_field_enum(self.record_tables, name)

    def _side(self, e, other, ctx, before, owner):
        if (
            isinstance(e, n.Name)
            and e.name not in self.fields
            and e.name not in ("direction", "first")
        ):
            # an enum member: resolved against the other side's enum
            oenum = None
            if isinstance(other, n.Name) and other.name in self.fields:
                oenum = self.fields[other.name].enum
            elif isinstance(other, n.Attr) and _is_request(other) and other.name in self.fields:
                oenum = self.fields[other.name].enum
            elif isinstance(other, n.Attr) and not _is_request(other):
                oenum = self._record_field_enum(other.name)
                tables = self.record_tables.values()
                if len({t.fields[other.name].enum for t in tables if other.name in t.fields}) > 1:
                    raise SpecError(
                        e.pos,
                        f"records give their field {other.name!r} different types: compare it "
                        "with a number, not an enum member",
                    )
            elif isinstance(other, n.LetRef):
                oenum = self.let_enums.get(other.name)
            elif isinstance(other, n.Name) and other.name == "direction":
                return None
            if oenum is None:
                raise SpecError(e.pos, f"unknown field {e.name!r}")
            self.enum_member(oenum, e)
            return None
        return self.expr(e, ctx, before, owner)

    def _order(self, info: FieldInfo) -> int:
        if not self.read_order:
            self.read_order = list(self.fields)
        return self.read_order.index(info.name)

    def call(self, e: n.Call, ctx, before, owner):
        if e.module is not None:
            module = self.library(e.module, e.pos)
            if module is None or e.func not in module.FUNCTIONS:
                raise SpecError(e.pos, f"unknown function {e.module}.{e.func}")
            self.modules.add(e.module)
            try:
                inspect.signature(module.FUNCTIONS[e.func]).bind(*e.args)
            except TypeError as err:
                raise SpecError(e.pos, f"{e.module}.{e.func}(): {err}") from None
            except ValueError:
                pass  # a builtin without a signature: checked when called
            for a in e.args:
                self.expr(a, ctx, before, owner)
            return None
        if e.func not in BUILTINS:
            raise SpecError(e.pos, f"unknown function {e.func!r}")
        if len(e.args) != BUILTINS[e.func]:
            raise SpecError(e.pos, f"{e.func}() takes {BUILTINS[e.func]} argument(s)")
        if e.func in ("sizeof", "crc32"):
            if ctx != "recompute" or owner is not None or self.in_record is not None:
                raise SpecError(e.pos, f"{e.func}() is only for recomputed frame fields")
            if not (isinstance(e.args[0], n.Name) and e.args[0].name == "frame"):
                raise SpecError(e.args[0].pos, f"{e.func}() takes 'frame'")
            return None
        if e.func == "len":
            a = e.args[0]
            if not isinstance(a, n.Name) or a.name not in self.fields:
                raise SpecError(a.pos, "len() takes a field name")
            if ctx != "recompute":
                raise SpecError(e.pos, "len() is only for recomputed fields")
            info = self.fields[a.name]
            if info.kind in ("int", "enum", "bits"):
                raise SpecError(a.pos, f"len() of an integer field {a.name!r}")
            return None
        if e.func == "name":
            a = e.args[0]
            if (
                not isinstance(a, n.Name)
                or a.name not in self.fields
                or not self.fields[a.name].enum
            ):
                raise SpecError(a.pos, "name() takes an enum field")
            return None
        for a in e.args:
            self.expr(a, ctx, before, owner)
        return None

    # ---- semantics -----------------------------------------------------------------
    def semantics(self) -> dict[str, n.Binding]:
        s = self.spec
        out: dict[str, n.Binding] = {}
        for b in s.bindings:
            with self.each():
                self.binding(b, out)
        keys: set[str] = set()
        for hb in s.header_bindings:
            with self.each():
                if hb.name in keys:
                    raise SpecError(hb.pos, f"duplicate header {hb.name!r}")
                keys.add(hb.name)
                self.expr(hb.expr, ctx="frame")
        with self.each():
            self.stream_rules(out)
        for r in s.answers:
            with self.each():
                self.expr(r.test, ctx="frame")
                self.template(r.answer, "reply")
        if s.heartbeat is not None:
            with self.each():
                self.heartbeat()
        if s.goaway is not None:
            with self.each():
                self.expr(s.goaway, ctx="frame")
        with self.each():
            self.status_map()
        with self.each():
            if s.error_response is not None:
                self.template(s.error_response, "error_response")
            elif not s.no_error_response:
                raise SpecError(
                    s.pos, "the protocol needs an error_response (or 'error_response none')"
                )
        if s.success_response is not None:
            with self.each():
                self.template(s.success_response, "success_response")
        return out

    def binding(self, b: n.Binding, out: dict[str, n.Binding]) -> None:
        if b.name not in SEMANTIC_BINDINGS:
            raise SpecError(
                b.pos, f"unknown binding {b.name!r} (one of: {', '.join(SEMANTIC_BINDINGS)})"
            )
        if b.name in out:
            raise SpecError(b.pos, f"duplicate binding {b.name!r}")
        out[b.name] = b  # (known, even when checking it fails below: no second error)
        self.expr(b.expr, ctx="frame")
        if b.name == "request_id" and not isinstance(b.expr, n.Name):
            self.request_id_path(b.expr)
        elif b.name in ("body", "headers", "request_id"):
            if not isinstance(b.expr, n.Name) or b.expr.name not in self.fields:
                raise SpecError(b.expr.pos, f"{b.name} must name a field")
            info = self.fields[b.expr.name]
            kind = info.kind
            if kind == "ext":
                kind = {"bytes": "bytes", "map": "map", "int": "int"}.get(info.ext.VALUE, "ext")
            want = {"body": "bytes", "headers": "map", "request_id": "int"}[b.name]
            if kind != want and not (want == "int" and kind == "enum"):
                raise SpecError(
                    b.expr.pos, f"{b.name} must be a {want} field, {b.expr.name!r} is {kind}"
                )
            if b.name == "request_id" and info.int_type is not None and info.int_type.odd:
                raise SpecError(
                    b.expr.pos,
                    "the request id must be 8, 16, 32 or 64 bits wide (the proxy rewrites it in place)",
                )

    def stream_rules(self, out: dict[str, n.Binding]) -> None:
        s = self.spec
        if s.pool == "multiplex" and "request_id" not in out:
            raise SpecError(
                s.pos, "a multiplex protocol needs a request_id binding (request_id = <field>)"
            )
        if not s.stream:
            raise SpecError(
                s.pos, "the protocol has no stream block (which frames are requests, responses...)"
            )
        if s.pool in ("pipeline", "session"):  # answers matched by their place in line
            for rule in s.stream:
                if rule.kind == "quiet":
                    raise SpecError(
                        rule.pos,
                        f"a {s.pool} protocol matches answers by position: a quiet request, "
                        "answered only sometimes, would shift every answer after it",
                    )
        for i, rule in enumerate(s.stream):
            if rule.kind not in STREAM_KINDS:
                raise SpecError(
                    rule.pos,
                    f"unknown stream type {rule.kind!r} (one of: {', '.join(STREAM_KINDS)})",
                )
            if rule.test is None:
                if i != len(s.stream) - 1:
                    raise SpecError(rule.pos, "'else' must be the last stream rule")
            else:
                self.expr(rule.test, ctx="frame")
        if s.stream[-1].test is not None:
            raise SpecError(s.stream[-1].pos, "the stream block must end with an 'else' rule")

    def heartbeat(self) -> None:
        hb = self.spec.heartbeat
        self.expr(hb.test, ctx="frame")
        names = set()
        for t in hb.templates:
            if t.name not in ("ping", "reply"):
                raise SpecError(t.pos, f"heartbeat templates are ping and reply, not {t.name!r}")
            if t.name in names:
                raise SpecError(t.pos, f"duplicate {t.name} template")
            names.add(t.name)
            self.template(t, "ping" if t.name == "ping" else "reply")

    def request_id_path(self, e) -> None:
        """``request_id`` in a record value or a map: ``rec.field`` (a record field's integer
        field) or ``m["key"]`` (a map field's value, an integer or its decimal text)."""
        root = e.obj if isinstance(e, (n.Attr, n.Index)) else None
        info = self.fields.get(root.name) if isinstance(root, n.Name) else None
        if info is not None and isinstance(e, n.Attr):
            ref = getattr(info.node.type, "ref", None)
            table = self.record_tables.get(ref.name) if ref and ref.module == "record" else None
            inner = table.fields.get(e.name) if table is not None else None
            if table is not None and not info.many:
                int_ext = inner is not None and inner.kind == "ext" and inner.ext.VALUE == "int"
                if (
                    inner is None
                    or inner.kind not in ("int", "enum")
                    and not (int_ext and not inner.many)
                ):
                    raise SpecError(
                        e.pos, f"the request id must be an integer field of record {ref.name}"
                    )
                if inner.int_type is not None and inner.int_type.odd:
                    raise SpecError(e.pos, "the request id must be 8, 16, 32 or 64 bits wide")
                return
        if info is not None and isinstance(e, n.Index) and isinstance(e.key, n.StrLit):
            if info.kind == "map" or (info.kind == "ext" and info.ext.VALUE == "map"):
                return
        raise SpecError(
            e.pos,
            "request_id must name an integer field, a field of a record field (rec.id) or a "
            'map field\'s key (m["id"])',
        )

    def template(self, t: n.Template, ctx: str) -> None:
        seen = set()
        for a in t.assigns:
            info = self.fields.get(a.name)
            if info is None:
                raise SpecError(a.pos, f"unknown field {a.name!r} in {t.name}")
            if a.name in seen:
                raise SpecError(a.pos, f"{a.name!r} assigned twice")
            seen.add(a.name)
            node = info.node
            if (isinstance(node, n.BitField) and node.const is not None) or (
                isinstance(node, n.Field) and node.value is not None
            ):
                raise SpecError(
                    a.pos, f"{a.name!r} is computed by the encoder; it cannot be assigned"
                )
            if isinstance(a.expr, n.Name) and info.enum:
                self.enum_member(info.enum, a.expr)
                continue
            self.expr(a.expr, ctx=ctx, target=info)

    def status_map(self) -> None:
        s = self.spec
        if not s.status_rows:
            raise SpecError(s.pos, "the protocol has no status_map")
        forward: dict[int, n.StatusRow] = {}
        codes: dict[int, n.StatusRow] = {}
        names: set[str] = set()
        for row in s.status_rows:
            check_identifier(row.name, row.pos, "status name")
            if row.code in codes:
                raise SpecError(
                    row.pos,
                    f"protocol code {row.code} appears twice in the status map (also line {codes[row.code].pos.line}): the reverse map must be a function",
                )
            if row.name in names:
                raise SpecError(row.pos, f"duplicate status name {row.name!r}")
            codes[row.code] = row
            names.add(row.name)
            if row.backward not in api.RUNTIME_CODES:
                raise SpecError(row.backward_pos, _not_a_runtime_code(row.backward))
            for code, code_pos in zip(row.forward, row.forward_pos):
                if code not in api.RUNTIME_CODES:
                    raise SpecError(code_pos, _not_a_runtime_code(code))
                if code in forward:
                    raise SpecError(
                        row.pos,
                        f"runtime code {code} maps to two protocol codes ({forward[code].code} on line {forward[code].pos.line} and {row.code}): the forward map must be a function",
                    )
                forward[code] = row
        missing = [c for c in api.RUNTIME_CODES if c not in forward]
        if missing:
            raise SpecError(
                s.pos,
                f"the status map does not answer runtime code(s) {', '.join(map(str, missing))}",
            )
        if s.status_others is not None and s.status_others not in api.RUNTIME_CODES:
            raise SpecError(s.status_others_pos or s.pos, _not_a_runtime_code(s.status_others))


def _not_a_runtime_code(code: int) -> str:
    return f"{code} is not a runtime code (one of {', '.join(map(str, api.RUNTIME_CODES))})"


def check(spec: n.Protocol, stem: str | None = None) -> Checked:
    return Checker(spec, stem).run()


# ---- expression types --------------------------------------------------------------------
INT, STR, BYTES, MAP, BOOL, NULL, ANY = "int", "str", "bytes", "map", "bool", "null", "any"
_TYPE_WORDS = {INT: "an integer", STR: "a string", BYTES: "bytes", MAP: "a map", BOOL: "a boolean",
               NULL: "null", ANY: "any value"}  # fmt: skip
_VALUE_TYPES = {"int": INT, "str": STR, "bytes": BYTES, "map": MAP}
#: the types of record values and lists: "record Value", "list of record Value", "list of bytes"
_RECORD, _LIST = "record ", "list of "
_ARITH = ("+", "-", "*", "%")
_ORDER = ("<", "<=", ">", ">=")


def _covers(items, name: str) -> bool:
    """Every layout these items expand into has the field ``name``."""
    for item in items:
        if isinstance(item, n.IfBlock):
            if _covers(item.body, name) and _covers(item.orelse, name):
                return True
        elif isinstance(item, n.Bits):
            if any(f.name == name for f in item.fields):
                return True
        elif item.name == name:
            return True
    return False


def _describe_types(types) -> str:
    return " or ".join(_type_word(t) for t in sorted(types))


def _type_word(t: str) -> str:
    if t.startswith(_LIST):
        inner = t[len(_LIST) :]
        if inner.startswith(_RECORD):
            return f"a list of {inner[len(_RECORD):]} records"
        plural = {INT: "integers", STR: "strings", BYTES: "byte strings", MAP: "maps",
                  BOOL: "booleans", NULL: "nulls", ANY: "values"}  # fmt: skip
        return f"a list of {plural[inner] if inner in plural else _type_word(inner)}"
    if t.startswith(_RECORD):
        return f"a {t[len(_RECORD):]} record"
    return _TYPE_WORDS[t]


class Types:
    """Compile-time types of expressions: int, str, bytes, map, bool, null (``any`` for values
    of field-type functions and raw field types, which are checked at run time). Every
    expression whose value the generated code computes with is checked against what it needs,
    so no spec yields a codec that raises TypeError or ZeroDivisionError when a field is read."""

    def __init__(self, checker: "Checker"):
        self.c = checker
        self.fields = checker.fields
        self.let_types: dict[str, set] = {}

    def run(self) -> None:
        s = self.c.spec
        self.sizes()
        tests = [item.test for item in self.c._all_items(s.frame) if isinstance(item, n.IfBlock)]
        self.semantic_types(tests)

    def sizes(self) -> None:
        for info in self.fields.values():
            f = info.node
            if not isinstance(f, n.Field):
                continue
            size = getattr(f.type, "size", None)
            if isinstance(size, (n.SizeBytes, n.SizeCount)):
                self.want(size.expr, {INT}, f"the size of {f.name!r}")
                if isinstance(size.expr, n.IntLit) and not 0 <= size.expr.value <= MAX_SIZE:
                    raise SpecError(
                        size.expr.pos,
                        f"the size of {f.name!r} must be 0..{MAX_SIZE}, not {size.expr.value}",
                    )
            # (a recomputed value needs no check here: _recomputable's shapes are integers)

    def semantic_types(self, tests: list) -> None:
        s = self.c.spec
        for inside in s.insides:
            tests.append(inside.test)
            tests += [i.test for i in self.c._all_items(inside.items) if isinstance(i, n.IfBlock)]
        tests += [r.test for r in s.stream if r.test is not None]
        tests += [r.test for r in s.answers]
        tests += [s.heartbeat.test] if s.heartbeat is not None else []
        tests += [s.goaway] if s.goaway is not None else []
        for t in tests:
            self.type(t)
        for let in s.lets:
            self.type(n.LetRef(let.name, let.expr, let.pos))
        scalar = {INT, STR, BYTES, BOOL, NULL}
        wants = {
            "timeout_ms": ({INT, NULL}, "timeout_ms"),
            "status": ({INT, NULL}, "status"),
            "service": (scalar, "service"),
            "method": (scalar, "method"),
        }
        for b in s.bindings:
            if b.name in wants:
                self.want(b.expr, *wants[b.name])
        for hb in s.header_bindings:
            t = self.type(hb.expr)
            lists = {x for x in t if x.startswith(_LIST)}
            if lists:  # every value of a list is a header value: a command's keys
                self.c.list_headers.add(hb.name)
                inner = {x[len(_LIST) :] for x in lists}
                if not inner <= scalar:
                    raise SpecError(
                        hb.expr.pos,
                        f"header {hb.name!r} must be a value or a list of values; this "
                        f"expression is {_describe_types(t)}",
                    )
                t -= lists
                if not t:
                    continue
            self.want(hb.expr, scalar | lists, f"header {hb.name!r}")
        templates = [t for t in (s.error_response, s.success_response) if t is not None]
        templates += list(s.heartbeat.templates) if s.heartbeat is not None else []
        templates += [r.answer for r in s.answers]
        for t in templates:
            for a in t.assigns:
                info = self.fields[a.name]
                if isinstance(a.expr, n.Name) and info.enum:
                    continue  # an enum member, resolved by the checker
                self.want(a.expr, self.accepts(info), f"{a.name!r} in {t.name}")
                self.fits(a.expr, info, f"{a.name!r} in {t.name}")
                self.in_range(a.expr, info, f"{a.name!r} in {t.name}")
        status = next((b.expr for b in s.bindings if b.name == "status"), None)
        if isinstance(status, n.Name):
            for row in s.status_rows:
                self.fits(n.IntLit(row.code, row.pos), self.fields[status.name], "status code")

    def in_range(self, e, info: FieldInfo, what: str) -> None:
        """A computed template value for a fixed-width integer field (bit fields are masked):
        its range, from the ranges of what it reads, must fit the field."""
        if not isinstance(info.node, n.Field) or info.int_type is None:
            return
        if isinstance(e, (n.IntLit, n.Param)):
            return  # fits() checked it ($id is the runtime's, sized for the id field)
        t = info.int_type
        span = self.bounds(e)
        lo, hi = (
            (-(1 << (t.width - 1)), (1 << (t.width - 1)) - 1)
            if t.signed
            else (0, (1 << t.width) - 1)
        )
        if span is None or span[0] < lo or span[1] > hi:
            got = "an unknown range" if span is None else f"{span[0]}..{span[1]}"
            raise SpecError(
                e.pos, f"{what}: a value in {got} may not fit in {info.name!r} ({lo}..{hi})"
            )

    def bounds(self, e) -> tuple[int, int] | None:
        """The smallest and largest value of an integer expression; None when unknown."""
        if isinstance(e, n.IntLit):
            return (e.value, e.value)
        if isinstance(e, n.Param) and e.name == "status":
            codes = [row.code for row in self.c.spec.status_rows]  # never empty: checked
            return (min(codes), max(codes))
        if isinstance(e, n.Attr):
            info = self.fields[e.name]
            if isinstance(info.node, n.BitField):
                return (0, (1 << info.node.width) - 1)
            t = info.int_type
            if t is None:
                return None
            if t.signed:
                return (-(1 << (t.width - 1)), (1 << (t.width - 1)) - 1)
            return (0, (1 << t.width) - 1)
        if isinstance(e, n.Unary) and e.op == "-":
            b = self.bounds(e.operand)
            return None if b is None else (-b[1], -b[0])
        if isinstance(e, n.Cond) or (isinstance(e, n.BinOp) and e.op == "??"):
            pair = (e.then, e.orelse) if isinstance(e, n.Cond) else (e.left, e.right)
            a, b = self.bounds(pair[0]), self.bounds(pair[1])
            return None if a is None or b is None else (min(a[0], b[0]), max(a[1], b[1]))
        if isinstance(e, n.BinOp) and e.op in _ARITH:
            a, b = self.bounds(e.left), self.bounds(e.right)
            if a is None or b is None:
                return None
            if e.op == "+":
                return (a[0] + b[0], a[1] + b[1])
            if e.op == "-":
                return (a[0] - b[1], a[1] - b[0])
            if e.op == "*":
                products = [x * y for x in a for y in b]
                return (min(products), max(products))
            return (0, b[1] - 1)  # % by a number above 0
        return None

    def fits(self, e, info: FieldInfo, what: str) -> None:
        """A constant, or the protocol status codes ``$status`` stands for, fit the field."""
        if isinstance(e, n.Param) and e.name == "status":
            values = [(row.code, row.pos) for row in self.c.spec.status_rows]
        elif isinstance(e, n.IntLit):
            values = [(e.value, e.pos)]
        else:
            return
        if info.kind == "ext" and info.ext.VALUE == "int":  # the field type's own writer says
            for value, pos in values:
                try:
                    info.ext.write(value)  # (an int needs no context)
                except Exception as err:
                    raise SpecError(pos, f"{what}: {value} does not fit in {info.name!r}: {err}")
            return
        if isinstance(info.node, n.BitField):
            t = n.IntType(info.node.width, False, None, info.pos)
        elif info.int_type is not None:
            t = info.int_type
        else:
            return
        for value, pos in values:
            if not fits(value, t):
                raise SpecError(
                    pos, f"{what}: {value} does not fit in {info.name!r} ({t.width} bits)"
                )

    def accepts(self, info: FieldInfo) -> set:
        """What a template may assign to a field (the generated code converts text and bytes)."""
        kind = info.kind
        if kind == "ext":
            if info.many:
                return {ANY}  # a list of field-type values
            if isinstance(info.ext, RecordType):  # (a copy of the request's: copied())
                return {_RECORD + info.ext.record.name, NULL}
            kind = info.ext.VALUE
            if getattr(info.ext, "NULLABLE", False) and kind in _VALUE_TYPES:
                return self._accepts_kind(kind, info) | {NULL}  # its writer takes None
        return self._accepts_kind(kind, info)

    def _accepts_kind(self, kind: str, info: FieldInfo) -> set:
        if kind in ("int", "enum", "bits"):
            return {INT}
        if kind == "bytes":
            return {STR, BYTES, NULL}  # as_bytes(): null is empty
        if kind in ("str", "string"):  # text(): null stays null, only a nullable field takes it
            return {STR, BYTES, NULL} if info.node.nullable else {STR, BYTES}
        if kind == "map":
            return {MAP, NULL}
        return {ANY}

    def want(self, e, allowed: set, what: str) -> None:
        got = self.type(e)
        if ANY in got or got <= allowed:
            return
        hint = (
            " (it may be null: give a default with ??)"
            if {NULL} < got and got - {NULL} <= allowed
            else ""
        )
        # a field-type value (a list, a raw value) is written by its field type: only another
        # value of it (request.<field>, a field-type function's) can be assigned
        wanted = "a value of its field type" if ANY in allowed else _describe_types(allowed)
        raise SpecError(
            e.pos, f"{what} must be {wanted}; this expression is {_describe_types(got)}{hint}"
        )

    def field_type(self, info: FieldInfo) -> set:
        kind = info.kind
        if kind in ("int", "enum", "bits"):
            return {INT}
        nullable = {NULL} if info.node.nullable else set()  # (bits and enums returned)
        if kind == "bytes":
            return {BYTES} | nullable
        if kind == "string":
            return {STR} | nullable
        if kind == "map":
            return {MAP}
        if isinstance(info.ext, RecordType):  # a record value, or a list of them
            record = _RECORD + info.ext.record.name
            if info.node.type.size is not None:
                return {_LIST + record} | nullable
            return {record, NULL}  # (null where its layout has none)
        if info.many:
            return {ANY}  # a list of field-type values
        value = _VALUE_TYPES.get(info.ext.VALUE, ANY)
        # a field type that reads null (an absent tag, an encoded null) says so: NULLABLE
        return {value, NULL} if value != ANY and getattr(info.ext, "NULLABLE", False) else {value}

    def type(self, e) -> set:
        if isinstance(e, n.IntLit):
            return {INT}
        if isinstance(e, n.StrLit):
            return {STR}
        if isinstance(e, n.Const):
            if e.value is None:
                return {NULL}
            return {MAP} if e.value == {} else {BOOL}
        if isinstance(e, n.MapLit):
            for v in e.values:
                self.want(v, {INT, STR, BYTES, BOOL, NULL, MAP}, "a map's value")
            return {MAP}
        if isinstance(e, n.Name):
            info = self.fields.get(e.name)
            if info is not None:
                return self.field_type(info)
            if e.name == "direction":
                raise SpecError(
                    e.pos, "direction is not a value: compare it (direction == request)"
                )
            if e.name == "first":
                return {BOOL}  # (the checker let it stand in layouts and semantics only)
            return {INT}  # an enum member (the checker resolved it)
        if isinstance(e, n.Param):
            return {STR} if e.name == "message" else {INT}
        if isinstance(e, n.Attr) and not _is_request(e):
            return self.attr(self.type(e.obj), e)
        if isinstance(e, n.Attr):
            info = self.fields[e.name]
            always = info.owner is None and _covers(self.c.spec.frame, e.name)
            # request.<field> of a layout the request may not have: null then
            return self.field_type(info) | (set() if always else {NULL})
        if isinstance(e, n.LetRef):
            if e.name not in self.let_types:
                self.let_types[e.name] = self.type(e.expr)
            return self.let_types[e.name]
        if isinstance(e, n.Slice):
            obj = self.type(e.obj)
            self._lists(obj, e, "sliced")
            for part in (e.start, e.stop, e.step):
                if part is not None:
                    self.want(part, {INT, NULL}, "a slice's bound")
            return obj
        if isinstance(e, n.Index) and not isinstance(e.key, n.StrLit):
            obj = self.type(e.obj)
            self._lists(obj, e, "indexed by a number")
            self.want(e.key, {INT}, "a list's index")
            # an index out of range reads null
            return {x[len(_LIST) :] for x in obj if x.startswith(_LIST)} | {NULL} | (obj & {ANY})
        if isinstance(e, n.Index):
            obj = self.type(e.obj)
            if ANY in obj:
                return {ANY}
            if obj - {NULL} != {MAP}:  # a null map reads as absent keys (map_get)
                raise SpecError(e.pos, f"only maps can be indexed; this is {_describe_types(obj)}")
            info = self.fields.get(e.obj.name) if isinstance(e.obj, n.Name) else None
            return {STR, NULL} if info is not None and info.kind == "map" else {ANY}
        if isinstance(e, n.Unary):
            t = self.type(e.operand)
            if e.op == "not":
                return {BOOL}
            self.operand(e.operand, t, "-")
            return {INT}
        if isinstance(e, n.BinOp):
            return self.binop(e)
        if isinstance(e, n.In):
            self.type(e.item)
            for o in e.options:  # (an enum member, resolved by the checker, types as an int)
                self.type(o)
            return {BOOL}
        if isinstance(e, n.Cond):
            self.type(e.test)
            return self.type(e.then) | self.type(e.orelse)
        return self.call(e)  # the last kind of expression: n.Call

    def _lists(self, obj: set, e, what: str) -> None:
        if not obj - {NULL, ANY} or any(not x.startswith(_LIST) for x in obj - {NULL, ANY}):
            raise SpecError(e.pos, f"only lists can be {what}; this is {_describe_types(obj)}")

    def attr(self, obj: set, e: n.Attr) -> set:
        """The type of ``value.name``: a field of a record value (null when the value is null
        or its layout has no such field), mapped over the values of a list."""
        out: set = set()
        for t in obj:
            if t in (NULL, ANY):
                out.add(t)
            elif t.startswith(_RECORD):
                table = self.c.record_tables[t[len(_RECORD) :]]
                info = table.fields.get(e.name)
                if info is None:
                    raise SpecError(e.pos, f"record {t[len(_RECORD):]} has no field {e.name!r}")
                out |= self.field_type(info) | {NULL}
            elif t.startswith(_LIST):
                inner = self.attr({t[len(_LIST) :]}, e)
                out |= {_LIST + x for x in inner if x != NULL}
            else:
                raise SpecError(
                    e.pos,
                    f"'.{e.name}' reads a field of a record value; this is {_describe_types({t})}",
                )
        return out

    def operand(self, e, t: set, op: str) -> None:
        if ANY in t or t == {INT}:
            return
        extra = " (it may be null: give a default with ??)" if t == {INT, NULL} else ""
        raise SpecError(
            e.pos, f"'{op}' needs integers; this operand is {_describe_types(t)}{extra}"
        )

    def binop(self, e: n.BinOp) -> set:
        if e.op in ("==", "!="):
            # names that are no field (enum members, direction, request, response) are not
            # typed: the checker resolved them
            sides = [
                self.type(side) - {NULL}
                for side in (e.left, e.right)
                if not (isinstance(side, n.Name) and side.name not in self.fields)
            ]
            if len(sides) == 2 and ANY not in sides[0] | sides[1]:
                if sides[0] and sides[1] and not sides[0] & sides[1]:
                    raise SpecError(
                        e.pos,
                        f"'{e.op}' compares {_describe_types(sides[0])} with "
                        f"{_describe_types(sides[1])}: never equal",
                    )
            return {BOOL}
        left, right = self.type(e.left), self.type(e.right)
        if e.op == "+" and (left | right) - {NULL} and (left | right) - {NULL} <= {STR, BYTES}:
            # text joined to text: null is empty; with bytes on either side, bytes (a string
            # as UTF-8)
            self.c.text_joins.add(id(e))
            return {BYTES} if BYTES in left | right else {STR}
        if e.op in _ARITH:
            self.operand(e.left, left, e.op)
            self.operand(e.right, right, e.op)
            if e.op == "%" and not (isinstance(e.right, n.IntLit) and e.right.value > 0):
                what = (
                    f"not {e.right.value}" if isinstance(e.right, n.IntLit) else "a field may be 0"
                )
                raise SpecError(
                    e.right.pos, f"the right side of '%' must be a number above 0 ({what})"
                )
            return {INT}
        if e.op in _ORDER:
            for side, t in ((e.left, left), (e.right, right)):
                if not (ANY in t or t <= {INT} or t <= {STR}):
                    raise SpecError(
                        side.pos,
                        f"'{e.op}' compares integers or strings; this is {_describe_types(t)}",
                    )
            if ANY not in left | right and left != right:
                raise SpecError(
                    e.pos,
                    f"'{e.op}' compares {_describe_types(left)} with {_describe_types(right)}",
                )
            return {BOOL}
        if e.op == "??":
            return (left - {NULL}) | right
        return left | right  # and, or: one of the operands

    def call(self, e: n.Call) -> set:
        if e.module is not None:
            for a in e.args:
                self.type(a)
            return {ANY}
        # (len, sizeof and crc32 are only in recomputed values, which are not typed here)
        if e.func == "int":
            self.type(e.args[0])
            return {INT, NULL}
        if e.func == "name":
            return {STR, NULL}
        if e.func in ("lower", "words"):
            t = self.type(e.args[0])
            text = {STR, BYTES, INT}  # (lower() writes an integer in decimal)
            ok = {NULL, ANY} | text | ({_LIST + x for x in text} if e.func == "lower" else set())
            if not t <= ok:
                raise SpecError(
                    e.args[0].pos, f"{e.func}() takes text; this is {_describe_types(t)}"
                )
            if e.func == "words":  # the words of text, as that text's type (null: null)
                return (
                    {_LIST + x for x in t & {STR, BYTES}}
                    | ({_LIST + STR} if INT in t else set())
                    | (t & {NULL, ANY})
                )
            return {(_LIST + STR if x.startswith(_LIST) else STR) for x in t - {NULL}} | (
                t & {NULL}
            )
        if e.func == "char":
            self.want(e.args[0], {INT}, "char()'s argument")
            return {BYTES}
        # before(text, separator), after(text, separator)
        self.type(e.args[0])
        sep = self.type(e.args[1])
        if not (ANY in sep or sep == {STR}):
            raise SpecError(
                e.args[1].pos,
                f"{e.func}()'s separator must be a string, not {_describe_types(sep)}",
            )
        return {STR, NULL}
