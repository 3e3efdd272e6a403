"""Compiler diagnostics: ``file:line:col: error: message``, the source line and a caret."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pos:
    line: int
    col: int


NOWHERE = Pos(1, 1)


class SpecError(Exception):
    """An error in a spec, with its position. ``render`` gives the user-facing text."""

    def __init__(self, pos: Pos, message: str):
        super().__init__(message)
        self.pos = pos
        self.message = message
        self.path = "<spec>"
        self.source = ""

    def located(self, path: str, source: str) -> "SpecError":
        self.path, self.source = path, source
        return self

    def render(self) -> str:
        head = f"{self.path}:{self.pos.line}:{self.pos.col}: error: {self.message}"
        lines = self.source.splitlines()
        if 1 <= self.pos.line <= len(lines):
            line = lines[self.pos.line - 1].replace("\t", " ")
            return f"{head}\n{line}\n{' ' * (self.pos.col - 1)}^"
        return head

    def __str__(self) -> str:
        return self.render()


#: at most this many errors of one spec are shown (the rest are counted), as a C compiler's
#: error limit: a spec with thousands of bad lines gives a readable report
ERROR_LIMIT = 50


class SpecErrors(SpecError):
    """Several independent errors, of one spec or of several (already located), in source
    order. Where one error is expected it is the first of them (``pos``, ``message``);
    ``render`` shows them all."""

    def __init__(self, errors: list[SpecError]):
        flat = [x for e in errors for x in (e.errors if isinstance(e, SpecErrors) else [e])]
        unique = {(e.path, e.pos.line, e.pos.col, e.message): e for e in reversed(flat)}
        self.errors = [unique[k] for k in sorted(unique)]
        first = self.errors[0]
        super().__init__(first.pos, first.message)
        self.path, self.source = first.path, first.source

    def located(self, path: str, source: str) -> "SpecError":
        for e in self.errors:
            e.located(path, source)
        return super().located(path, source)

    def render(self) -> str:
        shown = [e.render() for e in self.errors[:ERROR_LIMIT]]
        if len(self.errors) > ERROR_LIMIT:
            shown.append(f"{self.path}: {len(self.errors) - ERROR_LIMIT} more errors not shown")
        return "\n".join(shown)


def combined(errors: list[SpecError]) -> SpecError:
    """One exception for ``errors`` (not empty): the error itself when there is one."""
    return SpecErrors(errors) if len(errors) > 1 else errors[0]
