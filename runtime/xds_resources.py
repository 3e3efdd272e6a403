"""Envoy v3 resources (what a control plane sends over ADS) as the config's own mappings.

A control plane describes protoc-x's proxy with Envoy's types:

- a ``Listener`` with one filter chain holding one network filter, Envoy's
  ``envoy.extensions.filters.network.generic_proxy.v3.GenericProxy``. Its ``codec_config``
  names the protocol (:data:`CODEC`, below, or one of Envoy's own codec configs); its routes
  come by RDS (``generic_rds``) or inline (``route_config``); its ``filters`` are protoc-x's
  stream filters (:data:`FILTER_PREFIX`) and Envoy's generic router, last; its ``access_log``
  a ``FileAccessLog`` or a ``StdoutAccessLog``;
- generic_proxy's ``RouteConfiguration``: virtual hosts whose ``hosts`` are services, their
  routes as an xDS ``Matcher`` on the method (``MethodMatchInput``) and on header values
  (``PropertyMatchInput``), each leading to generic_proxy's ``RouteAction``;
- a ``Cluster`` of type EDS (its endpoints by EDS) or STATIC/STRICT_DNS (its
  ``load_assignment``), with its lb policy, connect timeout, circuit breakers and retry budget,
  and protoc-x's options (:data:`CLUSTER_OPTIONS`) under ``typed_extension_protocol_options``;
- a ``ClusterLoadAssignment``: endpoints with their health (UNKNOWN and HEALTHY serve).

protoc-x's own typed configs travel as ``xds.type.v3.TypedStruct`` (or udpa's): their
``type_url`` names them, their ``value`` holds the same keys as the YAML (docs/xds.md).

Each function takes one resource and returns the mapping the YAML would hold for it, checked
later with the YAML's own checks (runtime/xds.py composes them). A resource this cannot take
— a field it does not implement, a type it does not know — raises :class:`Refused` naming
the field by its path in the resource: the control plane sees that in the NACK. Nothing is
silently dropped.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.message import DecodeError, Message

# (imported for their types: the default descriptor pool then knows every message named here)
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.generic_proxy.action.v3 import action_pb2
from envoy.extensions.filters.network.generic_proxy.matcher.v3 import matcher_pb2
from envoy.extensions.filters.network.generic_proxy.router.v3 import router_pb2
from envoy.extensions.filters.network.generic_proxy.v3 import generic_proxy_pb2, route_pb2
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.extensions.filters.network.generic_proxy.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

#: a TypedStruct's type_url (its last part) for protoc-x's codec config: ``{protocol: NAME |
#: [NAMES], max_frame_bytes, idle_timeout_ms, frame_timeout_ms}`` (the listener's keys)
CODEC = "protoc_x.config.v1.Codec"
#: the same for a cluster's protocol options, under typed_extension_protocol_options
#: ``protoc_x.cluster``: ``{request_timeout_ms, max_connections, keepalive, lb_policy}``
CLUSTER_OPTIONS = "protoc_x.config.v1.ClusterOptions"
CLUSTER_OPTIONS_KEY = "protoc_x.cluster"
#: a stream filter: ``protoc_x.filters.v1.<name>`` (``local_rate_limit``, ...), its value
#: the filter's config
FILTER_PREFIX = "protoc_x.filters.v1."

_MATCHER = "envoy.extensions.filters.network.generic_proxy.matcher.v3."
_ROUTER = "envoy.extensions.filters.network.generic_proxy.router.v3.Router"
_ROUTE_ACTION = "envoy.extensions.filters.network.generic_proxy.action.v3.RouteAction"
_ENVOY_CODECS = "envoy.extensions.filters.network.generic_proxy.codecs."
_GENERIC_PROXY = "envoy.extensions.filters.network.generic_proxy.v3.GenericProxy"
_TYPED_STRUCTS = ("xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct")

_MESSAGES = {
    m.DESCRIPTOR.full_name: m
    for m in (
        listener_pb2.Listener,
        route_pb2.RouteConfiguration,
        cluster_pb2.Cluster,
        endpoint_pb2.ClusterLoadAssignment,
        generic_proxy_pb2.GenericProxy,
        action_pb2.RouteAction,
        router_pb2.Router,
        file_pb2.FileAccessLog,
        stream_pb2.StdoutAccessLog,
        matcher_pb2.MethodMatchInput,
        matcher_pb2.PropertyMatchInput,
        matcher_pb2.ServiceMatchInput,
        matcher_pb2.HostMatchInput,
        matcher_pb2.PathMatchInput,
        matcher_pb2.RequestMatchInput,
        matcher_pb2.RequestMatcher,
        typed_struct_pb2.TypedStruct,
        udpa_typed_struct_pb2.TypedStruct,
    )
}

_SERVING = (health_check_pb2.HealthStatus.UNKNOWN, health_check_pb2.HealthStatus.HEALTHY)


class Refused(Exception):
    """A resource protoc-x cannot serve: ``path`` in the resource (``filter_chains[0]...``)
    and why."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


def _join(path: str, part: str) -> str:
    return part if not path else (f"{path}{part}" if part.startswith("[") else f"{path}.{part}")


def _only(msg: Message, path: str, allowed: set[str]) -> None:
    """Refuse any field of ``msg`` that is set and not in ``allowed``: what protoc-x does not
    implement is said, never ignored."""
    for field, _ in msg.ListFields():
        if field.name not in allowed:
            raise Refused(_join(path, field.name), "not supported by protoc-x")


def unpack(any_msg, path: str, want: str | tuple[str, ...] | None = None) -> Message:
    """The message inside an ``Any``: one of the types above (``want``: the one(s) allowed)."""
    name = any_msg.type_url.rpartition("/")[2]
    wanted = (want,) if isinstance(want, str) else want
    if wanted is not None and name not in wanted:
        raise Refused(path, f"expected {' or '.join(wanted)}, got {name or 'nothing'}")
    cls = _MESSAGES.get(name)
    if cls is None:
        raise Refused(path, f"unknown type {name or '(empty type_url)'}")
    msg = cls()
    try:
        if not any_msg.Unpack(msg):
            raise Refused(path, f"cannot unpack {name}")
    except DecodeError as e:
        raise Refused(path, f"cannot decode {name}: {e}") from None
    return msg


def _plain(value: Any) -> Any:
    """A Struct's value as YAML would give it: a whole number is an int (Struct numbers are
    doubles; the config's numbers are strict)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def typed_struct(any_msg, path: str) -> tuple[str, dict]:
    """(the last part of its type_url, its value as a mapping) of a TypedStruct in an Any."""
    msg = unpack(any_msg, path, _TYPED_STRUCTS)
    return msg.type_url.rpartition("/")[2], _plain(json_format.MessageToDict(msg.value))


def _ms(duration, path: str) -> int | None:
    """A Duration in whole milliseconds (rounded up: 1 µs is 1 ms, not none); 0 is none."""
    if duration.seconds < 0 or duration.nanos < 0:
        raise Refused(path, "must not be negative")
    total_ns = duration.seconds * 1_000_000_000 + duration.nanos
    return -(-total_ns // 1_000_000) or None


def address(socket_address, path: str) -> str:
    """``HOST:PORT`` (``[V6]:PORT``) of a ``SocketAddress``."""
    _only(socket_address, path, {"address", "port_value", "protocol"})
    if socket_address.protocol != 0:
        raise Refused(_join(path, "protocol"), "only TCP")
    host = socket_address.address
    return (
        f"[{host}]:{socket_address.port_value}"
        if ":" in host
        else f"{host}:{socket_address.port_value}"
    )


def _address_of(addr, path: str) -> str:
    _only(addr, path, {"socket_address"})
    if not addr.HasField("socket_address"):
        raise Refused(path, "needs a socket_address")
    return address(addr.socket_address, _join(path, "socket_address"))


# ----------------------------------------------------------------------------------- listeners


def listener(msg: listener_pb2.Listener) -> tuple[dict, dict | None]:
    """(the listener's mapping, its inline route config's mapping or None). Its
    ``route_config`` names the inline one, else ``rds.route_config_name`` the one to ask for."""
    _only(msg, "", {"name", "address", "filter_chains", "stat_prefix", "traffic_direction",
                    "metadata", "enable_reuse_port"})  # fmt: skip
    if not msg.name:
        raise Refused("name", "must not be empty")
    out: dict[str, Any] = {"name": msg.name, "address": _address_of(msg.address, "address")}
    if len(msg.filter_chains) != 1:
        raise Refused(
            "filter_chains", f"needs exactly one filter chain, got {len(msg.filter_chains)}"
        )
    chain = msg.filter_chains[0]
    path = "filter_chains[0]"
    _only(chain, path, {"filters", "name", "metadata"})
    if len(chain.filters) != 1:
        raise Refused(_join(path, "filters"), "needs exactly one filter: generic_proxy")
    flt = chain.filters[0]
    path = _join(path, "filters[0]")
    _only(flt, path, {"name", "typed_config"})
    gp = unpack(flt.typed_config, _join(path, "typed_config"), _GENERIC_PROXY)
    path = _join(path, "typed_config")
    _only(gp, path, {"stat_prefix", "codec_config", "generic_rds", "route_config", "filters",
                     "access_log"})  # fmt: skip
    out.update(_codec(gp.codec_config, _join(path, "codec_config")))
    inline = None
    if gp.HasField("generic_rds") == gp.HasField("route_config"):
        raise Refused(path, "needs one of generic_rds | route_config")
    if gp.HasField("generic_rds"):
        rds = gp.generic_rds
        where = _join(path, "generic_rds")
        _only(rds, where, {"config_source", "route_config_name"})
        _ads_source(rds.config_source, _join(where, "config_source"))
        out["rds"] = {"route_config_name": rds.route_config_name}
    else:
        inline = route_config(gp.route_config, _join(path, "route_config"))
        inline["name"] = f"{msg.name}/inline"
        out["route_config"] = inline["name"]
    filters = []
    for i, f in enumerate(gp.filters):
        where = _join(path, f"filters[{i}]")
        _only(f, where, {"name", "typed_config"})
        kind = f.typed_config.type_url.rpartition("/")[2]
        if kind == _ROUTER:
            if i != len(gp.filters) - 1:
                raise Refused(where, "the router must be the last filter")
            router = unpack(f.typed_config, _join(where, "typed_config"), _ROUTER)
            _only(router, _join(where, "typed_config"), set())
            continue
        name, config = typed_struct(f.typed_config, _join(where, "typed_config"))
        if not name.startswith(FILTER_PREFIX):
            raise Refused(_join(where, "typed_config.type_url"),
                          f"expected {FILTER_PREFIX}<filter name>, got {name}")  # fmt: skip
        filters.append({"name": name[len(FILTER_PREFIX) :], "config": config})
    if filters:
        out["stream_filters"] = filters
    if len(gp.access_log) > 1:
        raise Refused(_join(path, "access_log"), "one access log at most")
    for log in gp.access_log:
        out["access_log"] = _access_log(log, _join(path, "access_log[0]"))
    return out, inline


def _ads_source(source, path: str) -> None:
    """A ConfigSource: ``ads: {}`` only, v3 (its fetch timeout is the bootstrap's)."""
    _only(source, path, {"ads", "resource_api_version"})
    if not source.HasField("ads"):
        raise Refused(path, "only ads: {} (the one ADS stream)")
    if source.resource_api_version not in (0, 2):  # (AUTO, V3)
        raise Refused(_join(path, "resource_api_version"), "only V3")


def _codec(ext, path: str) -> dict:
    """The listener's protocol: protoc-x's codec config, or one of Envoy's own codec configs
    (``...generic_proxy.codecs.NAME.v3.*``, without options) for the protocol called NAME."""
    _only(ext, path, {"name", "typed_config"})
    kind = ext.typed_config.type_url.rpartition("/")[2]
    envoys = re.fullmatch(re.escape(_ENVOY_CODECS) + r"([a-z0-9_]+)\.v3\.\w+", kind)
    if envoys:
        if ext.typed_config.value:
            raise Refused(_join(path, "typed_config"), f"{kind}: options are not supported")
        # (the message type may be one protobuf does not know: /config_dump shows it as text)
        return {"protocol": envoys.group(1)}
    name, value = typed_struct(ext.typed_config, _join(path, "typed_config"))
    if name != CODEC:
        raise Refused(_join(path, "typed_config.type_url"),
                      f"expected {CODEC} or {_ENVOY_CODECS}<protocol>.v3..., got {name}")  # fmt: skip
    allowed = {"protocol", "max_frame_bytes", "idle_timeout_ms", "frame_timeout_ms"}
    for key in value:
        if key not in allowed:
            raise Refused(_join(path, f"typed_config.value.{key}"), "unknown key")
    if "protocol" not in value:
        raise Refused(_join(path, "typed_config.value"), "missing key 'protocol'")
    return value


def _access_log(log, path: str) -> dict:
    _only(log, path, {"name", "typed_config"})
    kind = log.typed_config.type_url.rpartition("/")[2]
    msg = unpack(log.typed_config, _join(path, "typed_config"),
                 ("envoy.extensions.access_loggers.file.v3.FileAccessLog",
                  "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"))  # fmt: skip
    path = _join(path, "typed_config")
    if kind.endswith("StdoutAccessLog"):
        _only(msg, path, {"log_format"})
        out: dict[str, Any] = {"path": "-"}
    else:
        _only(msg, path, {"path", "log_format"})
        out = {"path": msg.path}
    if msg.HasField("log_format"):
        fmt = msg.log_format
        where = _join(path, "log_format")
        _only(fmt, where, {"text_format_source", "json_format", "text_format"})
        if fmt.HasField("json_format"):
            out["json_format"] = _plain(json_format.MessageToDict(fmt.json_format))
        elif fmt.HasField("text_format_source"):
            source = fmt.text_format_source
            _only(source, _join(where, "text_format_source"), {"inline_string"})
            out["text_format"] = source.inline_string
        else:
            out["text_format"] = fmt.text_format
    return out


# -------------------------------------------------------------------------------------- routes


def route_config(msg: route_pb2.RouteConfiguration, path: str = "") -> dict:
    """generic_proxy's RouteConfiguration: each virtual host's ``hosts`` are its domains (the
    services), its matcher the routes, in order; a top-level ``routes`` serves every other
    service (domain ``*``)."""
    _only(msg, path, {"name", "routes", "virtual_hosts"})
    vhosts = []
    for i, vh in enumerate(msg.virtual_hosts):
        where = _join(path, f"virtual_hosts[{i}]")
        _only(vh, where, {"name", "hosts", "routes"})
        if not vh.HasField("routes"):
            raise Refused(_join(where, "routes"), "missing")
        vhosts.append({"name": vh.name, "domains": list(vh.hosts),
                       "routes": routes(vh.routes, _join(where, "routes"))})  # fmt: skip
    if msg.HasField("routes"):
        vhosts.append({"name": "default", "domains": ["*"],
                       "routes": routes(msg.routes, _join(path, "routes"))})  # fmt: skip
    return {"name": msg.name, "virtual_hosts": vhosts}


#: a condition set: ("method", kind, value) and ("header", rule mapping) items, all must hold
_Conditions = tuple


def routes(matcher, path: str) -> list[dict]:
    """An xDS Matcher as routes tried in order (the first whose conditions hold wins): its
    matcher list in order, a tree's keys (prefixes longest first), then ``on_no_match``. A
    nested matcher that finds nothing falls through to the next."""
    return [_route(conds, action, where) for conds, action, where in _flatten(matcher, path, ())]


def _flatten(matcher, path: str, outer: _Conditions) -> list:
    _only(matcher, path, {"matcher_list", "matcher_tree", "on_no_match"})
    out = []
    if matcher.HasField("matcher_list"):
        for i, fm in enumerate(matcher.matcher_list.matchers):
            where = _join(path, f"matcher_list.matchers[{i}]")
            for conds in _predicate(fm.predicate, _join(where, "predicate")):
                out += _on_match(fm.on_match, _join(where, "on_match"), outer + conds)
    elif matcher.HasField("matcher_tree"):
        tree = matcher.matcher_tree
        where = _join(path, "matcher_tree")
        _only(tree, where, {"input", "exact_match_map", "prefix_match_map"})
        subject = _input(tree.input, _join(where, "input"))
        if tree.HasField("exact_match_map"):
            entries, kind = sorted(tree.exact_match_map.map.items()), "exact"
        elif tree.HasField("prefix_match_map"):
            # the tree takes the longest prefix that matches: tried longest first
            entries = sorted(tree.prefix_match_map.map.items(), key=lambda kv: (-len(kv[0]), kv[0]))
            kind = "prefix"
        else:
            raise Refused(where, "needs exact_match_map or prefix_match_map")
        for key, on_match in entries:
            cond = _condition(subject, kind, key, _join(where, f"{kind}_match_map[{key!r}]"))
            out += _on_match(on_match, _join(where, f"{kind}_match_map[{key!r}]"), outer + (cond,))
    if matcher.HasField("on_no_match"):
        out += _on_match(matcher.on_no_match, _join(path, "on_no_match"), outer)
    return out


def _on_match(on_match, path: str, conds: _Conditions) -> list:
    _only(on_match, path, {"matcher", "action"})
    if on_match.HasField("matcher"):
        return _flatten(on_match.matcher, _join(path, "matcher"), conds)
    if not on_match.HasField("action"):
        raise Refused(path, "needs an action or a matcher")
    return [(conds, on_match.action, _join(path, "action"))]


def _predicate(pred, path: str) -> list[_Conditions]:
    """The predicate as alternatives (any may hold), each a set of conditions (all must)."""
    if pred.HasField("single_predicate"):
        single = pred.single_predicate
        where = _join(path, "single_predicate")
        _only(single, where, {"input", "value_match", "custom_match"})
        if single.HasField("custom_match"):
            return [_request_matcher(single, where)]
        subject = _input(single.input, _join(where, "input"))
        return [_string_condition(subject, single.value_match, _join(where, "value_match"))]
    for which in ("and_matcher", "or_matcher"):
        if pred.HasField(which) and len(getattr(pred, which).predicate) < 2:
            raise Refused(_join(path, f"{which}.predicate"), "needs two predicates or more")
    if pred.HasField("and_matcher"):
        alternatives: list[_Conditions] = [()]
        for i, p in enumerate(pred.and_matcher.predicate):
            parts = _predicate(p, _join(path, f"and_matcher.predicate[{i}]"))
            alternatives = [a + b for a in alternatives for b in parts]
        return alternatives
    if pred.HasField("or_matcher"):
        out = []
        for i, p in enumerate(pred.or_matcher.predicate):
            out += _predicate(p, _join(path, f"or_matcher.predicate[{i}]"))
        return out
    if pred.HasField("not_matcher"):
        inner = _predicate(pred.not_matcher, _join(path, "not_matcher"))
        if len(inner) != 1 or len(inner[0]) != 1 or inner[0][0][0] != "header":
            raise Refused(
                _join(path, "not_matcher"), "only a header (property) match can be negated"
            )
        rule = dict(inner[0][0][1])
        rule["invert"] = not rule.get("invert", False)
        return [(("header", rule),)]
    raise Refused(path, "empty predicate")


def _input(ext, path: str) -> tuple[str, str | None]:
    """("method", None) or ("header", name)."""
    kind = ext.typed_config.type_url.rpartition("/")[2]
    msg = unpack(ext.typed_config, _join(path, "typed_config"))
    if kind == _MATCHER + "MethodMatchInput":
        return ("method", None)
    if kind == _MATCHER + "PropertyMatchInput":
        if not msg.property_name:
            raise Refused(_join(path, "typed_config.property_name"), "must not be empty")
        return ("header", msg.property_name)
    if kind in (_MATCHER + "ServiceMatchInput", _MATCHER + "HostMatchInput"):
        raise Refused(path, "match the service with a virtual host's hosts")
    raise Refused(path, f"{kind} is not supported: use MethodMatchInput or PropertyMatchInput")


def _string_condition(subject, matcher, path: str) -> _Conditions:
    """A StringMatcher (xds's or envoy's) on the method or a header."""
    _only(matcher, path, {"exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"})
    which = matcher.WhichOneof("match_pattern")
    if which is None:
        raise Refused(path, "needs exact, prefix, suffix, contains or safe_regex")
    if which == "safe_regex":
        _only(matcher.safe_regex, _join(path, "safe_regex"), {"regex", "google_re2"})
        value = matcher.safe_regex.regex
        if matcher.ignore_case:
            raise Refused(_join(path, "ignore_case"), "has no effect on safe_regex: use (?i)")
    else:
        value = getattr(matcher, which)
    if subject[0] == "method":
        if which not in ("exact", "prefix") or matcher.ignore_case:
            raise Refused(path, "a method matches exact or prefix only (case-sensitive)")
        return (_condition(subject, which, value, path),)
    if matcher.ignore_case or which in ("suffix", "contains"):
        pattern = {"exact": "{}", "prefix": "{}.*", "suffix": ".*{}", "contains": ".*{}.*"}
        regex = value if which == "safe_regex" else pattern[which].format(re.escape(value))
        rule = {"name": subject[1], "regex": ("(?i)" if matcher.ignore_case else "") + regex}
        return (("header", rule),)
    return (_condition(subject, "regex" if which == "safe_regex" else which, value, path),)


def _condition(subject, kind: str, value: str, path: str) -> tuple:
    if subject[0] == "method":
        if kind not in ("exact", "prefix"):
            raise Refused(path, "a method matches exact or prefix only")
        return ("method", kind, value)
    return ("header", {"name": subject[1], kind: value})


def _request_matcher(single, path: str) -> _Conditions:
    """generic_proxy's RequestMatcher (a custom_match on RequestMatchInput): the method and
    properties (headers)."""
    subject = single.input.typed_config.type_url.rpartition("/")[2]
    if subject != _MATCHER + "RequestMatchInput":
        raise Refused(_join(path, "input"), "a custom_match needs RequestMatchInput")
    ext = single.custom_match
    msg = unpack(
        ext.typed_config, _join(path, "custom_match.typed_config"), _MATCHER + "RequestMatcher"
    )
    where = _join(path, "custom_match.typed_config")
    _only(msg, where, {"method", "properties"})
    out: _Conditions = ()
    if msg.HasField("method"):
        out += _string_condition(("method", None), msg.method, _join(where, "method"))
    for i, entry in enumerate(msg.properties):
        out += _string_condition(("header", entry.name), entry.string_match,
                                 _join(where, f"properties[{i}].string_match"))  # fmt: skip
    return out


def _route(conds: _Conditions, action_ext, path: str) -> dict:
    match: dict[str, Any] = {}
    methods = [c for c in conds if c[0] == "method"]
    if len({(kind, value) for _, kind, value in methods}) > 1:
        raise Refused(path, "two different method matches on one route")
    if methods:
        _, kind, value = methods[0]
        match["path" if kind == "exact" else "prefix"] = "/" + value
    headers = [c[1] for c in conds if c[0] == "header"]
    if headers:
        match["headers"] = headers
    return {"match": match, "route": _action(action_ext, path)}


def _action(ext, path: str) -> dict:
    _only(ext, path, {"name", "typed_config"})
    action = unpack(ext.typed_config, _join(path, "typed_config"), _ROUTE_ACTION)
    path = _join(path, "typed_config")
    _only(
        action,
        path,
        {"name", "cluster", "weighted_clusters", "timeout", "retry_policy", "metadata"},
    )
    out: dict[str, Any] = {}
    if action.HasField("weighted_clusters"):
        wc = action.weighted_clusters
        where = _join(path, "weighted_clusters")
        _only(wc, where, {"clusters", "total_weight"})
        weighted = []
        for i, c in enumerate(wc.clusters):
            _only(c, _join(where, f"clusters[{i}]"), {"name", "weight"})
            if c.weight.value:  # (a weight of 0: never chosen, as in Envoy)
                weighted.append({"name": c.name, "weight": c.weight.value})
        total = sum(c.weight.value for c in wc.clusters)
        if wc.HasField("total_weight") and wc.total_weight.value != total:
            raise Refused(
                _join(where, "total_weight"),
                f"{wc.total_weight.value} is not the sum of the weights ({total})",
            )
        if not weighted:
            raise Refused(_join(where, "clusters"), "needs a cluster with a weight above 0")
        out["weighted_clusters"] = weighted
    elif action.cluster:
        out["cluster"] = action.cluster
    else:
        raise Refused(path, "needs cluster or weighted_clusters")
    if action.HasField("timeout"):
        timeout = _ms(action.timeout, _join(path, "timeout"))
        if timeout is None:  # (Envoy's 0: no timeout at all)
            raise Refused(_join(path, "timeout"), "0 (no timeout) is not supported: every "
                          "request has one; leave it out for the cluster's request_timeout_ms")  # fmt: skip
        out["timeout_ms"] = timeout
    if action.HasField("retry_policy"):
        policy = action.retry_policy
        where = _join(path, "retry_policy")
        _only(policy, where, {"num_retries", "retry_on"})
        unknown = {c.strip() for c in policy.retry_on.split(",") if c.strip()} - RETRY_ON
        if unknown:
            raise Refused(
                _join(where, "retry_on"),
                f"{', '.join(sorted(unknown))}: protoc-x retries on {', '.join(sorted(RETRY_ON))}",
            )
        # (Envoy's default: one retry)
        out["retries"] = policy.num_retries.value if policy.HasField("num_retries") else 1
    return out


#: the retry conditions protoc-x's retries are: a refused connection, a reset before the
#: answer (never after an answer started)
RETRY_ON = {"connect-failure", "refused-stream", "reset", "reset-before-request"}


# ------------------------------------------------------------------------------------ clusters

_LB = {
    cluster_pb2.Cluster.ROUND_ROBIN: "round_robin",
    cluster_pb2.Cluster.RANDOM: "random",
    cluster_pb2.Cluster.LEAST_REQUEST: "least_request",
}


def cluster(msg: cluster_pb2.Cluster) -> dict:
    """A Cluster's mapping: type eds (endpoints by EDS under its service name) or static (the
    endpoints of its load_assignment)."""
    _only(msg, "", {"name", "type", "eds_cluster_config", "connect_timeout", "lb_policy",
                    "load_assignment", "circuit_breakers", "typed_extension_protocol_options",
                    "alt_stat_name", "metadata", "common_lb_config"})  # fmt: skip
    out: dict[str, Any] = {"name": msg.name}
    kind = msg.type
    if kind == cluster_pb2.Cluster.EDS:
        out["type"] = "eds"
        if msg.HasField("load_assignment"):
            raise Refused("load_assignment", "an EDS cluster's endpoints come by EDS")
        eds = msg.eds_cluster_config
        _only(eds, "eds_cluster_config", {"eds_config", "service_name"})
        if eds.HasField("eds_config"):
            _ads_source(eds.eds_config, "eds_cluster_config.eds_config")
        if eds.service_name:
            out["eds_service_name"] = eds.service_name
    elif kind in (cluster_pb2.Cluster.STATIC, cluster_pb2.Cluster.STRICT_DNS):
        if msg.HasField("eds_cluster_config"):
            raise Refused("eds_cluster_config", "only for type EDS")
        out["endpoints"] = [text for _, text in endpoints(msg.load_assignment, "load_assignment")]
    else:
        raise Refused(
            "type",
            f"{cluster_pb2.Cluster.DiscoveryType.Name(kind)} is not supported: EDS, STATIC or STRICT_DNS",
        )
    if msg.HasField("connect_timeout"):
        timeout = _ms(msg.connect_timeout, "connect_timeout")
        if timeout is not None:
            out["connect_timeout_ms"] = timeout
    if msg.lb_policy in _LB:
        if msg.lb_policy != cluster_pb2.Cluster.ROUND_ROBIN:  # (the default: unset)
            out["lb_policy"] = _LB[msg.lb_policy]
    elif msg.lb_policy != cluster_pb2.Cluster.RING_HASH:
        raise Refused(
            "lb_policy", f"{cluster_pb2.Cluster.LbPolicy.Name(msg.lb_policy)} is not supported"
        )
    if msg.HasField("circuit_breakers"):
        out.update(_breakers(msg.circuit_breakers, "circuit_breakers"))
    options: dict[str, Any] = {}
    for key, value in msg.typed_extension_protocol_options.items():
        where = f"typed_extension_protocol_options[{key!r}]"
        if key != CLUSTER_OPTIONS_KEY:
            raise Refused(where, f"unknown key: protoc-x reads {CLUSTER_OPTIONS_KEY!r}")
        name, options = typed_struct(value, where)
        if name != CLUSTER_OPTIONS:
            raise Refused(_join(where, "type_url"), f"expected {CLUSTER_OPTIONS}, got {name}")
        allowed = {"request_timeout_ms", "max_connections", "keepalive", "lb_policy"}
        for k in options:
            if k not in allowed:
                raise Refused(_join(where, f"value.{k}"), "unknown key")
        if "lb_policy" in options and "lb_policy" in out:
            raise Refused(_join(where, "value.lb_policy"), "the cluster's lb_policy says it")
    if msg.lb_policy == cluster_pb2.Cluster.RING_HASH and not str(
        options.get("lb_policy", "")
    ).startswith("hash:"):
        raise Refused(
            "lb_policy",
            f"RING_HASH needs the header to hash: lb_policy hash:<header> in {CLUSTER_OPTIONS}",
        )
    out.update(options)
    return out


def _breakers(cb, path: str) -> dict:
    _only(cb, path, {"thresholds"})
    out: dict[str, Any] = {}
    if len(cb.thresholds) > 1:
        raise Refused(_join(path, "thresholds"), "one (priority DEFAULT) at most")
    for i, t in enumerate(cb.thresholds):
        where = _join(path, f"thresholds[{i}]")
        _only(t, where, {"priority", "max_pending_requests", "max_requests", "retry_budget"})
        if t.priority != 0:  # (protoc-x has one priority: DEFAULT)
            raise Refused(_join(where, "priority"), "only DEFAULT")
        breakers = {}
        if t.HasField("max_pending_requests"):
            breakers["max_pending_requests"] = t.max_pending_requests.value
        if t.HasField("max_requests"):
            breakers["max_requests"] = t.max_requests.value
        if breakers:
            out["circuit_breakers"] = breakers
        if t.HasField("retry_budget"):
            budget = t.retry_budget
            _only(budget, _join(where, "retry_budget"), {"budget_percent", "min_retry_concurrency"})
            # (Envoy's defaults: 20 %, at least 3)
            out["retry_budget"] = {
                "percent": float(budget.budget_percent.value)
                if budget.HasField("budget_percent") else 20.0,
                "min_concurrency": budget.min_retry_concurrency.value
                if budget.HasField("min_retry_concurrency") else 3,
            }  # fmt: skip
    return out


def endpoints(cla: endpoint_pb2.ClusterLoadAssignment, path: str = "") -> list[tuple[str, Any]]:
    """(path, ``HOST:PORT`` or ``{address, weight}``) of each endpoint that serves: whose
    health is UNKNOWN or HEALTHY, in order."""
    _only(cla, path, {"cluster_name", "endpoints"})
    out = []
    for i, group in enumerate(cla.endpoints):
        where = _join(path, f"endpoints[{i}]")
        _only(group, where, {"lb_endpoints", "locality"})
        for j, lb in enumerate(group.lb_endpoints):
            at = _join(where, f"lb_endpoints[{j}]")
            _only(lb, at, {"endpoint", "health_status", "load_balancing_weight"})
            _only(lb.endpoint, _join(at, "endpoint"), {"address"})
            if lb.health_status in _SERVING:
                where = _join(at, "endpoint.address")
                address = _address_of(lb.endpoint.address, where)
                if lb.HasField("load_balancing_weight"):
                    weight = lb.load_balancing_weight.value
                    if weight < 1:  # (Envoy's rule: 1 at least)
                        raise Refused(_join(at, "load_balancing_weight"), "must be 1 or more")
                    out.append((where, {"address": address, "weight": weight}))
                else:
                    out.append((where, address))
    return out


def to_json(msg: Message) -> dict:
    """A resource as /config_dump shows it: Envoy's JSON form, with ``@type`` (with an Any of
    a type protobuf does not know, such as one of Envoy's codec configs: its text form)."""
    kind = {"@type": "type.googleapis.com/" + msg.DESCRIPTOR.full_name}
    try:
        return {**kind, **json_format.MessageToDict(msg, preserving_proto_field_name=True)}
    except (TypeError, json_format.Error):
        return {**kind, "text_proto": text_format.MessageToString(msg)}
