"""Real frames from third-party protocol libraries, and real peers to accept ours.

Two halves of our own code agreeing proves nothing: these captures come from the libraries that
speak each protocol in the wild, recorded on 127.0.0.1 by a relay between their own clients and
servers, and every `Capture.expect` is known without any protoc-x codec (what the library was
asked to send, what its own objects say, or what the protocol documentation fixes).

Capture functions (each starts what it needs and stops it again; a second or two each):

- `bolt_anthunder()`            anthunder AioClient -> AioListener (bolt v1)
- `thrift_thriftpy2()`          thriftpy2 client/server (framed, strict binary)
- `thrift_apache()`             Apache thrift generated client/processor (framed, strict binary)
- `memcached_binary(port)`      python-binary-memcached <-> memcached (binary protocol)
- `dubbo_ssl_python()`          dubbo-ssl-python DubboClient -> sofa-rpc-node dubbo server
- `dubbo_sofa_rpc_node()`       npm dubbo-remoting/hessian.js -> sofa-rpc-node dubbo server
- `boltv2_sofa_bolt_node()`     npm sofa-bolt-node 'bolt2' (CRC) -> sofa-rpc-node bolt server
- `kafka_captures(library)`     kafka-python / kafkajs / librdkafka producers -> KafkaBroker
                                (a broker written by hand: ApiVersions, Metadata, Produce)
- `redis_redis_py()`            redis-py (RESP2) <-> Debian's redis-server
- `tars_node()`                 npm @tars/rpc client -> @tars/rpc server (TarsNode)
- `thrift_unframed_thriftpy2()` thriftpy2 client/server (buffered transport: unframed, strict
                                binary)
- `thrift_unframed_apache()`    Apache thrift generated client/processor (buffered transport)

Frame lengths (framing.py, and beside their peers): `resp_frame_length` (RESP2 values, arrays
nested, inline commands), `tars_frame_length`, `thrift_unframed_length` (walks the struct);
`read_tars_packet(data)` reads a TARS packet's fields by hand.

Peers that accept (modified) frames:

- `anthunder_server()`          -> (host, port) of an anthunder AioListener (see HELLO_SERVICE)
- `thrift_server(kind)`         -> (host, port); kind "thriftpy2" or "apache"; THRIFT_IDL;
                                   transport="buffered": unframed
- `memcached_server()`          -> (host, port) of `memcached -B binary`
- `dubbo_server()`              -> DubboServer (unpacks as (host, port)); it reports how it
                                   decoded each request (`wait_request`) and what it answered
- `dubbo_decode(frames)`        dubbo-remoting's own decoder, without a server
- `bolt2_server()`              -> BoltServer (unpacks as (host, port)): sofa-rpc-node's
                                   server on sofa-bolt-node, bolt v1 and v2; reports each
                                   request it decoded, its answers, CRC failures
- `kafka_broker(advertise)`     -> KafkaBroker (unpacks as (host, port)); `requests`, `batches`
- `redis_server()`              -> (host, port) of Debian's redis-server (in memory)
- `tars_server(port)`           -> TarsServer (unpacks as (host, port)); `served(count)`: the
                                   calls it decoded
- `send_and_receive(host, port, data, min_bytes=None, timeout=5.0)` raw socket round trip

The node packages come from node/package-lock.json: `npm ci --prefix tests/peers/node`.
"""

from __future__ import annotations

from .anthunder_peer import (
    ECHO_PREFIX,
    HELLO_METHOD,
    HELLO_SERVICE,
    MISSING_SERVICE,
    PROTOBUF_CONTENT,
    SOFA_BOLT_NODE_PING,
    anthunder_server,
    bolt_anthunder,
    invoke_hello,
)
from .boltv2_peers import BoltServer, bolt2_server, boltv2_sofa_bolt_node
from .capture import Capture
from .node_process import NPM_INSTALL
from .dubbo_peers import (
    DubboServer,
    dubbo_decode,
    dubbo_server,
    dubbo_sofa_rpc_node,
    dubbo_ssl_python,
)
from .framing import (
    bolt_frame_length,
    boltv2_frame_length,
    dubbo_frame_length,
    kafka_frame_length,
    memcached_frame_length,
    split_frames,
    thrift_framed_length,
)
from .kafka_peers import KafkaBroker, kafka_broker, kafka_captures
from .memcached_peer import OPCODES as MEMCACHED_OPCODES
from .memcached_peer import memcached_binary, memcached_server
from .recording import RecordingRelay, recording_relay, send_and_receive
from .redis_peer import redis_redis_py, redis_server, resp_frame_length
from .tars_peers import (
    TarsServer,
    read_tars_packet,
    tars_frame_length,
    tars_node,
    tars_server,
)
from .thrift_peers import (
    THRIFT_IDL,
    apache_stubs,
    thrift_apache,
    thrift_server,
    thrift_thriftpy2,
    thrift_unframed_apache,
    thrift_unframed_length,
    thrift_unframed_thriftpy2,
    thriftpy2_module,
)

__all__ = [
    "BoltServer",
    "Capture",
    "DubboServer",
    "ECHO_PREFIX",
    "HELLO_METHOD",
    "HELLO_SERVICE",
    "KafkaBroker",
    "MEMCACHED_OPCODES",
    "MISSING_SERVICE",
    "NPM_INSTALL",
    "PROTOBUF_CONTENT",
    "RecordingRelay",
    "SOFA_BOLT_NODE_PING",
    "THRIFT_IDL",
    "TarsServer",
    "all_captures",
    "anthunder_server",
    "apache_stubs",
    "bolt_anthunder",
    "bolt2_server",
    "bolt_frame_length",
    "boltv2_frame_length",
    "boltv2_sofa_bolt_node",
    "dubbo_decode",
    "dubbo_frame_length",
    "dubbo_server",
    "dubbo_sofa_rpc_node",
    "dubbo_ssl_python",
    "invoke_hello",
    "kafka_broker",
    "kafka_captures",
    "kafka_frame_length",
    "memcached_binary",
    "memcached_frame_length",
    "memcached_server",
    "read_tars_packet",
    "recording_relay",
    "redis_redis_py",
    "redis_server",
    "resp_frame_length",
    "send_and_receive",
    "split_frames",
    "tars_frame_length",
    "tars_node",
    "tars_server",
    "thrift_apache",
    "thrift_framed_length",
    "thrift_server",
    "thrift_thriftpy2",
    "thrift_unframed_apache",
    "thrift_unframed_length",
    "thrift_unframed_thriftpy2",
    "thriftpy2_module",
]


def all_captures() -> dict[str, list[Capture]]:
    """Every capture function's frames, by protocol ("bolt", "boltv2", "thrift", "memcached",
    "dubbo", "kafka", "redis", "tars", "thrift_unframed"): the shipped spec that reads them."""
    with memcached_server() as (_host, port):
        memcached = memcached_binary(port)
    return {
        "bolt": bolt_anthunder(),
        "boltv2": boltv2_sofa_bolt_node(),
        "thrift": thrift_thriftpy2() + thrift_apache(),
        "memcached": memcached,
        "dubbo": dubbo_ssl_python() + dubbo_sofa_rpc_node(),
        "kafka": [
            c for lib in ("kafka-python", "kafkajs", "librdkafka") for c in kafka_captures(lib)
        ],
        "redis": redis_redis_py(),
        "tars": tars_node(),
        "thrift_unframed": thrift_unframed_thriftpy2() + thrift_unframed_apache(),
    }
