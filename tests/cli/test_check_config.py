"""`protoc-x check proxy.yaml`: every problem `protoc-x run` would refuse, found before any port
opens, each printed as ``FILE:LINE:COL: error: YAML_PATH: message`` (exit 2), or ``FILE: ok``
(exit 0). Broken configs are variations of one valid file, so each error's line is known."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protoc_x.demo import free_port  # noqa: F401 (also for the modules importing it from here)
from protoc_x.cli import main

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).parents[2]
PROTOC_X = Path(sys.executable).with_name("protoc-x")

BASE = """\
listeners:
  - name: main
    address: 127.0.0.1:12220
    protocol: bolt
    route_config: main
route_configs:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {prefix: /}
            route: {cluster: up}
clusters:
  - name: up
    endpoints: [127.0.0.1:12200]
"""
LISTENER_END = "    route_config: main\n"  # line 5: text added after it starts on line 6
ROUTE = "route_configs[0].virtual_hosts[0].routes[0]"

LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<rest>.*)$")


def sub(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def listener(extra: str) -> str:
    """BASE with ``extra`` (listener keys, indented 4) starting on line 6."""
    return sub(LISTENER_END, LISTENER_END + extra)


def filters(*entries: str) -> str:
    """BASE with a ``stream_filters`` list on line 6; entry i is on line 7 + i."""
    return listener("    stream_filters:\n" + "".join(f"      - {e}\n" for e in entries))


def second_listener(address: str, name: str = "other") -> str:
    """BASE with a second listener (lines 6-10), its address on line 8."""
    return sub(
        LISTENER_END,
        LISTENER_END + f"  - name: {name}\n    address: {address}\n    protocol: dubbo\n"
        "    route_config: main\n",
    )  # fmt: skip


# the shipped xexample spec renamed, with an unknown type on line 13, column 22
BROKEN_SPEC = (
    (ROOT / "specs" / "xexample.xproto")
    .read_text()
    .replace("xexample", "broken")
    .replace("        type         Type", "        type         NoSuchType")
)

# (id, config text or a function of the test's directory, [(line, yaml path, text in the
# message)]); line None: the error has no position (the file cannot be read); path None: a
# YAML-level error (syntax, encoding) printed without a path.
CASES = [
    # --- typos in keys
    ("typo-listener-key", sub("    address:", "    adress:"),
     [(3, "listeners[0]", "unknown key 'adress'"), (2, "listeners[0]", "missing key 'address'")]),
    ("typo-top-level-key", sub("clusters:", "cluster:"),
     [(14, "<root>", "unknown key 'cluster'"), (1, "<root>", "missing key 'clusters'"),
      (13, f"{ROUTE}.route.cluster", "unknown cluster 'up'")]),
    ("typo-route-key", sub("route: {cluster: up}", "rout: {cluster: up}"),
     [(13, f"{ROUTE}", "unknown key 'rout'"), (12, f"{ROUTE}", "missing key 'route'")]),
    ("typo-cluster-key", sub("    endpoints:", "    endpoint:"),
     [(16, "clusters[0]", "unknown key 'endpoint'")]),
    # NEL, LS and PS are line breaks to YAML, raw inside a quoted string; not to an editor
    ("line-separators-inside-a-string",
     sub("    endpoints:", "    endpoint:", sub("name: all", 'name: "a\x85b\u2028c\u2029d"')),
     [(16, "clusters[0]", "unknown key 'endpoint'")]),
    ("missing-key", sub("  - name: up\n    endpoints: [127.0.0.1:12200]\n", "  - name: up\n"),
     [(15, "clusters[0]", "missing key 'endpoints'")]),
    # --- wrong types (strict: no '5', 5.0 or 'yes')
    ("int-as-string", listener("    max_frame_bytes: '5'\n"),
     [(6, "listeners[0].max_frame_bytes", "expected an integer, got '5'")]),
    ("int-as-float", listener("    idle_timeout_ms: 5.0\n"),
     [(6, "listeners[0].idle_timeout_ms", "expected an integer, got 5.0")]),
    ("bool-as-yes", sub("{prefix: /}", "{prefix: /, headers: [{name: a, present: 'yes'}]}"),
     [(12, f"{ROUTE}.match.headers[0].present", "expected true or false, got 'yes'")]),
    ("list-where-mapping", sub("          - match: {prefix: /}", "          - match: [1]"),
     [(12, f"{ROUTE}.match", "expected a mapping")]),
    ("domains-not-strings", sub('domains: ["*"]', "domains: [1.5]"),
     [(10, "route_configs[0].virtual_hosts[0].domains[0]", "expected a string, got 1.5")]),
    ("bad-lb-policy", sub("    endpoints:", "    lb_policy: ring_hash\n    endpoints:"),
     [(16, "clusters[0].lb_policy", "got 'ring_hash'")]),
    ("path-without-slash", sub("{prefix: /}", "{path: sayHello}"),
     [(12, f"{ROUTE}.match.path", "must start with '/'")]),
    # --- ports and addresses
    ("listener-port-too-big", sub("127.0.0.1:12220", "127.0.0.1:99999"),
     [(3, "listeners[0].address", "port 99999 out of range 0..65535")]),
    ("endpoint-port-zero", sub("[127.0.0.1:12200]", "[127.0.0.1:0]"),
     [(16, "clusters[0].endpoints[0]", "port 0 is not allowed")]),
    ("endpoint-port-too-big", sub("[127.0.0.1:12200]", "[127.0.0.1:12200, \"h:70000\"]"),
     [(16, "clusters[0].endpoints[1]", "port 70000 out of range")]),
    ("port-not-a-number", sub("127.0.0.1:12220", "127.0.0.1:http"),
     [(3, "listeners[0].address", "invalid port 'http'")]),
    ("port-of-5000-digits", sub("127.0.0.1:12220", "127.0.0.1:" + "7" * 5000),
     [(3, "listeners[0].address", "port '77777777")]),
    ("admin-port-too-big", "admin: {address: 127.0.0.1:123456}\n" + BASE,
     [(1, "admin.address", "port 123456 out of range")]),
    ("bad-host", sub("127.0.0.1:12220", "bad_host:12220"),
     [(3, "listeners[0].address", "invalid host 'bad_host'")]),
    # --- address clashes
    ("admin-equals-listener", "admin: {address: 127.0.0.1:12220}\n" + BASE,
     [(1, "admin.address", "address 127.0.0.1:12220 already used by listener 'main'")]),
    ("admin-wildcard-clash", "admin:\n  address: 0.0.0.0:12220\n" + BASE,
     [(2, "admin.address", "already used by listener 'main' (on 127.0.0.1:12220)")]),
    ("two-listeners-one-address", second_listener("127.0.0.1:12220"),
     [(7, "listeners[1].address", "already used by listener 'main'")]),
    ("listener-wildcard-clash", second_listener("0.0.0.0:12220"),
     [(7, "listeners[1].address", "already used by listener 'main' (on 127.0.0.1:12220)")]),
    # --- duplicates
    ("duplicate-listener-name", second_listener("127.0.0.1:12221", name="main"),
     [(6, "listeners[1].name", "duplicate listener name 'main' (also listeners[0])")]),
    ("duplicate-cluster-name", BASE + "  - name: up\n    endpoints: [127.0.0.1:1]\n",
     [(17, "clusters[1].name", "duplicate cluster name 'up'")]),
    ("duplicate-route-config", sub("clusters:", "  - {name: main, virtual_hosts: []}\nclusters:"),
     [(14, "route_configs[1].name", "duplicate route_config name 'main'")]),
    ("duplicate-domain",
     sub("            route: {cluster: up}\n", "            route: {cluster: up}\n"
         "      - {name: two, domains: [a.b, '*'], routes: []}\n"),
     [(14, "route_configs[0].virtual_hosts[1].domains[1]", "domain '*' already in")]),
    ("duplicate-yaml-key", listener("    name: again\n"),
     [(6, None, "duplicate key 'name'")]),
    # --- unknown references
    ("unknown-cluster", sub("{cluster: up}", "{cluster: down}"),
     [(13, f"{ROUTE}.route.cluster", "unknown cluster 'down'")]),
    ("unknown-weighted-cluster",
     sub("{cluster: up}", "{weighted_clusters: [{name: up, weight: 1}, {name: x, weight: 1}]}"),
     [(13, f"{ROUTE}.route.weighted_clusters[1].name", "unknown cluster 'x'")]),
    ("unknown-route-config", sub("    route_config: main", "    route_config: mian"),
     [(5, "listeners[0].route_config", "unknown route_config 'mian'")]),
    ("unknown-protocol", sub("protocol: bolt", "protocol: [bolt, blot]"),
     [(4, "listeners[0].protocol[1]", "unknown protocol 'blot' (have: bolt,")]),
    ("unknown-filter", filters("{name: rate_limit}"),
     [(7, "listeners[0].stream_filters[0].name", "unknown filter 'rate_limit' (have: fault,")]),
    # --- filter configs: as strict as the rest
    ("filter-int-as-string", filters("{name: local_rate_limit, config: {tokens_per_second: 1, burst: '5'}}"),
     [(7, "listeners[0].stream_filters[0].config.burst", "expected an integer, got '5'")]),
    ("filter-int-as-float", filters("{name: local_rate_limit, config: {tokens_per_second: 1, burst: 5.0}}"),
     [(7, "listeners[0].stream_filters[0].config.burst", "expected an integer, got 5.0")]),
    ("filter-number-as-string", filters("{name: local_rate_limit, config: {tokens_per_second: '5', burst: 5}}"),
     [(7, "listeners[0].stream_filters[0].config.tokens_per_second", "expected a number, got '5'")]),
    ("filter-bool-as-yes",
     filters("name: header_mutation\n        config:\n          request_headers_to_add:\n"
             "            - {key: a, value: b, append: 'yes'}"),
     [(10, "listeners[0].stream_filters[0].config.request_headers_to_add[0].append",
       "expected true or false, got 'yes'")]),
    ("filter-percent-as-string", filters("{name: fault, config: {delay: {fixed_delay_ms: 1, percent: '50'}}}"),
     [(7, "listeners[0].stream_filters[0].config.delay.percent", "expected a number, got '50'")]),
    ("filter-unknown-key", filters("{name: fault, config: {abort: {code: 503, precent: 5}}}"),
     [(7, "listeners[0].stream_filters[0].config.abort", "unknown key 'precent'")]),
    ("filter-missing-key", filters("{name: local_rate_limit, config: {burst: 5}}"),
     [(7, "listeners[0].stream_filters[0].config", "missing key 'tokens_per_second'")]),
    ("duration-too-large", listener("    idle_timeout_ms: " + "9" * 400 + "\n"),
     [(6, "listeners[0].idle_timeout_ms", "must be at most 2147483647, got 9999")]),
    ("filter-burst-too-large",
     filters("{name: local_rate_limit, config: {tokens_per_second: 1, burst: %s}}" % ("9" * 400)),
     [(7, "listeners[0].stream_filters[0].config.burst", "must be at most 2147483647")]),
    ("filter-delay-too-large", filters("{name: fault, config: {delay: {fixed_delay_ms: 2147483648}}}"),
     [(7, "listeners[0].stream_filters[0].config.delay.fixed_delay_ms", "must be at most 2147483647")]),
    ("filter-bad-value", filters("{name: fault, config: {abort: {code: 200}}}"),
     [(7, "listeners[0].stream_filters[0].config.abort.code", "must be a runtime error code")]),
    ("filter-bad-descriptor", filters("{name: local_rate_limit, config: {tokens_per_second: 1, burst: 1, per: [host]}}"),
     [(7, "listeners[0].stream_filters[0].config.per", "expected service, method or header:NAME")]),
    ("filter-label-without-name", filters('{name: node_labels, config: {labels: {"": x}}}'),
     [(7, "listeners[0].stream_filters[0].config.labels", "a label needs a name")]),
    ("filter-config-not-mapping", filters("{name: fault, config: 5}"),
     [(7, "listeners[0].stream_filters[0].config", "expected a mapping, got 5")]),
    ("filter-for-protocol-without-headers",
     sub("protocol: bolt", "protocol: thrift",
         filters("{name: header_mutation, config: {request_headers_to_remove: [a]}}")),
     [(7, "listeners[0].stream_filters[0]", "protocol 'thrift' has no writable header map")]),
    # --- files the config names
    ("missing-labels-file", filters("{name: node_labels, config: {labels_file: no/labels}}"),
     [(7, "listeners[0].stream_filters[0].config.labels_file", "cannot read {dir}/no/labels")]),
    ("bad-labels-file",
     lambda d: (d / "labels").write_text("app=hello\n") and filters("{name: node_labels, config: {labels_file: labels}}"),
     [(7, "listeners[0].stream_filters[0].config.labels_file", 'not a key="value" line')]),
    ("access-log-missing-directory", listener("    access_log: {path: logs/access.log}\n"),
     [(6, "listeners[0].access_log.path", "no such directory: {dir}/logs")]),
    ("access-log-is-a-directory", listener("    access_log:\n      path: .\n"),
     [(7, "listeners[0].access_log.path", "{dir} is a directory")]),
    ("spec-does-not-compile",
     lambda d: (d / "broken.xproto").write_text(BROKEN_SPEC) and "protocols: [broken.xproto]\n" + BASE,
     [(1, "protocols[0]", "does not compile:\n{dir}/broken.xproto:13:22: error: unknown type 'NoSuchType'")]),
    ("protocols-file-missing", "protocols:\n  - specs/none.xproto\n" + BASE,
     [(2, "protocols[0]", "no such file: {dir}/specs/none.xproto")]),
    ("bad-regex", sub("{prefix: /}", '{prefix: /, headers: [{name: t, regex: "(ab"}]}'),
     [(12, f"{ROUTE}.match.headers[0].regex", "missing ), unterminated subpattern")]),
    # --- not a config at all
    ("yaml-syntax", sub("    protocol: bolt\n", "    protocol: [bolt\n"),
     [(5, None, "")]),
    ("yaml-tab-indent", sub("    protocol: bolt", "\tprotocol: bolt"), [(4, None, "")]),
    ("empty-file", "", [(None, "<root>", "the config is empty")]),
    ("only-comments", "# nothing here\n\n", [(None, "<root>", "the config is empty")]),
    ("top-level-list", "- a\n- b\n", [(1, "<root>", "expected a mapping, got a list")]),
    ("top-level-scalar", "hello\n", [(1, "<root>", "expected a mapping, got 'hello'")]),
    ("invalid-utf8", b"listeners:\n  - name: \xff\xfe\n", [(2, None, "not UTF-8 text (byte 0xff)")]),
    ("nul-character", "listeners: []\nclusters: [\x00]\n", [(2, None, "unacceptable character #x0000")]),
    # byte 0x80 comes after a LF (0x0a) and a lone CR (0x0d): line 3, as YAML 1.2 and the
    # spec compiler count lines
    ("binary-garbage", bytes(range(256)) * 4, [(3, None, "not UTF-8 text (byte 0x80)")]),
    ("deep-nesting", "listeners: " + "[" * 5000 + "]" * 5000 + "\n", [(None, None, "nested too deeply")]),
    ("alias-bomb",
     "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
         f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
         for p, c in zip("abcdefgh", "bcdefghi")) + BASE,
     [(1, "<root>", "unknown key 'a'"), (9, "<root>", "unknown key 'i'")]),
    ("many-errors-at-once",
     sub("{cluster: up}", "{cluster: nope}", sub("127.0.0.1:12220", "127.0.0.1:99999",
                                                 listener("    colour: blue\n"))),
     [(3, "listeners[0].address", "out of range"), (6, "listeners[0]", "unknown key 'colour'"),
      (14, f"{ROUTE}.route.cluster", "unknown cluster 'nope'")]),
]  # fmt: skip


def materialise(case_input, directory: Path) -> Path:
    text = case_input(directory) if callable(case_input) else case_input
    path = directory / "proxy.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def check_in_process(path: Path, capsys) -> tuple[int, str, str]:
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_reported(err: str, path: Path, expected: list) -> None:
    """Every expected error is printed (with its line), and every printed line has the form
    ``FILE:LINE:COL: error: ...`` or ``FILE: error: ...`` (a message may continue on lines
    that start with a spec's own ``file:line:col``, its source line and a caret)."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines and lines[0].startswith(f"{path}:"), err
    directory = str(path.parent)
    for line, yaml_path, text in expected:
        text = text.format(dir=directory)
        head = "" if yaml_path is None else f"{yaml_path}: "
        if line is None:
            prefix = f"{path}: error: {head}"
        else:
            prefix = rf"{re.escape(str(path))}:{line}:\d+: error: {re.escape(head)}"
        pattern = (prefix if line is not None else re.escape(prefix)) + r"[^\n]*?" + re.escape(text)
        assert re.search(pattern, err, re.M), f"/{pattern}/ not in:\n{err}"


@pytest.mark.parametrize("case_input, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_config_is_refused_with_path_and_line(case_input, expected, tmp_path, capsys):
    path = materialise(case_input, tmp_path)
    code, out, err = check_in_process(path, capsys)
    assert code == 2, (code, out, err)
    assert out == ""
    assert_reported(err, path, expected)


def test_at_least_40_broken_configs():
    assert len(CASES) >= 40


SUBPROCESS_CASES = [
    "admin-equals-listener", "filter-int-as-string", "missing-labels-file", "yaml-syntax",
    "binary-garbage", "spec-does-not-compile", "access-log-missing-directory",
]  # fmt: skip


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_broken_config_through_the_real_command(name, tmp_path):
    case_input, expected = next(c[1:] for c in CASES if c[0] == name)
    path = materialise(case_input, tmp_path)
    done = subprocess.run(
        [str(PROTOC_X), "check", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert_reported(done.stderr, path, expected)


def test_a_directory_and_a_missing_file(tmp_path, capsys):
    folder = tmp_path / "conf.yaml"
    folder.mkdir()
    code, _, err = check_in_process(folder, capsys)
    assert code == 2 and err == f"{folder}: error: cannot read: Is a directory\n"
    code, _, err = check_in_process(tmp_path / "absent.yml", capsys)
    assert code == 2
    assert err == f"{tmp_path / 'absent.yml'}: error: cannot read: No such file or directory\n"


def test_errors_are_printed_in_file_order_with_columns(tmp_path, capsys):
    text = sub("{cluster: up}", "{cluster: nope}", sub("127.0.0.1:12220", "127.0.0.1:99999"))
    path = materialise("admin: {address: 127.0.0.1:1}\n" + text.replace("bolt", "blot"), tmp_path)
    code, _, err = check_in_process(path, capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{path}:4:14: error: listeners[0].address: port 99999 out of range 0..65535",
        f"{path}:5:15: error: listeners[0].protocol: unknown protocol 'blot' (have: bolt, boltv2,"
        " dubbo, kafka, memcached, redis, tars, thrift, thrift_unframed, xexample)",
        f"{path}:14:30: error: {ROUTE}.route.cluster: unknown cluster 'nope'",
    ]


# ------------------------------------------------------------------------------ valid configs


def test_valid_config_prints_ok(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    (tmp_path / "labels").write_text('color="blue"\n')
    text = filters(
        "{name: node_labels, config: {labels_file: labels}}",
        "{name: local_rate_limit, config: {tokens_per_second: 10, burst: 20}}",
    ).replace("    stream_filters:", "    access_log: {path: logs/a.log}\n    stream_filters:")
    path = materialise("admin: {address: 127.0.0.1:9901}\n" + text, tmp_path)
    code, out, err = check_in_process(path, capsys)
    assert (code, out, err) == (0, f"{path}: ok\n", "")


def test_a_spec_in_protocols_is_compiled_and_its_protocol_usable(tmp_path, capsys):
    spec = (ROOT / "specs" / "xexample.xproto").read_text().replace("xexample", "acme")
    (tmp_path / "acme.xproto").write_text(spec)
    path = materialise("protocols: [acme.xproto]\n" + BASE.replace("bolt", "acme"), tmp_path)
    assert check_in_process(path, capsys) == (0, f"{path}: ok\n", "")


def yaml_blocks(doc: Path) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", doc.read_text(), re.S | re.M)


DOCS = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))
DOC_EXAMPLES = [
    pytest.param(block, id=f"{doc}-{i}")
    for doc in DOCS
    for i, block in enumerate(yaml_blocks(ROOT / doc))
]


def test_docs_have_yaml_examples():
    assert {"README.md", "docs/config.md"} <= {p.id.rsplit("-", 1)[0] for p in DOC_EXAMPLES}


@pytest.mark.parametrize("text", DOC_EXAMPLES)
def test_every_yaml_example_in_the_docs_passes_check(text, tmp_path, capsys):
    path = materialise(text, tmp_path)
    assert check_in_process(path, capsys) == (0, f"{path}: ok\n", "")


def test_check_takes_specs_and_configs_together(tmp_path):
    """Specs as before (exit 1 on a spec error), configs exit 2; the worst code wins."""
    good = materialise(BASE, tmp_path)
    done = subprocess.run(
        [str(PROTOC_X), "check", str(ROOT / "specs" / "bolt.xproto"), str(good)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done
    assert done.stdout.splitlines() == [f"{good}: ok", f"{ROOT / 'specs' / 'bolt.xproto'}: ok"]
    bad = tmp_path / "bad.yml"
    bad.write_text(sub("up}", "down}"))
    done = subprocess.run(
        [str(PROTOC_X), "check", str(good), str(bad)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and done.stdout == f"{good}: ok\n"
    assert done.stderr.startswith(f"{bad}:13:30: error: ")


# ---------------------------------------------------------------------- run uses the same check


def accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_run_refuses_with_the_same_messages_and_opens_no_port(tmp_path):
    port, admin = free_port(), free_port()
    text = BASE.replace("12220", str(port)) + f"admin: {{address: 127.0.0.1:{admin}}}\n"
    text = sub(LISTENER_END, LISTENER_END + "    access_log: {path: nowhere/a.log}\n", text)
    text = text.replace(
        "clusters:", "  - {name: main, virtual_hosts: []}\nclusters:"
    )  # a duplicate route_config
    path = materialise(text, tmp_path)
    checked = subprocess.run(
        [str(PROTOC_X), "check", str(path)], capture_output=True, text=True, timeout=30
    )
    process = subprocess.Popen(
        [str(PROTOC_X), "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    opened = set()
    deadline = time.monotonic() + 20
    while process.poll() is None and time.monotonic() < deadline:
        opened |= {p for p in (port, admin) if accepting(p)}
        time.sleep(0.02)
    if process.poll() is None:
        process.kill()
    out, err = process.communicate(timeout=10)
    assert process.returncode == 2 and checked.returncode == 2, (err, checked.stderr)
    assert not opened
    assert len(err.splitlines()) == 2 and "Traceback" not in err
    assert err == checked.stderr


def test_serve_and_run_refuse_an_out_of_range_port_the_same_way(tmp_path):
    served = subprocess.run(
        [str(PROTOC_X), "serve", "bolt", "--listen", "127.0.0.1:99999"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert served.returncode == 2, served
    assert served.stderr == "error: --listen: port 99999 out of range 0..65535\n"
    path = materialise(sub("127.0.0.1:12220", "127.0.0.1:99999"), tmp_path)
    ran = subprocess.run(
        [str(PROTOC_X), "run", str(path)], capture_output=True, text=True, timeout=30
    )
    assert ran.returncode == 2
    assert ran.stderr == (
        f"{path}:3:14: error: listeners[0].address: port 99999 out of range 0..65535\n"
    )


@pytest.mark.parametrize(
    "listen, reason",
    [("127.0.0.1", "expected HOST:PORT, got '127.0.0.1'"), ("127.0.0.1:-1", "invalid port '-1'"),
     ("::1:80", "write an IPv6 address as [HOST]:PORT"), ("bad host:80", "invalid host"),
     ("127.0.0.1:" + "9" * 5000, "port '99999999"), ("127.0.0.1:65536", "port 65536 out of range")],
    ids=["no-port", "negative", "bare-ipv6", "bad-host", "5000-digits", "65536"],
)  # fmt: skip
def test_serve_refuses_a_bad_listen_address(listen, reason):
    served = subprocess.run(
        [str(PROTOC_X), "serve", "bolt", "--listen", listen],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert served.returncode == 2, served
    assert served.stderr.startswith(f"error: --listen: {reason}"), served.stderr
    assert len(served.stderr.splitlines()) == 1


# ------------------------------------------------------------------------------------- fuzzing

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from protoc_x.runtime.config import ConfigError  # noqa: E402
from protoc_x.start import prepare  # noqa: E402

FUZZ_BASE = filters(
    "{name: local_rate_limit, config: {tokens_per_second: 10, burst: 20, per: [method]}}",
    "{name: fault, config: {delay: {fixed_delay_ms: 1, percent: 5}}}",
    "{name: header_mutation, config: {request_headers_to_add: [{key: a, value: b}]}}",
).replace("clusters:", "admin: {address: 127.0.0.1:9901}\nclusters:")
FUZZ_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_checked_cleanly(path: Path) -> None:
    """``prepare`` accepts the file or raises ConfigError whose every line is located."""
    try:
        prepare(path)
    except ConfigError as e:
        size = len(re.split(rb"\r\n|\r|\n", path.read_bytes()))  # lines as editors count them
        assert e.errors, "an error without errors"
        for text, position in zip(e.lines(), e.positions):
            assert text.startswith(f"{path}:"), text
            assert position is None or 1 <= position[0] <= size, (text, size)


@FUZZ_SETTINGS
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, len(FUZZ_BASE)),
            st.sampled_from(["delete", "insert", "replace"]),
            st.sampled_from(list(" :-[]{},'\"\n\t#&*!|>%@`0xé\x00\ufeff") + ["a", "99999"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_text_never_escapes_as_an_exception(edits, tmp_path):
    text = FUZZ_BASE
    for position, op, piece in edits:
        position = min(position, len(text))
        if op == "delete":
            text = text[:position] + text[position + 1 :]
        elif op == "insert":
            text = text[:position] + piece + text[position:]
        else:
            text = text[:position] + piece + text[position + 1 :]
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_checked_cleanly(path)


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.integers(10**300, 10**400)
    | st.floats(allow_nan=True)
    | st.text(max_size=8) | st.sampled_from(["127.0.0.1:1", "*", "up", "main", "(", "-"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


@FUZZ_SETTINGS
@given(data=st.data())
def test_any_value_anywhere_is_refused_cleanly(data, tmp_path):
    import yaml

    doc = yaml.safe_load(FUZZ_BASE)
    paths = [p for p in _paths(doc) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths))
        parent = doc
        try:
            for part in where[:-1]:
                parent = parent[part]
            parent[where[-1]] = data.draw(VALUES)
        except (KeyError, IndexError, TypeError):  # an earlier change removed the path
            continue
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    assert_checked_cleanly(path)
