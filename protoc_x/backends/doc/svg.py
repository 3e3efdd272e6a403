"""Frame diagrams in SVG, drawn as RFC 791 draws the IP header: rows of 32 bits under a ruler of
bit numbers, each field a box as wide as its bits, one diagram per layout variant. A variable
part is a full row with dashed ends; fields after it are placed from its end ("+0" rows).
Recomputed fields and the frame's length field are shaded and named in a legend."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

BITS = 32  # bits a row
CELL = 22  # px a bit
ROW = 34  # px a row
LEFT = 64  # px for the offset column
TITLE = 26  # px for a variant's title
RULER = 30  # px for the bit ruler
CHAR = 6.6  # px a character of the 11px monospace font (to fit labels)
FILL = {"plain": "#ffffff", "length": "#cfe3ff", "recomputed": "#fff1c2", "const": "#e8e8e8",
        "checksum": "#f4d4ff", "variable": "#f7f7f7"}  # fmt: skip
LEGEND = (("length", "the frame's length (its size is read here)"),
          ("recomputed", "recomputed on encode"), ("const", "a constant (checked on decode)"),
          ("checksum", "a checksum"), ("variable", "variable size"))  # fmt: skip


@dataclass
class Cell:
    """One field of a layout: ``bits`` wide, or variable (``bits`` None)."""

    label: str  # name and, if it fits, its type/value
    tip: str  # the full text (the box's <title>)
    bits: int | None
    kind: str = "plain"  # a key of FILL


@dataclass
class Variant:
    title: str
    cells: list[Cell]
    fail: str | None = None  # a layout the spec refuses: its message


def _fit(text: str, px: float) -> str:
    room = int(px // CHAR)
    if len(text) <= room:
        return text
    return text[: max(room - 1, 0)] + "…" if room > 1 else ""


def _box(x: float, y: float, w: float, cell: Cell, dashed_left=False, dashed_right=False) -> str:
    out = [f"<g><title>{escape(cell.tip)}</title>"]
    out.append(
        f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{ROW}" fill="{FILL[cell.kind]}" '
        'stroke="none"/>'
    )
    # top and bottom always; a side dashed where the field goes on in another row
    for y1 in (y, y + ROW):
        out.append(f'<line x1="{x:g}" y1="{y1:g}" x2="{x + w:g}" y2="{y1:g}" stroke="#333"/>')
    for xx, dashed in ((x, dashed_left), (x + w, dashed_right)):
        dash = ' stroke-dasharray="3,3"' if dashed else ""
        out.append(
            f'<line x1="{xx:g}" y1="{y:g}" x2="{xx:g}" y2="{y + ROW:g}" stroke="#333"{dash}/>'
        )
    label = _fit(cell.label, w - 4)
    if label:
        out.append(
            f'<text x="{x + w / 2:g}" y="{y + ROW / 2 + 4:g}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    out.append("</g>")
    return "".join(out)


class _Rows:
    """Where a diagram's next box goes: the row (``y``), the bit in it, and the row's byte
    offset (``offset``; None after a variable part, then ``rel`` bytes after it)."""

    def __init__(self, y: float):
        self.y, self.bit, self.open = y, 0, False
        self.offset: int | None = 0
        self.rel = 0

    def close(self) -> None:
        """End the current row, if one is open."""
        if not self.open and not self.bit:
            return
        self.y += ROW
        self.bit, self.open = 0, False
        if self.offset is not None:
            self.offset += BITS // 8
        else:
            self.rel += BITS // 8

    def label(self) -> str:
        text = str(self.offset) if self.offset is not None else f"+{self.rel}"
        y = self.y + ROW / 2 + 4
        return f'<text x="{LEFT - 6}" y="{y:g}" text-anchor="end">{text}</text>'


def render(name: str, variants: list[Variant]) -> str:
    """The SVG document: each variant's title, ruler and rows, then the legend."""
    width = LEFT + BITS * CELL + 10
    parts: list[str] = []
    y = 8
    for v in variants:
        parts.append(f'<text x="4" y="{y + 16}" font-weight="bold">{escape(v.title)}</text>')
        y += TITLE
        # the ruler: bit numbers, a tick each bit, byte numbers above
        for b in range(BITS):
            x = LEFT + b * CELL
            parts.append(f'<text x="{x + CELL / 2:g}" y="{y + 24}" text-anchor="middle" '
                         f'font-size="9">{b % 10}</text>')  # fmt: skip
            if b % 10 == 0:
                parts.append(f'<text x="{x + CELL / 2:g}" y="{y + 12}" text-anchor="middle" '
                             f'font-size="9">{b // 10}</text>')  # fmt: skip
        y += RULER
        if v.fail is not None:
            parts.append(f'<text x="{LEFT}" y="{y + 20}">{escape("fails: " + v.fail)}</text>')
            y += ROW + 12
            continue
        rows = _Rows(y)
        for cell in v.cells:
            if cell.bits is None:  # a full row of its own, after the current one
                rows.close()
                if rows.offset is not None:  # (a variable part after another: no offset)
                    parts.append(rows.label())
                parts.append(_box(LEFT, rows.y, BITS * CELL, cell, True, True))
                rows.y += ROW
                rows.offset, rows.rel = None, 0
                continue
            remaining, first = cell.bits, True
            while remaining:
                if not rows.open:
                    parts.append(rows.label())
                    rows.open = True
                take = min(remaining, BITS - rows.bit)
                x = LEFT + rows.bit * CELL
                parts.append(_box(x, rows.y, take * CELL, cell, not first, remaining > take))
                first, remaining = False, remaining - take
                rows.bit += take
                if rows.bit == BITS:
                    rows.close()
        rows.close()
        y = rows.y
        y += 14
    # the legend
    x = 4
    for kind, text in LEGEND:
        parts.append(f'<rect x="{x}" y="{y}" width="14" height="14" fill="{FILL[kind]}" '
                     'stroke="#333"/>')  # fmt: skip
        parts.append(f'<text x="{x + 18}" y="{y + 11}">{escape(text)}</text>')
        x += 18 + int(len(text) * CHAR) + 16
        if x > width - 150:
            x, y = 4, y + 20
    height = y + 24
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(width, x)}" height="{height}" '
        f'viewBox="0 0 {max(width, x)} {height}" font-family="monospace" font-size="11">\n'
        f"<title>{escape(name)} frame layouts</title>\n"
        f'<rect width="100%" height="100%" fill="#ffffff"/>\n' + "\n".join(parts) + "\n</svg>\n"
    )
