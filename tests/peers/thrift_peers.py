"""Thrift frames (framed transport, strict binary protocol) from thriftpy2 and Apache thrift;
their servers and clients also speak the buffered (unframed) transport.

Each library's own client talks through a recording relay to the same library's own server
processing (its processor, transports and protocol; only the accept loop is ours, because both
libraries' threaded servers cannot be stopped cleanly). The IDL is `calc.thrift` beside this
file; Apache's stubs are generated from it with the Debian `thrift` compiler at test time.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

from .capture import Capture
from .framing import thrift_framed_length
from .recording import LOOPBACK, TO_CLIENT, TO_SERVER, recording_relay

THRIFT_IDL = Path(__file__).with_name("calc.thrift")
SERVICE = "Calc"
PY_NAMESPACE = "protocx_peers_calc"

CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4
UNKNOWN_METHOD, INTERNAL_ERROR = 1, 6

# > 65535 UTF-8 bytes, with 2-, 3- and 4-byte UTF-8 sequences.
LONG_TEXT = ("Grüße, 世界! 😀 " * 4000) + "end"

_lock = threading.Lock()
_thriftpy2_module: ModuleType | None = None
_apache_package: ModuleType | None = None


def thriftpy2_module() -> ModuleType:
    """calc.thrift loaded by thriftpy2 (services Calc and CalcPlus, struct Point)."""
    global _thriftpy2_module
    with _lock:
        if _thriftpy2_module is None:
            import thriftpy2

            _thriftpy2_module = thriftpy2.load(
                str(THRIFT_IDL), module_name="protocx_peers_calc_thrift"
            )
        return _thriftpy2_module


def apache_stubs() -> ModuleType:
    """The package `thrift --gen py` makes from calc.thrift (Calc, CalcPlus, ttypes), generated
    once per process into a temporary directory."""
    global _apache_package
    with _lock:
        if _apache_package is None:
            out = Path(tempfile.mkdtemp(prefix="protocx-thrift-gen-"))
            subprocess.run(
                ["thrift", "--gen", "py", "-out", str(out), str(THRIFT_IDL)],
                check=True,
                capture_output=True,
                timeout=60,
            )
            sys.path.insert(0, str(out))
            package = importlib.import_module(PY_NAMESPACE)
            for name in ("Calc", "CalcPlus", "ttypes"):
                importlib.import_module(f"{PY_NAMESPACE}.{name}")
            _apache_package = package
        return _apache_package


# --- unframed messages ---------------------------------------------------------------------

#: fixed sizes of the binary protocol's scalar types (BOOL, BYTE, DOUBLE, I16, I32, I64, UUID)
_FIXED = {2: 1, 3: 1, 4: 8, 6: 2, 8: 4, 10: 8, 16: 16}
T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = 11, 12, 13, 14, 15


class _Short(Exception):
    """More bytes are needed."""


def _need(buf: bytes, end: int) -> None:
    if len(buf) < end:
        raise _Short


def _skip_value(buf: bytes, pos: int, ttype: int, depth: int = 0) -> int:
    """Where the binary-protocol value of type `ttype` at pos ends."""
    if depth > 64:
        raise ValueError("thrift value nested deeper than 64")
    if ttype in _FIXED:
        _need(buf, pos + _FIXED[ttype])
        return pos + _FIXED[ttype]
    if ttype == T_STRING:
        _need(buf, pos + 4)
        (size,) = struct.unpack_from(">i", buf, pos)
        if size < 0:
            raise ValueError(f"negative string length {size} at {pos}")
        _need(buf, pos + 4 + size)
        return pos + 4 + size
    if ttype == T_STRUCT:
        while True:
            _need(buf, pos + 1)
            ftype = buf[pos]
            if ftype == 0:  # STOP
                return pos + 1
            _need(buf, pos + 3)
            pos = _skip_value(buf, pos + 3, ftype, depth + 1)  # type, i16 field id, value
    if ttype in (T_MAP, T_SET, T_LIST):
        head = 6 if ttype == T_MAP else 5  # element type(s), i32 count
        _need(buf, pos + head)
        (count,) = struct.unpack_from(">i", buf, pos + head - 4)
        if count < 0:
            raise ValueError(f"negative container size {count} at {pos}")
        types = (buf[pos], buf[pos + 1]) if ttype == T_MAP else (buf[pos],)
        pos += head
        for _ in range(count):
            for etype in types:
                pos = _skip_value(buf, pos, etype, depth + 1)
        return pos
    raise ValueError(f"unknown thrift type {ttype} at {pos}")


def thrift_unframed_length(buf: bytes) -> int | None:
    """Bytes of the strict binary-protocol message at the start of buf (no frame length: the
    version word, name, seqid, then the struct walked to its STOP), or None if more bytes are
    needed."""
    try:
        _need(buf, 8)
        (version,) = struct.unpack_from(">I", buf, 0)
        if version & 0xFFFF0000 != 0x80010000:
            raise ValueError(f"not a strict binary thrift message: {buf[:4].hex()}")
        (name_len,) = struct.unpack_from(">i", buf, 4)
        if name_len < 0:
            raise ValueError(f"negative name length {name_len}")
        return _skip_value(buf, 8 + name_len + 4, T_STRUCT)
    except _Short:
        return None


# --- handlers -------------------------------------------------------------------------------


class _Handler:
    point: Callable[..., Any]

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, text: str) -> str:
        return text

    def describe(self, p, xs, weights, tags, ratio, flag, raw):  # noqa: ANN001
        return self.point(
            x=p.x + sum(xs),
            y=p.y + len(tags) + len(weights),
            label=f"{p.label}/{len(raw)}/{flag}",
        )

    def log(self, line: str) -> None:
        self.lines.append(line)


class _Thriftpy2Handler(_Handler):
    def __init__(self) -> None:
        super().__init__()
        self.point = thriftpy2_module().Point

    def fail(self, why: str) -> int:
        # thriftpy2's server drops the connection on an exception the IDL does not declare.
        from thriftpy2.thrift import TApplicationException

        raise TApplicationException(INTERNAL_ERROR, f"fail: {why}")


class _ApacheHandler(_Handler):
    def __init__(self) -> None:
        super().__init__()
        self.point = apache_stubs().ttypes.Point

    def fail(self, why: str) -> int:
        # Apache's generated processor turns this into INTERNAL_ERROR "Internal error".
        raise ValueError(why)


# --- servers --------------------------------------------------------------------------------


TRANSPORTS = ("framed", "buffered")


def _library_server(
    kind: str, multiplexed: bool, transport: str = "framed"
) -> tuple[Any, Callable[[socket.socket], Any]]:
    """The library's threaded server object, and how to wrap an accepted socket for it."""
    assert transport in TRANSPORTS, transport
    if kind == "thriftpy2":
        from thriftpy2.protocol import TBinaryProtocolFactory
        from thriftpy2.server import TThreadedServer
        from thriftpy2.thrift import TMultiplexedProcessor, TProcessor
        from thriftpy2.transport import TBufferedTransportFactory, TFramedTransportFactory
        from thriftpy2.transport import TSocket

        module = thriftpy2_module()
        processor = TProcessor(module.Calc, _Thriftpy2Handler())
        if multiplexed:
            mux = TMultiplexedProcessor()
            mux.register_processor(SERVICE, processor)
            processor = mux
        server = TThreadedServer(
            processor,
            None,
            itrans_factory=(
                TFramedTransportFactory() if transport == "framed" else TBufferedTransportFactory()
            ),
            iprot_factory=TBinaryProtocolFactory(),
        )
        return server, lambda sock: TSocket(sock=sock, socket_timeout=None)
    if kind == "apache":
        from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
        from thrift.server.TServer import TThreadedServer
        from thrift.TMultiplexedProcessor import TMultiplexedProcessor
        from thrift.transport.TSocket import TSocket
        from thrift.transport.TTransport import TBufferedTransportFactory, TFramedTransportFactory

        stubs = apache_stubs()
        processor = stubs.Calc.Processor(_ApacheHandler())
        if multiplexed:
            mux = TMultiplexedProcessor()
            mux.registerProcessor(SERVICE, processor)
            mux.registerDefault(processor)
            processor = mux
        factory = (
            TFramedTransportFactory() if transport == "framed" else TBufferedTransportFactory()
        )
        server = TThreadedServer(processor, None, factory, TBinaryProtocolFactory())

        def wrap(sock: socket.socket) -> Any:
            transport = TSocket()
            transport.setHandle(sock)
            return transport

        return server, wrap
    raise ValueError(f"unknown thrift server kind {kind!r}")


@contextlib.contextmanager
def thrift_server(
    kind: str = "thriftpy2", multiplexed: bool = False, transport: str = "framed"
) -> Iterator[tuple[str, int]]:
    """A thrift server of `kind` ("thriftpy2" or "apache") serving service Calc of THRIFT_IDL
    on 127.0.0.1 (free port), framed (or buffered) transport, strict binary protocol.

    multiplexed=True registers Calc under the name "Calc" in the library's multiplexed
    processor (Apache's also answers plain names; thriftpy2's only "Calc:<method>").
    Calc: add(a,b)=a+b, echo(text)=text, describe(...)=Point, log (oneway), fail(why) raises
    (thriftpy2: INTERNAL_ERROR "fail: <why>"; Apache: INTERNAL_ERROR "Internal error").
    """
    server, wrap = _library_server(kind, multiplexed, transport)
    listener = socket.create_server((LOOPBACK, 0))
    stopping = threading.Event()

    def serve_one(sock: socket.socket) -> None:
        with contextlib.suppress(Exception):
            server.handle(wrap(sock))

    def accept_loop() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(
                target=serve_one, args=(client,), name=f"thrift-{kind}-conn", daemon=True
            ).start()

    thread = threading.Thread(target=accept_loop, name=f"thrift-{kind}-accept", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stopping.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=2)


# --- clients --------------------------------------------------------------------------------


class _Thriftpy2Client:
    def __init__(
        self,
        address: tuple[str, int],
        service: str,
        multiplexed: str | None = None,
        transport: str = "framed",
    ):
        from thriftpy2.protocol import TBinaryProtocolFactory, TMultiplexedProtocolFactory
        from thriftpy2.thrift import TClient
        from thriftpy2.transport import TBufferedTransport, TFramedTransport, TSocket

        module = thriftpy2_module()
        sock = TSocket(*address, socket_timeout=5000)
        self.transport = {"framed": TFramedTransport, "buffered": TBufferedTransport}[transport](
            sock
        )
        self.transport.open()
        factory: Any = TBinaryProtocolFactory()
        if multiplexed:
            factory = TMultiplexedProtocolFactory(factory, multiplexed)
        self.client = TClient(getattr(module, service), factory.get_protocol(self.transport))

    def close(self) -> None:
        self.transport.close()


class _ApacheClient:
    def __init__(
        self,
        address: tuple[str, int],
        service: str,
        multiplexed: str | None = None,
        transport: str = "framed",
    ):
        from thrift.protocol.TBinaryProtocol import TBinaryProtocol
        from thrift.protocol.TMultiplexedProtocol import TMultiplexedProtocol
        from thrift.transport.TSocket import TSocket
        from thrift.transport.TTransport import TBufferedTransport, TFramedTransport

        stubs = apache_stubs()
        sock = TSocket(*address)
        sock.setTimeout(5000)
        self.transport = {"framed": TFramedTransport, "buffered": TBufferedTransport}[transport](
            sock
        )
        self.transport.open()
        protocol: Any = TBinaryProtocol(self.transport)
        if multiplexed:
            protocol = TMultiplexedProtocol(protocol, multiplexed)
        self.client = getattr(stubs, service).Client(protocol)

    def close(self) -> None:
        self.transport.close()


# --- expectations from the libraries' own serializers ----------------------------------------


def _thriftpy2_struct(obj: Any) -> bytes:
    from thriftpy2.protocol import TBinaryProtocolFactory
    from thriftpy2.utils import serialize

    return serialize(obj, TBinaryProtocolFactory())


def _apache_struct(obj: Any) -> bytes:
    from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
    from thrift.TSerialization import serialize

    return serialize(obj, TBinaryProtocolFactory())


def _message_expect(
    data: bytes,
    name: str,
    mtype: int,
    body: bytes,
    seqid: int = 0,
    status: int | None = None,
) -> dict[str, Any]:
    service, _, method = name.rpartition(":")
    expect: dict[str, Any] = {
        "request_id": seqid,
        "stream_type": {CALL: "request", ONEWAY: "oneway"}.get(mtype, "response"),
        "heartbeat": False,
        "service": service or None,
        "method": method,
        "headers": {},
        "body": body,
        "length": len(data),
        "message_type": mtype,
        "name": name,
    }
    if mtype in (REPLY, EXCEPTION):
        expect["status"] = 0 if mtype == REPLY else status
    return expect


def _check_message(
    data: bytes, name: str, mtype: int, body: bytes, transport: str = "framed"
) -> None:
    """The frame must be the library's own serialization: header fields plus that struct (after
    a frame length with the framed transport)."""
    encoded = name.encode()
    head = struct.pack(">iI", -0x7FFF0000 | mtype, len(encoded)) + encoded
    head += struct.pack(">i", 0)
    want = head + body
    if transport == "framed":
        want = struct.pack(">I", len(want)) + want
    if data != want:
        raise AssertionError(f"{name}: wire {data[:48].hex()}... != library {want[:48].hex()}...")


class _Recorder:
    """Collects (request, response) captures of one library through one relay."""

    def __init__(
        self, library: str, relay: Any, captures: list[Capture], transport: str = "framed"
    ):
        self.library = library
        self.relay = relay
        self.captures = captures
        self.transport = transport
        self.prefix = "thrift" if transport == "framed" else "thrift_unframed"

    def request(self, label: str, name: str, mtype: int, body: bytes) -> None:
        (data,) = self.relay.take(TO_SERVER)
        _check_message(data, name, mtype, body, self.transport)
        self.captures.append(
            Capture(
                f"{self.prefix}/{self.library}/{label}",
                "request",
                data,
                _message_expect(data, name, mtype, body),
            )
        )

    def response(
        self, label: str, name: str, mtype: int, body: bytes, status: int | None = None
    ) -> None:
        (data,) = self.relay.take(TO_CLIENT)
        _check_message(data, name, mtype, body, self.transport)
        self.captures.append(
            Capture(
                f"{self.prefix}/{self.library}/{label}",
                "response",
                data,
                _message_expect(data, name, mtype, body, status=status),
            )
        )


def _capture_library(library: str, transport: str = "framed") -> list[Capture]:
    frame_length = thrift_framed_length if transport == "framed" else thrift_unframed_length
    if library == "thriftpy2":
        module = thriftpy2_module()
        calc, calc_plus, point_cls = module.Calc, module.CalcPlus, module.Point
        make_client: Any = _Thriftpy2Client
        encode = _thriftpy2_struct
        from thriftpy2.thrift import TApplicationException
    else:
        stubs = apache_stubs()
        calc, calc_plus, point_cls = stubs.Calc, stubs.CalcPlus, stubs.ttypes.Point
        make_client = _ApacheClient
        encode = _apache_struct
        from thrift.Thrift import TApplicationException

    def args(service: Any, method: str, **values: Any) -> bytes:
        obj = getattr(service, f"{method}_args")()
        for key, value in values.items():
            setattr(obj, key, value)
        return encode(obj)

    def result(method: str, value: Any) -> bytes:
        obj = getattr(calc, f"{method}_result")()
        obj.success = value
        return encode(obj)

    captures: list[Capture] = []
    with (
        thrift_server(library, transport=transport) as server,
        recording_relay(server, frame_length) as relay,
    ):
        rec = _Recorder(library, relay, captures, transport)
        client = make_client(relay.address, "Calc", transport=transport)
        try:
            assert client.client.add(3, 4) == 7
            rec.request("call", "add", CALL, args(calc, "add", a=3, b=4))
            rec.response("reply", "add", REPLY, result("add", 7))

            assert client.client.echo(LONG_TEXT) == LONG_TEXT
            rec.request("call-long-string", "echo", CALL, args(calc, "echo", text=LONG_TEXT))
            rec.response("reply-long-string", "echo", REPLY, result("echo", LONG_TEXT))

            point = point_cls(x=1, y=2, label="origin")
            values = dict(
                p=point,
                xs=[10, -20, 30],
                weights={"a": 1, "b": 1 << 40},
                tags={"red"},  # one element: set order cannot vary between serializations
                ratio=0.25,
                flag=True,
                raw=b"\x00\xff\x80bytes",
            )
            answer = client.client.describe(*values.values())
            rec.request("call-struct-args", "describe", CALL, args(calc, "describe", **values))
            rec.response("reply-struct", "describe", REPLY, result("describe", answer))

            client.client.log("a oneway line")
            rec.request("oneway", "log", ONEWAY, args(calc, "log", line="a oneway line"))
            relay.assert_silent(TO_CLIENT, wait=0.2)

            with contextlib.suppress(TApplicationException):
                client.client.fail("boom")
            rec.request("call-fail", "fail", CALL, args(calc, "fail", why="boom"))
            message = "fail: boom" if library == "thriftpy2" else "Internal error"
            rec.response(
                "exception-internal-error",
                "fail",
                EXCEPTION,
                encode(TApplicationException(INTERNAL_ERROR, message)),
                status=INTERNAL_ERROR,
            )
        finally:
            client.close()

        plus = make_client(relay.address, "CalcPlus", transport=transport)
        try:
            with contextlib.suppress(TApplicationException):
                plus.client.sub(9, 1)
            rec.request("call-unknown-method", "sub", CALL, args(calc_plus, "sub", a=9, b=1))
            # thriftpy2 sends no message for UNKNOWN_METHOD; Apache says "Unknown function sub".
            message = None if library == "thriftpy2" else "Unknown function sub"
            rec.response(
                "exception-unknown-method",
                "sub",
                EXCEPTION,
                encode(TApplicationException(UNKNOWN_METHOD, message)),
                status=UNKNOWN_METHOD,
            )
        finally:
            plus.close()

    with (
        thrift_server(library, multiplexed=True, transport=transport) as server,
        recording_relay(server, frame_length) as relay,
    ):
        rec = _Recorder(library, relay, captures, transport)
        mux = make_client(relay.address, "Calc", multiplexed=SERVICE, transport=transport)
        try:
            assert mux.client.add(5, 6) == 11
            rec.request("call-multiplexed", "Calc:add", CALL, args(calc, "add", a=5, b=6))
            # Both libraries answer with the bare method name, without "Calc:".
            rec.response("reply-multiplexed", "add", REPLY, result("add", 11))

            mux.client.log("multiplexed oneway")
            rec.request(
                "oneway-multiplexed",
                "Calc:log",
                ONEWAY,
                args(calc, "log", line="multiplexed oneway"),
            )
            relay.assert_silent(TO_CLIENT, wait=0.2)
        finally:
            mux.close()

        if library == "thriftpy2":
            # Apache's TMultiplexedProcessor drops the connection instead of answering.
            nope = make_client(relay.address, "Calc", multiplexed="Nope", transport=transport)
            try:
                with contextlib.suppress(TApplicationException):
                    nope.client.add(1, 1)
                rec.request("call-unknown-service", "Nope:add", CALL, args(calc, "add", a=1, b=1))
                rec.response(
                    "exception-unknown-service",
                    "add",
                    EXCEPTION,
                    encode(TApplicationException(UNKNOWN_METHOD)),
                    status=UNKNOWN_METHOD,
                )
            finally:
                nope.close()
    return captures


def thrift_thriftpy2() -> list[Capture]:
    """Frames from thriftpy2's TClient and its TProcessor / TMultiplexedProcessor."""
    return _capture_library("thriftpy2")


def thrift_apache() -> list[Capture]:
    """Frames from Apache thrift's generated Client and Processor / TMultiplexedProcessor."""
    return _capture_library("apache")


def thrift_unframed_thriftpy2() -> list[Capture]:
    """thrift_thriftpy2()'s calls over the buffered transport: strict binary messages without a
    frame length (the `thrift_unframed` protocol)."""
    return _capture_library("thriftpy2", "buffered")


def thrift_unframed_apache() -> list[Capture]:
    """thrift_apache()'s calls over the buffered transport (the `thrift_unframed` protocol)."""
    return _capture_library("apache", "buffered")
