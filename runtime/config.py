"""The proxy's YAML configuration: Envoy's vocabulary, a concise subset (docs: contract, "Config").

``load_config(path)`` reads a YAML file and ``parse_config(data, base_dir)`` validates an already
loaded mapping; both return a frozen :class:`Config` or raise :class:`ConfigError` listing every
problem found, each as ``(yaml_path, message)``. Validation is complete before anything uses the
config, so a bad file never opens a listener.

Paths use the YAML's own shape: ``clusters[0].endpoints[1]``, ``listeners[0].address``,
``route_configs[0].virtual_hosts[1].routes[0].match.headers[2].regex``. Problems with the whole
document use ``<root>``; unreadable files and YAML syntax errors use ``<yaml>``. A missing or an
unknown key is reported at the mapping that holds it (``clusters[0]: missing key 'endpoints'``).

Two passes: pydantic checks shapes, types, ranges and single values (addresses, domains, regexes,
load-balancing policies) and reports all of its errors together; when that succeeds, the
cross-reference pass checks names (unique names, route_config and cluster references, duplicate
domains and addresses). Which protocol names exist is known only once specs are loaded, so that
check is separate: :func:`check_protocols`.

Keys that the contract documents but this version does not implement (``admin``, a listener's
``access_log`` and ``stream_filters``, a route's ``retries``, a cluster's ``retry_budget``) are
errors saying ``not supported yet``, never silently ignored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

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
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "Address",
    "CircuitBreakers",
    "Cluster",
    "Config",
    "ConfigError",
    "HeaderMatch",
    "Keepalive",
    "Listener",
    "Route",
    "RouteAction",
    "RouteConfig",
    "RouteMatch",
    "VirtualHost",
    "WeightedCluster",
    "check_protocols",
    "format_path",
    "load_config",
    "parse_config",
]

LB_POLICIES = ("round_robin", "random", "least_request")
HASH_PREFIX = "hash:"


# --------------------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """One or more problems in a config. ``errors`` is a list of ``(yaml_path, message)``;
    ``str()`` gives one ``"{yaml_path}: {message}"`` line per error."""

    def __init__(self, errors: Iterable[tuple[str, str]], source: str | None = None):
        self.errors: list[tuple[str, str]] = list(errors)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{path}: {message}" for path, message in self.errors)


def _fail(message: str) -> PydanticCustomError:
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


def _message(err: dict[str, Any]) -> tuple[tuple[str | int, ...], str]:
    """Turn one pydantic error into (loc, short human message)."""
    kind = err["type"]
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return loc[:-1], f"missing key '{loc[-1]}'"
    if kind == "extra_forbidden":
        return loc[:-1], f"unknown key '{loc[-1]}'"
    if kind == "config":
        return loc, ctx["message"]
    if kind in _TYPE_NAMES:
        message = f"expected {_TYPE_NAMES[kind]}, got {_show(value)}"
        if kind == "string_type" and _is_scalar(value):
            message += " (quote it in YAML)"
        return loc, message
    if kind == "greater_than":
        return loc, f"must be greater than {_num(ctx['gt'])}, got {_show(value)}"
    if kind == "greater_than_equal":
        return loc, f"must be at least {_num(ctx['ge'])}, got {_show(value)}"
    if kind == "less_than_equal":
        return loc, f"must be at most {_num(ctx['le'])}, got {_show(value)}"
    if kind == "less_than":
        return loc, f"must be less than {_num(ctx['lt'])}, got {_show(value)}"
    if kind == "literal_error":
        return loc, f"expected {ctx['expected']}, got {_show(value)}"
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return loc, "must not be empty"
    if kind == "too_short":
        return loc, f"needs at least {ctx['min_length']} items"
    if kind == "string_too_short":
        return loc, f"needs at least {ctx['min_length']} characters"
    msg = str(err.get("msg", kind))
    return loc, msg[:1].lower() + msg[1:]


def _from_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc, message = _message(err)
        item = (format_path(loc), message)
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
        port = int(port_text)
        if port > 65535:
            raise ValueError(f"port {port} out of range 0..65535")
        return cls(host, port)


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
        raise _fail(str(exc)) from None


def _endpoint(value: Any) -> Address:
    address = _address(value)
    if address.port == 0:
        raise _fail("port 0 is not allowed for an endpoint")
    return address


_ADDRESS_SCHEMA = WithJsonSchema({"type": "string", "format": "HOST:PORT"})
ListenAddress = Annotated[
    Address, PlainValidator(_address), PlainSerializer(str, return_type=str), _ADDRESS_SCHEMA
]
EndpointAddress = Annotated[
    Address, PlainValidator(_endpoint), PlainSerializer(str, return_type=str), _ADDRESS_SCHEMA
]

Name = Annotated[StrictStr, Field(min_length=1)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


def _non_empty(value: tuple) -> tuple:
    # An after-validator rather than min_length: pydantic's min_length also fires when items
    # fail, which would add a false "must not be empty" next to the items' own errors.
    if not value:
        raise _fail("must not be empty")
    return value


NonEmpty = AfterValidator(_non_empty)


def _unsupported(value: Any, info: ValidationInfo) -> Any:
    raise _fail("not supported yet")


#: A key the contract documents but this version does not build: any value is an error.
Unsupported = Annotated[Any, PlainValidator(_unsupported)]


def _unsupported_field() -> Any:
    return Field(default=None, exclude=True, repr=False)


def _check_domain(domain: str) -> str:
    if domain == "*":
        return domain
    if not domain:
        raise _fail("must not be empty")
    if "*" in domain:
        if domain.endswith(".*"):
            ok = len(domain) > 2 and "*" not in domain[:-2]
        elif domain.startswith("*."):
            ok = len(domain) > 2 and "*" not in domain[2:]
        else:
            ok = False
        if not ok:
            raise _fail(
                f"bad wildcard in domain '{domain}': use an exact name, 'prefix.*', "
                "'*.suffix' or '*'"
            )
    return domain


Domain = Annotated[StrictStr, AfterValidator(_check_domain)]


def _resolve_protocol(value: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise _fail(f"expected a file path, got {_show(value)}")
    base = Path((info.context or {}).get("base_dir", "."))
    path = (base / Path(value).expanduser()).resolve()
    if not path.exists():
        raise _fail(f"no such file: {path}")
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
    raise _fail(f"expected a protocol name or a list of names, got {_show(value)}")


ProtocolNames = Annotated[tuple[Name, ...], BeforeValidator(_one_or_many), NonEmpty]


# -------------------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)


def _exactly_one(model: BaseModel, keys: tuple[str, ...], *, allow_none: bool = False) -> None:
    given = [key for key in keys if getattr(model, key) is not None]
    names = " | ".join(keys)
    if len(given) > 1:
        raise _fail(f"give only one of {names} (got {', '.join(given)})")
    if not given and not allow_none:
        raise _fail(f"needs one of {names}")


class AccessLog(_Model):
    path: StrictStr = "-"  # "-": stderr
    format: Literal["text", "json"] = "text"


class StreamFilterEntry(_Model):
    """A filter by name; its ``config`` is checked against the filter's own model in the
    cross-reference pass (the registry lives in runtime.filters)."""

    name: Name
    config: dict[str, Any] = {}


class RetryBudget(_Model):
    percent: Annotated[float, Field(gt=0, le=100)] = 20.0


class Admin(_Model):
    address: ListenAddress


class Listener(_Model):
    name: Name
    address: ListenAddress
    protocol: ProtocolNames
    route_config: Name
    max_frame_bytes: PositiveInt = 16 * 1024 * 1024
    idle_timeout_ms: PositiveInt = 600_000
    frame_timeout_ms: PositiveInt = 30_000
    access_log: AccessLog | None = None
    stream_filters: tuple[StreamFilterEntry, ...] = ()

    _protocol_is_list: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_protocol_form(cls, data: Any, handler: Any) -> Listener:
        listener = handler(data)
        if isinstance(data, dict):
            listener._protocol_is_list = isinstance(data.get("protocol"), (list, tuple))
        return listener

    def protocol_path(self, index: int) -> str:
        """The YAML path (relative to the listener) of protocol name ``index``."""
        return f"protocol[{index}]" if self._protocol_is_list else "protocol"


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
                raise _fail(str(exc)) from None
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
            raise _fail(f"must start with '/', got {_show(value)}")
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
        raise _fail("hash: needs a header name (hash:<header>)")
    raise _fail(f"expected {', '.join(LB_POLICIES)} or hash:<header>, got {_show(value)}")


class Cluster(_Model):
    name: Name
    endpoints: Annotated[tuple[EndpointAddress, ...], NonEmpty]
    lb_policy: Annotated[StrictStr, AfterValidator(_check_lb_policy)] = "round_robin"
    connect_timeout_ms: PositiveInt = 1_000
    request_timeout_ms: PositiveInt = 15_000
    max_connections: PositiveInt | None = None  # None: the protocol's default (decided later)
    keepalive: Keepalive | None = None
    circuit_breakers: CircuitBreakers | None = None
    retry_budget: RetryBudget | None = None

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


class Config(_Model):
    protocols: tuple[ProtocolPath, ...] = ()
    drain_timeout_ms: NonNegativeInt = 5_000
    admin: Admin | None = None
    listeners: Annotated[tuple[Listener, ...], NonEmpty]
    route_configs: tuple[RouteConfig, ...]
    clusters: tuple[Cluster, ...]

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


def _unique_names(items: Iterable[Any], where: str, what: str, out: list) -> set[str]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            out.append(
                (
                    f"{where}[{i}].name",
                    f"duplicate {what} name '{item.name}' (also {where}[{seen[item.name]}])",
                )
            )
        else:
            seen[item.name] = i
    return set(seen)


def _check_filters(listener: Listener, base: str) -> list[tuple[str, str]]:
    from .filters import filters

    registry = filters()
    out = []
    for j, entry in enumerate(listener.stream_filters):
        where = f"{base}.stream_filters[{j}]"
        cls = registry.get(entry.name)
        if cls is None:
            out.append(
                (
                    f"{where}.name",
                    f"unknown filter '{entry.name}' (have: {', '.join(sorted(registry))})",
                )
            )
            continue
        try:
            cls.Config.model_validate(entry.config)
        except ValidationError as exc:
            for path, message in _from_validation_error(exc):
                out.append((f"{where}.config" + ("" if path == "<root>" else "." + path), message))
    return out


def _cross_check(config: Config) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    seen_paths: dict[Path, int] = {}
    for i, path in enumerate(config.protocols):
        if path in seen_paths:
            out.append((f"protocols[{i}]", f"listed twice (also protocols[{seen_paths[path]}])"))
        else:
            seen_paths[path] = i

    _unique_names(config.listeners, "listeners", "listener", out)
    route_config_names = _unique_names(config.route_configs, "route_configs", "route_config", out)
    cluster_names = _unique_names(config.clusters, "clusters", "cluster", out)

    addresses: dict[Address, str] = {}
    for i, listener in enumerate(config.listeners):
        base = f"listeners[{i}]"
        if listener.address.port != 0:  # port 0: the system picks a free one each time
            if listener.address in addresses:
                out.append(
                    (
                        f"{base}.address",
                        f"address {listener.address} already used by listener "
                        f"'{addresses[listener.address]}'",
                    )
                )
            else:
                addresses[listener.address] = listener.name
        seen_protocols: set[str] = set()
        for j, protocol in enumerate(listener.protocol):
            if protocol in seen_protocols:
                out.append(
                    (f"{base}.{listener.protocol_path(j)}", f"protocol '{protocol}' listed twice")
                )
            seen_protocols.add(protocol)
        if listener.route_config not in route_config_names:
            out.append((f"{base}.route_config", f"unknown route_config '{listener.route_config}'"))
        out.extend(_check_filters(listener, base))

    for i, route_config in enumerate(config.route_configs):
        rc_base = f"route_configs[{i}]"
        _unique_names(route_config.virtual_hosts, f"{rc_base}.virtual_hosts", "virtual host", out)
        domain_owner: dict[str, str] = {}
        for j, vhost in enumerate(route_config.virtual_hosts):
            vh_base = f"{rc_base}.virtual_hosts[{j}]"
            for k, domain in enumerate(vhost.domains):
                if domain in domain_owner:
                    out.append(
                        (
                            f"{vh_base}.domains[{k}]",
                            f"domain '{domain}' already in virtual host '{domain_owner[domain]}'",
                        )
                    )
                else:
                    domain_owner[domain] = vhost.name
            for k, route in enumerate(vhost.routes):
                action = route.route
                r_base = f"{vh_base}.routes[{k}].route"
                if action.cluster is not None:
                    if action.cluster not in cluster_names:
                        out.append((f"{r_base}.cluster", f"unknown cluster '{action.cluster}'"))
                    continue
                for m, weighted in enumerate(action.weighted_clusters or ()):
                    if weighted.name not in cluster_names:
                        out.append(
                            (
                                f"{r_base}.weighted_clusters[{m}].name",
                                f"unknown cluster '{weighted.name}'",
                            )
                        )
    return out


# --------------------------------------------------------------------------------- public API


def parse_config(data: Any, base_dir: Path, source: str = "<config>") -> Config:
    """Validate a loaded YAML document. Relative ``protocols`` paths resolve against
    ``base_dir``. Raises :class:`ConfigError` with every problem found."""
    if data is None:
        raise ConfigError([("<root>", "the config is empty")], source)
    if not isinstance(data, dict):
        raise ConfigError([("<root>", f"expected a mapping, got {_show(data)}")], source)
    bad_keys = [key for key in data if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError([("<root>", f"unknown key {_show(k)}") for k in bad_keys], source)
    try:
        config = Config.model_validate(data, context={"base_dir": Path(base_dir)})
    except ValidationError as exc:
        raise ConfigError(_from_validation_error(exc), source) from None
    errors = _cross_check(config)
    if errors:
        raise ConfigError(errors, source)
    return config


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


def _yaml_error(exc: yaml.YAMLError) -> tuple[str, str]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"{problem} ({context})" if context and problem != str(exc) else problem
    if mark is not None:
        message = f"{mark.line + 1}:{mark.column + 1}: {message}"
    return "<yaml>", message


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML config at ``path``; raises :class:`ConfigError`."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([("<yaml>", f"cannot read {source}: {reason}")], source) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_error(exc)], source) from None
    return parse_config(data, path.resolve().parent, source)


def check_protocols(config: Config, known: Iterable[str]) -> None:
    """Raise :class:`ConfigError` for every listener protocol not among ``known``."""
    known = set(known)
    have = ", ".join(sorted(known)) or "none"
    errors = []
    for i, listener in enumerate(config.listeners):
        for j, protocol in enumerate(listener.protocol):
            if protocol not in known:
                errors.append(
                    (
                        f"listeners[{i}].{listener.protocol_path(j)}",
                        f"unknown protocol '{protocol}' (have: {have})",
                    )
                )
    if errors:
        raise ConfigError(errors)
