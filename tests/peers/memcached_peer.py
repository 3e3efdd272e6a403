"""Memcached binary-protocol frames from python-binary-memcached (`bmemcached`) and a real
memcached (Debian's package), recorded by a relay between the two."""

from __future__ import annotations

import os
import shutil
import struct
from typing import Any, ContextManager, Optional

from .capture import Capture
from .framing import memcached_frame_length
from .recording import LOOPBACK, TO_CLIENT, TO_SERVER, recording_relay
from .servers import server_process

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"

# Opcode names as in memcached's protocol-binary.txt, lowercased (see shared/docs/protocols.md).
OPCODES = {
    0x00: "get",
    0x01: "set",
    0x02: "add",
    0x03: "replace",
    0x04: "delete",
    0x05: "increment",
    0x06: "decrement",
    0x07: "quit",
    0x08: "flush",
    0x09: "getq",
    0x0A: "noop",
    0x0B: "version",
    0x0C: "getk",
    0x0D: "getkq",
    0x0E: "append",
    0x0F: "prepend",
    0x10: "stat",
    0x11: "setq",
    0x12: "addq",
    0x13: "replaceq",
    0x14: "deleteq",
}
QUIET = {0x09, 0x0D, 0x11, 0x12, 0x13, 0x14}


def memcached_server(port: Optional[int] = None) -> ContextManager[tuple[str, int]]:
    """A real memcached speaking only the binary protocol on 127.0.0.1 (free port), TCP only."""

    def command(chosen: int) -> list[str]:
        out = [MEMCACHED, "-B", "binary", "-p", str(chosen), "-U", "0", "-l", LOOPBACK]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            out += ["-u", "root"]
        return out

    return server_process("memcached", command, lambda sock: True, port, timeout=5.0)


def _expect(
    data: bytes,
    opcode: int,
    key: Optional[bytes],
    body: bytes,
    status: Optional[int] = None,
    extras: Optional[bytes] = None,
) -> dict[str, Any]:
    """What a packet must mean, from what bmemcached was asked to do and the protocol doc."""
    response = status is not None
    expect: dict[str, Any] = {
        "request_id": 0,  # bmemcached's opaque is always 0 outside set_multi
        "stream_type": "response" if response else ("quiet" if opcode in QUIET else "request"),
        # NOOP is the protocol's heartbeat and the barrier after quiet requests (contract.md)
        "heartbeat": OPCODES[opcode] == "noop",
        "service": None,
        "method": OPCODES[opcode],
        "headers": {"key": key.decode()} if key else {},
        "body": body,
        "length": len(data),
        "opcode": opcode,
    }
    if response:
        expect["status"] = status
    if extras is not None:
        expect["extras"] = extras
    return expect


def _check_packet(data: bytes, magic: int, opcode: int, key: Optional[bytes], body: bytes) -> None:
    """Header fields and layout as protocol-binary.txt defines them (no codec of ours)."""
    head = struct.unpack(">BBHBBHIIQ", data[:24])
    got_magic, got_opcode, key_len, extras_len, _dtype, _vb, total, _opaque, _cas = head
    problems = []
    if got_magic != magic or got_opcode != opcode:
        problems.append(f"magic/opcode {got_magic:#x}/{got_opcode:#x}")
    if total != len(data) - 24:
        problems.append(f"total_body {total} for {len(data) - 24} bytes")
    if key is not None and data[24 + extras_len : 24 + extras_len + key_len] != key:
        problems.append("key")
    if data[24 + extras_len + key_len :] != body:
        problems.append("value")
    if problems:
        raise AssertionError(f"{OPCODES[opcode]} packet {data.hex()}: {', '.join(problems)}")


def memcached_binary(memcached_port: int) -> list[Capture]:
    """Packets between python-binary-memcached and the memcached on 127.0.0.1:memcached_port.

    Captured: set, get hit, get miss (status 1), delete, increment (request and response each),
    get_multi (GETKQ... then GETK: each request, the hit answers, the closing GETK answer),
    set_multi (SETQ... then NOOP) and delete_multi (DELETE... then NOOP) with the NOOP answers.
    """
    import bmemcached

    captures: list[Capture] = []
    with recording_relay((LOOPBACK, memcached_port), memcached_frame_length) as relay:
        client = bmemcached.Client((f"{LOOPBACK}:{relay.port}",), socket_timeout=5)
        try:

            def add(name: str, direction: str, data: bytes, expect: dict[str, Any]) -> None:
                magic = 0x80 if direction == "request" else 0x81
                key = expect["headers"].get("key")
                _check_packet(
                    data, magic, expect["opcode"], key.encode() if key else None, expect["body"]
                )
                captures.append(Capture(f"memcached/bmemcached/{name}", direction, data, expect))

            # flush first so that keys left by an earlier run cannot turn a miss into a hit
            client.flush_all()
            relay.take(TO_SERVER)
            relay.take(TO_CLIENT)

            # set: extras = flags u32 (0 for a str value) + expiry u32
            assert client.set("greeting", "hello memcached", time=300)
            (req,) = relay.take(TO_SERVER)
            (res,) = relay.take(TO_CLIENT)
            extras = struct.pack(">II", 0, 300)
            add(
                "set-request",
                "request",
                req,
                _expect(req, 0x01, b"greeting", b"hello memcached", extras=extras),
            )
            add("set-response", "response", res, _expect(res, 0x01, None, b"", status=0))

            assert client.get("greeting") == "hello memcached"
            (req,) = relay.take(TO_SERVER)
            (res,) = relay.take(TO_CLIENT)
            add("get-request", "request", req, _expect(req, 0x00, b"greeting", b""))
            add(
                "get-response-hit",
                "response",
                res,
                _expect(res, 0x00, None, b"hello memcached", status=0, extras=struct.pack(">I", 0)),
            )

            assert client.get("absent") is None
            (req,) = relay.take(TO_SERVER)
            (res,) = relay.take(TO_CLIENT)
            add("get-request-miss", "request", req, _expect(req, 0x00, b"absent", b""))
            add(
                "get-response-miss",
                "response",
                res,
                _expect(res, 0x00, None, b"Not found", status=1),
            )

            assert client.delete("greeting")
            (req,) = relay.take(TO_SERVER)
            (res,) = relay.take(TO_CLIENT)
            add("delete-request", "request", req, _expect(req, 0x04, b"greeting", b""))
            add("delete-response", "response", res, _expect(res, 0x04, None, b"", status=0))

            # incr: extras = delta u64, initial u64, expiry u32; the answer's value is a u64
            assert client.incr("counter", 5) == 0  # absent: memcached stores the initial 0
            relay.take(TO_SERVER)
            relay.take(TO_CLIENT)
            assert client.incr("counter", 5) == 5
            (req,) = relay.take(TO_SERVER)
            (res,) = relay.take(TO_CLIENT)
            add(
                "increment-request",
                "request",
                req,
                _expect(req, 0x05, b"counter", b"", extras=struct.pack(">QQI", 5, 0, 1000000)),
            )
            add(
                "increment-response",
                "response",
                res,
                _expect(res, 0x05, None, struct.pack(">Q", 5), status=0),
            )

            # get_multi: GETKQ for all keys but the last, GETK for the last; misses stay silent.
            client.set("k1", "v1")
            client.set("k3", "v3")
            relay.take(TO_SERVER, 2)
            relay.take(TO_CLIENT, 2)
            got = client.get_multi(["k1", "k2", "k3", "k4"])
            assert got == {"k1": "v1", "k3": "v3"}, got
            reqs = relay.take(TO_SERVER, 4)
            ress = relay.take(TO_CLIENT, 3)  # k1 hit, k3 hit, then the GETK miss for k4
            for index, key in enumerate(["k1", "k2", "k3"]):
                add(
                    f"get-multi-getkq-{key}",
                    "request",
                    reqs[index],
                    _expect(reqs[index], 0x0D, key.encode(), b""),
                )
            add("get-multi-getk-k4", "request", reqs[3], _expect(reqs[3], 0x0C, b"k4", b""))
            flags = struct.pack(">I", 0)
            add(
                "get-multi-getkq-hit-k1",
                "response",
                ress[0],
                _expect(ress[0], 0x0D, b"k1", b"v1", status=0, extras=flags),
            )
            add(
                "get-multi-getkq-hit-k3",
                "response",
                ress[1],
                _expect(ress[1], 0x0D, b"k3", b"v3", status=0, extras=flags),
            )
            # memcached echoes the key in a GETK miss, with an empty value (a GET miss carries
            # "Not found" instead)
            add(
                "get-multi-getk-miss-k4",
                "response",
                ress[2],
                _expect(ress[2], 0x0C, b"k4", b"", status=1),
            )
            relay.assert_silent(TO_CLIENT, wait=0.1)

            # set_multi: SETQ per key (opaque = index) then NOOP; only the NOOP is answered
            assert client.set_multi({"m1": "one", "m2": "two"}) == []
            reqs = relay.take(TO_SERVER, 3)
            (noop_res,) = relay.take(TO_CLIENT)
            for index, (key, value) in enumerate([("m1", b"one"), ("m2", b"two")]):
                expect = _expect(
                    reqs[index], 0x11, key.encode(), value, extras=struct.pack(">II", 0, 0)
                )
                expect["request_id"] = index
                add(f"set-multi-setq-{key}", "request", reqs[index], expect)
            add("set-multi-noop-request", "request", reqs[2], _expect(reqs[2], 0x0A, None, b""))
            add(
                "set-multi-noop-response",
                "response",
                noop_res,
                _expect(noop_res, 0x0A, None, b"", status=0),
            )

            # delete_multi: plain DELETEs (each answered) then a NOOP
            assert client.delete_multi(["m1", "nothere"]) is False
            reqs = relay.take(TO_SERVER, 3)
            ress = relay.take(TO_CLIENT, 3)
            add("delete-multi-request-m1", "request", reqs[0], _expect(reqs[0], 0x04, b"m1", b""))
            add(
                "delete-multi-request-nothere",
                "request",
                reqs[1],
                _expect(reqs[1], 0x04, b"nothere", b""),
            )
            add(
                "delete-multi-response-m1",
                "response",
                ress[0],
                _expect(ress[0], 0x04, None, b"", status=0),
            )
            add(
                "delete-multi-response-miss",
                "response",
                ress[1],
                _expect(ress[1], 0x04, None, b"Not found", status=1),
            )
            add(
                "delete-multi-noop-response",
                "response",
                ress[2],
                _expect(ress[2], 0x0A, None, b"", status=0),
            )
        finally:
            client.disconnect_all()
    return captures
