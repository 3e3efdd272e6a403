# cython: language_level=3, boundscheck=False, wraparound=False
"""An experiment, not part of the product: bolt's fast-lane scan written by hand with C types,
to measure what a compiler back end emitting typed scans would gain (docs/performance.md).
benchmarks/typed_scan_bench.py builds it with Cython and checks it returns what the generated
scan returns on the benchmark's frames before timing both.

It reads what generated/bolt.py's scan reads: the fixed header by byte offsets, the class
name's UTF-8 checked, the header map walked in place with each length checked against the
map's end, and only service, sofa_head_target_service and sofa_head_method_name decoded."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from protoc_x.generated.bolt import _ONEWAY, _REQUEST, _RESPONSE
from protoc_x.runtime.api import DecodeError


cdef inline long be32(const unsigned char* p) noexcept:
    return <long>(<int>((<unsigned int>p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]))


cdef inline unsigned int be16(const unsigned char* p) noexcept:
    return (p[0] << 8) | p[1]


cdef inline bint is_key(const unsigned char* p, Py_ssize_t n, bytes key) noexcept:
    cdef const unsigned char* q = <const unsigned char*>PyBytes_AS_STRING(key)
    cdef Py_ssize_t i
    if n != PyBytes_GET_SIZE(key):
        return False
    for i in range(n):
        if p[i] != q[i]:
            return False
    return True


def scan(bytes buf, Py_ssize_t start=0, direction=None, first=False):
    cdef const unsigned char* base = <const unsigned char*>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef const unsigned char* p
    cdef Py_ssize_t end, pos, he, kl, vl, hdr, cl, hl, bl
    cdef int kind_b
    if n - start >= 1 and base[start] != 1:
        raise DecodeError(start, "proto: expected %#x, got %#x" % (1, base[start]))
    if n - start < 20:
        return None
    p = base + start
    kind_b = p[1]
    hdr = 20 if kind_b == 0 else 22
    if n - start < hdr:
        return None
    cl = be16(p + hdr - 8)
    hl = be16(p + hdr - 6)
    bl = <unsigned int>be32(p + hdr - 4)
    end = start + hdr + cl + hl + bl
    if end > n:
        return None
    if cl:
        buf[start + hdr : start + hdr + cl].decode()
    if kind_b == 0:
        return (end - start, <unsigned int>be32(p + 5), 5, _RESPONSE, be16(p + 2) == 0, None,
                None, be16(p + 10))
    service = service2 = method = None
    pos = hdr + cl
    he = pos + hl
    while pos < he:
        if he - pos < 4:
            raise DecodeError(start + pos, "headers: bad size")
        kl = be32(p + pos)
        if kl < 0 or he - pos - 4 - kl < 4:
            raise DecodeError(start + pos, "headers: bad size")
        vl = be32(p + pos + 4 + kl)
        if vl < 0 or he - pos - 8 - kl < vl:
            raise DecodeError(start + pos, "headers: bad size")
        if is_key(p + pos + 4, kl, b"service"):
            service = buf[start + pos + 8 + kl : start + pos + 8 + kl + vl].decode()
        elif is_key(p + pos + 4, kl, b"sofa_head_target_service"):
            service2 = buf[start + pos + 8 + kl : start + pos + 8 + kl + vl].decode()
        elif is_key(p + pos + 4, kl, b"sofa_head_method_name"):
            method = buf[start + pos + 8 + kl : start + pos + 8 + kl + vl].decode()
        pos += 8 + kl + vl
    return (end - start, <unsigned int>be32(p + 5), 5, _ONEWAY if kind_b == 2 else _REQUEST,
            be16(p + 2) == 0, service if service is not None else service2, method,
            be32(p + 10))
