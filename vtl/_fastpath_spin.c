/* vtl._fastpath.recv_spin: wait on the CPU, briefly, for a stream's next command.
 *
 * Part of the vtl._fastpath extension (registered by fastpath_spin_init from its module
 * init); vtl/iscsi/recv_spin.py is the policy that calls it and says why.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include "_fastpath_common.h"
#include <errno.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>

/* A sched_yield that took longer than this ran another thread: the CPU is wanted, and a
 * spin would take turns from whoever wants it (four streams on two vCPUs, other jobs). */
#define YIELDED_NS 20000

static inline long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

PyDoc_STRVAR(recv_spin_doc,
"recv_spin(fd, buf, spin_ns, other_cpu_only) -> int\n\n"
"recv() into buf without blocking, tried again (yielding the CPU between tries, so a\n"
"thread waiting for this CPU runs, and giving up once one did) until bytes arrive or\n"
"spin_ns nanoseconds have passed,\n"
"with the GIL released: the bytes received (0: the peer closed), -1 when nothing came in\n"
"time, -2 without trying when other_cpu_only and the socket's last packet came from this\n"
"CPU (SO_INCOMING_CPU: the peer runs here, and would wait for the spin). Either negative:\n"
"the caller blocks in its usual recv.");

static PyObject *recv_spin(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs(nargs, 4, "recv_spin(fd, buf, spin_ns, other_cpu_only)") < 0)
        return NULL;
    long fd_l = PyLong_AsLong(args[0]);
    long long spin = PyLong_AsLongLong(args[2]);
    if ((fd_l == -1 || spin == -1) && PyErr_Occurred())
        return NULL;
    int fd = (int)fd_l;
    int other_only = PyObject_IsTrue(args[3]);
    if (other_only < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    Py_ssize_t got;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    int peer_cpu = -1;
    socklen_t len = sizeof peer_cpu;
    if (other_only && getsockopt(fd, SOL_SOCKET, SO_INCOMING_CPU, &peer_cpu, &len) == 0
            && peer_cpu >= 0 && peer_cpu == sched_getcpu()) {
        got = -2;
    } else {
        long long end = now_ns() + spin;
        for (;;) {
            got = recv(fd, view.buf, (size_t)view.len, MSG_DONTWAIT);
            if (got >= 0)
                break;
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                err = errno;
                break;
            }
            long long t = now_ns();
            if (t >= end) {
                got = -1;
                break;
            }
            sched_yield();
            if (now_ns() - t > YIELDED_NS) {  /* another thread wanted this CPU: stop */
                got = -1;
                break;
            }
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(got);
}

static PyMethodDef spin_methods[] = {
    {"recv_spin", (PyCFunction)(void (*)(void))recv_spin, METH_FASTCALL, recv_spin_doc},
    {NULL, NULL, 0, NULL},
};

int fastpath_spin_init(PyObject *module)
{
    return PyModule_AddFunctions(module, spin_methods);
}
