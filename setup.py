"""The optional compiled back end (issue 12): the runtime's hot modules compiled with Cython.

Everything else about the package is in pyproject.toml. The modules stay plain Python files;
the ``.pxd`` file beside each one declares its classes as C types (typed attributes, methods
called in C), and Cython compiles the ``.py`` with those declarations. Where Cython or a C
compiler is missing, or ``PROTOC_X_PURE=1`` is set, the package is pure Python and runs the
same code; ``protoc_x.runtime.compiled()`` says which one is running (docs/performance.md).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent

#: runtime modules with a .pxd, compiled together (they call one another in C)
COMPILED = ("network", "stream", "pool", "proxy")


class OptionalBuildExt(build_ext):
    """A compile that fails leaves the pure-Python package, with a warning, not a failed
    install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # (no compiler, missing headers)
            self.skipped(e)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            self.skipped(e)

    def skipped(self, error: Exception) -> None:
        print(f"protoc-x: not compiled ({error}); the pure-Python runtime is used", file=sys.stderr)


def extensions() -> list:
    if os.environ.get("PROTOC_X_PURE"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    from setuptools import Extension

    # Cython finds a module's .pxd by the module's package path (protoc_x/runtime/X.pxd), but
    # the repository keeps the runtime at runtime/: a copy under that path is compiled.
    stage = HERE / "build" / "cython"
    package = stage / "protoc_x" / "runtime"
    package.mkdir(parents=True, exist_ok=True)
    for init in (stage / "protoc_x" / "__init__.py", package / "__init__.py"):
        init.touch()
    for name in COMPILED:
        for suffix in (".py", ".pxd"):
            source = HERE / "runtime" / (name + suffix)
            target = package / (name + suffix)
            if not target.exists() or target.read_bytes() != source.read_bytes():
                shutil.copyfile(source, target)
    return cythonize(
        [
            Extension(f"protoc_x.runtime.{name}", [f"build/cython/protoc_x/runtime/{name}.py"])
            for name in COMPILED
        ],
        include_path=["build/cython"],
        compiler_directives={
            "language_level": 3,
            # types come from the .pxd files only; annotations stay documentation (Cython
            # would otherwise refuse a bytearray where an annotation says bytes)
            "annotation_typing": False,
        },
        quiet=True,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
