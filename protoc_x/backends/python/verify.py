"""The generated module checked before it is written: it must parse, import only the stable
API, and define only what the emitter means to (nothing a spec could smuggle in)."""

from __future__ import annotations

import ast
import re


from ...diagnostics import SpecError
from ...plan import Plan

_IMPORTABLE = ("protoc_x.runtime.api", "protoc_x.runtime.fieldtypes")


def _names_of(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
        return [stmt.name]
    return []


def verify(code: str, plan: Plan) -> None:
    """Compile a generated module and check the names it defines, without running it: only
    imports from the runtime API, assignments, classes, functions (the scan's readers of
    'inside' layouts) and the docstring at module level; no
    name defined twice; no slot that is also a class member. A failure is a SpecError at the
    spec construct responsible (the field whose name collides), else at the protocol."""
    spec = plan.checked.spec

    def fail(name: str | None, why: str) -> SpecError:
        pos = spec.pos
        if name is not None:  # a field's own name, or an internal one made from it
            bare = re.sub(r"^_(f|raw|state|at|err|lz|mp|parse|read|build|scan)_", "", name)
            info = plan.checked.fields.get(bare)
            pos = info.pos if info is not None else pos
        return SpecError(pos, f"the generated module would not load: {why}")

    try:
        tree = ast.parse(code, filename=f"{spec.name}.py")
        compile(tree, f"{spec.name}.py", "exec")
    except (SyntaxError, ValueError, MemoryError) as e:
        line = getattr(e, "lineno", None)
        raise fail(None, f"{type(e).__name__}: {getattr(e, 'msg', e)} (line {line})") from None
    body = tree.body
    if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)):
        raise fail(None, "no module docstring")
    defined: set[str] = set()
    for stmt in body[1:]:
        if isinstance(stmt, ast.ImportFrom):
            if stmt.module not in _IMPORTABLE or stmt.level:
                raise fail(None, f"imports {stmt.module}")
            for alias in stmt.names:
                name = alias.asname or alias.name
                if name in defined:
                    raise fail(None, f"{name!r} is imported twice")
                defined.add(name)
            continue
        if not isinstance(stmt, (ast.Assign, ast.ClassDef, ast.FunctionDef)):
            raise fail(None, f"a {type(stmt).__name__} statement at module level")
        for name in _names_of(stmt):
            if name in defined:
                raise fail(
                    name,
                    f"{name!r} is defined twice (the protocol's or an enum's name "
                    "makes a name the module already has)",
                )
            defined.add(name)
        if isinstance(stmt, ast.ClassDef):
            _verify_class(stmt, fail)


def _verify_class(cls: ast.ClassDef, fail) -> None:
    members: set[str] = set()
    slots: list[str] = []
    for stmt in cls.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # the docstring
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in stmt.targets
        ):
            slots = [
                e.value for e in getattr(stmt.value, "elts", []) if isinstance(e, ast.Constant)
            ]
            continue
        is_setter = isinstance(stmt, ast.FunctionDef) and any(
            isinstance(d, ast.Attribute) and d.attr == "setter" for d in stmt.decorator_list
        )
        for name in _names_of(stmt):
            if name in members and not is_setter:
                raise fail(name, f"{cls.name}.{name} is defined twice")
            members.add(name)
    seen: set[str] = set()
    for name in slots:
        if name in seen:
            raise fail(name, f"slot {name!r} of {cls.name} appears twice")
        if name in members:
            raise fail(name, f"slot {name!r} of {cls.name} is also a class member")
        seen.add(name)
