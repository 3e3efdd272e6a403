"""Kafka against real clients: kafka-python 3.0.12, kafkajs 2.2.4 and librdkafka 2.16
(confluent-kafka), three independent implementations, producing to a broker written by hand
from Kafka's message definitions (kafka_peers.py).

- The captures are whole frames whose headers, read at RequestHeader.json's offsets, are what
  each library says it sent (api key, version, correlation id, client id; sizes where it
  reports them), with flexible (tagged-field) header v2 from kafka-python and librdkafka and
  header v1 from kafkajs; the produced values are in the Produce requests.
- Our kafka codec reads them (a flexible header's tagged fields stay at the head of the body),
  re-encodes them byte for byte and needs more bytes on every proper prefix.
- The three clients at once through the proxy to that broker: their correlation ids collide
  (each numbers every connection from 0 or 1), and every message arrives.
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor

import pytest

from protoc_x.cli import frame_json
from protoc_x.runtime.api import Direction
from tests.runtime.harness import PROTOCOLS, free_port, proxy_in_thread, simple_config

from .capture import Capture
from .framing import kafka_frame_length, split_frames
from .kafka_peers import API_NAMES, CLIENTS, MESSAGES, TOPIC, flexible, kafka_broker, kafka_captures

KAFKA = PROTOCOLS["kafka"]
LIBRARIES = sorted(CLIENTS)


@pytest.fixture(scope="module")
def captures() -> dict[str, list[Capture]]:
    return {library: kafka_captures(library) for library in LIBRARIES}


def header_fields(data: bytes) -> tuple[int, int, int, str | None, int]:
    """api_key, api_version, correlation_id, client_id and where the header ends (before any
    tagged fields), at RequestHeader.json's offsets."""
    api_key, api_version, correlation_id, client_id_len = struct.unpack_from(">hhih", data, 4)
    if client_id_len < 0:
        return api_key, api_version, correlation_id, None, 14
    client_id = data[14 : 14 + client_id_len].decode()
    return api_key, api_version, correlation_id, client_id, 14 + client_id_len


@pytest.mark.parametrize("library", LIBRARIES)
def test_captures_are_whole_and_what_the_library_sent(captures, library) -> None:
    frames = captures[library]
    names = [capture.name for capture in frames]
    assert len(set(names)) == len(names), names
    apis = set()
    produced = b""
    for capture in frames:
        data, expect = capture.data, capture.expect
        whole, used = split_frames(data, kafka_frame_length)
        assert len(whole) == 1 and used == len(data) == expect["length"], capture
        assert expect.get("size", len(data)) == len(data), capture
        if capture.direction == "request":
            api_key, api_version, correlation_id, client_id, end = header_fields(data)
            assert (api_key, api_version, correlation_id, client_id) == (
                expect["api_key"],
                expect["api_version"],
                expect["request_id"],
                f"protocx-{library}",
            ), capture
            assert (
                expect["method"] == API_NAMES[api_key] == expect.get("api_name", API_NAMES[api_key])
            )
            assert data[end:] == expect["body"], capture
            if expect["flexible"]:  # header v2: tagged fields follow the client id (none here)
                assert data[end] == 0, capture
            apis.add((api_key, api_version))
            if api_key == 0:
                produced += data
        else:
            assert struct.unpack_from(">i", data, 4)[0] == expect["request_id"], capture
            assert data[8:] == expect["body"], capture
    for _key, value in MESSAGES:
        assert value.encode() in produced, value  # uncompressed records: the values as sent
    assert {key for key, _ in apis} == {0, 3, 18}, apis
    flexible_versions = {version for key, version in apis if flexible(key, version)}
    assert bool(flexible_versions) == (library != "kafkajs"), apis  # kafkajs knows none


@pytest.mark.parametrize("library", LIBRARIES)
def test_our_codec_reads_them(captures, library) -> None:
    problems = []
    for capture in captures[library]:
        data, expect = capture.data, capture.expect
        direction = Direction(capture.direction)
        frame = KAFKA.decode(data, 0, direction)
        assert frame is not None and frame.length == len(data), capture
        view = frame_json("kafka", frame)
        for key in ("request_id", "stream_type", "heartbeat", "status", "service", "method"):
            if view[key] != expect[key]:
                problems.append(f"{capture.name}: {key} = {view[key]!r}, meant {expect[key]!r}")
        if bytes(frame.get_body()) != expect["body"]:
            problems.append(f"{capture.name}: body differs")
        if capture.direction == "request":
            fields = frame.field_values()
            got = (fields["api_key"], fields["api_version"], fields["client_id"])
            if got != (expect["api_key"], expect["api_version"], expect["client_id"]):
                problems.append(f"{capture.name}: header fields {got}")
        assert frame.encode() == data, capture
        for cut in range(len(data)):
            assert KAFKA.decode(data[:cut], 0, direction) is None, (capture, cut)
    assert not problems, "\n".join(problems)


def test_our_codec_changes_a_real_request(captures) -> None:
    """A rewritten correlation id and client id in a flexible request keep the rest intact."""
    original = next(
        c for c in captures["librdkafka"] if c.expect["api_key"] == 0 and c.direction == "request"
    )
    frame = KAFKA.decode(original.data, 0, Direction.REQUEST)
    frame.set_request_id(0x7FFF_0001)
    frame.client_id = "renamed-by-protoc-x"
    data = frame.encode()
    api_key, api_version, correlation_id, client_id, end = header_fields(data)
    assert (api_key, api_version, correlation_id, client_id) == (
        0,
        original.expect["api_version"],
        0x7FFF_0001,
        "renamed-by-protoc-x",
    )
    assert data[end:] == original.expect["body"]
    assert struct.unpack_from(">i", data)[0] == len(data) - 4


def test_real_clients_at_once_through_the_proxy() -> None:
    proxy_port = free_port()
    with kafka_broker(advertise=("127.0.0.1", proxy_port)) as broker:
        config = simple_config("kafka", proxy_port, [f"127.0.0.1:{broker.port}"])
        with proxy_in_thread(config), ThreadPoolExecutor(len(LIBRARIES)) as pool:
            futures = {
                library: pool.submit(CLIENTS[library], proxy_port, f"protocx-{library}")
                for library in LIBRARIES
            }
            reports = {library: future.result(timeout=60) for library, future in futures.items()}
        requests = list(broker.requests)
        batches = list(broker.batches)
    assert not broker.unknown
    for library, report in reports.items():
        sent = [r for r in report if "port" in r]
        assert all(r["port"] == proxy_port for r in sent), sent
        reached = [
            (r.api_key, r.api_version) for r in requests if r.client_id == f"protocx-{library}"
        ]
        assert sorted(reached) == sorted((r["api_key"], r["api_version"]) for r in sent), library
        produced = b"".join(
            records for topic, _partition, records in batches if topic == TOPIC
        )  # all libraries' batches: each value must be there once per library
        for _key, value in MESSAGES:
            assert produced.count(value.encode()) == len(LIBRARIES), value
    # the clients' correlation ids collided; the broker saw them all answered in order
    ids = [r["correlation_id"] for report in reports.values() for r in report if "port" in r]
    assert len(ids) > len(set(ids))
