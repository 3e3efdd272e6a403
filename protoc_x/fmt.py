"""``protoc-x fmt``: one canonical layout for ``.xproto`` specs (docs/language.md, "Formatting").

The formatter lays out the spec's tokens, not its tree, so comments stay where they were; the
parse tree (``parser.token_tree``) only says what each token is: which statement it belongs to,
a unary or a binary ``-``, a block's brace or a map's. Every line break is the author's: each
token and each comment stays on its line, so the positions diagnostics report and the spec lines
a generated module cites do not move, and formatting never changes the generated module. Within
a line the formatter sets the spacing and the indentation; across lines it aligns columns.

A spec is parsed first: one that does not parse gets the compiler's diagnostic. What comes out
is checked before anything is written: the same tokens on the same lines, the same comments on
the same lines, and formatting it again changes nothing.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lark import Token

from .compiler import _located
from .diagnostics import NOWHERE, SpecError
from .parser import parse, spec_text, token_tree

INDENT = 4

#: what a line may start with; any other token opening a line continues the statement that
#: holds it (a continuation line)
_STATEMENTS = frozenset(
    {
        "protocol", "byte_order", "pool", "detect", "enum_def", "enum_member", "record",
        "frame", "inside", "field", "fail", "if_block", "else_block", "else_if", "bits",
        "bit_field", "let", "binding", "header_binding", "stream", "stream_when", "stream_else",
        "answer", "heartbeat", "template", "assign", "goaway", "status_map", "status_code",
        "status_others", "error_response", "no_error_response", "success_response",
    }
)  # fmt: skip

#: the aligned columns: for each statement, the child (by its place in the rule, as the parser
#: gives it) that starts a column, named; which lines align together: _groups
_COLUMNS = {
    "field": {1: "type"},  # name  type
    "bit_field": {1: "bit:"},  # name : width
    "binding": {1: "binding="},
    "let": {2: "let="},  # let name = expr
    "header_binding": {2: "header="},  # header "key" = expr
    "enum_member": {1: "enum="},
    "assign": {1: "assign="},
    "stream_when": {1: "=>"},
    "stream_else": {1: "=>"},
    "template": {1: "{"},  # ping  { ... }
    "error_response": {1: "{"},
    "success_response": {1: "{"},
    "status_code": {1: "status name", 2: "status <-", 4: "status ->"},  # code name <- codes -> code
    "status_others": {1: "status ->"},
}

#: each column's least gap (spaces) before it, in the order columns come in a line; a trailing
#: comment's column is the last
_GAPS = {
    "type": 2,
    "bit:": 1,
    "binding=": 1,
    "let=": 1,
    "header=": 1,
    "enum=": 1,
    "assign=": 1,
    "=>": 1,
    "{": 1,
    "status name": 1,
    "status <-": 2,
    "status ->": 2,
    "#": 2,
}

# spacing: tokens take one space between them, but for these
_TIGHT_AFTER = frozenset({"(", "[", ".", "$"})
_TIGHT_BEFORE = frozenset({")", "]", ",", ".", "["})
_CALLS = frozenset({"call", "fieldtype_ref", "map_type"})  # f(x), tars.int(1), map(i32)
_UNARY = frozenset({"neg", "signed_int"})

_COMMENT = re.compile(r"#[^\n]*")
_SPACE = " \t\f\r\n"  # the grammar's WS


@dataclass
class _Tok:
    text: str  # as it is written out
    rule: str  # the rule it was parsed in
    line: int  # 1-based
    col: int  # 0-based, in the source
    stmt: int  # the innermost statement holding it (an index into _Spec.stmts)
    column: str | None = None  # the aligned column it starts, if its statement starts a line
    empty: str | None = None  # an empty column before it (a status row without '<-')

    @property
    def block_brace(self) -> bool:
        return self.text in ("{", "}") and self.rule != "map_lit"


@dataclass
class _Stmt:
    rule: str
    parent: int
    first: int  # its first token (an index into _Spec.toks)


@dataclass
class _Comment:
    text: str  # without trailing whitespace
    line: int


@dataclass
class _Spec:
    toks: list[_Tok]
    stmts: list[_Stmt]
    comments: list[_Comment]
    lines: int


def _pieces(token: Token) -> list[tuple[str, int, int]]:
    """A token as (text, line, column) pieces: one, but for 'and close' across a line break
    (one token of the grammar), whose two words stay on their lines."""
    text, line, col = str(token), token.line, token.column - 1
    if token.type != "AND_CLOSE":
        return [(text, line, col)]
    if token.end_line == line:
        return [("and close", line, col)]
    return [("and", line, col), ("close", token.end_line, token.end_column - 1 - len("close"))]


def _read(text: str) -> _Spec:
    """The tokens of a spec that parses, each with what the layout needs, and its comments."""
    toks: list[_Tok] = []
    stmts: list[_Stmt] = []
    spans: list[tuple[int, int]] = []
    # (node, the rule holding it, its statement, the column and empty column it starts)
    stack: list = [(token_tree(text), "start", -1, None, None)]
    while stack:
        node, rule, stmt, column, empty = stack.pop()
        if isinstance(node, Token):
            spans.append((node.start_pos, node.end_pos))
            for piece, line, col in _pieces(node):
                toks.append(_Tok(piece, rule, line, col, stmt, column, empty))
            continue
        rule = str(node.data)
        if rule in _STATEMENTS:
            stmts.append(_Stmt(rule, stmt, len(toks)))
            stmt = len(stmts) - 1
        columns = _COLUMNS.get(rule, {})
        kids = [(i, kid) for i, kid in enumerate(node.children) if kid is not None]
        for k in range(len(kids) - 1, -1, -1):
            i, kid = kids[k]
            kid_column = columns.get(i) or (column if k == 0 else None)
            kid_empty = empty if k == 0 else None
            if rule == "status_code" and i == 4 and node.children[2] is None:
                kid_empty = "status <-"
            stack.append((kid, rule, stmt, kid_column, kid_empty))
    # the comments: between the tokens, with the space the grammar ignores
    ends = [m.start() for m in re.finditer("\n", text)]  # (where each line ends)
    comments = []
    gaps = zip([0] + [end for _, end in spans], [start for start, _ in spans] + [len(text)])
    for start, end in gaps:
        gap = text[start:end]
        if _COMMENT.sub("", gap).strip(_SPACE):
            raise AssertionError(f"text between tokens that is not space or comments: {gap!r}")
        for m in _COMMENT.finditer(gap):
            line = bisect.bisect_left(ends, start + m.start()) + 1
            comments.append(_Comment(m.group().rstrip(), line))
    return _Spec(toks, stmts, comments, len(ends) + 1)


def _space(a: _Tok, b: _Tok) -> str:
    """What separates two tokens on one line."""
    if a.text in _TIGHT_AFTER or b.text in _TIGHT_BEFORE:
        return ""
    if a.text == "-" and a.rule in _UNARY:
        return ""
    if a.text == "{" and (a.rule == "map_lit" or b.text == "}"):  # {"k": v}, {}
        return ""
    if b.text == "}" and b.rule == "map_lit":
        return ""
    if b.text == "(" and b.rule in _CALLS:
        return ""
    if "slice" in (a.rule, b.rule) and ":" in (a.text, b.text):  # args[1:], args[3:3 + n]
        return ""
    if b.text == ":" and b.rule == "map_entry":
        return ""
    return " "


@dataclass
class _Line:
    toks: list[int] = field(default_factory=list)
    comment: str | None = None
    kind: str = "blank"  # blank, comment (only), start (of a statement), open, close, cont
    indent: int = 0
    group: tuple | None = None  # the lines it aligns its columns with, if any
    # the code in parts, each [column or None, text, [(token, offset in text)]]: the first part
    # at the indent, each other at its column
    parts: list = field(default_factory=list)
    code: str = ""
    at: dict = field(default_factory=dict)  # token -> its column in the output


def _lines(spec: _Spec) -> list[_Line]:
    """The spec's lines with their tokens, comments and kind; indented by block depth (but for
    continuation lines, whose indent comes later)."""
    lines = [_Line() for _ in range(spec.lines + 1)]  # (1-based)
    for i, tok in enumerate(spec.toks):
        lines[tok.line].toks.append(i)
    for comment in spec.comments:
        lines[comment.line].comment = comment.text
    depth = 0
    for line in lines[1:]:
        if not line.toks:
            line.kind = "comment" if line.comment is not None else "blank"
            continue
        first = spec.toks[line.toks[0]]
        if first.block_brace:
            line.kind = "close" if first.text == "}" else "open"
        elif spec.stmts[first.stmt].first == line.toks[0]:
            line.kind = "start"
        else:
            line.kind = "cont"
        line.indent = INDENT * (depth - (line.kind == "close"))
        for i in line.toks:
            tok = spec.toks[i]
            if tok.block_brace:
                depth += 1 if tok.text == "{" else -1
    return lines[1:]


def _parts(spec: _Spec, line: _Line) -> list:
    """A line's code in parts: a new part at each aligned column of the statement starting it,
    if the line has an alignment group."""
    stmt = spec.toks[line.toks[0]].stmt
    aligned = line.group is not None
    parts: list = []
    prev = None
    for i in line.toks:
        tok = spec.toks[i]
        own = aligned and tok.stmt == stmt
        if prev is None or (own and tok.column):
            if own and tok.empty:
                parts.append([tok.empty, "", []])
            parts.append([tok.column if own else None, "", []])
        else:
            parts[-1][1] += _space(prev, tok)
        parts[-1][2].append((i, len(parts[-1][1])))
        parts[-1][1] += tok.text
        prev = tok
    return parts


def _paragraphs(lines: list[_Line]) -> list[list[_Line]]:
    """The code lines between blank lines (a comment on its own line does not end one)."""
    out: list[list[_Line]] = [[]]
    for line in lines:
        if line.kind == "blank":
            out.append([])
        elif line.kind != "comment":
            out[-1].append(line)
    return [p for p in out if p]


def _alone(spec: _Spec, line: _Line) -> int | None:
    """The statement starting ``line`` if it has aligned columns and is the only statement of
    its kind in its block to start on the line, else None."""
    if line.kind != "start":
        return None
    stmt = spec.toks[line.toks[0]].stmt
    rule, parent = spec.stmts[stmt].rule, spec.stmts[stmt].parent
    if rule not in _COLUMNS:
        return None
    here = {spec.toks[i].stmt for i in line.toks}
    starts = set(line.toks)
    kin = [s for s in here if (spec.stmts[s].rule, spec.stmts[s].parent) == (rule, parent)]
    return stmt if sum(spec.stmts[s].first in starts for s in kin) == 1 else None


def _layout_of(spec: _Spec, stmt: int) -> int:
    """The layout (frame, record, inside) a field is in, through its if and else blocks."""
    parent = spec.stmts[stmt].parent
    while spec.stmts[parent].rule in ("if_block", "else_block", "else_if"):
        parent = spec.stmts[parent].parent
    return parent


def _groups(spec: _Spec, lines: list[_Line]) -> None:
    """Which lines align their columns together (``line.group``). The fields of a layout, its
    if and else blocks included, form one group: the layout reads as a table. Other statements
    align over a run of lines each starting one of them, in one block, with nothing but
    comments between; one continued on the next line is not aligned and ends its run."""
    continued, kind = [], "end"  # is the next line with code a continuation, for each line?
    for line in reversed(lines):
        continued.append(kind == "cont")
        kind = kind if line.kind in ("comment", "blank") else line.kind
    continued.reverse()
    run: tuple | None = None  # (parent statement, run number) of the run going on
    for n, line in enumerate(lines):
        if line.kind == "comment":
            continue
        stmt = _alone(spec, line)
        if stmt is not None and spec.stmts[stmt].rule == "field":
            line.group = ("layout", _layout_of(spec, stmt))
        elif stmt is not None and not continued[n]:
            parent = spec.stmts[stmt].parent
            if run is None or run[0] != parent:
                run = (parent, n)
            line.group = run
            continue
        run = None


def _align(group: list[_Line]) -> None:
    """Lay out the parts of a group's lines, each aligned column at the column of the line that
    needs it furthest right (its text before the column, then the column's gap). A column whose
    parts are all empty (status rows without '<-') takes no room."""
    done = {id(line): 1 for line in group}  # parts laid out
    for line in group:
        line.code = " " * line.indent + line.parts[0][1]
        line.at.update({i: line.indent + off for i, off in line.parts[0][2]})
    for column in _GAPS:
        lines = [
            line
            for line in group
            if done[id(line)] < len(line.parts) and line.parts[done[id(line)]][0] == column
        ]
        if not lines:
            continue
        filled = any(line.parts[done[id(line)]][1] for line in lines)
        at = max(len(line.code) + _GAPS[column] for line in lines)
        for line in lines:
            _, text, offsets = line.parts[done[id(line)]]
            done[id(line)] += 1
            if not filled:
                continue
            line.code = line.code.ljust(at) + text
            line.at.update({i: at + off for i, off in offsets})


def _continuation(spec: _Spec, lines: list[_Line], n: int, placed: dict) -> int:
    """The indent of continuation line ``n``: the column of the token on an earlier line of its
    statement that it started under, right of the statement's start (it stays aligned with that
    token wherever the token goes), else one level more than the line its statement starts on.
    ``placed``: for each column in the source, the lines laid out with a token there, in order,
    and its column now."""
    first = spec.toks[lines[n].toks[0]]
    head = spec.toks[spec.stmts[first.stmt].first]  # the statement's first token
    under = placed.get(first.col, [])
    nearest = bisect.bisect_left(under, (n, -1)) - 1  # (the last line before this one)
    if first.col > head.col and nearest >= 0 and under[nearest][0] >= head.line - 1:
        return under[nearest][1]
    return lines[head.line - 1].indent + INDENT


def _trailing_comments(spec: _Spec, lines: list[_Line]) -> None:
    """Put each code line's comment after it. One after a block's '{' (the block's heading) is
    two spaces on; the others line up in a column within a paragraph: those of one statement
    of the protocol that spans lines (a frame with its if blocks, a status map) together, those
    of its one-line statements together."""
    top = []  # each statement's statement of the protocol (the protocol's own: None)
    for stmt in spec.stmts:
        parent = stmt.parent
        top.append(None if parent < 0 else len(top) if parent == 0 else top[parent])
    spans: dict[int, set] = {}
    for tok in spec.toks:
        if top[tok.stmt] is not None:
            spans.setdefault(top[tok.stmt], set()).add(tok.line)
    for paragraph in _paragraphs(lines):
        columns: dict = {}
        for line in paragraph:
            last = spec.toks[line.toks[-1]]
            if line.comment is None:
                continue
            if last.block_brace and last.text == "{":
                line.code += "  " + line.comment
                continue
            stmt = top[spec.toks[line.toks[0]].stmt]
            key = stmt if stmt is None or len(spans[stmt]) > 1 else "one-line"
            columns.setdefault(key, []).append(line)
        for column in columns.values():
            at = max(len(line.code) + _GAPS["#"] for line in column)
            for line in column:
                line.code = line.code.ljust(at) + line.comment


def _layout(text: str) -> str:
    """``text`` (a spec that parses) in the canonical layout."""
    spec = _read(text)
    lines = _lines(spec)
    _groups(spec, lines)
    groups: dict[tuple, list[_Line]] = {}
    for line in lines:
        if line.kind in ("blank", "comment"):
            continue
        line.parts = _parts(spec, line)
        if line.kind != "cont":  # (the others are laid out below, at indents known then)
            groups.setdefault(line.group or ("line", id(line)), []).append(line)
    for group in groups.values():
        _align(group)
    placed: dict[int, list[tuple[int, int]]] = {}
    for n, line in enumerate(lines):
        for i, at in line.at.items():
            placed.setdefault(spec.toks[i].col, []).append((n, at))
    for n, line in enumerate(lines):  # continuation lines, in order: each may follow the last
        if line.kind == "cont":
            line.indent = _continuation(spec, lines, n, placed)
            _align([line])
            for i, at in line.at.items():
                bisect.insort(placed.setdefault(spec.toks[i].col, []), (n, at))
    _trailing_comments(spec, lines)
    # a comment on its own line: at the indent of the code line it comes before
    indent = 0
    for line in reversed(lines):
        if line.kind == "comment":
            line.code = " " * indent + line.comment
        elif line.kind != "blank":
            indent = line.indent + INDENT * (line.kind == "close")
    out = [line.code.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def _signature(text: str) -> tuple[list, list]:
    """What formatting must keep: each token (what it is, where it was parsed, its line) and
    each comment (its text and line)."""
    spec = _read(text)
    toks = [(t.text, t.rule, t.line) for t in spec.toks]
    return toks, [(c.text, c.line) for c in spec.comments]


def format_source(source: str, path: str = "<spec>") -> str:
    """``source`` in the canonical layout. SpecError (located at ``path``) if it does not parse,
    or if the layout would lose or move a token or a comment, or is not stable: the spec is
    then to be left as it is."""
    text = spec_text(source)
    with _located(path, text):  # (the compiler's diagnostics, and never a traceback)
        parse(text, path)
    try:
        out = _layout(text)
        if _signature(out) != _signature(text):
            raise AssertionError("the tokens or comments differ from the spec's")
        if _layout(out) != out:
            raise AssertionError("formatting the result again changes it")
    except Exception as e:  # a formatter bug: a diagnostic on the spec, and nothing written
        raise SpecError(
            NOWHERE,
            f"internal formatter error ({type(e).__name__}: {e}); the spec is left as it is, "
            "please report it with this spec",
        ).located(path, text) from None
    return out


def rewrite(path: Path, text: str) -> None:
    """Replace a spec's text at once: a temporary file beside it, renamed over it (an error
    leaves the old text), with the file's mode; through a symbolic link, its target."""
    target = path.resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8"))
        shutil.copymode(target, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
