/* tape_formats.store._streamfast: a record payload copied into a dedup cartridge's stream
 * buffer with the GIL released.
 *
 * Why: the drive's write-behind appender copies every payload into the stream tail
 * (stream_tail.py) before FastCDC cuts it. A memoryview slice assignment copies holding the
 * GIL (0.15-0.2 CPU s per GB written, a fifth of the GIL-held time of a first full on a
 * dedup store), while the compress threads wait for the GIL after every chunk. This is the
 * same single memcpy, with the GIL released for big payloads; stream_tail._copy stays the
 * reference and the fallback.
 *
 * copy_into(dst, at, src) -> None
 *   dst: a writable contiguous buffer (the stream's bytearray), src: any contiguous buffer;
 *   src's bytes go to dst[at:at + len(src)] (ValueError when they do not fit). Both buffers
 *   stay exported during the copy, so neither can be resized or freed under it.
 *
 * new_buffer(n) -> bytearray
 *   A bytearray of n bytes whose contents are undefined: not zero-filled, so a new stream
 *   buffer's pages are first touched by copy_into, the GIL released, instead of by
 *   bytearray(n)'s memset holding it (a fresh 5 MiB buffer's page faults took ~20 ms on this
 *   VM kind). The stream tail only ever exposes bytes it copied in.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Below this the GIL's release and take cost more than the copy. */
#define RELEASE_FROM (64 * 1024)

static PyObject *copy_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "copy_into(dst, at, src)");
        return NULL;
    }
    Py_ssize_t at = PyLong_AsSsize_t(args[1]);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer dst, src;
    if (PyObject_GetBuffer(args[0], &dst, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &src, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&dst);
        return NULL;
    }
    if (at < 0 || src.len > dst.len - at) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "copy_into: the source does not fit");
        return NULL;
    }
    if (src.len >= RELEASE_FROM) {
        Py_BEGIN_ALLOW_THREADS
        memcpy((char *)dst.buf + at, src.buf, (size_t)src.len);
        Py_END_ALLOW_THREADS
    } else if (src.len) {
        memcpy((char *)dst.buf + at, src.buf, (size_t)src.len);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    Py_RETURN_NONE;
}

static PyObject *new_buffer(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "new_buffer: negative size");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, n);
}

PyDoc_STRVAR(new_buffer_doc,
             "new_buffer(n): a bytearray of n bytes, not zero-filled (contents undefined).");

PyDoc_STRVAR(copy_into_doc,
             "copy_into(dst, at, src): src's bytes into dst from offset at, the GIL released\n"
             "for big copies.");

static PyMethodDef methods[] = {
    {"copy_into", (PyCFunction)(void (*)(void))copy_into, METH_FASTCALL, copy_into_doc},
    {"new_buffer", new_buffer, METH_O, new_buffer_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_streamfast",
    "A dedup cartridge's stream copies with the GIL released (stream_tail.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__streamfast(void)
{
    return PyModule_Create(&module);
}
