"""Sample frames of every shipped protocol, written out byte by byte from the protocols'
published layouts (docs: ../shared/docs/protocols.md, Kafka's message JSON, MOSN's example).
``make demo`` decodes them; the tests use them beside frames captured from real libraries."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    protocol: str
    name: str
    data: bytes
    direction: str | None = None  # for protocols whose bytes do not say it
    expect: dict = field(default_factory=dict)


def _h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def _bolt_headers(pairs: list[tuple[str, str]]) -> bytes:
    out = b""
    for key, value in pairs:
        for item in (key.encode(), value.encode()):
            out += struct.pack(">I", len(item)) + item
    return out


def _bolt_request() -> bytes:
    headers = _bolt_headers(
        [
            ("service", "com.acme.HelloService:1.0"),
            ("sofa_head_method_name", "sayHello"),
            ("sofa_head_target_app", "hello"),
            ("rpc_trace_context.sofaTraceId", "0a0fe8a7170000000001"),
        ]
    )
    cls = b"com.alipay.sofa.rpc.core.request.SofaRequest"
    content = bytes(range(256)) + b"x" * 44  # 300 bytes
    head = struct.pack(">BBHBIBiHHI", 1, 1, 1, 1, 7, 1, 3000, len(cls), len(headers), len(content))
    return head + cls + headers + content


def _bolt_response() -> bytes:
    cls = b"com.alipay.sofa.rpc.core.response.SofaResponse"
    content = b"r" * 157
    head = struct.pack(">BBHBIBHHHI", 1, 0, 2, 1, 7, 1, 0, len(cls), 0, len(content))
    return head + cls + content


def _boltv2_request_crc() -> bytes:
    headers = _bolt_headers([("service", "com.acme.EchoService:1.0")])
    cls, content = b"java.lang.String", b"hello v2"
    head = struct.pack(
        ">BBBHBIBBiHHI", 2, 2, 1, 1, 1, 11, 1, 1, 5000, len(cls), len(headers), len(content)
    )
    frame = head + cls + headers + content
    return frame + struct.pack(">I", zlib.crc32(frame))


def _boltv2_response() -> bytes:
    content = b"hi"
    return struct.pack(">BBBHBIBBHHHI", 2, 1, 0, 2, 1, 11, 1, 0, 0, 0, 0, len(content)) + content


def _tars_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body) + 4) + body


# RequestPacket: tags 1..10, smallest integer widths, 0 as the ZERO type (TarsGo's encoder).
TARS_REQUEST_BODY = b"".join(
    _h(hex_)
    for hex_, _meaning in [
        ("10 01", "1 iVersion = 1 (int1)"),
        ("2c", "2 cPacketType = 0 (zero)"),
        ("3c", "3 iMessageType = 0"),
        ("40 07", "4 iRequestId = 7"),
        ("56 1a 48656c6c6f2e48656c6c6f5365727665722e48656c6c6f4f626a", "5 sServantName"),
        ("66 08 73617948656c6c6f", "6 sFuncName = sayHello"),
        ("7d 00 00 05 0605616263", "7 sBuffer: simple list of 5 bytes"),
        ("81 0bb8", "8 iTimeout = 3000 (int2)"),
        ("98 00 01 06 01 6b 16 01 76", "9 context = {k: v}"),
        ("a8 0c", "10 status = {} (length 0)"),
    ]
)

TARS_RESPONSE_BODY = _h("""
    10 01 2c 30 07 4c 5c
    6d 00 00 02 6869
    78 0c
    86 00
    98 0c
    """)

SAMPLES = [
    Sample("bolt", "heartbeat ping (sofa-bolt-node)",
           _h("01 01 00 00 01 00 00 00 02 01 00 00 0b b8 00 00 00 00 00 00 00 00"),
           expect={"request_id": 2, "heartbeat": True, "stream_type": "request", "timeout_ms": 3000}),
    Sample("bolt", "request, 4 headers, 300 B content", _bolt_request(),
           expect={"request_id": 7, "service": "com.acme.HelloService:1.0", "method": "sayHello",
                   "body_length": 300, "timeout_ms": 3000, "length": 533}),
    Sample("bolt", "response", _bolt_response(),
           expect={"request_id": 7, "status": 0, "stream_type": "response", "length": 223}),
    Sample("boltv2", "request with CRC32", _boltv2_request_crc(),
           expect={"request_id": 11, "service": "com.acme.EchoService:1.0", "timeout_ms": 5000,
                   "body_length": 8}),
    Sample("boltv2", "response without CRC", _boltv2_response(),
           expect={"request_id": 11, "status": 0, "stream_type": "response", "body_length": 2}),
    Sample("dubbo", "heartbeat ping",
           _h("da bb e2 00 00 00 00 00 00 00 00 05 00 00 00 01 4e"),
           expect={"request_id": 5, "heartbeat": True, "stream_type": "request"}),
    Sample("dubbo", "heartbeat reply",
           _h("da bb 22 14 00 00 00 00 00 00 00 05 00 00 00 01 4e"),
           expect={"request_id": 5, "heartbeat": True, "stream_type": "response", "status": 20}),
    Sample("dubbo", "request sayHello(String)",
           _h("dabb c2 00 0000000000000001 0000005e"
              "05 322e302e32"                                    # "2.0.2"
              "15 636f6d2e61636d652e48656c6c6f53657276696365"    # "com.acme.HelloService"
              "05 312e302e30"                                    # "1.0.0"
              "08 73617948656c6c6f"                              # "sayHello"
              "12 4c6a6176612f6c616e672f537472696e673b"          # "Ljava/lang/String;"
              "05 776f726c64"                                    # "world"
              "48 07 74696d656f7574 04 33303030"                 # H "timeout" "3000"
              "05 67726f7570 04 626c7565 5a"),                   # "group" "blue" Z
           expect={"request_id": 1, "service": "com.acme.HelloService", "method": "sayHello",
                   "timeout_ms": 3000, "headers": {"group": "blue", "version": "1.0.0"}}),
    Sample("thrift", "CALL ping(\"hi\") seqid 7 (captured)",
           _h("00 00 00 1a 80 01 00 01 00 00 00 04 70 69 6e 67 00 00 00 07 0b 00 01 00 00 00 02 68 69 00"),
           expect={"request_id": 7, "method": "ping", "service": None, "stream_type": "request"}),
    Sample("thrift", "EXCEPTION unknown method, multiplexed name",
           _h("00 00 00 31 80 01 00 03 00 00 00 08 43 61 6c 63 3a 61 64 64 00 00 00 09"
              "0b 00 01 00 00 00 0e 6e 6f 20 73 75 63 68 20 6d 65 74 68 6f 64"
              "08 00 02 00 00 00 01 00"),
           expect={"request_id": 9, "service": "Calc", "method": "add", "status": 1,
                   "stream_type": "response"}),
    # the same two messages on the buffered transport: no frame length, a message ends with
    # its struct
    Sample("thrift_unframed", "CALL ping(\"hi\") seqid 7",
           _h("80 01 00 01 00 00 00 04 70 69 6e 67 00 00 00 07 0b 00 01 00 00 00 02 68 69 00"),
           expect={"request_id": 7, "method": "ping", "service": None, "stream_type": "request",
                   "length": 26}),
    Sample("thrift_unframed", "EXCEPTION unknown method, multiplexed name",
           _h("80 01 00 03 00 00 00 08 43 61 6c 63 3a 61 64 64 00 00 00 09"
              "0b 00 01 00 00 00 0e 6e 6f 20 73 75 63 68 20 6d 65 74 68 6f 64"
              "08 00 02 00 00 00 01 00"),
           expect={"request_id": 9, "service": "Calc", "method": "add", "status": 1,
                   "stream_type": "response", "length": 49}),
    Sample("memcached", "GET foo",
           _h("80 00 0003 00 00 0000 00000003 00000005 0000000000000000 666f6f"),
           expect={"request_id": 5, "method": "get", "headers": {"key": "foo"}}),
    Sample("memcached", "GETKQ foo (quiet)",
           _h("80 0d 0003 00 00 0000 00000003 00000006 0000000000000000 666f6f"),
           expect={"request_id": 6, "method": "getkq", "stream_type": "quiet"}),
    Sample("memcached", "GET hit: flags + value",
           _h("81 00 0000 04 00 0000 00000009 00000005 0000000000000001 00000000 68656c6c6f"),
           expect={"request_id": 5, "status": 0, "body_length": 5, "stream_type": "response"}),
    Sample("memcached", "GET miss",
           _h("81 00 0000 00 00 0001 00000009 00000005 0000000000000000 4e6f7420666f756e64"),
           expect={"status": 1, "stream_type": "response"}),
    Sample("memcached", "NOOP", _h("80 0a 0000 00 00 0000 00000000 00000007 0000000000000000"),
           expect={"heartbeat": True, "method": "noop"}),
    Sample("tars", "RequestPacket sayHello", _tars_frame(TARS_REQUEST_BODY), "request",
           expect={"request_id": 7, "service": "Hello.HelloServer.HelloObj", "method": "sayHello",
                   "timeout_ms": 3000, "headers": {"k": "v"}, "body_length": 5}),
    Sample("tars", "ResponsePacket iRet 0", _tars_frame(TARS_RESPONSE_BODY), "response",
           expect={"request_id": 7, "status": 0, "stream_type": "response", "body_length": 2}),
    Sample("kafka", "ApiVersions v3 request (flexible header)",
           _h("00 00 00 2b 0012 0003 00000001 0007 636f6e736f6c65"
              "00 12 6170616368652d6b61666b612d6a617661 06 332e372e30 00"),
           "request",
           expect={"request_id": 1, "service": "console", "method": "ApiVersions"}),
    Sample("kafka", "Metadata v1 request, null client id",
           _h("00 00 00 0e 0003 0001 00000002 ffff ffffffff"), "request",
           expect={"request_id": 2, "service": None, "method": "Metadata"}),
    Sample("kafka", "ApiVersions v0 response", _h("00 00 00 0a 00000001 0000 00000000"), "response",
           expect={"request_id": 1, "stream_type": "response", "body_length": 6}),
    Sample("redis", "MGET a b (redis-py)", b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n", "request",
           expect={"request_id": None, "method": "mget", "headers": {"key": "a"}, "stream_type": "request"}),
    Sample("redis", "MSET a 1 b 2", b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
           "request", expect={"method": "mset", "headers": {"key": "a"}}),
    Sample("redis", "inline PING", b"PING\r\n", "request", expect={"method": "ping", "headers": {}}),
    Sample("redis", "reply: nested array with a null bulk string",
           b"*2\r\n*1\r\n:1\r\n$-1\r\n", "response", expect={"status": 0, "stream_type": "response"}),
    Sample("redis", "reply: WRONGTYPE error",
           b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", "response",
           expect={"status": 2, "stream_type": "response"}),
    Sample("xexample", "request", _h("78 01 00 00000001 00000005 68656c6c6f"),
           expect={"request_id": 1, "stream_type": "request", "body_length": 5}),
    Sample("xexample", "response", _h("78 01 01 00000001 0000 00000002 6f6b"),
           expect={"request_id": 1, "status": 0, "stream_type": "response"}),
    Sample("xexample", "heartbeat", _h("78 00 00 00000002 00000000"),
           expect={"heartbeat": True, "request_id": 2}),
    Sample("xexample", "goaway", _h("78 02 01 00000000 0000 00000000"),
           expect={"goaway": True, "stream_type": "response"}),
]  # fmt: skip
