# C declarations for proxy.py when it is compiled (setup.py); the .py file is the code.

import cython

from .network cimport FramedConnection
from .stream cimport Stream, Deadlines
from .metrics cimport Cell
from .pool cimport Cluster
from .router cimport RouteTable

cdef class Route:
    cdef public Cluster cluster
    cdef public object picker, timeout_ms, clusters
    cdef public Py_ssize_t retries
    cpdef Cluster choose(self)

cdef class DownstreamConnection(FramedConnection):
    cdef public object listener, output, quiet_streams, request_hooks, routed_hooks
    cdef public RouteTable routes
    cdef public object metrics, session, session_pool, session_route, session_waiting
    cdef public object handshake, session_backlog
    cdef public bint has_heartbeat, draining, sessions
    cdef public double answered_at
    cdef public Py_ssize_t inflight
    cdef public Deadlines deadlines
    cdef public Cell cell
    cdef public dict codes
    cpdef admit(self, Stream stream, invalid=*, answer=*)
    @cython.locals(i=Py_ssize_t)
    cpdef bint passes(self, Stream stream, list chain, Py_ssize_t index)
    cpdef filtered(self, Stream stream)
    @cython.locals(routes=RouteTable, route=Route, cluster=Cluster, ms=cython.double,
                   start=cython.double)
    cpdef route(self, Stream stream)
    @cython.locals(cluster=Cluster)
    cpdef send_upstream(self, Stream stream)
    cpdef deliver(self, Stream stream, data, frame=*, code=*, status=*)
    @cython.locals(codes=dict)
    cpdef runtime_code(self, status)
    cpdef answer_error(self, Stream stream, code, message)
