"""hessian2.arg_count counts Dubbo parameter descriptors in linear time: a 1 MB descriptor of
10^6 parameters costs milliseconds, not a Python loop per parameter, and the count and the
error position are those of the descriptor-by-descriptor reading it replaces."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes import hessian2 as h2

# the reference: one JVM field descriptor at a time (Dubbo's ReflectUtils.DESC_PATTERN)
_ONE = re.compile(r"\[*(?:[VZBCDSIFJ]|L[^;/\[.]+(?:/[^;/\[.]+)*;)")


def reference(descriptor: str) -> int | tuple[str, int]:
    n = pos = 0
    while pos < len(descriptor):
        m = _ONE.match(descriptor, pos)
        if m is None:
            return ("malformed", pos)
        pos = m.end()
        n += 1
    return n


def outcome(descriptor: str) -> int | tuple[str, int]:
    try:
        return h2.arg_count(descriptor)
    except DecodeError as e:
        position = int(re.search(r"character (\d+)", e.reason).group(1))
        return ("malformed", position)


PIECES = ["I", "J", "Z", "[", "[[", "L", "Ljava/lang/String;", "La;", "a", "/", ";", ".", "X", "V"]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.booleans())
def test_counts_and_errors_match_the_descriptor_by_descriptor_reading(pieces, long):
    descriptor = "".join(pieces) * (40 if long else 1)  # long ones skip the cache
    assert outcome(descriptor) == reference(descriptor)


def _seconds(f, arg) -> float:
    start = time.perf_counter()
    f(arg)
    return time.perf_counter() - start


@pytest.mark.parametrize(
    "descriptor",
    ["I" * 1_000_000, "[I" * 500_000, "La/b;J" * 170_000, "I" * 999_999 + "?"],
    ids=["primitives", "arrays", "classes", "malformed at the end"],
)
def test_a_megabyte_descriptor_costs_milliseconds(descriptor):
    assert outcome(descriptor) == reference(descriptor)
    fast = min(_seconds(outcome, descriptor) for _ in range(3))
    slow = _seconds(reference, descriptor)
    assert fast < 0.1 and fast * 2 < slow, (fast, slow)  # it was the reference itself
