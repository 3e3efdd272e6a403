# C declarations for stream.py when it is compiled (setup.py); the .py file is the code.

cdef class Stream

cdef class Slot:
    cdef public bint done
    cdef public object data

cdef class OrderedOutput:
    cdef public object slots, send
    cpdef Slot reserve(self)
    cpdef fill(self, Slot slot, data)

cdef class Deadlines:
    cdef public object loop, handle, next_tick
    cdef public dict buckets
    cpdef add(self, stream, double at)
    cpdef remove(self, stream)

cdef class Stream:
    cdef public object downstream, _frame, down_id, kind, raw, phase, slot, timer, upstream
    cdef public object cluster, endpoint, service, method, tried, cluster_name, target
    cdef public object extra_headers, timeout, up_id, span
    cdef public double arrived, started
    cdef public Py_ssize_t seq, retries, id_at, received
    cdef public bint modified, paused
    cpdef bint end(self)
    cpdef leave_cluster(self)
    cpdef finish(self, frame, data, status=*)
    cpdef fail(self, code, message=*)
