"""Request routing and upstream choice, in Envoy's route_config vocabulary.

Everything here takes plain data (attribute-style objects or dicts) and compiles it once at
construction, so that the per-request calls do no parsing, no regex compilation and next to no
allocation:

* :class:`RouteTable` picks a virtual host by domain (the request's service) and then the first
  route whose path and header matchers hold; it returns the route's action as given.
* :class:`WeightedPicker` chooses a cluster of a weighted-clusters action.
* :class:`RoundRobin`, :class:`RandomLB`, :class:`LeastRequest` and :class:`ConsistentHash`
  choose an endpoint of a cluster, skipping excluded (unhealthy) endpoints;
  :func:`make_balancer` builds one from a policy string.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import re
import struct
from bisect import bisect_left, bisect_right
from functools import reduce
from collections.abc import Mapping
from typing import Any, Callable, Hashable, Iterable, Sequence

__all__ = [
    "RouteTable",
    "WeightedPicker",
    "Balancer",
    "RoundRobin",
    "RandomLB",
    "LeastRequest",
    "ConsistentHash",
    "make_balancer",
    "POLICIES",
]

_EMPTY: frozenset = frozenset()


def _get(obj: Any, name: str) -> Any:
    """Read ``name`` from a mapping or an attribute-style object (None if absent)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _no_headers(name: str) -> None:
    return None


def _header_getter(headers: Any) -> Callable[[str], Any]:
    """A name -> value function over a mapping, a callable, or an object with get_header."""
    if headers is None:
        return _no_headers
    if callable(headers):
        return headers
    get = getattr(headers, "get", None)
    if get is not None:
        return get
    return headers.get_header


# ---------------------------------------------------------------------------------------------
# Route table
# ---------------------------------------------------------------------------------------------

# Header matcher kinds, in the order a matcher's fields are looked at.
_EXACT, _PREFIX, _SUFFIX, _CONTAINS, _REGEX, _PRESENT = range(6)
_VALUE_KINDS = (("exact", _EXACT), ("prefix", _PREFIX), ("suffix", _SUFFIX))
_VALUE_KINDS += (("contains", _CONTAINS), ("regex", _REGEX))


def _compile_header_matcher(matcher: Any) -> tuple[str, int, Any, bool]:
    name = _get(matcher, "name")
    if not name or not isinstance(name, str):
        raise ValueError(f"header matcher without a name: {matcher!r}")
    given = [(kind, _get(matcher, field)) for field, kind in _VALUE_KINDS]
    given = [(kind, value) for kind, value in given if value is not None]
    present = _get(matcher, "present")
    if present is not None:
        given.append((_PRESENT, bool(present)))
    if len(given) > 1:
        raise ValueError(f"header matcher {name!r} sets more than one of exact/prefix/regex/...")
    # Envoy: a matcher that specifies nothing checks that the header is present.
    kind, operand = given[0] if given else (_PRESENT, True)
    if kind == _REGEX:
        operand = re.compile(operand)
    elif kind != _PRESENT:
        operand = str(operand)
    return (name, kind, operand, bool(_get(matcher, "invert")))


def _compile_route(route: Any) -> tuple[str | None, str, tuple, Any]:
    match = _get(route, "match")
    prefix = _get(match, "prefix")
    path = _get(match, "path")
    if prefix is not None and path is not None:
        raise ValueError(f"route match sets both prefix {prefix!r} and path {path!r}")
    if path is None and prefix is None:
        prefix = "/"
    checks = tuple(_compile_header_matcher(m) for m in (_get(match, "headers") or ()))
    # (the prefix is only looked at when there is no path)
    return (path, prefix, checks, _get(route, "route"))


class _VirtualHost:
    __slots__ = ("name", "routes", "by_method")

    def __init__(self, name: str, routes: tuple) -> None:
        self.name = name
        self.routes = routes
        # with no header matcher, a method always picks the same route: remembered per method
        self.by_method: dict | None = None if any(r[2] for r in routes) else {}


_MISS = object()


class RouteTable:
    """Virtual hosts chosen by domain, then the first matching route of the chosen host.

    ``virtual_hosts`` is a sequence of objects or dicts with ``name``, ``domains`` and ``routes``;
    each route has ``match`` (``prefix`` | ``path``, ``headers``) and ``route`` (the action).
    """

    __slots__ = (
        "_exact", "_suffixes", "_prefixes", "_default", "_cache", "_cache_max", "reads_headers"
    )  # fmt: skip

    def __init__(self, virtual_hosts: Iterable[Any], cache_size: int = 4096) -> None:
        exact: dict[str, _VirtualHost] = {}
        suffixes: dict[int, dict[str, _VirtualHost]] = {}
        prefixes: dict[int, dict[str, _VirtualHost]] = {}
        default: _VirtualHost | None = None
        seen: set[str] = set()
        #: whether a route matches headers: the only time :meth:`match` reads them
        self.reads_headers = False
        for vh in virtual_hosts:
            name = _get(vh, "name") or ""
            host = _VirtualHost(name, tuple(_compile_route(r) for r in (_get(vh, "routes") or ())))
            if host.by_method is None:
                self.reads_headers = True
            domains = _get(vh, "domains") or ()
            if isinstance(domains, str):
                domains = (domains,)
            for domain in domains:
                if domain in seen:
                    raise ValueError(f"domain {domain!r} is claimed by more than one virtual host")
                seen.add(domain)
                if domain == "*":
                    default = host
                elif domain.startswith("*"):
                    suffix = domain[1:]
                    suffixes.setdefault(len(suffix), {})[suffix] = host
                elif domain.endswith("*"):
                    prefix = domain[:-1]
                    prefixes.setdefault(len(prefix), {})[prefix] = host
                else:
                    exact[domain] = host
        self._exact = exact
        # Longest first; a wildcard must cover at least one character, hence len(service) > n.
        self._suffixes = tuple(sorted(suffixes.items(), reverse=True))
        self._prefixes = tuple(sorted(prefixes.items(), reverse=True))
        self._default = default
        self._cache: dict[Any, _VirtualHost | None] = {}
        self._cache_max = max(1, cache_size)

    def _resolve(self, service: str | None) -> _VirtualHost | None:
        if service is None:
            return self._default
        host = self._exact.get(service)
        if host is not None:
            return host
        size = len(service)
        for n, table in self._suffixes:
            if size > n:
                host = table.get(service[size - n :])
                if host is not None:
                    return host
        for n, table in self._prefixes:
            if size > n:
                host = table.get(service[:n])
                if host is not None:
                    return host
        return self._default

    def _host(self, service: str | None) -> _VirtualHost | None:
        cache = self._cache
        host = cache.get(service, _MISS)
        if host is _MISS:
            host = self._resolve(service)
            if len(cache) >= self._cache_max:
                cache.clear()
            cache[service] = host
        return host

    def virtual_host(self, service: str | None) -> str | None:
        """The name of the virtual host that ``service`` selects, or None."""
        host = self._host(service)
        return None if host is None else host.name

    def match(self, service: str | None, method: str | None, headers: Any = None) -> Any:
        """The action of the first matching route, or None (no virtual host, no route).

        ``headers`` is a mapping, a callable name -> value, an object with ``get_header``, or
        None (no headers).
        """
        host = self._host(service)
        if host is None:
            return None
        memo = host.by_method
        if memo is None:
            return self._first(host, method, headers)
        action = memo.get(method, _MISS)
        if action is _MISS:
            action = self._first(host, method, None)  # (a memo: no route reads headers)
            if len(memo) >= self._cache_max:
                memo.clear()
            memo[method] = action
        return action

    @staticmethod
    def _first(host: _VirtualHost, method: str | None, headers: Any) -> Any:
        """The action of the host's first route matching ``method`` (and headers)."""
        path = "/" + method if method else "/"
        get = None
        for exact, prefix, checks, action in host.routes:
            if exact is not None:
                if path != exact:
                    continue
            elif not path.startswith(prefix):
                continue
            if checks:
                if get is None:
                    get = _header_getter(headers)
                for name, kind, operand, invert in checks:
                    value = get(name)
                    if kind == _PRESENT:
                        ok = (value is not None) == operand
                    elif value is None:
                        ok = False
                    elif kind == _EXACT:
                        ok = value == operand
                    elif kind == _PREFIX:
                        ok = value.startswith(operand)
                    elif kind == _REGEX:
                        ok = operand.fullmatch(value) is not None
                    elif kind == _SUFFIX:
                        ok = value.endswith(operand)
                    else:
                        ok = operand in value
                    if ok == invert:
                        break
                else:
                    return action
                continue
            return action
        return None


# ---------------------------------------------------------------------------------------------
# Weighted clusters
# ---------------------------------------------------------------------------------------------


class WeightedPicker:
    """Chooses among ``[(name, weight), ...]`` (or objects/dicts with name and weight) in
    proportion to the weights; zero-weight entries are never chosen."""

    __slots__ = ("names", "_cumulative", "_total", "_integral", "_rng", "_only")

    def __init__(self, clusters: Iterable[Any], rng: random.Random | None = None) -> None:
        names: list[Any] = []
        cumulative: list[float] = []
        total: float = 0
        for entry in clusters:
            if isinstance(entry, (tuple, list)):
                name, weight = entry
            else:
                name, weight = _get(entry, "name"), _get(entry, "weight")
            if weight is None or weight < 0:
                raise ValueError(f"cluster {name!r}: weight must be a non-negative number")
            if weight == 0:
                continue
            total += weight
            names.append(name)
            cumulative.append(total)
        if not names:
            raise ValueError("weighted clusters need at least one positive weight")
        self.names = tuple(names)
        self._cumulative = cumulative
        self._total = total
        self._integral = all(isinstance(c, int) for c in cumulative)
        self._rng = rng if rng is not None else random.Random()
        self._only = names[0] if len(names) == 1 else None

    def pick(self) -> Any:
        if self._only is not None:
            return self._only
        if self._integral:
            point = self._rng.randrange(self._total)
        else:
            point = self._rng.random() * self._total
        # point < total, the last cumulative weight: some name's range holds it
        return self.names[bisect_right(self._cumulative, point)]


# ---------------------------------------------------------------------------------------------
# Load balancers
# ---------------------------------------------------------------------------------------------


#: the longest cycle a weighted round robin goes through: weights whose sum (divided by their
#: greatest common divisor) is larger are scaled down to it, each kept at 1 at least
MAX_SCHEDULE = 8192


def weighted_schedule(endpoints: Sequence[Hashable], weights: Sequence[int]) -> tuple:
    """The endpoints, each as many times as its weight, spread out over one cycle: earliest
    deadline first, as Envoy's weighted round robin (an endpoint of weight w is due every 1/w;
    ties go to the first listed): ``a:3, b:1, c:1`` gives ``(a, a, b, c, a)``."""
    g = reduce(math.gcd, weights)
    weights = [w // g for w in weights]
    total = sum(weights)
    if total > MAX_SCHEDULE:
        weights = [max(1, w * MAX_SCHEDULE // total) for w in weights]
        total = sum(weights)
    due = [(0.5 / w, i) for i, w in enumerate(weights)]  # (the middle of each one's period)
    heapq.heapify(due)
    out = []
    for _ in range(total):
        deadline, i = heapq.heappop(due)
        out.append(endpoints[i])
        heapq.heappush(due, (deadline + 1 / weights[i], i))
    return tuple(out)


def _weighted(weights: Sequence[int] | None) -> bool:
    return weights is not None and any(w != 1 for w in weights)


class Balancer:
    """Common shape: ``endpoints`` (a tuple), ``hash_header`` (None unless hashing) and
    ``pick(key=None, exclude=frozenset())`` -> an endpoint not in ``exclude``, or None.
    ``weights`` (one per endpoint, each ≥ 1; None: all 1) give each endpoint its share."""

    __slots__ = ("endpoints", "hash_header")
    policy = ""

    def __init__(self, endpoints: Iterable[Hashable]) -> None:
        self.endpoints = tuple(endpoints)
        self.hash_header: str | None = None

    def __len__(self) -> int:
        return len(self.endpoints)

    def pick(self, key: str | None = None, exclude: Any = _EMPTY) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.endpoints)!r})"


class RoundRobin(Balancer):
    """Cycles through the endpoints in order, skipping excluded ones; with weights, through
    their :func:`weighted_schedule` (each endpoint in it as often as its weight)."""

    __slots__ = ("_next",)
    policy = "round_robin"

    def __init__(self, endpoints: Iterable[Hashable], weights: Sequence[int] | None = None) -> None:
        super().__init__(endpoints)
        if _weighted(weights):
            self.endpoints = weighted_schedule(self.endpoints, weights)
        self._next = 0

    def pick(self, key: str | None = None, exclude: Any = _EMPTY) -> Any:
        endpoints = self.endpoints
        n = len(endpoints)
        if not n:
            return None
        i = self._next
        if not exclude:
            self._next = i + 1 if i + 1 < n else 0
            return endpoints[i]
        for _ in range(n):
            endpoint = endpoints[i]
            i = i + 1 if i + 1 < n else 0
            if endpoint not in exclude:
                self._next = i
                return endpoint
        return None


class RandomLB(Balancer):
    """A random endpoint among those not excluded, each as likely as its weight."""

    __slots__ = ("_rng",)
    policy = "random"

    def __init__(
        self,
        endpoints: Iterable[Hashable],
        rng: random.Random | None = None,
        weights: Sequence[int] | None = None,
    ) -> None:
        super().__init__(endpoints)
        if _weighted(weights):
            self.endpoints = weighted_schedule(self.endpoints, weights)
        self._rng = rng if rng is not None else random.Random()

    def pick(self, key: str | None = None, exclude: Any = _EMPTY) -> Any:
        endpoints = self.endpoints
        n = len(endpoints)
        if not n:
            return None
        rng = self._rng
        endpoint = endpoints[rng.randrange(n)]
        if not exclude or endpoint not in exclude:
            return endpoint
        endpoint = endpoints[rng.randrange(n)]
        if endpoint not in exclude:
            return endpoint
        candidates = [e for e in endpoints if e not in exclude]
        return candidates[rng.randrange(len(candidates))] if candidates else None


class LeastRequest(Balancer):
    """The endpoint with the fewest active requests, as reported by ``active(endpoint)``.

    Up to ``full_scan_max`` endpoints every one is looked at, starting from a rotating offset so
    that ties go round robin; above that, Envoy's power of ``choice_count`` random choices.
    With weights, an endpoint's load is (its active requests + 1) / its weight: one of weight 2
    takes about twice the requests of one of weight 1 (Envoy's active_request_bias of 1).
    """

    __slots__ = ("_active", "_ring", "_next", "_rng", "_full_scan_max", "_choices")
    policy = "least_request"

    def __init__(
        self,
        endpoints: Iterable[Hashable],
        active: Callable[[Any], int],
        rng: random.Random | None = None,
        choice_count: int = 2,
        full_scan_max: int = 16,
        weights: Sequence[int] | None = None,
    ) -> None:
        super().__init__(endpoints)
        if active is None:
            raise ValueError("least_request needs an active-request counter")
        if _weighted(weights):
            weight = dict(zip(self.endpoints, weights))
            self._active = lambda endpoint: (active(endpoint) + 1) / weight[endpoint]
        else:
            self._active = active
        self._ring = self.endpoints + self.endpoints
        self._next = 0
        self._rng = rng if rng is not None else random.Random()
        self._full_scan_max = full_scan_max
        self._choices = max(1, choice_count)

    def _scan(self, exclude: Any) -> Any:
        n = len(self.endpoints)
        start = self._next
        self._next = start + 1 if start + 1 < n else 0
        ring = self._ring
        active = self._active
        best = None
        best_load = math.inf
        for i in range(start, start + n):
            endpoint = ring[i]
            if exclude and endpoint in exclude:
                continue
            load = active(endpoint)
            if load < best_load:
                best, best_load = endpoint, load
                if load <= 0:  # (idle: none does better; never with weights, whose load is > 0)
                    break
        return best

    def pick(self, key: str | None = None, exclude: Any = _EMPTY) -> Any:
        endpoints = self.endpoints
        n = len(endpoints)
        if n <= self._full_scan_max:
            return self._scan(exclude)
        rng = self._rng
        active = self._active
        best = None
        best_load = math.inf
        chosen = 0
        for _ in range(4 * self._choices):
            endpoint = endpoints[rng.randrange(n)]
            if exclude and endpoint in exclude:
                continue
            load = active(endpoint)
            if load < best_load:
                best, best_load = endpoint, load
            chosen += 1
            if chosen >= self._choices:
                return best
        # Mostly excluded: fall back to looking at every endpoint.
        return best if best is not None else self._scan(exclude)


_md5 = hashlib.md5
_u32le = struct.Struct("<I").unpack_from


class ConsistentHash(Balancer):
    """A ketama hash ring: ``vnodes`` points per endpoint, four 32-bit points per md5 digest of
    ``f"{endpoint}-{i}"``. ``pick(key)`` takes the first point clockwise from md5(key); excluded
    endpoints are walked past, which gives the same answer as a ring without them. A None key
    falls back to round robin. Endpoints should have a stable ``str`` (such as "host:port") so
    that every process builds the same ring. With weights, an endpoint has points in proportion
    to its weight (the ring keeps ``vnodes`` points per endpoint on average), so its share of
    the keys is."""

    __slots__ = ("_points", "_owners", "_skip", "_fallback")
    policy = "hash"

    def __init__(
        self,
        endpoints: Iterable[Hashable],
        vnodes: int = 160,
        hash_header: str | None = None,
        weights: Sequence[int] | None = None,
    ) -> None:
        super().__init__(endpoints)
        self.hash_header = hash_header
        ring: list[tuple[int, int]] = []
        digests = max(1, (vnodes + 3) // 4)  # four points each, at least one
        counts = [digests] * len(self.endpoints)
        if _weighted(weights):
            mean = sum(weights) / len(weights)
            counts = [max(1, round(digests * w / mean)) for w in weights]
        for index, endpoint in enumerate(self.endpoints):
            for i in range(counts[index]):
                digest = _md5(f"{endpoint}-{i}".encode(), usedforsecurity=False).digest()
                for j in range(0, 16, 4):
                    ring.append((_u32le(digest, j)[0], index))
        ring.sort()
        self._points = [point for point, _ in ring]
        owners = [self.endpoints[index] for _, index in ring]
        self._owners = owners
        indices = [index for _, index in ring]
        # _skip[i]: the next ring position whose owner differs from owners[i] (wrapping).
        size = len(owners)
        skip = [0] * size
        # Walked backwards twice so that the run wrapping past the end sees a settled skip[0].
        for k in range(2 * size - 1, -1, -1):
            i = k - size if k >= size else k
            following = i + 1 if i + 1 < size else 0
            skip[i] = following if indices[following] != indices[i] else skip[following]
        self._skip = skip
        self._fallback = RoundRobin(self.endpoints, weights)

    def pick(self, key: str | None = None, exclude: Any = _EMPTY) -> Any:
        points = self._points
        if not points:
            return None
        if key is None:
            return self._fallback.pick(None, exclude)
        index = bisect_left(points, _u32le(_md5(key.encode(), usedforsecurity=False).digest())[0])
        if index == len(points):
            index = 0
        owners = self._owners
        owner = owners[index]
        if not exclude or owner not in exclude:
            return owner
        if len(exclude) >= len(self.endpoints) and all(e in exclude for e in self.endpoints):
            return None
        skip = self._skip
        for _ in range(len(points)):
            index = skip[index]
            owner = owners[index]
            if owner not in exclude:
                return owner
        return None


POLICIES = ("round_robin", "random", "least_request", "hash:<header>")


def make_balancer(
    policy: str,
    endpoints: Sequence[Hashable],
    active: Callable[[Any], int] | None = None,
    rng: random.Random | None = None,
    weights: Sequence[int] | None = None,
) -> Balancer:
    """A balancer for ``policy``: round_robin | random | least_request | hash:<header>;
    ``weights``: one per endpoint (None: all 1)."""
    if policy == "round_robin":
        return RoundRobin(endpoints, weights)
    if policy == "random":
        return RandomLB(endpoints, rng=rng, weights=weights)
    if policy == "least_request":
        if active is None:
            raise ValueError("least_request needs an active-request counter")
        return LeastRequest(endpoints, active, rng=rng, weights=weights)
    if policy.startswith("hash:"):
        header = policy[5:].strip()
        if not header:
            raise ValueError("hash policy needs a header name: hash:<header>")
        return ConsistentHash(endpoints, hash_header=header, weights=weights)
    raise ValueError(f"unknown load-balancing policy {policy!r}; expected one of {POLICIES}")
