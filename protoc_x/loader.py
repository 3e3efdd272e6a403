"""Find protocol codecs: the built-in generated modules, the installed plug-ins'
(``protoc_x.protocols`` entry points, runtime/plugins.py), plus extra specs (.xproto, compiled
in memory) or generated modules (.py) named by the user."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import os
import sys
import types
from pathlib import Path

from protoc_x.runtime import plugins
from protoc_x.runtime.api import PluginError, XProtocol, check_api_version

from .compiler import compile_source, find_specs, read_spec


def builtin_protocols() -> dict[str, XProtocol]:
    import protoc_x.generated as generated

    out = {}
    for info in sorted(pkgutil.iter_modules(generated.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"protoc_x.generated.{info.name}")
        proto = getattr(module, "PROTOCOL", None)
        if isinstance(proto, XProtocol):
            use_typed_scan(module, proto)
            out[proto.name] = proto
    return out


def use_typed_scan(module: types.ModuleType, proto: XProtocol) -> bool:
    """Give ``proto`` the typed scan of its codec ``module`` (a built-in's, ``protoc_x.typed.NAME``
    beside ``protoc_x.generated.NAME``: ``protoc-x build --typed typed``; docs/performance.md)
    when one is compiled, generated with this very module, and ``PROTOC_X_PURE`` is not set.
    Whether it did."""
    if os.environ.get("PROTOC_X_PURE"):
        return False
    package, _, name = module.__name__.rpartition(".")
    try:
        typed = importlib.import_module(f"{package.rpartition('.')[0]}.typed.{name}")
        codec = Path(module.__file__).read_bytes()
    except (ImportError, OSError):  # (not compiled: the codec's own scan)
        return False
    if getattr(typed, "CODEC_SHA256", None) != hashlib.sha256(codec).hexdigest():
        return False  # generated with another codec module: stale
    typed.bind(vars(module))
    proto.scan = types.MethodType(typed.scan, proto)
    return True


def installed_protocols() -> tuple[dict[str, XProtocol], dict[str, str]]:
    """The built-in protocols and every installed plug-in's, and where each comes from
    (``built in``, ``plug-in 'acme' (protoc-x-acme 0.1.0)``). PluginError when a plug-in is
    refused, or takes a built-in protocol's name."""
    found = builtin_protocols()
    origin = {name: "built in" for name in found}
    for name, (proto, plugin) in plugins.protocols().items():
        if name in found:
            raise PluginError(f"protocol {name!r} is defined twice: built in, and by {plugin}")
        found[name] = proto
        origin[name] = str(plugin)
    return found, origin


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
            if "API_VERSION" in module.__dict__:  # (set before what failed: say if it is why)
                check_api_version(f"module {path}", module.API_VERSION)
            raise ImportError(f"{path}: cannot load: {type(e).__name__}: {e}") from None
        if "API_VERSION" in module.__dict__:  # (a generated module: refused as a plug-in is)
            check_api_version(f"module {path}", module.API_VERSION)
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
    """Built-in and plug-in protocols plus those under ``extra``; a name defined twice is an
    error (ValueError; PluginError for a plug-in that is refused)."""
    found, origin = installed_protocols()
    for p in extra:
        for proto in load_path(Path(p)):
            if proto.name in found:
                raise ValueError(
                    f"protocol {proto.name!r} is defined twice ({origin[proto.name]}, and {p})"
                )
            found[proto.name] = proto
            origin[proto.name] = str(p)
    return found


def installed_spec(name: str) -> Path | None:
    """The spec an installed protocol was built from: a built-in's ships in ``protoc_x.specs``,
    a plug-in's as NAME.xproto beside its codec module (what ``protoc-x new`` lays out). None if
    there is no such protocol, or it ships no spec. For ``doc`` and ``dissector`` of a name."""
    import sys

    try:
        found, _ = installed_protocols()
    except PluginError:
        return None
    proto = found.get(name)
    if proto is None:
        return None
    module = sys.modules.get(type(proto).__module__)
    if module is not None and module.__name__.startswith("protoc_x.generated."):
        here = Path(__file__).resolve().parent  # specs/ beside the package (a clone), or in it
        places = [here.parent / "specs", here / "specs"]
    else:
        places = [Path(module.__file__).parent] if getattr(module, "__file__", None) else []
    for place in places:
        if (place / f"{name}.xproto").is_file():
            return place / f"{name}.xproto"
    return None
