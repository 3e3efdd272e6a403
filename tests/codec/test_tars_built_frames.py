"""Frames a TARS codec builds from a request (error and success answers, heartbeat replies)
carry the request's values, not the fields it carried around them: a request with unknown,
out-of-order or repeated tags is answered with the same bytes as the same request without
them."""

from __future__ import annotations


from protoc_x.generated import tars
from protoc_x.runtime.api import RUNTIME_CODES, Direction

PROTOCOL = tars.PROTOCOL


def packet(*fields: str) -> bytes:
    body = bytes.fromhex("".join(fields).replace(" ", ""))
    return (len(body) + 4).to_bytes(4, "big") + body


CLEAN = ["10 01", "2c", "30 05", "40 07", "56 01 53", "66 09 74617273 5f70696e67", "7d 00 0c"]
# a tag 0 before iVersion, iVersion twice, tag 1 again after cPacketType, tag 2 after tag 3
FOREIGN = ["00 2a", "10 01", "10 09", "2c", "10 03", "30 05", "20 04", "40 07", "56 01 53",
           "66 09 74617273 5f70696e67", "7d 00 0c"]  # fmt: skip


def test_answers_do_not_carry_the_requests_other_fields():
    clean = PROTOCOL.decode(packet(*CLEAN), 0, Direction.REQUEST)
    foreign = PROTOCOL.decode(packet(*FOREIGN), 0, Direction.REQUEST)
    assert foreign.encode() == packet(*FOREIGN)  # the request itself keeps them
    assert foreign.is_heartbeat() and clean.is_heartbeat()
    for build in [lambda r, code=code: PROTOCOL.hijack(r, code) for code in RUNTIME_CODES[1:]] + [
        PROTOCOL.success_response,
        PROTOCOL.reply,
    ]:
        assert build(foreign).encode() == build(clean).encode()


def test_built_frames_carry_the_maps_requestf_requires():
    """RequestF.tars: RequestPacket's context (9) and status (10) and ResponsePacket's status (7)
    are `require`; TarsNode, TarsCpp and TarsGo reject a packet without them."""
    request = PROTOCOL.decode(packet(*CLEAN), 0, Direction.REQUEST)
    empty_map = {7: "78 0c", 9: "98 0c", 10: "a8 0c"}  # head (tag, type 8 = map), count 0
    for answer in [PROTOCOL.hijack(request, code) for code in RUNTIME_CODES[1:]] + [
        PROTOCOL.success_response(request),
        PROTOCOL.reply(request),
    ]:
        data = answer.encode()
        assert bytes.fromhex(empty_map[7]) in data, data.hex()
        assert PROTOCOL.decode(data, 0, Direction.RESPONSE).status == {}
    ping = PROTOCOL.trigger(9).encode()
    assert bytes.fromhex(empty_map[9] + empty_map[10]) in ping, ping.hex()
    decoded = PROTOCOL.decode(ping, 0, Direction.REQUEST)
    assert (decoded.context, decoded.status) == ({}, {})
