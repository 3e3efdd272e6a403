"""Route matching (domains, paths, header matchers), weighted clusters and load balancers."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace as NS

import pytest

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
