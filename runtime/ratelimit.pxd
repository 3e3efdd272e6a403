# C declarations for ratelimit.py when it is compiled (setup.py); the .py file is the code.

import cython

from .stream cimport Stream

cdef class Bucket:
    cdef public double tokens, stamp

cdef class TokenBuckets:
    cdef public double rate, burst, cap, refill, _share
    cdef public tuple per
    cdef public Py_ssize_t max_buckets
    cdef public object reject, metrics
    cdef public dict table
    cdef public Bucket bucket
    cpdef tuple descriptor(self, Stream ctx)
    @cython.locals(bucket=Bucket, now=cython.double, tokens=cython.double)
    cpdef on_request(self, Stream ctx)
