"""Minimal frame splitting for captured byte streams, written from the protocol docs.

Only lengths are read here: enough to cut a TCP stream into whole frames and to sanity-check a
capture. Deliberately independent of protoc-x's generated codecs, so that a capture never depends
on the code it is meant to check.
"""

from __future__ import annotations

import struct
from typing import Callable, Optional

FrameLength = Callable[[bytes], Optional[int]]

BOLT_REQUEST_HEADER = 22
BOLT_RESPONSE_HEADER = 20
BOLTV2_REQUEST_HEADER = 24
BOLTV2_RESPONSE_HEADER = 22
DUBBO_HEADER = 16
MEMCACHED_HEADER = 24


def bolt_frame_length(buf: bytes) -> Optional[int]:
    """Bytes of the bolt v1 frame at the start of buf, or None if more bytes are needed."""
    if len(buf) < 2:
        return None
    if buf[0] != 0x01:
        raise ValueError(f"not a bolt v1 frame: first byte {buf[0]:#04x}")
    if buf[1] == 0:  # response (including heartbeat ack): 20-byte header
        if len(buf) < BOLT_RESPONSE_HEADER:
            return None
        class_len, header_len, content_len = struct.unpack_from(">HHI", buf, 12)
        return BOLT_RESPONSE_HEADER + class_len + header_len + content_len
    if len(buf) < BOLT_REQUEST_HEADER:
        return None
    class_len, header_len, content_len = struct.unpack_from(">HHI", buf, 14)
    return BOLT_REQUEST_HEADER + class_len + header_len + content_len


def boltv2_crc(buf: bytes) -> bool:
    """Whether the bolt v2 frame at the start of buf ends with a CRC32: SOFABolt's
    RpcCommandDecoderV2 reads one when ver1 is 2 and switch bit 0 is set (protocols.md)."""
    return buf[1] == 2 and bool(buf[11] & 0x01)


def boltv2_frame_length(buf: bytes) -> Optional[int]:
    """Bytes of the bolt v2 frame at the start of buf (CRC included), or None if more are needed."""
    if len(buf) < 3:
        return None
    if buf[0] != 0x02:
        raise ValueError(f"not a bolt v2 frame: first byte {buf[0]:#04x}")
    if buf[2] == 0:  # response: 22-byte header
        if len(buf) < BOLTV2_RESPONSE_HEADER:
            return None
        class_len, header_len, content_len = struct.unpack_from(">HHI", buf, 14)
        size = BOLTV2_RESPONSE_HEADER + class_len + header_len + content_len
    else:
        if len(buf) < BOLTV2_REQUEST_HEADER:
            return None
        class_len, header_len, content_len = struct.unpack_from(">HHI", buf, 16)
        size = BOLTV2_REQUEST_HEADER + class_len + header_len + content_len
    return size + (4 if boltv2_crc(buf) else 0)


def thrift_framed_length(buf: bytes) -> Optional[int]:
    """Bytes of the framed-transport thrift message at the start of buf (prefix included)."""
    if len(buf) < 4:
        return None
    (size,) = struct.unpack_from(">I", buf, 0)
    return 4 + size


def memcached_frame_length(buf: bytes) -> Optional[int]:
    """Bytes of the memcached binary packet at the start of buf."""
    if len(buf) < MEMCACHED_HEADER:
        return None
    if buf[0] not in (0x80, 0x81):
        raise ValueError(f"not a memcached binary packet: magic {buf[0]:#04x}")
    (total_body,) = struct.unpack_from(">I", buf, 8)
    return MEMCACHED_HEADER + total_body


def dubbo_frame_length(buf: bytes) -> Optional[int]:
    """Bytes of the dubbo frame at the start of buf."""
    if len(buf) < DUBBO_HEADER:
        return None
    if buf[0:2] != b"\xda\xbb":
        raise ValueError(f"not a dubbo frame: magic {buf[0:2].hex()}")
    (body_len,) = struct.unpack_from(">I", buf, 12)
    return DUBBO_HEADER + body_len


def kafka_frame_length(buf: bytes) -> Optional[int]:
    """Bytes of the Kafka request or response at the start of buf (i32 size, excluding itself)."""
    if len(buf) < 4:
        return None
    (size,) = struct.unpack_from(">i", buf, 0)
    if size < 0:
        raise ValueError(f"not a Kafka frame: size {size}")
    return 4 + size


def split_frames(buf: bytes, frame_length: FrameLength) -> tuple[list[bytes], int]:
    """Whole frames at the start of buf, and how many bytes they use (a partial tail is left)."""
    frames: list[bytes] = []
    offset = 0
    while offset < len(buf):
        size = frame_length(buf[offset:])
        if size is None or offset + size > len(buf):
            break
        frames.append(bytes(buf[offset : offset + size]))
        offset += size
    return frames, offset
