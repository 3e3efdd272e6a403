"""Envoy v3 resources read as the config's mappings (runtime/xds_resources.py): Envoy's defaults
where a field is left out, and a refusal naming the field where protoc-x would otherwise serve
something other than what the resource says. (The control plane's side, over a real ADS
stream: test_xds.py.)"""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.extensions.filters.network.generic_proxy.action.v3 import action_pb2
from envoy.extensions.filters.network.generic_proxy.router.v3 import router_pb2
from envoy.extensions.filters.network.generic_proxy.v3 import generic_proxy_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, wrappers_pb2
from xds.type.matcher.v3 import matcher_pb2 as xds_matcher_pb2

from protoc_x.runtime import xds_resources as envoy
from tests.peers import xds_control_plane as xcp


def _route_of(action: action_pb2.RouteAction) -> dict:
    """The one route of a route config whose only route leads to ``action``."""
    ext = xcp.action("a")
    ext.typed_config.Pack(action)
    rc = xcp.route_config("r", [("all", ["*"], xcp.matcher(otherwise=ext))])
    (vhost,) = envoy.route_config(rc)["virtual_hosts"]
    (route,) = vhost["routes"]
    return route["route"]


def test_a_retry_policy_without_num_retries_is_one_retry_as_in_envoy():
    action = action_pb2.RouteAction(cluster="a")
    action.retry_policy.retry_on = "connect-failure, reset"
    assert _route_of(action) == {"cluster": "a", "retries": 1}
    action.retry_policy.num_retries.value = 0
    assert _route_of(action)["retries"] == 0
    assert "retries" not in _route_of(action_pb2.RouteAction(cluster="a"))


def test_a_retry_condition_protoc_x_does_not_retry_on_is_refused():
    action = action_pb2.RouteAction(cluster="a")
    action.retry_policy.retry_on = "reset,5xx"
    with pytest.raises(envoy.Refused) as e:
        _route_of(action)
    assert e.value.path.endswith("typed_config.retry_policy.retry_on")
    assert e.value.message.startswith("5xx: protoc-x retries on connect-failure")


def test_total_weight_must_be_the_sum_of_the_weights():
    action = action_pb2.RouteAction()
    for name, weight in (("a", 30), ("b", 70)):
        c = action.weighted_clusters.clusters.add(name=name)
        c.weight.value = weight
    action.weighted_clusters.total_weight.value = 100
    assert _route_of(action)["weighted_clusters"] == [
        {"name": "a", "weight": 30},
        {"name": "b", "weight": 70},
    ]
    action.weighted_clusters.total_weight.value = 120
    with pytest.raises(envoy.Refused) as e:
        _route_of(action)
    assert e.value.message == "120 is not the sum of the weights (100)"


def test_ignore_case_on_a_regex_is_refused_as_envoy_ignores_it():
    pred = xcp.predicate(regex={"color": "blue"})
    pred.single_predicate.value_match.ignore_case = True
    with pytest.raises(envoy.Refused) as e:
        envoy.routes(xcp.matcher((pred, xcp.action("a"))), "routes")
    assert e.value.path.endswith("value_match.ignore_case")
    # an exact match with ignore_case is a case-blind regex
    exact = xcp.predicate(headers={"color": "Blue"})
    exact.single_predicate.value_match.ignore_case = True
    (route,) = envoy.routes(xcp.matcher((exact, xcp.action("a"))), "routes")
    assert route["match"]["headers"] == [{"name": "color", "regex": "(?i)Blue"}]


@pytest.mark.parametrize("which", ["and_matcher", "or_matcher"])
def test_an_and_or_or_of_fewer_than_two_predicates_is_refused(which):
    P = xds_matcher_pb2.Matcher.MatcherList.Predicate
    one = xcp.predicate(method="m")
    pred = P(**{which: P.PredicateList(predicate=[one])})
    with pytest.raises(envoy.Refused) as e:
        envoy.routes(xcp.matcher((pred, xcp.action("a"))), "routes")
    assert e.value.path.endswith(f"predicate.{which}.predicate")
    assert e.value.message == "needs two predicates or more"


def test_a_retry_budget_takes_envoys_defaults():
    c = xcp.eds_cluster("a")
    budget = c.circuit_breakers.thresholds.add().retry_budget
    budget.SetInParent()
    assert envoy.cluster(c)["retry_budget"] == {"percent": 20.0, "min_concurrency": 3}
    budget.budget_percent.CopyFrom(percent_pb2.Percent(value=50.0))
    budget.min_retry_concurrency.value = 7
    assert envoy.cluster(c)["retry_budget"] == {"percent": 50.0, "min_concurrency": 7}


def test_one_threshold_at_most():
    c = xcp.eds_cluster("a")
    for limit in (10, 20):
        c.circuit_breakers.thresholds.append(
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_requests=wrappers_pb2.UInt32Value(value=limit)
            )
        )
    with pytest.raises(envoy.Refused) as e:
        envoy.cluster(c)
    assert e.value.path == "circuit_breakers.thresholds"


def test_the_lb_policy_is_said_once():
    c = xcp.eds_cluster("a", lb_policy="least_request")
    assert envoy.cluster(c)["lb_policy"] == "least_request"  # (ROUND_ROBIN: Envoy's default)
    c.lb_policy = cluster_pb2.Cluster.RANDOM
    with pytest.raises(envoy.Refused) as e:
        envoy.cluster(c)
    assert e.value.message == "the cluster's lb_policy says it"
    plain = xcp.eds_cluster("b")
    plain.lb_policy = cluster_pb2.Cluster.RANDOM
    assert envoy.cluster(plain)["lb_policy"] == "random"


def _generic_proxy(listener) -> generic_proxy_pb2.GenericProxy:
    gp = generic_proxy_pb2.GenericProxy()
    listener.filter_chains[0].filters[0].typed_config.Unpack(gp)
    return gp


def _with_generic_proxy(listener, gp) -> None:
    listener.filter_chains[0].filters[0].typed_config.Pack(gp)


def test_a_router_binding_upstream_connections_is_refused():
    listener = xcp.listener("l", 1, "bolt", rds="r")
    gp = _generic_proxy(listener)
    gp.filters[-1].typed_config.Pack(router_pb2.Router(bind_upstream_connection=True))
    _with_generic_proxy(listener, gp)
    with pytest.raises(envoy.Refused) as e:
        envoy.listener(listener)
    assert e.value.path.endswith("filters[0].typed_config.bind_upstream_connection")


def test_a_config_source_is_ads_v3_with_the_bootstraps_fetch_timeout():
    listener = xcp.listener("l", 1, "bolt", rds="r")
    gp = _generic_proxy(listener)
    gp.generic_rds.config_source.resource_api_version = 1  # V2
    _with_generic_proxy(listener, gp)
    with pytest.raises(envoy.Refused) as e:
        envoy.listener(listener)
    assert e.value.path.endswith("generic_rds.config_source.resource_api_version")
    gp.generic_rds.config_source.resource_api_version = 2  # V3
    gp.generic_rds.config_source.initial_fetch_timeout.seconds = 3
    _with_generic_proxy(listener, gp)
    with pytest.raises(envoy.Refused) as e:
        envoy.listener(listener)
    assert e.value.path.endswith("config_source.initial_fetch_timeout")


def test_an_envoy_codec_config_names_the_protocol_and_shows_in_config_dump():
    """One of Envoy's codec configs (a type protobuf may not know) names the protocol; the
    listener still shows in /config_dump."""
    listener = xcp.listener("l", 1, "bolt", rds="r")
    gp = _generic_proxy(listener)
    gp.codec_config.typed_config.CopyFrom(
        any_pb2.Any(
            type_url="type.googleapis.com/envoy.extensions.filters.network.generic_proxy"
            ".codecs.bolt.v3.BoltCodecConfig"
        )
    )
    _with_generic_proxy(listener, gp)
    mapping, _ = envoy.listener(listener)
    assert mapping["protocol"] == "bolt"
    shown = envoy.to_json(listener)
    assert shown["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert "BoltCodecConfig" in shown["text_proto"]
    assert "text_proto" not in envoy.to_json(xcp.eds_cluster("a"))
