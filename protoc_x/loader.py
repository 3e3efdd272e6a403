"""Find protocol codecs: the built-in generated modules plus extra specs (.xproto, compiled in
memory) or generated modules (.py) named by the user."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import types
from pathlib import Path

from protoc_x.runtime.api import XProtocol

from .compiler import compile_source, find_specs, read_spec


def builtin_protocols() -> dict[str, XProtocol]:
    import protoc_x.generated as generated

    out = {}
    for info in sorted(pkgutil.iter_modules(generated.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"protoc_x.generated.{info.name}")
        proto = getattr(module, "PROTOCOL", None)
        if isinstance(proto, XProtocol):
            out[proto.name] = proto
    return out


def load_module_source(name: str, code: str, origin: str) -> types.ModuleType:
    module = types.ModuleType(f"protocx_user_{name}")
    module.__file__ = origin
    exec(compile(code, origin, "exec"), module.__dict__)  # our own compiler's output
    return module


def load_path(path: Path) -> list[XProtocol]:
    """Protocols defined by a spec, a generated module, or a directory of specs."""
    if path.suffix == ".py":
        try:
            key = (str(path.resolve()), path.read_bytes())
        except OSError as e:
            raise ImportError(f"{path}: cannot load: {e.strerror or e}") from None
        if key in _LOADED:
            return [_LOADED[key]]
        spec = importlib.util.spec_from_file_location(f"protocx_user_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"{path}: cannot load")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:  # a plug-in module is the user's code: whatever it raises, even SystemExit
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:
            sys.modules.pop(spec.name, None)
            raise ImportError(f"{path}: cannot load: {type(e).__name__}: {e}") from None
        proto = getattr(module, "PROTOCOL", None)
        if not isinstance(proto, XProtocol):
            raise ImportError(f"{path}: defines no PROTOCOL (an XProtocol)")
        _LOADED[key] = proto
        return [proto]
    out = []
    for spec_path in find_specs([path]):
        text = read_spec(spec_path)
        key = (str(spec_path.resolve()), text)
        proto = _LOADED.get(key)
        if proto is None:
            code = compile_source(text, str(spec_path), spec_path.stem)
            proto = load_module_source(spec_path.stem, code, str(spec_path)).PROTOCOL
            _LOADED[key] = proto
        out.append(proto)
    return out


#: each spec's or module's protocol, by its path and text: loading an unchanged file again (a
#: reload) gives the same protocol, so the listeners that speak it are unchanged
_LOADED: dict[tuple, XProtocol] = {}


def protocols(extra: list[str | Path] = ()) -> dict[str, XProtocol]:
    """Built-in protocols plus those under ``extra``; a name defined twice is an error."""
    found = builtin_protocols()
    origin = {name: "built in" for name in found}
    for p in extra:
        for proto in load_path(Path(p)):
            if proto.name in found:
                raise ValueError(
                    f"protocol {proto.name!r} is defined twice ({origin[proto.name]}, and {p})"
                )
            found[proto.name] = proto
            origin[proto.name] = str(p)
    return found
