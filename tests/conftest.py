"""The suite runs on the compiled runtime where the build made one, and on its Python source with
PROTOC_X_PURE=1 (`make test` runs both). An editable install compiles in place: a compiled module
older than its source would test code that is not the source's, so the run stops instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protoc_x.runtime import COMPILED_MODULES, compiled, source_path


def pytest_configure(config) -> None:
    if not compiled():
        return
    for name in COMPILED_MODULES:
        source = Path(source_path(name))
        built = next(source.parent.glob(f"{source.stem}.*.so"), None)
        for path in (source, source.with_suffix(".pxd")):
            if built is not None and path.exists() and path.stat().st_mtime > built.stat().st_mtime:
                pytest.exit(
                    f"{built.name} is older than {path.name}: `make` rebuilds it (or set "
                    "PROTOC_X_PURE=1 to test the Python source)",
                    returncode=2,
                )


def pytest_report_header(config) -> str:
    return (
        "runtime: "
        + ("compiled" if compiled() else "Python source")
        + (" (PROTOC_X_PURE=1)" if os.environ.get("PROTOC_X_PURE") else "")
    )
