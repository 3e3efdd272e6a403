"""Network layer: framed connections on asyncio/uvloop transports.

A ``FramedConnection`` owns a transport, a receive buffer and the decode loop (one read →
every whole frame in it), batches its writes (one transport write per loop turn), and tells its
owner when the transport's write buffer is full or drained (backpressure). What a frame means
is the owner's business (runtime.proxy, runtime.serve, runtime.client)."""

from __future__ import annotations

import asyncio
import logging

from .api import DecodeError, Direction, XFrame, XProtocol

log = logging.getLogger("protoc_x")

#: False: no connection takes the fast lane, every frame is decoded (the full path). The tests
#: compare the two paths' bytes with it; a connection class says whether it has a lane.
LANE = True


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:80`` for IPv6) → (host, port), the config's own parser (port in
    0..65535); ``ValueError`` with a short reason otherwise."""
    from .config import Address

    address = Address.parse(text)
    return address.host, address.port


class FramedConnection:
    """One TCP connection carrying frames of one protocol (chosen later for detection): an
    ``asyncio.Protocol`` by its methods (not by its base class, so that it can be compiled)."""

    direction: Direction = Direction.REQUEST  # what this side decodes
    #: frames are scanned (``XProtocol.scan``, then ``on_scanned``) rather than decoded
    lane = False

    def __init__(self, proto: XProtocol | None = None):
        self.proto = proto
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False
        self.ended = False  # it takes no more frames (the connection is closing)
        self.write_paused = False  # the transport's write buffer is above its high-water mark
        self.loop = asyncio.get_event_loop()
        self.last_activity = self.loop.time()
        self.partial_since: float | None = None  # a frame started but not complete
        self.holds: set = set()  # reasons reading is paused
        self.partial_size: int | None = None  # what a partial frame's header announced
        # a partial frame is not looked at again before the buffer holds ``waiting`` bytes;
        # ``measuring``: the protocol's measure of a frame that announces no length, resumed
        # as bytes arrive (XProtocol.measure), so a byte is not read again at each arrival
        self.waiting = 0
        self.measuring = None
        # the next frame is the connection's first this way: a protocol whose handshake has
        # a layout of its own (``first_frames``) decodes it with ``first=True``
        self.first = proto is not None and proto.first_frames
        self.out_bytes = 0  # queued for the next flush
        self.max_frame_bytes = 16 * 1024 * 1024  # (a listener's config sets its own)

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.last_activity = self.loop.time()

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return
        self.last_activity = self.loop.time()
        buf = self.buf  # (one buffer for the connection's life: a partial frame's bytes)
        if buf:
            buf += data
            if len(buf) < self.waiting:
                return  # the partial frame cannot be whole yet
            if self.measuring is not None and (not self.measure() or len(buf) < self.waiting):
                return
            data = bytes(buf)
        if self.proto is None:
            buf[:] = data
            if not self.choose_protocol(data) or self.closed:
                return
            buf.clear()
            self.first = self.proto.first_frames
        pos = 0
        end = len(data)
        direction = self.direction
        first = self.first
        try:
            if self.lane and LANE:
                scan = self.proto.scan
                while pos < end:
                    try:
                        found = (
                            scan(data, pos, direction, True)
                            if first
                            else scan(data, pos, direction)
                        )
                    except DecodeError:
                        # a part the scan reads at once (a route's header) and the decoder
                        # later: decode says what is wrong, or the full path answers for it
                        # (the scan failed past the frame's end: decode returns a frame)
                        frame = self.frame_at(data, pos)
                        self.on_frame(frame, data, pos, frame.length)
                        pos += frame.length
                    else:
                        if found is None:
                            break
                        self.on_scanned(found, data, pos)
                        pos += found[0]
                    if first:  # (frame_at read it as the first while it was handled)
                        self.first = first = False
                    if self.closed or self.ended:
                        return
            else:
                decode = self.proto.decode
                while pos < end:
                    if first:
                        frame = decode(data, pos, direction, first=True)
                    else:
                        frame = decode(data, pos, direction)
                    if frame is None:
                        break
                    length = frame.length
                    self.on_frame(frame, data, pos, length)
                    pos += length
                    if first:
                        self.first = first = False
                    if self.closed or self.ended:
                        return
        except DecodeError as e:
            self.on_decode_error(e)
            return
        except Exception:  # a bug must cost this connection only, never the proxy
            log.exception("internal error on a connection; closing it")
            self.abort()
            self.on_close(None)
            return
        rest = end - pos
        if pos:
            self.partial_size = None  # frames were consumed: what remains starts a new one
            self.measuring = None
        if rest:
            if rest > self.max_frame_bytes:
                self.fail(f"frame larger than max_frame_bytes ({self.max_frame_bytes})")
                return
            buf[:] = memoryview(data)[pos:] if pos else data
            if self.partial_since is None:
                self.partial_since = self.last_activity
            self.expect()
        else:
            if buf:
                buf.clear()
            self.partial_since = None
            self.partial_size = None
            self.waiting = 0

    def expect(self) -> None:
        """Learn how many bytes the partial frame in the buffer needs before it can be whole:
        the length its header announces (``frame_size``, asked once the header is there), or
        what measuring it says; a frame that would be larger than max_frame_bytes is refused
        before it arrives."""
        self.waiting = 0
        if self.partial_size is None:
            where = (
                (self.buf, 0, self.direction, True) if self.first else (self.buf, 0, self.direction)
            )
            steps = self.proto.measure(*where)
            if steps is not None:
                self.measuring = steps
                self.measure()
                return
            try:
                self.partial_size = self.proto.frame_size(*where)
            except DecodeError:
                return  # decode reports it with the bytes that follow
            if self.partial_size is None:
                return
        if self.partial_size > self.max_frame_bytes:
            self.fail(f"frame larger than max_frame_bytes ({self.max_frame_bytes})")
            return
        self.waiting = self.partial_size

    def measure(self) -> bool:
        """Resume measuring the partial frame with the bytes that arrived: False when the
        connection was closed for it (bytes that cannot be a frame, or a frame larger than
        max_frame_bytes)."""
        buf = self.buf
        try:
            while True:
                need = self.measuring.send(None)
                if need > self.max_frame_bytes:
                    self.measuring = None
                    self.fail(f"frame larger than max_frame_bytes ({self.max_frame_bytes})")
                    return False
                if need > len(buf):
                    self.waiting = need
                    return True
        except StopIteration as done:
            self.measuring = None
            self.partial_size = done.value
        except DecodeError as e:
            self.measuring = None
            self.on_decode_error(e)
            return False
        if self.partial_size > self.max_frame_bytes:
            self.fail(f"frame larger than max_frame_bytes ({self.max_frame_bytes})")
            return False
        self.waiting = self.partial_size
        return True

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.on_close(exc)

    def eof_received(self):
        return None  # (the transport closes; connection_lost follows)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.on_write_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.on_write_resumed()

    # -- writing ------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue bytes; everything queued in one loop turn goes out in one write."""
        if self.closed:
            return
        self.out.append(data)
        self.out_bytes += len(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.closed or not self.out:
            self.out.clear()
            return
        out = self.out
        self.out = []
        self.out_bytes = 0
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        self.after_flush()

    def close(self) -> None:
        if self.closed:
            return
        if self.out:
            self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.out.clear()
        if self.transport is not None:
            self.transport.abort()

    def fail(self, reason: str) -> None:
        """Close this connection for a protocol-level reason, with a log line."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.warning("closing connection from %s: %s", peer, reason)
        self.close()

    def hold(self, reason) -> None:
        """Stop reading until every ``reason`` given is released (backpressure from several
        places: our own full write buffer, a congested upstream, a connect in progress)."""
        if reason in self.holds:
            return
        self.holds.add(reason)
        if len(self.holds) == 1 and self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def release(self, reason) -> None:
        if reason not in self.holds:
            return
        self.holds.discard(reason)
        if not self.holds and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- for subclasses -----------------------------------------------------------------
    def idle_since(self) -> float | None:
        """The loop time the idle timeout counts from (its last traffic), or None while a
        request is in flight."""
        return self.last_activity

    def choose_protocol(self, data: bytes) -> bool:
        """Pick ``self.proto`` from the first bytes; False to wait (or after closing)."""
        return False

    def on_frame(self, frame: XFrame, buf: bytes, start: int, length: int) -> None:
        raise NotImplementedError

    def on_scanned(self, found: tuple, buf: bytes, start: int) -> None:
        """A frame the scan described (``lane``): ``found`` is what ``XProtocol.scan``
        returned for the frame at ``buf[start:]``."""
        raise NotImplementedError

    def frame_at(self, buf: bytes, start: int) -> XFrame:
        """The whole frame a scan found at ``buf[start:]``, decoded (the full path)."""
        if self.first:
            return self.proto.decode(buf, start, self.direction, first=True)
        return self.proto.decode(buf, start, self.direction)

    def on_decode_error(self, error: DecodeError) -> None:
        self.fail(f"undecodable bytes at offset {error.offset}: {error.reason}")

    def on_close(self, exc) -> None:
        pass

    def on_write_paused(self) -> None:
        pass

    def after_flush(self) -> None:
        pass

    def on_write_resumed(self) -> None:
        pass


class Sweeper:
    """Closes connections that sat idle, or on half a frame, for too long. One timer for a
    whole listener rather than one per connection."""

    def __init__(self, idle_s: float, frame_s: float, period: float | None = None):
        self.idle_s = idle_s
        self.frame_s = frame_s
        self.period = period or max(0.05, min(idle_s, frame_s) / 4)
        self.conns: set[FramedConnection] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_event_loop()

    def start(self) -> None:
        self.handle = self.loop.call_later(self.period, self.sweep)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.conns):
            if conn.closed:
                self.conns.discard(conn)
            elif conn.partial_since is not None and now - conn.partial_since > self.frame_s:
                conn.fail(f"frame not complete after {self.frame_s * 1000:.0f} ms")
            elif (since := conn.idle_since()) is not None and now - since > self.idle_s:
                conn.fail(f"idle for {self.idle_s * 1000:.0f} ms")
        self.handle = self.loop.call_later(self.period, self.sweep)
