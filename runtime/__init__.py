"""protoc-x runtime: the stable API (runtime.api), the field-type library (runtime.fieldtypes)
and the proxy layers.

Where the package was built with Cython, the hot modules (:data:`COMPILED_MODULES`) are also
installed compiled from these same files (setup.py); ``PROTOC_X_PURE=1`` in the environment
runs their Python source instead, which is how the tests cover both."""

from __future__ import annotations

import importlib.util
import os
import sys

_HERE = os.path.dirname(__file__)

#: the modules a build may compile, under this package: the request's path through the layers
#: (each with a .pxd beside it declaring its C types), and the Python a request runs between
#: them: the stable API's readers, routing, metrics, the rate limit's buckets and every field
#: type's readers
COMPILED_MODULES = (
    "network",
    "stream",
    "pool",
    "proxy",
    "api",
    "router",
    "metrics",
    "ratelimit",
) + tuple(
    "fieldtypes." + name[:-3]
    for name in sorted(os.listdir(os.path.join(_HERE, "fieldtypes")))
    if name.endswith(".py") and name != "__init__.py"
)


class _Source:
    """A meta-path finder that loads the Python source of the compiled modules."""

    def find_spec(self, name, path=None, target=None):
        prefix = __name__ + "."
        if not name.startswith(prefix) or name[len(prefix) :] not in COMPILED_MODULES:
            return None
        return importlib.util.spec_from_file_location(name, source_path(name[len(prefix) :]))


def source_path(module: str) -> str:
    """The .py file of ``module`` (one of :data:`COMPILED_MODULES`)."""
    return os.path.join(_HERE, *module.split(".")) + ".py"


if os.environ.get("PROTOC_X_PURE") and not any(isinstance(f, _Source) for f in sys.meta_path):
    sys.meta_path.insert(0, _Source())


def built(path: str) -> bool:
    """Whether the module whose ``__file__`` is ``path`` is the compiled one (setup.py)."""
    return not path.endswith(".py")


def compiled() -> bool:
    """Whether the running hot modules are the compiled ones."""
    from . import proxy

    return built(proxy.__file__)
