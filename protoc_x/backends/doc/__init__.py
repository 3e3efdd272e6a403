"""The ``doc`` back end: a protocol's reference page (Markdown) and its frame diagram (SVG),
from the same plan the codec comes from: the layouts (one per path through the frame's
if/else), each field's offset, size, type and value, how a frame's size is known, the enums,
the status map both ways, the stream rules, heartbeat, the routing view and the templates."""

from __future__ import annotations

from ... import nodes as n
from ...plan import Branch, Crc, Leaf, Plan, Run, Var, item_width
from . import spell, svg

POOL_WORDS = {
    "multiplex": "multiplex: many requests in flight on a connection, answers matched by request id",
    "pingpong": "pingpong: one request at a time on a connection",
    "pipeline": "pipeline: requests in flight in order, answers matched by their place in line",
    "session": "session: each client connection has an upstream connection of its own",
}


def _code(text: str, cell: bool = True) -> str:
    """Inline code, in a Markdown table cell (``|`` escaped) or not."""
    if cell:
        text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _leaves(node, path: list[str]):
    """(conditions, leaf) for every layout, in the order the decoder tries them."""
    if isinstance(node, Leaf):
        yield path, node
    else:
        assert isinstance(node, Branch)
        test = spell.expr(node.test)
        yield from _leaves(node.then, path + [test])
        yield from _leaves(node.orelse, path + [f"not ({test})"])


def _heading_comment(source: str) -> list[str]:
    """The spec's comment lines before ``protocol``: what its author says it is."""
    out = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            out.append(stripped.lstrip("#").strip())
        elif stripped:
            break
    return out


class Page:
    def __init__(self, plan: Plan, source_name: str, source: str):
        self.p = plan
        self.c = plan.checked
        self.s = plan.checked.spec
        self.source_name = source_name
        self.source = source

    # ---- fields --------------------------------------------------------------------
    def kind(self, f, leaf: Leaf) -> str:
        size = leaf.size
        if size.mode == "length_field" and getattr(f, "name", None) == size.length_field:
            return "length"
        value = getattr(f, "value", None)
        if isinstance(f, n.Field) and value is not None:
            if isinstance(value, n.Call) and value.func == "crc32":
                return "checksum"
            return "const" if isinstance(value, n.IntLit) else "recomputed"
        if isinstance(f, n.BitField) and f.const is not None:
            return "const"
        return "plain"

    def value_text(self, f) -> str:
        if isinstance(f, n.BitField):
            return f"= {f.const:#x}" if f.const is not None else ""
        if f.value is None:
            return ""
        if isinstance(f.value, n.IntLit):  # (as wide as the field: 0x01 in a u8)
            digits = 2 * self.c.fields[f.name].int_type.nbytes
            return f"= 0x{f.value.value:0{digits}x}"
        return f"= {spell.expr(f.value)}"

    def rows(self, leaf: Leaf) -> tuple[list[list[str]], list[svg.Cell]]:
        """The field table's rows and the diagram's cells of one layout."""
        rows, cells = [], []
        offset: int | None = 0
        base, rel = "", 0

        def where() -> str:
            if offset is not None:
                return str(offset)
            return f"after {base}" + (f" + {rel}" if rel else "")

        for step in leaf.steps:
            if isinstance(step, Run):
                for item in step.items:
                    if isinstance(item, n.Bits):
                        bit = 0
                        for f in item.fields:
                            enum = f" ({f.enum})" if f.enum else ""
                            value = self.value_text(f)
                            rows.append([where() + f" bit {bit}", f"{f.width} bits",
                                         _code(f.name), f"bits{enum}", _code(value) if value else ""])  # fmt: skip
                            tip = f"{f.name}: {f.width} bits{enum} {value}".strip()
                            cells.append(svg.Cell(f.name, tip, f.width, self.kind(f, leaf)))
                            bit += f.width
                    else:
                        t = spell.type_text(item.type)
                        info = self.c.fields[item.name]
                        nbytes = info.int_type.nbytes
                        value = self.value_text(item)
                        rows.append([where(), str(nbytes), _code(item.name), _code(t),
                                     _code(value) if value else ""])  # fmt: skip
                        label = f"{item.name} {value}".strip()
                        cells.append(
                            svg.Cell(label, f"{item.name}: {t} {value}".strip(), nbytes * 8,
                                     self.kind(item, leaf))
                        )  # fmt: skip
                    if offset is not None:
                        offset += item_width(item, self.c)
                    else:
                        rel += item_width(item, self.c)
            elif isinstance(step, Crc):
                f = step.field
                value = self.value_text(f)
                rows.append(
                    [where(), "4", _code(f.name), _code(spell.type_text(f.type)), _code(value)]
                )
                cells.append(svg.Cell(f"{f.name} {value}", f"{f.name}: crc32", 32, "checksum"))
                if offset is not None:
                    offset += 4
                else:
                    rel += 4
            else:
                assert isinstance(step, Var)
                f = step.field
                t = spell.type_text(f.type)
                value = self.value_text(f)
                notes = value
                if step.info.owner is None and f.name in self.c.body_targets:
                    notes = (notes + "; " if notes else "") + "read by an inside layout (below)"
                rows.append(
                    [where(), "variable", _code(f.name), _code(t), _code(notes) if notes else ""]
                )
                label = f"{f.name}: {t}"
                cells.append(svg.Cell(label, f"{label} {value}".strip(), None, "variable"))
                offset, base, rel = None, f.name, 0
        return rows, cells

    def size_text(self, leaf: Leaf) -> str:
        size = leaf.size
        if size.mode == "length_field":
            delta = (
                f" - {size.delta}"
                if size.delta > 0
                else (f" + {-size.delta}" if size.delta else "")
            )
            return (f"The frame's size is `{size.length_field}{delta}` bytes, read at offset "
                    f"{size.at}.")  # fmt: skip
        if size.mode == "sum":
            parts = [f"`{s.field.name}`" for s in size.sized]
            return ("The frame's size is its fixed header plus the sizes its header gives: "
                    + ", ".join(parts) + ".") if parts else "The frame has a fixed size."  # fmt: skip
        if size.mode == "parsed":
            return "The frame ends where its last field ends: its fields are read to find it."
        return ""

    # ---- the page ------------------------------------------------------------------
    def render(self) -> dict[str, str]:
        s, name = self.s, self.s.name
        md = [f"# {name}", "",
              f"_Generated from `{self.source_name}` by `protoc-x doc`: edit the spec, not this page._", ""]  # fmt: skip
        intro = _heading_comment(self.source)
        if intro:
            md += [" ".join(intro), ""]
        detect = "; ".join(
            f"{spell.int_type(p.type)} at offset {p.offset} is "
            + " or ".join(f"{v:#x}" for v in p.values)
            for p in s.detect
        )
        md += _table(["", ""], [
            ["byte order", s.byte_order],
            ["connection pool", POOL_WORDS.get(s.pool, s.pool)],
            ["detected by", detect or "(no detect: named on its listener only)"],
        ])  # fmt: skip
        md += ["", "## Frame", "", f"![{name} frame layouts]({name}.svg)", ""]
        variants = []
        layouts = list(_leaves(self.p.tree, []))
        for i, (conds, leaf) in enumerate(layouts, 1):
            when = " and ".join(conds) if conds else "every frame"
            title = f"Layout {i}" if len(layouts) > 1 else "Layout"
            md += [f"### {title}: {when}" if conds else f"### {title}", ""]
            if leaf.fail is not None:
                md += [f"A frame of this layout is refused: {_code(leaf.fail.message)}.", ""]
                variants.append(svg.Variant(f"{title}: {when}", [], leaf.fail.message))
                continue
            rows, cells = self.rows(leaf)
            md += _table(["offset", "bytes", "field", "type", "value"], rows)
            md += ["", self.size_text(leaf), ""]
            variants.append(svg.Variant(f"{title}: {when}" if conds else title, cells))
        md += self.insides()
        md += self.enums()
        md += self.semantics()
        return {
            f"{name}.md": "\n".join(md).rstrip() + "\n",
            f"{name}.svg": svg.render(name, variants),
        }

    def insides(self) -> list[str]:
        out = []
        for target, plans in self.p.insides.items():
            for ip in plans:
                out += [f"## Inside `{target}` when {_code(spell.expr(ip.inside.test))}", ""]
                rows = []
                for item in _items(ip.items):
                    if isinstance(item, n.Field):
                        value = self.value_text(item)
                        rows.append([_code(item.name), _code(spell.type_text(item.type)),
                                     _code(value) if value else ""])  # fmt: skip
                    elif isinstance(item, n.Bits):
                        for f in item.fields:
                            rows.append([_code(f.name), f"{f.width} bits", ""])
                md = _table(["field", "type", "value"], rows)
                out += md + [""]
        return out

    def enums(self) -> list[str]:
        out = []
        if self.s.enums:
            out += ["## Enums", ""]
        for e in self.s.enums:
            out += [f"### {e.name} ({spell.int_type(e.type)})", ""]
            out += _table(
                ["value", "name"], [[f"{m.value} ({m.value:#x})", _code(m.name)] for m in e.members]
            )
            out.append("")
        return out

    def semantics(self) -> list[str]:
        s = self.s
        out = ["## Routing view", ""]
        rows = [[_code(b.name), _code(spell.expr(b.expr))] for b in s.bindings]
        rows += [[f"header {_code(b.name)}", _code(spell.expr(b.expr))] for b in s.header_bindings]
        out += _table(["what", "from"], rows) + [""]
        out += [
            "## Stream rules",
            "",
            "The first rule whose test holds gives a frame's stream type.",
            "",
        ]
        out += _table(["when", "stream type"], [
            [_code(spell.expr(r.test)) if r.test is not None else "else", r.kind] for r in s.stream
        ])  # fmt: skip
        out.append("")
        if s.heartbeat is not None:
            out += [
                "## Heartbeat",
                "",
                f"A frame is a heartbeat when {_code(spell.expr(s.heartbeat.test))}.",
                "",
            ]
            for t in s.heartbeat.templates:
                out += [
                    f"- {t.name}: "
                    + ", ".join(_code(f"{a.name} = {spell.expr(a.expr)}", False) for a in t.assigns)
                ]
            out.append("")
        if s.goaway is not None:
            out += [
                "## Goaway",
                "",
                f"A frame says the peer is going away when {_code(spell.expr(s.goaway))}.",
                "",
            ]
        if s.status_rows:
            out += ["## Status map", "",
                    "Protocol codes, the runtime codes (HTTP-like) the proxy answers with each "
                    "(`<-`), and the runtime code each means (`->`).", ""]  # fmt: skip
            rows = [[f"{r.code} ({r.code:#x})", _code(r.name),
                     ", ".join(str(c) for c in r.forward), str(r.backward)] for r in s.status_rows]  # fmt: skip
            if s.status_others is not None:
                rows.append(["others", "", "", str(s.status_others)])
            out += _table(["code", "name", "<- answers", "-> means"], rows) + [""]
        for title, t in (
            ("Error response", s.error_response),
            ("Success response", s.success_response),
        ):
            if t is not None:
                out += [f"## {title}", ""]
                out += [
                    f"- {_code(f'{a.name} = {spell.expr(a.expr)}', False)}" for a in t.assigns
                ] + [""]
        if s.no_error_response:
            out += ["## Error response", "", "None: the proxy closes the connection instead.", ""]
        for a in s.answers:
            out += [
                f"## Answered by the proxy when {_code(spell.expr(a.test))}"
                + (" (then closed)" if a.close else ""),
                "",
            ]
            out += [
                f"- {_code(f'{x.name} = {spell.expr(x.expr)}', False)}" for x in a.answer.assigns
            ] + [""]
        return out


def _items(items):
    for item in items:
        if isinstance(item, n.IfBlock):
            yield from _items(item.body)
            yield from _items(item.orelse)
        else:
            yield item


def render(plan: Plan, source_name: str, source: str = "") -> dict[str, str]:
    return Page(plan, source_name, source).render()
