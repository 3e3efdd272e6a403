# C declarations for hessian2.py when it is compiled (setup.py); the .py file is the code.
import cython

# the short ASCII strings of a request (its names and attachments), decoded from the buffer
@cython.locals(code=cython.uchar, stop=Py_ssize_t)
cpdef object _short_string(bytes data, Py_ssize_t pos, Py_ssize_t end)

# called within the module in C (every string, a map's keys and values, a skipped value)
cpdef tuple _value_at(buf, pos, end, ctx)
cpdef tuple _string_at(buf, pos, end)
cpdef object _skip(buf, pos, end, ctx, depth)
