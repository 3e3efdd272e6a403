"""A real TARS server and client: TarsNode, npm @tars/rpc 2.0.15 with @tars/stream 2.0.3.

The node side lives in node/tars_peer.js (servant SERVANT, `string sayHello(string s)` answering
"hello " + s); its packages are pinned by node/package-lock.json and installed with
`npm ci --prefix tests/peers/node` (node_process.NPM_INSTALL).

`tars_node()` records that client's and server's frames through a recording relay; its client
is CALLS_SCRIPT (below, run with `node -e`), which makes calls tars_peer.js's client cannot:
oneway, other functions, no argument, a context, a timeout per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from .capture import Capture
from .node_process import NODE, NODE_DIR, check_node, node_process
from .recording import LOOPBACK, TO_CLIENT, TO_SERVER, free_port, recording_relay

PEER_SCRIPT = NODE_DIR / "tars_peer.js"

SERVANT = "Test.Hello.HelloObj"
METHOD = "sayHello"
TARS_STRING1, TARS_STRING4 = 6, 7  # TARS TLV type codes: string with a u8 / u32 length


def tars_string(tag: int, value: str) -> bytes:
    """One TARS TLV string field (what @tars/stream's writeString writes), tag < 15."""
    data = value.encode("utf-8")
    if len(data) <= 0xFF:
        return bytes([tag << 4 | TARS_STRING1, len(data)]) + data
    return bytes([tag << 4 | TARS_STRING4]) + struct.pack(">I", len(data)) + data


def say_hello(value: str) -> str:
    """What the node server answers to sayHello(value)."""
    return "hello " + value


@dataclass
class TarsServer:
    """A running @tars/rpc server on 127.0.0.1:port serving SERVANT. Unpacks as (host, port)."""

    host: str
    port: int
    process: subprocess.Popen
    _events: "queue.Queue[dict[str, Any]]" = field(default_factory=queue.Queue)
    stderr: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.host, self.port))

    def served(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The first `count` calls the server decoded: {"id", "servant", "func", "arg"}."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"TARS server reported {len(out)} of {count} calls: {out}; "
                    f"stderr: {''.join(self.stderr)[-500:]}"
                )
            with contextlib.suppress(queue.Empty):
                out.append(self._events.get(timeout=min(remaining, 0.1)))
        return out


@contextlib.contextmanager
def tars_server(port: int) -> Iterator[TarsServer]:
    """@tars/rpc's server (node) on 127.0.0.1:port; see TarsServer."""
    check_node("TARS", "@tars/rpc")
    with node_process(
        ["--no-warnings", str(PEER_SCRIPT), "server", str(port)], "node TARS server"
    ) as (process, events, stderr, first):
        if first != {"event": "listening", "port": port}:
            raise RuntimeError(f"unexpected first line from node: {first}")
        yield TarsServer(LOOPBACK, port, process, events, stderr)


async def tars_client(
    port: int, texts: list[str], timeout: float = 20.0, check: bool = True
) -> list[dict[str, Any]]:
    """@tars/rpc's client (node) calls sayHello(text) for every text at once, pipelined on one
    connection to 127.0.0.1:port; one dict per call: {"id", "arg", "result"} or
    {"id", "arg", "error": {"code", "message"}}; with `check`, an error is an AssertionError.
    A subprocess of the running event loop, so
    in-process proxies and upstreams keep serving while it runs."""
    check_node("TARS", "@tars/rpc")
    process = await asyncio.create_subprocess_exec(
        NODE,
        "--no-warnings",
        str(PEER_SCRIPT),
        "client",
        LOOPBACK,
        str(port),
        *texts,
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise
    lines = [json.loads(line) for line in out.decode("utf-8").splitlines() if line.strip()]
    if len(lines) != len(texts) or (check and process.returncode != 0):
        raise AssertionError(f"TARS client printed {lines}; stderr: {err.decode()[-500:]}")
    return lines


# --- frames -----------------------------------------------------------------------------------


def tars_frame_length(buf: bytes) -> int | None:
    """Bytes of the TARS packet at the start of buf: a u32 length that counts itself."""
    if len(buf) < 4:
        return None
    (size,) = struct.unpack_from(">I", buf, 0)
    if size < 4:
        raise ValueError(f"not a TARS packet: length {size}")
    return size


def _tars_int(buf: bytes, pos: int, kind: int) -> tuple[int, int]:
    if kind == 12:  # zero
        return 0, pos
    size = {0: 1, 1: 2, 2: 4, 3: 8}[kind]
    return int.from_bytes(buf[pos : pos + size], "big", signed=True), pos + size


def _tars_head(buf: bytes, pos: int) -> tuple[int, int, int]:
    tag, kind = buf[pos] >> 4, buf[pos] & 0x0F
    pos += 1
    if tag == 15:
        tag, pos = buf[pos], pos + 1
    return tag, kind, pos


def _tars_value(buf: bytes, pos: int, kind: int) -> tuple[Any, int]:
    """One TARS TLV value of type `kind` at pos (after its head): ints, strings (str, or bytes
    if not UTF-8), simple lists (bytes), maps (dict), lists, structs ({tag: value})."""
    if kind in (0, 1, 2, 3, 12):
        return _tars_int(buf, pos, kind)
    if kind in (4, 5):
        size = 4 if kind == 4 else 8
        return struct.unpack_from(">f" if kind == 4 else ">d", buf, pos)[0], pos + size
    if kind in (6, 7):
        if kind == 6:
            size, pos = buf[pos], pos + 1
        else:
            (size,), pos = struct.unpack_from(">I", buf, pos), pos + 4
        raw = bytes(buf[pos : pos + size])
        try:
            return raw.decode("utf-8"), pos + size
        except UnicodeDecodeError:
            return raw, pos + size
    if kind in (8, 9):
        _, count_kind, pos = _tars_head(buf, pos)
        count, pos = _tars_int(buf, pos, count_kind)
        items = []
        for _ in range(count * (2 if kind == 8 else 1)):
            _, item_kind, pos = _tars_head(buf, pos)
            item, pos = _tars_value(buf, pos, item_kind)
            items.append(item)
        if kind == 8:
            return dict(zip(items[0::2], items[1::2])), pos
        return items, pos
    if kind == 10:
        fields: dict[int, Any] = {}
        while True:
            tag, item_kind, pos = _tars_head(buf, pos)
            if item_kind == 11:
                return fields, pos
            fields[tag], pos = _tars_value(buf, pos, item_kind)
    if kind == 13:  # simple list: a head of type 0 (byte), a count, the bytes
        _, _, pos = _tars_head(buf, pos)
        _, count_kind, pos = _tars_head(buf, pos)
        count, pos = _tars_int(buf, pos, count_kind)
        return bytes(buf[pos : pos + count]), pos + count
    raise ValueError(f"TARS type {kind} at {pos}")


def read_tars_packet(data: bytes) -> dict[int, Any]:
    """The TLV fields of a whole TARS packet by tag, read by hand from the TARS encoding (the
    u32 length first): RequestPacket 1 iVersion, 2 cPacketType, 3 iMessageType, 4 iRequestId,
    5 sServantName, 6 sFuncName, 7 sBuffer, 8 iTimeout, 9 context, 10 status; ResponsePacket
    1 iVersion, 2 cPacketType, 3 iRequestId, 4 iMessageType, 5 iRet, 6 sBuffer, 7 status,
    8 sResultDesc, 9 context."""
    if tars_frame_length(data) != len(data):
        raise ValueError(f"not one whole TARS packet: {data[:16].hex()}")
    fields: dict[int, Any] = {}
    pos = 4
    while pos < len(data):
        tag, kind, pos = _tars_head(data, pos)
        fields[tag], pos = _tars_value(data, pos, kind)
    return fields


# --- captures ---------------------------------------------------------------------------------

#: @tars/rpc's client making the calls it is given one after the other (each awaited), on one
#: connection: `node -e SCRIPT HOST PORT SERVANT`, its stdin a JSON list of {"func", "arg"
#: (a string written as tag 1, or null: no argument), "timeout" (ms), "oneway", "context"}.
#: One JSON line per call: the request id and timeout the client used, and the answer's iRet,
#: sResultDesc and sBuffer (hex), or the error it raised (a oneway call always "fails").
CALLS_SCRIPT = r"""
'use strict';
const TarsStream = require('@tars/stream');
const Tars = require('@tars/rpc');
const [host, port, servant] = process.argv.slice(1);
const callsJson = require('fs').readFileSync(0, 'utf8');
const emit = obj => process.stdout.write(JSON.stringify(obj) + '\n');
const hex = b => (b && b.toNodeBuffer ? b.toNodeBuffer() : Buffer.alloc(0)).toString('hex');
function Proxy() { this._name = undefined; this._worker = undefined; }
Proxy.prototype.setTimeout = function (t) { this._worker.timeout = t; };
Proxy.prototype.getTimeout = function () { return this._worker.timeout; };
async function main() {
  const comm = Tars.client;
  const prx = comm.stringToProxy(Proxy, `${servant}@tcp -h ${host} -p ${port} -t 60000`);
  for (const call of JSON.parse(callsJson)) {
    prx.setTimeout(call.timeout);
    const out = new TarsStream.TarsOutputStream();
    if (call.arg !== null) out.writeString(1, call.arg);
    const property = {};
    if (call.oneway) property.packetType = 1;
    if (call.context) property.context = call.context;
    try {
      const data = await prx._worker.tars_invoke(call.func, out.getBinBuffer(), property);
      const request = data.request.request || data.request;
      const response = data.response;
      emit({ id: request.iRequestId, timeout: request.iTimeout, ret: response.iRet,
             desc: response.sResultDesc, body: hex(response.sBuffer) });
    } catch (err) {
      const request = err.request ? err.request.request || err.request : {};
      const response = err.response || {};
      emit({ id: request.iRequestId, timeout: request.iTimeout, ret: response.iRet,
             desc: response.sResultDesc, body: hex(response.sBuffer),
             error: err.error ? { code: err.error.code, message: err.error.message } : {} });
    }
  }
  comm.disconnect && comm.disconnect();
  process.exit(0);
}
main().catch(e => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
"""

FUNC_NOT_FOUND, DECODE_ERROR = -3, -1  # @tars/rpc's TarsError.SERVER codes
PING = "tars_ping"
# > 65535 UTF-8 bytes (a u32-length string, and an sBuffer over 64 KiB)
LONG_TEXT = "Grüße, 世界! 😀 " * 4000 + "end"


def _tars_calls(port: int, calls: list[dict[str, Any]], timeout: float = 20.0) -> list[dict]:
    """@tars/rpc's client makes `calls` (see CALLS_SCRIPT) to 127.0.0.1:port; what it saw."""
    check_node("TARS", "@tars/rpc")
    done = subprocess.run(
        [
            NODE,
            "--no-warnings",
            "-e",
            CALLS_SCRIPT,
            LOOPBACK,
            str(port),
            SERVANT,
        ],
        input=json.dumps(calls),
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or len(lines) != len(calls):
        raise AssertionError(f"TARS client printed {lines}; stderr: {done.stderr[-500:]}")
    return lines


def tars_node() -> list[Capture]:
    """Frames of npm @tars/rpc's client and server (TarsNode), one call after the other on one
    connection: sayHello (with a context, non-ASCII, an argument over 64 KiB, various
    timeouts), a oneway sayHello (no answer), tars_ping (the heartbeat; the server answers
    int32 0), an unknown function (iRet -3) and a call without its argument (iRet -1, with a
    description)."""
    calls: list[dict[str, Any]] = [
        {"label": "hello", "func": METHOD, "arg": "world", "timeout": 5000},
        {
            "label": "hello-context",
            "func": METHOD,
            "arg": "größe 世界 😀",
            "timeout": 1500,
            "context": {"trace-id": "0af7651916cd43dd", "lang": "ñ"},
        },
        {
            "label": "oneway",
            "func": METHOD,
            "arg": "fire and forget",
            "timeout": 3000,
            "oneway": True,
        },
        {"label": "hello-long", "func": METHOD, "arg": LONG_TEXT, "timeout": 60000},
        {"label": "heartbeat", "func": PING, "arg": None, "timeout": 3000},
        {"label": "unknown-function", "func": "sayBye", "arg": "x", "timeout": 5000},
        {"label": "missing-argument", "func": METHOD, "arg": None, "timeout": 5000},
    ]
    captures: dict[tuple[int, int], Capture] = {}  # (call, 0 request / 1 response): wire order
    with (
        tars_server(free_port()) as server,
        recording_relay((server.host, server.port), tars_frame_length) as relay,
    ):
        seen = _tars_calls(
            relay.port, [{k: v for k, v in c.items() if k != "label"} for c in calls]
        )
        # what the server reports: each sayHello it decoded, and each ping
        dispatched = [
            (c, s)
            for c, s in zip(calls, seen)
            if c["func"] == PING or (c["func"] == METHOD and c["arg"] is not None)
        ]
        served = server.served(len(dispatched))
        requests = relay.take(TO_SERVER, len(calls))
        answered = [(i, c, s) for i, (c, s) in enumerate(zip(calls, seen)) if not c.get("oneway")]
        responses = relay.take(TO_CLIENT, len(answered))  # none for the oneway call
        relay.assert_silent(TO_SERVER, wait=0.05)
        relay.assert_silent(TO_CLIENT, wait=0.0)
    assert [(s["event"], s["id"], s.get("arg")) for s in served] == [
        ("ping", s["id"], None) if c["func"] == PING else ("request", s["id"], c["arg"])
        for c, s in dispatched
    ], served
    for index, (call, got, data) in enumerate(zip(calls, seen, requests)):
        body = tars_string(1, call["arg"]) if call["arg"] is not None else b""
        expect = {
            "request_id": got["id"],
            "stream_type": "oneway" if call.get("oneway") else "request",
            "heartbeat": call["func"] == PING,
            "timeout_ms": got["timeout"],
            "service": SERVANT,
            "method": call["func"],
            "headers": dict(call.get("context", {})),
            "body": body,
            "length": len(data),
            "version": 1,
            "packet_type": 1 if call.get("oneway") else 0,
            "message_type": 0,
        }
        assert got["timeout"] == call["timeout"], (call, got)
        _check_packet(data, expect, REQUEST_TAGS)
        name = f"tars/tars-rpc/{call['label']}-request"
        captures[index, 0] = Capture(name, "request", data, expect)
    for (index, call, got), data in zip(answered, responses):
        status = got["ret"]
        expect = {
            "request_id": got["id"],
            "stream_type": "response",
            "heartbeat": False,  # a tars_ping's answer is a plain ResponsePacket
            "status": status,
            "service": None,
            "method": None,
            "headers": {},
            "body": bytes.fromhex(got["body"]),
            "length": len(data),
            "version": 1,
            "packet_type": 0,
            "message_type": 0,
            "result_desc": got["desc"],
        }
        if call["func"] == PING:
            assert expect["body"] == TARS_ZERO0, got  # int32 0 at tag 0
        elif call["func"] != METHOD:
            assert status == FUNC_NOT_FOUND and got["error"]["code"] == status, got
        elif call["arg"] is None:
            assert status == DECODE_ERROR and got["error"]["code"] == status, got
            assert got["desc"].startswith("BindAdapter Exception:"), got
        else:
            assert status == 0 and expect["body"] == tars_string(0, say_hello(call["arg"])), got
        _check_packet(data, expect, RESPONSE_TAGS)
        name = f"tars/tars-rpc/{call['label']}-response"
        captures[index, 1] = Capture(name, "response", data, expect)
    return [captures[key] for key in sorted(captures)]


TARS_ZERO0 = b"\x0c"  # a TARS int 0 at tag 0: the head alone (type 12, "zero")
#: RequestPacket and ResponsePacket fields, by the expect key they carry
REQUEST_TAGS = {
    "version": 1,
    "packet_type": 2,
    "message_type": 3,
    "request_id": 4,
    "service": 5,
    "method": 6,
    "body": 7,
    "timeout_ms": 8,
    "headers": 9,
}
RESPONSE_TAGS = {
    "version": 1,
    "packet_type": 2,
    "request_id": 3,
    "message_type": 4,
    "status": 5,
    "body": 6,
    "result_desc": 8,
    "headers": 9,
}


def _check_packet(data: bytes, expect: dict[str, Any], tags: dict[str, int]) -> None:
    """The packet on the wire, read by hand, says what the client and server reported."""
    fields = read_tars_packet(data)
    for key, tag in tags.items():
        if fields.get(tag) != expect[key]:
            raise AssertionError(f"tag {tag} ({key}): wire {fields.get(tag)!r} != {expect[key]!r}")
