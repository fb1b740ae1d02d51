/* vtl._fastpath: the streaming READ(6)/WRITE(6) fast paths of an iSCSI connection in C.
 *
 * The same decisions, in the same order, as StreamPaths._stream_read/_stream_write
 * (vtl/iscsi/stream_paths.py), which stay the reference and the fallback: the 48-byte header
 * is parsed here, the command is handed back unchanged (False / None) whenever anything about
 * it is unusual, and the device's own stream_read/stream_write still decide for the tape.
 * What this saves is the interpreter's share of a command: no Python frame for the header
 * checks, the CmdSN window, the response header (packed here), the usual sendmsg (the rare
 * cases still go through PduFraming._sendall) or the idle hook.
 * tests/iscsi/test_stream_paths.py holds both implementations to byte-identical PDUs.
 *
 * Owns nothing: every piece of state stays on the Python objects (Connection, Session,
 * StreamLun), read and written through their attributes, so the two paths can never drift
 * apart in what they remember. Locks are taken as the Python path takes them: the LUN's lock
 * first, then the connection's _tx_lock (connection.py's lock order).
 */
#define PY_SSIZE_T_CLEAN
#include "_fastpath_common.h"
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define BHS_LEN 48
#define ALL_ONES 0xFFFFFFFFu
/* SCSI Command flags (byte 1, RFC 7143 11.3.1): Final, Read, Write. */
#define FRW 0xE0
#define FINAL_READ 0xC0
#define FINAL_WRITE 0xA0

/* StreamLun's fields (a NamedTuple: read by index). */
enum { SL_LUN, SL_LUN_RAW, SL_WORKER, SL_READ, SL_WRITE, SL_FIELDS };

/* Set by configure(): TaskState.DONE, pdu.parse_bhs and the error reporter. */
static PyObject *task_done, *parse_bhs, *report_error;

static PyObject *s_hd, *s_dd, *s_streams, *s_session, *s_draining, *s_closing, *s_queue_depth,
    *s_exp_cmdsn, *s_tasks, *s_taken, *s_freed, *s_posted, *s_state, *s_params,
    *s_max_xmit_dsl, *s_max_burst, *s_lock, *s_nexus, *s_tx_lock, *s_statsn,
    *s_idle, *s_acquire, *s_release, *s_server, *s_config, *s_limits, *s_immediate_data,
    *s_first_burst, *s_max_dsl, *s_max_transfer, *s_buffered, *s_max_buffered,
    *s_write_buffer, *s_recv_exact, *s_tbuf, *s_stream_read, *s_stream_write, *s_idle_what,
    *s_sock_closed, *s_unsent_bytes, *s_sock, *s_sendmsg;

static PyObject *pad_bytes[4];
static PyObject *r_none_none_true; /* (None, None, True) */
static PyObject *empty_tuple, *msg_dontwait;

/* Release ``lock`` keeping whatever exception is set (the with statement's __exit__). */
static void release_keeping_error(PyObject *lock)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (call_method0(lock, s_release) < 0)
        PyErr_WriteUnraisable(lock);
    PyErr_Restore(type, value, tb);
}

/* A device call raised: hand an Exception to the reporter (it logs it) and go on; anything
 * else (KeyboardInterrupt, SystemExit) propagates. 0 reported, -1 propagate. */
static int report(PyObject *what, const uint8_t *hb)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *cdb = PyBytes_FromStringAndSize((const char *)hb + 32, 6);
    PyObject *r = cdb ? PyObject_CallFunctionObjArgs(report_error, what, cdb,
                                                     value ? value : Py_None, NULL) : NULL;
    Py_XDECREF(cdb);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

typedef struct {
    PyObject *stream;  /* StreamLun */
    PyObject *session;
    uint32_t itt, edtl;
} found_t;

static void found_clear(found_t *f)
{
    Py_CLEAR(f->stream);
    Py_CLEAR(f->session);
}

/* StreamPaths._stream_for: 1 with f filled (new references), 0 not the case, -1 error. */
static int stream_for(PyObject *conn, const uint8_t *hb, found_t *f)
{
    long long qd, exp, taken, freed;
    int r;
    f->stream = f->session = NULL;
    PyObject *streams = PyObject_GetAttr(conn, s_streams);
    if (streams == NULL)
        return -1;
    PyObject *key = PyBytes_FromStringAndSize((const char *)hb + 8, 8);
    if (key == NULL) {
        Py_DECREF(streams);
        return -1;
    }
    PyObject *stream = PyDict_Check(streams) ? PyDict_GetItemWithError(streams, key) : NULL;
    Py_XINCREF(stream);
    Py_DECREF(key);
    Py_DECREF(streams);
    if (stream == NULL)
        return PyErr_Occurred() ? -1 : 0;
    f->stream = stream;
    if (!PyTuple_Check(stream) || PyTuple_GET_SIZE(stream) < SL_FIELDS)
        goto no;
    f->session = PyObject_GetAttr(conn, s_session);
    if (f->session == NULL)
        goto error;
    if (f->session == Py_None)
        goto no;
    if ((r = get_true(conn, s_draining)) != 0 || (r = get_true(conn, s_closing)) != 0)
        goto done_r;
    if (get_ll(f->session, s_queue_depth, &qd) < 0)
        goto error;
    if (!qd)
        goto no;
    f->itt = be32(hb + 16);
    f->edtl = be32(hb + 20);
    uint32_t cmdsn = be32(hb + 24);
    if (get_ll(f->session, s_exp_cmdsn, &exp) < 0)
        goto error;
    if ((long long)cmdsn != exp || f->itt == ALL_ONES)
        goto no;
    PyObject *tasks = PyObject_GetAttr(conn, s_tasks);
    if (tasks == NULL)
        goto error;
    PyObject *itt = PyLong_FromUnsignedLong(f->itt);
    r = itt ? PySequence_Contains(tasks, itt) : -1;
    Py_XDECREF(itt);
    Py_DECREF(tasks);
    if (r != 0)
        goto done_r;
    if (get_ll(f->session, s_taken, &taken) < 0 || get_ll(f->session, s_freed, &freed) < 0)
        goto error;
    if (taken - freed >= qd)  /* window full */
        goto no;
    PyObject *posted = PyObject_GetAttr(conn, s_posted);
    if (posted == NULL)
        goto error;
    PyObject *prev = PyDict_Check(posted)
        ? PyDict_GetItemWithError(posted, PyTuple_GET_ITEM(stream, SL_LUN)) : NULL;
    Py_XINCREF(prev);
    Py_DECREF(posted);
    if (prev == NULL) {
        if (PyErr_Occurred())
            goto error;
        return 1;
    }
    PyObject *state = PyObject_GetAttr(prev, s_state);
    Py_DECREF(prev);
    if (state == NULL)
        goto error;
    Py_DECREF(state);  /* compared by identity only, as ``is not`` does */
    if (state != task_done)
        goto no;
    return 1;
done_r:
    if (r < 0)
        goto error;
no:
    found_clear(f);
    return 0;
error:
    found_clear(f);
    return -1;
}

/* The MaxCmdSN a response carries (Session.max_cmdsn). */
static int max_cmdsn(PyObject *session, long long exp, uint32_t *out)
{
    long long qd, taken, freed;
    if (get_ll(session, s_queue_depth, &qd) < 0 || get_ll(session, s_taken, &taken) < 0
            || get_ll(session, s_freed, &freed) < 0)
        return -1;
    *out = (uint32_t)((exp + qd - 1 - (taken - freed)) & ALL_ONES);
    return 0;
}

/* PduFraming._sendall's common case: nothing waits before these frames and the socket takes
 * them all at once. Anything else (earlier output waiting, a full socket, part of a frame
 * sent, an error) goes to _sendall itself with the frames still unsent, which it handles as
 * it always does. Call with _tx_lock held. */
static int send_frames(PyObject *conn, PyObject *frames, Py_ssize_t total)
{
    long long unsent;
    int r = get_true(conn, s_sock_closed);
    if (r != 0)
        return r < 0 ? -1 : 0;
    if (get_ll(conn, s_unsent_bytes, &unsent) < 0)
        return -1;
    PyObject *rest = frames, *res = NULL;
    Py_INCREF(rest);
    if (!unsent) {
        PyObject *sock = PyObject_GetAttr(conn, s_sock);
        if (sock == NULL)
            goto error;
        res = PyObject_CallMethodObjArgs(sock, s_sendmsg, frames, empty_tuple, msg_dontwait,
                                         NULL);
        Py_DECREF(sock);
        if (res == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_OSError))
                goto error;
            PyErr_Clear();  /* nothing went out: _sendall tries again and decides */
        } else {
            Py_ssize_t sent = PyLong_AsSsize_t(res);
            Py_CLEAR(res);
            if (sent == -1 && PyErr_Occurred())
                goto error;
            if (sent == total) {
                Py_DECREF(rest);
                return 0;
            }
            Py_ssize_t i = 0, n = PyList_GET_SIZE(frames);
            for (; i < n; i++) {  /* the frames that went out whole */
                Py_ssize_t size = PyObject_Length(PyList_GET_ITEM(frames, i));
                if (size < 0)
                    goto error;
                if (sent < size)
                    break;
                sent -= size;
            }
            if (i == n) {
                Py_DECREF(rest);
                return 0;
            }
            Py_SETREF(rest, PyList_GetSlice(frames, i, n));
            if (rest == NULL)
                return -1;
            if (sent) {  /* part of a frame went out */
                PyObject *mv = PyMemoryView_FromObject(PyList_GET_ITEM(rest, 0));
                PyObject *tail = mv ? PySequence_GetSlice(mv, sent, PY_SSIZE_T_MAX) : NULL;
                Py_XDECREF(mv);
                if (tail == NULL || PyList_SetItem(rest, 0, tail) < 0)
                    goto error;
            }
            total = -1;
        }
    }
    res = PyObject_CallMethod(conn, "_sendall", "On", rest, total);
    Py_DECREF(rest);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
error:
    Py_XDECREF(rest);
    return -1;
}

/* Number the response (conn.statsn += 1) and send ``frames``, all under _tx_lock:
 * ResponseSender._send_data_in_good / _send_rsp_good. ``bhs`` gets StatSN, ExpCmdSN and
 * MaxCmdSN at bytes 24..35 and becomes frames[0]. */
static int send_numbered(PyObject *conn, PyObject *session, uint8_t *bhs, PyObject *frames,
                         Py_ssize_t total)
{
    long long sn, exp;
    uint32_t mx;
    int ok = -1;
    PyObject *tx = PyObject_GetAttr(conn, s_tx_lock);
    if (tx == NULL)
        return -1;
    if (call_method0(tx, s_acquire) < 0) {
        Py_DECREF(tx);
        return -1;
    }
    if (get_ll(conn, s_statsn, &sn) < 0 || set_ll(conn, s_statsn, (sn + 1) & ALL_ONES) < 0)
        goto out;
    /* ExpCmdSN before the slot counters (Session.taken says why) */
    if (get_ll(session, s_exp_cmdsn, &exp) < 0 || max_cmdsn(session, exp, &mx) < 0)
        goto out;
    put32(bhs + 24, (uint32_t)sn);
    put32(bhs + 28, (uint32_t)exp);
    put32(bhs + 32, mx);
    PyObject *b = PyBytes_FromStringAndSize((const char *)bhs, BHS_LEN);
    if (b == NULL)
        goto out;
    PyList_SET_ITEM(frames, 0, b);
    ok = send_frames(conn, frames, total);
out:
    if (ok < 0)
        release_keeping_error(tx);
    else if (call_method0(tx, s_release) < 0)
        ok = -1;
    Py_DECREF(tx);
    return ok;
}

/* ScsiCommandRunner._after_command: the device's idle() hook, errors logged. */
static int after_command(PyObject *worker, const uint8_t *hb)
{
    PyObject *idle = PyObject_GetAttr(worker, s_idle);
    if (idle == NULL)
        return -1;
    if (idle == Py_None) {
        Py_DECREF(idle);
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(idle);
    Py_DECREF(idle);
    if (r == NULL)
        return report(s_idle_what, hb);
    Py_DECREF(r);
    return 0;
}

/* session.exp_cmdsn += 1 (mod 2**32): the command is taken. */
static int advance_cmdsn(PyObject *session)
{
    long long exp;
    if (get_ll(session, s_exp_cmdsn, &exp) < 0)
        return -1;
    return set_ll(session, s_exp_cmdsn, (exp + 1) & ALL_ONES);
}

/* The header buffer: a writable or read-only buffer of at least BHS_LEN bytes (and the
 * module configured: stream_paths.py does it on import). */
static int header(PyObject *obj, Py_buffer *view)
{
    if (task_done == NULL || parse_bhs == NULL || report_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "vtl._fastpath: configure() first");
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len < BHS_LEN) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "header buffer shorter than 48 bytes");
        return -1;
    }
    return 0;
}

/* The device call under the LUN's lock, then (taken) the response and the idle hook. */
typedef struct {
    PyObject *conn;
    const uint8_t *hb;
    found_t *f;
    PyObject *worker, *lock;
} locked_t;

static int lock_lun(locked_t *c)
{
    c->worker = PyTuple_GET_ITEM(c->f->stream, SL_WORKER);
    c->lock = PyObject_GetAttr(c->worker, s_lock);
    if (c->lock == NULL)
        return -1;
    if (call_method0(c->lock, s_acquire) < 0) {
        Py_CLEAR(c->lock);
        return -1;
    }
    return 0;
}

static int unlock_lun(locked_t *c, int status)
{
    if (status < 0)
        release_keeping_error(c->lock);
    else if (call_method0(c->lock, s_release) < 0)
        status = -1;
    Py_CLEAR(c->lock);
    return status;
}

/* Call the device's stream_read/stream_write(nexus, cdb, arg); NULL after a reported
 * Exception (*reported = 1), NULL with an exception set for anything else. */
static PyObject *device_call(locked_t *c, int which, PyObject *arg, PyObject *what,
                             int *reported)
{
    *reported = 0;
    PyObject *nexus = PyObject_GetAttr(c->f->session, s_nexus);
    if (nexus == NULL)
        return NULL;
    PyObject *cdb = PyBytes_FromStringAndSize((const char *)c->hb + 32, 16);
    PyObject *r = cdb ? PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(c->f->stream, which),
                                                     nexus, cdb, arg, NULL) : NULL;
    Py_XDECREF(cdb);
    Py_DECREF(nexus);
    if (r == NULL && report(what, c->hb) == 0)
        *reported = 1;
    return r;
}

static PyObject *native_drive(PyObject *read);
static PyObject *drive_read(PyObject *drive, PyObject *nexus, const uint8_t *cdb,
                            uint32_t length);
static int drive_idle(PyObject *drive);

static int read_answer(locked_t *c)
{
    int reported;
    uint32_t n = c->f->edtl;
    PyObject *data = NULL;
    /* the drive's usual case in C (below), else its stream_read method */
    PyObject *drive = native_drive(PyTuple_GET_ITEM(c->f->stream, SL_READ));
    if (drive != NULL) {
        PyObject *nexus = PyObject_GetAttr(c->f->session, s_nexus);
        if (nexus == NULL)
            return -1;
        data = drive_read(drive, nexus, c->hb + 32, n);
        Py_DECREF(nexus);
        if (data == NULL && PyErr_Occurred())
            return report(s_stream_read, c->hb) == 0 ? 0 : -1;
        if (data == NULL)
            drive = NULL;  /* not served here: the method decides, the idle hook follows */
    }
    if (data == NULL) {
        PyObject *edtl = PyLong_FromUnsignedLong(n);
        if (edtl == NULL)
            return -1;
        data = device_call(c, SL_READ, edtl, s_stream_read, &reported);
        Py_DECREF(edtl);
        if (data == NULL)
            return reported ? 0 : -1;
    }
    if (data == Py_None) {
        Py_DECREF(data);
        return 0;
    }
    if (advance_cmdsn(c->f->session) < 0) {
        Py_DECREF(data);
        return -1;
    }
    /* pdu.data_in_good: Final + Status, GOOD, no residual, TTT all ones */
    uint8_t bhs[BHS_LEN] = {0x25, 0x81, 0, 0};
    put32(bhs + 4, n);
    memcpy(bhs + 8, PyBytes_AS_STRING(PyTuple_GET_ITEM(c->f->stream, SL_LUN_RAW)), 8);
    put32(bhs + 16, c->f->itt);
    put32(bhs + 20, ALL_ONES);
    Py_ssize_t pad = -(Py_ssize_t)n & 3;
    PyObject *frames = PyList_New(pad ? 3 : 2);
    if (frames == NULL) {
        Py_DECREF(data);
        return -1;
    }
    PyList_SET_ITEM(frames, 1, data);  /* steals data */
    if (pad) {
        Py_INCREF(pad_bytes[pad]);
        PyList_SET_ITEM(frames, 2, pad_bytes[pad]);
    }
    int r = send_numbered(c->conn, c->f->session, bhs, frames, BHS_LEN + n + pad);
    Py_DECREF(frames);
    if (r < 0)
        return -1;
    if (drive != NULL)
        return drive_idle(drive) < 0 ? -1 : 1;
    return after_command(c->worker, c->hb) < 0 ? -1 : 1;
}

PyDoc_STRVAR(stream_read_doc,
"stream_read(conn, hbuf) -> bool\n\n"
"StreamPaths._stream_read for the header in hbuf: True when the READ(6) was answered.");

static PyObject *stream_read(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "stream_read(conn, hbuf)");
        return NULL;
    }
    PyObject *conn = args[0];
    Py_buffer view;
    found_t f = {NULL, NULL, 0, 0};
    int r;
    long long lim;
    if (header(args[1], &view) < 0)
        return NULL;
    const uint8_t *hb = view.buf;
    if ((hb[1] & FRW) != FINAL_READ || hb[4] || hb[5] || hb[6] || hb[7]) {
        r = 0;
        goto out;
    }
    if ((r = get_true(conn, s_hd)) != 0) {  /* a header digest: the general path */
        r = r < 0 ? -1 : 0;
        goto out;
    }
    if ((r = stream_for(conn, hb, &f)) <= 0)
        goto out;
    r = 0;
    if (PyTuple_GET_ITEM(f.stream, SL_READ) == Py_None
            || !PyBytes_Check(PyTuple_GET_ITEM(f.stream, SL_LUN_RAW))
            || PyBytes_GET_SIZE(PyTuple_GET_ITEM(f.stream, SL_LUN_RAW)) != 8)
        goto out;
    PyObject *p = PyObject_GetAttr(f.session, s_params);
    if (p == NULL) {
        r = -1;
        goto out;
    }
    if (get_ll(p, s_max_xmit_dsl, &lim) < 0 || (f.edtl > lim)
            || get_ll(p, s_max_burst, &lim) < 0 || (f.edtl > lim)) {
        Py_DECREF(p);
        r = PyErr_Occurred() ? -1 : 0;
        goto out;
    }
    Py_DECREF(p);
    locked_t c = {conn, hb, &f, NULL, NULL};
    if ((r = lock_lun(&c)) < 0)
        goto out;
    r = unlock_lun(&c, read_answer(&c));
out:
    found_clear(&f);
    PyBuffer_Release(&view);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r > 0);
}

/* StreamPaths._stream_write's checks before any data is read: 1 the case, 0 not, -1 error. */
static int write_fits(PyObject *conn, const uint8_t *hb, found_t *f)
{
    long long v, buffered;
    uint32_t dsl = be32(hb + 4) & 0xFFFFFF;
    if (PyTuple_GET_ITEM(f->stream, SL_WRITE) == Py_None || dsl != f->edtl || !dsl)
        return 0;
    PyObject *p = PyObject_GetAttr(f->session, s_params);
    if (p == NULL)
        return -1;
    int r = get_true(p, s_immediate_data);
    if (r > 0)
        r = get_ll(p, s_first_burst, &v) < 0 ? -1 : dsl <= v;
    Py_DECREF(p);
    if (r > 0)
        r = get_ll(conn, s_max_dsl, &v) < 0 ? -1 : dsl <= v;
    if (r <= 0)
        return r;
    PyObject *server = PyObject_GetAttr(conn, s_server);
    PyObject *config = server ? PyObject_GetAttr(server, s_config) : NULL;
    PyObject *limits = config ? PyObject_GetAttr(config, s_limits) : NULL;
    Py_XDECREF(server);
    Py_XDECREF(config);
    if (limits == NULL)
        return -1;
    r = get_ll(limits, s_max_transfer, &v) < 0 ? -1 : f->edtl <= v;
    if (r > 0 && get_ll(conn, s_buffered, &buffered) < 0)
        r = -1;
    if (r > 0)
        r = get_ll(limits, s_max_buffered, &v) < 0 ? -1 : buffered + f->edtl <= v;
    Py_DECREF(limits);
    return r;
}

/* Read the data segment (and its padding) into a new write buffer: a memoryview of it. */
PyObject *fastpath_receive_block(PyObject *conn, uint32_t n);  /* vtl/_fastpath_write.c */
int fastpath_receive_ready(void);

static PyObject *receive_block(PyObject *conn, uint32_t n)
{
    if (fastpath_receive_ready())
        return fastpath_receive_block(conn, n);
    PyObject *buf = PyObject_CallMethod(conn, "_write_buffer", "k", (unsigned long)n);
    if (buf == NULL)
        return NULL;
    PyObject *view = PyMemoryView_FromObject(buf);
    Py_DECREF(buf);
    if (view == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethodOneArg(conn, s_recv_exact, view);
    if (r == NULL)
        goto error;
    Py_DECREF(r);
    Py_ssize_t pad = -(Py_ssize_t)n & 3;
    if (pad) {
        PyObject *tbuf = PyObject_GetAttr(conn, s_tbuf);
        PyObject *part = tbuf ? PySequence_GetSlice(tbuf, 0, pad) : NULL;
        Py_XDECREF(tbuf);
        r = part ? PyObject_CallMethodOneArg(conn, s_recv_exact, part) : NULL;
        Py_XDECREF(part);
        if (r == NULL)
            goto error;
        Py_DECREF(r);
    }
    return view;
error:
    Py_DECREF(view);
    return NULL;
}

static int write_answer(locked_t *c, PyObject *view)
{
    int reported;
    PyObject *taken = device_call(c, SL_WRITE, view, s_stream_write, &reported);
    if (taken == NULL)
        return reported ? 0 : -1;
    int r = PyObject_IsTrue(taken);
    Py_DECREF(taken);
    if (r <= 0)
        return r;
    if (advance_cmdsn(c->f->session) < 0)
        return -1;
    /* pdu.scsi_rsp_good: Final, response 0, status GOOD, no LUN, ExpDataSN 0 (r2tsn) */
    uint8_t bhs[BHS_LEN] = {0x21, 0x80, 0, 0};
    put32(bhs + 16, c->f->itt);
    PyObject *frames = PyList_New(1);
    if (frames == NULL)
        return -1;
    r = send_numbered(c->conn, c->f->session, bhs, frames, BHS_LEN);
    Py_DECREF(frames);
    if (r < 0)
        return -1;
    return after_command(c->worker, c->hb) < 0 ? -1 : 1;
}

PyDoc_STRVAR(stream_write_doc,
"stream_write(conn, hbuf) -> tuple | None\n\n"
"StreamPaths._stream_write for the header in hbuf: None (not the case, nothing read past\n"
"the header), (None, None, True) when the WRITE(6) was taken and answered, or\n"
"(header, data, True) for the general path with the data already in.");

static PyObject *stream_write(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "stream_write(conn, hbuf)");
        return NULL;
    }
    PyObject *conn = args[0];
    PyObject *result = NULL, *view = NULL;
    Py_buffer hview;
    found_t f = {NULL, NULL, 0, 0};
    int r;
    if (header(args[1], &hview) < 0)
        return NULL;
    const uint8_t *hb = hview.buf;
    if ((hb[1] & FRW) != FINAL_WRITE || hb[4]) {
        r = 0;
        goto out;
    }
    if ((r = get_true(conn, s_hd)) != 0 || (r = get_true(conn, s_dd)) != 0) {  /* digests */
        r = r < 0 ? -1 : 0;
        goto out;
    }
    if ((r = stream_for(conn, hb, &f)) <= 0 || (r = write_fits(conn, hb, &f)) <= 0)
        goto out;
    view = receive_block(conn, f.edtl);
    if (view == NULL) {
        r = -1;
        goto out;
    }
    locked_t c = {conn, hb, &f, NULL, NULL};
    if ((r = lock_lun(&c)) < 0)
        goto out;
    r = unlock_lun(&c, write_answer(&c, view));
    if (r > 0) {
        Py_INCREF(r_none_none_true);
        result = r_none_none_true;
    } else if (r == 0) {  /* declined: the general path takes the PDU with its data in */
        PyObject *raw = PyBytes_FromStringAndSize((const char *)hb, BHS_LEN);
        PyObject *hdr = raw ? PyObject_CallOneArg(parse_bhs, raw) : NULL;
        Py_XDECREF(raw);
        result = hdr ? PyTuple_Pack(3, hdr, view, Py_True) : NULL;
        Py_XDECREF(hdr);
        if (result == NULL)
            r = -1;
    }
out:
    Py_XDECREF(view);
    found_clear(&f);
    PyBuffer_Release(&hview);
    if (r < 0) {
        Py_XDECREF(result);
        return NULL;
    }
    if (result == NULL)
        Py_RETURN_NONE;
    return result;
}

PyDoc_STRVAR(configure_doc,
"configure(task_done, parse_bhs, report_error)\n\n"
"What the fast paths need from the Python side: TaskState.DONE, pdu.parse_bhs, and\n"
"report_error(what, cdb, exc), called when a device call raised (it logs).");

static PyObject *configure(PyObject *mod, PyObject *args)
{
    PyObject *done, *parse, *rep;
    if (!PyArg_ParseTuple(args, "OOO:configure", &done, &parse, &rep))
        return NULL;
    Py_INCREF(done);
    Py_INCREF(parse);
    Py_INCREF(rep);
    Py_XSETREF(task_done, done);
    Py_XSETREF(parse_bhs, parse);
    Py_XSETREF(report_error, rep);
    Py_RETURN_NONE;
}

/* ---- The cartridge's read-ahead: TapeCartridge.read_ahead's usual case ------------------
 *
 * tape_formats/cartridge.py's read_ahead decodes the data block at the position into the
 * read-ahead cache while the drive is idle. Its usual case in a restore of small blocks - a
 * plain record already in the read-ahead span, no write queued, settings that read plain
 * blocks - is done here: the record header's checks and CRC, the payload's
 * crc32c, zstd for a compressed block, and the cache's fields set as ReadAhead.hold sets
 * them; a record too big for the span is read on its own (ahead_direct, ahead_compressed).
 * Everything else (the span to refill, encryption, a write to wait for, a medium that is not
 * a plain file) is the Python method's, called as it is: it stays the reference, and
 * tests/tape_formats/test_read_ahead_native.py holds the two to the same cache contents. */

#define RH_SIZE 32
#define RH_CRC_SPAN 28
#define KIND_DATA 1
#define KIND_FILEMARK_RUN 3
#define KIND_DATA_RUN 4  /* RecordKind.DATA_RUN: native_len is count << 24 | block size */
#define FLAG_COMPRESSED 0x01
#define FLAG_ENCRYPTED 0x02

/* Set by configure_read_ahead(). */
static PyObject *ra_fallback, *ra_zstd_error, *ra_crc32c, *ra_decrypt_only, *ra_max_output;
static long long ra_span_record_max;
static PyObject *ra_plain_medium;  /* PlainMedium (ahead_direct), or NULL */

static PyObject *s_wb, *s_blocks, *s_position, *s_index, *s_ahead, *s_obj, *s_objects,
    *s_run_rec, *s_meta, *s_offsets, *s_end, *s_crypto, *s_span, *s_span_off, *s_span_len,
    *s_native, *s_stored, *s_data, *s_own, *s_lasting, *s_dctx, *s_decompress, *s_run_first,
    *s_run_extra, *s_decrypt;

PyDoc_STRVAR(configure_read_ahead_doc,
"configure_read_ahead(fallback, zstd_error, crc32c, span_record_max, decrypt_only,\n"
"                     plain_medium=None)\n\n"
"TapeCartridge.read_ahead (called for every case but the usual one), zstandard.ZstdError,\n"
"crc32c.crc32c, read_ahead.SPAN_RECORD_MAX, DecryptMode.DECRYPT (plain blocks refused) and\n"
"PlainMedium (records too big for the span read here from such a file; None: never).");

static PyObject *configure_read_ahead(PyObject *mod, PyObject *args)
{
    PyObject *fallback, *zerr, *crc, *decrypt_only, *plain_medium = NULL;
    long long span_max;
    if (!PyArg_ParseTuple(args, "OOOLO|O:configure_read_ahead", &fallback, &zerr, &crc, &span_max,
                          &decrypt_only, &plain_medium))
        return NULL;
    if (plain_medium == Py_None)
        plain_medium = NULL;
    Py_XINCREF(plain_medium);
    Py_XSETREF(ra_plain_medium, plain_medium);
    Py_INCREF(fallback);
    Py_INCREF(zerr);
    Py_INCREF(crc);
    Py_INCREF(decrypt_only);
    Py_XSETREF(ra_fallback, fallback);
    Py_XSETREF(ra_zstd_error, zerr);
    Py_XSETREF(ra_crc32c, crc);
    Py_XSETREF(ra_decrypt_only, decrypt_only);
    ra_span_record_max = span_max;
    Py_RETURN_NONE;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <nmmintrin.h>
#define HAVE_CRC_INSN 1
static int crc_insn = -1;  /* the CPU has SSE4.2's crc32 (-1: not asked yet) */

/* CRC-32C of a record header's 28 bytes with the CPU's crc32 instruction: what crc32c.crc32c
 * returns, without a Python call (the payload's, longer, still goes to the library). */
__attribute__((target("sse4.2")))
static uint32_t crc_header(const uint8_t *p)
{
    uint64_t a, b, c;
    uint32_t d;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    memcpy(&c, p + 16, 8);
    memcpy(&d, p + 24, 4);
    uint64_t crc = _mm_crc32_u64(0xFFFFFFFFu, a);
    crc = _mm_crc32_u64(crc, b);
    crc = _mm_crc32_u64(crc, c);
    return _mm_crc32_u32((uint32_t)crc, d) ^ 0xFFFFFFFFu;
}
#endif

/* crc32c.crc32c(bytes [p, p + n)) == want: 1, 0, or -1 with an exception set. */
static int crc_is(const uint8_t *p, Py_ssize_t n, uint32_t want)
{
#ifdef HAVE_CRC_INSN
    if (n == RH_CRC_SPAN) {
        if (crc_insn < 0)
            crc_insn = __builtin_cpu_supports("sse4.2") != 0;
        if (crc_insn)
            return crc_header(p) == want;
    }
#endif
    PyObject *view = PyMemoryView_FromMemory((char *)p, n, PyBUF_READ);
    if (view == NULL)
        return -1;
    PyObject *r = PyObject_CallOneArg(ra_crc32c, view);
    Py_DECREF(view);
    if (r == NULL)
        return -1;
    unsigned long got = PyLong_AsUnsignedLong(r);
    Py_DECREF(r);
    if (got == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    return got == want;
}

/* The index's array('Q') as a buffer of uint64 (a view the caller releases). */
static int u64_array(PyObject *idx, PyObject *name, Py_buffer *view)
{
    PyObject *arr = PyObject_GetAttr(idx, name);
    if (arr == NULL)
        return -1;
    int r = PyObject_GetBuffer(arr, view, PyBUF_FORMAT);
    Py_DECREF(arr);
    if (r < 0)
        return -1;
    if (view->itemsize != 8 || view->format == NULL || strcmp(view->format, "Q") != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "the index arrays must be array('Q')");
        return -1;
    }
    return 0;
}

/* The data block at the position decoded into the cache, from the span (1), not the usual
 * case (0: the Python method decides), or -1 with an exception set. Leaves the cache
 * empty (obj -1) when the record is damaged, as the Python method does. */
/* index.meta_objects: the logical objects of the record an index word describes. */
static uint64_t meta_objects(uint64_t m)
{
    unsigned kind = (unsigned)(m & 0xFF);
    if (kind == KIND_FILEMARK_RUN)
        return m >> 16;
    if (kind == KIND_DATA_RUN)
        return m >> 40;
    return 1;
}

/* PositionIndex.record_of(obj) with runs of filemarks or data (the three run arrays and
 * meta); -1 when the arrays disagree (the Python method then decides). */
static long long record_of(PyObject *idx, const Py_buffer *meta, long long obj)
{
    Py_buffer rec_b, first_b, extra_b;
    if (u64_array(idx, s_run_rec, &rec_b) < 0)
        return -2;
    if (u64_array(idx, s_run_first, &first_b) < 0) {
        PyBuffer_Release(&rec_b);
        return -2;
    }
    if (u64_array(idx, s_run_extra, &extra_b) < 0) {
        PyBuffer_Release(&rec_b);
        PyBuffer_Release(&first_b);
        return -2;
    }
    const uint64_t *runs = rec_b.buf, *first = first_b.buf, *extra = extra_b.buf;
    Py_ssize_t n = first_b.len / 8, lo = 0, hi = n;
    long long r = obj;
    if (rec_b.len / 8 != n || extra_b.len / 8 != n) {
        r = -1;
        goto out;
    }
    while (lo < hi) {  /* bisect_right(run_first, obj) */
        Py_ssize_t mid = (lo + hi) / 2;
        if ((uint64_t)obj < first[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    Py_ssize_t j = lo - 1;
    if (j < 0)
        goto out;
    if ((Py_ssize_t)runs[j] >= meta->len / 8) {
        r = -1;
        goto out;
    }
    if ((uint64_t)obj < first[j] + meta_objects(((const uint64_t *)meta->buf)[runs[j]]))
        r = (long long)runs[j];
    else
        r = obj - (long long)extra[j];
out:
    PyBuffer_Release(&rec_b);
    PyBuffer_Release(&first_b);
    PyBuffer_Release(&extra_b);
    return r;
}

/* zstd's output for a compressed payload, `native` bytes (TapeCartridge._decode's
 * decompress and length check): new bytes, or NULL with *ok 0 when the payload does not
 * decompress to that length (the real READ reports it) or -1 with an exception set. */
static PyObject *unzstd(PyObject *cart, const uint8_t *payload, long long stored,
                        long long native, int *ok)
{
    PyObject *data = NULL;
    PyObject *dctx = PyObject_GetAttr(cart, s_dctx);
    PyObject *view = PyMemoryView_FromMemory((char *)payload, (Py_ssize_t)stored, PyBUF_READ);
    PyObject *limit = PyLong_FromLongLong(native);
    if (dctx != NULL && view != NULL && limit != NULL) {
        PyObject *cargs[3] = {dctx, view, limit};
        data = PyObject_VectorcallMethod(s_decompress, cargs, 2, ra_max_output);
    }
    Py_XDECREF(dctx);
    Py_XDECREF(view);
    Py_XDECREF(limit);
    *ok = 0;
    if (data == NULL) {
        if (PyErr_ExceptionMatches(ra_zstd_error))
            PyErr_Clear();  /* does not decompress */
        else
            *ok = -1;
    } else if (!PyBytes_Check(data) || PyBytes_GET_SIZE(data) != native) {
        Py_CLEAR(data);  /* the wrong length (or not bytes: left to the real READ) */
    }
    return data;
}

/* ReadAhead.hold(p, native, stored, data, own=type(data) is bytes, lasting): 0, or -1 with
 * an exception set. */
static int hold(PyObject *ahead, long long p, long long native, long long stored,
                PyObject *data, int lasting)
{
    return (set_ll(ahead, s_native, native) < 0 || set_ll(ahead, s_stored, stored) < 0
            || PyObject_SetAttr(ahead, s_data, data) < 0
            || PyObject_SetAttr(ahead, s_own, PyBytes_CheckExact(data) ? Py_True : Py_False) < 0
            || PyObject_SetAttr(ahead, s_lasting, lasting ? Py_True : Py_False) < 0
            || set_ll(ahead, s_obj, p) < 0) ? -1 : 0;
}

/* ---- A record too big for the span, stored as is (rdfast) --------------------------------
 * TapeCartridge._decode's "direct" case for the read-ahead: the payload read with one preadv
 * (GIL released) straight into the next of ReadAhead's two alternating buffers
 * (ReadAhead.buffer), the record header beside it, then the same checks as the span's and
 * the payload's crc32c; held as a view of that buffer (own False, lasting True), as
 * read_ahead's Python method holds it. Only for a plain cartridge file (PlainMedium, set by
 * configure_read_ahead): another medium (dedup) is the Python method's. 1 done (the cache
 * left empty when the record is damaged or the read fails), 0 the Python method's, -1 error. */
static PyObject *s_io, *s_fd, *s_bufs, *s_which;

/* The cartridge's file descriptor when it is a plain cartridge file (PlainMedium): 1, 0
 * another medium (the Python method's), -1 error. */
static int plain_fd(PyObject *cart, long long *fd)
{
    if (ra_plain_medium == NULL)
        return 0;
    PyObject *io = PyObject_GetAttr(cart, s_io);
    if (io == NULL)
        return -1;
    int plain = (PyObject *)Py_TYPE(io) == ra_plain_medium;
    int r = plain ? get_ll(io, s_fd, fd) : 0;
    Py_DECREF(io);
    return r < 0 ? -1 : plain;
}

int fastpath_crc32c(const void *p, Py_ssize_t n, uint32_t *out);  /* vtl/_fastpath_write.c */

/* preadv(2) of `n` iovecs at `off`, the GIL released, again after EINTR: the bytes read,
 * -1 a read error (errno), -2 with the exception set (a signal handler raised). When all
 * `want` bytes came, the payload's crc32c is computed in the same release if crc32c's C
 * function was found: `crc` (a payload of `crc_len` bytes at `crc_at`) is then set and
 * *have_crc 1. */
static ssize_t pread_all(long long fd, struct iovec *iov, int n, long long off, ssize_t want,
                         const void *crc_at, Py_ssize_t crc_len, uint32_t *crc, int *have_crc)
{
    ssize_t got;
    int err;
    *have_crc = 0;
    do {
        Py_BEGIN_ALLOW_THREADS
        got = preadv((int)fd, iov, n, (off_t)off);
        err = errno;
        if (got == want)
            *have_crc = fastpath_crc32c(crc_at, crc_len, crc);
        Py_END_ALLOW_THREADS
        if (got < 0 && err == EINTR && PyErr_CheckSignals() < 0)
            return -2;
    } while (got < 0 && err == EINTR);
    return got;
}

/* Does the payload's crc32c match `want`: the one pread_all computed, else crc32c.crc32c's
 * (1 yes, 0 no, -1 error). */
static int payload_crc_is(const uint8_t *p, Py_ssize_t n, uint32_t want, int have_crc,
                          uint32_t crc)
{
    return have_crc ? crc == want : crc_is(p, n, want);
}

/* The checks of RecordHeader.unpack and TapeCartridge._decode on a record header read with
 * `got` bytes of the record: 1 good, 0 damaged, -1 error. */
static int head_good(const uint8_t *head, ssize_t got, long long p, long long stored)
{
    if (got != RH_SIZE + stored || head[0] != 'R' || head[1] != 'C')
        return 0;
    int ok = crc_is(head, RH_CRC_SPAN, le32(head + 28));
    if (ok <= 0)
        return ok;
    unsigned kind = head[2];
    uint32_t native_len = le32(head + 8);
    return !(kind < 1 || kind > 3 || (kind == KIND_FILEMARK_RUN && native_len < 2)
             || (long long)le64(head + 16) != p || (long long)le32(head + 4) != stored);
}

/* ReadAhead.buffer(size) as read_ahead's Python method takes it before it decodes a record
 * too big for the span: the other of the two alternating buffers, grown (zeroed) when
 * smaller than `size`, `which` flipped; the cache emptied (obj -1). A new reference; NULL
 * with *r 0 (not the expected list: the Python method's) or -1 (an exception set). */
static PyObject *next_buffer(PyObject *ahead, long long size, int *r)
{
    long long which;
    *r = -1;
    PyObject *bufs = PyObject_GetAttr(ahead, s_bufs);
    if (bufs == NULL)
        return NULL;
    if (!PyList_CheckExact(bufs) || PyList_GET_SIZE(bufs) != 2 || get_ll(ahead, s_which, &which) < 0) {
        Py_DECREF(bufs);
        *r = PyErr_Occurred() ? -1 : 0;
        return NULL;
    }
    which = (which ^ 1) & 1;
    PyObject *buf = PyList_GET_ITEM(bufs, which);
    Py_INCREF(buf);
    Py_ssize_t have = PyObject_Length(buf);
    if (have >= 0 && have < size) {
        PyObject *ba = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)size);
        Py_CLEAR(buf);
        if (ba != NULL) {
            memset(PyByteArray_AS_STRING(ba), 0, (size_t)size);
            buf = PyMemoryView_FromObject(ba);
            Py_DECREF(ba);
        }
        if (buf != NULL) {
            Py_INCREF(buf);
            if (PyList_SetItem(bufs, which, buf) < 0)  /* steals one reference, even then */
                Py_CLEAR(buf);
        }
    }
    Py_DECREF(bufs);
    if (have < 0 || buf == NULL || set_ll(ahead, s_which, which) < 0
            || set_ll(ahead, s_obj, -1) < 0) {
        Py_XDECREF(buf);
        return NULL;
    }
    *r = 1;
    return buf;
}

/* `buf`: ReadAhead.buffer(native), a reference this function owns. */
static int ahead_direct(PyObject *ahead, long long fd, PyObject *buf, long long p,
                        long long native, long long off, long long stored)
{
    int r;
    Py_buffer bv;
    if (PyObject_GetBuffer(buf, &bv, PyBUF_WRITABLE) < 0)
        goto error;
    uint8_t head[RH_SIZE];
    struct iovec iov[2] = {{head, RH_SIZE}, {bv.buf, (size_t)native}};
    uint32_t crc;
    int have_crc;
    ssize_t got = pread_all(fd, iov, 2, off, RH_SIZE + stored, bv.buf, (Py_ssize_t)native,
                            &crc, &have_crc);
    if (got == -2) {
        PyBuffer_Release(&bv);
        goto error;
    }
    /* cut short, or a read error: damaged (the real READ meets it and reports it) */
    int ok = head_good(head, got, p, stored);
    if (ok > 0)
        ok = payload_crc_is(bv.buf, (Py_ssize_t)native, le32(head + 24), have_crc, crc);
    PyBuffer_Release(&bv);
    if (ok <= 0) {
        Py_DECREF(buf);
        return ok < 0 ? -1 : 1;
    }
    /* held as a view of the buffer: own False (not bytes), lasting True */
    PyObject *data = PySequence_GetSlice(buf, 0, (Py_ssize_t)native);
    if (data == NULL)
        goto error;
    r = hold(ahead, p, native, stored, data, 1);
    Py_DECREF(data);
    Py_DECREF(buf);
    return r < 0 ? -1 : 1;
error:
    Py_DECREF(buf);
    return -1;
}

/* ---- A compressed record too big for the span (scale4) -----------------------------------
 * TapeCartridge._decode's pread case for the read-ahead (a 256 KiB block of half compressible
 * data is stored in ~135 KiB, more than the span takes): ReadAhead.buffer(native) taken as the
 * Python method takes it (it flips the alternating buffers, grown when too small), the record
 * read into bytes of its own with one pread (GIL released), the header's checks, the
 * payload's crc32c and zstd; held as zstd's output (own True, lasting False), as read_ahead's
 * Python method holds it. A plain cartridge file only. 1 done (the cache left empty when the
 * record is damaged, does not decompress or the read fails), 0 the Python method's, -1 error. */
static int ahead_compressed(PyObject *cart, PyObject *ahead, long long fd, long long p,
                            long long native, long long off, long long stored)
{
    int r;
    long long size = RH_SIZE + stored;
    PyObject *raw = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (raw == NULL)
        return -1;
    uint8_t *rec = (uint8_t *)PyBytes_AS_STRING(raw);
    struct iovec iov[1] = {{rec, (size_t)size}};
    uint32_t crc;
    int have_crc;
    ssize_t got = pread_all(fd, iov, 1, off, size, rec + RH_SIZE, (Py_ssize_t)stored, &crc,
                            &have_crc);
    if (got == -2) {
        Py_DECREF(raw);
        return -1;
    }
    int ok = head_good(rec, got, p, stored);
    if (ok > 0)
        ok = payload_crc_is(rec + RH_SIZE, (Py_ssize_t)stored, le32(rec + 24), have_crc, crc);
    PyObject *data = ok > 0 ? unzstd(cart, rec + RH_SIZE, stored, native, &ok) : NULL;
    Py_DECREF(raw);
    if (data == NULL)  /* damaged: the cache stays empty, the real READ reports it */
        return ok < 0 ? -1 : 1;
    r = hold(ahead, p, native, stored, data, 0) < 0 ? -1 : 1;
    Py_DECREF(data);
    return r;
}

/* A record too big for the span: ahead_direct or ahead_compressed, on a plain cartridge
 * file, once ReadAhead.buffer(native) was taken as the Python method takes it (the
 * compressed record's decode does not use it). 1 done, 0 the Python method's, -1 error. */
static int ahead_big(PyObject *cart, PyObject *ahead, long long p, uint64_t m,
                     long long off, long long size)
{
    long long native = (long long)(m >> 16), stored = size - RH_SIZE, fd = -1;
    if (stored < 0)
        return 0;
    int r = plain_fd(cart, &fd);
    if (r <= 0)
        return r;
    PyObject *buf = next_buffer(ahead, native, &r);
    if (buf == NULL)
        return r;
    if (!(m & (FLAG_COMPRESSED << 8)))
        return ahead_direct(ahead, fd, buf, p, native, off, stored);
    Py_DECREF(buf);
    return ahead_compressed(cart, ahead, fd, p, native, off, stored);
}

static int ahead_from_span(PyObject *cart, PyObject *idx, PyObject *ahead, long long p,
                           int runs)
{
    /* encryption settings that refuse plain blocks (check_plain): the Python method's */
    PyObject *crypto = PyObject_GetAttr(cart, s_crypto);
    if (crypto == NULL)
        return -1;
    int refused = 0;
    if (crypto != Py_None) {
        PyObject *mode = PyObject_GetAttr(crypto, s_decrypt);
        refused = mode == NULL ? -1 : PyObject_RichCompareBool(mode, ra_decrypt_only, Py_EQ);
        Py_XDECREF(mode);
    }
    Py_DECREF(crypto);
    if (refused)
        return refused < 0 ? -1 : 0;
    Py_buffer meta, offs;
    if (u64_array(idx, s_meta, &meta) < 0)
        return -1;
    if (u64_array(idx, s_offsets, &offs) < 0) {
        PyBuffer_Release(&meta);
        return -1;
    }
    int result = 0;
    Py_ssize_t nmeta = meta.len / 8, noffs = offs.len / 8;
    long long end, span_off, span_len, r = p;
    if (runs && (r = record_of(idx, &meta, p)) < 0) {
        if (r == -2)
            result = -1;
        goto done;
    }
    if (r >= nmeta || r >= noffs)
        goto done;
    uint64_t m = ((uint64_t *)meta.buf)[r];
    if ((m & 0xFF) == KIND_DATA_RUN)
        goto done;  /* a block of a run of data: the Python method's (result 0) */
    if ((m & 0xFF) != KIND_DATA) {  /* a filemark: nothing to read ahead */
        result = 1;
        goto done;
    }
    if (m & (FLAG_ENCRYPTED << 8))
        goto done;
    long long off = (long long)((uint64_t *)offs.buf)[r];
    if (r + 1 < noffs)
        end = (long long)((uint64_t *)offs.buf)[r + 1];
    else if (get_ll(idx, s_end, &end) < 0)
        goto fail;
    long long size = end - off;
    if (size > ra_span_record_max) {  /* read straight into a buffer of the cache's */
        result = ahead_big(cart, ahead, p, m, off, size);
        goto done;
    }
    if (get_ll(ahead, s_span_off, &span_off) < 0 || get_ll(ahead, s_span_len, &span_len) < 0)
        goto fail;
    long long start = off - span_off;
    if (start < 0 || start + size > span_len)
        goto done;  /* the span is refilled by the Python method */
    /* From here on it is this function's: the cache is emptied first, as in Python. */
    if (set_ll(ahead, s_obj, -1) < 0)
        goto fail;
    result = 1;
    long long native = (long long)(m >> 16), stored = size - RH_SIZE;
    int compressed = (m & (FLAG_COMPRESSED << 8)) != 0;
    PyObject *span = PyObject_GetAttr(ahead, s_span);
    if (span == NULL)
        goto fail;
    Py_buffer sv;
    if (PyObject_GetBuffer(span, &sv, PyBUF_SIMPLE) < 0) {
        Py_DECREF(span);
        goto fail;
    }
    PyObject *data = NULL;
    const uint8_t *raw = (const uint8_t *)sv.buf + start;
    int ok;
    if (size < RH_SIZE || start + size > sv.len)
        goto released;  /* damaged: the real READ reports it */
    /* RecordHeader.unpack, then the checks of TapeCartridge._decode */
    if (raw[0] != 'R' || raw[1] != 'C')
        goto released;
    if ((ok = crc_is(raw, RH_CRC_SPAN, le32(raw + 28))) <= 0)
        goto checked;
    unsigned kind = raw[2];
    uint32_t stored_len = le32(raw + 4), native_len = le32(raw + 8);
    if (kind < 1 || kind > 3 || (kind == KIND_FILEMARK_RUN && native_len < 2)
            || (long long)le64(raw + 16) != p || (long long)stored_len != stored)
        goto released;
    if ((ok = crc_is(raw + RH_SIZE, (Py_ssize_t)stored, le32(raw + 24))) <= 0)
        goto checked;
    if (compressed) {
        data = unzstd(cart, raw + RH_SIZE, stored, native, &ok);
        if (data == NULL)
            goto checked;  /* ok 0: the real READ reports it */
    } else {
        data = PySequence_GetSlice(span, start + RH_SIZE, start + size);
        if (data == NULL) {
            ok = -1;
            goto checked;
        }
    }
    PyBuffer_Release(&sv);
    Py_DECREF(span);
    ok = hold(ahead, p, native, stored, data, 0);
    Py_DECREF(data);
    if (ok < 0)
        goto fail;
    goto done;
checked:
    if (ok < 0) {
        Py_XDECREF(data);
        PyBuffer_Release(&sv);
        Py_DECREF(span);
        goto fail;
    }
released:
    Py_XDECREF(data);
    PyBuffer_Release(&sv);
    Py_DECREF(span);
    goto done;
fail:
    result = -1;
done:
    PyBuffer_Release(&meta);
    PyBuffer_Release(&offs);
    return result;
}

PyDoc_STRVAR(read_ahead_doc,
"read_ahead(cart) -> None\n\n"
"TapeCartridge.read_ahead(cart): the usual case here, every other by the Python method.");

static PyObject *read_ahead(PyObject *mod, PyObject *cart)
{
    if (ra_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_read_ahead() was not called");
        return NULL;
    }
    PyObject *wb = PyObject_GetAttr(cart, s_wb);
    if (wb == NULL)
        return NULL;
    int busy = 0;
    if (wb != Py_None)
        busy = get_true(wb, s_blocks);
    Py_DECREF(wb);
    if (busy < 0)
        return NULL;
    if (busy)
        return PyObject_CallOneArg(ra_fallback, cart);
    long long p, aobj, objects;
    PyObject *idx = PyObject_GetAttr(cart, s_index);
    if (idx == NULL)
        return NULL;
    PyObject *ahead = PyObject_GetAttr(cart, s_ahead);
    int r = -1;
    if (ahead == NULL || get_ll(cart, s_position, &p) < 0 || get_ll(ahead, s_obj, &aobj) < 0
            || get_ll(idx, s_objects, &objects) < 0)
        goto out;
    if (p == aobj || p >= objects) {
        r = 1;
        goto out;
    }
    r = get_true(idx, s_run_rec);  /* runs of filemarks: objects are not records */
    if (r >= 0)
        r = ahead_from_span(cart, idx, ahead, p, r);
out:
    Py_DECREF(idx);
    Py_XDECREF(ahead);
    if (r < 0)
        return NULL;
    if (r == 0)
        return PyObject_CallOneArg(ra_fallback, cart);
    Py_RETURN_NONE;
}

/* ---- The drive's streaming READ(6): TapeDrive.stream_read's usual case -------------------
 *
 * vtl/scsi/ssc.py's TapeDrive.stream_read answers a READ(6) of the next block from the
 * read-ahead cache the idle hook filled (take_read_ahead), after the checks the general path
 * would make (unit attentions, reservations, IMMED work, injected faults, protection, the
 * same cartridge). Its usual case is done here, reading the same attributes in the same
 * order, so that a streaming READ whose block was decoded ahead runs no Python frame at all:
 * the checks, the hand-out (position, counters), the Data-In sent straight from the cache
 * (a view of the read-ahead span, or zstd's output: no copy into the drive's buffer), then
 * TapeDrive.idle's usual case and the next read-ahead. Anything else - a check that does not
 * pass plainly, the block not decoded ahead, another length - calls the Python method, which
 * decides as it always did: it stays the reference and the fallback (VTL_NO_FASTPATH=1), and
 * tests/iscsi/test_stream_read_native.py holds the two to the same answers and positions.
 * Owns nothing either: the state stays on the drive and the cartridge. */

#define OP_READ_6 0x08
#define READ6_SILI 0x02
#define READ6_FIXED 0x01
#define LBP_RW 0xC0  /* LBP_W | LBP_R (ssc_protection) */

/* Set by configure_drive_read(): TapeDrive.stream_read (a StreamLun whose read is this
 * function bound to a drive is served here; None: never). */
static PyObject *dr_method;
static unsigned long long dr_served;  /* READs answered here (tests, diagnostics) */

static PyObject *s_run_ahead, *s_run_ahead_m, *s_run_obj, *s_run_size, *s_run_count,
    *s_run_stored, *s_run_data;
static PyObject *s_block_size, *s_protection, *s_current, *s_dcart, *s_loaded, *s_bay, *s_cartridge, *s_part,
    *s_media_generation, *s_gen,
    *s_library, *s_faults, *s_media, *s_barcode,
    *s_streaming, *s_bytes_read, *s_sense, *s_pop, *s_counters, *s_read_native,
    *s_read_stored, *s_closed, *s_error, *s_cart_lock;

/* The drive a StreamLun's read callable belongs to when it is TapeDrive.stream_read bound
 * to it (borrowed), else NULL. */
static PyObject *native_drive(PyObject *read)
{
    if (dr_method == NULL || dr_method == Py_None || !PyMethod_Check(read)
            || PyMethod_GET_FUNCTION(read) != dr_method)
        return NULL;
    return PyMethod_GET_SELF(read);
}

/* getattr(obj, name) is an empty dict (1: nothing to look up), is not (0), -1 on error. */
static int attr_empty_dict(PyObject *obj, PyObject *name, PyObject **out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    if (PyDict_CheckExact(v) && PyDict_GET_SIZE(v) == 0) {
        Py_DECREF(v);
        return 1;
    }
    *out = v;
    return 0;
}

/* Protection off for the streaming paths (ControlDataProtectionPage.active false): 1, 0, -1. */
static int protection_off(PyObject *drive)
{
    PyObject *page = PyObject_GetAttr(drive, s_protection);
    PyObject *cur = page ? PyObject_GetAttr(page, s_current) : NULL;
    Py_XDECREF(page);
    if (cur == NULL)
        return -1;
    int r = 0;
    if (PyByteArray_Check(cur) && PyByteArray_GET_SIZE(cur) >= 3) {
        const uint8_t *b = (const uint8_t *)PyByteArray_AS_STRING(cur);
        r = b[0] == 0 || !(b[2] & LBP_RW);  /* no LBP method, or neither LBP_W nor LBP_R */
    }
    Py_DECREF(cur);
    return r;
}

static nexus_names_t dr_nexus_names;  /* set by configure_drive_read */

/* TapeDrive._stream_cart(nexus, PR_READ) and _has_injected, only where the answer is plain:
 * the cartridge (new reference) when every check passes untouched, NULL with no exception
 * when one does not (the Python method decides), NULL with one on error. Under drive.lock. */
static PyObject *plain_cart(PyObject *drive, PyObject *nexus)
{
    PyObject *cart = PyObject_GetAttr(drive, s_dcart), *bay = NULL, *o = NULL;
    long long part, gen, bgen;
    int r;
    if (cart == NULL || cart == Py_None)
        goto no;
    if ((r = get_true(drive, s_loaded)) <= 0)
        goto done_r;
    if ((bay = PyObject_GetAttr(drive, s_bay)) == NULL)
        goto error;
    if ((r = attr_is(bay, s_cartridge, cart)) <= 0)
        goto done_r;
    if (get_ll(drive, s_part, &part) < 0 || get_ll(bay, s_media_generation, &bgen) < 0
            || get_ll(drive, s_gen, &gen) < 0)
        goto error;
    if (part || bgen != gen)
        goto no;
    if ((r = plain_nexus(drive, nexus, &dr_nexus_names)) <= 0)
        goto done_r;
    /* _has_injected: library.faults.media_errors(barcode) is empty */
    PyObject *lib = PyObject_GetAttr(bay, s_library);
    PyObject *faults = lib ? PyObject_GetAttr(lib, s_faults) : NULL;
    Py_XDECREF(lib);
    o = faults ? PyObject_GetAttr(faults, s_media) : NULL;
    Py_XDECREF(faults);
    if (o == NULL)
        goto error;
    if (!PyDict_Check(o))
        goto no;
    if (PyDict_GET_SIZE(o)) {
        PyObject *barcode = PyObject_GetAttr(cart, s_barcode);
        PyObject *errs = barcode ? PyDict_GetItemWithError(o, barcode) : NULL;
        Py_XDECREF(barcode);
        if (errs == NULL && PyErr_Occurred())
            goto error;
        if (errs != NULL && (r = PyObject_IsTrue(errs)) != 0)
            goto done_r;
    }
    Py_DECREF(o);
    Py_DECREF(bay);
    return cart;
done_r:
    if (r < 0)
        goto error;
no:
    Py_XDECREF(o);
    Py_XDECREF(bay);
    Py_XDECREF(cart);
    return NULL;
error:
    Py_XDECREF(o);
    Py_XDECREF(bay);
    Py_XDECREF(cart);
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "vtl._fastpath: drive state unreadable");
    return NULL;
}

/* A write queued or failed in the cartridge's write buffer (1), none (0), -1 error. */
static int wb_busy(PyObject *cart)
{
    PyObject *wb = PyObject_GetAttr(cart, s_wb);
    if (wb == NULL)
        return -1;
    int busy = 0;
    if (wb != Py_None) {
        busy = get_true(wb, s_blocks);
        if (busy == 0)
            busy = !attr_is(wb, s_error, Py_None);  /* WriteBehind.failed; -1 reads as busy */
    }
    Py_DECREF(wb);
    return PyErr_Occurred() ? -1 : busy != 0;
}

/* The cartridge's read counters moved by a block or run handed out from the read-ahead, under
 * the cartridge's lock as its Python methods do: 0, or -1 with an exception. */
static int count_read(PyObject *cart, long long length, long long stored)
{
    int rc = -1;
    PyObject *lock = NULL, *counters = PyObject_GetAttr(cart, s_counters);
    if (counters == NULL || (lock = PyObject_GetAttr(cart, s_cart_lock)) == NULL
            || call_method0(lock, s_acquire) < 0)
        goto out;
    if (add_ll(counters, s_read_native, length) < 0 || add_ll(counters, s_read_stored, stored) < 0) {
        release_keeping_error(lock);
        goto out;
    }
    rc = call_method0(lock, s_release) < 0 ? -1 : 0;
out:
    Py_XDECREF(counters);
    Py_XDECREF(lock);
    return rc;
}

/* TapeCartridge.take_read_ahead(length, ...)'s usual case: the block at the position decoded
 * ahead, ``length`` bytes, no write queued or failed: the cache's data (new reference; sent
 * as it is, no copy), the position and the counters moved. NULL without an exception: not
 * that case, nothing changed. */
static PyObject *take_ahead(PyObject *cart, long long length)
{
    long long pos, obj, native, stored;
    PyObject *data = NULL;
    PyObject *ahead = PyObject_GetAttr(cart, s_ahead);
    if (ahead == NULL)
        return NULL;
    if (wb_busy(cart) != 0)
        goto out;
    if (get_ll(cart, s_position, &pos) < 0 || get_ll(ahead, s_obj, &obj) < 0
            || get_ll(ahead, s_native, &native) < 0)
        goto out;
    if (pos != obj || native != length)
        goto out;
    if (get_ll(ahead, s_stored, &stored) < 0 || (data = PyObject_GetAttr(ahead, s_data)) == NULL)
        goto out;
    Py_ssize_t have = PyObject_Length(data);
    if (have != length) {  /* (-1: not sized) the Python method copies what it needs */
        PyErr_Clear();
        Py_CLEAR(data);
        goto out;
    }
    if (set_ll(ahead, s_obj, -1) < 0 || set_ll(cart, s_position, pos + 1) < 0)
        goto fail;
    if (count_read(cart, length, stored) < 0)
        goto fail;
    goto out;
fail:
    Py_CLEAR(data);
out:
    Py_DECREF(ahead);
    return data;
}

/* TapeCartridge.take_run_ahead(length, size)'s usual case: the run decoded ahead starts at
 * the position, ``length`` bytes of ``size``-byte blocks, no write queued or failed: its data
 * (new reference; sent as it is), the position moved past it and its blocks counted. NULL
 * without an exception: not that case, nothing changed. */
static PyObject *take_run(PyObject *cart, long long length, long long size)
{
    long long pos, robj, rsize, rcount, rstored, obj;
    PyObject *data = NULL;
    PyObject *ahead = PyObject_GetAttr(cart, s_ahead);
    if (ahead == NULL)
        return NULL;
    int busy = wb_busy(cart);
    if (busy != 0)
        goto out;
    if (get_ll(cart, s_position, &pos) < 0 || get_ll(ahead, s_run_obj, &robj) < 0
            || get_ll(ahead, s_run_size, &rsize) < 0 || get_ll(ahead, s_run_count, &rcount) < 0)
        goto out;
    if (pos != robj || rsize != size || rcount * size != length)
        goto out;
    if (get_ll(ahead, s_run_stored, &rstored) < 0 || get_ll(ahead, s_obj, &obj) < 0
            || (data = PyObject_GetAttr(ahead, s_run_data)) == NULL)
        goto out;
    if (PyObject_Length(data) != length) {  /* (never: run_buffer is exact) the method's */
        PyErr_Clear();
        Py_CLEAR(data);
        goto out;
    }
    if (set_ll(ahead, s_run_obj, -1) < 0 || (pos <= obj && obj < pos + rcount
                                               && set_ll(ahead, s_obj, -1) < 0)
            || set_ll(cart, s_position, pos + rcount) < 0)
        goto fail;
    if (count_read(cart, length, rstored) < 0)
        goto fail;
    goto out;
fail:
    Py_CLEAR(data);
out:
    Py_DECREF(ahead);
    return data;
}

/* TapeDrive.stream_read(nexus, cdb, length) where its answer is plain: the block (new
 * reference), or NULL without an exception for "ask the Python method", or with one. */
static PyObject *drive_read(PyObject *drive, PyObject *nexus, const uint8_t *cdb,
                            uint32_t length)
{
    /* streaming_read_length(cdb) == length, and length > 0; or (fixed mode) one block of
     * the mode's block size, which reads as a variable-mode READ of that size */
    uint32_t count = (uint32_t)cdb[2] << 16 | (uint32_t)cdb[3] << 8 | cdb[4];
    if (cdb[0] != OP_READ_6 || cdb[5] || !length)
        return NULL;
    long long bs = 0;  /* a run: the mode's block size (several blocks) */
    if (cdb[1] == READ6_FIXED) {
        if (get_ll(drive, s_block_size, &bs) < 0)
            return NULL;
        if (bs <= 0 || (long long)count * bs != (long long)length)
            return NULL;
        if (count == 1)
            bs = 0;  /* one block: as a variable-mode READ of its size */
    } else if ((cdb[1] & ~READ6_SILI) || count != length) {
        return NULL;
    }
    int r = protection_off(drive);
    if (r <= 0)
        return NULL;
    PyObject *lock = PyObject_GetAttr(drive, s_lock), *data = NULL, *cart = NULL;
    if (lock == NULL)
        return NULL;
    if (call_method0(lock, s_acquire) < 0) {
        Py_DECREF(lock);
        return NULL;
    }
    if ((cart = plain_cart(drive, nexus)) == NULL
            || (data = bs ? take_run(cart, length, bs) : take_ahead(cart, length)) == NULL)
        goto out;
    /* self._streaming = True; self.bytes_read += length; self._plain_done(nexus) */
    PyObject *sense = NULL;
    if (PyObject_SetAttr(drive, s_streaming, Py_True) < 0 || add_ll(drive, s_bytes_read, length) < 0
            || (r = attr_empty_dict(drive, s_sense, &sense)) < 0)
        goto fail;
    if (bs) {  /* self._run_ahead = (count, bs): the idle hook decodes the next run */
        PyObject *next = Py_BuildValue("(LL)", (long long)count, bs);
        int bad = next == NULL || PyObject_SetAttr(drive, s_run_ahead, next) < 0;
        Py_XDECREF(next);
        if (bad) {
            Py_XDECREF(sense);
            goto fail;
        }
    }
    if (r == 0) {
        PyObject *res = PyObject_CallMethodObjArgs(sense, s_pop, nexus, Py_None, NULL);
        Py_DECREF(sense);
        if (res == NULL)
            goto fail;
        Py_DECREF(res);
    }
    dr_served++;
    goto out;
fail:
    Py_CLEAR(data);
out:
    Py_XDECREF(cart);
    if (PyErr_Occurred())
        release_keeping_error(lock);
    else if (call_method0(lock, s_release) < 0)
        Py_CLEAR(data);
    Py_DECREF(lock);
    return data;
}

/* TapeDrive.idle after a READ served here: the next block decoded ahead (its usual case in
 * read_ahead above). Never raises an Exception (speculative work: the real READ reports
 * errors), as the Python method. 0, or -1 for anything that is not an Exception. */
static int drive_idle(PyObject *drive)
{
    PyObject *cart = NULL, *bay = NULL, *r = NULL, *run = NULL;
    long long part;
    int ok;
    if ((ok = get_true(drive, s_streaming)) <= 0)
        goto out;
    if (PyObject_SetAttr(drive, s_streaming, Py_False) < 0)
        goto out;
    /* run, self._run_ahead = self._run_ahead, None */
    if ((run = PyObject_GetAttr(drive, s_run_ahead)) == NULL
            || PyObject_SetAttr(drive, s_run_ahead, Py_None) < 0)
        goto out;
    if (run != Py_None && (!PyTuple_Check(run) || PyTuple_GET_SIZE(run) != 2)) {
        PyErr_SetString(PyExc_TypeError, "TapeDrive._run_ahead: (blocks, size) expected");
        goto out;
    }
    if ((cart = PyObject_GetAttr(drive, s_dcart)) == NULL || cart == Py_None)
        goto out;
    if ((ok = get_true(drive, s_loaded)) <= 0 || (ok = get_true(cart, s_closed)) != 0)
        goto out;
    if ((bay = PyObject_GetAttr(drive, s_bay)) == NULL || (ok = attr_is(bay, s_cartridge, cart)) <= 0
            || get_ll(drive, s_part, &part) < 0 || part)
        goto out;
    if (run != Py_None)  /* after a run: the next one (TapeCartridge.run_ahead) */
        r = PyObject_CallMethodObjArgs(cart, s_run_ahead_m, PyTuple_GET_ITEM(run, 0),
                                       PyTuple_GET_ITEM(run, 1), NULL);
    else
        r = read_ahead(NULL, cart);
    Py_XDECREF(r);
out:
    Py_XDECREF(run);
    Py_XDECREF(cart);
    Py_XDECREF(bay);
    if (!PyErr_Occurred())
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Clear();
    return 0;
}

PyDoc_STRVAR(configure_drive_read_doc,
"configure_drive_read(method)\n\n"
"TapeDrive.stream_read: a LUN whose stream_read is this function bound to a drive has its\n"
"usual READ(6) answered in C (None: never).");

static PyObject *configure_drive_read(PyObject *mod, PyObject *method)
{
    Py_INCREF(method);
    Py_XSETREF(dr_method, method);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(drive_reads_doc,
"drive_reads() -> int\n\n"
"How many READ(6) were answered by the drive's usual case in C (tests, diagnostics).");

static PyObject *drive_reads(PyObject *mod, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(dr_served);
}

static PyMethodDef methods[] = {
    {"stream_read", (PyCFunction)(void (*)(void))stream_read, METH_FASTCALL, stream_read_doc},
    {"stream_write", (PyCFunction)(void (*)(void))stream_write, METH_FASTCALL,
     stream_write_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {"read_ahead", read_ahead, METH_O, read_ahead_doc},
    {"configure_read_ahead", configure_read_ahead, METH_VARARGS, configure_read_ahead_doc},
    {"configure_drive_read", configure_drive_read, METH_O, configure_drive_read_doc},
    {"drive_reads", drive_reads, METH_NOARGS, drive_reads_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vtl._fastpath",
    "The streaming READ(6)/WRITE(6) fast paths in C (vtl/iscsi/stream_paths.py is the "
    "reference) and the usual case of TapeCartridge.read_ahead.", -1, methods,
};

/* vtl/_fastpath_write.c: the write side (append_now, ssc_stream_write, configure_write). */
int fastpath_write_init(PyObject *module);
/* vtl/_fastpath_spin.c: recv_spin, a short wait on the CPU for a stream's next command. */
int fastpath_spin_init(PyObject *module);

#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC PyInit__fastpath(void)
{
    INTERN(s_hd, "_hd"); INTERN(s_dd, "_dd"); INTERN(s_streams, "_streams");
    INTERN(s_session, "session"); INTERN(s_draining, "draining");
    INTERN(s_closing, "_closing"); INTERN(s_queue_depth, "queue_depth");
    INTERN(s_exp_cmdsn, "exp_cmdsn"); INTERN(s_tasks, "tasks"); INTERN(s_taken, "taken");
    INTERN(s_freed, "freed"); INTERN(s_posted, "_posted"); INTERN(s_state, "state");
    INTERN(s_params, "params"); INTERN(s_max_xmit_dsl, "max_xmit_dsl");
    INTERN(s_max_burst, "max_burst"); INTERN(s_lock, "lock"); INTERN(s_nexus, "nexus");
    INTERN(s_tx_lock, "_tx_lock"); INTERN(s_statsn, "statsn");
    INTERN(s_idle, "idle"); INTERN(s_acquire, "acquire"); INTERN(s_release, "release");
    INTERN(s_server, "server"); INTERN(s_config, "config"); INTERN(s_limits, "limits");
    INTERN(s_immediate_data, "immediate_data"); INTERN(s_first_burst, "first_burst");
    INTERN(s_max_dsl, "_max_dsl"); INTERN(s_max_transfer, "max_transfer");
    INTERN(s_buffered, "_buffered"); INTERN(s_max_buffered, "max_buffered");
    INTERN(s_write_buffer, "_write_buffer"); INTERN(s_recv_exact, "_recv_exact");
    INTERN(s_tbuf, "_tbuf"); INTERN(s_stream_read, "stream_read");
    INTERN(s_stream_write, "stream_write"); INTERN(s_idle_what, "idle");
    INTERN(s_sock_closed, "_sock_closed"); INTERN(s_unsent_bytes, "_unsent_bytes");
    INTERN(s_sock, "sock"); INTERN(s_sendmsg, "sendmsg");
    INTERN(s_wb, "_wb"); INTERN(s_blocks, "blocks"); INTERN(s_position, "position");
    INTERN(s_index, "index"); INTERN(s_ahead, "_ahead"); INTERN(s_obj, "obj");
    INTERN(s_objects, "objects"); INTERN(s_run_rec, "run_rec"); INTERN(s_meta, "meta");
    INTERN(s_offsets, "offsets"); INTERN(s_end, "end"); INTERN(s_crypto, "crypto");
    INTERN(s_span, "span"); INTERN(s_span_off, "span_off"); INTERN(s_span_len, "span_len");
    INTERN(s_native, "native"); INTERN(s_stored, "stored"); INTERN(s_data, "data");
    INTERN(s_own, "own"); INTERN(s_lasting, "lasting"); INTERN(s_dctx, "_dctx");
    INTERN(s_decompress, "decompress"); INTERN(s_run_first, "run_first");
    INTERN(s_run_extra, "run_extra"); INTERN(s_decrypt, "decrypt");
    INTERN(s_protection, "protection"); INTERN(s_current, "current"); INTERN(s_dcart, "_cart");
    INTERN(s_loaded, "_loaded"); INTERN(s_bay, "bay"); INTERN(s_cartridge, "cartridge");
    INTERN(s_part, "_part"); INTERN(s_media_generation, "media_generation");
    INTERN(s_gen, "_gen");
    INTERN(s_library, "library"); INTERN(s_faults, "faults"); INTERN(s_media, "_media");
    INTERN(s_barcode, "barcode"); INTERN(s_streaming, "_streaming");
    INTERN(s_block_size, "block_size");
    INTERN(s_run_ahead, "_run_ahead"); INTERN(s_run_ahead_m, "run_ahead");
    INTERN(s_run_obj, "run_obj"); INTERN(s_run_size, "run_size");
    INTERN(s_run_count, "run_count"); INTERN(s_run_stored, "run_stored");
    INTERN(s_run_data, "run_data");
    INTERN(s_bytes_read, "bytes_read"); INTERN(s_sense, "_sense"); INTERN(s_pop, "pop");
    INTERN(s_counters, "counters"); INTERN(s_read_native, "read_native");
    INTERN(s_read_stored, "read_stored"); INTERN(s_closed, "_closed"); INTERN(s_error, "_error");
    if (nexus_names_init(&dr_nexus_names) < 0)
        return NULL;
    INTERN(s_cart_lock, "_lock");
    INTERN(s_io, "_io"); INTERN(s_fd, "fd"); INTERN(s_bufs, "_bufs"); INTERN(s_which, "_which");
    PyObject *max_output = PyUnicode_InternFromString("max_output_size");
    if (max_output == NULL || (ra_max_output = PyTuple_Pack(1, max_output)) == NULL)
        return NULL;
    if ((empty_tuple = PyTuple_New(0)) == NULL
            || (msg_dontwait = PyLong_FromLong(MSG_DONTWAIT)) == NULL)
        return NULL;
    for (int i = 0; i < 4; i++) {
        static const char zeros[4];
        if ((pad_bytes[i] = PyBytes_FromStringAndSize(zeros, i)) == NULL)
            return NULL;
    }
    if ((r_none_none_true = PyTuple_Pack(3, Py_None, Py_None, Py_True)) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL || fastpath_write_init(m) < 0 || fastpath_spin_init(m) < 0) {
        Py_XDECREF(m);
        return NULL;
    }
    return m;
}
