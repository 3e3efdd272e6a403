# C declarations for stream.py when it is compiled (setup.py); the .py file is the code.

import cython

cdef class Stream

cdef class Slot:
    cdef public bint done
    cdef public object data

cdef class OrderedOutput:
    cdef public object slots, send
    cpdef Slot reserve(self)
    cpdef fill(self, Slot slot, data)

cdef Py_ssize_t TICKS_PER_SECOND

cdef class Deadlines:
    cdef public object loop, handle, next_tick, last_key
    cdef public dict buckets, last_bucket
    cdef public Py_ssize_t last_tick
    @cython.locals(tick=Py_ssize_t, bucket=dict)
    cpdef add(self, Stream stream, double at)
    @cython.locals(bucket=dict)
    cpdef remove(self, Stream stream)

cdef class Stream:
    cdef public object downstream, _frame, down_id, kind, raw, phase, slot, timer, upstream
    cdef public object cluster, endpoint, service, method, tried, cluster_name, target
    cdef public Deadlines deadlines
    cdef public object extra_headers, timeout, up_id, span
    cdef public double arrived, started
    cdef public Py_ssize_t seq, retries, id_at, received
    cdef public bint modified, paused
    cpdef bint end(self)
    cpdef leave_cluster(self)
    cpdef finish(self, frame, data, status=*)
    cpdef fail(self, code, message=*)
