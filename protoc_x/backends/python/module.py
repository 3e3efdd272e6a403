"""The Python back end's module: the Emitter (its parts in the mixins beside this file), the
Jinja2 template around them, and black."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import black
import jinja2

from protoc_x.runtime.api import API_VERSION

from ... import nodes as n
from ...plan import Leaf, Plan, Var, leaves
from .decode import DecodeEmitter
from .encode import EncodeEmitter
from .inside import InsideEmitter
from .measure import MeasureEmitter
from .records import records_code
from .scan import ScanEmitter
from .semantics import SemanticsEmitter
from .typed import TypedEmitter
from .verify import verify
from .code import API_NAMES, Module, docsafe, int_code
from .exprs import Exprs


class Emitter(
    DecodeEmitter,
    MeasureEmitter,
    ScanEmitter,
    EncodeEmitter,
    InsideEmitter,
    SemanticsEmitter,
    TypedEmitter,
):
    """Writes one planned spec as a Python module; each part of the module comes from the
    mixin of its own file."""

    def __init__(self, plan: Plan, source_name: str, mod: Module | None = None):
        self.p = plan
        self.c = plan.checked
        self.s = plan.checked.spec
        self.mod = Module(plan.order) if mod is None else mod
        self.in_record = plan.checked.record is not None  # emitting a record's codec
        self.obj = "v" if self.in_record else "self"  # what encoders read field values from
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
        self.typed = False  # emitting the typed scan (backends.python.typed)
        self.bounded = False  # the run being read lies within bounds checked before it
        self.typed_locals: dict[str, str] = {}  # the typed scan's C locals: name → C type
        # frame maps kept as their bytes until read: a forwarded frame never builds them
        self.lazy_maps = {
            f.name
            for f in self.frame_fields
            if f.kind == "map"
            and isinstance(f.node.type.length, n.IntType)
            and isinstance(f.node.type.size, (n.SizeBytes, n.SizeRest))
            and f.name not in self.targets
            and not self.in_record  # (a record's fields are read as they come)
        }
        #: inside targets the scan reads without a frame: target → the outer fields (and
        #: ``direction``) its layouts read, the parameters of its ``_scan_<target>``
        self.scan_insides = {
            t: params for t in self.targets if (params := self.scan_inside_params(t)) is not None
        }
        leaves = [leaf for leaf in self._leaves(plan.tree) if leaf.fail is None]
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
        if node is not None:  # (a record has no layout tree: it is read in order)
            yield from leaves(node)

    # ---- helpers -------------------------------------------------------------------
    def attr(self, name: str, obj: str = "self") -> str:
        return f"{obj}.{name}"

    def exprs(self, obj: str, **kw) -> Exprs:
        kw.setdefault("present", self.always_present if obj == "self" else frozenset())
        return Exprs(self.c, self.mod, lambda name: f"{obj}.{name}", obj=obj, **kw)

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
            if info is not None and info.kind == "ext" and info.node.type.ref.module != "record":
                mods.add(info.node.type.ref.module)
        return sorted(mods)

    def ctx_of(self, ref: n.ExtRef) -> str:
        """The ``ctx`` a field type's read, measure and write take: the message's context of
        its library, or for a record the depth it is nested at."""
        if ref.module == "record":
            return "depth + 1" if self.in_record else "0"
        return f"ctx_{ref.module}"

    # ---- module --------------------------------------------------------------------
    def render(self, fmt: bool = True) -> str:
        s = self.s
        decode = self.decode_body()
        frame_size = self.size_body()
        measure = self.measure_body() if self.parsed() else None
        encode = self.encode_body()
        insides = {t: (self.inside_parse(t), self.inside_build(t)) for t in self.targets}
        scan_insides = {
            t: (
                "".join(", " + (p if p == "direction" else f"v_{p}") for p in params),
                self.scan_inside(t),
            )
            for t, params in self.scan_insides.items()
        }
        records = records_code(self)
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
        if s.answers:
            templates["answer"] = self.answer_body()
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
        if self.c.uses_first:
            slots.append("first")
        id_struct = None
        if self.id_field is not None:
            slots.append("_ido")
            t = self.c.fields[self.id_field].int_type
            id_struct = self.mod.struct(
                int_code(t, t.signed), f"the request id ({self.id_field})", t.order or self.p.order
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
            api_version=API_VERSION,
            mod=self.mod,
            decode=decode,
            encode=encode,
            insides=insides,
            scan_insides=scan_insides,
            measure=measure,
            inner_fields=self.inner_fields,
            records=records,
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
            first_frames=self.c.uses_first,
            first_param=", first=False" if self.c.uses_first else "",
            where=self.where,
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


def emit(plan: Plan, source_name: str, fmt: bool = True) -> str:
    return Emitter(plan, source_name).render(fmt)
