"""The spec tree: frozen dataclasses produced by the parser, each carrying its source position."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .diagnostics import Pos

# ---- expressions -----------------------------------------------------------------------


@dataclass(frozen=True)
class IntLit:
    value: int
    pos: Pos


@dataclass(frozen=True)
class StrLit:
    value: str
    pos: Pos


@dataclass(frozen=True)
class Const:
    """null, true, false or {} (the empty map)."""

    value: object
    pos: Pos


@dataclass(frozen=True)
class MapLit:
    """``{"code": $status, "flag": 1}``: a map of string keys (a template's value of a map
    field)."""

    keys: tuple[str, ...]
    values: tuple  # (Expr, ...)
    pos: Pos


@dataclass(frozen=True)
class Name:
    """A field, an enum member, a stream kind or ``direction``: resolved by the checker."""

    name: str
    pos: Pos


@dataclass(frozen=True)
class Param:
    """``$status``, ``$message``, ``$id``: values a template receives from the runtime."""

    name: str
    pos: Pos


@dataclass(frozen=True)
class Attr:
    """``request.field`` in templates; ``value.field`` of a record value (null when the value
    is null or its layout has no such field; mapped over a list of values)."""

    obj: "Expr"
    name: str
    pos: Pos


@dataclass(frozen=True)
class Index:
    """``headers["service"]``: a key of a map field; ``items[0]``: an element of a list (null
    when out of range)."""

    obj: "Expr"
    key: "Expr"
    pos: Pos


@dataclass(frozen=True)
class LetRef:
    """A use of ``let NAME = expr``: the named expression (its own lets already resolved).
    Generated frames compute it in a method of its name; walks over expressions go into it."""

    name: str
    expr: "Expr"
    pos: Pos


@dataclass(frozen=True)
class Slice:
    """``items[1:]``, ``items[1::2]``, ``args[1:-1]``: part of a list (null stays null)."""

    obj: "Expr"
    start: "Expr | None"
    stop: "Expr | None"
    step: "Expr | None"
    pos: Pos


@dataclass(frozen=True)
class Unary:
    op: str  # "-" or "not"
    operand: "Expr"
    pos: Pos


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * % == != < <= > >= and or ??
    left: "Expr"
    right: "Expr"
    pos: Pos


@dataclass(frozen=True)
class In:
    item: "Expr"
    options: tuple["Expr", ...]
    pos: Pos


@dataclass(frozen=True)
class Cond:
    test: "Expr"
    then: "Expr"
    orelse: "Expr"
    pos: Pos


@dataclass(frozen=True)
class Call:
    """A built-in function (len, sizeof, crc32, int, name, before, after) or ``module.func``."""

    func: str
    args: tuple["Expr", ...]
    pos: Pos
    module: str | None = None


Expr = Union[
    IntLit, StrLit, Const, Name, Param, Attr, Index, Slice, LetRef, Unary, BinOp, In, Cond, Call
]

# ---- types -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IntType:
    width: int  # bits
    signed: bool
    order: str | None  # "big", "little", or None for the protocol's byte order
    pos: Pos

    @property
    def nbytes(self) -> int:
        return self.width // 8

    @property
    def odd(self) -> bool:
        """A width struct has no code for (u24, u40, u48, u56): read and written as bytes."""
        return self.width not in (8, 16, 32, 64)


@dataclass(frozen=True)
class EnumRef:
    name: str
    pos: Pos


@dataclass(frozen=True)
class SizeBytes:
    expr: Expr
    pos: Pos


@dataclass(frozen=True)
class SizeCount:
    expr: Expr
    pos: Pos


@dataclass(frozen=True)
class SizeRest:
    pos: Pos


@dataclass(frozen=True)
class SizeUntil:
    """``until "\\r\\n"``: up to a delimiter (the parser makes it a ``text`` field type)."""

    delimiter: str
    pos: Pos


Size = Union[SizeBytes, SizeCount, SizeRest]


@dataclass(frozen=True)
class ExtRef:
    """A type from runtime/fieldtypes: ``hessian2.string``, ``tars.int(4)``."""

    module: str
    name: str
    args: tuple[object, ...]
    pos: Pos
    spelled: str | None = None  # the language's own spelling (bytes[until "\\r\\n"]), if any


@dataclass(frozen=True)
class BytesType:
    size: Size
    pos: Pos


@dataclass(frozen=True)
class StringType:
    size: Size
    pos: Pos


@dataclass(frozen=True)
class MapType:
    """Key/value pairs, each key and value prefixed by its length."""

    length: IntType | ExtRef
    size: Size
    pos: Pos


@dataclass(frozen=True)
class ExtType:
    ref: ExtRef
    size: Size | None
    pos: Pos


TypeExpr = Union[IntType, EnumRef, BytesType, StringType, MapType, ExtType]

# ---- layout ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    type: TypeExpr
    value: Expr | None  # a constant (checked on decode) or a recomputed expression
    nullable: bool
    pos: Pos


@dataclass(frozen=True)
class BitField:
    name: str
    width: int
    enum: str | None
    const: int | None
    pos: Pos


@dataclass(frozen=True)
class Bits:
    type: IntType
    fields: tuple[BitField, ...]
    pos: Pos


@dataclass(frozen=True)
class IfBlock:
    test: Expr
    body: tuple["Item", ...]
    orelse: tuple["Item", ...]
    pos: Pos


@dataclass(frozen=True)
class Fail:
    """``fail "message"``: a record's layout where no value may be (an unknown type byte)."""

    message: str
    pos: Pos


Item = Union[Field, Bits, IfBlock, Fail]


@dataclass(frozen=True)
class Inside:
    """A layout read from inside a bytes field when ``test`` holds (dubbo's hessian2 body)."""

    target: str
    test: Expr
    items: tuple[Item, ...]
    pos: Pos


@dataclass(frozen=True)
class Record:
    """A named layout, used as a field type (``v Value``, ``items Value[count n]``)."""

    name: str
    depth: int | None  # the nesting bound of a record that contains itself
    items: tuple[Item, ...]
    pos: Pos


# ---- protocol --------------------------------------------------------------------------


@dataclass(frozen=True)
class EnumMember:
    name: str
    value: int
    pos: Pos


@dataclass(frozen=True)
class Enum:
    name: str
    type: IntType
    members: tuple[EnumMember, ...]
    pos: Pos


@dataclass(frozen=True)
class Probe:
    type: IntType
    offset: int
    values: tuple[int, ...]
    pos: Pos


@dataclass(frozen=True)
class Binding:
    name: str
    expr: Expr
    pos: Pos


@dataclass(frozen=True)
class StreamRule:
    test: Expr | None  # None: else
    kind: str
    pos: Pos


@dataclass(frozen=True)
class Assign:
    name: str
    expr: Expr
    pos: Pos


@dataclass(frozen=True)
class Template:
    name: str
    assigns: tuple[Assign, ...]
    pos: Pos


@dataclass(frozen=True)
class LocalAnswer:
    """``answer [and close] when TEST { ANSWER }``: a request the proxy answers itself, with
    the frame ANSWER builds (a reply template: it may read ``request.<field>``), instead of
    sending it on: one that cannot work through the proxy, such as a command that would change
    a connection other clients share (Envoy's direct response). ``and close``: the client's
    connection takes no request after it, and closes once the ones before it are answered."""

    test: Expr
    answer: Template
    close: bool
    pos: Pos


@dataclass(frozen=True)
class Heartbeat:
    test: Expr
    templates: tuple[Template, ...]
    pos: Pos


@dataclass(frozen=True)
class StatusRow:
    code: int
    name: str
    forward: tuple[int, ...]  # runtime codes answered with this protocol code
    backward: int  # the runtime code this protocol code means
    pos: Pos
    forward_pos: tuple[Pos, ...]  # where each forward code is written
    backward_pos: Pos  # where the backward code is written


@dataclass(frozen=True)
class Statement:
    """One top-level statement, kept in source order for duplicate checks."""

    kind: str
    pos: Pos


#: the top-level statements a spec may have many of (the others are once each)
REPEATABLE = ("enums", "insides", "bindings", "header_bindings", "records", "lets", "answers")


@dataclass(frozen=True)
class Protocol:
    name: str
    pos: Pos
    byte_order: str = "big"
    pool: str = "multiplex"
    ordered: bool = False
    detect: tuple[Probe, ...] = ()
    enums: tuple[Enum, ...] = ()
    frame: tuple[Item, ...] = ()
    records: tuple[Record, ...] = ()
    insides: tuple[Inside, ...] = ()
    lets: tuple[Binding, ...] = ()  # (their uses are LetRefs)
    bindings: tuple[Binding, ...] = ()
    header_bindings: tuple[Binding, ...] = ()
    stream: tuple[StreamRule, ...] = ()
    answers: tuple[LocalAnswer, ...] = ()
    heartbeat: Heartbeat | None = None
    goaway: Expr | None = None
    status_rows: tuple[StatusRow, ...] = ()
    status_others: int | None = None
    status_others_pos: Pos | None = None
    error_response: Template | None = None
    no_error_response: bool = False
    success_response: Template | None = None
    statements: tuple[Statement, ...] = field(default=())
