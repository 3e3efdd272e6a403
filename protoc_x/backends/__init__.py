"""The compiler's back ends. Each turns a planned spec (:class:`protoc_x.plan.Plan`, plain data
in the spec's own terms) into the files of one kind of output; the registry picks one by name.

- ``python``: the codec module the proxy loads (``protoc-x build``);
- ``typed``: that module's scan as Cython, for a compiled package (``protoc-x build --typed DIR``);
- ``doc``: a reference page (Markdown) and a frame diagram (SVG) (``protoc-x doc``);
- ``dissector``: a Wireshark dissector in Lua (``protoc-x dissector``).

A back end is a function ``(plan, source_name, source=...) → {file name: text}`` (``source``:
the spec's text): its files for one spec, named after the protocol, deterministic (the same spec gives the same bytes). A spec's errors
are found before any back end runs; a back end may still refuse a plan it cannot express with
a :class:`~protoc_x.diagnostics.SpecError` at the construct responsible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..plan import Plan


@dataclass(frozen=True)
class Backend:
    name: str
    render: Callable[..., dict[str, str]]


def _python(plan: Plan, source_name: str, source: str = "", fmt: bool = True) -> dict[str, str]:
    from . import python

    code = python.emit(plan, source_name, fmt=fmt)
    python.verify(code, plan)  # (a spec never yields a module that does not import)
    return {f"{plan.checked.spec.name}.py": code}


def _typed(plan: Plan, source_name: str, source: str = "", fmt: bool = True) -> dict[str, str]:
    """The typed scan (a Cython module) of the python back end's codec module."""
    from . import python

    emitter = python.Emitter(plan, source_name)
    code = emitter.render(fmt)
    python.verify(code, plan)
    return {f"{plan.checked.spec.name}.pyx": emitter.typed_scan(code)}


def _doc(plan: Plan, source_name: str, source: str = "") -> dict[str, str]:
    from . import doc

    return doc.render(plan, source_name, source)


def _dissector(plan: Plan, source_name: str, source: str = "") -> dict[str, str]:
    from . import lua

    return lua.render(plan, source_name, source)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("python", _python),
        Backend("typed", _typed),
        Backend("doc", _doc),
        Backend("dissector", _dissector),
    )
}


def backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown back end {name!r} (have: {', '.join(BACKENDS)})") from None
