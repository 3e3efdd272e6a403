# C declarations for network.py when it is compiled (setup.py); the .py file is the code.
# Attributes are typed where the hot path reads them; methods the other compiled modules call
# are cpdef (called in C from them, still overridable from Python).

cdef class FramedConnection:
    cdef public object proto, transport, out, loop, partial_since, holds, partial_size
    cdef public object measuring
    cdef public object buf  # a bytearray (a test may count what is read from it)
    cdef public bint flush_scheduled, closed, ended, write_paused, first
    cdef public double last_activity
    cdef public Py_ssize_t out_bytes, max_frame_bytes, waiting
    cpdef send(self, data)
    cpdef flush(self)
    cpdef close(self)
    cpdef abort(self)
    cpdef hold(self, reason)
    cpdef release(self, reason)
    cpdef on_frame(self, frame, buf, Py_ssize_t start, Py_ssize_t length)
    cpdef on_scanned(self, tuple found, buf, Py_ssize_t start)
    cpdef frame_at(self, buf, Py_ssize_t start)
    cpdef after_flush(self)
