/* vtl._fastpath, the write side: a streaming WRITE(6)'s device call and the cartridge's
 * append in C (compiled into the same extension as vtl/_fastpath.c, which calls
 * fastpath_write_init from its module init).
 *
 * Two functions, each the usual case of a Python method that stays the reference and the
 * fallback (VTL_NO_FASTPATH=1, or no compiler):
 *
 *   append_now(cart, data, compress)   TapeCartridge.append_now (tape_formats/cartridge.py)
 *   ssc_stream_write(dev, nexus, cdb, data)  TapeDrive.stream_write (vtl/scsi/ssc.py)
 *
 * append_now takes a plain append on a plain cartridge file (no write queued, at end of
 * data, not write protected, no fence, no encryption key, a PlainMedium) and does what
 * BlockPacker.pack, _store_packed and _append do: zstd when it pays (the cartridge's own
 * packer and its skip state, so the bytes stored are the Python path's), crc32c, the record
 * header, one pwritev, with the GIL released once for the crc32c and the pwritev; then the
 * index, the position, the dirty flag, the pacer and the counters as the Python path keeps
 * them. Any other case calls TapeCartridge.append_now itself.
 *
 * ssc_stream_write makes TapeDrive.stream_write's decisions in the same order, reading the
 * state on the Python objects (it owns nothing): a block for the write buffer is queued
 * (cart.queue_block, as _buffer_block calls it), any other is written at once (append_now);
 * anything unusual (protection information, injected faults, a unit attention or
 * reservation for the nexus... see `usual` below, a block that is not donated) is handed to
 * the Python method as it is. tests/scsi/test_stream_write_native.py holds the two to the
 * same cartridge bytes, positions, counters and answers.
 *
 * fastpath_receive_block (called by _fastpath.c's stream_write once configure_receive ran)
 * receives the block as StreamPaths._stream_write does: DataOutReceiver._write_buffer's
 * buffer, FramingMixin._recv_exact's loop.
 */
#define PY_SSIZE_T_CLEAN
#include "_fastpath_common.h"
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define WR_HEADER 32
#define WR_CRC_SPAN 28
#define WR_KIND_DATA 1
#define WR_FLAG_COMPRESSED 0x01

typedef uint32_t (*crc_fn_t)(uint32_t, const unsigned char *, unsigned long);

/* Set by configure_write(). */
static PyObject *w_append_py, *w_stream_write_py, *w_plain_medium, *w_crc32c, *w_cart_error,
    *w_globals;
static long long w_data_start, w_min_compress, w_misses_before_skip, w_skip_blocks,
    w_writeback_chunk, w_wp_flag, w_max_block, w_min_buffered, w_max_fixed;
static char w_magic[2];
static crc_fn_t w_crc_fn;  /* crc32c's own function, when found and checked; else Python */

static PyObject *w_wb, *w_blocks, *w_failed, *w_position, *w_index, *w_objects, *w_readonly,
    *w_flags, *w_fence, *w_crypto, *w_io, *w_fd, *w_end, *w_run_extra, *w_ew_point,
    *w_ahead, *w_obj, *w_span_len, *w_block_zstd, *w_packer, *w_skip, *w_misses, *w_cctx,
    *w_compress, *w_capacity, *w_fm_total, *w_offsets, *w_meta, *w_append, *w_dirty,
    *w_pacer, *w_handed, *w_appended, *w_counters, *w_written_native, *w_written_stored,
    *w_protection, *w_current, *w_lock, *w_acquire, *w_release, *w_cart, *w_loaded, *w_bay,
    *w_cartridge, *w_part, *w_media_generation, *w_gen,
    *w_library, *w_faults,
    *w_media, *w_writable, *w_buffered_mode, *w_buffered_for, *w_devconf_ext,
    *w_comp_page, *w_bytes_written, *w_streaming, *w_sense, *w_pop, *w_kw_compress,
    *w_write_streams, *w_wrote, *w_spare_buffers, *w_give_back, *w_key, *w_queue_block,
    *w_kw_queue, *w_donated_type, *w_block_size, *w_run_obj, *w_fixed_runs, *w_append_run_now,
    *w_kw_only_compress, *w_queue_run, *w_min_buffered_run;

/* ---------------------------------------------------------------- small helpers */

/* crc32c of [p, p + n) with the GIL held through Python (no C function found). */
static int w_crc_py(const void *p, Py_ssize_t n, uint32_t *out)
{
    PyObject *view = PyMemoryView_FromMemory((char *)p, n, PyBUF_READ);
    if (view == NULL)
        return -1;
    PyObject *r = PyObject_CallOneArg(w_crc32c, view);
    Py_DECREF(view);
    if (r == NULL)
        return -1;
    *out = (uint32_t)PyLong_AsUnsignedLong(r);
    Py_DECREF(r);
    return PyErr_Occurred() ? -1 : 0;
}

static inline uint32_t w_crc_c(const void *p, Py_ssize_t n)
{
    return w_crc_fn(0xFFFFFFFFu, p, (unsigned long)n) ^ 0xFFFFFFFFu;
}

/* crc32c of [p, p + n) in C, for _fastpath.c's read-ahead (no GIL needed): 1 with *out set,
 * 0 when configure_write found no C function (then crc32c.crc32c is the caller's). */
int fastpath_crc32c(const void *p, Py_ssize_t n, uint32_t *out)
{
    if (w_crc_fn == NULL)
        return 0;
    *out = w_crc_c(p, n);
    return 1;
}

/* ---------------------------------------------------------------- append_now */

/* The cartridge's checks before anything is stored: 1 the C case, 0 "not an append now"
 * (False), 2 "Python's" (a case only TapeCartridge.append_now handles), -1 error. */
static int append_case(PyObject *cart, Py_ssize_t n, PyObject *idx, long long *fd)
{
    PyObject *wb = PyObject_GetAttr(cart, w_wb);
    if (wb == NULL)
        return -1;
    int r = 0;
    if (wb != Py_None) {  /* wb.blocks or wb.failed (its _error, read as the property does) */
        r = get_true(wb, w_blocks);
        if (r == 0 && (r = attr_is(wb, w_failed, Py_None)) >= 0)
            r = !r;
    }
    Py_DECREF(wb);
    if (r != 0)
        return r < 0 ? -1 : 0;
    long long pos, objects, flags;
    if (get_ll(cart, w_position, &pos) < 0 || get_ll(idx, w_objects, &objects) < 0)
        return -1;
    if (pos != objects)
        return 0;
    if ((r = get_true(cart, w_readonly)) != 0)
        return r < 0 ? -1 : 0;
    /* check_writable (write protect, a fence to ask) and the sealing key: Python's */
    if (get_ll(cart, w_flags, &flags) < 0)
        return -1;
    if (flags & w_wp_flag)
        return 2;
    if ((r = attr_is(cart, w_fence, Py_None)) <= 0)
        return r < 0 ? -1 : 2;
    PyObject *crypto = PyObject_GetAttr(cart, w_crypto);  /* settings without a key: plain */
    if (crypto == NULL)
        return -1;
    r = crypto == Py_None ? 1 : attr_is(crypto, w_key, Py_None);
    Py_DECREF(crypto);
    if (r <= 0)
        return r < 0 ? -1 : 2;
    PyObject *io = PyObject_GetAttr(cart, w_io);
    if (io == NULL)
        return -1;
    r = Py_IS_TYPE(io, (PyTypeObject *)w_plain_medium) ? 1 : 2;
    if (r == 1 && get_ll(io, w_fd, fd) < 0)
        r = -1;
    Py_DECREF(io);
    if (r != 1)
        return r;
    /* the early-warning check, on the medium's end (a run of filemarks counts in full) */
    long long end, ew, extra = 0;
    if (get_ll(idx, w_end, &end) < 0 || get_ll(cart, w_ew_point, &ew) < 0)
        return -1;
    PyObject *runs = PyObject_GetAttr(idx, w_run_extra);
    if (runs == NULL)
        return -1;
    Py_ssize_t nruns = PyObject_Length(runs);
    if (nruns > 0) {
        PyObject *last = PySequence_GetItem(runs, nruns - 1);
        extra = last ? PyLong_AsLongLong(last) : -1;
        Py_XDECREF(last);
    }
    Py_DECREF(runs);
    if (nruns < 0 || (extra == -1 && PyErr_Occurred()))
        return -1;
    return end + extra * WR_HEADER + WR_HEADER + n >= w_data_start + ew ? 0 : 1;
}

/* BlockPacker.pack without a key: the payload (new reference: zstd's output or `data`) and
 * its flags, the packer's skip state kept as the Python method keeps it. */
static PyObject *pack_payload(PyObject *cart, PyObject *data, Py_ssize_t n, int compress,
                              int *flags)
{
    *flags = 0;
    if (compress) {
        int z = get_true(cart, w_block_zstd);
        if (z < 0)
            return NULL;
        compress = z;
    }
    if (!compress || n < w_min_compress) {
        Py_INCREF(data);
        return data;
    }
    PyObject *packer = PyObject_GetAttr(cart, w_packer);
    if (packer == NULL)
        return NULL;
    PyObject *payload = NULL;
    long long skip, misses;
    if (get_ll(packer, w_skip, &skip) < 0)
        goto out;
    if (skip) {
        if (set_ll(packer, w_skip, skip - 1) < 0)
            goto out;
        Py_INCREF(data);
        payload = data;
        goto out;
    }
    PyObject *cctx = PyObject_GetAttr(packer, w_cctx);
    PyObject *packed = cctx ? PyObject_CallMethodOneArg(cctx, w_compress, data) : NULL;
    Py_XDECREF(cctx);
    if (packed == NULL)
        goto out;
    if (PyBytes_GET_SIZE(packed) < n) {
        if (set_ll(packer, w_misses, 0) < 0) {
            Py_DECREF(packed);
            goto out;
        }
        *flags = WR_FLAG_COMPRESSED;
        payload = packed;
        goto out;
    }
    Py_DECREF(packed);
    if (get_ll(packer, w_misses, &misses) < 0 || set_ll(packer, w_misses, misses + 1) < 0)
        goto out;
    if (misses + 1 >= w_misses_before_skip && set_ll(packer, w_skip, w_skip_blocks) < 0)
        goto out;
    Py_INCREF(data);
    payload = data;
out:
    Py_DECREF(packer);
    return payload;
}

/* getattr(obj, name) += by. */
/* _store_packed + _append for a DATA record, the payload packed: 0 or -1 (an exception set;
 * nothing stored). */
static int store(PyObject *cart, PyObject *idx, long long fd, PyObject *payload, Py_ssize_t n,
                 int flags)
{
    long long end, extra = 0, capacity, fm_total, obj;
    Py_buffer pv;
    if (PyObject_GetBuffer(payload, &pv, PyBUF_SIMPLE) < 0)
        return -1;
    int r = -1;
    if (get_ll(idx, w_end, &end) < 0 || get_ll(cart, w_capacity, &capacity) < 0
            || get_ll(idx, w_fm_total, &fm_total) < 0 || get_ll(idx, w_objects, &obj) < 0)
        goto out;
    PyObject *runs = PyObject_GetAttr(idx, w_run_extra);
    if (runs == NULL)
        goto out;
    Py_ssize_t nruns = PyObject_Length(runs);
    if (nruns > 0) {
        PyObject *last = PySequence_GetItem(runs, nruns - 1);
        extra = last ? PyLong_AsLongLong(last) : -1;
        Py_XDECREF(last);
    }
    Py_DECREF(runs);
    if (nruns < 0 || (extra == -1 && PyErr_Occurred()))
        goto out;
    if (end + extra * WR_HEADER - w_data_start + WR_HEADER + pv.len > capacity) {
        PyErr_Format(w_cart_error, "cartridge is full (%lld bytes)", capacity);
        goto out;
    }
    uint8_t head[WR_HEADER];
    memcpy(head, w_magic, 2);
    head[2] = WR_KIND_DATA;
    head[3] = (uint8_t)flags;
    put32le(head + 4, (uint32_t)pv.len);
    put32le(head + 8, (uint32_t)n);
    put32le(head + 12, (uint32_t)fm_total);
    put64le(head + 16, (uint64_t)obj);
    uint32_t pcrc = 0, hcrc = 0;
    if (w_crc_fn == NULL) {
        if (w_crc_py(pv.buf, pv.len, &pcrc) < 0)
            goto out;
        put32le(head + 24, pcrc);
        if (w_crc_py(head, WR_CRC_SPAN, &hcrc) < 0)
            goto out;
        put32le(head + 28, hcrc);
    }
    struct iovec iov[2] = {{head, WR_HEADER}, {pv.buf, (size_t)pv.len}};
    ssize_t want = WR_HEADER + pv.len, written;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    if (w_crc_fn != NULL) {
        put32le(head + 24, w_crc_c(pv.buf, pv.len));
        put32le(head + 28, w_crc_c(head, WR_CRC_SPAN));
    }
    do {
        written = pwritev((int)fd, iov, pv.len ? 2 : 1, (off_t)end);
    } while (written < 0 && errno == EINTR);
    if (written != want) {
        err = written < 0 ? errno : EIO;
        /* leave nothing half-written behind: cut back to the last whole record */
        if (ftruncate((int)fd, (off_t)end) < 0) { /* the error to raise is the write's */ }
    }
    Py_END_ALLOW_THREADS
    if (err) {
        if (err == EIO && written >= 0) {  /* OSError(errno.EIO, "short write") */
            PyObject *exc = PyObject_CallFunction(PyExc_OSError, "is", EIO, "short write");
            if (exc != NULL) {
                PyErr_SetObject(PyExc_OSError, exc);
                Py_DECREF(exc);
            }
        } else {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        goto out;
    }
    /* PositionIndex.append for a DATA record, then the cartridge's and the pacer's state */
    PyObject *offsets = PyObject_GetAttr(idx, w_offsets);
    PyObject *meta = offsets ? PyObject_GetAttr(idx, w_meta) : NULL;
    PyObject *o = meta ? PyLong_FromLongLong(end) : NULL;
    PyObject *m = o ? PyLong_FromUnsignedLongLong(((unsigned long long)n << 16)
                                                  | ((unsigned)flags << 8) | WR_KIND_DATA)
                    : NULL;
    PyObject *a1 = m ? PyObject_CallMethodOneArg(offsets, w_append, o) : NULL;
    PyObject *a2 = a1 ? PyObject_CallMethodOneArg(meta, w_append, m) : NULL;
    int ok = a2 != NULL;
    Py_XDECREF(a1);
    Py_XDECREF(a2);
    Py_XDECREF(o);
    Py_XDECREF(m);
    Py_XDECREF(offsets);
    Py_XDECREF(meta);
    long long new_end = end + want;
    if (!ok || set_ll(idx, w_objects, obj + 1) < 0 || set_ll(idx, w_end, new_end) < 0
            || set_ll(cart, w_position, obj + 1) < 0
            || PyObject_SetAttr(cart, w_dirty, Py_True) < 0)
        goto out;
    /* WritebackPacer.appended: nothing to do unless the tape was cut back or a write-out
     * chunk is due, which the Python method handles */
    PyObject *pacer = PyObject_GetAttr(cart, w_pacer);
    if (pacer == NULL)
        goto out;
    long long handed;
    int pr = get_ll(pacer, w_handed, &handed);
    if (pr == 0 && (handed > end || new_end - handed >= w_writeback_chunk)) {
        PyObject *a = PyLong_FromLongLong(end), *b = PyLong_FromLongLong(new_end);
        PyObject *res = a && b ? PyObject_CallMethodObjArgs(pacer, w_appended, a, b, NULL)
                               : NULL;
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_XDECREF(res);
        pr = res ? 0 : -1;
    }
    Py_DECREF(pacer);
    if (pr < 0)
        goto out;
    /* the counters: two stores with the GIL held, which is what their lock gives LOG SENSE */
    PyObject *counters = PyObject_GetAttr(cart, w_counters);
    if (counters == NULL)
        goto out;
    r = (add_ll(counters, w_written_native, n) < 0
         || add_ll(counters, w_written_stored, pv.len) < 0) ? -1 : 0;
    Py_DECREF(counters);
out:
    PyBuffer_Release(&pv);
    return r;
}

/* The cartridge's read-ahead forgets the block and the run it holds (ReadAhead.clear). */
static int clear_ahead(PyObject *cart)
{
    PyObject *ahead = PyObject_GetAttr(cart, w_ahead);
    if (ahead == NULL)
        return -1;
    int r = (set_ll(ahead, w_obj, -1) < 0 || set_ll(ahead, w_run_obj, -1) < 0
             || set_ll(ahead, w_span_len, 0) < 0) ? -1 : 0;
    Py_DECREF(ahead);
    return r;
}

/* append_now's body: 1 written, 0 not (nothing written), -1 error (nothing written). */
static int append_now_c(PyObject *cart, PyObject *data, int compress)
{
    Py_ssize_t n = PyObject_Length(data);
    if (n < 0)
        return -1;
    PyObject *idx = PyObject_GetAttr(cart, w_index);
    if (idx == NULL)
        return -1;
    long long fd = -1;
    int r = append_case(cart, n, idx, &fd);
    if (r == 2) {  /* TapeCartridge.append_now's own case */
        PyObject *kw = PyDict_New();
        PyObject *res = NULL;
        if (kw != NULL && PyDict_SetItem(kw, w_kw_compress, compress ? Py_True : Py_False) == 0) {
            PyObject *args = PyTuple_Pack(2, cart, data);
            res = args ? PyObject_Call(w_append_py, args, kw) : NULL;
            Py_XDECREF(args);
        }
        Py_XDECREF(kw);
        r = res ? PyObject_IsTrue(res) : -1;
        Py_XDECREF(res);
    } else if (r == 1) {
        int flags;
        PyObject *payload = NULL;
        if (clear_ahead(cart) < 0
                || (payload = pack_payload(cart, data, n, compress, &flags)) == NULL
                || store(cart, idx, fd, payload, n, flags) < 0)
            r = -1;
        Py_XDECREF(payload);
    }
    Py_DECREF(idx);
    return r;
}

static int w_configured(void)
{
    if (w_append_py == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "vtl._fastpath: configure_write() first");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(append_now_doc,
"append_now(cart, data, compress) -> bool\n\n"
"TapeCartridge.append_now(cart, data, compress=compress), its usual case in C.");

static PyObject *append_now(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs(nargs, 3, "append_now(cart, data, compress)") < 0)
        return NULL;
    if (w_configured() < 0)
        return NULL;
    int compress = PyObject_IsTrue(args[2]);
    if (compress < 0)
        return NULL;
    int r = append_now_c(args[0], args[1], compress);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

/* ---------------------------------------------------------------- ssc_stream_write */

/* The drive's state allows the C path (1), or it is a case for the Python method (0): the
 * things a plain append never meets are checked here, cheaply, and any of them sends the
 * command to TapeDrive.stream_write, which knows them all. -1: error. */
static nexus_names_t w_nexus_names;

static int usual(PyObject *dev, PyObject *nexus)
{
    int r;
    /* logical block protection (protection.active): LBP_W or LBP_R set */
    PyObject *prot = PyObject_GetAttr(dev, w_protection);
    PyObject *cur = prot ? PyObject_GetAttr(prot, w_current) : NULL;
    Py_XDECREF(prot);
    if (cur == NULL)
        return -1;
    if (!PyByteArray_Check(cur) && !PyBytes_Check(cur)) {
        Py_DECREF(cur);
        return 0;
    }
    const char *c = PyByteArray_Check(cur) ? PyByteArray_AS_STRING(cur) : PyBytes_AS_STRING(cur);
    Py_ssize_t clen = PyByteArray_Check(cur) ? PyByteArray_GET_SIZE(cur) : PyBytes_GET_SIZE(cur);
    r = clen >= 3 && (c[2] & 0xC0) == 0;  /* _LBP_W | _LBP_R */
    Py_DECREF(cur);
    if (r <= 0)
        return r;
    /* the nexus spoke last, no unit attention to tell it, no reservation, no IMMED work */
    if ((r = plain_nexus(dev, nexus, &w_nexus_names)) <= 0)
        return r;
    /* no injected media errors at all (FaultTable._media empty) */
    PyObject *bay = PyObject_GetAttr(dev, w_bay);
    PyObject *lib = bay ? PyObject_GetAttr(bay, w_library) : NULL;
    PyObject *faults = lib ? PyObject_GetAttr(lib, w_faults) : NULL;
    Py_XDECREF(bay);
    Py_XDECREF(lib);
    if (faults == NULL)
        return -1;
    r = get_true(faults, w_media);
    Py_DECREF(faults);
    if (r != 0)
        return r < 0 ? -1 : 0;
    /* no programmable early warning set (PEWS 0: _near_pew is False) */
    PyObject *dce = PyObject_GetAttr(dev, w_devconf_ext);
    cur = dce ? PyObject_GetAttr(dce, w_current) : NULL;
    Py_XDECREF(dce);
    if (cur == NULL)
        return -1;
    if (PyByteArray_Check(cur) && PyByteArray_GET_SIZE(cur) >= 4)
        r = PyByteArray_AS_STRING(cur)[2] == 0 && PyByteArray_AS_STRING(cur)[3] == 0;
    else if (PyBytes_Check(cur) && PyBytes_GET_SIZE(cur) >= 4)
        r = PyBytes_AS_STRING(cur)[2] == 0 && PyBytes_AS_STRING(cur)[3] == 0;
    else
        r = 0;
    Py_DECREF(cur);
    return r;
}

/* The mounted cartridge as _stream_cart finds it (new reference), Py_None (a new
 * reference) when the streaming path may not use it, NULL on error. */
static PyObject *stream_cart(PyObject *dev)
{
    PyObject *cart = PyObject_GetAttr(dev, w_cart);
    if (cart == NULL || cart == Py_None)
        return cart;
    int r = get_true(dev, w_loaded);
    if (r > 0) {
        PyObject *bay = PyObject_GetAttr(dev, w_bay);
        PyObject *bc = bay ? PyObject_GetAttr(bay, w_cartridge) : NULL;
        long long g1 = 0, g2 = 0;
        r = bc == NULL ? -1 : bc == cart;
        if (r > 0 && (r = get_true(dev, w_part)) >= 0)
            r = !r;  /* another partition: declined, the general path's */
        if (r > 0)
            r = (get_ll(bay, w_media_generation, &g1) < 0 || get_ll(dev, w_gen, &g2) < 0)
                ? -1 : g1 == g2;
        Py_XDECREF(bc);
        Py_XDECREF(bay);
    }
    if (r < 0) {
        Py_DECREF(cart);
        return NULL;
    }
    if (r == 0) {
        Py_DECREF(cart);
        Py_RETURN_NONE;
    }
    return cart;
}

/* cart.write_failed and cart.writes_pending, from its write buffer: 0 or -1. */
static int wb_state(PyObject *cart, int *failed, int *pending)
{
    *failed = *pending = 0;
    PyObject *wb = PyObject_GetAttr(cart, w_wb);
    if (wb == NULL)
        return -1;
    int r = 0;
    if (wb != Py_None) {
        long long blocks;
        r = attr_is(wb, w_failed, Py_None);  /* WriteBehind.failed: _error is not None */
        if (r >= 0) {
            *failed = !r;
            r = get_ll(wb, w_blocks, &blocks);
            *pending = *failed || blocks > 0;
        }
    }
    Py_DECREF(wb);
    return r < 0 ? -1 : 0;
}

static int done(PyObject *dev, PyObject *nexus);

/* A CartridgeError or OSError with nothing stored: declined (0), the general path meets
 * it again and reports it; anything else stays an error (-1). */
static int stored_nothing(void)
{
    if (PyErr_ExceptionMatches(w_cart_error) || PyErr_ExceptionMatches(PyExc_OSError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* _buffer_block's queue_block call for a donated block (the transport's DonatedBuffer, or
 * bytes): cart.queue_block(data, compress=..., done=SPARE_BUFFERS.give_back), or with
 * ``run`` (a fixed-mode WRITE's blocks of that size) cart.queue_run(data, run, ...). 1
 * queued, 0 not taken (write it now), 2 a block that is not donated (the Python method
 * copies it), -1 error. */
static int queue(PyObject *cart, PyObject *data, int compress, long long run)
{
    PyObject *base = PyMemoryView_Check(data) ? PyMemoryView_GET_BASE(data) : data;
    if (base == NULL || (!PyBytes_CheckExact(base) && (PyObject *)Py_TYPE(base) != w_donated_type))
        return 2;
    PyObject *spare = PyDict_GetItemWithError(w_globals, w_spare_buffers);
    if (spare == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_KeyError, "SPARE_BUFFERS");
        return -1;
    }
    PyObject *give_back = PyObject_GetAttr(spare, w_give_back);
    if (give_back == NULL)
        return -1;
    PyObject *res = NULL;
    if (run) {  /* a small run's buffer is not pooled (_buffer_block) */
        PyObject *sz = PyLong_FromLongLong(run);
        PyObject *args[] = {cart, data, sz, compress ? Py_True : Py_False,
                            PyObject_Length(data) >= w_min_buffered ? give_back : Py_None};
        res = sz ? PyObject_VectorcallMethod(w_queue_run, args, 3, w_kw_queue) : NULL;
        Py_XDECREF(sz);
    } else {
        PyObject *args[] = {cart, data, compress ? Py_True : Py_False, give_back};
        res = PyObject_VectorcallMethod(w_queue_block, args, 2, w_kw_queue);
    }
    Py_DECREF(give_back);
    if (res == NULL)
        return -1;
    int r = PyObject_IsTrue(res);
    Py_DECREF(res);
    return r;
}

/* TapeDrive._write_run_now's case once stream_write's checks passed: FIXED_RUNS, then
 * cart.append_run_now(data, size, compress=...). 1 written, 0 not (nothing written), -1
 * error. Takes the reference to ``cart``. */
static int write_run(PyObject *dev, PyObject *nexus, PyObject *cart, PyObject *data,
                     Py_ssize_t n, long long size, int compress)
{
    PyObject *on = PyDict_GetItemWithError(w_globals, w_fixed_runs);
    int r = on != NULL ? PyObject_IsTrue(on) : PyErr_Occurred() ? -1 : 0;
    if (r <= 0) {
        Py_DECREF(cart);
        return r;
    }
    PyObject *sz = PyLong_FromLongLong(size);
    PyObject *args[] = {cart, data, sz, compress ? Py_True : Py_False};
    PyObject *res = sz ? PyObject_VectorcallMethod(w_append_run_now, args,
                                                   3,
                                                   w_kw_only_compress) : NULL;
    Py_XDECREF(sz);
    Py_DECREF(cart);
    if (res == NULL)
        return stored_nothing();
    r = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (r <= 0)
        return r;
    if (add_ll(dev, w_bytes_written, n) < 0)
        return -1;
    return done(dev, nexus);
}

/* A global of vtl.scsi.ssc that is an int (MIN_BUFFERED_RUN, looked up at each use as the
 * Python method does): 0, or -1 with an exception set. */
static int global_ll(PyObject *name, long long *into)
{
    PyObject *v = PyDict_GetItemWithError(w_globals, name);
    if (v == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, name);
        return -1;
    }
    *into = PyLong_AsLongLong(v);
    return *into == -1 && PyErr_Occurred() ? -1 : 0;
}

/* What stream_write decides under the drive's lock: 1 written (GOOD), 0 declined (nothing
 * changed), 2 the Python method's, -1 error. (One block of a fixed-mode WRITE is a
 * variable-mode block of the mode's size; ``run``: several blocks of that size, queued as
 * one run as _buffer_block does, or written now as one run, _write_run_now.) */
static int write_locked(PyObject *dev, PyObject *nexus, PyObject *data, Py_ssize_t n,
                        long long run)
{
    int r = usual(dev, nexus);
    if (r <= 0)
        return r < 0 ? -1 : 2;
    PyObject *cart = stream_cart(dev);
    if (cart == NULL)
        return -1;
    if (cart == Py_None) {
        Py_DECREF(cart);
        return 0;
    }
    int failed, pending;
    if (wb_state(cart, &failed, &pending) < 0)
        goto error;
    if (failed) {
        Py_DECREF(cart);
        return 0;
    }
    /* _can_write: the cartridge the Python path last found writable (TapeDrive._writable) */
    PyObject *ok = PyObject_GetAttr(dev, w_writable);
    if (ok == NULL)
        goto error;
    r = ok == cart;
    Py_DECREF(ok);
    if (!r) {
        Py_DECREF(cart);
        return 2;
    }
    /* compression from mode page 0x0F (DCE) */
    PyObject *page = PyObject_GetAttr(dev, w_comp_page);
    PyObject *cur = page ? PyObject_GetAttr(page, w_current) : NULL;
    Py_XDECREF(page);
    if (cur == NULL)
        goto error;
    int compress;
    if (PyByteArray_Check(cur) && PyByteArray_GET_SIZE(cur) > 0)
        compress = (PyByteArray_AS_STRING(cur)[0] & 0x80) != 0;
    else if (PyBytes_Check(cur) && PyBytes_GET_SIZE(cur) > 0)
        compress = (PyBytes_AS_STRING(cur)[0] & 0x80) != 0;
    else
        compress = -1;
    Py_DECREF(cur);
    if (compress < 0) {
        Py_DECREF(cart);
        return 2;
    }
    /* the write buffer's case (_buffer_block) */
    long long mode, min_size = w_min_buffered;
    if (get_ll(dev, w_buffered_mode, &mode) < 0)
        goto error;
    if (mode && run) {  /* a run: MIN_BUFFERED_RUN, FIXED_RUNS */
        PyObject *on = PyDict_GetItemWithError(w_globals, w_fixed_runs);
        r = on != NULL ? PyObject_IsTrue(on) : PyErr_Occurred() ? -1 : 0;
        if (r < 0 || global_ll(w_min_buffered_run, &min_size) < 0)
            goto error;
        if (!r)
            mode = 0;
    }
    if (mode && n >= min_size) {
        int for_other = 0;
        if (pending) {
            PyObject *bf = PyObject_GetAttr(dev, w_buffered_for);
            if (bf == NULL)
                goto error;
            for_other = PyObject_RichCompareBool(nexus, bf, Py_NE);
            Py_DECREF(bf);
            if (for_other < 0)
                goto error;
        }
        if (!for_other) {
            r = 0;  /* a run is stored by this thread: no hand-off, no stream to count */
            if (!run) {
                PyObject *ws = PyDict_GetItemWithError(w_globals, w_write_streams);
                Py_XINCREF(ws);  /* borrowed from a dict the call may change */
                PyObject *id = ws ? PyLong_FromVoidPtr(dev) : NULL;
                PyObject *many = id ? PyObject_CallMethodOneArg(ws, w_wrote, id) : NULL;
                if (ws == NULL && !PyErr_Occurred())
                    PyErr_SetString(PyExc_KeyError, "WRITE_STREAMS");
                Py_XDECREF(ws);
                Py_XDECREF(id);
                r = many ? PyObject_IsTrue(many) : -1;
                Py_XDECREF(many);
                if (r < 0)
                    goto error;
            }
            if (!r) {  /* into the write buffer, or (not taken) written now */
                r = queue(cart, data, compress, run);
                if (r == 2 || r == 1) {
                    Py_DECREF(cart);
                    if (r == 2)
                        return 2;
                    if (add_ll(dev, w_bytes_written, n) < 0
                            || PyObject_SetAttr(dev, w_buffered_for, nexus) < 0)
                        return -1;
                    return done(dev, nexus);
                }
                if (r < 0) {
                    Py_DECREF(cart);
                    return stored_nothing();
                }
            }
        }
    }
    if (run)  /* _write_run_now: PEWS is 0 (usual), no faults injected */
        return write_run(dev, nexus, cart, data, n, run, compress);
    /* _write_now */
    r = append_now_c(cart, data, compress);
    Py_DECREF(cart);
    if (r < 0)
        return stored_nothing();
    if (r == 0)
        return 0;
    if (add_ll(dev, w_bytes_written, n) < 0)
        return -1;
    if (n >= w_min_buffered) {  /* a big block's donated buffer back to the spares */
        PyObject *spare = PyDict_GetItemWithError(w_globals, w_spare_buffers);
        Py_XINCREF(spare);
        PyObject *res = spare ? PyObject_CallMethodOneArg(spare, w_give_back, data) : NULL;
        if (spare == NULL && !PyErr_Occurred())
            PyErr_SetString(PyExc_KeyError, "SPARE_BUFFERS");
        Py_XDECREF(spare);
        if (res == NULL)
            return -1;
        Py_DECREF(res);
    }
    return done(dev, nexus);
error:
    Py_DECREF(cart);
    return -1;
}

/* After a block stored or queued: _streaming off, and _plain_done (the nexus's sense is
 * gone). 1, or -1. */
static int done(PyObject *dev, PyObject *nexus)
{
    if (PyObject_SetAttr(dev, w_streaming, Py_False) < 0)
        return -1;
    PyObject *sense = PyObject_GetAttr(dev, w_sense);
    if (sense == NULL)
        return -1;
    int r = 1;
    if (PyDict_Check(sense)) {
        if (PyDict_GET_SIZE(sense) && PyDict_DelItem(sense, nexus) < 0) {
            if (PyErr_ExceptionMatches(PyExc_KeyError))
                PyErr_Clear();
            else
                r = -1;
        }
    } else if (PyObject_IsTrue(sense)) {
        PyObject *res = PyObject_CallMethodObjArgs(sense, w_pop, nexus, Py_None, NULL);
        r = res ? 1 : -1;
        Py_XDECREF(res);
    }
    Py_DECREF(sense);
    return r;
}

PyDoc_STRVAR(ssc_stream_write_doc,
"ssc_stream_write(dev, nexus, cdb, data) -> bool\n\n"
"TapeDrive.stream_write(dev, nexus, cdb, data): a block queued for the write buffer or\n"
"written at once in C; every other case is the Python method's.");

static PyObject *ssc_stream_write(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs(nargs, 4, "ssc_stream_write(dev, nexus, cdb, data)") < 0)
        return NULL;
    if (w_configured() < 0)
        return NULL;
    PyObject *dev = args[0], *nexus = args[1], *data = args[3];
    Py_buffer cv;
    if (PyObject_GetBuffer(args[2], &cv, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *cdb = cv.buf;
    /* streaming_write_length: WRITE(6), byte 1 and CONTROL 0; streaming_fixed_count: byte 1
     * just FIXED (the count in blocks of the drive's block size) */
    int plain = cv.len >= 6 && cdb[0] == 0x0A && !cdb[5];
    int fixed = plain && cdb[1] == 0x01;
    long long want = plain && (!cdb[1] || fixed)
        ? (long long)cdb[2] << 16 | cdb[3] << 8 | cdb[4] : -1;
    PyBuffer_Release(&cv);
    Py_ssize_t n = PyObject_Length(data);
    if (n < 0)
        return NULL;
    long long run = 0;  /* several fixed-mode blocks: their size */
    if (fixed) {  /* one block of the mode's size: as a variable one; several: one run */
        long long bs;
        if (get_ll(dev, w_block_size, &bs) < 0)
            return NULL;
        if (bs <= 0 || want * bs != n || n > (want > 1 ? w_max_fixed : w_max_block))
            return PyObject_Vectorcall(w_stream_write_py, args, 4, NULL);
        if (want > 1)
            run = bs;
    } else if (want != n || n > w_max_block) {
        Py_RETURN_FALSE;
    }
    PyObject *lock = PyObject_GetAttr(dev, w_lock);
    if (lock == NULL)
        return NULL;
    PyObject *res = PyObject_CallMethodNoArgs(lock, w_acquire);
    if (res == NULL) {
        Py_DECREF(lock);
        return NULL;
    }
    Py_DECREF(res);
    int r = write_locked(dev, nexus, data, n, run);
    PyObject *et = NULL, *ev = NULL, *tb = NULL;
    if (r < 0)
        PyErr_Fetch(&et, &ev, &tb);
    res = PyObject_CallMethodNoArgs(lock, w_release);
    Py_DECREF(lock);
    if (r < 0) {
        Py_XDECREF(res);
        PyErr_Restore(et, ev, tb);
        return NULL;
    }
    if (res == NULL)
        return NULL;
    Py_DECREF(res);
    if (r == 2)
        return PyObject_Vectorcall(w_stream_write_py, args, 4, NULL);
    return PyBool_FromLong(r);
}

/* ---------------------------------------------------------------- the block's receive */

/* Set by configure_receive(): vtl.iscsi.data_out's globals (SPARE_BUFFERS and DonatedBuffer
 * are looked up there at each use, as DataOutReceiver._write_buffer does), ConnectionGone
 * and time.monotonic. Until then fastpath_receive_block says "not here". */
static PyObject *rx_globals, *rx_gone, *rx_monotonic;
static PyObject *w_sock, *w_recv_into, *w_last_rx, *w_pre_buffer, *w_tbuf, *w_spare,
    *w_take, *w_donated;

int fastpath_receive_ready(void)
{
    return rx_globals != NULL;
}

/* FramingMixin._recv_exact(view) for a view of n bytes: 0, or -1 with an exception set. */
static int recv_exact(PyObject *conn, PyObject *sock, PyObject *view, Py_ssize_t n)
{
    PyObject *r = PyObject_CallMethodOneArg(sock, w_recv_into, view);
    if (r == NULL)
        return -1;
    Py_ssize_t got = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (got == -1 && PyErr_Occurred())
        return -1;
    while (got < n) {
        if (!got) {
            PyErr_SetNone(rx_gone);
            return -1;
        }
        PyObject *now = PyObject_CallNoArgs(rx_monotonic);
        int bad = now == NULL || PyObject_SetAttr(conn, w_last_rx, now) < 0;
        Py_XDECREF(now);
        if (bad)
            return -1;
        PyObject *rest = PySequence_GetSlice(view, got, n);
        r = rest ? PyObject_CallMethodOneArg(sock, w_recv_into, rest) : NULL;
        Py_XDECREF(rest);
        if (r == NULL)
            return -1;
        Py_ssize_t more = PyLong_AsSsize_t(r);
        Py_DECREF(r);
        if (more == -1 && PyErr_Occurred())
            return -1;
        if (!more) {
            PyErr_SetNone(rx_gone);
            return -1;
        }
        got += more;
    }
    return 0;
}

/* DataOutReceiver._write_buffer(n) (the whole block arrives in this PDU): a spare buffer of
 * that size when SPARE_BUFFERS holds one, else a new DonatedBuffer; kept as _pre_buffer.
 * A new one is not zeroed: every byte of it is received before anything reads it (a
 * connection that goes away drops it unread). New reference, or NULL. */
static PyObject *write_buffer(PyObject *conn, uint32_t n)
{
    PyObject *buf = NULL, *size = PyLong_FromUnsignedLong(n);
    if (size == NULL)
        return NULL;
    PyObject *spare = PyDict_GetItemWithError(rx_globals, w_spare_buffers);
    Py_XINCREF(spare);
    PyObject *kept = spare ? PyObject_GetAttr(spare, w_spare) : NULL;
    if (spare == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_KeyError, "SPARE_BUFFERS");
    int some = 0;
    if (kept != NULL) {
        PyObject *list = PyDict_Check(kept) ? PyDict_GetItemWithError(kept, size) : NULL;
        some = list != NULL ? PyObject_IsTrue(list) : PyErr_Occurred() ? -1 : 0;
    }
    if (kept != NULL && some > 0) {
        buf = PyObject_CallMethodOneArg(spare, w_take, size);
    } else if (kept != NULL && some == 0) {
        PyObject *type = PyDict_GetItemWithError(rx_globals, w_donated);
        if (type == NULL && !PyErr_Occurred())
            PyErr_SetString(PyExc_KeyError, "DonatedBuffer");
        buf = type ? PyObject_CallNoArgs(type) : NULL;
        if (buf != NULL && (!PyByteArray_Check(buf) || PyByteArray_Resize(buf, n) < 0)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "DonatedBuffer is not a bytearray");
            Py_CLEAR(buf);
        }
    }
    Py_XDECREF(kept);
    Py_XDECREF(spare);
    Py_DECREF(size);
    if (buf != NULL && PyObject_SetAttr(conn, w_pre_buffer, buf) < 0)
        Py_CLEAR(buf);
    return buf;
}

/* StreamPaths._stream_write's receive: the block into its write buffer, then its padding;
 * a memoryview of the block (new reference), or NULL with an exception set. */
PyObject *fastpath_receive_block(PyObject *conn, uint32_t n)
{
    PyObject *buf = write_buffer(conn, n);
    if (buf == NULL)
        return NULL;
    PyObject *view = PyMemoryView_FromObject(buf);
    Py_DECREF(buf);
    if (view == NULL)
        return NULL;
    PyObject *sock = PyObject_GetAttr(conn, w_sock);
    if (sock == NULL || recv_exact(conn, sock, view, n) < 0)
        goto error;
    Py_ssize_t pad = -(Py_ssize_t)n & 3;
    if (pad) {
        PyObject *tbuf = PyObject_GetAttr(conn, w_tbuf);
        PyObject *part = tbuf ? PySequence_GetSlice(tbuf, 0, pad) : NULL;
        Py_XDECREF(tbuf);
        int r = part ? recv_exact(conn, sock, part, pad) : -1;
        Py_XDECREF(part);
        if (r < 0)
            goto error;
    }
    Py_DECREF(sock);
    return view;
error:
    Py_XDECREF(sock);
    Py_DECREF(view);
    return NULL;
}

PyDoc_STRVAR(configure_receive_doc,
"configure_receive(data_out_globals, connection_gone, monotonic)\n\n"
"vtl.iscsi.data_out's globals (SPARE_BUFFERS, DonatedBuffer), framing.ConnectionGone and\n"
"time.monotonic: the streaming WRITE's block is then received in C (_write_buffer and\n"
"_recv_exact's work), else through those Python methods.");

static PyObject *configure_receive(PyObject *mod, PyObject *args)
{
    PyObject *globals, *gone, *monotonic;
    if (!PyArg_ParseTuple(args, "O!OO:configure_receive", &PyDict_Type, &globals, &gone,
                          &monotonic))
        return NULL;
    if (!PyExceptionClass_Check(gone)) {
        PyErr_SetString(PyExc_TypeError, "configure_receive: an exception class expected");
        return NULL;
    }
    Py_INCREF(globals);
    Py_INCREF(gone);
    Py_INCREF(monotonic);
    Py_XSETREF(rx_globals, globals);
    Py_XSETREF(rx_gone, gone);
    Py_XSETREF(rx_monotonic, monotonic);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- configuration */

/* crc32c's own C function from its extension module (already loaded by Python), checked
 * against crc32c.crc32c: NULL when it is not there or does not agree (then crc32c.crc32c is
 * called with the GIL held). */
static crc_fn_t find_crc(PyObject *path, int hardware)
{
    const char *p = PyUnicode_AsUTF8(path);
    if (p == NULL) {
        PyErr_Clear();
        return NULL;
    }
    void *h = dlopen(p, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL)
        return NULL;
    crc_fn_t fn = (crc_fn_t)dlsym(h, hardware ? "_crc32c_hw_adler" : "_crc32c_sw_slicing_by_8");
    dlclose(h);  /* Python's own reference keeps the module loaded */
    if (fn == NULL)
        return NULL;
    static unsigned char probe[4099];
    for (size_t i = 0; i < sizeof probe; i++)
        probe[i] = (unsigned char)(i * 131 + 7);
    size_t sizes[] = {0, 1, 28, 4099};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint32_t want;
        if (w_crc_py(probe, (Py_ssize_t)sizes[i], &want) < 0) {
            PyErr_Clear();
            return NULL;
        }
        if ((fn(0xFFFFFFFFu, probe, sizes[i]) ^ 0xFFFFFFFFu) != want)
            return NULL;
    }
    return fn;
}

PyDoc_STRVAR(configure_write_doc,
"configure_write(append_now, stream_write, plain_medium, crc32c, crc32c_path, crc32c_hw,\n"
"                cartridge_error, ssc_globals, constants) -> bool\n\n"
"TapeCartridge.append_now and TapeDrive.stream_write (the Python cases), PlainMedium,\n"
"crc32c.crc32c and its extension's file and hardware_based, CartridgeError, vtl.scsi.ssc's\n"
"globals (WRITE_STREAMS and SPARE_BUFFERS are looked up there at each use, as the Python\n"
"method does) and a dict of constants. True when crc32c's C function was found (else\n"
"crc32c.crc32c is called).");

static PyObject *configure_write(PyObject *mod, PyObject *args)
{
    PyObject *append_py, *stream_py, *plain, *crc, *crc_path, *cart_error, *globals, *consts;
    int hw;
    if (!PyArg_ParseTuple(args, "OOOOOpOO!O!:configure_write", &append_py, &stream_py, &plain,
                          &crc, &crc_path, &hw, &cart_error, &PyDict_Type, &globals,
                          &PyDict_Type, &consts))
        return NULL;
    if (!PyType_Check(plain) || !PyExceptionClass_Check(cart_error)) {
        PyErr_SetString(PyExc_TypeError, "configure_write: a class expected");
        return NULL;
    }
    struct { const char *name; long long *into; } want[] = {
        {"DATA_START", &w_data_start}, {"MIN_COMPRESS", &w_min_compress},
        {"MISSES_BEFORE_SKIP", &w_misses_before_skip}, {"SKIP_BLOCKS", &w_skip_blocks},
        {"WRITEBACK_CHUNK", &w_writeback_chunk}, {"HEADER_FLAG_WRITE_PROTECT", &w_wp_flag},
        {"MAX_BLOCK", &w_max_block}, {"MIN_BUFFERED_WRITE", &w_min_buffered},
        {"MAX_FIXED_TRANSFER", &w_max_fixed},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        PyObject *v = PyDict_GetItemString(consts, want[i].name);
        if (v == NULL) {
            PyErr_Format(PyExc_KeyError, "configure_write: %s missing", want[i].name);
            return NULL;
        }
        if ((*want[i].into = PyLong_AsLongLong(v)) == -1 && PyErr_Occurred())
            return NULL;
    }
    PyObject *donated_type = PyDict_GetItemString(consts, "DonatedBuffer");
    if (donated_type == NULL || !PyType_Check(donated_type)) {
        PyErr_SetString(PyExc_ValueError, "configure_write: DonatedBuffer, a class");
        return NULL;
    }
    Py_INCREF(donated_type);
    Py_XSETREF(w_donated_type, donated_type);
    PyObject *magic = PyDict_GetItemString(consts, "RECORD_MAGIC");
    if (magic == NULL || !PyBytes_Check(magic) || PyBytes_GET_SIZE(magic) != 2) {
        PyErr_SetString(PyExc_ValueError, "configure_write: RECORD_MAGIC, 2 bytes");
        return NULL;
    }
    memcpy(w_magic, PyBytes_AS_STRING(magic), 2);
    PyObject *objs[] = {append_py, stream_py, plain, crc, cart_error, globals};
    PyObject **into[] = {&w_append_py, &w_stream_write_py, &w_plain_medium, &w_crc32c,
                         &w_cart_error, &w_globals};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++) {
        Py_INCREF(objs[i]);
        Py_XSETREF(*into[i], objs[i]);
    }
    w_crc_fn = find_crc(crc_path, hw);
    return PyBool_FromLong(w_crc_fn != NULL);
}

static PyMethodDef write_methods[] = {
    {"append_now", (PyCFunction)(void (*)(void))append_now, METH_FASTCALL, append_now_doc},
    {"ssc_stream_write", (PyCFunction)(void (*)(void))ssc_stream_write, METH_FASTCALL,
     ssc_stream_write_doc},
    {"configure_write", configure_write, METH_VARARGS, configure_write_doc},
    {"configure_receive", configure_receive, METH_VARARGS, configure_receive_doc},
    {NULL, NULL, 0, NULL},
};

#define W_INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return -1

int fastpath_write_init(PyObject *module)
{
    W_INTERN(w_wb, "_wb"); W_INTERN(w_blocks, "blocks"); W_INTERN(w_failed, "_error");
    W_INTERN(w_position, "position"); W_INTERN(w_index, "index");
    W_INTERN(w_objects, "objects"); W_INTERN(w_readonly, "readonly");
    W_INTERN(w_flags, "_flags"); W_INTERN(w_fence, "fence"); W_INTERN(w_crypto, "crypto");
    W_INTERN(w_io, "_io"); W_INTERN(w_fd, "fd"); W_INTERN(w_end, "end");
    W_INTERN(w_run_extra, "run_extra"); W_INTERN(w_ew_point, "ew_point");
    W_INTERN(w_ahead, "_ahead"); W_INTERN(w_obj, "obj"); W_INTERN(w_span_len, "span_len");
    W_INTERN(w_block_zstd, "_block_zstd"); W_INTERN(w_packer, "_packer");
    W_INTERN(w_skip, "_skip"); W_INTERN(w_misses, "_misses"); W_INTERN(w_cctx, "_cctx");
    W_INTERN(w_compress, "compress"); W_INTERN(w_capacity, "capacity");
    W_INTERN(w_fm_total, "fm_total"); W_INTERN(w_offsets, "offsets");
    W_INTERN(w_meta, "meta"); W_INTERN(w_append, "append"); W_INTERN(w_dirty, "_dirty");
    W_INTERN(w_pacer, "_pacer"); W_INTERN(w_handed, "_handed");
    W_INTERN(w_appended, "appended"); W_INTERN(w_counters, "counters");
    W_INTERN(w_written_native, "written_native");
    W_INTERN(w_written_stored, "written_stored");
    W_INTERN(w_protection, "protection"); W_INTERN(w_current, "current");
    W_INTERN(w_lock, "lock"); W_INTERN(w_acquire, "acquire"); W_INTERN(w_release, "release");
    W_INTERN(w_cart, "_cart"); W_INTERN(w_loaded, "_loaded"); W_INTERN(w_bay, "bay");
    W_INTERN(w_cartridge, "cartridge"); W_INTERN(w_part, "_part");
    W_INTERN(w_media_generation, "media_generation"); W_INTERN(w_gen, "_gen");
    if (nexus_names_init(&w_nexus_names) < 0)
        return -1;
    W_INTERN(w_library, "library"); W_INTERN(w_faults, "faults"); W_INTERN(w_media, "_media");
    W_INTERN(w_writable, "_writable"); W_INTERN(w_buffered_mode, "buffered_mode");
    W_INTERN(w_buffered_for, "_buffered_for"); W_INTERN(w_devconf_ext, "devconf_ext");
    W_INTERN(w_comp_page, "_compression_page"); W_INTERN(w_bytes_written, "bytes_written");
    W_INTERN(w_streaming, "_streaming"); W_INTERN(w_sense, "_sense"); W_INTERN(w_pop, "pop");
    W_INTERN(w_kw_compress, "compress");
    W_INTERN(w_key, "key"); W_INTERN(w_block_size, "block_size");
    W_INTERN(w_run_obj, "run_obj"); W_INTERN(w_fixed_runs, "FIXED_RUNS");
    W_INTERN(w_append_run_now, "append_run_now");
    if ((w_kw_only_compress = PyTuple_Pack(1, w_kw_compress)) == NULL)
        return -1;
    W_INTERN(w_queue_block, "queue_block"); W_INTERN(w_queue_run, "queue_run");
    W_INTERN(w_min_buffered_run, "MIN_BUFFERED_RUN");
    PyObject *kw_done = PyUnicode_InternFromString("done");
    if (kw_done == NULL || (w_kw_queue = PyTuple_Pack(2, w_kw_compress, kw_done)) == NULL)
        return -1;
    Py_DECREF(kw_done);
    W_INTERN(w_sock, "sock"); W_INTERN(w_recv_into, "recv_into");
    W_INTERN(w_last_rx, "_last_rx"); W_INTERN(w_pre_buffer, "_pre_buffer");
    W_INTERN(w_tbuf, "_tbuf"); W_INTERN(w_spare, "_spare"); W_INTERN(w_take, "take");
    W_INTERN(w_donated, "DonatedBuffer");
    W_INTERN(w_write_streams, "WRITE_STREAMS"); W_INTERN(w_wrote, "wrote");
    W_INTERN(w_spare_buffers, "SPARE_BUFFERS"); W_INTERN(w_give_back, "give_back");
    return PyModule_AddFunctions(module, write_methods);
}
