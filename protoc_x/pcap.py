"""Packet captures for ``protoc-x decode --pcap``: pcap and pcapng files read with dpkt, each TCP
connection's bytes put back in order per direction (retransmissions and overlaps dropped,
segments out of order held until the gap before them fills), and handed on as they become
contiguous, with the number of the packet that completed them."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import dpkt

#: link types (tcpdump.org/linktypes.html) → how to reach the IP packet
_ETHERNET, _NULL, _LOOP, _SLL, _SLL2 = 1, 0, 108, 113, 276
_RAW_IP = (12, 14, 101, 228, 229)  # raw IPv4/IPv6 (values differ between systems)
_SEQ = 1 << 32


class CaptureError(Exception):
    """The file is no capture dpkt can read, or of a link type not handled here."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class Flow:
    """One direction of a connection: the next sequence number expected and segments that came
    early. ``next`` is None until the first segment (or the SYN) sets it."""

    next: int | None = None
    early: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # seq → (data, packet)
    delivered: int = 0  # bytes handed on so far (the offset of the next)
    from_start: bool = False  # its SYN was seen: its first byte is the connection's first
    closed: bool = False  # a FIN or RST went this way


@dataclass
class Connection:
    index: int  # in order of first appearance, from 0 (as tshark's tcp.stream)
    client: Endpoint
    server: Endpoint
    flows: dict[str, Flow] = field(
        default_factory=lambda: {"to_server": Flow(), "to_client": Flow()}
    )


@dataclass(frozen=True)
class Data:
    """Bytes that continue one direction of a connection, in order."""

    connection: Connection
    direction: str  # "to_server" or "to_client"
    packet: int  # the capture's packet (from 1) that made them contiguous
    offset: int  # of their first byte in this direction's stream
    data: bytes


@dataclass(frozen=True)
class Gap:
    """A direction of a connection that ends with bytes missing (a segment the capture lost)."""

    connection: Connection
    direction: str
    offset: int  # what was delivered before the gap


def packets(f: BinaryIO) -> Iterator[tuple[int, float, int, bytes]]:
    """(number from 1, time, link type, bytes) of each packet of a pcap or pcapng file."""
    head = f.read(4)
    f.seek(0)
    try:
        if head == b"\x0a\x0d\x0d\x0a":
            reader = dpkt.pcapng.Reader(f)
        else:
            reader = dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        for number, (ts, buf) in enumerate(reader, 1):
            yield number, ts, linktype, buf
    except (ValueError, dpkt.dpkt.Error) as e:
        raise CaptureError(f"not a pcap or pcapng capture dpkt can read ({e})") from None


def ip_packet(linktype: int, buf: bytes):
    """The IPv4 or IPv6 packet a frame of ``linktype`` carries, or None."""
    try:
        if linktype == _ETHERNET:
            pkt = dpkt.ethernet.Ethernet(buf).data
        elif linktype == _SLL:
            pkt = dpkt.sll.SLL(buf).data
        elif linktype == _SLL2:
            pkt = dpkt.sll2.SLL2(buf).data
        elif linktype in (_NULL, _LOOP):
            pkt = dpkt.loopback.Loopback(buf).data
        elif linktype in _RAW_IP:
            pkt = dpkt.ip6.IP6(buf) if buf[:1] and buf[0] >> 4 == 6 else dpkt.ip.IP(buf)
        else:
            raise CaptureError(
                f"link type {linktype} is not handled (Ethernet, Linux cooked, loopback or raw IP)"
            )
    except (dpkt.dpkt.Error, IndexError):
        return None
    return pkt if isinstance(pkt, (dpkt.ip.IP, dpkt.ip6.IP6)) else None


def _host(pkt, raw: bytes) -> str:
    family = socket.AF_INET6 if isinstance(pkt, dpkt.ip6.IP6) else socket.AF_INET
    return socket.inet_ntop(family, raw)


class Reassembler:
    """TCP streams from packets. ``port``: the server's port (the other side is the client);
    without it the side that sent the SYN is the client, and with no SYN in the capture the
    side with the higher port (an ephemeral one)."""

    def __init__(self, port: int | None = None):
        self.port = port
        self.connections: dict[frozenset, Connection] = {}
        self.count = 0

    def feed(self, number: int, linktype: int, buf: bytes) -> Iterator[Data]:
        pkt = ip_packet(linktype, buf)
        if pkt is None or not isinstance(pkt.data, dpkt.tcp.TCP):
            return
        tcp = pkt.data
        src = Endpoint(_host(pkt, pkt.src), tcp.sport)
        dst = Endpoint(_host(pkt, pkt.dst), tcp.dport)
        if self.port is not None and self.port not in (tcp.sport, tcp.dport):
            return
        syn, ack = tcp.flags & dpkt.tcp.TH_SYN, tcp.flags & dpkt.tcp.TH_ACK
        key = frozenset((src, dst))
        conn = self.connections.get(key)
        if conn is not None and syn and not ack and any(f.closed for f in conn.flows.values()):
            conn = None  # the 4-tuple used again: a new connection
        if conn is None:
            if self.port is not None:
                client_is_src = dst.port == self.port and src.port != self.port
            elif syn:
                client_is_src = not ack
            else:
                client_is_src = src.port > dst.port
            client, server = (src, dst) if client_is_src else (dst, src)
            conn = self.connections[key] = Connection(self.count, client, server)
            self.count += 1
        direction = "to_server" if src == conn.client else "to_client"
        flow = conn.flows[direction]
        data = bytes(tcp.data)
        seq = tcp.seq
        if syn:
            flow.next, flow.from_start = (seq + 1) % _SEQ, True
            seq = (seq + 1) % _SEQ  # (a SYN carries no data we read)
            data = b""
        if tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST):
            flow.closed = True
        if not data:
            return
        if flow.next is None:
            flow.next = seq
        old = flow.early.get(seq)
        if old is None or len(data) > len(old[0]):  # (a retransmission may carry more)
            flow.early[seq] = (data, number)
        yield from self._drain(conn, direction, flow)

    def _drain(self, conn: Connection, direction: str, flow: Flow) -> Iterator[Data]:
        while True:
            for seq, (data, number) in list(flow.early.items()):
                rel = (seq - flow.next) % _SEQ
                if rel >= _SEQ // 2:  # before what we have: a retransmission or an overlap
                    rel -= _SEQ
                if rel > 0:
                    continue
                del flow.early[seq]
                data = data[-rel:] if rel else data
                if data:
                    break
            else:
                return
            yield Data(conn, direction, number, flow.delivered, data)
            flow.delivered += len(data)
            flow.next = (flow.next + len(data)) % _SEQ

    def gaps(self) -> Iterator[Gap]:
        """The directions left waiting for bytes the capture does not have."""
        for conn in self.connections.values():
            for direction, flow in conn.flows.items():
                if flow.early:
                    yield Gap(conn, direction, flow.delivered)
