/* vtl/_fastpath_common.h: the small helpers both halves of vtl._fastpath use (_fastpath.c,
 * the transport and the read side; _fastpath_write.c, the drive's write side).
 *
 * Why a header of static inline functions rather than a third source file with exported
 * ones: every one is a few instructions on a path run once per command, and the compiler
 * inlines them into each caller; a call across files would not be. Attribute helpers read
 * and write the Python objects' own attributes, so the C paths never keep state of their own.
 */
#ifndef VTL_FASTPATH_COMMON_H
#define VTL_FASTPATH_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Big-endian (iSCSI, SCSI) and little-endian (the cartridge's record header) fields. */
static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static inline void put32le(uint8_t *p, uint32_t v)
{
    p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}

static inline void put64le(uint8_t *p, uint64_t v)
{
    put32le(p, (uint32_t)v);
    put32le(p + 4, (uint32_t)(v >> 32));
}

/* A METH_FASTCALL function's argument count: 0 when it is n, else -1 with a TypeError
 * naming the call as ``usage`` says it ("append_now(cart, data, compress)"). */
static inline int check_nargs(Py_ssize_t nargs, Py_ssize_t n, const char *usage)
{
    if (nargs == n)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s: %zd arguments, not %zd", usage, n, nargs);
    return -1;
}

/* getattr(obj, name) as a C integer; -1 with an exception set on failure. */
static inline int get_ll(PyObject *obj, PyObject *name, long long *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* setattr(obj, name, value): 0, or -1 with an exception set. */
static inline int set_ll(PyObject *obj, PyObject *name, long long value)
{
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return r;
}

/* obj.name += delta (an int attribute). */
static inline int add_ll(PyObject *obj, PyObject *name, long long delta)
{
    long long v;
    return get_ll(obj, name, &v) < 0 ? -1 : set_ll(obj, name, v + delta);
}

/* bool(getattr(obj, name)): 1, 0, or -1 with an exception set. */
static inline int get_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* getattr(obj, name) is want (1), is not (0), -1 with an exception set. */
static inline int attr_is(PyObject *obj, PyObject *name, PyObject *want)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    Py_DECREF(v);
    return v == want;
}

/* obj.name(): 0, or -1 with an exception set (lock.acquire(), lock.release()). */
static inline int call_method0(PyObject *obj, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(obj, name);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The attribute names plain_nexus reads, interned once per caller (nexus_names_init). */
typedef struct {
    PyObject *last_nexus, *ua, *reserve6, *pr, *reservation, *immediate, *thread, *failed;
} nexus_names_t;

static inline int nexus_names_init(nexus_names_t *n)
{
    const char *text[] = {"_last_nexus", "_ua", "_reserve6", "pr", "reservation", "_immediate",
                          "_thread", "_failed"};
    PyObject **slot[] = {&n->last_nexus, &n->ua, &n->reserve6, &n->pr, &n->reservation,
                         &n->immediate, &n->thread, &n->failed};
    for (size_t i = 0; i < sizeof text / sizeof *text; i++)
        if ((*slot[i] = PyUnicode_InternFromString(text[i])) == NULL)
            return -1;
    return 0;
}

/* The drive's nexus checks both streaming paths make before touching the tape
 * (TapeDrive._plain_nexus and ImmediateWork.busy_for, their plain answer): ``nexus`` spoke
 * last, no unit attention waits for it, no RESERVE(6) and no persistent reservation, no IMMED
 * work running or failed. 1 plain; 0 not (the Python method decides); -1 with an exception. */
static inline int plain_nexus(PyObject *drive, PyObject *nexus, const nexus_names_t *n)
{
    int r = attr_is(drive, n->last_nexus, nexus);
    if (r <= 0)
        return r;
    PyObject *o = PyObject_GetAttr(drive, n->ua);
    if (o == NULL)
        return -1;
    r = 0;
    if (!PyDict_Check(o)) {
        r = 1;  /* not the usual dict: the Python method's case */
    } else if (PyDict_GET_SIZE(o)) {
        PyObject *pending = PyDict_GetItemWithError(o, nexus);
        r = pending != NULL ? PyObject_IsTrue(pending) : PyErr_Occurred() ? -1 : 0;
    }
    Py_DECREF(o);
    if (r != 0)
        return r < 0 ? -1 : 0;
    if ((r = attr_is(drive, n->reserve6, Py_None)) <= 0)
        return r;
    if ((o = PyObject_GetAttr(drive, n->pr)) == NULL)
        return -1;
    r = attr_is(o, n->reservation, Py_None);
    Py_DECREF(o);
    if (r <= 0)
        return r;
    if ((o = PyObject_GetAttr(drive, n->immediate)) == NULL)
        return -1;
    r = attr_is(o, n->thread, Py_None);
    if (r > 0)
        r = attr_is(o, n->failed, Py_None);
    Py_DECREF(o);
    return r;
}

#endif
