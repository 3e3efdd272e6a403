"""``protoc-x new NAME [-o DIR]``: a plug-in package for protocol NAME that builds and installs
as it comes (docs/api.md, "Plug-in packages"):

    DIR/pyproject.toml                  setuptools; the protoc_x.protocols entry point
    DIR/README.md                       how to build, install, test, regenerate and try it
    DIR/src/protoc_x_NAME/NAME.xproto   the spec (package data): a small length-prefixed RPC
    DIR/src/protoc_x_NAME/NAME.py       its codec, compiled now (``protoc-x build`` redoes it)
    DIR/samples/*.hex                   sample frames, written byte by byte from the layout
    DIR/tests/test_NAME.py              pytest: the installed codec decodes the samples, and
                                        is what the installed spec compiles to

DIR (default ``protoc-x-NAME``) must not exist; the files are written in a directory beside it
that is renamed into place once all are, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from . import __version__
from .compiler import compile_source
from .diagnostics import Pos, SpecError
from .runtime.api import API_VERSION


class ScaffoldError(Exception):
    """Why the package cannot be written (the CLI prints it and exits 1)."""


def check_name(name: str) -> None:
    """NAME must be a protocol name as specs spell it, and not a built-in protocol's."""
    from .check import check_protocol_name
    from .loader import builtin_protocols

    try:
        check_protocol_name(name, Pos(1, 1))
    except SpecError as e:
        raise ScaffoldError(e.message) from None
    if name in builtin_protocols():
        raise ScaffoldError(
            f"{name!r} is a built-in protocol: a plug-in of that name would be refused"
        )


def new(name: str, out: Path | None = None) -> Path:
    """Write the plug-in package for protocol ``name`` into ``out``; its path."""
    check_name(name)
    out = Path(out) if out is not None else Path(f"protoc-x-{name}")
    if out.exists() or out.is_symlink():
        raise ScaffoldError(f"{out} exists (protoc-x new writes a new directory)")
    files = package_files(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        for rel, text in files.items():
            path = stage / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        os.rename(stage, out)  # (fails, leaving ``out`` as it was, if it appeared meanwhile)
    except OSError as e:
        raise ScaffoldError(f"cannot write {out}: {e.strerror or e} (nothing written)") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def package_files(name: str) -> dict[str, str]:
    """The package's files for protocol ``name``: path (relative, /-separated) → text."""
    package = f"protoc_x_{name}"
    spec = _fill(SPEC, name)
    try:
        codec = compile_source(spec, f"{name}.xproto", name)
    except SpecError as e:  # a name the language allows but whose codec would clash (``x``)
        raise ScaffoldError(f"{name!r} cannot name a protocol: {e.message}") from None
    files = {
        "pyproject.toml": _fill(PYPROJECT, name),
        "README.md": _fill(README, name),
        ".gitignore": "build/\ndist/\n*.egg-info/\n__pycache__/\n",
        f"src/{package}/__init__.py": _fill(INIT, name),
        f"src/{package}/{name}.xproto": spec,
        f"src/{package}/{name}.py": codec,
        f"tests/test_{name}.py": _fill(TESTS, name),
    }
    for sample, data in samples().items():
        files[f"samples/{sample}.hex"] = data + "\n"
    return files


def _frame(kind: int, flags: int, request_id: int, status: int, method: str, body: bytes) -> str:
    """A frame of the scaffold's spec as hex, a group of digits per field."""
    m = method.encode()
    fields = [
        struct.pack(">H", 0xCAFE),
        bytes((kind,)),
        bytes((flags,)),
        struct.pack(">I", request_id),
        struct.pack(">H", status),
        bytes((len(m),)),
        m,
        body,
    ]
    size = struct.pack(">I", sum(map(len, fields)))
    return " ".join(f.hex() for f in [size] + fields if f)


def samples() -> dict[str, str]:
    """The sample frames, written from the layout the spec declares (not by its codec), so
    decoding them tests the codec. The tests' expectations are beside them (TESTS)."""
    return {
        "request": _frame(0, 0x00, 1, 0, "echo", b"hi there"),
        "response": _frame(1, 0x00, 1, 0, "echo", b"hi there"),
        "error": _frame(1, 0x00, 1, 1, "echo", b"protoc-x: 404 no route"),
        "oneway": _frame(0, 0x40, 2, 0, "log", b"started"),
        "heartbeat": _frame(0, 0x80, 3, 0, "", b""),
        "heartbeat_reply": _frame(1, 0x80, 3, 0, "", b""),
    }


def _fill(template: str, name: str) -> str:
    return (
        template.replace("@NAME@", name)
        .replace("@PACKAGE@", f"protoc_x_{name}")
        .replace("@DIST@", f"protoc-x-{name}")
        .replace("@PROTOC_X_VERSION@", __version__)
        .replace("@API_VERSION@", f"{API_VERSION[0]}.{API_VERSION[1]}")
    )


SPEC = """\
# @NAME@: a small length-prefixed RPC protocol, scaffolded by `protoc-x new @NAME@`. Make it your
# protocol's layout (the xproto language, docs/language.md of protoc-x), then regenerate the
# codec beside it (README.md).
protocol @NAME@ {
    byte_order big
    pool multiplex
    detect u16 at 4 == 0xcafe  # the magic after the size

    enum Kind : u8 { request = 0, response = 1 }

    frame {
        size        u32 = sizeof(frame) - 4  # the bytes after this field
        magic       u16 = 0xcafe
        kind        Kind
        bits u8 {
            heartbeat : 1                    # a keepalive ping, or its reply
            oneway    : 1                    # a request that gets no response
            unused    : 6
        }
        request_id  u32
        status      u16                      # responses: 0 ok, 1 error; requests: 0
        method_len  u8 = len(method)
        method      string[method_len]
        body        bytes[rest]
    }

    request_id = request_id
    status     = status
    method     = method
    body       = body

    stream {
        kind == response => response
        oneway == 1      => oneway
        else             => request
    }

    heartbeat when heartbeat == 1 {
        ping  { kind = request, heartbeat = 1 }
        reply { kind = response, heartbeat = 1, status = 0 }
    }

    status_map {
        0 ok     <- 200                                     -> 200
        1 error  <- 400, 403, 404, 429, 500, 502, 503, 504  -> 500
    }

    error_response   { kind = response, status = $status, method = request.method, body = $message }
    success_response { kind = response, status = 0, method = request.method, body = request.body }
}
"""

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "@DIST@"
version = "0.1.0"
description = "The @NAME@ protocol for the protoc-x proxy, as a plug-in package"
readme = "README.md"
requires-python = ">=3.11"
# the codec is generated by protoc-x @PROTOC_X_VERSION@ for its API @API_VERSION@ (the codec's API_VERSION)
dependencies = ["protoc-x>=@PROTOC_X_VERSION@"]

[project.optional-dependencies]
test = ["pytest>=8"]

# protoc-x finds the protocol through this entry point: name = the protocol's name,
# value = the codec module (its PROTOCOL and API_VERSION)
[project.entry-points."protoc_x.protocols"]
@NAME@ = "@PACKAGE@.@NAME@"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
@PACKAGE@ = ["*.xproto"]
"""

INIT = '''\
"""The @NAME@ protocol for protoc-x: the spec (@NAME@.xproto) and its generated codec (@NAME@.py),
found by protoc-x through the ``protoc_x.protocols`` entry point ``@NAME@``."""
'''

README = """\
# @DIST@

The `@NAME@` protocol for the protoc-x proxy, as a plug-in package: once it is installed beside protoc-x, `protoc-x run`, `serve`, `decode` and
`check` know `@NAME@` like a built-in protocol. Scaffolded by `protoc-x new @NAME@`.

| file | what |
|---|---|
| `src/@PACKAGE@/@NAME@.xproto` | the spec: edit it to your protocol's layout |
| `src/@PACKAGE@/@NAME@.py` | the codec `protoc-x build` generates from it (do not edit) |
| `pyproject.toml` | the entry point `@NAME@ = "@PACKAGE@.@NAME@"` in the group `protoc_x.protocols` |
| `samples/*.hex` | sample frames, a group of hex digits per field |
| `tests/test_@NAME@.py` | the installed codec decodes the samples and is current with the spec |

## Build, install, test

```
pip install '.[test]'          # or: pip wheel --no-deps . (then install the wheel)
python -m pytest               # tests the installed package
```

## After changing the spec

```
protoc-x build src/@PACKAGE@/@NAME@.xproto -o src/@PACKAGE@
pip install .
```

Update the samples and the tests' expectations to the new layout. The codec declares the
protoc-x API it was generated against (`API_VERSION`, now @API_VERSION@): a protoc-x of another
major API version, or an older minor one, refuses the plug-in with a message naming it and
both versions; rebuild it with that protoc-x.

## Try it

```
protoc-x decode @NAME@ samples/request.hex --hex
protoc-x serve @NAME@ --listen 127.0.0.1:12300
```

and a proxy config for `protoc-x run` with a listener speaking it:

```yaml
listeners:
  - name: @NAME@
    address: 127.0.0.1:12310
    protocol: @NAME@
    route_config: main
route_configs:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes: [{match: {prefix: /}, route: {cluster: @NAME@_servers}}]
clusters:
  - name: @NAME@_servers
    endpoints: [127.0.0.1:12300]
```
"""

TESTS = '''\
"""The @NAME@ codec as installed: the sample frames decode to what they say and encode back to
the same bytes, the protocol answers as the spec says, protoc-x finds it through its entry
point, and the codec is what the installed spec compiles to."""

from importlib import metadata, resources
from pathlib import Path

import pytest

from protoc_x.runtime.api import StreamType, check_api_version
from @PACKAGE@ import @NAME@ as codec

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
PROTOCOL = codec.PROTOCOL

#: what each sample holds: request id, stream type, heartbeat, status, method, body
EXPECT = {
    "request": (1, StreamType.REQUEST, False, None, "echo", b"hi there"),
    "response": (1, StreamType.RESPONSE, False, 0, "echo", b"hi there"),
    "error": (1, StreamType.RESPONSE, False, 1, "echo", b"protoc-x: 404 no route"),
    "oneway": (2, StreamType.ONEWAY, False, None, "log", b"started"),
    "heartbeat": (3, StreamType.REQUEST, True, None, "", b""),
    "heartbeat_reply": (3, StreamType.RESPONSE, True, 0, "", b""),
}


def sample(name: str) -> bytes:
    return bytes.fromhex((SAMPLES / f"{name}.hex").read_text())


def test_every_sample_has_its_expectation():
    assert sorted(p.stem for p in SAMPLES.glob("*.hex")) == sorted(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_a_sample_decodes_to_what_it_holds_and_encodes_back(name):
    data = sample(name)
    frame = PROTOCOL.decode(data + b"\\xca")  # (a next frame's first byte is not read)
    assert frame.length == len(data)
    got = (
        frame.get_request_id(),
        frame.get_stream_type(),
        frame.is_heartbeat(),
        frame.get_status(),
        frame.get_method(),
        bytes(frame.get_body()),
    )
    assert got == EXPECT[name]
    assert frame.encode() == data
    assert PROTOCOL.decode(data[:-1]) is None  # (a frame in part: more bytes are needed)


def test_the_protocol_answers_as_the_spec_says():
    request = PROTOCOL.decode(sample("request"))
    assert PROTOCOL.success_response(request).encode() == sample("response")
    assert PROTOCOL.hijack(request, 404).encode() == sample("error")
    heartbeat = PROTOCOL.decode(sample("heartbeat"))
    assert PROTOCOL.reply(heartbeat).encode() == sample("heartbeat_reply")
    assert PROTOCOL.trigger(3).encode() == sample("heartbeat")


def test_protoc_x_finds_the_codec_through_its_entry_point():
    from protoc_x.loader import protocols

    (point,) = [p for p in metadata.entry_points(group="protoc_x.protocols") if p.name == "@NAME@"]
    assert point.dist.name == "@DIST@" and point.load() is codec
    assert protocols()["@NAME@"] is PROTOCOL
    check_api_version("@NAME@", codec.API_VERSION)  # (raises if this protoc-x refuses it)


def test_the_codec_is_current_with_the_spec():
    """Else: protoc-x build src/@PACKAGE@/@NAME@.xproto -o src/@PACKAGE@ (and reinstall)."""
    from protoc_x.compiler import compile_source

    spec = resources.files("@PACKAGE@").joinpath("@NAME@.xproto").read_text(encoding="utf-8")
    built = compile_source(spec, "@NAME@.xproto", "@NAME@")
    assert built == Path(codec.__file__).read_text(encoding="utf-8")
'''
