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
