# C declarations for api.py when it is compiled (setup.py); the .py file is the code.
import cython

# the header maps of a request's scan: slices of ``data`` (bytes) decode from its buffer.
# (Offsets stay Python ints: a 64-bit length is refused as in Python, never overflows.)
cpdef dict read_kvmap_fixed(buf, pos, end, length, signed)
@cython.locals(out=dict)
cpdef dict _read_kvmap_struct(bytes data, pos, end, length, signed)

# its 32-bit big-endian case: offsets and lengths as C integers (``data[pos:end]`` is within
# ``data``, checked by the caller; a 32-bit length fits a long long)
@cython.locals(size=cython.longlong)
cdef inline long long _be32_at(bytes data, Py_ssize_t pos, Py_ssize_t end, bint lsigned) except? -1
@cython.locals(out=dict, size=cython.longlong)
cpdef dict _read_kvmap_be32(bytes data, Py_ssize_t pos, Py_ssize_t end, bint lsigned, bint signed)
