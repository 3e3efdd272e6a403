"""A control plane for the tests: a real gRPC ADS server (grpcio, Envoy's v3 service) serving
real Envoy v3 resources, state of the world, as go-control-plane's snapshot cache does.

``set(type_url, resources)`` replaces one type's resources under a new version and pushes them to
every stream that subscribed; each DiscoveryRequest the proxy sends is kept, so a test can wait
for the ACK of a version or see a NACK and its error_detail. ``stop()`` and ``start()`` again
restart it on the same port (a control plane going away). The builders below write the
resources a control plane would send protoc-x (docs/xds.md)."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from concurrent import futures

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, extension_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.generic_proxy.action.v3 import action_pb2
from envoy.extensions.filters.network.generic_proxy.matcher.v3 import matcher_pb2
from envoy.extensions.filters.network.generic_proxy.router.v3 import router_pb2
from envoy.extensions.filters.network.generic_proxy.v3 import generic_proxy_pb2, route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from xds.core.v3 import extension_pb2 as xds_extension_pb2
from xds.type.matcher.v3 import matcher_pb2 as xds_matcher_pb2
from xds.type.matcher.v3 import string_pb2 as xds_string_pb2
from xds.type.v3 import typed_struct_pb2

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.extensions.filters.network.generic_proxy.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
WILDCARD = (LISTENER, CLUSTER)  # every resource of these types goes in each response


class ControlPlane(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, port: int = 0, send_unrequested: bool = False):
        """``send_unrequested``: send every route config and assignment, asked for or not."""
        self.port = port
        self.send_unrequested = send_unrequested
        # requests for route configs or endpoints naming none: as go-control-plane does, served
        # as a wildcard (every resource), though the client meant none
        self.empty_asks: list[discovery_pb2.DiscoveryRequest] = []
        self.server = None
        self.changed = threading.Condition()
        self.snapshot: dict[str, tuple[str, dict]] = {}  # type → (version, name → resource)
        self.versions = itertools.count(1)
        self.nonces = itertools.count(1)
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self.streams = 0

    # -------------------------------------------------------------------------------- serving

    def start(self) -> "ControlPlane":
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=0).wait()
            self.server = None
            with self.changed:
                self.changed.notify_all()

    def StreamAggregatedResources(self, request_iterator, context):
        self.streams += 1
        inbox: queue.Queue = queue.Queue()
        running = self.server

        def read():
            try:
                for request in request_iterator:
                    inbox.put(request)
            except Exception:  # (the stream ended)
                pass
            inbox.put(None)

        threading.Thread(target=read, daemon=True).start()
        subscribed: dict[str, tuple[str, ...]] = {}
        sent: dict[str, str] = {}  # type → version sent
        while context.is_active() and self.server is running:
            try:
                request = inbox.get(timeout=0.05)
            except queue.Empty:
                request = False
            if request is None:
                return
            if request:
                with self.changed:
                    self.requests.append(request)
                    self.changed.notify_all()
                t = request.type_url
                names = tuple(request.resource_names)
                if t not in WILDCARD and not names:
                    self.empty_asks.append(request)
                fresh = subscribed.get(t) != names
                subscribed[t] = names
                if request.HasField("error_detail") and not fresh:
                    continue  # a NACK: wait for a new version
                if fresh or request.version_info != self.snapshot.get(t, ("",))[0]:
                    if t in self.snapshot:
                        sent[t] = None  # (send it below)
            for t, names in subscribed.items():
                version = self.snapshot.get(t, (None,))[0]
                if version is not None and (sent.get(t) != version):
                    sent[t] = version
                    yield self._response(t, names)

    def _response(self, type_url: str, names) -> discovery_pb2.DiscoveryResponse:
        version, resources = self.snapshot[type_url]
        every = type_url in WILDCARD or not names or self.send_unrequested
        chosen = [r for n, r in resources.items() if every or n in names]
        response = discovery_pb2.DiscoveryResponse(
            type_url=type_url, version_info=version, nonce=str(next(self.nonces))
        )
        for resource in chosen:
            packed = any_pb2.Any()
            packed.Pack(resource)
            response.resources.append(packed)
        return response

    # ------------------------------------------------------------------------------ test side

    def set(self, type_url: str, resources) -> str:
        """Serve ``resources`` as the type's whole set from now on; the new version."""
        version = str(next(self.versions))
        by_name = {}
        for r in resources:
            by_name[r.cluster_name if type_url == ENDPOINT else r.name] = r
        with self.changed:
            self.snapshot[type_url] = (version, by_name)
            self.changed.notify_all()
        return version

    def wait(self, predicate, timeout: float = 10.0, what: str = "a request", after: int = 0):
        """The first request (of those kept, from index ``after`` on) for which ``predicate``
        holds, waiting for it."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for request in self.requests[after:]:
                    if predicate(request):
                        return request
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.type_url.rpartition(".")[2], r.version_info, r.error_detail.message)
                            for r in self.requests[-10:]]  # fmt: skip
                    raise AssertionError(f"no {what} within {timeout} s; the last: {seen}")
                self.changed.wait(left)

    def wait_ack(self, type_url: str, version: str, timeout: float = 10.0):
        """The ACK of ``version``: a request answering a response (its nonce set) with that
        version and no error. (A stream's first request carries the version the proxy already
        has, which a restarted control plane numbering from 1 again may have sent before: it
        is not an ACK of this one's.)"""
        return self.wait(
            lambda r: r.type_url == type_url and r.version_info == version
            and r.response_nonce and not r.HasField("error_detail"),
            timeout, f"ACK of {type_url.rpartition('.')[2]} version {version}",
        )  # fmt: skip

    def wait_nack(self, type_url: str, timeout: float = 10.0, after: int = 0):
        """The first NACK of ``type_url`` among the requests from index ``after`` on."""
        return self.wait(
            lambda r: r.type_url == type_url and r.HasField("error_detail"),
            timeout, f"NACK of {type_url.rpartition('.')[2]}", after,
        )  # fmt: skip


# ------------------------------------------------------------------------------------ builders


def bootstrap(cp_port: int, admin: int | None = None, node: str = "sidecar-1",
              retry_ms: tuple[int, int] = (50, 200)) -> dict:  # fmt: skip
    """A proxy config naming the control plane on ``cp_port`` for listeners and clusters
    (docs/xds.md), reconnecting after ``retry_ms`` (base, max)."""
    data = {
        "node": {"id": node, "cluster": "checkout", "metadata": {"labels": {"app": "checkout"}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                           "retry_back_off": {"base_interval_ms": retry_ms[0], "max_interval_ms": retry_ms[1]}},
            "lds_config": {"ads": {}},
            "cds_config": {"ads": {}},
        },
        "clusters": [{"name": "xds", "endpoints": [f"127.0.0.1:{cp_port}"]}],
    }  # fmt: skip
    if admin is not None:
        data["admin"] = {"address": f"127.0.0.1:{admin}"}
    return data


def _any(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def typed_struct(type_url: str, value: dict) -> any_pb2.Any:
    s = struct_pb2.Struct()
    s.update(value)
    return _any(typed_struct_pb2.TypedStruct(type_url=f"type.googleapis.com/{type_url}", value=s))


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def listener(name: str, port: int, protocol: str, rds: str | None = None,
             route_config=None, filters=(), codec: dict | None = None) -> listener_pb2.Listener:  # fmt: skip
    """A listener whose one network filter is generic_proxy speaking ``protocol``, its routes by
    RDS (``rds``, the name) or inline; ``filters``: protoc-x stream filters as (name, config)."""
    gp = generic_proxy_pb2.GenericProxy(
        stat_prefix=name,
        codec_config=extension_pb2.TypedExtensionConfig(
            name="protoc_x.codec",
            typed_config=typed_struct(
                "protoc_x.config.v1.Codec", {"protocol": protocol, **(codec or {})}
            ),
        ),
    )
    if rds is not None:
        gp.generic_rds.route_config_name = rds
        gp.generic_rds.config_source.ads.SetInParent()
    else:
        gp.route_config.CopyFrom(route_config)
    for fname, config in filters:
        gp.filters.append(
            extension_pb2.TypedExtensionConfig(
                name=fname, typed_config=typed_struct(f"protoc_x.filters.v1.{fname}", config)
            )
        )
    gp.filters.append(
        extension_pb2.TypedExtensionConfig(
            name="envoy.filters.generic.router", typed_config=_any(router_pb2.Router())
        )
    )
    return listener_pb2.Listener(
        name=name,
        address=socket_address("127.0.0.1", port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.generic_proxy", typed_config=_any(gp)
                    )
                ]
            )
        ],
    )


def action(cluster: str | None = None, weighted: dict | None = None,
           timeout_ms: int | None = None) -> xds_extension_pb2.TypedExtensionConfig:  # fmt: skip
    a = action_pb2.RouteAction()
    if weighted is not None:
        for name, weight in weighted.items():
            a.weighted_clusters.clusters.append(
                route_components_pb2.WeightedCluster.ClusterWeight(
                    name=name, weight=wrappers_pb2.UInt32Value(value=weight)
                )
            )
    else:
        a.cluster = cluster
    if timeout_ms is not None:
        a.timeout.CopyFrom(duration_pb2.Duration(nanos=timeout_ms * 1_000_000))
    return xds_extension_pb2.TypedExtensionConfig(name="route", typed_config=_any(a))


def _input(message) -> xds_extension_pb2.TypedExtensionConfig:
    return xds_extension_pb2.TypedExtensionConfig(name="input", typed_config=_any(message))


def predicate(method: str | None = None, headers: dict | None = None, regex: dict | None = None):
    """All of: the method is ``method``, each header has its value, each ``regex`` header
    matches its pattern."""
    P = xds_matcher_pb2.Matcher.MatcherList.Predicate
    singles = []
    if method is not None:
        singles.append(P(single_predicate=P.SinglePredicate(
            input=_input(matcher_pb2.MethodMatchInput()),
            value_match=xds_string_pb2.StringMatcher(exact=method))))  # fmt: skip
    for name, value in (headers or {}).items():
        singles.append(P(single_predicate=P.SinglePredicate(
            input=_input(matcher_pb2.PropertyMatchInput(property_name=name)),
            value_match=xds_string_pb2.StringMatcher(exact=value))))  # fmt: skip
    for name, pattern in (regex or {}).items():
        singles.append(P(single_predicate=P.SinglePredicate(
            input=_input(matcher_pb2.PropertyMatchInput(property_name=name)),
            value_match=xds_string_pb2.StringMatcher(
                safe_regex=_regex(pattern)))))  # fmt: skip
    if len(singles) == 1:
        return singles[0]
    return P(and_matcher=P.PredicateList(predicate=singles))


def _regex(pattern: str):
    from xds.type.matcher.v3 import regex_pb2

    return regex_pb2.RegexMatcher(regex=pattern)


def matcher(*routes, otherwise=None) -> xds_matcher_pb2.Matcher:
    """Routes as (predicate, action) tried in order; ``otherwise``: the action when none
    matches."""
    M = xds_matcher_pb2.Matcher
    m = M(matcher_list=M.MatcherList(matchers=[
        M.MatcherList.FieldMatcher(predicate=p, on_match=M.OnMatch(action=a)) for p, a in routes
    ]))  # fmt: skip
    if otherwise is not None:
        m.on_no_match.action.CopyFrom(otherwise)
    return m


def route_config(name: str, vhosts) -> route_pb2.RouteConfiguration:
    """``vhosts``: (name, hosts, matcher) each."""
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_pb2.VirtualHost(name=vname, hosts=list(hosts), routes=m)
            for vname, hosts, m in vhosts
        ],
    )


def eds_cluster(name: str, **options) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(nanos=500_000_000),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    c.eds_cluster_config.eds_config.ads.SetInParent()
    if options:
        c.typed_extension_protocol_options["protoc_x.cluster"].CopyFrom(
            typed_struct("protoc_x.config.v1.ClusterOptions", options)
        )
    return c


def assignment(
    name: str, endpoints, unhealthy=(), weights=None
) -> endpoint_pb2.ClusterLoadAssignment:
    """``endpoints``: (host, port) each; those in ``unhealthy`` are sent as UNHEALTHY;
    ``weights``: (host, port) → load_balancing_weight."""
    lbs = []
    for host, port in list(endpoints) + list(unhealthy):
        lbs.append(endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=socket_address(host, port)),
            health_status=(health_check_pb2.UNHEALTHY if (host, port) in unhealthy
                           else health_check_pb2.HEALTHY)))  # fmt: skip
        if weights and (host, port) in weights:
            lbs[-1].load_balancing_weight.value = weights[(host, port)]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lbs)]
    )
