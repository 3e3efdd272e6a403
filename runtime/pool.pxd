# C declarations for pool.py when it is compiled (setup.py); the .py file is the code.

import cython

from .network cimport FramedConnection
from .stream cimport Stream

@cython.locals(one=cython.longlong, bits=int, low=cython.longlong, high=cython.longlong,
               v=cython.longlong, k=Py_ssize_t, shift=int, out=bytearray)
cdef object _with_id(bytes data, Py_ssize_t start, Py_ssize_t length, Py_ssize_t at, value,
                     int width, bint big, bint signed)

cdef class UpstreamConnection(FramedConnection):
    cdef public object pool, id_struct, generate, current, line, quiet, paused_downstreams
    cdef public object keepalive_timer, gauge, owner
    cdef public bint multiplex, pipeline, pingpong, ordered, has_goaway, retired
    cdef public dict inflight
    cdef public Py_ssize_t next_id, seq, keepalive_failures, id_width
    cdef public bint id_big, id_signed
    cpdef new_id(self)
    cpdef bytearray with_id(self, buf, Py_ssize_t start, Py_ssize_t length, Py_ssize_t at, value)
    cpdef write_stream(self, Stream stream)
    @cython.locals(request=Stream)
    cpdef answered(self, rid, buf, Py_ssize_t start, Py_ssize_t length, frame, Py_ssize_t id_at,
                   status)

cdef class EndpointPool:
    cdef public object cluster, endpoint, host, port, proto, conns, idle, waiting, held, loop
    cdef public bint shared, session, retired
    cdef public Py_ssize_t max_connections, connecting, rr, active
    cdef public double unhealthy_until
    @cython.locals(conn=UpstreamConnection)
    cpdef send(self, Stream stream)

cdef class Cluster:
    cdef public object name, metrics, retrying, connect_timeout, request_timeout_ms
    cdef public object max_connections, keepalive, endpoints, pools, pools_of, balancer
    cdef public object hash_header, only, loop, config
    cdef public double retry_percent, unhealthy_until
    cdef public int retry_min
    cdef public Py_ssize_t max_pending, max_requests, pending, active
    @cython.locals(pool=EndpointPool)
    cpdef dispatch(self, Stream stream)
    cpdef send_to(self, EndpointPool pool, Stream stream)
