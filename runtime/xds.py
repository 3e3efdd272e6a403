"""The xDS client: listeners, routes, clusters and endpoints from a control plane, over one ADS
stream (gRPC, state of the world, v3), served through :meth:`Proxy.reload` like a SIGHUP's.

The config file names the control plane (``dynamic_resources``, Envoy's bootstrap) and may keep
static resources beside the dynamic ones. After each response the client composes the file's
document with every resource received (runtime/xds_resources.py gives each as the YAML's mapping) and
checks the whole with the YAML's own checks. A response whose resources cannot be taken, or
that leaves the whole invalid, is NACKed with the reason (``error_detail``) and changes nothing:
the last good config keeps serving. A good one is served, then ACKed.

As in Envoy: LDS and CDS responses hold every resource of their type (one left out is removed);
RDS and EDS responses hold those that changed, and the client asks for the route configs its
listeners name and the endpoints of its EDS clusters. A listener waits (is not opened) until
its route config has come; an EDS cluster serves no endpoint until its assignment has. When
the stream fails, the client reconnects with backoff (jittered, doubling up to a limit) and
serves the last config meanwhile; on a new stream it tells the versions it has.

A listener that changes to a route config that has not come yet is warming, as in Envoy: its
last version keeps serving (with its routes) until the new routes come. A route naming a
cluster that is not there (yet) is answered 503, as Envoy's RDS routes are.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from . import xds_resources as envoy
from .config import ConfigError, Document, UpstreamEndpoint, _from_validation_error
from .proxy import _now  # (one timestamp format in /config_dump)

_ENDPOINT = TypeAdapter(UpstreamEndpoint)


def _config_message(error: ValidationError) -> str:
    return "; ".join(message for _, message, _, _ in _from_validation_error(error))


log = logging.getLogger("protoc_x")

# the order Envoy subscribes in: clusters (and their endpoints) before the listeners that
# route to them
ORDER = (envoy.CLUSTER, envoy.ENDPOINT, envoy.LISTENER, envoy.ROUTE)
KIND = {
    envoy.LISTENER: "Listener",
    envoy.ROUTE: "RouteConfiguration",
    envoy.CLUSTER: "Cluster",
    envoy.ENDPOINT: "ClusterLoadAssignment",
}
_INVALID_ARGUMENT = 3  # google.rpc.Code
#: the ADS channel: a keepalive ping after 5 idle minutes (what gRPC servers allow by default)
#: finds a dead control plane behind a silent network; responses up to 64 MiB (gRPC's default
#: 4 MiB is less than a large mesh's CDS)
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


@dataclass
class Resource:
    name: str
    message: Any  # the Envoy message
    value: Any  # its translation: a mapping (listener: with its inline route config) or endpoints
    version_info: str
    last_updated: str


@dataclass
class State:
    """What the control plane has sent and the client took, by type and name."""

    resources: dict[str, dict[str, Resource]] = field(
        default_factory=lambda: {t: {} for t in ORDER}
    )
    versions: dict[str, str] = field(default_factory=dict)  # the last version taken, by type
    # the version of each dynamic listener that serves: the newest whose routes are in, or the
    # one before while the newest warms (:meth:`XdsClient.warm`)
    serving: dict[str, Resource] = field(default_factory=dict)

    def copy(self) -> State:
        return State(
            {t: dict(r) for t, r in self.resources.items()}, dict(self.versions), dict(self.serving)
        )


class XdsClient:
    """One ADS stream to the control plane that ``config.dynamic_resources`` names, feeding
    ``proxy``. :meth:`compose` gives the config to serve; :meth:`reconfigure` takes a new
    config file's (SIGHUP)."""

    def __init__(self, config, protocols: dict):
        self.static = config
        self.protocols = protocols
        self.state = State()
        self.proxy = None
        self.task: asyncio.Task | None = None
        self.lock = asyncio.Lock()  # one reload at a time: the control plane's or SIGHUP's
        self.nonces: dict[str, str] = {}
        self.asked: dict[str, tuple[str, ...]] = {}  # the names last asked for, by type
        self.outbox: asyncio.Queue | None = None
        self.connected = False
        self.initialized = asyncio.Event()  # every first answer in, or the fetch timeout
        self.last_nack: dict | None = None
        self.counts = {"ack": 0, "nack": 0, "streams": 0}

    # ---------------------------------------------------------------------------- composing

    def wanted(self, state: State, config=None) -> dict[str, tuple[str, ...]]:
        """The RDS and EDS names to ask for: those the listeners and clusters name."""
        config = config or self.static
        routes = {l.rds.route_config_name for l in config.listeners if l.rds is not None}
        eds = {c.eds_service_name or c.name for c in config.clusters if c.type == "eds"}
        for r in [*state.resources[envoy.LISTENER].values(), *state.serving.values()]:
            name = _rds_name(r)
            if name is not None:
                routes.add(name)
        for r in state.resources[envoy.CLUSTER].values():
            if r.value.get("type") == "eds":
                eds.add(r.value.get("eds_service_name") or r.value["name"])
        return {envoy.ROUTE: tuple(sorted(routes)), envoy.ENDPOINT: tuple(sorted(eds))}

    def warm(self, state: State, static=None) -> None:
        """Which version of each dynamic listener serves (``state.serving``): the newest if its
        route config is in (inline, the file's or the control plane's); else the one that served
        before, while the newest warms; else none yet."""
        have = _route_names(state, static or self.static)

        def ready(r: Resource | None) -> bool:
            return r is not None and (_rds_name(r) is None or _rds_name(r) in have)

        serving = {}
        for name, r in state.resources[envoy.LISTENER].items():
            before = state.serving.get(name)
            if ready(r):
                serving[name] = r
            elif ready(before):
                serving[name] = before
        state.serving = serving

    def compose(self, state: State | None = None, static=None):
        """The config to serve: the file's resources and the control plane's, checked whole
        (ConfigError: each problem named by the resource it is in). Dynamic listeners are those
        :meth:`warm` chose; a static listener whose route config has not come yet is left out
        until it comes."""
        state = state or self.state
        static = static or self.static
        doc = static._document
        data = dict(doc.data)
        # who each item of the composed lists is: the resource it came from, or its index in
        # the file (a file's listener left out while it waits moves the others up)
        owners: dict[str, list[str | int]] = {}
        static_index: dict[str, list[int]] = {}

        def extend(key: str, items: list[tuple[dict, str]]) -> None:
            base = list(data.get(key) or ())
            at = static_index.get(key, range(len(base)))
            owners[key] = list(at) + [owner for _, owner in items]
            data[key] = base + [item for item, _ in items]

        have_routes = _route_names(state, static)
        listeners, inline = [], []
        for r in state.serving.values():
            mapping, inline_routes = r.value
            if inline_routes is not None:
                inline.append((inline_routes, f"Listener {r.name!r}: route_config"))
            listeners.append((mapping, f"Listener {r.name!r}"))
        # static listeners with rds wait for their routes the same way
        filed = list(data.get("listeners") or ())
        static_index["listeners"] = [
            i for i, l in enumerate(filed)
            if not (isinstance(l, dict) and isinstance(l.get("rds"), dict)
                    and l["rds"].get("route_config_name") not in have_routes)
        ]  # fmt: skip
        data["listeners"] = [filed[i] for i in static_index["listeners"]]
        extend("listeners", listeners)
        extend(
            "route_configs",
            [
                (r.value, f"RouteConfiguration {r.name!r}")
                for r in state.resources[envoy.ROUTE].values()
            ]
            + inline,
        )
        extend(
            "clusters",
            [(r.value, f"Cluster {r.name!r}") for r in state.resources[envoy.CLUSTER].values()],
        )
        try:
            config = Document(data, doc.base_dir, composed=True).parse(self.protocols)
        except ConfigError as e:
            raise ConfigError(
                [_owned(path, message, owners) for path, message in e.errors]
            ) from None
        assignments = state.resources[envoy.ENDPOINT]
        clusters = tuple(
            c.model_copy(update={"endpoints": _endpoints(assignments, c)}) if c.type == "eds" else c
            for c in config.clusters
        )
        return config.model_copy(update={"clusters": clusters})

    # ------------------------------------------------------------------------------ running

    def start(self, proxy) -> None:
        self.proxy = proxy
        self.task = asyncio.ensure_future(self.run())
        self._check_initialized(self.wanted(self.state))  # (it may ask for nothing)
        timeout = min(
            (s.initial_fetch_timeout_ms for s in self._sources() if s is not None), default=15_000
        )
        asyncio.get_running_loop().call_later(timeout / 1000, self._give_up_waiting)

    def _sources(self):
        dyn = self.static.dynamic_resources
        return (dyn.lds_config, dyn.cds_config)

    def _give_up_waiting(self) -> None:
        if not self.initialized.is_set():
            log.warning("xDS: the control plane has not answered everything asked within the "
                        "initial fetch timeout; serving what has come")  # fmt: skip
            self.initialized.set()

    async def stop(self) -> None:
        if self.task is not None:
            async with self.lock:  # (never halfway through serving an update)
                self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None

    async def run(self) -> None:
        """Keep a stream to the control plane, reconnecting with backoff."""
        ads = self.static.dynamic_resources.ads_config
        base, cap = (
            ads.retry_back_off.base_interval_ms / 1000,
            ads.retry_back_off.max_interval_ms / 1000,
        )
        delay = base
        attempt = failures = 0
        while True:
            target = self._target(attempt)
            attempt += 1
            bug = None  # (an exception that is not grpc's: a bug)
            try:
                got = await self.stream(target)
                failure = "closed by the control plane"
            except asyncio.CancelledError:
                raise
            except Exception as e:
                got = self.connected
                if not hasattr(e, "code"):  # (grpc's AioRpcError: the stream broke, or never was)
                    bug = e
                failure = _short(e)
            self.connected = False
            if got:
                delay, failures = base, 0  # (it worked for a while: start again from the base)
            failures += 1
            if failures == 1 or failures % 20 == 0:  # (not a line each retry)
                if bug is not None:  # said in full, and the stream starts again
                    log.error("xDS: stream to %s ended", target, exc_info=bug)
                log.warning("xDS: no stream to %s (%s); serving the last config, retrying "
                            "(%d failed in a row)", target, failure, failures)  # fmt: skip
            await asyncio.sleep(random.uniform(delay / 2, delay))  # (jitter, as Envoy's)
            delay = min(cap, delay * 2)

    def _target(self, attempt: int) -> str:
        """The control plane's address: the endpoints of ``ads_config``'s cluster in turn."""
        cluster = self.static.cluster(self.static.dynamic_resources.ads_config.cluster_name)
        endpoint = cluster.endpoints[attempt % len(cluster.endpoints)]
        return str(endpoint)

    async def stream(self, target: str) -> bool:
        """One ADS stream, until it fails: ask, then take each response as it comes."""
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc

        self.outbox = asyncio.Queue()
        self.nonces.clear()
        self.asked.clear()
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.StreamAggregatedResources(self._requests())
            self.counts["streams"] += 1
            self._ask_all()
            async for response in call:
                if not self.connected:
                    log.info("xDS: connected to %s", target)
                    self.connected = True
                await self.take(response)
        return self.connected

    async def _requests(self):
        node = self._node()
        while True:
            request = await self.outbox.get()
            if node is not None:
                request.node.CopyFrom(node)  # (the node goes with the first request only)
                node = None
            yield request

    def _node(self):
        from envoy.config.core.v3 import base_pb2
        from google.protobuf import json_format

        n = self.static.node
        node = base_pb2.Node(id=n.id, cluster=n.cluster, user_agent_name="protoc-x")
        json_format.ParseDict(n.metadata, node.metadata)
        return node

    def _ask_all(self) -> None:
        dyn = self.static.dynamic_resources
        wanted = self.wanted(self.state)
        for type_url in ORDER:
            if type_url == envoy.CLUSTER and dyn.cds_config is None:
                continue
            if type_url == envoy.LISTENER and dyn.lds_config is None:
                continue
            self._ask(type_url, wanted.get(type_url, ()))

    def _subscribed(self, type_url: str) -> bool:
        dyn = self.static.dynamic_resources
        if type_url == envoy.LISTENER:
            return dyn.lds_config is not None
        if type_url == envoy.CLUSTER:
            return dyn.cds_config is not None
        return bool(self.asked.get(type_url))

    def _ask(self, type_url: str, names: tuple[str, ...], error: str | None = None) -> None:
        """Send a request for ``names`` of ``type_url`` (with ``error``: a NACK). Listeners and
        clusters are asked for all at once (no names); route configs and endpoints by name, and
        when none is wanted any more nothing is sent (an empty list would ask for all)."""
        from envoy.service.discovery.v3 import discovery_pb2

        if not names and type_url in (envoy.ROUTE, envoy.ENDPOINT):
            self.asked[type_url] = ()
            return
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            version_info=self.state.versions.get(type_url, ""),
            resource_names=list(names),
            response_nonce=self.nonces.get(type_url, ""),
        )
        if error is not None:
            request.error_detail.code = _INVALID_ARGUMENT
            request.error_detail.message = error
        self.asked[type_url] = names
        self.outbox.put_nowait(request)

    async def take(self, response) -> None:
        """Check a response, serve it, then ACK it; or NACK it and keep what serves."""
        type_url = response.type_url
        if type_url not in KIND or not self._subscribed(type_url):
            if response.resources:  # (as Envoy: what was not asked for is not taken)
                log.warning("xDS: ignored %d resources of %s: not asked for",
                            len(response.resources), type_url)  # fmt: skip
            return
        self.nonces[type_url] = response.nonce
        async with self.lock:
            try:
                state = self._with(response)
                config = self.compose(state)
            except envoy.Refused as e:
                self._nack(type_url, str(e))
                return
            except ConfigError as e:
                self._nack(type_url, "\n".join(e.lines()))
                return
            except Exception as e:  # a bug: said in full; the update is refused, not retried
                log.exception("xDS: cannot take %s", KIND[type_url])
                self._nack(type_url, f"protoc-x failed on it: {type(e).__name__}: {e}")
                return
            try:
                if not same(config, self.proxy.config):
                    await self.proxy.reload(config, self.protocols)
            except (OSError, RuntimeError) as e:  # (a new address that cannot be bound; draining)
                self._nack(
                    type_url, f"cannot serve it: {e.strerror if isinstance(e, OSError) else e}"
                )
                return
            except Exception as e:  # a bug: said in full; the stream goes on
                log.exception("xDS: cannot serve %s", KIND[type_url])
                self._nack(type_url, f"protoc-x failed serving it: {type(e).__name__}: {e}")
                return
            self.state = state
        self.counts["ack"] += 1
        log.info("xDS: %s version %s taken (%d resources)", KIND[type_url],
                 response.version_info, len(response.resources))  # fmt: skip
        wanted = self.wanted(state)
        self._ask(type_url, wanted.get(type_url, ()))  # (the ACK, with the names now wanted)
        self._subscribe(wanted, acked=type_url)
        self._check_initialized(wanted)

    def _subscribe(self, wanted, acked: str | None = None) -> None:
        """Ask for the route configs and endpoints the listeners and clusters now name, where
        that changed (``acked``: the type whose ACK said it already)."""
        for t in (envoy.ENDPOINT, envoy.ROUTE):
            if t != acked and wanted[t] != self.asked.get(t, ()):
                self._ask(t, wanted[t])

    def _check_initialized(self, wanted) -> None:
        if self.initialized.is_set():
            return
        dyn = self.static.dynamic_resources
        have = self.state.versions
        if dyn.lds_config is not None and envoy.LISTENER not in have:
            return
        if dyn.cds_config is not None and envoy.CLUSTER not in have:
            return
        for t in (envoy.ROUTE, envoy.ENDPOINT):
            got = {r.name for r in self.state.resources[t].values()}
            if not set(wanted[t]) <= got:
                return
        log.info("xDS: initial config in")
        self.initialized.set()

    def _nack(self, type_url: str, error: str) -> None:
        self.counts["nack"] += 1
        self.last_nack = {"type_url": type_url, "error_detail": error, "time": _now()}
        log.error("xDS: %s update refused, the running config stays: %s",
                  KIND.get(type_url, type_url), error)  # fmt: skip
        self._ask(type_url, self.asked.get(type_url, ()), error)

    def _with(self, response) -> State:
        """The state with ``response`` taken (raises :class:`envoy.Refused`)."""
        type_url = response.type_url
        kind = KIND[type_url]
        when = _now()
        taken: dict[str, Resource] = {}
        by_name = type_url in (envoy.ROUTE, envoy.ENDPOINT)
        asked = set(self.asked.get(type_url, ()))
        for i, any_msg in enumerate(response.resources):
            msg = envoy.unpack(any_msg, f"resources[{i}]", type_url.rpartition("/")[2])
            name = msg.cluster_name if type_url == envoy.ENDPOINT else msg.name
            if by_name and name not in asked:
                continue  # (not asked for: not taken, as in Envoy)
            try:
                value = _translate(type_url, msg)
            except envoy.Refused as e:
                raise envoy.Refused(
                    f"{kind} {name!r}: {e.path}" if e.path else f"{kind} {name!r}", e.message
                ) from None
            if name in taken:
                raise envoy.Refused(f"resources[{i}]", f"{kind} {name!r} sent twice")
            old = self.state.resources[type_url].get(name)
            if old is not None and old.message == msg:
                taken[name] = old  # (unchanged: keeps its version and time)
            else:
                taken[name] = Resource(name, msg, value, response.version_info, when)
        state = self.state.copy()
        if type_url in (envoy.LISTENER, envoy.CLUSTER):
            state.resources[type_url] = taken  # (every one: one left out is removed)
        else:
            state.resources[type_url].update(taken)
        state.versions[type_url] = response.version_info
        self.warm(state)
        # route configs and assignments nothing names any more are forgotten
        wanted = self.wanted(state)
        for t in (envoy.ROUTE, envoy.ENDPOINT):
            for name in [n for n in state.resources[t] if n not in wanted[t]]:
                del state.resources[t][name]
        return state

    async def reconfigure(self, config, protocols: dict) -> None:
        """A new config file (SIGHUP): served composed with what the control plane sent;
        ConfigError if the two do not fit together. Another control plane (or node) starts
        a new stream, what the old one sent serving until replaced; none forgets it."""
        async with self.lock:
            restart = (
                config.dynamic_resources != self.static.dynamic_resources
                or config.node != self.static.node
            )
            state = self.state.copy() if config.dynamic_resources else State()
            if restart:
                state.versions.clear()  # (another control plane's versions are its own)
            self.warm(state, config)
            composed = self.compose(state, static=config)
            await self.proxy.reload(composed, protocols)
            self.static, self.protocols, self.state = config, protocols, state
        if restart:
            await self.stop()
            self.connected = False
            if config.dynamic_resources is not None:
                self.task = asyncio.ensure_future(self.run())
        elif self.outbox is not None:  # (the route configs and endpoints the file now names)
            self._subscribe(self.wanted(self.state))

    # -------------------------------------------------------------------------------- admin

    def dump(self) -> dict:
        """The control plane's side of /config_dump: who we are, the stream, each dynamic
        resource as Envoy's JSON with its version and when it came, the last NACK."""
        n = self.static.node
        out: dict[str, Any] = {
            "node": {"id": n.id, "cluster": n.cluster, "metadata": n.metadata},
            "control_plane": self.static.dynamic_resources.ads_config.cluster_name,
            "connected": self.connected,
            "versions": {KIND[t]: v for t, v in self.state.versions.items()},
            "acks": self.counts["ack"],
            "nacks": self.counts["nack"],
            "last_nack": self.last_nack,
        }
        names = {envoy.LISTENER: "dynamic_listeners", envoy.ROUTE: "dynamic_route_configs",
                 envoy.CLUSTER: "dynamic_clusters", envoy.ENDPOINT: "dynamic_endpoint_configs"}  # fmt: skip

        def shown(r: Resource) -> dict:
            return {"name": r.name, "version_info": r.version_info,
                    "last_updated": r.last_updated, "resource": envoy.to_json(r.message)}  # fmt: skip

        state = self.state
        for type_url in ORDER:
            resources = state.resources[type_url].values()
            if type_url == envoy.LISTENER:  # (as Envoy's: serving, and warming)
                out["dynamic_warming_listeners"] = [
                    shown(r) for r in resources if state.serving.get(r.name) is not r
                ]
                resources = state.serving.values()
            out[names[type_url]] = [shown(r) for r in resources]
        return out


def _translate(type_url: str, msg):
    if type_url == envoy.LISTENER:
        return envoy.listener(msg)
    if type_url == envoy.ROUTE:
        return envoy.route_config(msg)
    if type_url == envoy.CLUSTER:
        return envoy.cluster(msg)
    out = []
    for where, text in envoy.endpoints(msg):
        try:
            out.append(_ENDPOINT.validate_python(text))
        except ValidationError as e:
            raise envoy.Refused(where, _config_message(e)) from None
    return tuple(out)


def _route_names(state: State, static) -> set[str]:
    """The route configs there are: the file's and those the control plane sent."""
    return {rc.name for rc in static.route_configs} | set(state.resources[envoy.ROUTE])


def _rds_name(listener: Resource) -> str | None:
    """The route config a dynamic listener asks RDS for (None: its routes are inline)."""
    rds = listener.value[0].get("rds")
    return rds["route_config_name"] if rds is not None else None


def _endpoints(assignments: dict[str, Resource], cluster) -> tuple:
    found = assignments.get(cluster.eds_service_name or cluster.name)
    return found.value if found is not None else ()


def same(a, b) -> bool:
    """Whether two configs say the same (``==`` would also compare the documents they came
    from)."""
    return all(getattr(a, f) == getattr(b, f) for f in type(a).model_fields)


def _owned(path: str, message: str, owners: dict) -> tuple[str, str]:
    """A problem of the composed config, named by the resource it is in (or at its path in
    the file)."""
    head, _, rest = path.partition(".")
    key, _, index = head.partition("[")
    if index and key in owners:
        i = int(index.rstrip("]"))
        owner = owners[key][i] if i < len(owners[key]) else None
        if isinstance(owner, int):
            return (f"{key}[{owner}]{'.' + rest if rest else ''}", message)
        if owner is not None:
            return (f"{owner}{': ' + rest if rest else ''}", message)
    return (path, message)


def _short(error: Exception) -> str:
    details = getattr(error, "details", None)
    code = getattr(error, "code", None)
    if callable(details) and callable(code):
        return f"{code().name}: {details()}"
    return f"{type(error).__name__}: {error}"
