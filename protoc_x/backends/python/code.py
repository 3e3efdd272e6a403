"""The writer of generated code (indented lines) and the module-level names a generated
module declares (its structs, field types and functions)."""

from __future__ import annotations

from dataclasses import dataclass, field


from ... import nodes as n
from ...check import Checked
from ...plan import Run, int_type, signed

#: struct's code for each machine integer: (bits, signed) → code
_FMT = {(8, False): "B", (8, True): "b", (16, False): "H", (16, True): "h",
        (32, False): "I", (32, True): "i", (64, False): "Q", (64, True): "q"}  # fmt: skip
_ORDER = {"big": ">", "little": "<"}


def struct_code(item, checked: Checked) -> str:
    """The ``struct`` code of a fixed-width item. An odd width (a u24) is held as bytes in its
    run, converted with ``int.from_bytes``/``int.to_bytes`` (see ``plan.odd_width``)."""
    t = int_type(item, checked)
    if t.odd:
        return f"{t.nbytes}s"
    return _FMT[(t.width, signed(item, checked))]


def int_code(t: n.IntType, is_signed: bool) -> str:
    """The ``struct`` code of a machine integer type."""
    return _FMT[(t.width, is_signed)]


#: the runtime.api names generated code may use; the module imports those it does use
API_NAMES = (
    "DecodeError", "Direction", "PoolMode", "StreamType", "Struct", "XFrame", "XProtocol", "XRecord",
    "after", "as_bytes", "before", "byte_of", "coalesce", "copied", "crc32", "default_message", "first_value",
    "header_values", "id_like", "join_text", "lower_text", "map_get", "measured", "overrun", "read_kvmap", "read_kvmap_count",
    "read_kvmap_fixed", "split_words", "text", "to_int", "utf8", "value_attr", "value_item",
    "value_slice", "write_kvmap", "write_kvmap_fixed",
)  # fmt: skip


class Code:
    """Indented lines of Python."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, line: str) -> "Code":
        self.lines.append("    " * self.depth + line)
        return self

    def indent(self) -> "Code":
        self.depth += 1
        return self

    def dedent(self) -> "Code":
        self.depth -= 1
        return self

    def text(self, base: int = 2) -> str:
        pad = "    " * base
        return "\n".join(pad + line if line else line for line in self.lines)


@dataclass
class Module:
    """Module-level constants the method bodies refer to."""

    order: str  # the protocol's: "big" or "little"
    structs: dict[str, str] = field(default_factory=dict)  # fmt → name
    struct_docs: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # constructor source → name
    functions: dict[str, str] = field(default_factory=dict)  # module.func → name

    def run_struct(self, run: Run, checked: Checked, doc: str) -> str:
        """The name of the Struct that reads and writes ``run``."""
        return self.struct("".join(struct_code(i, checked) for i in run.items), doc, run.order)

    def struct(self, fmt: str, doc: str, order: str | None = None) -> str:
        """The name of the Struct of ``fmt`` (no byte order) in ``order``, "big" or "little"
        (the protocol's by default)."""
        full = _ORDER[order or self.order] + fmt
        if full not in self.structs:
            self.structs[full] = f"_S{len(self.structs)}"
            self.struct_docs[full] = doc
        return self.structs[full]

    def fieldtype(self, ref: n.ExtRef) -> str:
        if ref.module == "record":  # a record of the spec: its codec is generated beside it
            return f"_R_{ref.name}"
        args = ", ".join(repr(a) for a in ref.args)
        src = f"{ref.module}.TYPES[{ref.name!r}]({args})"
        if src not in self.types:
            self.types[src] = f"_T{len(self.types)}"
        return self.types[src]

    def function(self, module: str, func: str) -> str:
        key = f"{module}.FUNCTIONS[{func!r}]"
        if key not in self.functions:
            self.functions[key] = f"_F{len(self.functions)}"
        return self.functions[key]


def docsafe(value: str) -> str:
    """``value`` as text that stays inside a triple-quoted docstring whatever it holds: ASCII,
    backslashes and control characters as escapes, quotes as \\x22."""
    return value.encode("unicode_escape").decode("ascii").replace('"', "\\x22")
