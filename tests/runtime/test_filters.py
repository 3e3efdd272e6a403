"""The stream filters in-process, one request at a time: the registry, fault injection's exact
shares (an injected rng), header mutation's replace/append/refusal, node labels' file format and
the extra headers routing sees, the rate limit's defaults, metrics and bucket table. The
filters through the proxy: test_governance.py; the rate limit over time: test_rate_limit_time.py."""

from __future__ import annotations

import importlib
import locale
import sys
from types import SimpleNamespace

import pytest

import protoc_x.runtime.filters as filters_package
from protoc_x.runtime.api import StreamType
from protoc_x.runtime.filters import Pause, Reject, StreamFilter, filters
from protoc_x.runtime.filters import local_rate_limit
from protoc_x.runtime.filters.fault import Fault
from protoc_x.runtime.filters.header_mutation import HeaderMutation
from protoc_x.runtime.filters.local_rate_limit import LocalRateLimit
from protoc_x.runtime.filters.node_labels import NodeLabels, read_labels_file
from protoc_x.runtime.stream import Stream

NAMES = ["fault", "header_mutation", "local_rate_limit", "node_labels"]


class Frame:
    """A request frame with a header map (``headers=None``: a layout without one, whose
    setters refuse as the generated codecs' do)."""

    def __init__(self, headers: dict | None = None):
        self.headers = headers

    def get_request_id(self):
        return 7

    def get_header(self, name):
        return None if self.headers is None else self.headers.get(name)

    def set_header(self, name, value):
        if self.headers is None:
            raise NotImplementedError("no header map")
        self.headers[name] = value

    def del_header(self, name):
        if self.headers is None:
            raise NotImplementedError("no header map")
        self.headers.pop(name, None)


def stream(frame=None, arrived=0.0, writable=True, service="a.A", method="m") -> Stream:
    proto = SimpleNamespace(name="p", writable_headers=writable)
    downstream = SimpleNamespace(proto=proto, listener=SimpleNamespace(name="l"))
    s = Stream(downstream, frame or Frame({}), StreamType.REQUEST, b"raw", arrived, 0.0)
    s.service, s.method = service, method
    return s


def make(name: str, config: dict, metrics=None) -> StreamFilter:
    cls = filters()[name]
    return cls(cls.Config.model_validate(config), metrics)


# ---- the registry ---------------------------------------------------------------------------


@pytest.fixture
def fresh_registry(monkeypatch):
    """The package as a process that has not needed its filters yet: no filter module
    imported, nothing registered (all restored afterwards)."""
    monkeypatch.setattr(filters_package, "REGISTRY", {})
    monkeypatch.delattr(filters, "loaded", raising=False)
    for name in NAMES:
        monkeypatch.delitem(sys.modules, f"{filters_package.__name__}.{name}")
        monkeypatch.setattr(filters_package, name, getattr(filters_package, name))


def test_filters_imports_every_module_of_the_package_once(fresh_registry, monkeypatch):
    imported = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda n: imported.append(n) or real(n))
    registry = filters()
    assert sorted(registry) == NAMES
    assert all(cls.name == name and issubclass(cls, StreamFilter) for name, cls in registry.items())
    assert sorted(imported) == [f"protoc_x.runtime.filters.{n}" for n in NAMES]
    first = dict(registry)
    again = filters()  # loaded: nothing imported again, the same classes
    assert len(imported) == len(NAMES) and again == first


@pytest.mark.parametrize("name", NAMES)
def test_every_filter_keeps_the_config_and_the_metrics_it_is_given(name):
    config = {
        "fault": {"delay": {"fixed_delay_ms": 5}},
        "header_mutation": {"request_headers_to_remove": ["a"]},
        "local_rate_limit": {"tokens_per_second": 1.0, "burst": 1},
        "node_labels": {"labels": {"a": "b"}},
    }[name]
    cls = filters()[name]
    parsed = cls.Config.model_validate(config)
    metrics = object()
    f = cls(parsed, metrics)
    assert f.config is parsed and f.metrics is metrics and f.name == name


# ---- fault ----------------------------------------------------------------------------------


class Rng:
    """random.Random's ``random()`` returning the given values in turn."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


@pytest.mark.parametrize(
    "percent, draw, aborted",
    [
        (30.0, 0.299, True),  # 29.9 < 30
        (30.0, 0.3, False),  # 30 is not below 30: a 30 % share is draws in [0, 0.3)
        (30.0, 0.5, False),
        (0.0, 0.0, False),  # 0 %: never
        (100.0, 0.9999, True),
        (1.0, 0.0099, True),
        (1.0, 0.0101, False),
    ],
)
def test_fault_abort_share_is_exact(percent, draw, aborted):
    f = make("fault", {"abort": {"code": 503, "percent": percent}})
    f.rng = Rng(draw)
    verdict = f.on_request(stream())
    assert verdict == (Reject(503, "protoc-x: 503 fault injected") if aborted else None)


@pytest.mark.parametrize(
    "percent, draw, paused",
    [(25.0, 0.249, True), (25.0, 0.25, False), (25.0, 0.6, False), (0.0, 0.0, False)],
)
def test_fault_delay_share_is_exact(percent, draw, paused):
    f = make("fault", {"delay": {"fixed_delay_ms": 1500, "percent": percent}})
    f.rng = Rng(draw)
    assert f.on_request(stream()) == (Pause(1.5) if paused else None)


def test_fault_abort_first_then_delay_each_with_its_own_draw():
    f = make("fault", {"abort": {"code": 429, "percent": 50.0},
                       "delay": {"fixed_delay_ms": 20, "percent": 50.0}})  # fmt: skip
    f.rng = Rng(0.7, 0.2)  # not aborted, delayed
    assert f.on_request(stream()) == Pause(0.02)
    f.rng = Rng(0.7, 0.9)  # neither
    assert f.on_request(stream()) is None
    f.rng = Rng(0.1)  # aborted: no second draw
    assert f.on_request(stream()) == Reject(429, "protoc-x: 429 fault injected")


def test_fault_with_only_an_abort_that_misses_continues():
    f = make("fault", {"abort": {"code": 503, "percent": 10.0}})
    f.rng = Rng(0.5)
    assert f.on_request(stream()) is None


# ---- header_mutation ------------------------------------------------------------------------


def test_header_mutation_replaces_unless_append_and_removes_first():
    f = make("header_mutation", {
        "request_headers_to_add": [{"key": "env", "value": "prod"},
                                   {"key": "trace", "value": "proxy", "append": True},
                                   {"key": "new", "value": "n", "append": True}],
        "request_headers_to_remove": ["secret", "env"]})  # fmt: skip
    ctx = stream(Frame({"env": "dev", "trace": "client", "secret": "s", "keep": "k"}))
    assert f.on_request(ctx) is None
    assert ctx.frame.headers == {"env": "prod", "trace": "client,proxy", "new": "n", "keep": "k"}
    assert ctx.modified is True
    f = make("header_mutation", {"request_headers_to_add": [{"key": "env", "value": "prod"}]})
    ctx = stream(Frame({"env": "dev"}))
    f.on_request(ctx)
    assert ctx.frame.headers == {"env": "prod"}  # replaced, not appended


def test_header_mutation_leaves_a_frame_without_a_header_map_unmodified():
    f = make("header_mutation", {"request_headers_to_add": [{"key": "a", "value": "b"}],
                                 "response_headers_to_remove": ["x"]})  # fmt: skip
    ctx = stream(Frame(None))
    assert f.on_request(ctx) is None and ctx.modified is False
    f.on_response(ctx, Frame(None))  # passes unchanged, no error
    answer = Frame({"x": "1", "y": "2"})
    f.on_response(ctx, answer)
    assert answer.headers == {"y": "2"}


def test_header_mutation_touches_responses_only_when_configured():
    assert make("header_mutation", {"request_headers_to_remove": ["a"]}).touches_responses is False
    assert make("header_mutation", {"response_headers_to_remove": ["a"]}).touches_responses is True


# ---- node_labels ----------------------------------------------------------------------------


def test_labels_file_skips_blank_lines_and_comments_anywhere(tmp_path):
    path = tmp_path / "labels"
    path.write_text('# written by the downward API\n\napp="hello"\n   \n  # indented comment\n'
                    'zone = "az-\\"1\\""\n\ncolor="green"\n', encoding="utf-8")  # fmt: skip
    assert read_labels_file(str(path)) == {"app": "hello", "zone": 'az-"1"', "color": "green"}


def test_labels_file_error_names_the_line(tmp_path):
    path = tmp_path / "labels"
    path.write_text('app="hello"\n\ncolor: green\n', encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_labels_file(str(path))
    assert str(info.value) == f"{path}:3: not a key=\"value\" line: 'color: green'"


@pytest.mark.skipif(sys.flags.utf8_mode, reason="UTF-8 mode ignores the locale")
def test_labels_file_is_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / "labels"
    path.write_text('zone="zürich"\n', encoding="utf-8")
    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # an ASCII locale, as in a bare container
    try:
        assert read_labels_file(str(path)) == {"zone": "zürich"}
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


def test_node_labels_add_to_the_extra_headers_other_filters_set():
    f = make("node_labels", {"labels": {"color": "blue"}, "header_prefix": "x-"})
    ctx = stream(Frame(None), writable=False)
    ctx.extra_headers = {"user": "ann"}
    assert f.on_request(ctx) is None
    assert ctx.extra_headers == {"user": "ann", "x-color": "blue"}
    assert ctx.header("x-color") == "blue" and ctx.modified is False
    ctx = stream(Frame(None), writable=True)  # writable protocol, this frame has no map
    f.on_request(ctx)
    assert ctx.extra_headers == {"x-color": "blue"} and ctx.modified is False
    ctx = stream(Frame({"a": "1"}), writable=True)
    f.on_request(ctx)
    assert ctx.frame.headers == {"a": "1", "x-color": "blue"} and ctx.modified is True
    assert ctx.extra_headers is None


# ---- local_rate_limit -----------------------------------------------------------------------


class Metrics:
    def __init__(self):
        self.limited = []

    def rate_limited(self, ctx):
        self.limited.append(ctx)


def test_rate_limit_alone_holds_the_whole_limit_and_counts_refusals():
    metrics = Metrics()
    f = make("local_rate_limit", {"tokens_per_second": 2.0, "burst": 3}, metrics)
    streams = [stream(arrived=10.0) for _ in range(5)]
    verdicts = [f.on_request(s) for s in streams]
    assert verdicts == [None] * 3 + [Reject(429, "protoc-x: 429 rate limited")] * 2
    assert metrics.limited == streams[3:]
    assert f.on_request(stream(arrived=10.49)) is not None  # 0.98 token
    assert f.on_request(stream(arrived=10.5)) is None  # 2/s: a token after 0.5 s


def test_rate_limit_table_is_reset_when_full(monkeypatch):
    monkeypatch.setattr(local_rate_limit, "MAX_BUCKETS", 3)
    f = make("local_rate_limit", {"tokens_per_second": 0.001, "burst": 1, "per": ["service"]})
    for service in ("a", "b", "c"):
        assert f.on_request(stream(service=service)) is None
        assert f.on_request(stream(service=service)) is not None  # spent
    assert f.on_request(stream(service="d")) is None  # a 4th descriptor: the table restarts
    assert f.on_request(stream(service="a")) is None  # with a full bucket for "a" again
    assert f.on_request(stream(service="d")) is not None  # "d" was kept
