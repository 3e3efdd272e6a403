"""Plug-in packages (runtime/plugins.py): protocols, field types and filters found through entry
points, each refused unless built for this API's major version and no newer minor one.

The distributions here are what pip writes, made by hand: a directory on sys.path holding a
``NAME-VERSION.dist-info`` (METADATA, entry_points.txt) and the plug-in's modules, found by
importlib.metadata as an installed package is. tests/e2e/test_plugin_package.py does it for real
(`protoc-x new`, a wheel, a fresh venv, `protoc-x run`)."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest

from protoc_x import start
from protoc_x.compiler import compile_source
from protoc_x.diagnostics import SpecError
from protoc_x.loader import installed_protocols, load_module_source, protocols
from protoc_x.runtime import api, plugins
from protoc_x.runtime import filters as filters_package
from protoc_x.runtime.api import PluginError, StreamType, check_api_version
from protoc_x.runtime.config import ConfigError, parse_config
from protoc_x.runtime.fieldtypes import library, library_names
from protoc_x.runtime.filters import filters

from .harness import client, free_port, proxy_running, run, simple_config, upstream

ROOT = Path(__file__).parents[2]
XEXAMPLE = (ROOT / "specs" / "xexample.xproto").read_text()
REQUEST = bytes.fromhex("78 01 00 00000001 00000005 68656c6c6f")  # xexample's sample request


@pytest.fixture
def site(tmp_path, monkeypatch):
    """``install(dist, entry_points, modules)``: a distribution installed for this test only."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    written: list[str] = []

    def install(dist: str, entry_points: dict, modules: dict, version: str = "0.1.0") -> None:
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = []
        for group, points in entry_points.items():
            lines += [f"[{group}]"] + [f"{name} = {value}" for name, value in points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for name, text in modules.items():
            (root / f"{name}.py").write_text(text)
            written.append(name)
        importlib.invalidate_caches()

    yield install
    for name in written:
        sys.modules.pop(name, None)


def codec(name: str, version: str | None = "(1, 0)", spec: str = XEXAMPLE) -> str:
    """The generated module of xexample renamed ``name``, declaring ``version`` (None: no
    declaration)."""
    code = compile_source(spec.replace("protocol xexample", f"protocol {name}"), "x", name)
    line = "API_VERSION = (1, 0)\n"
    assert line in code
    return code.replace(line, "" if version is None else f"API_VERSION = {version}\n")


# ---- the version rule ----------------------------------------------------------------------


def test_the_same_version_is_accepted():
    assert api.API_VERSION == (1, 0)
    check_api_version("plug-in 'x' (x 1)", (1, 0))


@pytest.mark.parametrize(
    "declared,says",
    [
        ((1, 1), "built for API 1.1; this protoc-x has API 1.0"),  # a newer minor
        ((2, 0), "built for API 2.0; this protoc-x has API 1.0"),  # another major, newer
        ((0, 9), "built for API 0.9; this protoc-x has API 1.0"),  # another major, older
        (None, "declares no API_VERSION"),
        ("1.0", "its API_VERSION is '1.0', not (major, minor)"),
        ((1,), "its API_VERSION is (1,), not (major, minor)"),
        ([1, 0], "its API_VERSION is [1, 0], not (major, minor)"),
        ((1, -1), "not (major, minor)"),
        ((True, 0), "not (major, minor)"),
    ],
)
def test_another_major_a_newer_minor_or_no_declaration_is_refused(declared, says):
    with pytest.raises(PluginError) as e:
        check_api_version("plug-in 'acme' (protoc-x-acme 0.1.0)", declared)
    assert str(e.value).startswith("plug-in 'acme' (protoc-x-acme 0.1.0) is refused: ")
    assert says in str(e.value)


def test_an_older_minor_is_accepted(monkeypatch):
    monkeypatch.setattr(api, "API_VERSION", (1, 3))
    for minor in (0, 2, 3):
        check_api_version("plug-in 'x' (x 1)", (1, minor))
    with pytest.raises(PluginError, match=r"built for API 1\.4; this protoc-x has API 1\.3"):
        check_api_version("plug-in 'x' (x 1)", (1, 4))


# ---- protocols -----------------------------------------------------------------------------


def test_a_protocol_plugin_is_a_protocol_like_the_built_in_ones(site):
    site(
        "protoc-x-acme", {plugins.PROTOCOLS: {"acme": "acme_codec"}}, {"acme_codec": codec("acme")}
    )
    found, origin = installed_protocols()
    assert origin["acme"] == "plug-in 'acme' (protoc-x-acme 0.1.0)"
    assert origin["xexample"] == "built in"
    frame = found["acme"].decode(REQUEST)
    assert (frame.get_request_id(), bytes(frame.get_body())) == (1, b"hello")
    assert protocols()["acme"] is found["acme"]


def test_the_entry_point_may_name_the_protocol_object(site):
    site(
        "protoc-x-acme",
        {plugins.PROTOCOLS: {"acme": "acme_object:PROTOCOL"}},
        {"acme_object": codec("acme")},
    )
    assert protocols()["acme"].decode(REQUEST).get_stream_type() is StreamType.REQUEST


@pytest.mark.parametrize(
    "version,says",
    [
        ("(1, 99)", "built for API 1.99; this protoc-x has API 1.0"),
        ("(2, 0)", "built for API 2.0; this protoc-x has API 1.0"),
        (None, "declares no API_VERSION"),
    ],
)
def test_a_protocol_plugin_for_another_api_is_refused_naming_it(site, version, says):
    site(
        "protoc-x-acme", {plugins.PROTOCOLS: {"acme": "acme_v"}}, {"acme_v": codec("acme", version)}
    )
    with pytest.raises(PluginError) as e:
        protocols()
    assert str(e.value).startswith("plug-in 'acme' (protoc-x-acme 0.1.0) is refused: ")
    assert says in str(e.value)


def test_a_plugin_that_fails_to_import_after_declaring_another_major_is_refused_for_it(site):
    """A plug-in for API 2.0 typically fails at its import of a name 1.0 does not have: the
    version it declared before that is the reason given."""
    text = codec("acme", "(2, 0)").replace(
        "from protoc_x.runtime.api import (", "from protoc_x.runtime.api import (XFrameV2, ", 1
    )
    site("protoc-x-acme", {plugins.PROTOCOLS: {"acme": "acme_v2"}}, {"acme_v2": text})
    with pytest.raises(
        PluginError, match=r"refused: built for API 2\.0; this protoc-x has API 1\.0"
    ):
        protocols()


def test_a_plugin_that_fails_to_import_says_why(site):
    site(
        "protoc-x-acme",
        {plugins.PROTOCOLS: {"acme": "acme_broken"}},
        {"acme_broken": "API_VERSION = (1, 0)\nraise SystemExit(3)\n"},
    )
    with pytest.raises(PluginError) as e:
        protocols()
    assert str(e.value) == (
        "plug-in 'acme' (protoc-x-acme 0.1.0) cannot load acme_broken: SystemExit: 3"
    )


def test_a_protocol_plugin_must_be_a_protocol_named_as_its_entry_point(site):
    site("protoc-x-a", {plugins.PROTOCOLS: {"acme": "acme_other"}}, {"acme_other": codec("other")})
    with pytest.raises(PluginError, match="its protocol is named 'other': the entry point's name"):
        protocols()


def test_a_protocol_plugin_without_a_protocol_is_refused(site):
    site(
        "protoc-x-a",
        {plugins.PROTOCOLS: {"acme": "acme_none"}},
        {"acme_none": "API_VERSION = (1, 0)\n"},
    )
    with pytest.raises(PluginError, match="neither an XProtocol nor a module with one as PROTOCOL"):
        protocols()


def test_a_protocol_plugin_taking_a_built_in_name_is_an_error_naming_both(site):
    site(
        "protoc-x-x", {plugins.PROTOCOLS: {"xexample": "xx_codec"}}, {"xx_codec": codec("xexample")}
    )
    with pytest.raises(PluginError) as e:
        protocols()
    assert str(e.value) == (
        "protocol 'xexample' is defined twice: built in, and by plug-in 'xexample' (protoc-x-x 0.1.0)"
    )


def test_two_plugins_of_one_name_are_an_error_naming_both(site):
    site("protoc-x-one", {plugins.PROTOCOLS: {"acme": "acme_one"}}, {"acme_one": codec("acme")})
    site(
        "protoc-x-two",
        {plugins.PROTOCOLS: {"acme": "acme_two"}},
        {"acme_two": codec("acme")},
        "2.0",
    )
    with pytest.raises(PluginError) as e:
        protocols()
    message = str(e.value)
    assert message.startswith("protocol 'acme' is defined twice: by plug-in 'acme' (protoc-x-")
    assert "(protoc-x-one 0.1.0)" in message and "(protoc-x-two 2.0)" in message


def test_a_config_spec_named_like_a_plugin_is_a_config_error(site, tmp_path):
    site("protoc-x-acme", {plugins.PROTOCOLS: {"acme": "acme_cfg"}}, {"acme_cfg": codec("acme")})
    (tmp_path / "acme.xproto").write_text(XEXAMPLE.replace("protocol xexample", "protocol acme"))
    path = tmp_path / "proxy.yaml"
    path.write_text(CONFIG.format(protocol="acme", port=free_port(), up=free_port(), extra="")
                    .replace("listeners:", "protocols: [acme.xproto]\nlisteners:"))  # fmt: skip
    with pytest.raises(ConfigError) as e:
        start.prepare(path)
    assert "protocol 'acme' is defined twice (plug-in 'acme' (protoc-x-acme 0.1.0))" in str(e.value)


CONFIG = """\
listeners:
  - name: main
    address: 127.0.0.1:{port}
    protocol: {protocol}
    route_config: main
{extra}route_configs:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes: [{{match: {{prefix: /}}, route: {{cluster: up}}}}]
clusters:
  - name: up
    endpoints: [127.0.0.1:{up}]
"""


def test_check_and_run_of_a_config_refuse_a_refused_plugin_with_exit_2(site, tmp_path, capsys):
    site(
        "protoc-x-acme",
        {plugins.PROTOCOLS: {"acme": "acme_new"}},
        {"acme_new": codec("acme", "(1, 7)")},
    )
    path = tmp_path / "proxy.yaml"
    path.write_text(CONFIG.format(protocol="acme", port=free_port(), up=free_port(), extra=""))
    want = (
        "error: plug-in 'acme' (protoc-x-acme 0.1.0) is refused: built for API 1.7; "
        "this protoc-x has API 1.0"
    )
    assert start.check(str(path)) == 2
    assert capsys.readouterr().err.startswith(want)
    assert start.main(str(path)) == 2  # (before any port opens: prepare refuses it)
    assert capsys.readouterr().err.startswith(want)
    path.write_text("listeners: [\n")  # (first, whatever the config: every file would meet it)
    assert start.check(str(path)) == 2
    assert capsys.readouterr().err.startswith(want)


def test_a_generated_module_named_by_protocols_is_refused_for_another_api(tmp_path, capsys):
    from protoc_x import cli

    module = tmp_path / "acme.py"
    module.write_text(codec("acme", "(2, 0)"))
    data = tmp_path / "frame.hex"
    data.write_text(REQUEST.hex())
    assert cli.main(["decode", "acme", str(data), "--hex", "--protocols", str(module)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: module {module} is refused: built for API 2.0; "), err
    module.write_text(codec("acme"))  # as generated
    assert cli.main(["decode", "acme", str(data), "--hex", "--protocols", str(module)]) == 0


# ---- field types ---------------------------------------------------------------------------

MYLIB = '''\
from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes import FieldType

API_VERSION = {version}


class PString(FieldType):
    """UTF-8 text after a one-byte length."""

    VALUE = "str"
    __slots__ = ()

    def read(self, buf, pos, end, ctx=None):
        if pos >= end:
            raise DecodeError(pos, "pstring: no length byte")
        n = buf[pos]
        if pos + 1 + n > end:
            raise DecodeError(pos, f"pstring: {{n}} bytes overrun the frame")
        return bytes(buf[pos + 1 : pos + 1 + n]).decode(), pos + 1 + n

    def measure(self, buf, pos, ctx=None):
        while len(buf) <= pos:
            yield pos + 1
        while len(buf) < pos + 1 + buf[pos]:
            yield pos + 1 + buf[pos]
        return None, pos + 1 + buf[pos]

    def write(self, value, ctx=None):
        data = value.encode()
        if len(data) > 255:
            raise ValueError("pstring: longer than 255 bytes")
        return bytes((len(data),)) + data


TYPES = {{"pstring": PString}}
FUNCTIONS = {{}}


def new_context():
    return None
'''

PMINI = """\
protocol pmini {
    pool multiplex
    detect u8 == 0x50
    enum Kind : u8 { request = 0, response = 1 }
    frame {
        magic      u8 = 0x50
        kind       Kind
        request_id u32
        method     mylib.pstring
    }
    request_id = request_id
    method     = method
    stream {
        kind == response => response
        else             => request
    }
    status_map {
        0 ok   <- 200                                   -> 200
        1 fail <- 400, 403, 404, 429, 500, 502, 503, 504 -> 500
    }
    error_response { kind = response }
}
"""


def test_a_plugin_field_type_is_usable_by_a_spec_and_its_generated_code(site):
    site("protoc-x-mylib", {plugins.FIELDTYPES: {"mylib": "mylib_types"}},
         {"mylib_types": MYLIB.format(version="(1, 0)")})  # fmt: skip
    code = compile_source(PMINI, "pmini.xproto", "pmini")
    assert "from protoc_x.runtime.fieldtypes import mylib\n" in code
    proto = load_module_source("pmini", code, "pmini.py").PROTOCOL
    wire = bytes.fromhex("50 00 00000007 05") + b"hello"
    frame = proto.decode(wire + b"\x50")  # (and the next frame's first byte)
    assert (frame.length, frame.get_request_id(), frame.get_method()) == (12, 7, "hello")
    frame.method = "bye"
    assert frame.encode() == bytes.fromhex("50 00 00000007 03") + b"bye"
    assert library("mylib") is sys.modules["mylib_types"]
    assert "mylib" in library_names()


def test_a_plugin_library_ships_its_lua_readers_for_the_dissector(site):
    """`protoc-x dissector` of a spec naming a plug-in library takes the library's Lua readers
    from beside its module (mylib_types.lua); without them it is an error at the spec, and
    nothing is written."""
    from protoc_x.compiler import render_source

    site("protoc-x-mylib", {plugins.FIELDTYPES: {"mylib": "mylib_types"}},
         {"mylib_types": MYLIB.format(version="(1, 0)")})  # fmt: skip
    with pytest.raises(SpecError, match="'mylib' has no Lua readers"):
        render_source(PMINI, "pmini.xproto", "pmini", "dissector")
    Path(sys.modules["mylib_types"].__file__).with_name("mylib_types.lua").write_text(PSTRING_LUA)
    out = render_source(PMINI, "pmini.xproto", "pmini", "dissector")["pmini.lua"]
    assert PSTRING_LUA.split("\n", 2)[1] in out
    if shutil.which("tshark"):  # and Wireshark reads a frame with it
        from tests.cli.test_dissector import tshark
        from tests.peers.pcaps import write_capture

        work = Path(sys.modules["mylib_types"].__file__).parent
        (work / "pmini.lua").write_text(out)
        write_capture(
            work / "p.pcap", [[("request", bytes.fromhex("50 00 00000007 05") + b"hello")]], 7400
        )
        (frame,) = tshark(work / "pmini.lua", work / "p.pcap", "pmini", port=7400)
        assert ("pmini.method", "hello") in frame["layer"] and ("pmini.request_id", "7") in frame[
            "layer"
        ]


PSTRING_LUA = """local V = ...
-- pstring: UTF-8 text after a one-byte length
local PString = {}
PString.__index = PString
function PString:read(buf, pos, stop, ctx)
    local n = V.byte(buf, pos, stop)
    V.need(pos + 1, n, stop, "a pstring")
    return V.utf8(buf, pos + 1, pos + 1 + n), pos + 1 + n
end
return {
    TYPES = { pstring = function() return setmetatable({}, PString) end },
    FUNCTIONS = {},
    new_context = function() return nil end,
}
"""


def test_an_unknown_library_lists_the_plugins(site):
    site("protoc-x-mylib", {plugins.FIELDTYPES: {"mylib": "mylib_unused"}}, {})
    with pytest.raises(SpecError, match=r"unknown field-type library 'nolib' \(have: .*mylib"):
        compile_source(PMINI.replace("mylib.", "nolib."), "pmini.xproto", "pmini")


@pytest.mark.parametrize("version", ["(1, 5)", "(2, 0)", None])
def test_a_refused_field_type_plugin_is_an_error_where_the_spec_names_it(site, version):
    text = MYLIB.format(version=version or "None").replace("API_VERSION = None\n", "")
    site(
        "protoc-x-mylib", {plugins.FIELDTYPES: {"mylib": "mylib_refused"}}, {"mylib_refused": text}
    )
    with pytest.raises(SpecError) as e:
        compile_source(PMINI, "pmini.xproto", "pmini")
    assert (e.value.pos.line, e.value.pos.col) == (9, 20)  # `mylib.pstring`
    assert "plug-in 'mylib' (protoc-x-mylib 0.1.0) is refused: " in str(e.value)


def test_a_plugin_type_without_write_is_an_error_at_the_field(site):
    text = MYLIB.format(version="(1, 0)").replace("    def write(", "    def unused(")
    site("protoc-x-mylib", {plugins.FIELDTYPES: {"mylib": "mylib_half"}}, {"mylib_half": text})
    with pytest.raises(SpecError) as e:
        compile_source(PMINI, "pmini.xproto", "pmini")
    assert (e.value.pos.line, e.value.pos.col) == (9, 20)
    assert "abstract method write" in e.value.message


@pytest.mark.parametrize(
    "name,module,says",
    [
        ("tars", MYLIB, "field-type library 'tars' is defined twice: built in, and by plug-in"),
        ("base", MYLIB, "'base' is defined twice: protoc_x.runtime.fieldtypes.base, and by"),
        ("mylib", MYLIB.replace("class PString(FieldType)", "class PString"),
         "TYPES['pstring'] is not a subclass of protoc_x.runtime.fieldtypes.FieldType"),
        ("mylib", MYLIB.replace("FUNCTIONS = {{}}", ""), "it has no FUNCTIONS"),
    ],
)  # fmt: skip
def test_a_field_type_plugin_that_clashes_or_is_no_library_is_refused(site, name, module, says):
    site("protoc-x-mylib", {plugins.FIELDTYPES: {name: "mylib_bad"}},
         {"mylib_bad": module.format(version="(1, 0)")})  # fmt: skip
    with pytest.raises(PluginError) as e:
        library(name)
    assert says in str(e.value)


# ---- filters -------------------------------------------------------------------------------

DENY = '''\
from pydantic import StrictInt

from protoc_x.runtime.filters import FilterConfig, Reject, StreamFilter

API_VERSION = {version}


class Config(FilterConfig):
    ids: tuple[StrictInt, ...] = ()


class DenyIds(StreamFilter):
    """Answers the requests whose id is listed with 403."""

    Config = Config

    def on_request(self, ctx):
        if ctx.frame.get_request_id() in self.config.ids:
            return Reject(403, "denied by a plug-in")
        return None
'''


@pytest.fixture
def fresh_filters(monkeypatch):
    """The filter registry as a process that has not loaded its plug-ins yet."""
    monkeypatch.setattr(filters_package, "REGISTRY", dict(filters()))
    monkeypatch.delattr(filters, "loaded")


def test_a_plugin_filter_runs_in_a_listeners_chain(site, fresh_filters):
    site("protoc-x-deny", {plugins.FILTERS: {"deny_ids": "deny_filter:DenyIds"}},
         {"deny_filter": DENY.format(version="(1, 0)")})  # fmt: skip
    assert filters()["deny_ids"].name == "deny_ids"
    proxy_port, up_port = free_port(), free_port()
    data = simple_config("xexample", proxy_port, [f"127.0.0.1:{up_port}"],
                         listener_extra={"stream_filters": [{"name": "deny_ids", "config": {"ids": [1]}}]})  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"stream_filters\[0\]\.config\.ids\[0\]: expected an integer"
    ):
        bad = simple_config("xexample", proxy_port, [f"127.0.0.1:{up_port}"],
                            listener_extra={"stream_filters": [{"name": "deny_ids", "config": {"ids": ["1"]}}]})  # fmt: skip
        parse_config(bad, Path("."))

    async def scenario():
        proto = protocols()["xexample"]
        async with upstream("xexample", up_port), proxy_running(data):
            c = await client("xexample", proxy_port)
            answers = []
            for rid in (1, 2):
                frame = proto.decode(REQUEST)
                frame.set_request_id(rid)
                answers.append(await c.send(frame))
            c.close()
            return answers

    denied, passed = run(scenario())
    assert (denied.get_request_id(), denied.get_status()) == (1, 1)
    assert bytes(denied.get_body()) == b"denied by a plug-in"
    assert (passed.get_request_id(), passed.get_status(), bytes(passed.get_body())) == (
        2,
        0,
        b"hello",
    )


def test_a_refused_filter_plugin_refuses_the_config(site, fresh_filters, tmp_path, capsys):
    site("protoc-x-deny", {plugins.FILTERS: {"deny_ids": "deny_new:DenyIds"}},
         {"deny_new": DENY.format(version="(1, 1)")})  # fmt: skip
    path = tmp_path / "proxy.yaml"
    path.write_text(CONFIG.format(protocol="xexample", port=free_port(), up=free_port(), extra=""))
    assert start.check(str(path)) == 2
    assert capsys.readouterr().err == (
        "error: plug-in 'deny_ids' (protoc-x-deny 0.1.0) is refused: built for API 1.1; "
        "this protoc-x has API 1.0 (a plug-in must be built for API 1.0 or an earlier 1.x)\n"
    )
    with pytest.raises(PluginError):  # (every time: a refused plug-in is never skipped)
        filters()
    # first, whatever the config: it is no fault of the file, and every file would meet it
    path.write_text("listeners: [\n")
    assert start.check(str(path)) == 2
    assert capsys.readouterr().err.startswith("error: plug-in 'deny_ids' (protoc-x-deny 0.1.0)")


@pytest.mark.parametrize(
    "name,value,says",
    [
        ("fault", "deny_clash:DenyIds", "filter 'fault' is defined twice: built in, and by plug-in 'fault'"),
        ("deny_ids", "deny_clash:Config", "deny_clash:Config is not a subclass of protoc_x.runtime.filters.StreamFilter"),
        ("deny_ids", "deny_clash:Nothing", "deny_clash has no Nothing"),
    ],
)  # fmt: skip
def test_a_filter_plugin_that_clashes_or_is_no_filter_is_refused(
    site, fresh_filters, name, value, says
):
    site(
        "protoc-x-deny",
        {plugins.FILTERS: {name: value}},
        {"deny_clash": DENY.format(version="(1, 0)")},
    )
    with pytest.raises(PluginError) as e:
        filters()
    assert says in str(e.value)


def test_a_filter_plugin_without_an_api_version_is_refused(site, fresh_filters):
    """The version a filter declares is its class's module's."""
    site("protoc-x-deny", {plugins.FILTERS: {"deny_ids": "deny_none:DenyIds"}},
         {"deny_none": DENY.format(version="None").replace("API_VERSION = None\n", "")})  # fmt: skip
    with pytest.raises(PluginError, match="plug-in 'deny_ids' .* declares no API_VERSION"):
        filters()


def test_no_plugin_name_that_a_spec_or_config_cannot_spell(site):
    site("protoc-x-x", {plugins.PROTOCOLS: {"Acme": "x"}}, {})
    with pytest.raises(PluginError, match="'Acme' cannot be a protocol's name"):
        protocols()
