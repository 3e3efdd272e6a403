"""`protoc-x decode NAME --pcap CAPTURE`: frames recorded from real peers (anthunder for bolt,
kafka-python for kafka, whose frames do not say their direction) written into pcap and pcapng
captures with dpkt, cut into segments that split frames and hold several, retransmitted and out
of order; each frame printed once, as `decode` prints it alone, with its connection,
direction and offset; a lost segment or a frame that is no frame stops only its direction."""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
import sys

import pytest

from protoc_x.cli import frame_json
from protoc_x.runtime.api import Direction
from tests.peers.captures import bolt_anthunder, kafka_captures
from tests.peers.pcaps import write_capture

from .test_decode import ROOT

PORT = 12200


@pytest.fixture(scope="module")
def peers():
    return {"bolt": bolt_anthunder(), "kafka": kafka_captures("kafka-python")}


def decode(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", "decode", *args],
        input=stdin, capture_output=True, cwd=ROOT,
    )  # fmt: skip


def expected(protocol: str, caps, connection: int = 0, port: int = PORT) -> list[dict]:
    """What decoding each captured frame alone gives, with where the capture holds it."""
    import importlib

    proto = importlib.import_module(f"protoc_x.generated.{protocol}").PROTOCOL
    offsets = {"request": 0, "response": 0}
    out = []
    for cap in caps:
        frame = proto.decode(cap.data, 0, Direction(cap.direction))
        out.append(
            {
                "connection": connection,
                "client": f"10.0.0.1:{40000 + connection}",
                "server": f"10.0.0.2:{port}",
                "direction": "to_server" if cap.direction == "request" else "to_client",
                "offset": offsets[cap.direction],
                **frame_json(protocol, frame),
            }
        )
        offsets[cap.direction] += len(cap.data)
    return out


def lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def without_packets(objs: list[dict]) -> list[dict]:
    return [{k: v for k, v in o.items() if k != "packet"} for o in objs]


def per_direction(objs: list[dict]) -> dict:
    """The frames of each connection and direction in order (the capture interleaves them by
    the packet each completes in)."""
    out: dict = {}
    for o in objs:
        out.setdefault((o["connection"], o["direction"]), []).append(o)
    return out


@pytest.mark.parametrize("protocol", ["bolt", "kafka"])
@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("disorder", [False, True], ids=["in-order", "disordered"])
def test_every_frame_of_a_capture_once(tmp_path, peers, protocol, pcapng, disorder):
    caps = peers[protocol]
    assert len(caps) >= 8 and {c.direction for c in caps} == {"request", "response"}
    conns = [[(c.direction, c.data) for c in caps]]
    # and a second connection: every request back to back (several in a segment)
    requests = [c for c in caps if c.direction == "request"]
    conns.append([(c.direction, c.data) for c in requests])
    path = tmp_path / ("c.pcapng" if pcapng else "c.pcap")
    count = write_capture(path, conns, PORT, pcapng=pcapng, disorder=disorder)
    result = decode(protocol, "--pcap", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    got = lines(result)
    want = expected(protocol, caps) + expected(protocol, requests, connection=1)
    assert per_direction(without_packets(got)) == per_direction(want)
    for objs in per_direction(got).values():  # each printed at the packet that completes it
        packets = [o["packet"] for o in objs]
        assert packets == sorted(packets) and 4 <= packets[0] and packets[-1] <= count
    # the contract's spelling: the capture as FILE (and on stdin)
    again = decode(protocol, str(path), "--pcap")
    assert again.returncode == 0 and again.stdout == result.stdout
    piped = decode(protocol, "--pcap", stdin=path.read_bytes())
    assert piped.returncode == 0 and piped.stdout == result.stdout


def test_a_split_frame_is_printed_at_the_packet_that_completes_it(tmp_path, peers):
    cap = next(c for c in peers["bolt"] if c.direction == "request" and len(c.data) > 40)
    path = tmp_path / "split.pcap"
    write_capture(path, [[("request", cap.data)]], PORT, cuts=(10, 10, 10000))
    (obj,) = lines(decode("bolt", "--pcap", str(path)))
    # packets: SYN, SYN-ACK, ACK, then 10 bytes (4), 10 bytes (5), the rest (6)
    assert obj["packet"] == 6 and obj["length"] == len(cap.data)


def test_a_lost_segment_stops_its_direction_only(tmp_path, peers):
    caps = peers["bolt"]
    requests = [c for c in caps if c.direction == "request"]
    path = tmp_path / "lost.pcap"
    write_capture(path, [[(c.direction, c.data) for c in caps]], PORT, cuts=(1400,))
    import dpkt

    # drop the client's data segment that carries the third request's first byte
    third = sum(len(c.data) for c in requests[:2])
    kept, dropped = [], None
    with open(path, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            tcp = dpkt.ethernet.Ethernet(buf).data.data
            rel = (tcp.seq - 1001) % (1 << 32)
            if (
                dropped is None
                and tcp.dport == PORT
                and tcp.data
                and rel <= third < rel + len(tcp.data)
            ):
                dropped = rel
                continue
            kept.append((ts, buf))
    assert dropped is not None
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        for ts, buf in kept:
            w.writepkt(buf, ts=ts)
    result = decode("bolt", "--pcap", str(path))
    assert result.returncode == 0, result.stderr
    got = per_direction(lines(result))
    # requests up to the lost bytes; every response
    ends = itertools.accumulate(len(c.data) for c in requests)
    before_gap = sum(1 for end in ends if end <= dropped)
    assert before_gap >= 2  # (the segment holds the third request's start)
    assert (
        without_packets(got[(0, "to_server")])
        == [o for o in expected("bolt", caps) if o["direction"] == "to_server"][:before_gap]
    )
    responses = [c for c in caps if c.direction == "response"]
    assert len(got[(0, "to_client")]) == len(responses)
    err = result.stderr.decode()
    assert "connection 0 (10.0.0.1:40000 -> 10.0.0.2:12200) to_server: bytes missing" in err


def test_bytes_that_are_no_frame_stop_only_their_direction(tmp_path, peers):
    caps = peers["bolt"]
    good = [(c.direction, c.data) for c in caps]
    bad = [
        ("request", caps[0].data),
        ("request", b"\x07" + b"\x00" * 40),
        ("request", caps[0].data),
    ]
    path = tmp_path / "bad.pcap"
    write_capture(path, [bad, good], PORT)
    result = decode("bolt", "--pcap", str(path))
    assert result.returncode == 1
    got = per_direction(lines(result))
    assert len(got[(0, "to_server")]) == 1  # the frame before the garbage
    assert without_packets(got[(1, "to_server")]) + without_packets(got[(1, "to_client")]) == [
        o for o in expected("bolt", caps, connection=1) if o["direction"] == "to_server"
    ] + [o for o in expected("bolt", caps, connection=1) if o["direction"] == "to_client"]
    err = result.stderr.decode()
    assert err.startswith(
        f"error: connection 0 (10.0.0.1:40000 -> 10.0.0.2:{PORT}) to_server: offset "
        f"{len(caps[0].data)}: "
    ), err


def test_a_field_that_fails_only_when_read_stops_its_direction_only(tmp_path, peers):
    """bolt's headers are read when asked for (lazily): a map entry that overruns its map is
    found by the JSON view, after the frame decoded; it is that direction's error too."""
    headers = b"\x00\x00\x00\x50abc"  # a key of 80 bytes in a map of 7
    broken = struct.pack(">BBHBIBiHHI", 1, 1, 1, 1, 7, 1, 3000, 1, len(headers), 0)
    broken += b"x" + headers
    caps = peers["bolt"]
    path = tmp_path / "lazy.pcap"
    write_capture(path, [[("request", broken)], [(c.direction, c.data) for c in caps]], PORT)
    result = decode("bolt", "--pcap", str(path))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith(f"error: connection 0 (10.0.0.1:40000 -> 10.0.0.2:{PORT}) to_server: ")
    assert "a map entry overruns the map" in err and "Traceback" not in err
    got = lines(result)
    assert {o["connection"] for o in got} == {1} and len(got) == len(caps)


def test_every_shipped_protocol_through_a_capture(tmp_path):
    """Each protocol's sample frames (protoc_x.samples), one byte a segment and then all at
    once: the frames `decode` gives for the bytes alone."""
    from protoc_x.samples import SAMPLES

    for name in sorted({s.protocol for s in SAMPLES}):
        samples = [s for s in SAMPLES if s.protocol == name]
        items = [(s.direction or "request", s.data) for s in samples]
        path = tmp_path / f"{name}.pcap"
        write_capture(path, [items, items], PORT, cuts=(1,) * 200 + (65536,))
        result = decode(name, "--pcap", str(path))
        assert result.returncode == 0 and result.stderr == b"", (name, result.stderr)
        got = per_direction(without_packets(lines(result)))
        for conn in (0, 1):
            for direction in ("request", "response"):
                data = b"".join(d for dd, d in items if dd == direction)
                if not data:
                    continue
                alone = decode(name, "-", "--direction", direction, stdin=data)
                assert alone.returncode == 0, (name, alone.stderr)
                want = [json.loads(x) for x in alone.stdout.splitlines()]
                side = "to_server" if direction == "request" else "to_client"
                assert [
                    {
                        k: v
                        for k, v in o.items()
                        if k not in ("connection", "client", "server", "direction", "offset")
                    }
                    for o in got[(conn, side)]
                ] == want, (name, conn, direction)


def test_port_picks_the_connections_and_the_server(tmp_path, peers):
    caps = peers["bolt"]
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    write_capture(a, [[(c.direction, c.data) for c in caps]], PORT)
    write_capture(b, [[(c.direction, c.data) for c in caps]], PORT + 1)
    # one capture of both: b's packets after a's
    import dpkt

    with open(tmp_path / "ab.pcap", "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        for src in (a, b):
            with open(src, "rb") as g:
                for ts, buf in dpkt.pcap.Reader(g):
                    w.writepkt(buf, ts=ts)
    both = lines(decode("bolt", "--pcap", str(tmp_path / "ab.pcap")))
    assert {o["server"] for o in both} == {f"10.0.0.2:{PORT}", f"10.0.0.2:{PORT + 1}"}
    only = lines(decode("bolt", "--pcap", str(tmp_path / "ab.pcap"), "--port", str(PORT + 1)))
    assert {o["server"] for o in only} == {f"10.0.0.2:{PORT + 1}"}
    assert len(only) == len(caps) and {o["connection"] for o in only} == {0}


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "not a pcap or pcapng capture"),
        (b"\xd4\xc3\xb2\xa1" + b"\x00" * 3, "not a pcap or pcapng capture"),
        (b"hello, this is text and no capture at all", "not a pcap or pcapng capture"),
    ],
)
def test_what_is_no_capture_is_an_error(tmp_path, data, message):
    path = tmp_path / "x.pcap"
    path.write_bytes(data)
    result = decode("bolt", "--pcap", str(path))
    assert result.returncode == 1 and result.stdout == b""
    assert message in result.stderr.decode(), result.stderr
    missing = decode("bolt", "--pcap", str(tmp_path / "none.pcap"))
    assert missing.returncode == 1 and b"No such file" in missing.stderr
