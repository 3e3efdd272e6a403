"""runtime.config: the YAML config, its models, defaults and error messages (path: message)."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest

from protoc_x.runtime.config import (
    Address,
    CircuitBreakers,
    Config,
    ConfigError,
    Keepalive,
    format_path,
    load_config,
    parse_config,
)

FULL_YAML = """\
protocols: [specs/acme.xproto]
drain_timeout_ms: 2500
listeners:
  - name: egress
    address: 127.0.0.1:12220
    protocol: bolt
    route_config: main
    max_frame_bytes: 1048576
  - name: ingress
    address: "[::1]:0"
    protocol: [bolt, dubbo]
    route_config: main
    idle_timeout_ms: 1000
    frame_timeout_ms: 500
route_configs:
  - name: main
    virtual_hosts:
      - name: hello
        domains: ["com.acme.HelloService:1.0", "com.acme.*", "*.acme.com"]
        routes:
          - match:
              prefix: /
              headers:
                - {name: color, exact: blue}
                - {name: zone, prefix: eu-}
                - {name: trace, regex: "^[0-9a-f]+$", invert: true}
                - {name: canary, present: true}
            route: {cluster: hello_blue, timeout_ms: 3000}
          - match: {path: /sayHello}
            route:
              weighted_clusters: [{name: hello_blue, weight: 20}, {name: hello_green, weight: 80}]
          - match: {}
            route: {cluster: hello_green}
      - name: rest
        domains: ["*"]
        routes: []
clusters:
  - name: hello_blue
    endpoints: [127.0.0.1:12200, "localhost:12201", "[::1]:12202"]
    lb_policy: round_robin
    connect_timeout_ms: 1000
    request_timeout_ms: 15000
    max_connections: 1
    keepalive: {interval_ms: 5000}
    circuit_breakers: {max_requests: 10}
  - name: hello_green
    endpoints: [backend.example.com:12300]
    lb_policy: "hash:x-user"
"""


def minimal() -> dict:
    return {
        "listeners": [
            {"name": "l", "address": "127.0.0.1:1000", "protocol": "bolt", "route_config": "rc"}
        ],
        "route_configs": [
            {
                "name": "rc",
                "virtual_hosts": [
                    {
                        "name": "vh",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}],
                    }
                ],
            }
        ],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:2000"]}],
    }


def errors_of(data: dict, base_dir: Path = Path(".")) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir)
    lines = str(info.value).splitlines()
    assert lines == [f"{path}: {message}" for path, message in info.value.errors]
    return lines


def only_error(data: dict, base_dir: Path = Path(".")) -> str:
    lines = errors_of(data, base_dir)
    assert len(lines) == 1, lines
    return lines[0]


def write(tmp_path: Path, text: str, name: str = "proxy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------------ valid


def test_full_config_round_trips_with_defaults(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "acme.xproto").write_text("")
    config = load_config(write(tmp_path, FULL_YAML))

    assert isinstance(config, Config)
    assert config.protocols == ((tmp_path / "specs" / "acme.xproto").resolve(),)
    assert config.drain_timeout_ms == 2500

    egress, ingress = config.listeners
    assert egress.address == Address("127.0.0.1", 12220)
    assert str(egress.address) == "127.0.0.1:12220"
    assert egress.protocol == ("bolt",)
    assert egress.max_frame_bytes == 1048576
    assert (egress.idle_timeout_ms, egress.frame_timeout_ms) == (600000, 30000)
    assert ingress.address == Address("::1", 0) and str(ingress.address) == "[::1]:0"
    assert ingress.protocol == ("bolt", "dubbo")
    assert (ingress.max_frame_bytes, ingress.idle_timeout_ms) == (16777216, 1000)

    rc = config.route_config("main")
    assert rc is config.route_configs[0]
    hello, rest = rc.virtual_hosts
    assert hello.domains == ("com.acme.HelloService:1.0", "com.acme.*", "*.acme.com")
    assert rest.domains == ("*",) and rest.routes == ()
    first, second, third = hello.routes
    assert first.match.prefix == "/" and first.match.path is None
    color, zone, trace, canary = first.match.headers
    assert (color.name, color.exact, color.invert) == ("color", "blue", False)
    assert zone.prefix == "eu-"
    assert trace.regex == "^[0-9a-f]+$" and trace.invert is True
    assert trace.pattern.match("beef") and color.pattern is None
    assert canary.present is True
    assert first.route.cluster == "hello_blue" and first.route.timeout_ms == 3000
    assert second.match.path == "/sayHello" and second.match.prefix is None
    assert [(w.name, w.weight) for w in second.route.weighted_clusters] == [
        ("hello_blue", 20),
        ("hello_green", 80),
    ]
    assert second.route.cluster is None and second.route.timeout_ms is None
    assert second.route.cluster_names() == ("hello_blue", "hello_green")
    assert third.match.prefix == "/" and third.match.headers == ()

    blue = config.cluster("hello_blue")
    assert blue.endpoints == (
        Address("127.0.0.1", 12200),
        Address("localhost", 12201),
        Address("::1", 12202),
    )
    assert blue.lb_policy == "round_robin" and blue.lb_kind == "round_robin"
    assert blue.hash_header is None
    assert blue.max_connections == 1
    assert blue.keepalive == Keepalive(interval_ms=5000, timeout_ms=1000, failures=6)
    assert blue.circuit_breakers == CircuitBreakers(max_pending_requests=1024, max_requests=10)
    green = config.cluster("hello_green")
    assert (green.lb_kind, green.hash_header) == ("hash", "x-user")
    assert (green.connect_timeout_ms, green.request_timeout_ms) == (1000, 15000)
    assert green.max_connections is None
    assert green.keepalive is None and green.circuit_breakers is None

    with pytest.raises(KeyError):
        config.cluster("nope")
    with pytest.raises(KeyError):
        config.route_config("nope")


def test_minimal_defaults_and_frozen():
    config = parse_config(minimal(), Path("."))
    assert config.protocols == ()
    assert config.drain_timeout_ms == 5000
    listener = config.listeners[0]
    assert listener.max_frame_bytes == 16777216
    assert listener.idle_timeout_ms == 600000
    assert listener.frame_timeout_ms == 30000
    cluster = config.clusters[0]
    assert cluster.lb_policy == "round_robin"
    assert (cluster.connect_timeout_ms, cluster.request_timeout_ms) == (1000, 15000)
    assert cluster.max_connections is None
    with pytest.raises(Exception):
        cluster.name = "other"


def test_neither_prefix_nor_path_means_prefix_slash():
    data = minimal()
    data["route_configs"][0]["virtual_hosts"][0]["routes"][0]["match"] = {}
    match = parse_config(data, Path(".")).route_configs[0].virtual_hosts[0].routes[0].match
    assert (match.prefix, match.path) == ("/", None)


def test_dump_is_plain_data():
    dumped = parse_config(minimal(), Path(".")).model_dump(mode="json")
    assert dumped["listeners"][0]["address"] == "127.0.0.1:1000"
    assert dumped["listeners"][0]["protocol"] == ["bolt"]
    assert dumped["clusters"][0]["endpoints"] == ["127.0.0.1:2000"]
    assert dumped["admin"] is None and dumped["clusters"][0]["retry_budget"] is None


def test_an_endpoint_may_carry_a_weight():
    data = minimal()
    data["clusters"][0]["endpoints"] = [
        {"address": "127.0.0.1:2000", "weight": 3},
        "127.0.0.1:2001",
        {"address": "127.0.0.1:2002"},
    ]
    config = parse_config(data, Path("."))
    endpoints = config.clusters[0].endpoints
    assert [str(e) for e in endpoints] == ["127.0.0.1:2000", "127.0.0.1:2001", "127.0.0.1:2002"]
    assert [getattr(e, "weight", 1) for e in endpoints] == [3, 1, 1]
    dumped = config.model_dump(mode="json")["clusters"][0]["endpoints"]
    assert dumped == [
        {"address": "127.0.0.1:2000", "weight": 3},
        "127.0.0.1:2001",
        "127.0.0.1:2002",
    ]
    data["clusters"][0]["endpoints"] = dumped
    assert parse_config(data, Path(".")).clusters[0].endpoints == endpoints, "round trip"


@pytest.mark.parametrize(
    "endpoint, says",
    [
        ({"address": "127.0.0.1:1", "weight": 0}, "weight must be a whole number from 1 to 2147483647, got 0"),
        ({"address": "127.0.0.1:1", "weight": "3"}, "weight must be a whole number from 1 to 2147483647, got '3'"),
        ({"address": "127.0.0.1:1", "weight": 2.0}, "weight must be a whole number from 1 to 2147483647, got 2.0"),
        ({"address": "127.0.0.1:1", "weight": True}, "weight must be a whole number"),
        ({"weight": 2}, "missing key 'address'"),
        ({"address": "127.0.0.1:1", "wieght": 2}, "unknown key 'wieght'"),
        ({"address": "127.0.0.1:0", "weight": 2}, "port 0 is not allowed for an endpoint"),
    ],
)  # fmt: skip
def test_a_bad_weighted_endpoint_is_refused_at_its_path(endpoint, says):
    data = minimal()
    data["clusters"][0]["endpoints"] = ["127.0.0.1:2000", endpoint]
    line = only_error(data)
    assert line.startswith("clusters[0].endpoints[1]: ") and says in line, line


def test_format_path():
    assert format_path(("clusters", 0, "endpoints", 1)) == "clusters[0].endpoints[1]"
    assert format_path(()) == "<root>"


# ---------------------------------------------------------------------------------- invalid


def mutate(fn) -> dict:
    data = minimal()
    fn(data)
    return data


VH = "route_configs[0].virtual_hosts[0]"
ROUTE = f"{VH}.routes[0]"


def _vh(data):
    return data["route_configs"][0]["virtual_hosts"][0]


def _route(data):
    return _vh(data)["routes"][0]


CASES = [
    (
        "unknown key at depth",
        lambda d: _route(d)["match"].update(headers=[{"name": "a", "exact": "b", "foo": 1}]),
        f"{ROUTE}.match.headers[0]: unknown key 'foo'",
    ),
    ("unknown top-level key", lambda d: d.update(listner=[]), "<root>: unknown key 'listner'"),
    (
        "missing key",
        lambda d: d["clusters"][0].pop("endpoints"),
        "clusters[0]: missing key 'endpoints'",
    ),
    (
        "missing top-level key",
        lambda d: d.pop("listeners"),
        "<root>: missing key 'listeners'",
    ),
    (
        "address without port",
        lambda d: d["listeners"][0].update(address="127.0.0.1"),
        "listeners[0].address: expected HOST:PORT, got '127.0.0.1'",
    ),
    (
        "port out of range",
        lambda d: d["listeners"][0].update(address="127.0.0.1:65536"),
        "listeners[0].address: port 65536 out of range 0..65535",
    ),
    (
        "bad host",
        lambda d: d["listeners"][0].update(address="bad_host:80"),
        "listeners[0].address: invalid host 'bad_host'",
    ),
    (
        "endpoint not parsing",
        lambda d: d["clusters"][0].update(endpoints=["127.0.0.1:2000", "10.0.0.1:http"]),
        "clusters[0].endpoints[1]: invalid port 'http' in '10.0.0.1:http'",
    ),
    (
        "bare IPv6 endpoint",
        lambda d: d["clusters"][0].update(endpoints=["::1:80"]),
        "clusters[0].endpoints[0]: write an IPv6 address as [HOST]:PORT, got '::1:80'",
    ),
    (
        "empty endpoints",
        lambda d: d["clusters"][0].update(endpoints=[]),
        "clusters[0].endpoints: must not be empty",
    ),
    (
        "route to missing cluster",
        lambda d: _route(d).update(route={"cluster": "nope"}),
        f"{ROUTE}.route.cluster: unknown cluster 'nope'",
    ),
    (
        "weighted cluster missing",
        lambda d: _route(d).update(
            route={"weighted_clusters": [{"name": "c", "weight": 1}, {"name": "x", "weight": 2}]}
        ),
        f"{ROUTE}.route.weighted_clusters[1].name: unknown cluster 'x'",
    ),
    (
        "weighted cluster weight zero",
        lambda d: _route(d).update(route={"weighted_clusters": [{"name": "c", "weight": 0}]}),
        f"{ROUTE}.route.weighted_clusters[0].weight: must be greater than 0, got 0",
    ),
    (
        "both cluster and weighted_clusters",
        lambda d: _route(d)["route"].update(weighted_clusters=[{"name": "c", "weight": 1}]),
        f"{ROUTE}.route: give only one of cluster | weighted_clusters "
        "(got cluster, weighted_clusters)",
    ),
    (
        "listener route_config missing",
        lambda d: d["listeners"][0].update(route_config="other"),
        "listeners[0].route_config: unknown route_config 'other'",
    ),
    (
        "duplicate cluster name",
        lambda d: d["clusters"].append({"name": "c", "endpoints": ["127.0.0.1:2001"]}),
        "clusters[1].name: duplicate cluster name 'c' (also clusters[0])",
    ),
    (
        "duplicate listener name",
        lambda d: d["listeners"].append({**d["listeners"][0], "address": "127.0.0.1:1001"}),
        "listeners[1].name: duplicate listener name 'l' (also listeners[0])",
    ),
    (
        "duplicate listener address",
        lambda d: d["listeners"].append({**d["listeners"][0], "name": "m"}),
        "listeners[1].address: address 127.0.0.1:1000 already used by listener 'l'",
    ),
    (
        "duplicate route_config name",
        lambda d: d["route_configs"].append(copy.deepcopy(d["route_configs"][0])),
        "route_configs[1].name: duplicate route_config name 'rc' (also route_configs[0])",
    ),
    (
        "domain in two virtual hosts",
        lambda d: d["route_configs"][0]["virtual_hosts"].append(
            {"name": "vh2", "domains": ["a.b", "*"], "routes": []}
        ),
        "route_configs[0].virtual_hosts[1].domains[1]: domain '*' already in virtual host 'vh'",
    ),
    (
        "bad regex",
        lambda d: _route(d)["match"].update(
            headers=[
                {"name": "a", "exact": "b"},
                {"name": "a", "present": True},
                {"name": "t", "regex": "(ab"},
            ]
        ),
        f"{ROUTE}.match.headers[2].regex: missing ), unterminated subpattern at position 0",
    ),
    (
        "header match with two rules",
        lambda d: _route(d)["match"].update(headers=[{"name": "a", "exact": "b", "prefix": "c"}]),
        f"{ROUTE}.match.headers[0]: give only one of exact | prefix | regex | present "
        "(got exact, prefix)",
    ),
    (
        "header match with no rule",
        lambda d: _route(d)["match"].update(headers=[{"name": "a", "invert": True}]),
        f"{ROUTE}.match.headers[0]: needs one of exact | prefix | regex | present",
    ),
    (
        "bad domain wildcard",
        lambda d: _vh(d).update(domains=["com.*.acme"]),
        f"{VH}.domains[0]: bad wildcard in domain 'com.*.acme': use an exact name, 'prefix.*', "
        "'*.suffix' or '*'",
    ),
    (
        "domain not a string",
        lambda d: _vh(d).update(domains=["*", 1.0]),
        f"{VH}.domains[1]: expected a string, got 1.0 (quote it in YAML)",
    ),
    (
        "empty domains",
        lambda d: _vh(d).update(domains=[]),
        f"{VH}.domains: must not be empty",
    ),
    (
        "both prefix and path",
        lambda d: _route(d).update(match={"prefix": "/", "path": "/x"}),
        f"{ROUTE}.match: give only one of prefix | path (got prefix, path)",
    ),
    (
        "path without slash",
        lambda d: _route(d).update(match={"path": "sayHello"}),
        f"{ROUTE}.match.path: must start with '/', got 'sayHello'",
    ),
    (
        "admin address",
        lambda d: d.update(admin={"address": "127.0.0.1:99999"}),
        "admin.address: port 99999 out of range 0..65535",
    ),
    (
        "unknown filter",
        lambda d: d["listeners"][0].update(stream_filters=[{"name": "rate_limiter"}]),
        "listeners[0].stream_filters[0].name: unknown filter 'rate_limiter' (have: fault, "
        "header_mutation, local_rate_limit, node_labels)",
    ),
    (
        "filter config checked by the filter",
        lambda d: d["listeners"][0].update(
            stream_filters=[{"name": "local_rate_limit", "config": {"burst": 10}}]
        ),
        "listeners[0].stream_filters[0].config: missing key 'tokens_per_second'",
    ),
    (
        "filter config value",
        lambda d: d["listeners"][0].update(
            stream_filters=[
                {"name": "local_rate_limit", "config": {"tokens_per_second": -1, "burst": 1}}
            ]
        ),
        "listeners[0].stream_filters[0].config.tokens_per_second: must be greater than 0, got -1",
    ),
    (
        "access_log format",
        lambda d: d["listeners"][0].update(access_log={"path": "-", "format": "xml"}),
        "listeners[0].access_log.format: expected 'text' or 'json', got 'xml'",
    ),
    (
        "negative retries",
        lambda d: _route(d)["route"].update(retries=-1),
        f"{ROUTE}.route.retries: must be at least 0, got -1",
    ),
    (
        "retry_budget percent",
        lambda d: d["clusters"][0].update(retry_budget={"percent": 120}),
        "clusters[0].retry_budget.percent: must be at most 100, got 120",
    ),
    (
        "bad lb_policy",
        lambda d: d["clusters"][0].update(lb_policy="ring_hash"),
        "clusters[0].lb_policy: expected round_robin, random, least_request or hash:<header>, "
        "got 'ring_hash'",
    ),
    (
        "hash without header",
        lambda d: d["clusters"][0].update(lb_policy="hash:"),
        "clusters[0].lb_policy: hash: needs a header name (hash:<header>)",
    ),
    (
        "negative timeout",
        lambda d: d["clusters"][0].update(connect_timeout_ms=-5),
        "clusters[0].connect_timeout_ms: must be greater than 0, got -5",
    ),
    (
        "negative drain timeout",
        lambda d: d.update(drain_timeout_ms=-1),
        "drain_timeout_ms: must be at least 0, got -1",
    ),
    (
        "zero route timeout",
        lambda d: _route(d)["route"].update(timeout_ms=0),
        f"{ROUTE}.route.timeout_ms: must be greater than 0, got 0",
    ),
    (
        "integer as text",
        lambda d: d["listeners"][0].update(idle_timeout_ms="abc"),
        "listeners[0].idle_timeout_ms: expected an integer, got 'abc'",
    ),
    (
        "bool is not an integer",
        lambda d: d["listeners"][0].update(max_frame_bytes=True),
        "listeners[0].max_frame_bytes: expected an integer, got true",
    ),
    (
        "keepalive field bad",
        lambda d: d["clusters"][0].update(keepalive={"failures": 0}),
        "clusters[0].keepalive.failures: must be greater than 0, got 0",
    ),
    (
        "circuit_breakers not a mapping",
        lambda d: d["clusters"][0].update(circuit_breakers=5),
        "clusters[0].circuit_breakers: expected a mapping, got 5",
    ),
    ("no listeners", lambda d: d.update(listeners=[]), "listeners: must not be empty"),
    (
        "listeners not a list",
        lambda d: d.update(listeners={"name": "l"}),
        "listeners: expected a list, got a mapping",
    ),
    (
        "protocol list empty",
        lambda d: d["listeners"][0].update(protocol=[]),
        "listeners[0].protocol: must not be empty",
    ),
    (
        "protocol listed twice",
        lambda d: d["listeners"][0].update(protocol=["bolt", "dubbo", "bolt"]),
        "listeners[0].protocol[2]: protocol 'bolt' listed twice",
    ),
    (
        "protocol wrong type",
        lambda d: d["listeners"][0].update(protocol=5),
        "listeners[0].protocol: expected a protocol name or a list of names, got 5",
    ),
    (
        "empty name",
        lambda d: d["listeners"][0].update(name=""),
        "listeners[0].name: must not be empty",
    ),
    (
        "endpoint port zero",
        lambda d: d["clusters"][0].update(endpoints=["127.0.0.1:0"]),
        "clusters[0].endpoints[0]: port 0 is not allowed for an endpoint",
    ),
]


@pytest.mark.parametrize("fn, line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config(fn, line):
    assert only_error(mutate(fn)) == line


def test_many_errors_in_one_pass():
    data = minimal()
    data["drain_timeout_ms"] = -1
    data["listeners"][0]["address"] = "nope"
    data["clusters"][0]["endpoints"] = ["127.0.0.1:1", "x:99999"]
    data["clusters"][0]["lb_policy"] = "fastest"
    data["extra"] = 1
    assert errors_of(data) == [
        "drain_timeout_ms: must be at least 0, got -1",
        "listeners[0].address: expected HOST:PORT, got 'nope'",
        "clusters[0].endpoints[1]: port 99999 out of range 0..65535",
        "clusters[0].lb_policy: expected round_robin, random, least_request or hash:<header>, "
        "got 'fastest'",
        "<root>: unknown key 'extra'",
    ]


def test_cross_reference_errors_are_all_reported():
    data = minimal()
    data["listeners"][0]["route_config"] = "r2"
    _route(data)["route"] = {"cluster": "c2"}
    assert errors_of(data) == [
        "listeners[0].route_config: unknown route_config 'r2'",
        f"{ROUTE}.route.cluster: unknown cluster 'c2'",
    ]


def test_both_passes_report_together():
    """A schema error does not hide a dangling reference: the cross-reference pass reads the
    raw document and runs anyway."""
    data = minimal()
    data["clusters"][0]["name"] = ""
    data["listeners"][0]["colour"] = "blue"
    data["listeners"][0]["route_config"] = "r2"
    assert errors_of(data) == [
        "listeners[0]: unknown key 'colour'",
        "clusters[0].name: must not be empty",
        "listeners[0].route_config: unknown route_config 'r2'",
        f"{ROUTE}.route.cluster: unknown cluster 'c'",
    ]


def test_listener_port_zero_may_repeat():
    data = minimal()
    data["listeners"][0]["address"] = "127.0.0.1:0"
    data["listeners"].append({**data["listeners"][0], "name": "m"})
    assert len(parse_config(data, Path(".")).listeners) == 2


def test_root_not_a_mapping():
    with pytest.raises(ConfigError) as info:
        parse_config([1, 2], Path("."))
    assert str(info.value) == "<root>: expected a mapping, got a list"
    with pytest.raises(ConfigError) as info:
        parse_config(None, Path("."))
    assert str(info.value) == "<root>: the config is empty"


# ------------------------------------------------------------------------ files and protocols


def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "listeners: []\ndrain_timeout_ms: a: b\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [("<yaml>", "mapping values are not allowed here")]
    assert info.value.positions == [(2, 20)]
    assert info.value.source == str(path)
    assert str(info.value) == f"{path}:2:20: error: mapping values are not allowed here"


def test_yaml_duplicate_key(tmp_path):
    path = write(tmp_path, "drain_timeout_ms: 1\nlisteners: []\ndrain_timeout_ms: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:3:1: error: duplicate key 'drain_timeout_ms'"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    [(path, message)] = info.value.errors
    assert path == "<yaml>" and message == "cannot read: No such file or directory"
    assert str(info.value) == f"{tmp_path / 'absent.yaml'}: error: {message}"


def test_protocols_file_missing(tmp_path):
    (tmp_path / "here.xproto").write_text("")
    data = minimal()
    data["protocols"] = ["here.xproto", "sub/missing.xproto"]
    assert only_error(data, tmp_path) == (
        f"protocols[1]: no such file: {(tmp_path / 'sub' / 'missing.xproto').resolve()}"
    )


def test_protocols_relative_to_config_file(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "acme.xproto").write_text("")
    path = write(
        tmp_path,
        """\
        protocols: [../specs/acme.xproto]
        listeners: [{name: l, address: "0.0.0.0:0", protocol: acme, route_config: rc}]
        route_configs: [{name: rc, virtual_hosts: []}]
        clusters: []
        """,
        name="conf/proxy.yaml",
    )
    config = load_config(path)
    assert config.protocols == ((tmp_path / "specs" / "acme.xproto").resolve(),)


def test_listener_protocols_are_checked_against_the_loaded_ones():
    from protoc_x.loader import builtin_protocols

    builtin = builtin_protocols()
    known = {name: builtin[name] for name in ("bolt", "dubbo", "thrift")}
    data = minimal()
    data["listeners"].append(
        {
            "name": "m",
            "address": "127.0.0.1:1001",
            "protocol": ["dubbo", "x", "bolt"],
            "route_config": "rc",
        }
    )
    data["listeners"][0]["protocol"] = "y"
    assert len(parse_config(data, Path(".")).listeners) == 2  # names unchecked without protocols
    with pytest.raises(ConfigError) as info:
        parse_config(data, Path("."), protocols=known)
    assert str(info.value).splitlines() == [
        "listeners[0].protocol: unknown protocol 'y' (have: bolt, dubbo, thrift)",
        "listeners[1].protocol[1]: unknown protocol 'x' (have: bolt, dubbo, thrift)",
    ]


def test_single_item_protocol_list_keeps_index():
    from protoc_x.loader import builtin_protocols

    data = minimal()
    data["listeners"][0]["protocol"] = ["kafka"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, Path("."), protocols={"tars": builtin_protocols()["tars"]})
    assert str(info.value) == "listeners[0].protocol[0]: unknown protocol 'kafka' (have: tars)"


def test_config_error_shape():
    err = ConfigError([("a[0].b", "one"), ("<root>", "two")])
    assert isinstance(err, Exception)
    assert str(err) == "a[0].b: one\n<root>: two"
    assert err.errors == [("a[0].b", "one"), ("<root>", "two")]
