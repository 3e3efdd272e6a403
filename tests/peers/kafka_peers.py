"""Kafka frames from real clients: kafka-python 3.0.12 (pure Python), kafkajs 2.2.4 (node) and
confluent-kafka 2.16.1 (librdkafka 2.16), each producing to a broker written here by hand.

No Kafka broker runs here: `KafkaBroker` answers just enough for a producer, ApiVersions,
Metadata and Produce, with bytes built with struct from Apache Kafka's message definitions
(clients/src/main/resources/common/message/*.json, which kafka-python ships as
kafka/protocol/schemas/resources): never with a protoc-x codec. It advertises

    ApiVersions 0-4 (flexible from 3), Metadata 0-12 (flexible from 9), Produce 3-9 (flexible 9)

so each client uses the highest versions both sides know: flexible (tagged-field) headers
from kafka-python and librdkafka, classic ones from kafkajs (which knows no flexible version).

Every capture's `expect` comes from the client library's own report of what it sent: kafka-python's
request header objects (KafkaProtocol.send_request), kafkajs's REQUEST instrumentation events,
librdkafka's protocol debug log ("Sent MetadataRequest (v12, 40 bytes @ 0, CorrId 2)").
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from .capture import Capture
from .framing import kafka_frame_length
from .node_process import NODE, NODE_DIR, check_node
from .recording import LOOPBACK, TO_CLIENT, TO_SERVER, recording_relay, recv_exactly

PEER_SCRIPT = NODE_DIR / "kafka_peer.js"
TOPIC = "protocx-topic"
NODE_ID = 1
CLUSTER_ID = "protocx-cluster"

API_NAMES = {0: "Produce", 3: "Metadata", 18: "ApiVersions"}
ADVERTISED = {0: (3, 9), 3: (0, 12), 18: (0, 4)}  # api key: (min, max) versions we answer
FLEXIBLE_FROM = {0: 9, 3: 9, 18: 3}  # first flexible version (the *Request/*Response.json files)
UNSUPPORTED_VERSION = 35

_I16, _I32, _I64 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")


def flexible(api_key: int, api_version: int) -> bool:
    return api_version >= FLEXIBLE_FROM.get(api_key, 1 << 15)


# --- reading requests (the header and what a Produce answer must echo) -----------------------


class _Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def i8(self) -> int:
        return self.take(1)[0]

    def i16(self) -> int:
        return _I16.unpack(self.take(2))[0]

    def i32(self) -> int:
        return _I32.unpack(self.take(4))[0]

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self.i8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def string(self, compact: bool) -> Optional[str]:
        size = self.uvarint() - 1 if compact else self.i16()
        return None if size < 0 else self.take(size).decode()

    def array_len(self, compact: bool) -> int:
        return self.uvarint() - 1 if compact else self.i32()

    def bytes_(self, compact: bool) -> Optional[bytes]:
        size = self.uvarint() - 1 if compact else self.i32()
        return None if size < 0 else self.take(size)

    def tagged_fields(self) -> list[tuple[int, bytes]]:
        return [(self.uvarint(), self.take(self.uvarint())) for _ in range(self.uvarint())]


@dataclass
class Request:
    """A request as the broker read it, at the offsets of Kafka's RequestHeader.json: header
    v1 (api_key, api_version, correlation_id, client_id as a classic nullable string) and, in
    flexible versions, header v2 (the same, then tagged fields)."""

    frame: bytes
    api_key: int
    api_version: int
    correlation_id: int
    client_id: Optional[str]
    header_tags: Optional[list]  # None: a header v1
    body_offset: int


def read_request(frame: bytes) -> Request:
    r = _Reader(frame, 4)
    api_key, api_version, correlation_id = r.i16(), r.i16(), r.i32()
    client_id = r.string(compact=False)
    tags = r.tagged_fields() if flexible(api_key, api_version) else None
    return Request(frame, api_key, api_version, correlation_id, client_id, tags, r.pos)


def produce_contents(request: Request) -> tuple[int, list[tuple[str, int, bytes]]]:
    """acks and (topic, partition, record batch bytes) of a Produce request v3+."""
    flex = flexible(0, request.api_version)
    r = _Reader(request.frame, request.body_offset)
    r.string(flex)  # transactional_id
    acks = r.i16()
    r.i32()  # timeout_ms
    out = []
    for _ in range(r.array_len(flex)):
        topic = r.string(flex) or ""
        for _ in range(r.array_len(flex)):
            partition = r.i32()
            out.append((topic, partition, r.bytes_(flex) or b""))
            if flex:
                r.tagged_fields()
        if flex:
            r.tagged_fields()
    return acks, out


# --- writing answers ------------------------------------------------------------------------


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(value: Optional[str], flex: bool) -> bytes:
    if value is None:
        return _uvarint(0) if flex else _I16.pack(-1)
    data = value.encode()
    return (_uvarint(len(data) + 1) if flex else _I16.pack(len(data))) + data


def _array(items: list[bytes], flex: bool) -> bytes:
    return (_uvarint(len(items) + 1) if flex else _I32.pack(len(items))) + b"".join(items)


def _tags(flex: bool) -> bytes:
    return b"\x00" if flex else b""  # no tagged fields


def api_versions_body(version: int) -> bytes:
    """ApiVersionsResponse.json; a version we do not know gets v0 with UNSUPPORTED_VERSION,
    which tells the client which versions to retry with (as a Kafka broker does)."""
    if version > ADVERTISED[18][1]:
        keys = [_I16.pack(k) + _I16.pack(lo) + _I16.pack(hi) for k, (lo, hi) in ADVERTISED.items()]
        return _I16.pack(UNSUPPORTED_VERSION) + _array(keys, False)
    flex = version >= 3
    keys = [
        _I16.pack(key) + _I16.pack(low) + _I16.pack(high) + _tags(flex)
        for key, (low, high) in sorted(ADVERTISED.items())
    ]
    out = _I16.pack(0) + _array(keys, flex)
    if version >= 1:
        out += _I32.pack(0)  # throttle_time_ms
    return out + _tags(flex)


def metadata_body(version: int, host: str, port: int) -> bytes:
    """MetadataResponse.json: this broker, and TOPIC with one partition it leads."""
    flex = version >= 9
    out = _I32.pack(0) if version >= 3 else b""  # throttle_time_ms
    broker = _I32.pack(NODE_ID) + _string(host, flex) + _I32.pack(port)
    if version >= 1:
        broker += _string(None, flex)  # rack
    out += _array([broker + _tags(flex)], flex)
    if version >= 2:
        out += _string(CLUSTER_ID, flex)
    if version >= 1:
        out += _I32.pack(NODE_ID)  # controller_id
    partition = _I16.pack(0) + _I32.pack(0) + _I32.pack(NODE_ID)  # error, index, leader
    if version >= 7:
        partition += _I32.pack(0)  # leader_epoch
    partition += _array([_I32.pack(NODE_ID)], flex) * 2  # replicas, isr
    if version >= 5:
        partition += _array([], flex)  # offline_replicas
    topic = _I16.pack(0) + _string(TOPIC, flex)
    if version >= 10:
        topic += bytes(range(1, 17))  # topic_id (a uuid)
    if version >= 1:
        topic += b"\x00"  # is_internal
    topic += _array([partition + _tags(flex)], flex)
    if version >= 8:
        topic += _I32.pack(-(1 << 31))  # topic_authorized_operations
    out += _array([topic + _tags(flex)], flex)
    if 8 <= version <= 10:
        out += _I32.pack(-(1 << 31))  # cluster_authorized_operations
    return out + _tags(flex)


def produce_body(version: int, batches: list[tuple[str, int, bytes]], offset: int) -> bytes:
    """ProduceResponse.json: every partition accepted, base offsets from `offset` on."""
    flex = version >= 9
    topics: dict[str, list[bytes]] = {}
    for topic, partition, _records in batches:
        entry = _I32.pack(partition) + _I16.pack(0) + _I64.pack(offset)
        offset += 1
        entry += _I64.pack(-1)  # log_append_time_ms (v2+)
        if version >= 5:
            entry += _I64.pack(0)  # log_start_offset
        if version >= 8:
            entry += _array([], flex) + _string(None, flex)  # record_errors, error_message
        topics.setdefault(topic, []).append(entry + _tags(flex))
    responses = [_string(t, flex) + _array(p, flex) + _tags(flex) for t, p in topics.items()]
    return _array(responses, flex) + _I32.pack(0) + _tags(flex)  # throttle_time_ms


def response_frame(request: Request, body: bytes) -> bytes:
    """Response header v0 (correlation_id), or v1 (+ tagged fields) for flexible versions,
    except ApiVersions, whose answer always has header v0 (ApiVersionsResponse.json)."""
    header = _I32.pack(request.correlation_id)
    if flexible(request.api_key, request.api_version) and request.api_key != 18:
        header += b"\x00"
    data = header + body
    return _I32.pack(len(data)) + data


# --- the broker -----------------------------------------------------------------------------


@dataclass
class KafkaBroker:
    """A hand-written Kafka broker on 127.0.0.1 that serves ApiVersions, Metadata (TOPIC, one
    partition, itself the leader, at `advertise` or its own address) and Produce (every batch
    accepted; acks 0 unanswered). Anything else: it records the request and closes the
    connection. `requests` lists what it read, `batches` the record batches produced."""

    advertise: Optional[tuple[str, int]] = None
    requests: list[Request] = field(default_factory=list)
    batches: list[tuple[str, int, bytes]] = field(default_factory=list)
    unknown: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server((LOOPBACK, 0))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = False
        thread = threading.Thread(target=self._accept, name="kafka-broker", daemon=True)
        thread.start()
        self._threads.append(thread)

    @property
    def port(self) -> int:
        return self.address[1]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.address)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._closing:
                conn.close()
                return
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ConnectionError, ValueError):
            while True:
                head = recv_exactly(conn, 4, timeout=None)
                frame = head + recv_exactly(conn, _I32.unpack(head)[0], timeout=None)
                request = read_request(frame)
                with self._lock:
                    self.requests.append(request)
                answer = self._answer(request)
                if answer is False:
                    break
                if answer is not None:
                    conn.sendall(response_frame(request, answer))
        with contextlib.suppress(OSError):
            conn.close()

    def _answer(self, request: Request):
        key, version = request.api_key, request.api_version
        if key == 18:
            return api_versions_body(version)
        if key == 3 and version <= ADVERTISED[3][1]:
            host, port = self.advertise or self.address
            return metadata_body(version, host, port)
        if key == 0 and ADVERTISED[0][0] <= version <= ADVERTISED[0][1]:
            acks, batches = produce_contents(request)
            with self._lock:
                offset = len(self.batches)
                self.batches.extend(batches)
            return None if acks == 0 else produce_body(version, batches, offset)
        with self._lock:
            self.unknown.append(request)
        return False

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        for thread in self._threads:
            thread.join(timeout=2)


@contextlib.contextmanager
def kafka_broker(advertise: Optional[tuple[str, int]] = None) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(advertise)
    try:
        yield broker
    finally:
        broker.close()


# --- the clients ----------------------------------------------------------------------------

MESSAGES = [("k1", "value-1"), ("k2", "valeur-ü-2"), (None, "value-3-" + "x" * 300)]


def kafka_python_produce(port: int, client_id: str, messages=MESSAGES) -> list[dict[str, Any]]:
    """kafka-python's KafkaProducer (acks 1, no idempotence, no compression) sends messages to
    TOPIC through bootstrap 127.0.0.1:port. Returns what its KafkaProtocol objects say they
    sent: one dict per request {port, api_key, api_version, correlation_id, client_id,
    expect_response}, in send order."""
    from kafka import KafkaProducer
    from kafka.protocol.parser import KafkaProtocol

    sent: list[dict[str, Any]] = []
    original = KafkaProtocol.send_request

    def spy(self, request, correlation_id=None):
        correlation_id = original(self, request, correlation_id)
        header = request.header
        sent.append(
            {
                "port": int(re.search(r":(\d+)\]", self._ident).group(1)),
                "api_key": header.request_api_key,
                "api_version": header.request_api_version,
                "correlation_id": correlation_id,
                "client_id": header.client_id,
                "expect_response": request.expect_response(),
            }
        )
        return correlation_id

    KafkaProtocol.send_request = spy
    try:
        producer = KafkaProducer(
            bootstrap_servers=f"{LOOPBACK}:{port}",
            client_id=client_id,
            acks=1,
            enable_idempotence=False,
            linger_ms=0,
            request_timeout_ms=5000,
            max_block_ms=5000,
        )
        try:
            futures = [
                producer.send(TOPIC, key=k and k.encode(), value=v.encode()) for k, v in messages
            ]
            producer.flush(timeout=10)
            for future in futures:
                future.get(timeout=5)
        finally:
            producer.close(timeout=5)
    finally:
        KafkaProtocol.send_request = original
    return sent


def kafkajs_produce(port: int, client_id: str, messages=MESSAGES) -> list[dict[str, Any]]:
    """kafkajs's producer (node/kafka_peer.js) sends messages to TOPIC through bootstrap
    127.0.0.1:port; returns its REQUEST instrumentation events as {port, api_key, api_version,
    correlation_id, client_id, response_size, api_name}, then checks it got record metadata
    back."""
    check_node("Kafka", "kafkajs")
    result = subprocess.run(
        [NODE, str(PEER_SCRIPT), "produce", str(port), client_id, TOPIC],
        cwd=NODE_DIR,
        input=json.dumps([{"key": k, "value": v} for k, v in messages]),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines or lines[-1].get("event") != "sent":
        raise AssertionError(f"kafkajs printed {lines}; stderr: {result.stderr[-800:]}")
    return [
        {
            "port": int(line["broker"].rpartition(":")[2]),
            "api_key": line["apiKey"],
            "api_version": line["apiVersion"],
            "correlation_id": line["correlationId"],
            "client_id": line["clientId"],
            # kafkajs's REQUEST event reports the size of the answer, without its size field
            "response_size": line["size"],
            "api_name": line["apiName"],
            "expect_response": True,
        }
        for line in lines
        if line.get("event") == "request"
    ] + [{"sent": lines[-1]["result"]}]


# librdkafka's protocol debug line for a request it wrote, e.g.
# "127.0.0.1:4567/bootstrap: Sent MetadataRequest (v12, 40 bytes @ 0, CorrId 2)"
_RDKAFKA_SENT = re.compile(
    r"(?P<host>[\d.]+):(?P<port>\d+)/\w+: Sent (?P<name>\w+)Request \(v(?P<version>\d+), "
    r"(?P<size>\d+) bytes @ 0, CorrId (?P<corr>\d+)\)"
)
_RDKAFKA_KEYS = {"ApiVersion": 18, "Metadata": 3, "Produce": 0}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def librdkafka_produce(port: int, client_id: str, messages=MESSAGES) -> list[dict[str, Any]]:
    """confluent-kafka's Producer (librdkafka; acks 1, no idempotence, no compression) sends
    messages to TOPIC through bootstrap 127.0.0.1:port; returns what librdkafka's protocol debug
    log says it sent: {port, api_key, api_version, correlation_id, client_id, size}."""
    from confluent_kafka import Producer

    logger = logging.getLogger(f"protocx.librdkafka.{client_id}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = _Lines()
    logger.addHandler(handler)
    delivered: list[Any] = []
    try:
        producer = Producer(
            {
                "bootstrap.servers": f"{LOOPBACK}:{port}",
                "client.id": client_id,
                "acks": 1,
                "enable.idempotence": False,
                "compression.type": "none",
                "linger.ms": 0,
                "debug": "protocol",
                "logger": logger,
                "message.timeout.ms": 8000,
            }
        )
        for key, value in messages:
            producer.produce(
                TOPIC, key=key and key.encode(), value=value.encode(),
                on_delivery=lambda err, msg: delivered.append((err, msg.offset())),
            )  # fmt: skip
        left = producer.flush(10)
        if left or len(delivered) != len(messages) or any(err for err, _ in delivered):
            raise AssertionError(f"librdkafka delivered {delivered}, {left} left")
        del producer  # closes its connections
    finally:
        logger.removeHandler(handler)
    sent = []
    for line in handler.lines:
        match = _RDKAFKA_SENT.search(line)
        if match:
            sent.append(
                {
                    "port": int(match["port"]),
                    "api_key": _RDKAFKA_KEYS[match["name"]],
                    "api_version": int(match["version"]),
                    "correlation_id": int(match["corr"]),
                    "client_id": client_id,
                    "size": int(match["size"]),
                    "expect_response": True,
                }
            )
    return sent + [{"delivered": delivered}]


CLIENTS = {
    "kafka-python": kafka_python_produce,
    "kafkajs": kafkajs_produce,
    "librdkafka": librdkafka_produce,
}


# --- captures -------------------------------------------------------------------------------


def kafka_captures(library: str) -> list[Capture]:
    """Every frame between `library`'s producer and the broker, cut by length only. The
    bootstrap address and the broker the metadata advertises are two relays to one broker, so
    each connection is known by its port; a request's expectations are the library's record
    with the same port and correlation id, a response's those of the request it answers (Kafka
    answers in request order on a connection)."""
    client_id = f"protocx-{library}"
    captures: list[Capture] = []
    with (
        kafka_broker() as broker,
        recording_relay(broker.address, kafka_frame_length) as boot,
        recording_relay(broker.address, kafka_frame_length) as node,
    ):
        broker.advertise = node.address
        reports = CLIENTS[library](boot.port, client_id)
        records = {(r["port"], r["correlation_id"]): r for r in reports if "port" in r}
        if len(records) != len([r for r in reports if "port" in r]):
            raise AssertionError(f"{library}: correlation ids repeat on one connection")
        time.sleep(0.1)
        seen = set()
        for relay, role in ((boot, "bootstrap"), (node, "broker")):
            for index in range(len(relay.connections)):
                requests = relay.take_all(TO_SERVER, connection=index)
                answers = relay.take_all(TO_CLIENT, connection=index)
                awaited = []
                for data in requests:
                    (correlation_id,) = _I32.unpack_from(data, 8)
                    record = records.get((relay.port, correlation_id))
                    if record is None:
                        raise AssertionError(f"{library}: no report of {data[:16].hex()}")
                    seen.add((relay.port, correlation_id))
                    name = API_NAMES.get(record["api_key"], str(record["api_key"]))
                    tag = f"kafka/{library}/{role}-{index}/{name}-v{record['api_version']}"
                    captures.append(
                        Capture(f"{tag}-request", "request", data, _expect(record, data))
                    )
                    if record["expect_response"]:
                        awaited.append((tag, record))
                if len(answers) != len(awaited):
                    raise AssertionError(f"{library}: {len(answers)} answers to {len(awaited)}")
                for data, (tag, record) in zip(answers, awaited):
                    captures.append(
                        Capture(f"{tag}-response", "response", data, _expect(record, data, True))
                    )
        missing = set(records) - seen
        if missing:
            raise AssertionError(f"{library}: reported but not on the wire: {sorted(missing)}")
    return captures


def _expect(record: dict[str, Any], data: bytes, response: bool = False) -> dict[str, Any]:
    key, version = record["api_key"], record["api_version"]
    client_id = record["client_id"]
    if response:
        body_offset = 8  # size, correlation_id (a flexible header's tags stay in the body)
    else:
        body_offset = 14 + (len(client_id.encode()) if client_id is not None else 0)
    expect = {
        "request_id": record["correlation_id"],
        "stream_type": "response" if response else "request",
        "heartbeat": False,
        "status": None,
        "service": None if response else client_id,
        "method": None if response else API_NAMES.get(key),
        "headers": {},
        "body": data[body_offset:],
        "length": len(data),
        "api_key": key,
        "api_version": version,
        "client_id": client_id,
        "flexible": flexible(key, version),
    }
    if "size" in record and not response:
        expect["size"] = record["size"]  # librdkafka: the whole frame
    if "response_size" in record and response:
        expect["size"] = record["response_size"] + 4
    if "api_name" in record:
        expect["api_name"] = record["api_name"]
    return expect
