"""A real Redis (Debian's redis-server) on 127.0.0.1, for the tests that send redis-py's
commands through the proxy, and redis-py's frames captured on their way to it
(`redis_redis_py()`; RESP2 frames cut by `resp_frame_length`)."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from typing import Any, ContextManager, Optional

from .capture import Capture
from .recording import LOOPBACK, TO_CLIENT, TO_SERVER, recording_relay
from .servers import server_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def command(*words: bytes) -> bytes:
    """A command as clients send it: a RESP array of bulk strings."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def _answers_ping(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(16).startswith(b"+PONG")


def redis_server(port: Optional[int] = None) -> ContextManager[tuple[str, int]]:
    """redis-server on a free loopback port, in memory only (no RDB, no AOF), in the
    foreground; stopped on exit."""
    return server_process(
        "redis-server",
        lambda p: [
            REDIS_SERVER, "--port", str(p), "--bind", LOOPBACK, "--save", "", "--appendonly",
            "no", "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
        ],  # fmt: skip
        _answers_ping,
        port,
    )


# --- frames -----------------------------------------------------------------------------------

RESP_SCALARS = b"+-:"  # simple string, error, integer: a type byte and a line


def _resp_value_end(buf: bytes, pos: int) -> Optional[int]:
    """Where the RESP2 value at buf[pos:] ends, or None if more bytes are needed."""
    if pos >= len(buf):
        return None
    kind = buf[pos]
    if kind not in RESP_SCALARS and kind not in b"$*":
        raise ValueError(f"not a RESP2 value: type byte {kind:#04x} at {pos}")
    line_end = buf.find(b"\r\n", pos + 1)
    if line_end < 0:
        return None
    if kind in RESP_SCALARS:
        return line_end + 2
    size = int(buf[pos + 1 : line_end])
    if kind == ord("$"):
        if size < 0:  # "$-1\r\n": the null bulk string
            return line_end + 2
        end = line_end + 2 + size + 2
        if len(buf) < end:
            return None
        if buf[end - 2 : end] != b"\r\n":
            raise ValueError(f"bulk string of {size} bytes at {pos} does not end with CRLF")
        return end
    pos = line_end + 2  # "*-1\r\n" (the null array) and "*0\r\n" have no elements
    for _ in range(max(size, 0)):
        end = _resp_value_end(buf, pos)
        if end is None:
            return None
        pos = end
    return pos


def resp_frame_length(buf: bytes) -> Optional[int]:
    """Bytes of the RESP2 frame at the start of buf (a value, arrays nested, or an inline
    command: a line starting with a letter), or None if more bytes are needed."""
    if not buf:
        return None
    if chr(buf[0]).isascii() and chr(buf[0]).isalpha():
        line_end = buf.find(b"\r\n")
        return None if line_end < 0 else line_end + 2
    end = _resp_value_end(buf, 0)
    return end


def resp_encode(value: Any) -> bytes:
    """A reply as Redis writes it, for the values the captures expect: bytes as a bulk
    string, None as the null bulk string, int as an integer, Simple(...) as a simple string,
    Error(...) as an error, NullArray as "*-1", list as an array."""
    if isinstance(value, Simple):
        return b"+" + value.text.encode() + b"\r\n"
    if isinstance(value, Error):
        return b"-" + value.text.encode() + b"\r\n"
    if value is NULL_ARRAY:
        return b"*-1\r\n"
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bool):
        raise TypeError("RESP2 has no booleans")
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(resp_encode(v) for v in value)
    raise TypeError(f"no RESP2 encoding for {value!r}")


@dataclass(frozen=True)
class Simple:
    text: str


@dataclass(frozen=True)
class Error:
    text: str

    @property
    def code(self) -> str:
        return self.text.split(" ", 1)[0]


NULL_ARRAY = object()

#: specs/redis.xproto's status map: 0 for every reply but an error; an error by its first word,
#: 1 (ERR and any other) where the word is not listed
ERROR_STATUS = {
    "WRONGTYPE": 2,
    "NOAUTH": 3,
    "NOPERM": 3,
    "WRONGPASS": 3,
    "BUSY": 4,
    "LOADING": 4,
    "MASTERDOWN": 4,
    "TRYAGAIN": 4,
    "NOSCRIPT": 5,
}

#: > 64 KiB, so that one frame spans many TCP segments (and several relay reads)
LARGE_VALUE = bytes(range(256)) * 400 + b"end"


# --- captures ---------------------------------------------------------------------------------


class _RespRecorder:
    """Takes redis-py's commands and Redis's replies from the relay, one at a time, and checks
    each against what was asked (the command's words) and what redis-py returned."""

    def __init__(self, relay: Any, captures: list[Capture]):
        self.relay = relay
        self.captures = captures

    def request(self, label: str, words: list[bytes], key: Optional[bytes] = None) -> None:
        (data,) = self.relay.take(TO_SERVER)
        if data != command(*words):
            raise AssertionError(f"{label}: wire {data[:64]!r} != {command(*words)[:64]!r}")
        expect: dict[str, Any] = {
            "request_id": None,  # RESP has none: replies come back in order
            "stream_type": "request",
            "heartbeat": False,
            "service": None,
            "method": words[0].decode().lower(),
            "headers": {"key": key.decode()} if key is not None else {},
            "length": len(data),
            "kind": "*",
            "args": list(words),
        }
        self.captures.append(Capture(f"redis/redis-py/{label}-request", "request", data, expect))

    def response(self, label: str, value: Any) -> None:
        (data,) = self.relay.take(TO_CLIENT)
        want = resp_encode(value)
        if data != want:
            raise AssertionError(f"{label}: wire {data[:64]!r} != {want[:64]!r}")
        error = value.code if isinstance(value, Error) else None
        expect: dict[str, Any] = {
            "request_id": None,
            "stream_type": "response",
            "heartbeat": False,
            "status": 0 if error is None else ERROR_STATUS.get(error, 1),
            "service": None,
            "method": None,  # a reply names no command
            "headers": {},
            "length": len(data),
            "kind": chr(data[0]),
        }
        if error is not None:
            expect["error"] = value.text
        self.captures.append(Capture(f"redis/redis-py/{label}-response", "response", data, expect))

    def call(self, label: str, words: list[bytes], key: Optional[bytes], value: Any) -> None:
        self.request(label, words, key)
        self.response(label, value)


def redis_redis_py() -> list[Capture]:
    """Frames of redis-py (RESP2: protocol=2) and Debian's redis-server, on one connection:
    the CLIENT SETINFO pair redis-py sends first, PING, SET/GET (a nil reply, a value over
    64 KiB), MSET/MGET, INCR/DECR, DEL, KEYS (an empty array), XADD/XRANGE (nested arrays),
    BLPOP timing out (the null array), WRONGTYPE and unknown-command errors, a pipeline and a
    MULTI/EXEC transaction."""
    import redis

    captures: list[Capture] = []
    with redis_server() as server, recording_relay(server, resp_frame_length) as relay:
        direct = redis.Redis(*server, protocol=2)  # not recorded
        try:
            version = tuple(int(p) for p in direct.info("server")["redis_version"].split("."))
        finally:
            direct.close()
        client = redis.Redis(*relay.address, protocol=2, socket_timeout=5)
        rec = _RespRecorder(relay, captures)
        try:
            assert client.ping() is True
            # On its first command, redis-py sends its name and version (no HELLO with
            # protocol=2); CLIENT SETINFO came with Redis 7.2: older servers answer ERR, which
            # redis-py ignores.
            setinfo = (
                Simple("OK")
                if version >= (7, 2)
                else Error("ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.")
            )
            lib = redis.__version__.encode()
            rec.request(
                "client-setinfo-lib-name", [b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py"]
            )
            rec.request("client-setinfo-lib-ver", [b"CLIENT", b"SETINFO", b"LIB-VER", lib])
            rec.request("ping", [b"PING"])
            rec.response("client-setinfo-lib-name", setinfo)
            rec.response("client-setinfo-lib-ver", setinfo)
            rec.response("ping", Simple("PONG"))

            assert client.set("greeting", "hello redis") is True
            rec.call("set", [b"SET", b"greeting", b"hello redis"], b"greeting", Simple("OK"))
            assert client.get("greeting") == b"hello redis"
            rec.call("get", [b"GET", b"greeting"], b"greeting", b"hello redis")
            assert client.get("missing") is None
            rec.call("get-nil", [b"GET", b"missing"], b"missing", None)

            assert client.mset({"k1": "v1", "k2": ""}) is True
            words = [b"MSET", b"k1", b"v1", b"k2", b""]
            rec.call("mset", words, b"k1", Simple("OK"))
            assert client.mget("k1", "k2", "missing") == [b"v1", b"", None]
            words = [b"MGET", b"k1", b"k2", b"missing"]
            rec.call("mget", words, b"k1", [b"v1", b"", None])

            # redis-py's incr() and decr() send INCRBY and DECRBY, with 1
            assert client.incr("counter") == 1
            rec.call("incr", [b"INCRBY", b"counter", b"1"], b"counter", 1)
            assert client.execute_command("INCR", "counter") == 2
            rec.call("incr-command", [b"INCR", b"counter"], b"counter", 2)
            assert client.decr("below") == -1
            rec.call("decr", [b"DECRBY", b"below", b"1"], b"below", -1)
            assert client.delete("k1", "k2", "missing") == 2
            rec.call("del", [b"DEL", b"k1", b"k2", b"missing"], b"k1", 2)
            assert client.keys("nothing:*") == []
            rec.call("keys-empty-array", [b"KEYS", b"nothing:*"], None, [])

            entry = client.xadd("events", {"f": "v"}, id="1-1")
            assert entry == b"1-1"
            rec.call("xadd", [b"XADD", b"events", b"1-1", b"f", b"v"], b"events", b"1-1")
            assert client.xrange("events") == [(b"1-1", {b"f": b"v"})]
            words = [b"XRANGE", b"events", b"-", b"+"]
            rec.call("xrange-nested-arrays", words, b"events", [[b"1-1", [b"f", b"v"]]])
            assert client.blpop(["queue"], timeout=0.01) is None
            words = [b"BLPOP", b"queue", b"0.01"]
            rec.call("blpop-null-array", words, b"queue", NULL_ARRAY)

            assert client.lpush("list", "x") == 1
            rec.call("lpush", [b"LPUSH", b"list", b"x"], b"list", 1)
            wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value"
            try:
                client.get("list")
            except redis.ResponseError as e:
                assert str(e) == wrongtype, e
            else:
                raise AssertionError("GET on a list did not fail")
            rec.call("error-wrongtype", [b"GET", b"list"], b"list", Error(wrongtype))
            unknown = "ERR unknown command 'NOSUCHCMD', with args beginning with: "
            try:
                client.execute_command("NOSUCHCMD")
            except redis.ResponseError as e:
                assert str(e) == unknown.removeprefix("ERR "), e  # redis-py drops "ERR "
            else:
                raise AssertionError("NOSUCHCMD did not fail")
            rec.call("error-unknown-command", [b"NOSUCHCMD"], None, Error(unknown))

            assert client.set("big", LARGE_VALUE) is True
            rec.call("set-large", [b"SET", b"big", LARGE_VALUE], b"big", Simple("OK"))
            assert client.get("big") == LARGE_VALUE
            rec.call("get-large", [b"GET", b"big"], b"big", LARGE_VALUE)

            pipe = client.pipeline(transaction=False)
            pipe.set("p", "1").incrby("p", 41).get("p").exists("p", "missing")
            assert pipe.execute() == [True, 42, b"42", 1]
            pipelined = [
                ("pipeline-set", [b"SET", b"p", b"1"], b"p", Simple("OK")),
                ("pipeline-incrby", [b"INCRBY", b"p", b"41"], b"p", 42),
                ("pipeline-get", [b"GET", b"p"], b"p", b"42"),
                ("pipeline-exists", [b"EXISTS", b"p", b"missing"], b"p", 1),
            ]
            for label, words, key, _ in pipelined:  # all the commands are sent at once
                rec.request(label, words, key)
            for label, _, _, value in pipelined:
                rec.response(label, value)

            tx = client.pipeline(transaction=True)
            tx.set("t", "1").incr("t")
            assert tx.execute() == [True, 2]
            transaction = [
                ("multi", [b"MULTI"], None, Simple("OK")),
                ("multi-set", [b"SET", b"t", b"1"], b"t", Simple("QUEUED")),
                ("multi-incrby", [b"INCRBY", b"t", b"1"], b"t", Simple("QUEUED")),
                ("exec", [b"EXEC"], None, [Simple("OK"), 2]),
            ]
            for label, words, key, _ in transaction:
                rec.request(label, words, key)
            for label, _, _, value in transaction:
                rec.response(label, value)
        finally:
            client.close()
        relay.assert_silent(TO_SERVER, wait=0.05)
        relay.assert_silent(TO_CLIENT, wait=0.0)
    return captures
