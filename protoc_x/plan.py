"""Plan a checked spec: the frame's layout variants (one per path through its if/else blocks),
consecutive fixed-width items merged into runs (read or written at once), where every field
sits, how the decoder learns the frame's size, and which fields the encoder recomputes. The
plan is plain data in the spec's terms (widths in bytes, byte orders "big"/"little", offsets,
conditions as spec expressions), no target language's: each back end (``protoc_x.backends``)
turns it into its output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from . import nodes as n
from .check import Checked, FieldInfo, _library, _walk_expr
from .diagnostics import SpecError

#: limits on the frame's if/else expansion (each test is a branch of the decoder)
MAX_VARIANTS = 64
MAX_BRANCH_DEPTH = 32


@dataclass
class Run:
    """Consecutive fixed-width items of one byte order, read or written at once."""

    size: int  # bytes
    items: list  # n.Field | n.Bits, in order (each item's type: ``int_type``)
    offset: int | None  # offset from the frame start when fixed, else None
    order: str = "big"  # "big" or "little", of every item in the run


@dataclass
class Var:
    """A variable-size item: bytes, string, map or a field type."""

    field: n.Field
    info: FieldInfo


@dataclass
class Crc:
    field: n.Field


Step = Union[Run, Var, Crc]


@dataclass
class FrameSize:
    """How the decoder learns a leaf's size before reading its variable part."""

    # "length_field": a field holds sizeof(frame) + delta; "sum": header sizes add up;
    # "parsed": the frame ends where its last field ends (found by measuring it)
    mode: str
    length_field: str | None = None
    delta: int = 0  # sizeof(frame) = field_value - delta
    at: int = 0  # mode length_field: the length field's offset in the frame
    sized: list = field(default_factory=list)  # mode sum: Var items sized by header fields


@dataclass
class Leaf:
    """One layout variant of the frame: a straight line of steps."""

    steps: list[Step]
    prefix: Run | None  # the leading fixed-width run (holds every fixed-offset field)
    size: FrameSize
    fixed_tail: int  # bytes of fixed-width steps after the prefix (mode sum)
    fail: n.Fail | None = None  # a layout the spec refuses: decoding it is an error


@dataclass
class Branch:
    """An if/else in the frame layout: test over fields at fixed offsets (peeked)."""

    test: n.Expr
    peeks: list[tuple[str, int]]  # (field name, offset)
    then: "Node"
    orelse: "Node"


Node = Union[Leaf, Branch]


@dataclass
class InsidePlan:
    inside: n.Inside
    items: tuple  # sequential items (if blocks kept, decoded in place)


@dataclass
class Plan:
    checked: Checked
    order: str  # the protocol's byte order: "big" or "little"
    tree: Node
    insides: dict[str, list[InsidePlan]]
    recomputed: list[str]
    detect_length: int


def _is_fixed(item, checked: Checked) -> bool:
    if isinstance(item, n.Bits):
        return True
    if isinstance(item, n.Field):
        info = checked.fields[item.name]
        # (the checker gives every int and enum field its int_type; a u24 is fixed too, held
        # as bytes in its run: see odd_width)
        return info.kind in ("int", "enum")
    return False


def item_width(item, checked: Checked) -> int:
    """Bytes of a fixed-width item (a field, or a bit-field container)."""
    if isinstance(item, n.Bits):
        return item.type.nbytes
    return checked.fields[item.name].int_type.nbytes


def int_type(item, checked: Checked) -> n.IntType:
    """The integer type of a fixed-width item: a bit-field container's, or a field's."""
    return item.type if isinstance(item, n.Bits) else checked.fields[item.name].int_type


def item_order(item, checked: Checked, order: str) -> str:
    """ "big" or "little": the item's own byte order, else the protocol's ``order``."""
    return int_type(item, checked).order or order


def signed(item, checked: Checked) -> bool:
    """Whether a fixed-width item reads as a signed integer (a bit-field container never)."""
    return not isinstance(item, n.Bits) and int_type(item, checked).signed


def odd_width(item, checked: Checked, order: str) -> tuple[int, str, bool] | None:
    """(bytes, "big" or "little", signed) of an item whose width is not 8, 16, 32 or 64 bits
    (a u24), which machine integers do not hold as they are; None for the others."""
    t = int_type(item, checked)
    if not t.odd:
        return None
    return t.nbytes, item_order(item, checked, order), signed(item, checked)


def single_run(item, checked: Checked, order: str) -> Run:
    """A run of one fixed-width item (layouts read field by field)."""
    return Run(item_width(item, checked), [item], None, item_order(item, checked, order))


def _is_crc(item) -> bool:
    return (
        isinstance(item, n.Field) and isinstance(item.value, n.Call) and item.value.func == "crc32"
    )


class Planner:
    def __init__(self, checked: Checked):
        self.c = checked
        self.order = checked.spec.byte_order  # "big" or "little"
        self.variants = 0  # if/else tests expanded so far (one more layout each)

    def run(self) -> Plan:
        tree = self.node(list(self.c.spec.frame), [])
        if all(leaf.fail is not None for leaf in leaves(tree)):
            raise SpecError(
                self.c.spec.pos, "every layout of the frame fails: no frame can be read"
            )
        insides = {
            target: [InsidePlan(i, i.items) for i in lst]
            for target, lst in self.c.body_targets.items()
        }
        recomputed = [
            f.name
            for f in self.c.fields.values()
            if isinstance(f.node, n.Field)
            and f.node.value is not None
            and not isinstance(f.node.value, n.IntLit)
            and not (isinstance(f.node.value, n.Name))
        ]
        detect_length = max((p.offset + p.type.nbytes for p in self.c.spec.detect), default=0)
        return Plan(self.c, self.order, tree, insides, recomputed, detect_length)

    def node(self, items: list, done: list, depth: int = 0) -> Node:
        """Walk ``items``; ``done`` are items already placed on this path."""
        for i, item in enumerate(items):
            if isinstance(item, n.IfBlock):
                self.variants += 1
                if self.variants >= MAX_VARIANTS or depth >= MAX_BRANCH_DEPTH:
                    raise SpecError(
                        item.pos,
                        f"the frame's if/else blocks expand into more than {MAX_VARIANTS} "
                        f"layouts or {MAX_BRANCH_DEPTH} nested tests; test fewer fields in "
                        "sequence, or move the alternatives into an 'inside' layout",
                    )
                peeks = self.peeks(item.test, done)
                rest = items[i + 1 :]
                then = self.node(list(item.body) + rest, done, depth + 1)
                orelse = self.node(list(item.orelse) + rest, done, depth + 1)
                return Branch(item.test, peeks, then, orelse)
            if isinstance(item, n.Fail):  # bytes that are no frame: the rest is unreachable
                return Leaf([], None, FrameSize("fail"), 0, fail=item)
            done = done + [item]
        return self.leaf(done)

    def peeks(self, test: n.Expr, done: list) -> list[tuple[str, int]]:
        placed = {}
        offset = 0
        for item in done:
            if not _is_fixed(item, self.c):
                break
            if isinstance(item, n.Bits):
                for f in item.fields:
                    placed[f.name] = offset
            else:
                placed[item.name] = offset
            offset += item_width(item, self.c)
        out = []
        for e in _walk_expr(test):
            if isinstance(e, n.Name) and e.name in self.c.fields:
                if e.name not in placed:
                    raise SpecError(
                        e.pos,
                        f"a layout condition may only test fields at a fixed offset before it; {e.name!r} is not one",
                    )
                if (e.name, placed[e.name]) not in out:
                    out.append((e.name, placed[e.name]))
        return out

    def leaf(self, items: list) -> Leaf:
        steps: list[Step] = []
        for item in items:
            if _is_crc(item):
                steps.append(Crc(item))
            elif _is_fixed(item, self.c):
                order = item_order(item, self.c, self.order)
                if steps and isinstance(steps[-1], Run) and steps[-1].order == order:
                    steps[-1].size += item_width(item, self.c)
                    steps[-1].items.append(item)
                else:
                    steps.append(Run(item_width(item, self.c), [item], None, order))
            else:
                steps.append(Var(item, self.c.fields[item.name]))
        for i, s in enumerate(steps):
            if isinstance(s, Crc) and i != len(steps) - 1:
                raise SpecError(s.field.pos, "a crc32 field must be the last field of its layout")
        prefix = steps[0] if steps and isinstance(steps[0], Run) else None
        if prefix is not None:
            prefix.offset = 0
        size = self.frame_size(steps, prefix)
        fixed_tail = sum(s.size for s in steps[1:] if isinstance(s, Run)) + sum(
            4 for s in steps if isinstance(s, Crc)
        )
        return Leaf(steps, prefix, size, fixed_tail)

    def frame_size(self, steps: list[Step], prefix: Run | None) -> FrameSize:
        prefix_names = set()
        if prefix is not None:
            at = 0  # the offset of item in the frame
            for item in prefix.items:
                if isinstance(item, n.Field):
                    prefix_names.add(item.name)
                    v = item.value
                    if v is not None and any(
                        isinstance(e, n.Call) and e.func == "sizeof" for e in _walk_expr(v)
                    ):
                        return FrameSize(
                            "length_field", length_field=item.name, delta=self._delta(v), at=at
                        )
                else:
                    prefix_names.update(f.name for f in item.fields)
                at += item_width(item, self.c)
        sized = []
        for s in steps[1:] if prefix is not None else steps:
            if isinstance(s, (Run, Crc)):
                continue
            size = getattr(s.field.type, "size", None)
            ok = (
                isinstance(size, n.SizeBytes)
                and s.info.kind in ("bytes", "string", "map", "ext")
                and all(
                    not (isinstance(e, n.Name) and e.name in self.c.fields)
                    or e.name in prefix_names
                    for e in _walk_expr(size.expr)
                )
            )
            if not ok:
                return self.parsed_size(steps)
            sized.append(s)
        return FrameSize("sum", sized=sized)

    def parsed_size(self, steps: list[Step]) -> FrameSize:
        """A frame that ends where its last field ends: each variable part must be sized by
        fields read before it, or be a field type that finds its own end as bytes arrive
        (``measure``); otherwise its end cannot be found."""
        placed: set[str] = set()
        for s in steps:
            if isinstance(s, Run):
                for item in s.items:
                    if isinstance(item, n.Bits):
                        placed.update(f.name for f in item.fields)
                    else:
                        placed.add(item.name)
                continue
            if isinstance(s, Crc):
                placed.add(s.field.name)
                continue
            size = getattr(s.field.type, "size", None)
            why = None
            if isinstance(size, n.SizeRest):
                why = "'rest' needs a frame length field (= sizeof(frame) ...)"
            elif isinstance(size, (n.SizeBytes, n.SizeCount)):
                late = [
                    e.name
                    for e in _walk_expr(size.expr)
                    if isinstance(e, n.Name) and e.name in self.c.fields and e.name not in placed
                ]
                unkept = [  # measuring keeps integers only (runtime/fieldtypes/__init__.py)
                    e.name
                    for e in _walk_expr(size.expr)
                    if isinstance(e, n.Name)
                    and e.name in placed
                    and self.c.fields[e.name].kind == "ext"
                    and self.c.fields[e.name].ext.VALUE != "int"
                ]
                if late:
                    why = f"its size reads {late[0]!r}, which is not read before it"
                elif unkept:
                    why = (
                        f"its size reads {unkept[0]!r}, a field type's value that is not an integer"
                    )
            measured = s.info.kind == "ext" and hasattr(s.info.ext, "measure")
            if (
                why is None
                and s.info.kind == "ext"
                and not measured
                and not isinstance(size, n.SizeBytes)
            ):
                ref = s.field.type.ref
                why = f"field type {ref.spelled or ref.module + '.' + ref.name} cannot find its own end"
            length = getattr(s.field.type, "length", None)
            if why is None and s.info.kind == "map" and not isinstance(length, n.IntType):
                if not hasattr(_library(length.module).TYPES[length.name], "measure"):
                    why = "its entries' length type cannot find its own end"
            if why is not None:
                raise SpecError(
                    s.field.pos,
                    f"cannot tell where the frame ends at {s.field.name!r}: {why}; give the frame "
                    "a length field (= sizeof(frame) ...), or size the field by fields before it",
                )
            placed.add(s.field.name)
        return FrameSize("parsed")

    def _delta(self, v: n.Expr) -> int:
        """For ``x = sizeof(frame) + k`` return k, so that sizeof(frame) = x - k."""
        if isinstance(v, n.Call) and v.func == "sizeof":
            return 0
        if (
            isinstance(v, n.BinOp)
            and v.op in ("+", "-")
            and isinstance(v.left, n.Call)
            and v.left.func == "sizeof"
            and isinstance(v.right, n.IntLit)
        ):
            return v.right.value if v.op == "+" else -v.right.value
        raise SpecError(
            v.pos, "a frame length must be sizeof(frame), sizeof(frame) + N or sizeof(frame) - N"
        )


def leaves(node):
    """The leaves (layouts) of a layout tree, in order."""
    if isinstance(node, Leaf):
        yield node
    else:
        yield from leaves(node.then)
        yield from leaves(node.orelse)


def plan(checked: Checked) -> Plan:
    return Planner(checked).run()
