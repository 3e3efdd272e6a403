"""The proxy's YAML configuration: Envoy's vocabulary, a concise subset (docs: contract, "Config").

``read_config(path)`` reads a YAML file into a :class:`Document` (the data and, for every YAML
path, where it was written); ``Document.parse(protocols)`` validates it. ``load_config(path)``
does both and ``parse_config(data, base_dir)`` validates an already loaded mapping. They return
a frozen :class:`Config` or raise :class:`ConfigError` listing every problem found, each as
``(yaml_path, message)`` with its line and column when the YAML is known. Validation is
complete before anything uses the config, so a bad file never opens a listener.

Paths use the YAML's own shape: ``clusters[0].endpoints[1]``, ``listeners[0].address``,
``route_configs[0].virtual_hosts[1].routes[0].match.headers[2].regex``. Problems with the whole
document use ``<root>``; unreadable files and YAML syntax errors use ``<yaml>``. A missing key
is reported at the mapping that holds it (``clusters[0]: missing key 'endpoints'``), an unknown
key at that mapping too, with the key's own line.

Two passes over the same document, both always run: pydantic checks shapes, types (strict: no
``'5'`` for 5, no ``5.0`` or ``'yes'``), ranges and single values (addresses, domains, regexes,
load-balancing policies, files the config names, each filter's own config); the
cross-reference pass reads the raw document defensively and checks names (unique names,
route_config, cluster, filter and protocol references, duplicate domains), address clashes
(listeners and admin) and, given the loaded protocols, that each listener's protocols exist,
can share it, and suit its filters.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Mapping

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "Address",
    "AdsConfig",
    "CircuitBreakers",
    "Cluster",
    "Config",
    "ConfigError",
    "Document",
    "DynamicResources",
    "HeaderMatch",
    "Keepalive",
    "Listener",
    "Node",
    "Rds",
    "Route",
    "RouteAction",
    "RouteConfig",
    "RouteMatch",
    "VirtualHost",
    "WeightedCluster",
    "format_path",
    "load_config",
    "parse_config",
    "read_config",
]

LB_POLICIES = ("round_robin", "random", "least_request")
HASH_PREFIX = "hash:"


# --------------------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """One or more problems in a config. ``errors`` is a list of ``(yaml_path, message)``;
    ``positions`` holds each one's ``(line, column)`` (1-based) or ``None``; ``source`` is the
    file. ``lines()`` gives one line per error: ``FILE:LINE:COL: error: PATH: MESSAGE`` when
    the file and position are known, ``FILE: error: PATH: MESSAGE`` when only the file is, and
    ``PATH: MESSAGE`` for a document that came from no file (``<yaml>`` paths are left out)."""

    def __init__(
        self,
        errors: Iterable[tuple[str, str]],
        source: str | None = None,
        positions: Iterable[tuple[int, int] | None] | None = None,
    ):
        self.errors: list[tuple[str, str]] = list(errors)
        given = list(positions) if positions is not None else []
        self.positions: list[tuple[int, int] | None] = given + [None] * (
            len(self.errors) - len(given)
        )
        self.source = source
        super().__init__(str(self))

    def lines(self) -> list[str]:
        out = []
        for (path, message), pos in zip(self.errors, self.positions):
            if self.source is None:
                out.append(f"{path}: {message}")
                continue
            what = message if path == "<yaml>" else f"{path}: {message}"
            where = self.source if pos is None else f"{self.source}:{pos[0]}:{pos[1]}"
            out.append(f"{where}: error: {what}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def invalid(message: str) -> PydanticCustomError:
    """The error a validator raises: reported as ``path: message`` (filters use it too)."""
    # The message goes through the context so that braces in it are never format fields.
    return PydanticCustomError("config", "{message}", {"message": message})


def format_path(loc: Iterable[str | int]) -> str:
    """``("clusters", 0, "endpoints", 1)`` → ``"clusters[0].endpoints[1]"``; empty → ``<root>``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, bool)) or value is None


_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
}


def _num(value: Any) -> str:
    """A bound as written: 0, not 0.0."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _message(err: dict[str, Any]) -> tuple[tuple[str | int, ...], str, bool]:
    """Turn one pydantic error into (loc, short human message, whether loc's last part is the
    key to point at rather than the mapping the message is about)."""
    kind = err["type"]
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return loc[:-1], f"missing key '{loc[-1]}'", False
    if kind == "extra_forbidden":
        return loc, f"unknown key '{loc[-1]}'", True
    if kind == "config":
        return loc, ctx["message"], False
    if kind in _TYPE_NAMES:
        message = f"expected {_TYPE_NAMES[kind]}, got {_show(value)}"
        if kind == "string_type" and _is_scalar(value):
            message += " (quote it in YAML)"
        return loc, message, False
    if kind == "greater_than":
        return loc, f"must be greater than {_num(ctx['gt'])}, got {_show(value)}", False
    if kind == "greater_than_equal":
        return loc, f"must be at least {_num(ctx['ge'])}, got {_show(value)}", False
    if kind == "less_than_equal":
        return loc, f"must be at most {_num(ctx['le'])}, got {_show(value)}", False
    if kind == "less_than":
        return loc, f"must be less than {_num(ctx['lt'])}, got {_show(value)}", False
    if kind == "literal_error":
        return loc, f"expected {ctx['expected']}, got {_show(value)}", False
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return loc, "must not be empty", False
    if kind == "too_short":
        return loc, f"needs at least {ctx['min_length']} items", False
    if kind == "string_too_short":
        return loc, f"needs at least {ctx['min_length']} characters", False
    msg = str(err.get("msg", kind))
    return loc, msg[:1].lower() + msg[1:], False


#: One problem before positions are known: (path shown, message, path whose YAML position is
#: given, whether that position is the key's rather than the value's).
_Problem = tuple[str, str, str, bool]


def _from_validation_error(exc: ValidationError) -> list[_Problem]:
    out: list[_Problem] = []
    for err in exc.errors(include_url=False):
        loc, message, key = _message(err)
        shown = format_path(loc[:-1] if key else loc)
        item = (shown, message, format_path(loc), key)
        if item not in out:
            out.append(item)
    return out


# -------------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class Address:
    """``HOST:PORT``; host is an IPv4 address, a hostname or (written ``[::1]:80``) IPv6."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``HOST:PORT``; raises ``ValueError`` with a short reason."""
        if not isinstance(text, str):
            raise ValueError(f"expected HOST:PORT, got {_show(text)}")
        if text.startswith("["):
            close = text.find("]")
            if close < 0 or text[close + 1 : close + 2] != ":":
                raise ValueError(f"expected [IPV6]:PORT, got {_show(text)}")
            host, port_text = text[1:close], text[close + 2 :]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"invalid IPv6 address '{host}'") from None
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise ValueError(f"expected HOST:PORT, got {_show(text)}")
            if ":" in host:
                raise ValueError(f"write an IPv6 address as [HOST]:PORT, got {_show(text)}")
            if not host:
                raise ValueError(f"missing host in {_show(text)}")
            if not _valid_host(host):
                raise ValueError(f"invalid host '{host}'")
        if not port_text.isascii() or not port_text.isdigit():
            raise ValueError(f"invalid port {_show(port_text)} in {_show(text)}")
        if len(port_text.lstrip("0")) > 9:  # (no int() of thousands of digits)
            raise ValueError(f"port {_show(port_text)} out of range 0..65535")
        port = int(port_text)
        if port > 65535:
            raise ValueError(f"port {port} out of range 0..65535")
        return cls(host, port)


@dataclass(frozen=True, slots=True)
class WeightedAddress(Address):
    """An upstream endpoint with its load-balancing weight (Envoy's load_balancing_weight):
    its share of the requests is its weight over the cluster's total."""

    weight: int = 1


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def _valid_host(host: str) -> bool:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    if len(host) > 253:
        return False
    return all(_LABEL.match(label) for label in host.removesuffix(".").split("."))


def _address(value: Any) -> Address:
    if isinstance(value, Address):
        return value
    try:
        return Address.parse(value)
    except ValueError as exc:
        raise invalid(str(exc)) from None


def _endpoint(value: Any) -> Address:
    address = _address(value)
    if address.port == 0:
        raise invalid("port 0 is not allowed for an endpoint")
    return address


def _upstream(value: Any) -> Address:
    """An endpoint of a cluster: ``HOST:PORT``, or ``{address: HOST:PORT, weight: N}``."""
    if isinstance(value, Address):
        return value
    if not isinstance(value, dict):
        return _endpoint(value)
    unknown = sorted(str(k) for k in value if k not in ("address", "weight"))
    if unknown:
        raise invalid(f"unknown key '{unknown[0]}' (an endpoint is HOST:PORT or "
                      "{address: HOST:PORT, weight: N})")  # fmt: skip
    if "address" not in value:
        raise invalid("missing key 'address'")
    address = _endpoint(value["address"])
    weight = value.get("weight", 1)
    if type(weight) is not int or not 1 <= weight <= MAX_INT:
        raise invalid(f"weight must be a whole number from 1 to {MAX_INT}, got {_show(weight)}")
    return address if weight == 1 else WeightedAddress(address.host, address.port, weight)


def _upstream_out(address: Address) -> str | dict:
    if isinstance(address, WeightedAddress):
        return {"address": str(address), "weight": address.weight}
    return str(address)


_ADDRESS_SCHEMA = WithJsonSchema({"type": "string", "format": "HOST:PORT"})
ListenAddress = Annotated[
    Address, PlainValidator(_address), PlainSerializer(str, return_type=str), _ADDRESS_SCHEMA
]
EndpointAddress = Annotated[
    Address, PlainValidator(_endpoint), PlainSerializer(str, return_type=str), _ADDRESS_SCHEMA
]
#: a cluster's endpoint, with its weight
UpstreamEndpoint = Annotated[
    Address,
    PlainValidator(_upstream),
    PlainSerializer(_upstream_out),
    WithJsonSchema({"anyOf": [
        {"type": "string", "format": "HOST:PORT"},
        {"type": "object", "required": ["address"], "additionalProperties": False,
         "properties": {"address": {"type": "string", "format": "HOST:PORT"},
                        "weight": {"type": "integer", "minimum": 1}}},
    ]}),
]  # fmt: skip

Name = Annotated[StrictStr, Field(min_length=1)]
#: the largest integer (count, size or milliseconds: about 24.8 days) a config takes, so that
#: no value overflows a float or a timer at run time
MAX_INT = 2**31 - 1
PositiveInt = Annotated[StrictInt, Field(gt=0, le=MAX_INT)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]


def _non_empty(value: tuple) -> tuple:
    # An after-validator rather than min_length: pydantic's min_length also fires when items
    # fail, which would add a false "must not be empty" next to the items' own errors.
    if not value:
        raise invalid("must not be empty")
    return value


NonEmpty = AfterValidator(_non_empty)


def _check_domain(domain: str) -> str:
    if domain == "*":
        return domain
    if not domain:
        raise invalid("must not be empty")
    if "*" in domain:
        if domain.endswith(".*"):
            ok = len(domain) > 2 and "*" not in domain[:-2]
        elif domain.startswith("*."):
            ok = len(domain) > 2 and "*" not in domain[2:]
        else:
            ok = False
        if not ok:
            raise invalid(
                f"bad wildcard in domain '{domain}': use an exact name, 'prefix.*', "
                "'*.suffix' or '*'"
            )
    return domain


Domain = Annotated[StrictStr, AfterValidator(_check_domain)]


def _base_dir(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("base_dir", "."))


def config_file(value: str, info: ValidationInfo) -> Path:
    """A file named in the config, relative to the config file's directory."""
    return (_base_dir(info) / Path(value).expanduser()).resolve()


def _resolve_protocol(value: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise invalid(f"expected a file path, got {_show(value)}")
    path = config_file(str(value), info)
    if not path.exists():
        raise invalid(f"no such file: {path}")
    return path


ProtocolPath = Annotated[
    Path,
    PlainValidator(_resolve_protocol),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string"}),
]


def _one_or_many(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return value
    raise invalid(f"expected a protocol name or a list of names, got {_show(value)}")


ProtocolNames = Annotated[tuple[Name, ...], BeforeValidator(_one_or_many), NonEmpty]


# -------------------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)


def _exactly_one(model: BaseModel, keys: tuple[str, ...], *, allow_none: bool = False) -> None:
    given = [key for key in keys if getattr(model, key) is not None]
    names = " | ".join(keys)
    if len(given) > 1:
        raise invalid(f"give only one of {names} (got {', '.join(given)})")
    if not given and not allow_none:
        raise invalid(f"needs one of {names}")


def _writable_log(value: str, info: ValidationInfo) -> str:
    if value == "-":
        return value
    if not value:
        raise invalid("must not be empty (use '-' for stderr)")
    path = config_file(value, info)
    if path.is_dir():
        raise invalid(f"{path} is a directory")
    if not path.parent.is_dir():
        raise invalid(f"no such directory: {path.parent}")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise invalid(f"cannot write to {path if path.exists() else path.parent}")
    return str(path)


def _log_format(value: str) -> str:
    from .accesslog import compile_format

    try:
        compile_format(value)
    except ValueError as e:
        raise invalid(str(e)) from None
    return value


LogFormat = Annotated[StrictStr, AfterValidator(_log_format)]


class AccessLog(_Model):
    #: "-": stdout (the proxy's own log is stderr); else a file (relative to the config file)
    #: in a directory that exists
    path: Annotated[StrictStr, AfterValidator(_writable_log)] = "-"
    format: Literal["text", "json"] = "text"
    #: Envoy's format strings: a line (format text), or a JSON object's values (format json)
    text_format: LogFormat | None = None
    json_format: dict[StrictStr, LogFormat] | None = None

    @model_validator(mode="before")
    @classmethod
    def _json_by_default(cls, data: Any) -> Any:
        """A json_format is a JSON line: ``format`` says so unless it says otherwise (refused
        below)."""
        if isinstance(data, dict) and "json_format" in data and "format" not in data:
            return {**data, "format": "json"}
        return data

    @model_validator(mode="after")
    def _one_format(self) -> "AccessLog":
        if self.text_format is not None and self.json_format is not None:
            raise invalid("give text_format or json_format, not both")
        if self.text_format is not None and self.format == "json":
            raise invalid("text_format is a text line: format json takes json_format")
        if self.json_format is not None and self.format == "text":
            raise invalid("json_format writes JSON: format text takes text_format")
        return self


def _registry() -> dict:
    from .filters import filters  # the filters import this module

    return filters()


class StreamFilterEntry(_Model):
    """A filter by name; its ``config`` is validated by the filter's own model (strict like
    the rest), and holds that model once validated."""

    name: Name
    config: Any = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        registry = _registry()
        if value not in registry:
            raise invalid(f"unknown filter '{value}' (have: {', '.join(sorted(registry))})")
        return value

    @field_validator("config")
    @classmethod
    def _filter_config(cls, value: Any, info: ValidationInfo) -> Any:
        filter_cls = _registry().get(info.data.get("name"))
        if filter_cls is None:  # the name is wrong: said there
            return value
        return filter_cls.Config.model_validate(value, context=info.context)


class RetryBudget(_Model):
    """Envoy's: retries in progress stay under ``percent`` of the active requests, and may
    always be ``min_concurrency``."""

    percent: Annotated[StrictFloat, Field(gt=0, le=100)] = 20.0
    min_concurrency: NonNegativeInt = 3


class Admin(_Model):
    address: ListenAddress


class ConfigSource(_Model):
    """Envoy's ConfigSource, as far as protoc-x takes it: ``{ads: {}}`` (the one ADS stream
    of ``dynamic_resources.ads_config``), with how long to wait for the first answer."""

    ads: dict[StrictStr, Any]
    resource_api_version: Literal["V3"] = "V3"
    initial_fetch_timeout_ms: PositiveInt = 15_000

    @field_validator("ads")
    @classmethod
    def _empty(cls, value: dict) -> dict:
        if value:
            raise invalid("takes no options: write {}")
        return value


class Rds(_Model):
    """A listener's routes from the control plane (Envoy's ``rds``): the route configuration
    named ``route_config_name``, asked for over ADS."""

    route_config_name: Name
    config_source: ConfigSource = ConfigSource(ads={})


class Listener(_Model):
    name: Name
    address: ListenAddress
    protocol: ProtocolNames
    route_config: Name | None = None
    rds: Rds | None = None
    max_frame_bytes: PositiveInt = 16 * 1024 * 1024
    idle_timeout_ms: PositiveInt = 600_000
    frame_timeout_ms: PositiveInt = 30_000
    access_log: AccessLog | None = None
    stream_filters: tuple[StreamFilterEntry, ...] = ()

    @model_validator(mode="after")
    def _one_route_source(self) -> "Listener":
        _exactly_one(self, ("route_config", "rds"))
        return self

    @property
    def route_config_name(self) -> str:
        """The route configuration this listener routes by: named in the config, or by RDS."""
        return self.route_config if self.rds is None else self.rds.route_config_name


class HeaderMatch(_Model):
    name: Name
    exact: StrictStr | None = None
    prefix: StrictStr | None = None
    regex: StrictStr | None = None
    present: StrictBool | None = None
    invert: StrictBool = False

    _pattern: re.Pattern[str] | None = PrivateAttr(default=None)

    @field_validator("regex")
    @classmethod
    def _compile(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise invalid(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> HeaderMatch:
        _exactly_one(self, ("exact", "prefix", "regex", "present"))
        return self

    @property
    def pattern(self) -> re.Pattern[str] | None:
        """The compiled ``regex`` (``None`` for the other kinds of match)."""
        if self.regex is not None and self._pattern is None:
            self._pattern = re.compile(self.regex)
        return self._pattern


class RouteMatch(_Model):
    """``path`` matches ``/<method>`` exactly; ``prefix`` its start; neither means prefix ``/``."""

    prefix: StrictStr | None = None
    path: StrictStr | None = None
    headers: tuple[HeaderMatch, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_prefix(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("prefix") is None and data.get("path") is None:
            data = {**data, "prefix": "/"}
        return data

    @field_validator("prefix", "path")
    @classmethod
    def _slash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise invalid(f"must start with '/', got {_show(value)}")
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> RouteMatch:
        _exactly_one(self, ("prefix", "path"))
        return self


class WeightedCluster(_Model):
    name: Name
    weight: PositiveInt


class RouteAction(_Model):
    cluster: Name | None = None
    weighted_clusters: Annotated[tuple[WeightedCluster, ...], NonEmpty] | None = None
    timeout_ms: PositiveInt | None = None
    retries: NonNegativeInt = 0  # on connect failure or reset before an answer

    @model_validator(mode="after")
    def _one_target(self) -> RouteAction:
        _exactly_one(self, ("cluster", "weighted_clusters"))
        return self

    def cluster_names(self) -> tuple[str, ...]:
        if self.cluster is not None:
            return (self.cluster,)
        return tuple(w.name for w in self.weighted_clusters or ())


class Route(_Model):
    match: RouteMatch
    route: RouteAction


class VirtualHost(_Model):
    name: Name
    domains: Annotated[tuple[Domain, ...], NonEmpty]
    routes: tuple[Route, ...]


class RouteConfig(_Model):
    name: Name
    virtual_hosts: tuple[VirtualHost, ...]


class Keepalive(_Model):
    interval_ms: PositiveInt = 15_000
    timeout_ms: PositiveInt = 1_000
    failures: PositiveInt = 6


class CircuitBreakers(_Model):
    max_pending_requests: PositiveInt = 1024
    max_requests: PositiveInt = 10_000


def _check_lb_policy(value: str) -> str:
    if value in LB_POLICIES:
        return value
    if value.startswith(HASH_PREFIX) and value[len(HASH_PREFIX) :].strip():
        return value
    if value.startswith(HASH_PREFIX):
        raise invalid("hash: needs a header name (hash:<header>)")
    raise invalid(f"expected {', '.join(LB_POLICIES)} or hash:<header>, got {_show(value)}")


class Cluster(_Model):
    name: Name
    #: ``static``: the endpoints are the config's; ``eds``: the control plane's (EDS), asked
    #: for under ``eds_service_name`` (default: the cluster's name)
    type: Literal["static", "eds"] = "static"
    eds_service_name: Name | None = None
    endpoints: tuple[UpstreamEndpoint, ...] = ()
    lb_policy: Annotated[StrictStr, AfterValidator(_check_lb_policy)] = "round_robin"
    connect_timeout_ms: PositiveInt = 1_000
    request_timeout_ms: PositiveInt = 15_000
    max_connections: PositiveInt | None = None  # None: the protocol's default (decided later)
    keepalive: Keepalive | None = None
    circuit_breakers: CircuitBreakers | None = None
    retry_budget: RetryBudget | None = None

    @model_validator(mode="after")
    def _endpoints_by_type(self) -> "Cluster":
        if self.type == "static":
            if self.eds_service_name is not None:
                raise invalid("eds_service_name is for a cluster of type eds")
        elif self.endpoints:
            raise invalid("a cluster of type eds takes its endpoints from EDS: give none")
        return self

    @field_validator("endpoints")
    @classmethod
    def _some(cls, value: tuple, info: ValidationInfo) -> tuple:
        if info.data.get("type", "static") == "static":
            _non_empty(value)
        return value

    @property
    def lb_kind(self) -> str:
        """``round_robin``, ``random``, ``least_request`` or ``hash``."""
        return "hash" if self.lb_policy.startswith(HASH_PREFIX) else self.lb_policy

    @property
    def hash_header(self) -> str | None:
        """The header named by ``hash:<header>``, else ``None``."""
        if self.lb_policy.startswith(HASH_PREFIX):
            return self.lb_policy[len(HASH_PREFIX) :].strip()
        return None


class Otlp(_Model):
    endpoint: EndpointAddress  # an OpenTelemetry collector's OTLP/gRPC port (4317)
    insecure: StrictBool = True  # plaintext gRPC
    timeout_ms: PositiveInt = 10_000


class Tracing(_Model):
    """OpenTelemetry spans, one per request (runtime/tracing.py); off when absent."""

    service_name: Name = "protoc-x"
    #: the share of new traces recorded; a request carrying a traceparent follows its flag
    sampling_percent: Annotated[StrictFloat | StrictInt, Field(ge=0, le=100)] = 100
    exporter: Literal["otlp", "console"] = "otlp"
    otlp: Otlp | None = None

    @model_validator(mode="after")
    def _where(self) -> "Tracing":
        if self.exporter == "otlp" and self.otlp is None:
            raise invalid("exporter otlp needs otlp: {endpoint: HOST:PORT}")
        return self


class Node(_Model):
    """Who this proxy is, as the control plane sees it (Envoy's ``node``)."""

    id: Name
    cluster: StrictStr = ""
    metadata: dict[StrictStr, Any] = {}  # (labels and the like: sent as a Struct)

    @field_validator("metadata")
    @classmethod
    def _json(cls, value: dict) -> dict:
        """A Struct holds JSON: strings, numbers, booleans, null, lists and mappings with
        string keys (a YAML date or a number key is not)."""

        def bad(v: Any, where: str) -> str | None:
            if isinstance(v, dict):
                for k, item in v.items():
                    if not isinstance(k, str):
                        return f"{where}: key {_show(k)} is not a string"
                    found = bad(item, f"{where}.{k}" if where else k)
                    if found:
                        return found
            elif isinstance(v, list):
                for i, item in enumerate(v):
                    found = bad(item, f"{where}[{i}]")
                    if found:
                        return found
            elif v is not None and not isinstance(v, (str, int, float, bool)):
                return f"{where}: {type(v).__name__} {v} is not JSON: quote it"
            elif isinstance(v, float) and not math.isfinite(v):
                return f"{where}: {v} is not JSON"
            return None

        problem = bad(value, "")
        if problem:
            raise invalid(problem)
        return value


class EnvoyGrpc(_Model):
    cluster_name: Name  # a static cluster: the control plane's endpoints


class GrpcService(_Model):
    envoy_grpc: EnvoyGrpc


class RetryBackOff(_Model):
    base_interval_ms: PositiveInt = 500
    max_interval_ms: PositiveInt = 30_000


class AdsConfig(_Model):
    """The ADS stream: Envoy's ``ads_config`` (gRPC, state of the world, v3)."""

    api_type: Literal["GRPC"] = "GRPC"
    transport_api_version: Literal["V3"] = "V3"
    grpc_services: Annotated[tuple[GrpcService, ...], NonEmpty]
    #: reconnect after base, then twice as long each failure up to max (jittered, as Envoy)
    retry_back_off: RetryBackOff = RetryBackOff()

    @field_validator("api_type", mode="before")
    @classmethod
    def _delta(cls, value: Any) -> Any:
        if value in ("DELTA_GRPC", "AGGREGATED_DELTA_GRPC"):
            raise invalid(f"{value} is not supported yet: use GRPC (state of the world)")
        return value

    @field_validator("grpc_services")
    @classmethod
    def _one_service(cls, value: tuple) -> tuple:
        if len(value) > 1:
            raise invalid("give one control plane (its cluster may have several endpoints)")
        return value

    @property
    def cluster_name(self) -> str:
        return self.grpc_services[0].envoy_grpc.cluster_name


class DynamicResources(_Model):
    """Envoy's ``dynamic_resources``: listeners (LDS) and clusters (CDS) from a control plane
    over one ADS stream; their routes (RDS) and endpoints (EDS) follow on the same stream."""

    ads_config: AdsConfig
    lds_config: ConfigSource | None = None
    cds_config: ConfigSource | None = None


class Config(_Model):
    protocols: tuple[ProtocolPath, ...] = ()
    drain_timeout_ms: NonNegativeInt = 5_000
    admin: Admin | None = None
    node: Node | None = None
    dynamic_resources: DynamicResources | None = None
    tracing: Tracing | None = None
    listeners: tuple[Listener, ...] = ()
    route_configs: tuple[RouteConfig, ...] = ()
    clusters: tuple[Cluster, ...] = ()

    #: the document this config was parsed from (the xDS client composes it with dynamic
    #: resources and parses the whole again: one check for both)
    _document: "Document | None" = PrivateAttr(default=None)

    @field_validator("listeners")
    @classmethod
    def _some_listener(cls, value: tuple, info: ValidationInfo) -> tuple:
        dynamic = info.data.get("dynamic_resources")
        composed = (info.context or {}).get("composed")  # (a listener may wait for its routes)
        if (dynamic is None or dynamic.lds_config is None) and not composed:
            _non_empty(value)
        return value

    def cluster(self, name: str) -> Cluster:
        """The cluster called ``name``; ``KeyError`` if there is none."""
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(f"unknown cluster '{name}'")

    def route_config(self, name: str) -> RouteConfig:
        """The route config called ``name``; ``KeyError`` if there is none."""
        for route_config in self.route_configs:
            if route_config.name == name:
                return route_config
        raise KeyError(f"unknown route_config '{name}'")


# ------------------------------------------------------------------------ cross-reference pass
#
# It reads the raw document, not the models, so that it runs even when the schema pass found
# problems: every error is reported at once. Whatever is malformed is skipped here (the schema
# pass says what is wrong with it).


def _at(path: str, message: str) -> _Problem:
    return (path, message, path, False)


def _items(data: Any, key: str) -> list[tuple[int, dict]]:
    """The mappings of the list ``data[key]``, with their indexes."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, (list, tuple)):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _text(item: dict, key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) and value else None


def _unique_names(items: list[tuple[int, dict]], where: str, what: str, out: list) -> set[str]:
    seen: dict[str, int] = {}
    for i, item in items:
        name = _text(item, "name")
        if name is None:
            continue
        if name in seen:
            out.append(
                _at(
                    f"{where}[{i}].name",
                    f"duplicate {what} name '{name}' (also {where}[{seen[name]}])",
                )
            )
        else:
            seen[name] = i
    return set(seen)


def _address_of(item: dict) -> Address | None:
    try:
        return Address.parse(item.get("address"))
    except ValueError:
        return None


def _clash(a: Address, b: Address) -> bool:
    """Can ``a`` and ``b`` not both be listened on? Port 0 picks a free port each time; a
    wildcard host (``0.0.0.0``; ``::``, dual-stack) takes its port on every address."""
    if a.port != b.port or a.port == 0:
        return False
    if a.host == b.host or "::" in (a.host, b.host):
        return True
    return "0.0.0.0" in (a.host, b.host) and ":" not in a.host + b.host


def _protocol_names(listener: dict) -> list[tuple[str, str]]:
    """(path relative to the listener, name) of each protocol the listener names."""
    value = listener.get("protocol")
    if isinstance(value, str):
        return [("protocol", value)] if value else []
    if isinstance(value, (list, tuple)):
        return [(f"protocol[{j}]", v) for j, v in enumerate(value) if isinstance(v, str) and v]
    return []


def _check_filters(listener: dict, base: str, protos: list, base_dir: Path) -> list[_Problem]:
    """Each filter of the listener against each of its protocols (``StreamFilter.check``)."""
    registry = _registry()
    out: list[_Problem] = []
    for j, entry in _items(listener, "stream_filters"):
        cls = registry.get(_text(entry, "name") or "")
        if cls is None or not protos:
            continue
        try:
            config = cls.Config.model_validate(
                entry.get("config", {}), context={"base_dir": base_dir}
            )
        except ValidationError:  # reported by the schema pass
            continue
        instance = cls(config)
        for proto in protos:
            why = instance.check(proto)
            if why:
                out.append(_at(f"{base}.stream_filters[{j}]", f"{cls.name}: {why}"))
    return out


def _cross_check(
    data: dict, base_dir: Path, protocols: Mapping[str, Any] | None, composed: bool = False
) -> list[_Problem]:
    """``composed``: the document holds the control plane's resources too. With clusters from
    a control plane (cds_config), a route may name a cluster that is not there (yet), as
    Envoy's RDS routes may: it is answered 503 until the cluster comes."""
    from .engine import check_detectable

    out: list[_Problem] = []

    paths = data.get("protocols")
    seen_paths: dict[Path, int] = {}
    for i, value in enumerate(paths if isinstance(paths, (list, tuple)) else ()):
        if isinstance(value, str) and value:
            path = (base_dir / Path(value).expanduser()).resolve()
            if path in seen_paths:
                out.append(
                    _at(f"protocols[{i}]", f"listed twice (also protocols[{seen_paths[path]}])")
                )
            else:
                seen_paths[path] = i

    # what a config without a control plane must say; with one, listeners and clusters may
    # all come from it
    dynamic = data.get("dynamic_resources")
    dynamic = dynamic if isinstance(dynamic, dict) else None
    required = ["listeners"] if dynamic is None or dynamic.get("lds_config") is None else []
    required += ["route_configs", "clusters"] if dynamic is None else []
    out.extend(_at("<root>", f"missing key '{key}'") for key in required if key not in data)
    if dynamic is not None and "node" not in data:
        out.append(_at("dynamic_resources", "needs the node's id: add node: {id: ...}"))
    clusters_later = dynamic is not None and dynamic.get("cds_config") is not None

    listeners = _items(data, "listeners")
    route_configs = _items(data, "route_configs")
    _unique_names(listeners, "listeners", "listener", out)
    route_config_names = _unique_names(route_configs, "route_configs", "route_config", out)
    clusters = _items(data, "clusters")
    cluster_names = _unique_names(clusters, "clusters", "cluster", out)
    for i, cluster in clusters:
        if cluster.get("type", "static") == "static" and "endpoints" not in cluster:
            out.append(_at(f"clusters[{i}]", "missing key 'endpoints'"))
        if cluster.get("type") == "eds" and dynamic is None:
            out.append(_at(f"clusters[{i}].type", "eds needs a control plane: dynamic_resources"))
    if dynamic is not None:
        ads = dynamic.get("ads_config")
        services = ads.get("grpc_services") if isinstance(ads, dict) else None
        for k, service in enumerate(services if isinstance(services, (list, tuple)) else ()):
            grpc = service.get("envoy_grpc") if isinstance(service, dict) else None
            name = _text(grpc, "cluster_name") if isinstance(grpc, dict) else None
            if name is None:
                continue
            static = {_text(c, "name"): c.get("type", "static") for _, c in clusters}
            where = f"dynamic_resources.ads_config.grpc_services[{k}].envoy_grpc.cluster_name"
            if name not in static:
                out.append(_at(where, f"unknown cluster '{name}' (a cluster in clusters)"))
            elif static[name] != "static":
                out.append(_at(where, f"cluster '{name}' must be of type static"))

    bound: list[tuple[Address, str]] = []
    have = ", ".join(sorted(protocols or ())) or "none"
    for i, listener in listeners:
        base = f"listeners[{i}]"
        address = _address_of(listener)
        if address is not None:
            for other, owner in bound:
                if _clash(address, other):
                    also = "" if other == address else f" (on {other})"
                    out.append(
                        _at(f"{base}.address", f"address {address} already used by {owner}{also}")
                    )
                    break
            name = _text(listener, "name")
            bound.append((address, f"listener '{name}'" if name else base))
        names = _protocol_names(listener)
        seen_protocols: set[str] = set()
        for where, protocol in names:
            if protocol in seen_protocols:
                out.append(_at(f"{base}.{where}", f"protocol '{protocol}' listed twice"))
            elif protocols is not None and protocol not in protocols:
                out.append(_at(f"{base}.{where}", f"unknown protocol '{protocol}' (have: {have})"))
            seen_protocols.add(protocol)
        protos = []
        if protocols is not None and seen_protocols <= set(protocols):
            protos = [protocols[name] for name in dict.fromkeys(name for _, name in names)]
            why = check_detectable(protos)
            if why:
                out.append(_at(f"{base}.protocol", why))
        route_config = _text(listener, "route_config")
        if route_config is not None and route_config not in route_config_names:
            out.append(_at(f"{base}.route_config", f"unknown route_config '{route_config}'"))
        if "rds" in listener and dynamic is None:
            out.append(_at(f"{base}.rds", "rds needs a control plane: dynamic_resources"))
        out.extend(_check_filters(listener, base, protos, base_dir))

    admin = data.get("admin")
    address = _address_of(admin) if isinstance(admin, dict) else None
    for other, owner in bound if address is not None else ():
        if _clash(address, other):
            also = "" if other == address else f" (on {other})"
            out.append(_at("admin.address", f"address {address} already used by {owner}{also}"))
            break

    for i, route_config in route_configs:
        rc_base = f"route_configs[{i}]"
        vhosts = _items(route_config, "virtual_hosts")
        _unique_names(vhosts, f"{rc_base}.virtual_hosts", "virtual host", out)
        domain_owner: dict[str, str] = {}
        for j, vhost in vhosts:
            vh_base = f"{rc_base}.virtual_hosts[{j}]"
            domains = vhost.get("domains")
            for k, domain in enumerate(domains if isinstance(domains, (list, tuple)) else ()):
                if not isinstance(domain, str):
                    continue
                if domain in domain_owner:
                    out.append(
                        _at(
                            f"{vh_base}.domains[{k}]",
                            f"domain '{domain}' already in virtual host '{domain_owner[domain]}'",
                        )
                    )
                else:
                    domain_owner[domain] = _text(vhost, "name") or vh_base
            for k, route in _items(vhost, "routes"):
                action = route.get("route")
                if not isinstance(action, dict):
                    continue
                r_base = f"{vh_base}.routes[{k}].route"
                if clusters_later:
                    continue
                cluster = _text(action, "cluster")
                if cluster is not None and cluster not in cluster_names:
                    out.append(_at(f"{r_base}.cluster", f"unknown cluster '{cluster}'"))
                for m, weighted in _items(action, "weighted_clusters"):
                    name = _text(weighted, "name")
                    if name is not None and name not in cluster_names:
                        out.append(
                            _at(
                                f"{r_base}.weighted_clusters[{m}].name", f"unknown cluster '{name}'"
                            )
                        )
    return out


# ------------------------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: let PyYAML report it
            continue
        if duplicate:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_show(key)}", mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

Position = tuple[int, int]  # (line, column), 1-based


class _Lines:
    """Line and column (1-based, in characters) of offsets into a config's text. Lines end at
    LF, CRLF or CR, as editors count them. YAML's own marks also end lines at NEL, LS and PS
    (U+0085, U+2028, U+2029), which may appear raw inside quoted keys and values: their line
    numbers can pass the file's last line, so positions come from the marks' offsets."""

    def __init__(self, text: str | bytes) -> None:
        ends = re.compile(r"\r\n|\r|\n" if isinstance(text, str) else rb"\r\n|\r|\n")
        self.starts = [0] + [match.end() for match in ends.finditer(text)]

    def at(self, offset: int) -> Position:
        line = bisect_right(self.starts, offset)
        return (line, offset - self.starts[line - 1] + 1)


def _yaml_error(exc: yaml.YAMLError, lines: _Lines) -> tuple[str, Position | None]:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"unacceptable character #x{exc.character:04x}", lines.at(exc.position)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"{problem} ({context})" if context and problem != str(exc) else problem
    return message, None if mark is None else lines.at(mark.index)


def _marks(root: Any, lines: _Lines) -> tuple[dict[str, Position], dict[str, Position]]:
    """Where each YAML path's value starts, and where each mapping key is written. A node
    reached again through an alias keeps its first path (no blow-up on alias bombs)."""
    values: dict[str, Position] = {}
    keys: dict[str, Position] = {}
    if root is None:
        return values, keys
    stack: list[tuple[tuple, Any]] = [((), root)]
    visited: set[int] = set()
    while stack:
        loc, node = stack.pop()
        values.setdefault(format_path(loc), lines.at(node.start_mark.index))
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in reversed(node.value):
                if isinstance(key_node, yaml.ScalarNode):
                    key_loc = loc + (key_node.value,)
                    keys.setdefault(format_path(key_loc), lines.at(key_node.start_mark.index))
                    stack.append((key_loc, value_node))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((loc + (i,), item) for i, item in reversed(list(enumerate(node.value))))
    return values, keys


def _parent(path: str) -> str | None:
    if path == "<root>":
        return None
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else "<root>"


# --------------------------------------------------------------------------------- public API


@dataclass
class Document:
    """A config document: its data, the file it came from and where each YAML path is."""

    data: Any
    base_dir: Path
    source: str | None = None
    values: dict[str, Position] = field(default_factory=dict)
    keys: dict[str, Position] = field(default_factory=dict)
    #: the config's own document with the control plane's resources added (runtime/xds.py)
    composed: bool = False

    def position(self, path: str, key: bool = False) -> Position | None:
        """The line and column of ``path`` (its key's with ``key``), or of the nearest
        enclosing node written in the file."""
        if key and path in self.keys:
            return self.keys[path]
        at: str | None = path
        while at is not None:
            if at in self.values:
                return self.values[at]
            at = _parent(at)
        return None

    def error(self, problems: Iterable[_Problem]) -> ConfigError:
        """The problems as one ConfigError, in the order they appear in the file."""
        located = [(shown, message, self.position(at, key)) for shown, message, at, key in problems]
        if self.values:
            located.sort(key=lambda item: item[2] or (1 << 62, 0))
        return ConfigError(
            [(shown, message) for shown, message, _ in located],
            self.source,
            [pos for _, _, pos in located],
        )

    def protocol_paths(self) -> list[tuple[str, Path]]:
        """``(yaml_path, file)`` for each ``protocols`` entry naming a file that exists (the
        others are errors of :meth:`parse`), for the caller to load before parsing."""
        raw = self.data.get("protocols") if isinstance(self.data, dict) else None
        out = []
        for i, value in enumerate(raw if isinstance(raw, (list, tuple)) else ()):
            try:
                path = _PROTOCOL_PATH.validate_python(value, context={"base_dir": self.base_dir})
            except ValidationError:
                continue
            if path not in (p for _, p in out):
                out.append((f"protocols[{i}]", path))
        return out

    def parse(
        self,
        protocols: Mapping[str, Any] | None = None,
        problems: Iterable[tuple[str, str]] = (),
    ) -> Config:
        """Validate; raise :class:`ConfigError` with every problem, ``problems`` (the caller's
        own, e.g. a spec that does not compile) included. With ``protocols`` (name →
        XProtocol) each listener's protocols must exist, be decidable together and suit its
        filters."""
        data = self.data
        found = [_at(path, message) for path, message in problems]
        if data is None:
            raise self.error([_at("<root>", "the config is empty"), *found])
        if not isinstance(data, dict):
            raise self.error([_at("<root>", f"expected a mapping, got {_show(data)}"), *found])
        bad_keys = [key for key in data if not isinstance(key, str)]
        if bad_keys:
            raise self.error([_at("<root>", f"unknown key {_show(k)}") for k in bad_keys] + found)
        config = None
        try:
            config = Config.model_validate(
                data, context={"base_dir": self.base_dir, "composed": self.composed}
            )
        except ValidationError as exc:
            found[:0] = _from_validation_error(exc)
        except RecursionError:
            found[:0] = [_at("<root>", "nested too deeply")]
        found += _cross_check(data, self.base_dir, protocols, self.composed)
        if found or config is None:
            raise self.error(found)
        config._document = self
        return config


_PROTOCOL_PATH = TypeAdapter(ProtocolPath)


def parse_config(
    data: Any,
    base_dir: Path,
    source: str | None = None,
    protocols: Mapping[str, Any] | None = None,
) -> Config:
    """Validate a loaded YAML document. Relative paths (``protocols``, access logs, labels
    files) resolve against ``base_dir``. Raises :class:`ConfigError` with every problem."""
    return Document(data, Path(base_dir), source).parse(protocols)


def read_config(path: str | Path) -> Document:
    """Read the YAML at ``path``; raises :class:`ConfigError` (with line and column) when it
    cannot be read or is not YAML. Nothing is validated yet: see :meth:`Document.parse`."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([("<yaml>", f"cannot read: {reason}")], source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [("<yaml>", f"not UTF-8 text (byte 0x{raw[exc.start]:02x})")],
            source,
            [_Lines(raw).at(exc.start)],
        ) from None
    lines = _Lines(text)
    loader = None
    try:
        loader = _Loader(text)  # (its reader refuses unprintable characters at once)
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        message, position = _yaml_error(exc, lines)
        raise ConfigError([("<yaml>", message)], source, [position]) from None
    except RecursionError:
        raise ConfigError([("<yaml>", "nested too deeply")], source) from None
    finally:
        if loader is not None:
            loader.dispose()
    values, keys = _marks(node, lines)
    return Document(data, path.resolve().parent, source, values, keys)


def load_config(path: str | Path, protocols: Mapping[str, Any] | None = None) -> Config:
    """Read and validate the YAML config at ``path``; raises :class:`ConfigError`."""
    return read_config(path).parse(protocols)
