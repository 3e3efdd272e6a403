# C declarations for api.py when it is compiled (setup.py); the .py file is the code.
import cython

# the header maps of a request's scan: slices of ``data`` (bytes) decode from its buffer.
# (Offsets stay Python ints: a 64-bit length is refused as in Python, never overflows.)
@cython.locals(out=dict, data=bytes)
cpdef dict read_kvmap_fixed(buf, pos, end, length, signed)
