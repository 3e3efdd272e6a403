"""Route matching (domains, paths, header matchers), weighted clusters and load balancers."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
import struct
from collections import Counter
from types import SimpleNamespace as NS

import pytest

from protoc_x.runtime import router
from protoc_x.runtime.router import (
    ConsistentHash,
    LeastRequest,
    RandomLB,
    RoundRobin,
    RouteTable,
    WeightedPicker,
    make_balancer,
)


def vhost(name, domains, routes=None):
    return {"name": name, "domains": domains, "routes": routes or [{"match": {}, "route": name}]}


# --------------------------------------------------------------------------- domains


@pytest.fixture
def domains():
    return RouteTable(
        [
            vhost("exact", ["com.acme.Svc"]),
            vhost("suffix-short", ["*.Svc"]),
            vhost("suffix-long", ["*.acme.Svc"]),
            vhost("prefix-short", ["com.*"]),
            vhost("prefix-long", ["com.acme.*"]),
            vhost("default", ["*"]),
        ]
    )


@pytest.mark.parametrize(
    "service, expected",
    [
        ("com.acme.Svc", "exact"),  # exact beats every wildcard that also matches
        ("com.acme.Other.Svc", "suffix-short"),  # suffix wildcards beat prefix wildcards
        ("org.acme.Svc", "suffix-long"),  # the longest suffix wins
        ("x.Svc", "suffix-short"),
        ("com.acme.Foo", "prefix-long"),  # the longest prefix wins
        ("com.other.Foo", "prefix-short"),
        ("org.other.Foo", "default"),
        (".acme.Svc", "suffix-short"),  # "*" must cover at least one character
        ("com.acme.", "prefix-short"),
        ("com.", "default"),
        (".Svc", "default"),
        ("COM.ACME.SVC", "default"),  # compared case-sensitively
        ("", "default"),
        (None, "default"),
    ],
)
def test_domain_precedence(domains, service, expected):
    assert domains.match(service, "m", {}) == expected
    assert domains.virtual_host(service) == expected


def test_none_service_matches_only_the_default():
    table = RouteTable([vhost("a", ["a", "*.a", "a.*"])])
    assert table.match(None, "m") is None
    assert table.match("a", "m") == "a"
    assert table.virtual_host(None) is None


def test_no_virtual_host_gives_none():
    table = RouteTable([vhost("a", ["com.acme.*"])])
    assert table.match("org.acme.Svc", "m") is None
    assert table.match("com.acme.Svc", "m") == "a"


def test_duplicate_domains_are_refused():
    with pytest.raises(ValueError):
        RouteTable([vhost("a", ["x"]), vhost("b", ["x"])])


def test_lookup_cache_stays_bounded():
    table = RouteTable([vhost("a", ["*.acme"]), vhost("d", ["*"])], cache_size=8)
    for i in range(100):
        assert table.match(f"s{i}.acme", "m") == "a"
        assert table.match(f"s{i}.other", "m") == "d"
    assert len(table._cache) <= 8


# --------------------------------------------------------------------------- paths


def routes_table(routes):
    return RouteTable([{"name": "v", "domains": ["*"], "routes": routes}])


def test_prefix_and_path():
    table = routes_table(
        [
            {"match": {"path": "/sayHello"}, "route": "exact"},
            {"match": {"prefix": "/say"}, "route": "prefix"},
            {"match": {"path": "/"}, "route": "no-method"},
            {"match": {}, "route": "catch-all"},
        ]
    )
    assert table.match("s", "sayHello") == "exact"
    assert table.match("s", "sayHelloAgain") == "prefix"
    assert table.match("s", "say") == "prefix"
    assert table.match("s", None) == "no-method"
    assert table.match("s", "") == "no-method"
    assert table.match("s", "other") == "catch-all"


def test_default_prefix_matches_everything_and_order_wins():
    table = routes_table(
        [
            {"match": {"prefix": "/a"}, "route": "first"},
            {"match": {"prefix": "/ab"}, "route": "never"},
            {"match": {"prefix": None, "path": None}, "route": "rest"},
        ]
    )
    assert table.match("s", "abc") == "first"
    assert table.match("s", "xyz") == "rest"
    assert table.match("s", None) == "rest"


def test_no_route_gives_none():
    table = routes_table([{"match": {"path": "/a"}, "route": "a"}])
    assert table.match("s", "b") is None


def test_prefix_and_path_together_are_refused():
    with pytest.raises(ValueError):
        routes_table([{"match": {"prefix": "/a", "path": "/a"}, "route": "x"}])


def test_attribute_style_objects():
    route = NS(match=NS(prefix=None, path="/m", headers=[NS(name="k", exact="v")]), route="obj")
    table = RouteTable([NS(name="v", domains=["svc"], routes=[route])])
    assert table.match("svc", "m", {"k": "v"}) == "obj"
    assert table.match("svc", "m", {"k": "w"}) is None


# --------------------------------------------------------------------------- headers


def header_table(matcher):
    return routes_table(
        [
            {"match": {"headers": [matcher]}, "route": "hit"},
            {"match": {}, "route": "miss"},
        ]
    )


CASES = [
    # matcher, headers that match, headers that do not
    ({"name": "h", "exact": "v1"}, [{"h": "v1"}], [{"h": "v1x"}, {"h": None}, {}]),
    ({"name": "h", "prefix": "v1"}, [{"h": "v1"}, {"h": "v1x"}], [{"h": "xv1"}, {}]),
    ({"name": "h", "regex": r"v\d+"}, [{"h": "v1"}, {"h": "v123"}], [{"h": "v1x"}, {"h": "xv1"}]),
    ({"name": "h", "present": True}, [{"h": ""}, {"h": "v"}], [{}, {"h": None}, {"x": "v"}]),
    ({"name": "h", "present": False}, [{}, {"h": None}], [{"h": ""}, {"h": "v"}]),
    ({"name": "h"}, [{"h": "v"}], [{}]),  # nothing specified: presence, as in Envoy
    ({"name": "h", "suffix": "-1"}, [{"h": "v-1"}], [{"h": "v-2"}, {}]),
    ({"name": "h", "contains": "mid"}, [{"h": "amidst"}], [{"h": "amist"}, {}]),
]


@pytest.mark.parametrize("matcher, hits, misses", CASES)
@pytest.mark.parametrize("invert", [False, True])
def test_header_matchers(matcher, hits, misses, invert):
    table = header_table({**matcher, "invert": invert})
    for headers in hits:
        assert table.match("s", "m", headers) == ("miss" if invert else "hit"), headers
    for headers in misses:
        assert table.match("s", "m", headers) == ("hit" if invert else "miss"), headers


def test_missing_header_fails_value_matchers_and_passes_inverted():
    for kind in ("exact", "prefix", "regex"):
        assert header_table({"name": "h", kind: "x"}).match("s", "m", {}) == "miss"
        assert header_table({"name": "h", kind: "x", "invert": True}).match("s", "m", {}) == "hit"


def test_regex_is_a_full_match():
    table = header_table({"name": "h", "regex": "ab|cd"})
    assert table.match("s", "m", {"h": "cd"}) == "hit"
    assert table.match("s", "m", {"h": "abcd"}) == "miss"


def test_every_header_matcher_must_hold():
    table = routes_table(
        [
            {
                "match": {
                    "prefix": "/",
                    "headers": [
                        {"name": "a", "exact": "1"},
                        {"name": "b", "present": True},
                        {"name": "c", "exact": "x", "invert": True},
                    ],
                },
                "route": "all",
            }
        ]
    )
    assert table.match("s", "m", {"a": "1", "b": "", "c": "y"}) == "all"
    assert table.match("s", "m", {"a": "1", "b": ""}) == "all"
    assert table.match("s", "m", {"a": "1", "b": "", "c": "x"}) is None
    assert table.match("s", "m", {"a": "1"}) is None
    assert table.match("s", "m", {"a": "2", "b": ""}) is None


def test_route_order_with_headers():
    table = routes_table(
        [
            {"match": {"prefix": "/", "headers": [{"name": "v", "exact": "2"}]}, "route": "v2"},
            {"match": {"prefix": "/"}, "route": "v1"},
            {"match": {"prefix": "/", "headers": [{"name": "v", "exact": "3"}]}, "route": "v3"},
        ]
    )
    assert table.match("s", "m", {"v": "2"}) == "v2"
    assert table.match("s", "m", {"v": "3"}) == "v1"  # shadowed by the earlier catch-all
    assert table.match("s", "m", {}) == "v1"


def test_callable_and_frame_like_headers():
    table = header_table({"name": "h", "exact": "v"})
    store = {"h": "v"}
    calls = []

    def get(name):
        calls.append(name)
        return store.get(name)

    assert table.match("s", "m", get) == "hit"
    assert calls == ["h"]
    frame = NS(get_header=store.get)
    assert table.match("s", "m", frame) == "hit"
    assert table.match("s", "m", frame.get_header) == "hit"
    assert table.match("s", "m", lambda name: None) == "miss"
    assert table.match("s", "m", None) == "miss"


def test_headers_not_read_when_no_route_needs_them():
    table = routes_table([{"match": {"prefix": "/"}, "route": "r"}])

    def boom(name):
        raise AssertionError("headers read")

    assert table.match("s", "m", boom) == "r"


def test_conflicting_header_matcher_is_refused():
    with pytest.raises(ValueError):
        header_table({"name": "h", "exact": "a", "prefix": "b"})
    with pytest.raises(ValueError):
        header_table({"exact": "a"})


def test_action_is_returned_as_is():
    action = NS(cluster="c", timeout=1.5)
    table = routes_table([{"match": {}, "route": action}])
    assert table.match("s", "m") is action


# --------------------------------------------------------------------------- weighted clusters


class ScriptedRandom:
    """Hands the picker chosen numbers: ``randrange`` (integral weights) returns the next
    integer, ``random`` (float weights) the next float in [0, 1)."""

    def __init__(self, values):
        self.values = iter(values)

    def randrange(self, stop):
        value = next(self.values)
        assert 0 <= value < stop and isinstance(value, int)
        return value

    def random(self):
        value = next(self.values)
        assert 0.0 <= value < 1.0
        return value


def picks(clusters, values):
    values = list(values)
    picker = WeightedPicker(clusters, rng=ScriptedRandom(values))
    return [picker.pick() for _ in values]


def test_weighted_pick_integral_weights_at_every_point():
    # the point is randrange(total); cluster i takes [cumulative[i-1], cumulative[i])
    assert picks([("a", 1), ("b", 1)], [0, 1, 1, 0]) == ["a", "b", "b", "a"]
    assert picks([("a", 1), ("b", 1), ("c", 1)], [0, 1, 2]) == ["a", "b", "c"]
    assert picks([("a", 20), ("b", 80)], [0, 19, 20, 21, 99]) == ["a", "a", "b", "b", "b"]
    every = picks([("a", 20), ("b", 80)], range(100))
    assert every == ["a"] * 20 + ["b"] * 80
    every = picks([("a", 3), ("b", 1), ("c", 2)], range(6))
    assert every == ["a", "a", "a", "b", "c", "c"]


def test_weighted_pick_zero_width_entries_are_skipped_at_the_boundaries():
    clusters = [("z0", 0), ("a", 2), ("z1", 0), ("z2", 0), ("b", 3), ("z3", 0)]
    assert picks(clusters, range(5)) == ["a", "a", "b", "b", "b"]
    assert WeightedPicker(clusters).names == ("a", "b")


def test_weighted_pick_float_weights_at_the_boundaries():
    below = 0.25 - 2**-54  # a float just under 0.25
    clusters = [("a", 0.5), ("b", 1.5)]  # a takes [0, 0.5) of 2.0: random() in [0, 0.25)
    assert picks(clusters, [0.0, below, 0.25, 0.5, 1 - 2**-53]) == ["a", "a", "b", "b", "b"]
    clusters = [("a", 1.0), ("z", 0.0), ("b", 1.0), ("c", 2.0)]  # [0, .25) [.25, .5) [.5, 1)
    values = [0.0, below, 0.25, 0.5 - 2**-54, 0.5, 0.75, 1 - 2**-53]
    assert picks(clusters, values) == ["a", "a", "b", "b", "c", "c", "c"]


#: Statistical checks accept a count within 4.5 standard deviations of its binomial mean:
#: share p ± 4.5·sqrt(p(1 − p)/n). A correct picker misses that with probability
#: P(|Z| > 4.5) ≈ 6.8e-6 per check (normal approximation, with a fresh seed; the seeds below
#: fix each outcome, so a failure is a change of behaviour, not bad luck).
SIGMAS = 4.5


def within_binomial_bound(count, n, p, sigmas=SIGMAS):
    """``count`` of ``n`` draws, each with probability ``p``, is within ``sigmas`` standard
    deviations of the binomial mean ``n·p`` (exactly 0 or n where p is 0 or 1)."""
    return abs(count - n * p) <= sigmas * (n * p * (1 - p)) ** 0.5


@pytest.mark.parametrize(
    "clusters, shares",
    [
        ([("a", 20), ("b", 80)], {"a": 0.2, "b": 0.8}),
        ([("a", 1), ("b", 1)], {"a": 0.5, "b": 0.5}),
        ([("a", 1), ("b", 1), ("c", 1)], {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
        (
            [{"name": "a", "weight": 0.5}, ("zero", 0), NS(name="b", weight=1.5)],
            {"a": 0.25, "zero": 0.0, "b": 0.75},
        ),
        ([("a", 1.0), ("b", 1.0)], {"a": 0.5, "b": 0.5}),
    ],
)
def test_weighted_split_is_proportional(clusters, shares):
    # n = 160,000: one point of 100 picked by the wrong cluster (bisect_left instead of
    # bisect_right: a 20 % weight gets 21 %) is 0.01·n = 1600 off, twice the 4.5 σ bound
    # (4.5·sqrt(n·0.2·0.8) = 720), so such a picker fails with probability < 7e-6 too
    n = 160_000
    picker = WeightedPicker(clusters, rng=random.Random(7))
    counts = Counter(picker.pick() for _ in range(n))
    assert set(counts) <= set(shares)
    for name, share in shares.items():
        assert within_binomial_bound(counts[name], n, share), (name, counts)


def test_weighted_single_and_invalid():
    assert WeightedPicker([("only", 5)]).pick() == "only"
    with pytest.raises(ValueError):
        WeightedPicker([("a", 0)])
    with pytest.raises(ValueError):
        WeightedPicker([("a", -1), ("b", 2)])


# --------------------------------------------------------------------------- balancers

EPS = ["10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"]


def test_round_robin_cycles():
    lb = RoundRobin(EPS)
    assert [lb.pick() for _ in range(7)] == EPS * 2 + EPS[:1]


def test_round_robin_skips_excluded():
    lb = RoundRobin(EPS)
    bad = frozenset({EPS[1]})
    assert [lb.pick(exclude=bad) for _ in range(4)] == [EPS[0], EPS[2], EPS[0], EPS[2]]
    assert lb.pick(exclude=frozenset(EPS)) is None
    assert RoundRobin([]).pick() is None


def test_random_lb():
    n = 30_000
    lb = RandomLB(EPS, rng=random.Random(1))
    counts = Counter(lb.pick() for _ in range(n))
    assert set(counts) == set(EPS), counts
    assert all(within_binomial_bound(counts[e], n, 1 / 3) for e in EPS), counts
    bad = frozenset(EPS[:2])
    assert {lb.pick(exclude=bad) for _ in range(50)} == {EPS[2]}
    assert lb.pick(exclude=frozenset(EPS)) is None
    assert RandomLB([]).pick() is None


def test_least_request_prefers_idle():
    active = {EPS[0]: 5, EPS[1]: 0, EPS[2]: 3}
    lb = LeastRequest(EPS, active.__getitem__)
    assert {lb.pick() for _ in range(10)} == {EPS[1]}
    assert lb.pick(exclude=frozenset({EPS[1]})) == EPS[2]
    assert lb.pick(exclude=frozenset(EPS)) is None


def test_least_request_ties_go_round_robin():
    lb = LeastRequest(EPS, lambda endpoint: 2)
    assert [lb.pick() for _ in range(6)] == EPS * 2


def test_least_request_power_of_two_choices_on_large_lists():
    endpoints = [f"e{i}" for i in range(50)]
    load = {e: 10 for e in endpoints}
    load["e7"] = 0
    n = 20_000
    lb = LeastRequest(endpoints, load.__getitem__, rng=random.Random(5))
    counts = Counter(lb.pick() for _ in range(n))
    # Two choices, drawn with replacement: e7 wins whenever it is one of them, 1 − (49/50)²
    # = 3.96 % of picks; any other endpoint only when drawn first and e7 not second,
    # (1/50)·(49/50) = 1.96 %.
    assert within_binomial_bound(counts["e7"], n, 1 - (49 / 50) ** 2), counts["e7"]
    others = [e for e in endpoints if e != "e7"]
    assert all(within_binomial_bound(counts[e], n, (1 / 50) * (49 / 50)) for e in others), counts
    assert lb.pick(exclude=frozenset(endpoints[1:])) == "e0"
    assert lb.pick(exclude=frozenset(endpoints)) is None


def keys(n):
    return [f"user-{i}" for i in range(n)]


def test_consistent_hash_is_stable_and_balanced():
    lb = ConsistentHash(EPS)
    first = [lb.pick(k) for k in keys(10_000)]
    assert [lb.pick(k) for k in keys(10_000)] == first
    assert [ConsistentHash(EPS).pick(k) for k in keys(1_000)] == first[:1_000]
    counts = Counter(first)
    for endpoint in EPS:
        assert 0.20 <= counts[endpoint] / 10_000 <= 0.47, counts


def test_consistent_hash_removal_moves_only_the_removed_share():
    before = ConsistentHash(EPS)
    after = ConsistentHash(EPS[:2])
    moved = 0
    for key in keys(10_000):
        old, new = before.pick(key), after.pick(key)
        if old != EPS[2]:
            assert new == old
        else:
            moved += 1
    assert moved / 10_000 <= 0.47


def test_consistent_hash_exclusion_falls_through():
    lb = ConsistentHash(EPS)
    without = ConsistentHash([EPS[0], EPS[2]])
    bad = frozenset({EPS[1]})
    for key in keys(2_000):
        assert lb.pick(key, exclude=bad) == without.pick(key)
    only = frozenset(EPS[:2])
    assert {lb.pick(k, exclude=only) for k in keys(100)} == {EPS[2]}
    assert lb.pick("k", exclude=frozenset(EPS)) is None


def test_consistent_hash_without_key_and_empty():
    lb = ConsistentHash(EPS)
    assert [lb.pick(None) for _ in range(3)] == EPS
    assert lb.pick(None, exclude=frozenset(EPS[:2])) == EPS[2]
    assert ConsistentHash([]).pick("k") is None
    single = ConsistentHash(["only"])
    assert single.pick("k") == "only"
    assert single.pick("k", exclude=frozenset({"only"})) is None


def test_make_balancer():
    assert isinstance(make_balancer("round_robin", EPS), RoundRobin)
    assert isinstance(make_balancer("random", EPS), RandomLB)
    lr = make_balancer("least_request", EPS, active=lambda e: 0)
    assert isinstance(lr, LeastRequest) and lr.hash_header is None
    ch = make_balancer("hash:x-user", EPS)
    assert isinstance(ch, ConsistentHash) and ch.hash_header == "x-user"
    for lb in (make_balancer("round_robin", EPS), make_balancer("random", EPS)):
        assert lb.hash_header is None
    for bad in ("hash:", "weighted", ""):
        with pytest.raises(ValueError):
            make_balancer(bad, EPS)
    with pytest.raises(ValueError):
        make_balancer("least_request", EPS)


# ----------------------------------------------------------------------- endpoint weights


def test_a_weighted_schedule_spreads_each_endpoint_by_its_weight():
    a, b, c = EPS
    assert router.weighted_schedule(EPS, [3, 1, 1]) == (a, a, b, c, a)
    assert router.weighted_schedule(EPS, [6, 2, 2]) == (a, a, b, c, a), "divided by the gcd"
    assert router.weighted_schedule([a, b], [1, 3]) == (b, a, b, b)
    cycle = router.weighted_schedule(EPS, [5, 3, 2])
    assert cycle == (a, b, c, a, a, b, a, c, b, a)
    # a sum past MAX_SCHEDULE is scaled down: the shares stay, each endpoint keeps a place
    huge = router.weighted_schedule(EPS, [1_000_000, 3_000_000, 1])
    counts = Counter(huge)
    assert len(huge) <= router.MAX_SCHEDULE + 3 and counts[c] == 1
    assert abs(counts[b] / counts[a] - 3) < 0.01


def test_weighted_round_robin_and_random():
    a, b, c = EPS
    lb = RoundRobin(EPS, [3, 1, 1])
    assert [lb.pick() for _ in range(10)] == [a, a, b, c, a] * 2
    assert [lb.pick(exclude=frozenset({a})) for _ in range(4)] == [b, c, b, c]
    assert lb.pick(exclude=frozenset(EPS)) is None
    assert RoundRobin(EPS, [1, 1, 1]).endpoints == tuple(EPS), "all 1: as unweighted"
    n = 40_000
    rnd = RandomLB(EPS, rng=random.Random(3), weights=[6, 3, 1])
    counts = Counter(rnd.pick() for _ in range(n))
    for endpoint, share in zip(EPS, (0.6, 0.3, 0.1)):
        assert within_binomial_bound(counts[endpoint], n, share), counts


def test_weighted_least_request_shares_by_weight():
    """Requests that stay active: each pick goes where (active + 1) / weight is least, so the
    active requests settle in proportion to the weights."""
    active = Counter()
    lb = LeastRequest(EPS, active.__getitem__, weights=[2, 1, 1])
    for _ in range(400):
        active[lb.pick()] += 1
    assert [active[e] for e in EPS] == [200, 100, 100]
    # with no weight, idle wins at once
    plain = LeastRequest(EPS, {EPS[0]: 3, EPS[1]: 0, EPS[2]: 1}.__getitem__)
    assert plain.pick() == EPS[1]


def test_weighted_consistent_hash_shares_keys_by_weight():
    n = 20_000
    counts = Counter(ConsistentHash(EPS, weights=[1, 1, 4]).pick(k) for k in keys(n))
    assert 0.55 <= counts[EPS[2]] / n <= 0.78, counts
    for endpoint in EPS[:2]:
        assert 0.08 <= counts[endpoint] / n <= 0.26, counts
    even = ConsistentHash(EPS, weights=[2, 2, 2])
    assert [even.pick(k) for k in keys(2_000)] == [ConsistentHash(EPS).pick(k) for k in keys(2_000)]
    # a request without a key: weighted round robin
    lb = make_balancer("hash:k", EPS, weights=[1, 1, 4])
    assert [lb.pick(None) for _ in range(6)] == [EPS[2], EPS[2], EPS[0], EPS[1], EPS[2], EPS[2]]


# --------------------------------------------------------------------------- precise cases


def test_route_table_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^header matcher without a name: \{'exact': 'a'\}$"):
        header_table({"exact": "a"})
    for name in ("", 5):
        with pytest.raises(ValueError, match="^header matcher without a name: "):
            header_table({"name": name, "exact": "a"})
    with pytest.raises(
        ValueError, match=r"^header matcher 'h' sets more than one of exact/prefix/regex/\.\.\.$"
    ):
        header_table({"name": "h", "exact": "a", "present": True})
    with pytest.raises(ValueError, match="^route match sets both prefix '/a' and path '/b'$"):
        routes_table([{"match": {"prefix": "/a", "path": "/b"}, "route": "x"}])
    with pytest.raises(ValueError, match="^domain 'x' is claimed by more than one virtual host$"):
        RouteTable([vhost("a", ["x"]), vhost("b", ["y", "x"])])


def test_virtual_host_without_a_name_and_a_single_domain_string():
    table = RouteTable([{"domains": "svc", "routes": [{"match": {}, "route": "r"}]}])
    assert table.virtual_host("svc") == "" and table.match("svc", "m") == "r"
    assert table.virtual_host("other") is None


def test_header_matcher_not_inverted_unless_asked():
    for given in ({}, {"invert": None}, {"invert": False}):
        table = header_table({"name": "h", "exact": "v", **given})
        assert table.match("s", "m", {"h": "v"}) == "hit"
        assert table.match("s", "m", {"h": "w"}) == "miss"
    obj = routes_table([{"match": NS(prefix=None, path=None, headers=[NS(name="h", exact="v")]),
                         "route": "hit"}])  # fmt: skip
    assert obj.match("s", "m", {"h": "v"}) == "hit" and obj.match("s", "m", {}) is None


@pytest.mark.parametrize("cache_size, bound", [(8, 8), (1, 1), (0, 1), (None, 4096)])
def test_lookup_caches_stay_bounded_at_every_step(cache_size, bound):
    args = {} if cache_size is None else {"cache_size": cache_size}
    table = RouteTable([vhost("a", ["*.acme"]), vhost("d", ["*"])], **args)
    memo = table._host("x.acme").by_method
    sizes, memo_sizes = set(), set()
    for i in range(bound + 2):
        assert table.match(f"s{i}.acme", f"m{i}") == "a"
        sizes.add(len(table._cache))
        memo_sizes.add(len(memo))
    assert max(sizes) == bound and max(memo_sizes) == bound


def test_a_host_without_header_matchers_remembers_each_methods_route():
    action = NS(cluster="c")  # a truthy action
    table = routes_table(
        [{"match": {"path": "/a"}, "route": action}, {"match": {}, "route": "rest"}]
    )
    host = table._host("s")
    assert table.match("s", "a", lambda name: 1 / 0) is action  # headers never read
    assert table.match("s", "b") == "rest"
    assert host.by_method == {"a": action, "b": "rest"}
    with_headers = header_table({"name": "h", "exact": "v"})
    assert with_headers._host("s").by_method is None  # depends on the headers: not remembered
    assert with_headers.match("s", "m", {"h": "v"}) == "hit"
    assert with_headers.match("s", "m", {}) == "miss"


def test_weighted_errors_and_default_rng():
    with pytest.raises(ValueError, match="^cluster 'a': weight must be a non-negative number$"):
        WeightedPicker([("a", -1), ("b", 2)])
    with pytest.raises(ValueError, match="^cluster 'a': weight must be a non-negative number$"):
        WeightedPicker([{"name": "a"}])
    with pytest.raises(ValueError, match="^weighted clusters need at least one positive weight$"):
        WeightedPicker([("a", 0)])
    picker = WeightedPicker([("a", 1), ("b", 1)])  # its own Random
    assert {picker.pick() for _ in range(200)} == {"a", "b"}
    floats = WeightedPicker([("a", 0.5), ("b", 0.5)])
    assert {floats.pick() for _ in range(200)} == {"a", "b"}


def test_a_single_weighted_cluster_takes_no_random_draw():
    class NoRandom:
        def randrange(self, stop):
            raise AssertionError("drew")

        random = randrange

    picker = WeightedPicker([("z", 0), ("only", 3)], rng=NoRandom())
    assert [picker.pick() for _ in range(3)] == ["only"] * 3


def test_weighted_pick_at_the_top_of_the_range():
    assert picks([("a", 1), ("b", 2), ("c", 3)], [5, 3, 2, 0, 1]) == ["c", "c", "b", "a", "b"]
    assert picks([("a", 1.0), ("b", 3.0)], [1 - 2**-53, 0.25, 0.25 - 2**-54]) == ["b", "b", "a"]


def test_balancer_repr():
    assert repr(RoundRobin(["a:1", "b:2"])) == "RoundRobin(['a:1', 'b:2'])"
    assert repr(ConsistentHash([])) == "ConsistentHash([])"


def test_round_robin_with_exclusions_keeps_its_place():
    lb = RoundRobin(["a", "b", "c", "d"])
    bad = frozenset({"b"})
    assert [lb.pick(exclude=bad) for _ in range(7)] == ["a", "c", "d", "a", "c", "d", "a"]
    assert [lb.pick() for _ in range(3)] == ["b", "c", "d"]  # goes on after the last one
    bad = frozenset({"a", "d"})
    assert [lb.pick(exclude=bad) for _ in range(3)] == ["b", "c", "b"]


def scripted(*values):
    return ScriptedRandom(values)


def test_random_lb_draws_exactly():
    lb = RandomLB(EPS, rng=scripted(2, 0, 1, 1, 0))
    assert lb.pick() == EPS[2]
    assert lb.pick(exclude=frozenset({EPS[1]})) == EPS[0]  # the first draw stands
    assert lb.pick(exclude=frozenset({EPS[1]})) == EPS[0]  # 1 twice: then 0 of the rest
    assert RandomLB(EPS).pick() in EPS  # its own Random
    rng = scripted(1, 2, 2, 0)
    lb = make_balancer("random", EPS, rng=rng)  # the rng given is the one drawn from
    assert [lb.pick() for _ in range(4)] == [EPS[1], EPS[2], EPS[2], EPS[0]]
    assert next(rng.values, None) is None


def test_random_lb_second_draw_then_the_remaining_ones():
    lb = RandomLB(EPS, rng=scripted(0, 2))
    assert lb.pick(exclude=frozenset({EPS[0]})) == EPS[2]
    lb = RandomLB(EPS, rng=scripted(0, 1, 0))  # two excluded draws: a draw among the rest
    assert lb.pick(exclude=frozenset(EPS[:2])) == EPS[2]


def test_least_request_stops_at_the_first_idle_endpoint():
    read = []
    load = {"a": 1, "b": 0, "c": 0}
    lb = LeastRequest(["a", "b", "c"], lambda e: read.append(e) or load[e])
    assert lb.pick() == "b" and read == ["a", "b"]  # 1 is not idle: "b" is looked at; "c" not
    read.clear()
    assert lb.pick() == "b" and read == ["b"]  # the next scan starts at "b"
    load = {"a": 2, "b": 1, "c": 1}
    read.clear()
    assert lb.pick() == "c" and read == ["c", "a", "b"]  # ties: the first in this scan's order


def many(n):
    return [f"e{i}" for i in range(n)]


def test_least_request_scans_up_to_16_endpoints_then_draws():
    load = {e: 5 for e in many(17)}
    load["e15"] = 0
    assert LeastRequest(many(16), load.__getitem__, rng=scripted()).pick() == "e15"  # no draw
    lb = LeastRequest(many(17), load.__getitem__, rng=scripted(3, 4))
    assert lb.pick() == "e3"  # two draws, same load: the first
    rng = scripted(4, 15)
    lb = make_balancer("least_request", many(17), active=load.__getitem__, rng=rng)
    assert lb.pick() == "e15" and next(rng.values, None) is None
    lb = LeastRequest(many(17), load.__getitem__, rng=scripted(6), choice_count=1)
    assert lb.pick() == "e6"
    lb = LeastRequest(many(17), load.__getitem__, rng=scripted(8), choice_count=0)
    assert lb.pick() == "e8"  # at least one choice
    lb = LeastRequest(many(17), load.__getitem__, full_scan_max=17, rng=scripted())
    assert lb.pick() == "e15"
    assert LeastRequest(many(17), load.__getitem__).pick() in load  # its own Random


def test_least_request_draws_with_exclusions():
    load = {e: 5 for e in many(20)}
    load["e9"], load["e3"] = 1, 2
    bad = frozenset(many(20)) - {"e3", "e9", "e5"}
    # excluded draws are skipped; the two choices are e5 and e3
    lb = LeastRequest(many(20), load.__getitem__, rng=scripted(0, 5, 1, 3))
    assert lb.pick(exclude=bad) == "e3"
    # eight draws (4 × 2 choices), one usable: it stands, no scan for the better e9
    lb = LeastRequest(many(20), load.__getitem__, rng=scripted(5, 0, 0, 0, 0, 0, 0, 0))
    assert lb.pick(exclude=bad) == "e5"
    # eight draws, none usable: every endpoint is looked at
    lb = LeastRequest(many(20), load.__getitem__, rng=scripted(0, 1, 2, 4, 6, 7, 8, 10))
    assert lb.pick(exclude=bad) == "e9"


def test_make_balancer_errors():
    with pytest.raises(ValueError, match="^least_request needs an active-request counter$"):
        make_balancer("least_request", EPS)
    with pytest.raises(ValueError, match="^least_request needs an active-request counter$"):
        LeastRequest(EPS, None)
    with pytest.raises(ValueError, match=r"^hash policy needs a header name: hash:<header>$"):
        make_balancer("hash: ", EPS)
    with pytest.raises(ValueError) as info:
        make_balancer("weighted", EPS)
    assert str(info.value) == (
        "unknown load-balancing policy 'weighted'; expected one of "
        "('round_robin', 'random', 'least_request', 'hash:<header>')"
    )


# ketama as its definition says, independently of ConsistentHash's tables
def ketama(endpoints, vnodes=160):
    ring = []
    for endpoint in endpoints:
        for i in range(max(1, (vnodes + 3) // 4)):
            digest = hashlib.md5(f"{endpoint}-{i}".encode()).digest()
            ring += [(struct.unpack_from("<I", digest, j)[0], endpoint) for j in (0, 4, 8, 12)]
    ring.sort()

    def pick(key, exclude=frozenset()):
        point = struct.unpack_from("<I", hashlib.md5(key.encode()).digest())[0]
        start = bisect.bisect_left(ring, (point, ""))
        for k in range(len(ring)):
            owner = ring[(start + k) % len(ring)][1]
            if owner not in exclude:
                return owner
        return None

    return ring, pick


def covering_keys(ring, limit=100_000):
    """Keys that land on every position of ``ring`` (its first point at or after md5(key))."""
    points = [p for p, _ in ring]
    found = {}
    for n in range(limit):
        key = f"key-{n}"
        point = struct.unpack_from("<I", hashlib.md5(key.encode()).digest())[0]
        found.setdefault(bisect.bisect_left(points, point) % len(points), key)
        if len(found) == len(points):
            return list(found.values())
    raise AssertionError("no keys for some positions")


@pytest.mark.parametrize(
    "endpoints, vnodes", [(["a:1", "b:2", "c:3", "d:4"], 4), (["x", "y", "z"], 8), (["p", "q"], 1)]
)
def test_consistent_hash_is_ketama_with_and_without_exclusions(endpoints, vnodes):
    ring, reference = ketama(endpoints, vnodes)
    lb = ConsistentHash(endpoints, vnodes=vnodes)
    keys_ = covering_keys(ring)
    foreign = frozenset({"other:1", "other:2", "other:3", "other:4"})
    for size in range(len(endpoints) + 1):
        for excluded in itertools.combinations(endpoints, size):
            for exclude in (frozenset(excluded), frozenset(excluded) | foreign):
                for key in keys_:
                    assert lb.pick(key, exclude) == reference(key, exclude), (key, exclude)


def test_consistent_hash_default_is_160_points_per_endpoint():
    _, reference = ketama(EPS, 160)
    lb = ConsistentHash(EPS)
    assert all(lb.pick(k) == reference(k) for k in keys(300))
    _, reference = ketama(EPS, 161)  # 41 digests
    lb = ConsistentHash(EPS, vnodes=161)
    assert all(lb.pick(k) == reference(k) for k in keys(300))
    assert ConsistentHash(["only"], vnodes=0).pick("k") == "only"


def test_consistent_hash_skip_table_points_to_the_next_other_owner():
    for endpoints, vnodes in ((EPS, 160), (["a", "b"], 4), (["a", "b", "c", "d", "e"], 12)):
        lb = ConsistentHash(endpoints, vnodes=vnodes)
        owners, size = lb._owners, len(lb._owners)
        for i in range(size):
            j = next(j % size for j in range(i + 1, i + size) if owners[j % size] != owners[i])
            assert lb._skip[i] == j, (i, endpoints)


def test_consistent_hash_works_where_md5_is_for_non_security_use_only(monkeypatch):
    """A FIPS build of OpenSSL refuses md5 unless it is declared not used for security."""

    def fips_md5(data=b"", **kwargs):
        if kwargs != {"usedforsecurity": False}:
            raise ValueError("[digital envelope routines] unsupported")
        return hashlib.md5(data, usedforsecurity=False)

    monkeypatch.setattr(router, "_md5", fips_md5)
    lb = ConsistentHash(EPS)
    _, reference = ketama(EPS)
    assert [lb.pick(k) for k in keys(50)] == [reference(k) for k in keys(50)]
