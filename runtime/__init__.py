"""protoc-x runtime: the stable API (runtime.api), the field-type library (runtime.fieldtypes)
and the proxy layers.

Where the package was built with Cython, the hot modules (:data:`COMPILED_MODULES`) are also
installed compiled from these same files (setup.py); ``PROTOC_X_PURE=1`` in the environment
runs their Python source instead, which is how the tests cover both."""

from __future__ import annotations

import importlib.util
import os
import sys

#: the modules a build may compile (each has a .pxd beside it declaring its C types)
COMPILED_MODULES = ("network", "stream", "pool", "proxy")


class _Source:
    """A meta-path finder that loads the Python source of the compiled modules."""

    def find_spec(self, name, path=None, target=None):
        package, _, leaf = name.rpartition(".")
        if package != __name__ or leaf not in COMPILED_MODULES:
            return None
        return importlib.util.spec_from_file_location(
            name, os.path.join(os.path.dirname(__file__), leaf + ".py")
        )


if os.environ.get("PROTOC_X_PURE") and not any(isinstance(f, _Source) for f in sys.meta_path):
    sys.meta_path.insert(0, _Source())


def compiled() -> bool:
    """Whether the running hot modules are the compiled ones."""
    from . import proxy

    return not proxy.__file__.endswith(".py")
