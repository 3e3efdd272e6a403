"""The fast lane (a frame scanned, routed by its service and method, its id patched where the
scan found it, no frame decoded) against the full path (every frame decoded, as before the
lane): for every protocol the same script of requests — colliding and large ids, heartbeats,
oneway and quiet requests — sent in one write and split at random points gives the upstream
and the client the very same bytes both ways. And what must see a frame still sees one: a
header matcher, a filter that reads or changes frames, an error answer."""

from __future__ import annotations

import asyncio
import random

import pytest

from protoc_x.runtime import network as network_module
from protoc_x.runtime.api import Direction, PoolMode, StreamType
from protoc_x.runtime.network import FramedConnection
from protoc_x.samples import SAMPLES

from .harness import (
    PROTOCOLS,
    free_port,
    no_errors_logged,
    proxy_running,
    pure_only,
    run,
    simple_config,
)
from .test_proxy_behaviour import bolt_request

__all__ = ["no_errors_logged"]

BOLT = PROTOCOLS["bolt"]
IDS = (1_000_003, 77, 4_096, 12, 65_000)
# how a request of the protocol becomes a oneway one (protocols that have them)
ONEWAY = {
    "bolt": {"kind": 2},
    "boltv2": {"kind": 2},
    "dubbo": {"two_way": 0},
    "thrift": {"type": 4},
    "thrift_unframed": {"type": 4},
    "tars": {"cPacketType": 1},
}


def direction(name: str) -> Direction | None:
    return Direction.REQUEST if PROTOCOLS[name].needs_direction else None


def samples(name: str, kind: StreamType) -> list[bytes]:
    """The protocol's sample requests of ``kind`` (heartbeats left out)."""
    proto = PROTOCOLS[name]
    out = []
    for s in SAMPLES:
        if s.protocol == name and (s.direction or "request") == "request":
            frame = proto.decode(s.data, 0, direction(name))
            if frame.get_stream_type() is kind and not frame.is_heartbeat():
                out.append(s.data)
    return out


def with_id(name: str, data: bytes, rid: int, **fields) -> bytes:
    frame = PROTOCOLS[name].decode(data, 0, direction(name))
    for field, value in fields.items():
        setattr(frame, field, value)
    frame.set_request_id(rid)
    return frame.encode()


def script(name: str) -> tuple[list[bytes], int]:
    """Requests (ids colliding with the upstream's counter and not), a heartbeat, a oneway
    and a quiet request where the protocol has them; and how many answers the client gets."""
    proto = PROTOCOLS[name]
    request = samples(name, StreamType.REQUEST)[0]
    frames = [with_id(name, request, rid) for rid in IDS[:3]]
    answers = 3
    ping = proto.trigger(31)
    if ping is not None:
        frames.insert(1, ping.encode())
        answers += proto.reply(proto.decode(frames[1], 0, direction(name))) is not None
    if name in ONEWAY:
        frames.append(with_id(name, request, 9, **ONEWAY[name]))
    for quiet in samples(name, StreamType.QUIET)[:1]:
        frames.append(with_id(name, quiet, IDS[3]))
        answers += 1  # (the upstream below answers quiet requests)
    frames.append(with_id(name, request, IDS[4]))
    return frames, answers + 1


class Upstream(FramedConnection):
    """Records the bytes of every frame it gets and answers like `serve`: at once and in order
    where the protocol needs it, else all together and in reverse order once nothing came
    for a while (so ids are matched, not assumed)."""

    direction = Direction.REQUEST

    def __init__(self, proto, seen: list):
        super().__init__(proto)
        self.seen = seen
        self.held: list[bytes] = []
        self.timer = None
        self.in_order = proto.ordered or proto.pool_mode is PoolMode.PINGPONG

    def on_frame(self, frame, buf, start, length) -> None:
        self.seen.append(bytes(buf[start : start + length]))
        if frame.get_stream_type() is StreamType.ONEWAY:
            return
        answer = (self.proto.reply if frame.is_heartbeat() else self.proto.success_response)(frame)
        if answer is None:
            return
        if self.in_order:
            self.send(answer.encode())
            return
        self.held.append(answer.encode())
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(0.15, self.answer_all)

    def answer_all(self) -> None:
        for data in reversed(self.held):
            self.send(data)
        self.held.clear()


async def through(name: str, chunks: list[bytes], answers: int, change=None, protocols=None,
                  upstream=Upstream, cluster=None) -> tuple[bytes, list, float]:  # fmt: skip
    """``chunks`` written, each its own read, to a proxy of protocol ``name`` (its config
    adapted by ``change``, its codecs ``protocols``) in front of an ``upstream``: every byte
    the client got back once it had ``answers`` answers, the frames the upstream got, and
    how long the answers took (on the loop's clock)."""
    loop = asyncio.get_running_loop()
    up, port = free_port(), free_port()
    seen: list[bytes] = []
    server = await loop.create_server(lambda: upstream(PROTOCOLS[name], seen), "127.0.0.1", up)
    cfg = simple_config(name, port, [f"127.0.0.1:{up}"], cluster)
    if change is not None:
        change(cfg)
    try:
        async with proxy_running(cfg, protocols=protocols):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t0 = loop.time()
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                if len(chunks) > 1:
                    await asyncio.sleep(0.01)  # (its own read at the proxy)
            got = b""
            while count(name, got) < answers:
                got += await asyncio.wait_for(reader.read(65536), 5)
            took = loop.time() - t0
            writer.close()
    finally:
        server.close()
    return got, seen, took


def count(name: str, data: bytes) -> int:
    proto = PROTOCOLS[name]
    way = Direction.RESPONSE if proto.needs_direction else None
    return sum(1 for _ in proto.decode_all(data, way))


def split(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), 6))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


@pytest.fixture
def full_path(monkeypatch):
    """Turns the lane off: every frame is decoded, as before it existed."""

    def off() -> None:
        monkeypatch.setattr(network_module, "LANE", False)

    return off


@pytest.mark.parametrize("reads", ["coalesced", "split"])
@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_the_lane_and_the_full_path_give_the_same_bytes(name, reads, full_path):
    frames, answers = script(name)
    data = b"".join(frames)
    chunks = [data] if reads == "coalesced" else split(data, random.Random(name))
    lane = run(through(name, chunks, answers, cluster={"max_connections": 1}))[:2]
    full_path()
    full = run(through(name, chunks, answers, cluster={"max_connections": 1}))[:2]
    assert lane == full
    got, seen = lane
    # ... and both are right: every frame went up but the heartbeat (answered here), and
    # every answer came back with its client's id
    assert len(seen) == len(frames) - (PROTOCOLS[name].trigger(31) is not None)
    way = Direction.RESPONSE if PROTOCOLS[name].needs_direction else None
    in_order = lambda rid: -1 if rid is None else rid  # noqa: E731 (redis: no ids, all None)
    ids = sorted((f.get_request_id() for f in PROTOCOLS[name].decode_all(got, way)), key=in_order)
    sent = [PROTOCOLS[name].decode(f, 0, direction(name)) for f in frames]
    expected = sorted(
        (f.get_request_id() for f in sent if f.get_stream_type() is not StreamType.ONEWAY),
        key=in_order,
    )
    assert ids == expected


class Counting(type(PROTOCOLS["bolt"])):
    """bolt, counting the request frames and the answers the proxy decodes (the scan decodes
    none)."""

    name = "bolt"
    decoded = 0
    answers = 0

    def decode(self, buf, start=0, direction=None, into=None):
        frame = super().decode(buf, start, direction, into)
        if frame is not None and into is None:
            if frame.get_stream_type() is StreamType.RESPONSE:
                Counting.answers += 1
            else:
                Counting.decoded += 1
        return frame


def decoded_for(change, frames: list[bytes]) -> tuple[int, bytes, int]:
    """Bolt requests through a proxy whose config ``change`` adapts: how many request frames
    it decoded, what the client got, and how many requests the upstream got."""
    Counting.decoded = Counting.answers = 0
    protocols = {**PROTOCOLS, "bolt": Counting()}
    got, seen, _ = run(through("bolt", [b"".join(frames)], len(frames), change, protocols))
    return Counting.decoded, got, len(seen)


def routes(cfg, route: dict) -> None:
    cfg["route_configs"][0]["virtual_hosts"][0]["routes"] = [route]


def filters(cfg, *chain: dict) -> None:
    cfg["listeners"][0]["stream_filters"] = list(chain)


HEADER_ROUTE = {"match": {"prefix": "/", "headers": [{"name": "x-tier", "exact": "gold"}]},
                "route": {"cluster": "up"}}  # fmt: skip
RATE_LIMIT = {"name": "local_rate_limit",
              "config": {"tokens_per_second": 1000, "burst": 1000, "per": ["service", "method"]}}  # fmt: skip
HEADER_ADD = {"name": "header_mutation",
              "config": {"request_headers_to_add": [{"key": "x-via", "value": "proxy"}]}}  # fmt: skip


@pytest.mark.parametrize(
    "why, change, decoded",
    [
        ("a prefix route and no filter", lambda cfg: None, 0),
        ("a rate limit by service and method", lambda cfg: filters(cfg, RATE_LIMIT), 0),
        ("a header matcher", lambda cfg: routes(cfg, HEADER_ROUTE), 4),
        ("a filter that changes frames", lambda cfg: filters(cfg, HEADER_ADD), 4),
    ],
)
def test_only_what_needs_a_frame_decodes_one(why, change, decoded):
    frames = [bolt_request(rid, **{"x-tier": "gold"}).encode() for rid in (5, 6, 7, 8)]
    count_, got, _ = decoded_for(change, frames)
    assert count_ == decoded, why
    assert Counting.answers == 0, why  # (no response filter: answers are never decoded)
    answers = list(PROTOCOLS["bolt"].decode_all(got))
    assert sorted(a.get_request_id() for a in answers) == [5, 6, 7, 8]
    assert {a.get_status() for a in answers} == {0}


def test_an_error_answer_decodes_the_request_it_answers():
    """No route for the service: the 404 is the protocol's own error frame, made from the
    request's frame, so that one (and only that one) is decoded."""

    def no_route(cfg):
        cfg["route_configs"][0]["virtual_hosts"][0]["domains"] = ["com.acme.HelloService:1.0"]

    frames = [bolt_request(5).encode(), bolt_request(6, service="com.acme.Other").encode()]
    decoded, got, upstream_saw = decoded_for(no_route, frames)
    answers = {a.get_request_id(): a for a in PROTOCOLS["bolt"].decode_all(got)}
    assert PROTOCOLS["bolt"].runtime_status(answers[5].get_status()) == 200
    assert PROTOCOLS["bolt"].runtime_status(answers[6].get_status()) == 404
    assert upstream_saw == 1 and decoded == 1


@pure_only
def test_a_requests_phases_in_order(monkeypatch):
    """The first request waits for the upstream connection (QUEUED), the second finds it up;
    a third times out after it was sent. Each phase is entered once, in order."""
    from protoc_x.runtime.stream import Phase, Stream

    seen: dict[int, list] = {}

    class Traced:  # Stream.phase, recording what each stream enters
        def __get__(self, obj, owner=None):
            return Phase.ARRIVED if obj is None else obj.__dict__.get("_phase", Phase.ARRIVED)

        def __set__(self, obj, value):
            obj.__dict__["_phase"] = value
            seen.setdefault(obj.down_id, []).append(value)

    monkeypatch.setattr(Stream, "phase", Traced(), raising=False)  # (an instance attribute)

    async def scenario():
        loop = asyncio.get_running_loop()
        up, port = free_port(), free_port()
        got: list = []

        class Quiet(Upstream):  # answers everything but request 3
            def on_frame(self, frame, buf, start, length):
                if frame.get_request_id() != 3:
                    super().on_frame(frame, buf, start, length)

        server = await loop.create_server(lambda: Quiet(PROTOCOLS["bolt"], got), "127.0.0.1", up)
        cfg = simple_config("bolt", port, [f"127.0.0.1:{up}"])
        cfg["route_configs"][0]["virtual_hosts"][0]["routes"][0]["route"]["timeout_ms"] = 200
        try:
            async with proxy_running(cfg):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                answers = b""
                for rid in (1, 2, 3):
                    writer.write(bolt_request(rid).encode())
                    while count("bolt", answers) < rid:
                        answers += await asyncio.wait_for(reader.read(65536), 5)
                writer.close()
        finally:
            server.close()
        return answers

    answers = {a.get_request_id(): a for a in PROTOCOLS["bolt"].decode_all(run(scenario()))}
    assert PROTOCOLS["bolt"].runtime_status(answers[3].get_status()) == 504
    A, R, Q, S, D = Phase.ARRIVED, Phase.ROUTED, Phase.QUEUED, Phase.SENT, Phase.DONE
    assert seen == {1: [A, R, Q, S, D], 2: [A, R, S, D], 3: [A, R, S, D]}


def test_the_full_path_switch_decodes_every_frame(full_path):
    """What the comparisons above rest on: with the lane off, the proxy decodes every request
    and every answer (and with it on, none)."""
    frames = [bolt_request(rid).encode() for rid in (5, 6, 7)]
    assert decoded_for(lambda cfg: None, frames)[0] == 0 and Counting.answers == 0
    full_path()
    assert decoded_for(lambda cfg: None, frames)[0] == 3 and Counting.answers == 3


# ---- the full path still does all the lane does -----------------------------------------


def routed(cfg) -> None:
    """Only service com.acme.HelloService:1.0, method sayHello has a route (else 404)."""
    vhost = cfg["route_configs"][0]["virtual_hosts"][0]
    vhost["domains"] = ["com.acme.HelloService:1.0"]
    vhost["routes"] = [{"match": {"path": "/sayHello"}, "route": {"cluster": "up"}}]


@pytest.mark.parametrize("lane", [True, False])
def test_both_paths_route_by_service_and_method(lane, full_path):
    if not lane:
        full_path()
    frames = [
        bolt_request(5).encode(),
        bolt_request(6, service="com.acme.Other").encode(),
        bolt_request(7, method="other").encode(),
    ]
    _, got, upstream_saw = decoded_for(routed, frames)
    codes = {
        a.get_request_id(): PROTOCOLS["bolt"].runtime_status(a.get_status())
        for a in PROTOCOLS["bolt"].decode_all(got)
    }
    assert codes == {5: 200, 6: 404, 7: 404} and upstream_saw == 1


@pytest.mark.parametrize("lane", [True, False])
def test_both_paths_keep_the_requests_own_timeout(lane, full_path):
    """The route allows 5 s; the request says 150 ms; the upstream never answers it."""
    if not lane:
        full_path()

    class Silent(Upstream):
        def on_frame(self, frame, buf, start, length):
            self.seen.append(frame)

    def five_seconds(cfg):
        cfg["route_configs"][0]["virtual_hosts"][0]["routes"][0]["route"]["timeout_ms"] = 5000

    request = bolt_request(5)
    request.timeout = 150
    got, _, took = run(through("bolt", [request.encode()], 1, five_seconds, upstream=Silent))
    (answer,) = PROTOCOLS["bolt"].decode_all(got)
    assert PROTOCOLS["bolt"].runtime_status(answer.get_status()) == 504
    assert 0.14 <= took < 1.0


# ---- what filters decide is final -------------------------------------------------------


def test_a_request_a_filter_answers_never_goes_upstream():
    """A rate limit of one request per value of a header: the first request passes, the
    second is refused (429); behind a codec that cannot decode that header, a third's key
    cannot be read (400). Only the first reaches the upstream."""
    from .test_proxy_paths import BrokenHeaderBolt

    class Broken(BrokenHeaderBolt):
        def decode(self, buf, start=0, direction=None, into=None):
            return super().decode(buf, start, direction)

    limit = {"name": "local_rate_limit",
             "config": {"tokens_per_second": 0.001, "burst": 1, "per": ["header:x-broken"]}}  # fmt: skip

    frames = [bolt_request(rid, **{"x-broken": "a"}).encode() for rid in (5, 6)]
    got, seen, _ = run(through("bolt", frames, 2, lambda cfg: filters(cfg, limit)))
    broken = {**PROTOCOLS, "bolt": Broken()}
    more, seen_too, _ = run(through("bolt", [bolt_request(7, **{"x-broken": "a"}).encode()], 1,
                                    lambda cfg: filters(cfg, limit), broken))  # fmt: skip
    got, seen = got + more, seen + seen_too
    statuses = {a.get_request_id(): a.get_status() for a in PROTOCOLS["bolt"].decode_all(got)}
    assert statuses == {5: 0, 6: BOLT.map_status(429), 7: BOLT.map_status(400)}
    assert len(seen) == 1  # (with the id the proxy gave it)


def test_a_request_two_filters_hold_goes_on_after_both():
    """Two fault delays of 100 ms each: the request is answered after both, not before."""
    delay = {"name": "fault", "config": {"delay": {"fixed_delay_ms": 100}}}
    got, _, took = run(
        through("bolt", [bolt_request(5).encode()], 1, lambda cfg: filters(cfg, delay, delay))
    )
    (answer,) = PROTOCOLS["bolt"].decode_all(got)
    assert PROTOCOLS["bolt"].runtime_status(answer.get_status()) == 200
    assert 0.19 <= took < 1.0


def test_a_response_filter_sees_the_answers_frame_on_the_lane():
    """TARS (whose decoder needs the direction) with a header added to every answer."""
    add = {"name": "header_mutation",
           "config": {"response_headers_to_add": [{"key": "x-via", "value": "proxy"}]}}  # fmt: skip
    request = samples("tars", StreamType.REQUEST)[0]
    got, _, _ = run(through("tars", [request], 1, lambda cfg: filters(cfg, add)))
    (answer,) = PROTOCOLS["tars"].decode_all(got, Direction.RESPONSE)
    assert answer.get_header("x-via") == "proxy"
    assert (
        answer.get_request_id()
        == PROTOCOLS["tars"].decode(request, 0, Direction.REQUEST).get_request_id()
    )


def test_a_response_filter_gets_an_answer_patched_in_place_decoded_with_its_direction():
    """Kafka answers keep their bytes (the id is patched in place), and Kafka's decoder needs
    the direction: a response filter still gets the answer's frame."""
    from protoc_x.runtime.filters import REGISTRY, StreamFilter, register

    seen: list = []

    class AnswersSeen(StreamFilter):
        touches_responses = True

        def on_response(self, ctx, frame) -> None:
            seen.append((frame.get_stream_type(), frame.get_request_id()))

    request = with_id("kafka", samples("kafka", StreamType.REQUEST)[0], 4_242)
    seen_filter = lambda cfg: filters(cfg, {"name": "test_answers_seen", "config": {}})  # noqa
    register("test_answers_seen")(AnswersSeen)
    try:
        got, _, _ = run(through("kafka", [request], 1, seen_filter))
    finally:
        del REGISTRY["test_answers_seen"]
    (answer,) = PROTOCOLS["kafka"].decode_all(got, Direction.RESPONSE)
    assert answer.get_request_id() == 4_242
    assert seen == [(StreamType.RESPONSE, 4_242)]
