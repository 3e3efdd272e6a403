"""`protoc-x build` is deterministic, and the committed generated/ matches specs/."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from protoc_x.compiler import compile_source

ROOT = Path(__file__).parents[2]


def _build(out: Path) -> None:
    """What `make build` writes: every codec, and into ``out/typed`` its typed scan."""
    _build_dir(ROOT / "specs", out, "--typed", str(out / "typed"))


def _build_dir(specs: Path, out: Path, *options: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", "build", *options, str(specs), "-o", str(out)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip


def _outputs(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.py*"))


def test_build_twice_is_byte_identical(tmp_path):
    _build(tmp_path / "a")
    _build(tmp_path / "b")
    a = _outputs(tmp_path / "a")
    assert a == _outputs(tmp_path / "b")
    assert len(a) >= 18  # eight protocols, their typed scans, the two packages' __init__
    for name in a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_generated_is_not_stale(tmp_path):
    """generated/ is what `protoc-x build specs` writes (no more: the contract), typed/ what
    --typed writes."""
    fresh = tmp_path / "fresh"
    _build(fresh)
    for built, committed in ((fresh, ROOT / "generated"), (fresh / "typed", ROOT / "typed")):
        names = sorted(p.name for p in built.iterdir() if p.is_file())
        there = sorted(p.name for p in committed.iterdir() if p.suffix in (".py", ".pyx"))
        assert names == there, f"{committed.name}/ is not what a build writes: run `make build`"
        for name in names:
            assert (committed / name).read_bytes() == (
                built / name
            ).read_bytes(), f"{committed.name}/{name} is stale against specs/: run `make build`"


def _comments(code: str) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return [t.string for t in tokens if t.type == tokenize.COMMENT]


SPECS = sorted(p.name for p in (ROOT / "specs").glob("*.xproto"))


@pytest.mark.parametrize("spec", SPECS)
def test_the_emitter_in_process_writes_the_committed_module(spec):
    """The same check as test_generated_is_not_stale, in this process and without black: the
    emitted module has the committed module's syntax tree (black keeps it; it only lays the code
    out) and its comments, in order. (The build above runs in a subprocess, which mutation
    testing cannot see; this one is what kills the emitter's and the planner's mutants.)"""
    path = ROOT / "specs" / spec
    code = compile_source(path.read_text(), str(path), path.stem, fmt=False)
    committed = (ROOT / "generated" / f"{path.stem}.py").read_text()
    assert ast.dump(ast.parse(code)) == ast.dump(ast.parse(committed))
    assert _comments(code) == _comments(committed)


def test_the_emitter_lays_out_with_black_at_100_columns():
    """With black (the default), compile_source returns the committed module byte for byte."""
    path = ROOT / "specs" / "xexample.xproto"
    code = compile_source(path.read_text(), str(path), path.stem)
    assert code == (ROOT / "generated" / "xexample.py").read_text()


def test_generated_is_black_clean():
    result = subprocess.run(
        [sys.executable, "-m", "black", "--check", "-q", "generated"], cwd=ROOT, capture_output=True
    )
    assert result.returncode == 0, result.stderr


def test_generated_imports_only_the_stable_api():
    for path in (ROOT / "generated").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                raise AssertionError(f"{path.name}: import {node.names[0].name}")
            if isinstance(node, ast.ImportFrom):
                assert node.module in ("protoc_x.runtime.api", "protoc_x.runtime.fieldtypes"), (
                    path.name,
                    node.module,
                )


def test_a_typed_scan_imports_nothing_but_c_declarations():
    """A typed scan takes every Python name it uses from its codec module when the loader
    binds it (the codec imports only the stable API), and cimports only Cython's declarations
    of CPython and libc."""
    scans = sorted((ROOT / "typed").glob("*.pyx"))
    assert len(scans) >= 8
    for path in scans:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith(("import ", "from ")):
                words = line.split()
                assert words[0] == "from" and words[2] == "cimport", (path.name, line)
                assert words[1].split(".")[0] in ("cpython", "libc"), (path.name, line)


def test_build_without_typed_writes_only_codecs(tmp_path):
    _build_dir(ROOT / "specs", tmp_path)
    assert {p.suffix for p in tmp_path.rglob("*") if p.is_file()} == {".py"}
    assert (tmp_path / "bolt.py").read_bytes() == (ROOT / "generated" / "bolt.py").read_bytes()


def test_generated_declares_the_api_version_before_it_imports_anything():
    """So a runtime of another major version refuses a generated plug-in for its version, not
    for the import of a name it lacks (runtime/plugins.py reads it from the failed import)."""
    from protoc_x.runtime.api import API_VERSION

    for path in sorted((ROOT / "generated").glob("*.py")):
        if path.name == "__init__.py":
            continue
        body = ast.parse(path.read_text()).body
        first = body[1]  # (after the docstring)
        assert isinstance(first, ast.Assign) and first.targets[0].id == "API_VERSION", path.name
        assert ast.literal_eval(first.value) == API_VERSION, path.name


def test_build_replaces_an_output_file_that_is_not_utf8(tmp_path):
    """A stray non-UTF-8 file where a module goes is overwritten, not a traceback."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "bolt.py").write_bytes(b"\xff\xfe")
    _build(out)
    assert (out / "bolt.py").read_bytes() == (ROOT / "generated" / "bolt.py").read_bytes()


@pytest.mark.parametrize("end", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_line_ends_of_any_system(tmp_path, end):
    """A spec saved with CRLF or lone-CR line ends builds the same module (a lone CR once made
    the first comment run to the end of the file), and errors count lines as an editor does."""
    text = (ROOT / "specs" / "xexample.xproto").read_text()
    spec = tmp_path / "specs" / "xexample.xproto"
    spec.parent.mkdir()
    spec.write_bytes(text.replace("\n", end).encode())
    _build_dir(spec.parent, tmp_path / "out")
    assert (tmp_path / "out" / "xexample.py").read_bytes() == (
        ROOT / "generated" / "xexample.py"
    ).read_bytes()
    lines = text.splitlines()
    bad = next(i for i, line in enumerate(lines) if "request_id   u32" in line)
    lines[bad] = lines[bad].replace("u32", "u33")
    spec.write_bytes(end.join(lines).encode())
    result = subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", "check", str(spec)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"{spec}:{bad + 1}:"), result.stderr
