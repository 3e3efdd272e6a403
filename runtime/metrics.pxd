# C declarations for metrics.py when it is compiled (setup.py); the .py file is the code.
import cython

# a label set's answers: the counts per bucket (len(BUCKETS) + 1: +Inf) and the seconds, in C
cdef class Cell:
    cdef public object service, method, cluster
    cdef public long code
    cdef public long long counts[17]
    cdef public double seconds
    cpdef bint matches(self, service, method, cluster, long code)
    @cython.locals(bounds=tuple, lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, bound=double)
    cpdef add(self, double seconds)
