"""Captures written from recorded frames: each connection a TCP conversation (handshake, data,
FIN) between a client and a server on 127.0.0.1-like addresses, in pcap or pcapng, written with
dpkt. How the bytes are cut into segments is the point: frames split across segments, several
frames in one segment, and on request a retransmission and segments out of order.

A connection is a list of ``(direction, bytes)`` in wire order, direction "request" (client to
server) or "response"; consecutive items of one direction form one run of bytes, which is cut
into segments by the sizes of ``cuts`` in turn (cycling), so a segment may end inside a frame or
hold the end of one and the start of the next.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import dpkt

#: segment sizes cycled through: 1-byte and odd splits, and sizes larger than most frames
SPLIT_AND_COALESCE = (1, 3, 200, 7, 1400, 64, 9000)
CLIENT_IP, SERVER_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
MAC = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


@dataclass
class _Side:
    ip: bytes
    port: int
    mac: bytes
    seq: int


def _runs(items: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Consecutive items of one direction joined."""
    out: list[tuple[str, bytes]] = []
    for direction, data in items:
        if out and out[-1][0] == direction:
            out[-1] = (direction, out[-1][1] + data)
        else:
            out.append((direction, bytes(data)))
    return out


def write_capture(
    path: Path,
    connections: list[list[tuple[str, bytes]]],
    server_port: int,
    cuts: tuple[int, ...] = SPLIT_AND_COALESCE,
    pcapng: bool = False,
    disorder: bool = False,
) -> int:
    """Write ``connections`` to ``path``; the number of packets written. ``disorder``: in each
    run of three or more segments, the second is sent after the third and the first again
    after both (a retransmission)."""
    sizes = itertools.cycle(cuts)
    packets: list[bytes] = []

    def send(src: _Side, dst: _Side, flags: int, data: bytes = b"", seq: int | None = None):
        tcp = dpkt.tcp.TCP(
            sport=src.port,
            dport=dst.port,
            seq=src.seq if seq is None else seq,
            ack=dst.seq,
            flags=flags,
            win=65535,
            data=data,
        )
        ip = dpkt.ip.IP(src=src.ip, dst=dst.ip, p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
        ip.len = len(ip)  # (dpkt fills checksums when packing)
        eth = dpkt.ethernet.Ethernet(src=src.mac, dst=dst.mac, type=dpkt.ethernet.ETH_TYPE_IP)
        eth.data = ip
        packets.append(bytes(eth))

    for number, items in enumerate(connections):
        client = _Side(CLIENT_IP, 40000 + number, MAC[0], 1000 + number * 7919)
        server = _Side(SERVER_IP, server_port, MAC[1], 500000 + number * 104729)
        ack, syn, fin, psh = dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH
        send(client, server, syn)
        client.seq += 1
        send(server, client, syn | ack)
        server.seq += 1
        send(client, server, ack)
        for direction, data in _runs(items):
            src, dst = (client, server) if direction == "request" else (server, client)
            segments, pos = [], 0
            while pos < len(data):
                size = next(sizes)
                segments.append((src.seq + pos, data[pos : pos + size]))
                pos += size
            order = list(range(len(segments)))
            if disorder and len(segments) >= 3:
                order = [0, 2, 1, 0] + order[3:]
            for i in order:
                seq, chunk = segments[i]
                send(src, dst, ack | psh, chunk, seq=seq % (1 << 32))
            src.seq = (src.seq + len(data)) % (1 << 32)
            send(dst, src, ack)
        send(client, server, fin | ack)
        client.seq += 1
        send(server, client, fin | ack)
        server.seq += 1
        send(client, server, ack)

    with open(path, "wb") as f:
        writer = (dpkt.pcapng.Writer if pcapng else dpkt.pcap.Writer)(f, linktype=1)
        for i, pkt in enumerate(packets):
            writer.writepkt(pkt, ts=1_700_000_000 + i / 1000)
    return len(packets)
