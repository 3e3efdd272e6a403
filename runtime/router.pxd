# C declarations for router.py when it is compiled (setup.py); the .py file is the code.
# The route table the fast lane asks once per request: its lookups and memos in C.
import cython

cdef class _VirtualHost:
    cdef public object name, routes
    cdef public dict by_method  # (None: a route reads headers)

cdef class RouteTable:
    cdef public dict _exact, _cache
    cdef public tuple _suffixes, _prefixes
    cdef public object _default
    cdef public Py_ssize_t _cache_max
    cdef public bint reads_headers
    @cython.locals(cache=dict)
    cpdef _host(self, service)
    @cython.locals(host=_VirtualHost, memo=dict)
    cpdef match(self, service, method, headers=*)
