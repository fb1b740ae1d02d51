/* tape_formats.archive._paxfast: the pax headers of a plain regular file, in C, the ustar
 * checksum a reader verifies, and the trailer's JSON lines of a packed file index.
 *
 * Why: a backup of many small files builds one extended header and one ustar header per
 * file; in Python that is ~15 us of struct packing, octal and decimal formatting and
 * checksumming per file, the largest share of the writer thread's time. This builds the same
 * bytes as PaxWriter.add (tape_formats/archive/writer.py, the reference and the fallback) for
 * the common case only, and answers None for anything else, so the caller takes the
 * Python path: a name that is not ASCII or does not fit the 100-byte name field, ids,
 * sizes or times out of the ustar ranges or negative, long or non-ASCII user/group names.
 *
 * file_headers(name, mode, uid, gid, size, mtime_ns, atime_ns, uname, gname) -> bytes | None
 *   name, uname, gname: bytes; the rest ints (atime_ns may be None). The result is the pax
 *   'x' header block, its records padded to 512, then the file's ustar block.
 * header_sum(block) -> int: the unsigned checksum of a 512-byte header (parse_ustar's).
 * index_json(rows) -> (bytes, used): packed file index rows as the trailer's JSON lines.
 * ustar_fields(block) -> tuple | None: a plain ustar header's fields (parse_ustar's).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>

#define BLOCK 512
#define NS 1000000000LL

static void octal(char *field, int width, unsigned long long value)
{
    /* "%0*o\0": width-1 octal digits and a NUL (the caller checked that it fits) */
    field[width - 1] = '\0';
    for (int i = width - 2; i >= 0; i--) {
        field[i] = (char)('0' + (value & 7));
        value >>= 3;
    }
}

/* One ustar block as pax.build_ustar builds it (name fits 100 bytes, no prefix). */
static void ustar(char *b, const char *name, Py_ssize_t name_len, unsigned long long mode,
                  unsigned long long uid, unsigned long long gid, unsigned long long size,
                  unsigned long long mtime, char typeflag, const char *uname,
                  Py_ssize_t uname_len, const char *gname, Py_ssize_t gname_len)
{
    memset(b, 0, BLOCK);
    memcpy(b, name, (size_t)name_len);
    octal(b + 100, 8, mode);
    octal(b + 108, 8, uid);
    octal(b + 116, 8, gid);
    octal(b + 124, 12, size);
    octal(b + 136, 12, mtime);
    memset(b + 148, ' ', 8);
    b[156] = typeflag;
    memcpy(b + 257, "ustar\0" "00", 8);
    memcpy(b + 265, uname, (size_t)uname_len);
    memcpy(b + 297, gname, (size_t)gname_len);
    octal(b + 329, 8, 0);
    octal(b + 337, 8, 0);
    unsigned int sum = 0;
    for (int i = 0; i < BLOCK; i++)
        sum += (unsigned char)b[i];
    /* "%06o\0 " */
    char chk[8];
    octal(chk, 7, sum);
    memcpy(b + 148, chk, 7);
    b[155] = ' ';
}

/* pax.format_pax_time for ns >= 0: "secs" or "secs.fraction" without trailing zeros. */
static int pax_time(char *out, long long ns)
{
    long long secs = ns / NS, frac = ns % NS;
    if (frac == 0)
        return sprintf(out, "%lld", secs);
    int n = sprintf(out, "%lld.%09lld", secs, frac);
    while (out[n - 1] == '0')
        n--;
    out[n] = '\0';
    return n;
}

/* pax.pax_record: "<len> <key>=<value>\n" where len counts its own digits. */
static int pax_record(char *out, const char *key, const char *value, int value_len)
{
    int n = (int)strlen(key) + value_len + 3;
    int digits = n < 10 ? 1 : n < 100 ? 2 : 3;
    int total = n + digits;
    if ((digits == 1 && total >= 10) || (digits == 2 && total >= 100))
        total++;
    return sprintf(out, "%d %s=%.*s\n", total, key, value_len, value);
}

static int plain_ascii(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

static PyObject *file_headers(PyObject *self, PyObject *args)
{
    (void)self;
    const char *name, *uname, *gname;
    Py_ssize_t name_len, uname_len, gname_len;
    long long mode, uid, gid, size, mtime_ns;
    PyObject *atime_obj;
    if (!PyArg_ParseTuple(args, "y#LLLLLOy#y#", &name, &name_len, &mode, &uid, &gid, &size,
                          &mtime_ns, &atime_obj, &uname, &uname_len, &gname, &gname_len))
        return NULL;
    long long atime_ns = -1;
    if (atime_obj != Py_None) {
        atime_ns = PyLong_AsLongLong(atime_obj);
        if (atime_ns == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        if (atime_ns < 0)
            Py_RETURN_NONE;
    }
    const long long max_id = 1LL << 21, max_12 = 1LL << 33;
    if (name_len == 0 || name_len > 100 || !plain_ascii(name, name_len)
        || uname_len > 32 || !plain_ascii(uname, uname_len)
        || gname_len > 32 || !plain_ascii(gname, gname_len)
        || uid < 0 || uid >= max_id || gid < 0 || gid >= max_id
        || size < 0 || size >= max_12 || mtime_ns < 0 || mtime_ns / NS >= max_12
        || memchr(name, 0, (size_t)name_len) || memchr(uname, 0, (size_t)uname_len)
        || memchr(gname, 0, (size_t)gname_len))
        Py_RETURN_NONE;

    char body[160];
    int body_len = 0;
    char value[48];
    if (mtime_ns % NS) {
        int n = pax_time(value, mtime_ns);
        body_len += pax_record(body + body_len, "mtime", value, n);
    }
    if (atime_ns >= 0) {
        int n = pax_time(value, atime_ns);
        body_len += pax_record(body + body_len, "atime", value, n);
    }
    Py_ssize_t head = body_len ? BLOCK + ((body_len + BLOCK - 1) / BLOCK) * BLOCK : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, head + BLOCK);
    if (out == NULL)
        return NULL;
    char *b = PyBytes_AS_STRING(out);
    if (body_len) {
        ustar(b, "././@PaxHeader", 14, 0644, 0, 0, (unsigned long long)body_len, 0, 'x',
              "", 0, "", 0);
        memset(b + BLOCK, 0, (size_t)(head - BLOCK));
        memcpy(b + BLOCK, body, (size_t)body_len);
    }
    ustar(b + head, name, name_len, (unsigned long long)mode & 07777777,
          (unsigned long long)uid, (unsigned long long)gid, (unsigned long long)size,
          (unsigned long long)(mtime_ns / NS), '0', uname, uname_len, gname, gname_len);
    return out;
}

/* The unsigned ustar checksum of a 512-byte block: every byte, the checksum field's eight
 * counted as spaces (what pax.parse_ustar compares the stored checksum with). */
static PyObject *header_sum(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len != BLOCK) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a ustar header is 512 bytes");
        return NULL;
    }
    const unsigned char *b = view.buf;
    unsigned long sum = 8 * ' ';
    for (int i = 0; i < BLOCK; i++)
        if (i < 148 || i >= 156)
            sum += b[i];
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(sum);
}

/* ---- reading: the fields of a ustar header block ---- */

/* A numeric field as pax._parse_number reads it, for the plain case only: spaces, octal
 * digits, spaces, then the field's end or a NUL. Returns 0 and sets *value, or -1 for
 * anything else (base-256, other characters), which the caller leaves to Python. */
static int plain_octal(const unsigned char *f, int width, long long *value)
{
    int i = 0;
    unsigned long long v = 0;
    while (i < width && f[i] == ' ')
        i++;
    int digits = 0;
    while (i < width && f[i] >= '0' && f[i] <= '7') {
        v = (v << 3) | (unsigned)(f[i] - '0');
        i++;
        digits++;
    }
    if (digits > 21)
        return -1;
    while (i < width && f[i] == ' ')
        i++;
    if (i < width && f[i] != '\0')
        return -1;
    *value = (long long)v;
    return 0;
}

static PyObject *cstr(const unsigned char *f, int width)
{
    const unsigned char *nul = memchr(f, 0, (size_t)width);
    return PyBytes_FromStringAndSize((const char *)f, nul ? nul - f : width);
}

/* ustar_fields(block) -> tuple | None: pax.parse_ustar's UstarHeader fields of a POSIX
 * ustar block whose checksum (unsigned) and numbers are plain; None for everything else
 * (old GNU magic, base-256 numbers, a signed or bad checksum, bad magic): Python decides. */
static PyObject *ustar_fields(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    const unsigned char *b = view.buf;
    long long num[7]; /* chksum, mode, uid, gid, size, mtime, devmajor; devminor below */
    static const int off[7] = {148, 100, 108, 116, 124, 136, 329};
    static const int width[7] = {8, 8, 8, 8, 12, 12, 8};
    long long devminor;
    if (view.len != BLOCK || memcmp(b + 257, "ustar\0" "00", 8) != 0)
        goto decline;
    for (int i = 0; i < 7; i++)
        if (plain_octal(b + off[i], width[i], &num[i]) < 0)
            goto decline;
    if (plain_octal(b + 337, 8, &devminor) < 0)
        goto decline;
    unsigned long sum = 8 * ' ';
    for (int i = 0; i < BLOCK; i++)
        if (i < 148 || i >= 156)
            sum += b[i];
    if ((unsigned long long)num[0] != sum)
        goto decline;
    PyObject *name = cstr(b, 100), *prefix = cstr(b + 345, 155);
    if (name == NULL || prefix == NULL) {
        Py_XDECREF(name);
        Py_XDECREF(prefix);
        goto done;
    }
    if (PyBytes_GET_SIZE(prefix)) {
        PyObject *full = PyBytes_FromFormat("%s/%s", PyBytes_AS_STRING(prefix),
                                            PyBytes_AS_STRING(name));
        Py_DECREF(name);
        name = full;
    }
    Py_DECREF(prefix);
    if (name == NULL)
        goto done;
    char typeflag = b[156] ? (char)b[156] : '0';
    result = Py_BuildValue("(NLLLLLy#NNNLL)", name, num[1], num[2], num[3], num[4], num[5],
                           &typeflag, (Py_ssize_t)1, cstr(b + 157, 100), cstr(b + 265, 32),
                           cstr(b + 297, 32), num[6], devminor);
    goto done;
decline:
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&view);
    return result;
}

/* ---- the trailer's file index: packed rows (packed_index.py) to JSON lines ---- */

static const char *const KIND_NAMES[] = {"file", "dir", "symlink", "hardlink", "chardev",
                                         "blockdev", "fifo"};
#define ROW_SIZE (2 + 7 * 8 + 2 * 4) /* struct "<BBqqqqqqqII" */
#define HAS_SHA 1
#define DELETED 2
#define TORN 4

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

static int out_reserve(Out *o, Py_ssize_t more)
{
    if (o->len + more <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap * 2 > o->len + more ? o->cap * 2 : o->len + more + 4096;
    char *b = PyMem_Realloc(o->buf, (size_t)cap);
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->buf = b;
    o->cap = cap;
    return 0;
}

/* A JSON string as json's encoder writes it with ensure_ascii=False: '"' and '\\' and the
 * control characters escaped, every other byte (UTF-8 or a raw name byte) as it is. */
static int json_string(Out *o, const unsigned char *s, Py_ssize_t n)
{
    if (out_reserve(o, 6 * n + 2) < 0)
        return -1;
    char *w = o->buf + o->len;
    *w++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= ' ' && c != '"' && c != '\\') {
            *w++ = (char)c;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\f': *w++ = 'f'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default:
            w += sprintf(w, "u%04x", c);
        }
    }
    *w++ = '"';
    o->len = w - o->buf;
    return 0;
}

static long long le64(const unsigned char *p)
{
    unsigned long long v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return (long long)v;
}

static unsigned int le32(const unsigned char *p)
{
    return (unsigned int)p[0] | (unsigned int)p[1] << 8 | (unsigned int)p[2] << 16
           | (unsigned int)p[3] << 24;
}

/* index_json(data) -> (text, used): the complete packed rows at the start of ``data`` as the
 * trailer's JSON lines (PackedIndex.json_lines' bytes), and how many bytes they took. */
static PyObject *index_json(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *d = view.buf;
    Py_ssize_t end = view.len, pos = 0;
    Out o = {NULL, 0, 0};
    static const char hex[] = "0123456789abcdef";
    while (pos + ROW_SIZE <= end) {
        const unsigned char *r = d + pos;
        unsigned kind = r[0], flags = r[1];
        unsigned int plen = le32(r + 58), llen = le32(r + 62);
        Py_ssize_t sha = flags & HAS_SHA ? 32 : 0;
        if (pos + ROW_SIZE + sha + (Py_ssize_t)plen + (Py_ssize_t)llen > end)
            break;
        if (kind >= sizeof KIND_NAMES / sizeof KIND_NAMES[0]) {
            PyErr_SetString(PyExc_ValueError, "packed index row of an unknown kind");
            goto fail;
        }
        const unsigned char *p = r + ROW_SIZE + sha;
        if (out_reserve(&o, 400) < 0)
            goto fail;
        memcpy(o.buf + o.len, "{\"path\":", 8);
        o.len += 8;
        if (json_string(&o, p, plen) < 0 || out_reserve(&o, 400) < 0)
            goto fail;
        o.len += sprintf(o.buf + o.len,
                         ",\"kind\":\"%s\",\"size\":%lld,\"mtime_ns\":%lld,\"mode\":%lld,"
                         "\"uid\":%lld,\"gid\":%lld,\"header_offset\":%lld,\"data_offset\":%lld",
                         KIND_NAMES[kind], le64(r + 2), le64(r + 10), le64(r + 18), le64(r + 26),
                         le64(r + 34), le64(r + 42), le64(r + 50));
        if (sha) {
            char *w = o.buf + o.len;
            memcpy(w, ",\"sha256\":\"", 11);
            w += 11;
            for (int i = 0; i < 32; i++) {
                *w++ = hex[r[ROW_SIZE + i] >> 4];
                *w++ = hex[r[ROW_SIZE + i] & 15];
            }
            *w++ = '"';
            o.len = w - o.buf;
        }
        if (flags & DELETED) {
            memcpy(o.buf + o.len, ",\"deleted\":true", 15);
            o.len += 15;
        }
        if (llen) {
            memcpy(o.buf + o.len, ",\"linkname\":", 12);
            o.len += 12;
            if (json_string(&o, p + plen, llen) < 0 || out_reserve(&o, 16) < 0)
                goto fail;
        }
        if (flags & TORN) {
            memcpy(o.buf + o.len, ",\"torn\":true", 12);
            o.len += 12;
        }
        memcpy(o.buf + o.len, "}\n", 2);
        o.len += 2;
        pos += ROW_SIZE + sha + plen + llen;
    }
    PyBuffer_Release(&view);
    PyObject *text = PyBytes_FromStringAndSize(o.buf ? o.buf : "", o.len);
    PyMem_Free(o.buf);
    if (text == NULL)
        return NULL;
    return Py_BuildValue("(Nn)", text, pos);
fail:
    PyBuffer_Release(&view);
    PyMem_Free(o.buf);
    return NULL;
}

static PyMethodDef methods[] = {
    {"ustar_fields", ustar_fields, METH_O,
     "The fields of a plain POSIX ustar header block as a tuple, or None (use Python)."},
    {"index_json", index_json, METH_O,
     "The complete packed index rows at the start of a buffer as JSON lines, and the bytes used."},
    {"header_sum", header_sum, METH_O,
     "The unsigned checksum of a ustar header block (its checksum field as spaces)."},
    {"file_headers", file_headers, METH_VARARGS,
     "The pax 'x' header and ustar block of a plain regular file, or None (use Python)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tape_formats.archive._paxfast",
    "The pax headers of a plain regular file in C (PaxWriter.add is the reference).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__paxfast(void)
{
    return PyModule_Create(&module);
}
