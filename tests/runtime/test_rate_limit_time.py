"""``local_rate_limit`` over simulated time: the filter reads no clock, its time is each
request's arrival stamp on the loop's clock (``Stream.arrived``), so minutes of traffic are
driven here in milliseconds and deterministically (through the proxy on a virtual clock:
test_virtual_time.py). Over T seconds of traffic denser than the rate a bucket
lets through burst + rate·T requests (± 1), per descriptor, and 1/N of that per worker."""

from __future__ import annotations

import random

import pytest

from protoc_x.runtime.api import StreamType
from protoc_x.runtime.filters import Reject
from protoc_x.runtime.filters.local_rate_limit import Config, LocalRateLimit
from protoc_x.runtime.stream import Stream


class Frame:
    def __init__(self, headers):
        self.headers = headers

    def get_request_id(self):
        return 1

    def get_header(self, name):
        return self.headers.get(name)


def request(arrived, service="a.A", method="m", **headers):
    stream = Stream(None, Frame(headers), StreamType.REQUEST, None, arrived, 0.0)
    stream.service, stream.method = service, method
    return stream


def limiter(rate, burst, per=(), share=1.0):
    limit = LocalRateLimit(Config(tokens_per_second=rate, burst=burst, per=per))
    limit.share = share
    return limit


def allowed(limit, streams):
    """How many of ``streams`` (in order of arrival) the filter lets through."""
    passed = 0
    for stream in streams:
        verdict = limit.on_request(stream)
        if verdict is None:
            passed += 1
        else:
            assert verdict == Reject(429, "protoc-x: 429 rate limited")
    return passed


def spread(seconds, per_second):
    """Arrival stamps every 1/per_second s over [0, seconds] (from an arbitrary clock origin)."""
    return [1000.0 + k / per_second for k in range(int(seconds * per_second) + 1)]


@pytest.mark.parametrize(
    "rate, burst, seconds, per_second",
    [
        (2.0, 3, 5, 10),  # the case: 13 of 51 (the stale refill stamp let 51 through)
        (2.0, 3, 10, 10),
        (2.0, 3, 60, 10),
        (0.5, 10, 60, 5),
        (100.0, 2, 10, 1000),
        (2.5, 7, 600, 4),  # ten minutes
    ],
)
def test_allowed_is_burst_plus_rate_times_time(rate, burst, seconds, per_second):
    limit = limiter(rate, burst)
    stamps = spread(seconds, per_second)
    assert abs(allowed(limit, map(request, stamps)) - (burst + rate * seconds)) <= 1


def test_requests_at_random_times():
    rng = random.Random(11)
    stamps = sorted(rng.uniform(0, 60) for _ in range(1000))
    assert abs(allowed(limiter(2.0, 3), map(request, stamps)) - (3 + 2 * 60)) <= 1


def test_traffic_under_the_rate_all_passes_and_a_burst_after_idling_is_capped():
    limit = limiter(2.0, 3)
    assert allowed(limit, map(request, spread(60, 1.5))) == 91  # 1.5/s under 2/s: all pass
    assert allowed(limit, [request(5000.0)] * 10) == 3  # an hour idle fills only the burst
    assert allowed(limit, [request(5000.4)] * 10) == 0  # 0.8 token
    assert allowed(limit, [request(5000.5)] * 10) == 1


def test_a_held_request_stamped_earlier_mints_no_tokens():
    limit = limiter(2.0, 3)
    assert allowed(limit, [request(10.0)] * 5) == 3
    assert allowed(limit, [request(11.0)]) == 1  # two tokens: one left
    assert allowed(limit, [request(10.5)] * 3) == 1  # arrived before the last: no refill
    assert allowed(limit, [request(11.0)] * 3) == 0
    assert allowed(limit, [request(11.5)] * 3) == 1


def test_per_descriptor_buckets_each_get_burst_plus_rate_times_time():
    limit = limiter(2.0, 3, per=("service",))
    stamps = spread(30, 20)
    streams = [request(t, service=("a.A", "b.B")[k % 2]) for k, t in enumerate(stamps)]
    passed = {"a.A": 0, "b.B": 0}
    for stream in streams:
        if limit.on_request(stream) is None:
            passed[stream.service] += 1
    assert all(abs(n - (3 + 2 * 30)) <= 1 for n in passed.values()), passed
    # a descriptor first seen late starts with a full bucket, not with the time gone by
    assert allowed(limit, [request(stamps[-1], service="c.C")] * 10) == 3


def test_per_method_and_header_descriptor():
    limit = limiter(1.0, 2, per=("method", "header:x-user"))
    stamps = spread(20, 10)
    users = ("ann", "bob", None)  # no header is a descriptor of its own
    passed = {}
    for k, t in enumerate(stamps):
        key = ("get", users[k % 3])
        stream = request(t, method="get", **({"x-user": key[1]} if key[1] else {}))
        passed[key] = passed.get(key, 0) + (limit.on_request(stream) is None)
    passed[("put", "ann")] = allowed(limit, [request(t, method="put", **{"x-user": "ann"}) for t in stamps])  # fmt: skip
    assert len(passed) == 4
    assert all(abs(n - (2 + 1 * 20)) <= 1 for n in passed.values()), passed


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_share_the_rate_and_the_burst(workers):
    rate, burst, seconds = 2.0, 6, 60
    limits = [limiter(rate, burst, share=1 / workers) for _ in range(workers)]
    passed = [0] * workers
    for k, t in enumerate(spread(seconds, 40)):  # connections spread over the workers
        worker = k % workers
        passed[worker] += limits[worker].on_request(request(t)) is None
    each = (burst + rate * seconds) / workers
    assert all(abs(n - each) <= 1 for n in passed), passed
    assert abs(sum(passed) - (burst + rate * seconds)) <= workers
