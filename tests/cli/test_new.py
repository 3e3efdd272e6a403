"""`protoc-x new NAME [-o DIR]`: the plug-in package it writes, and what it refuses.
tests/e2e/test_plugin_package.py builds, installs and runs the package."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from protoc_x import cli, scaffold
from protoc_x.compiler import compile_source
from protoc_x.loader import load_module_source
from protoc_x.runtime.api import API_VERSION, StreamType

FILES = [
    ".gitignore",
    "README.md",
    "pyproject.toml",
    "samples/error.hex",
    "samples/heartbeat.hex",
    "samples/heartbeat_reply.hex",
    "samples/oneway.hex",
    "samples/request.hex",
    "samples/response.hex",
    "src/protoc_x_acme/__init__.py",
    "src/protoc_x_acme/acme.py",
    "src/protoc_x_acme/acme.xproto",
    "tests/test_acme.py",
]


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_new_writes_the_package_in_protoc_x_NAME(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["new", "acme"]) == 0
    assert capsys.readouterr().out == "protoc-x-acme\n"
    root = tmp_path / "protoc-x-acme"
    assert listing(root) == FILES
    assert listing(tmp_path) == [f"protoc-x-acme/{f}" for f in FILES]  # (no staging left)
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "protoc-x-acme"
    assert project["project"]["entry-points"] == {
        "protoc_x.protocols": {"acme": "protoc_x_acme.acme"}
    }
    assert project["tool"]["setuptools"]["package-data"] == {"protoc_x_acme": ["*.xproto"]}
    spec = (root / "src/protoc_x_acme/acme.xproto").read_text()
    codec = (root / "src/protoc_x_acme/acme.py").read_text()
    assert codec == compile_source(spec, "acme.xproto", "acme")  # as `protoc-x build` writes it
    assert f"API_VERSION = {API_VERSION!r}\n" in codec
    assert (
        "protoc-x build src/protoc_x_acme/acme.xproto -o src/protoc_x_acme"
        in (root / "README.md").read_text()
    )


@pytest.mark.parametrize("name", ["acme", "y", "a_much_longer_protocol_name"])
def test_the_scaffolded_spec_is_formatted_and_makes_every_back_end(name, tmp_path, capsys):
    """A user's first `protoc-x fmt --check` of the scaffold passes, and doc and dissector take it."""
    root = scaffold.new(name, tmp_path / "p")
    spec = root / f"src/protoc_x_{name}/{name}.xproto"
    assert cli.main(["fmt", "--check", str(spec)]) == 0, capsys.readouterr()
    assert cli.main(["doc", str(spec), "-o", str(tmp_path / "out")]) == 0
    assert cli.main(["dissector", str(spec), "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{name}.lua",
        f"{name}.md",
        f"{name}.svg",
    ]


def test_the_samples_are_frames_of_the_spec(tmp_path):
    root = scaffold.new("acme", tmp_path / "p")
    proto = load_module_source(
        "acme", (root / "src/protoc_x_acme/acme.py").read_text(), "x"
    ).PROTOCOL
    kinds = {}
    for path in sorted((root / "samples").glob("*.hex")):
        data = bytes.fromhex(path.read_text())
        frame = proto.decode(data)
        assert frame.length == len(data) and frame.encode() == data, path.name
        kinds[path.stem] = (frame.get_stream_type(), frame.is_heartbeat(), frame.get_status())
    assert kinds == {
        "request": (StreamType.REQUEST, False, None),
        "response": (StreamType.RESPONSE, False, 0),
        "error": (StreamType.RESPONSE, False, 1),
        "oneway": (StreamType.ONEWAY, False, None),
        "heartbeat": (StreamType.REQUEST, True, None),
        "heartbeat_reply": (StreamType.RESPONSE, True, 0),
    }
    test = (root / "tests/test_acme.py").read_text()
    compile(test, "test_acme.py", "exec")  # (the e2e test runs it where the package is installed)
    assert "from protoc_x_acme import acme as codec" in test


def test_new_refuses_an_existing_directory_and_leaves_it_alone(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep").write_text("x")
    assert cli.main(["new", "acme", "-o", str(out)]) == 1
    assert capsys.readouterr().err == f"error: {out} exists (protoc-x new writes a new directory)\n"
    assert listing(tmp_path) == ["mine/keep"]


@pytest.mark.parametrize(
    "name,says",
    [
        ("Acme", "protocol name 'Acme' must be lowercase letters, digits, '_'"),
        ("acme-2", "protocol name 'acme-2' must be lowercase letters, digits, '_'"),
        ("_acme", "protocol name '_acme' may not start with '_' (reserved for generated code)"),
        ("class", "protocol name 'class' is a Python keyword"),
        ("bolt", "'bolt' is a built-in protocol: a plug-in of that name would be refused"),
        (
            "x",
            "'x' cannot name a protocol: the generated module would not load: 'XFrame' is"
            " defined twice (the protocol's or an enum's name makes a name the module already has)",
        ),
    ],
)
def test_new_refuses_a_name_a_spec_could_not_have(tmp_path, capsys, name, says):
    assert cli.main(["new", name, "-o", str(tmp_path / "p")]) == 1
    assert capsys.readouterr().err == f"error: {says}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch, capsys):
    written = []
    real = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        if len(written) == 4:
            raise OSError(28, "No space left on device")
        written.append(self)
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert cli.main(["new", "acme", "-o", str(tmp_path / "deep" / "p")]) == 1
    assert capsys.readouterr().err == (
        f"error: cannot write {tmp_path / 'deep' / 'p'}: No space left on device (nothing written)\n"
    )
    assert len(written) == 4 and listing(tmp_path) == []
