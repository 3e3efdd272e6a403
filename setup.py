"""The optional compiled back end (issue 12): the runtime's hot modules compiled with Cython,
and the built-in codecs' typed scans (typed/NAME.pyx, from protoc-x build --typed typed).

Everything else about the package is in pyproject.toml. The modules stay plain Python files;
the ``.pxd`` file beside each one declares its classes as C types (typed attributes, methods
called in C), and Cython compiles the ``.py`` with those declarations. Where Cython or a C
compiler is missing, or ``PROTOC_X_PURE=1`` is set, the package is pure Python and runs the
same code; ``protoc_x.runtime.compiled()`` says which one is running (docs/performance.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def compiled_modules() -> tuple[str, ...]:
    """protoc_x.runtime.COMPILED_MODULES, from the package's own ``__init__.py`` (loaded alone:
    the build runs before the package is installed)."""
    spec = importlib.util.spec_from_file_location("_runtime_init", HERE / "runtime" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.COMPILED_MODULES


class OptionalBuildExt(build_ext):
    """A compile that fails leaves the pure-Python package, with a warning, not a failed
    install."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:  # the modules compile side by side
            self.parallel = os.cpu_count() or 1

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
    modules = compiled_modules()
    for name in modules:
        path = name.replace(".", "/")
        for suffix in (".py", ".pxd"):
            source = HERE / "runtime" / (path + suffix)
            target = package / (path + suffix)
            if not source.exists():  # (a module with nothing to declare has no .pxd)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            (target.parent / "__init__.py").touch()
            if not target.exists() or target.read_bytes() != source.read_bytes():
                shutil.copyfile(source, target)
    # the built-in codecs' typed scans (protoc-x build --typed typed), staged the same way
    typed = stage / "protoc_x" / "typed"
    typed.mkdir(parents=True, exist_ok=True)
    (typed / "__init__.py").touch()
    scans = sorted((HERE / "typed").glob("*.pyx"))
    for source in scans:
        target = typed / source.name
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
    return cythonize(
        [
            Extension(
                f"protoc_x.runtime.{name}",
                [f"build/cython/protoc_x/runtime/{name.replace('.', '/')}.py"],
            )
            for name in modules
        ]
        + [
            Extension(
                f"protoc_x.typed.{source.stem}",
                [f"build/cython/protoc_x/typed/{source.name}"],
            )
            for source in scans
        ],
        include_path=["build/cython"],
        compiler_directives={
            "language_level": 3,
            # types come from the .pxd files only; annotations stay documentation (Cython
            # would otherwise refuse a bytearray where an annotation says bytes)
            "annotation_typing": False,
        },
        nthreads=os.cpu_count() or 1,
        quiet=True,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
