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
 * index_rows(rows, backup) -> (rows, paths, used): the same rows as the catalog's insert
 *   parameters (ebm/catalog.py), no Python per row.
 * ustar_fields(block) -> tuple | None: a plain ustar header's fields (parse_ustar's).
 * pack_files(...): with libcrypto (EBM_HAVE_LIBCRYPTO, setup.py), the filesystem translator's
 *   runs of plain spooled entries in one call: each file opened, read between two fstats,
 *   its headers, data, padding, sha256, file index row and state row built here, ~40 us of
 *   Python per file otherwise (translators/filesystem.py's loop stays the reference).
 * stage_rows(catalog, backup, rows): with SQLite (EBM_HAVE_SQLITE, setup.py), a chunk of packed
 *   index rows inserted into the catalog's ebm_paths and ebm_files as Catalog._insert_files
 *   does, on a connection of its own, the GIL released (ebm.catalog.IndexStager).
 * extract_files(...): with libcrypto, the other way: a run of buffered plain file members of
 *   one directory checked against the catalog's rows and created as files in one call, the
 *   GIL released (ebm/restore.py's whole-backup stream; filesystem.py's _Restorer).
 * Extractor: extract_files' runs planned in the call and created by worker threads of its
 *   own, behind the reading (ebm/restore.py's whole restore; see its section below).
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

/* The decimal digits of v into out (no NUL): their count. What "%llu" writes, without
 * printf's machinery (a pax header has two or four numbers to format per file). */
static int put_dec(char *out, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* put_dec for a signed value ("%lld"). */
static int put_lld(char *out, long long v)
{
    if (v >= 0)
        return put_dec(out, (unsigned long long)v);
    out[0] = '-';
    return 1 + put_dec(out + 1, 0ULL - (unsigned long long)v);
}

/* pax.format_pax_time for ns >= 0: "secs" or "secs.fraction" without trailing zeros. */
static int pax_time(char *out, long long ns)
{
    long long secs = ns / NS, frac = ns % NS;
    int n = put_dec(out, (unsigned long long)secs);
    if (frac) {
        out[n] = '.';
        for (int i = 9; i >= 1; i--) {
            out[n + i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        n += 10;
        while (out[n - 1] == '0')
            n--;
    }
    out[n] = '\0';
    return n;
}

/* pax.pax_record: "<len> <key>=<value>\n" where len counts its own digits. */
static int pax_record(char *out, const char *key, const char *value, int value_len)
{
    int key_len = (int)strlen(key);
    int n = key_len + value_len + 3;
    int digits = n < 10 ? 1 : n < 100 ? 2 : 3;
    int total = n + digits;
    if ((digits == 1 && total >= 10) || (digits == 2 && total >= 100))
        total++;
    int w = put_dec(out, (unsigned long long)total);
    out[w++] = ' ';
    memcpy(out + w, key, (size_t)key_len);
    w += key_len;
    out[w++] = '=';
    memcpy(out + w, value, (size_t)value_len);
    w += value_len;
    out[w++] = '\n';
    out[w] = '\0';
    return w;
}

static int plain_ascii(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

#define MAX_FILE_HEADERS (3 * BLOCK) /* pax 'x' block, its records (< 512), ustar block */

/* The pax 'x' header (when the times need one) and the ustar block of a plain regular file
 * into ``b`` (room for MAX_FILE_HEADERS): their length, or -1 when the file is not plain
 * (PaxWriter.add's Python path decides then). atime_ns < 0: none. */
static Py_ssize_t build_file_headers(char *b, const char *name, Py_ssize_t name_len,
                                     long long mode, long long uid, long long gid,
                                     long long size, long long mtime_ns, long long atime_ns,
                                     const char *uname, Py_ssize_t uname_len,
                                     const char *gname, Py_ssize_t gname_len)
{
    const long long max_id = 1LL << 21, max_12 = 1LL << 33;
    if (name_len == 0 || name_len > 100 || !plain_ascii(name, name_len)
        || uname_len > 32 || !plain_ascii(uname, uname_len)
        || gname_len > 32 || !plain_ascii(gname, gname_len)
        || uid < 0 || uid >= max_id || gid < 0 || gid >= max_id
        || size < 0 || size >= max_12 || mtime_ns < 0 || mtime_ns / NS >= max_12
        || memchr(name, 0, (size_t)name_len) || memchr(uname, 0, (size_t)uname_len)
        || memchr(gname, 0, (size_t)gname_len))
        return -1;
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
    if (body_len) {
        ustar(b, "././@PaxHeader", 14, 0644, 0, 0, (unsigned long long)body_len, 0, 'x',
              "", 0, "", 0);
        memset(b + BLOCK, 0, (size_t)(head - BLOCK));
        memcpy(b + BLOCK, body, (size_t)body_len);
    }
    ustar(b + head, name, name_len, (unsigned long long)mode & 07777777,
          (unsigned long long)uid, (unsigned long long)gid, (unsigned long long)size,
          (unsigned long long)(mtime_ns / NS), '0', uname, uname_len, gname, gname_len);
    return head + BLOCK;
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
    char b[MAX_FILE_HEADERS];
    Py_ssize_t n = build_file_headers(b, name, name_len, mode, uid, gid, size, mtime_ns,
                                      atime_ns, uname, uname_len, gname, gname_len);
    if (n < 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(b, n);
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

/* The numbers of a POSIX ustar block (ustar magic, plain octal fields, the unsigned
 * checksum right) into ``num`` (indexes F_*): 0, or -1 for anything Python must decide. */
enum { F_CHKSUM, F_MODE, F_UID, F_GID, F_SIZE, F_MTIME, F_DEVMAJOR, F_DEVMINOR, PLAIN_FIELDS };
static int plain_header(const unsigned char *b, long long *num)
{
    static const int off[PLAIN_FIELDS] = {148, 100, 108, 116, 124, 136, 329, 337};
    static const int width[PLAIN_FIELDS] = {8, 8, 8, 8, 12, 12, 8, 8};
    if (memcmp(b + 257, "ustar\0" "00", 8) != 0)
        return -1;
    for (int i = 0; i < PLAIN_FIELDS; i++)
        if (plain_octal(b + off[i], width[i], &num[i]) < 0)
            return -1;
    unsigned long sum = 8 * ' ';
    for (int i = 0; i < BLOCK; i++)
        if (i < 148 || i >= 156)
            sum += b[i];
    return (unsigned long long)num[F_CHKSUM] == sum ? 0 : -1;
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
    long long num[PLAIN_FIELDS];
    if (view.len != BLOCK || plain_header(b, num) < 0)
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
    result = Py_BuildValue("(NLLLLLy#NNNLL)", name, num[F_MODE], num[F_UID], num[F_GID],
                           num[F_SIZE], num[F_MTIME], &typeflag, (Py_ssize_t)1,
                           cstr(b + 157, 100), cstr(b + 265, 32), cstr(b + 297, 32),
                           num[F_DEVMAJOR], num[F_DEVMINOR]);
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
    PyObject *owner; /* a caller's bytearray that is the buffer (kept, reused), or NULL */
} Out;

static int out_reserve(Out *o, Py_ssize_t more)
{
    if (o->len + more <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap * 2 > o->len + more ? o->cap * 2 : o->len + more + 4096;
    if (o->owner != NULL) { /* BufferError while the caller still holds a view of it */
        if (PyByteArray_Resize(o->owner, cap) < 0)
            return -1;
        o->buf = PyByteArray_AS_STRING(o->owner);
        o->cap = cap;
        return 0;
    }
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

/* One packed row (packed_index.py's layout) seen in place: its fixed part, sha256 (when it has
 * one), path and link name. */
typedef struct {
    const unsigned char *r, *sha, *path, *link;
    unsigned kind, flags;
    Py_ssize_t plen, llen, size;
} PackedRow;

/* The row at ``d + pos``: 1 when it is complete before ``end``, 0 when it runs past it, -1
 * (ValueError set) for a kind packed_index.py never writes. */
static int packed_row(const unsigned char *d, Py_ssize_t pos, Py_ssize_t end, PackedRow *row)
{
    if (pos + ROW_SIZE > end)
        return 0;
    const unsigned char *r = d + pos;
    row->r = r;
    row->kind = r[0];
    row->flags = r[1];
    row->plen = le32(r + 58);
    row->llen = le32(r + 62);
    Py_ssize_t sha = row->flags & HAS_SHA ? 32 : 0;
    row->size = ROW_SIZE + sha + row->plen + row->llen;
    if (pos + row->size > end)
        return 0;
    if (row->kind >= sizeof KIND_NAMES / sizeof KIND_NAMES[0]) {
        PyErr_SetString(PyExc_ValueError, "packed index row of an unknown kind");
        return -1;
    }
    row->sha = sha ? r + ROW_SIZE : NULL;
    row->path = r + ROW_SIZE + sha;
    row->link = row->path + row->plen;
    return 1;
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
    PackedRow row;
    int got;
    while ((got = packed_row(d, pos, end, &row)) > 0) {
        const unsigned char *r = row.r, *p = row.path;
        unsigned kind = row.kind, flags = row.flags;
        Py_ssize_t plen = row.plen, llen = row.llen;
        if (out_reserve(&o, 400) < 0)
            goto fail;
        memcpy(o.buf + o.len, "{\"path\":", 8);
        o.len += 8;
        if (json_string(&o, p, plen) < 0 || out_reserve(&o, 400) < 0)
            goto fail;
        /* ,"kind":"..." then the seven numbers, as "%lld" writes them (no printf: it was
         * the trailer's largest cost at small files) */
        static const char *const keys[7] = {
            "\",\"size\":", ",\"mtime_ns\":", ",\"mode\":", ",\"uid\":", ",\"gid\":",
            ",\"header_offset\":", ",\"data_offset\":"};
        char *w = o.buf + o.len;
        memcpy(w, ",\"kind\":\"", 9);
        w += 9;
        size_t kind_len = strlen(KIND_NAMES[kind]);
        memcpy(w, KIND_NAMES[kind], kind_len);
        w += kind_len;
        for (int i = 0; i < 7; i++) {
            size_t key_len = strlen(keys[i]);
            memcpy(w, keys[i], key_len);
            w += key_len;
            w += put_lld(w, (long long)le64(r + 2 + 8 * i));
        }
        o.len = w - o.buf;
        if (row.sha) {
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
        pos += row.size;
    }
    if (got < 0)
        goto fail;
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

/* index_rows(data, backup) -> (rows, paths, used): the complete packed rows at the start of
 * ``data`` as the catalog's ebm_files parameters (ebm/catalog.py's _insert_files: backup,
 * path, kind, size, mtime_ns, mode, uid, gid, sha256 bytes or None, header and data offsets,
 * deleted 0/1, linkname or None), the paths alone as 1-tuples (for ebm_paths), and how many
 * bytes they took. A path or link name is a str when it is UTF-8, else its bytes (the
 * catalog's _to_db), so the insert needs no Python per row. */
static PyObject *db_name(const unsigned char *s, Py_ssize_t n)
{
    PyObject *str = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    if (str != NULL || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        return str;
    PyErr_Clear();
    return PyBytes_FromStringAndSize((const char *)s, n);
}

static PyObject *index_rows(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    PyObject *backup, *kinds[sizeof KIND_NAMES / sizeof KIND_NAMES[0]] = {NULL};
    if (!PyArg_ParseTuple(args, "y*O", &view, &backup))
        return NULL;
    PyObject *rows = PyList_New(0), *paths = PyList_New(0), *result = NULL;
    if (rows == NULL || paths == NULL)
        goto done;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        if ((kinds[k] = PyUnicode_InternFromString(KIND_NAMES[k])) == NULL)
            goto done;
    const unsigned char *d = view.buf;
    Py_ssize_t end = view.len, pos = 0;
    PackedRow row;
    int got;
    while ((got = packed_row(d, pos, end, &row)) > 0) {
        const unsigned char *r = row.r;
        PyObject *path = db_name(row.path, row.plen);
        if (path == NULL)
            goto done;
        PyObject *link = row.llen ? db_name(row.link, row.llen) : Py_NewRef(Py_None);
        PyObject *digest = row.sha ? PyBytes_FromStringAndSize((const char *)row.sha, 32)
                                   : Py_NewRef(Py_None);
        PyObject *params = NULL, *one = NULL;
        if (link != NULL && digest != NULL)
            params = Py_BuildValue("(OOOLLLLLOLLiO)", backup, path, kinds[row.kind], le64(r + 2),
                                   le64(r + 10), le64(r + 18), le64(r + 26), le64(r + 34),
                                   digest, le64(r + 42), le64(r + 50),
                                   (row.flags & DELETED) ? 1 : 0, link);
        if (params != NULL)
            one = PyTuple_Pack(1, path);
        Py_DECREF(path);
        Py_XDECREF(link);
        Py_XDECREF(digest);
        int bad = one == NULL || PyList_Append(rows, params) < 0
                  || PyList_Append(paths, one) < 0;
        Py_XDECREF(params);
        Py_XDECREF(one);
        if (bad)
            goto done;
        pos += row.size;
    }
    if (got == 0)
        result = Py_BuildValue("(OOn)", rows, paths, pos);
done:
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        Py_XDECREF(kinds[k]);
    Py_XDECREF(rows);
    Py_XDECREF(paths);
    PyBuffer_Release(&view);
    return result;
}

/* ---- the catalog's insert of a chunk of packed rows, SQLite's C API, the GIL released ---- */
#ifdef EBM_HAVE_SQLITE
#include <sqlite3.h>
#include <stdint.h>

/* Whether n bytes are UTF-8 as Python's strict decoder takes it (no overlong forms, no
 * surrogates, nothing past U+10FFFF): then index_rows gives a str, else bytes. */
static int utf8_ok(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        unsigned cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (int k = 1; k < len; k++) {
            unsigned cc = s[i + k];
            if ((cc & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* A path or link name bound as the sqlite3 module binds index_rows' str (TEXT) or bytes (BLOB). */
static int bind_name(sqlite3_stmt *st, int i, const unsigned char *s, Py_ssize_t n)
{
    return utf8_ok(s, n) ? sqlite3_bind_text(st, i, (const char *)s, (int)n, SQLITE_STATIC)
                         : sqlite3_bind_blob(st, i, s, (int)n, SQLITE_STATIC);
}

static int step_reset(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    int rc2 = sqlite3_reset(st);
    return rc == SQLITE_DONE ? rc2 : rc;
}

/* The rows (checked whole by the caller) into ebm_paths and ebm_files in one transaction on a
 * connection of their own, as Catalog._insert_files does with index_rows' parameters. No
 * Python object is touched: runs without the GIL. SQLITE_OK, else the error text in err. */
static int insert_rows(const char *path, long long backup, const unsigned char *d,
                       Py_ssize_t len, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *ps = NULL, *ls = NULL, *fs = NULL;
    int began = 0;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, 30000);
    if (rc == SQLITE_OK) /* the backup's final commit syncs the WAL: these go with it */
        rc = sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL)) == SQLITE_OK)
        began = 1;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO ebm_paths(path) VALUES (?)", -1,
                                &ps, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT id FROM ebm_paths WHERE path=?", -1, &ls, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(
            db, "INSERT OR REPLACE INTO ebm_files(backup, path, kind, size, mtime_ns, mode, uid, "
            "gid, sha256, header_offset, data_offset, deleted, linkname) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", -1, &fs, NULL);
    Py_ssize_t pos = 0;
    PackedRow row;
    while (rc == SQLITE_OK && packed_row(d, pos, len, &row) > 0) {
        const unsigned char *r = row.r;
        if ((rc = bind_name(ps, 1, row.path, row.plen)) != SQLITE_OK
            || (rc = step_reset(ps)) != SQLITE_OK)
            break;
        /* the path's id: the row just inserted, else (a path of an earlier backup) looked up */
        sqlite3_int64 path_id = sqlite3_last_insert_rowid(db);
        if (sqlite3_changes(db) != 1) {
            if ((rc = bind_name(ls, 1, row.path, row.plen)) != SQLITE_OK)
                break;
            rc = sqlite3_step(ls);
            path_id = sqlite3_column_int64(ls, 0);
            int rc2 = sqlite3_reset(ls);
            if (rc != SQLITE_ROW) {
                rc = rc2 != SQLITE_OK ? rc2 : SQLITE_CORRUPT; /* a path that must be there */
                break;
            }
            rc = SQLITE_OK;
        }
        const char *kind = KIND_NAMES[row.kind];
        rc = sqlite3_bind_int64(fs, 1, backup);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int64(fs, 2, path_id);
        if (rc == SQLITE_OK) rc = sqlite3_bind_text(fs, 3, kind, -1, SQLITE_STATIC);
        for (int k = 0; k < 5 && rc == SQLITE_OK; k++) /* size, mtime_ns, mode, uid, gid */
            rc = sqlite3_bind_int64(fs, 4 + k, le64(r + 2 + 8 * k));
        if (rc == SQLITE_OK)
            rc = row.sha ? sqlite3_bind_blob(fs, 9, row.sha, 32, SQLITE_STATIC)
                         : sqlite3_bind_null(fs, 9);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int64(fs, 10, le64(r + 42));
        if (rc == SQLITE_OK) rc = sqlite3_bind_int64(fs, 11, le64(r + 50));
        if (rc == SQLITE_OK) rc = sqlite3_bind_int(fs, 12, (row.flags & DELETED) ? 1 : 0);
        if (rc == SQLITE_OK)
            rc = row.llen ? bind_name(fs, 13, row.link, row.llen) : sqlite3_bind_null(fs, 13);
        if (rc == SQLITE_OK)
            rc = step_reset(fs);
        pos += row.size;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : "out of memory");
        if (began)
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    sqlite3_finalize(ps);
    sqlite3_finalize(ls);
    sqlite3_finalize(fs);
    sqlite3_close(db);
    return rc;
}

/* stage_rows(path, backup, rows) -> count: whole packed rows (a PackedIndex sink's chunk)
 * inserted into the catalog at ``path`` for backup id ``backup``, in one transaction of their
 * own, the GIL released throughout (ebm.catalog.IndexStager's thread: Python's executemany
 * took the GIL back for every row and fought the writing pass for it). RuntimeError with
 * SQLite's message when the insert fails (nothing of it stays). */
static PyObject *stage_rows(PyObject *self, PyObject *args)
{
    (void)self;
    const char *path;
    long long backup;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "sLy*", &path, &backup, &view))
        return NULL;
    const unsigned char *d = view.buf;
    Py_ssize_t pos = 0, count = 0;
    PackedRow row;
    int got;
    while ((got = packed_row(d, pos, view.len, &row)) > 0) {
        pos += row.size;
        count++;
    }
    if (got < 0 || pos != view.len) {
        if (got == 0)
            PyErr_SetString(PyExc_ValueError, "a chunk of the index ends inside a row");
        PyBuffer_Release(&view);
        return NULL;
    }
    char err[512] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = insert_rows(path, backup, d, view.len, err, sizeof err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc != SQLITE_OK)
        return PyErr_Format(PyExc_RuntimeError, "catalog insert: %s", err);
    return PyLong_FromSsize_t(count);
}

/* sqlite_symbol() -> int: where this module's sqlite3_libversion lies, so the caller can check
 * it is the one the sqlite3 module uses (one copy of SQLite in the process, or its POSIX
 * locks would not see each other's). */
static PyObject *sqlite_symbol(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromVoidPtr((void *)(uintptr_t)&sqlite3_libversion);
}
#endif

/* ---- the filesystem translator's small files: a run of spooled entries in one call ---- */
#ifdef EBM_HAVE_LIBCRYPTO
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* translators/filesystem_state.py: SCAN_ROW "<BIQQQIIqqqqQqII", STATE_ROW "<QqqqII" */
#define SCAN_SIZE 93
#define STATE_SIZE 40
#define SCAN_CHANGED 1
#define SCAN_KEPT 4
enum { RUN_END = 0, RUN_PYTHON = 1, RUN_FULL = 2 }; /* why pack_files stopped */

static void put64(unsigned char *p, unsigned long long v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

static void put32(unsigned char *p, unsigned int v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

typedef struct {
    Out stream, feed, index, state;
    long long files, data_bytes, state_rows;
    /* the directory of the last file read (its path under the root, and a descriptor of it,
     * -1 when none): the files of a directory are opened from it by their base names, one
     * path component a file instead of all of them (the spool is in walk order) */
    int dir_fd;
    unsigned int dir_len;
    char dir[101];
} Run;

/* A state row (STATE_ROW, then the path) of the five key fields. */
static int state_row(Run *r, unsigned long long ino, long long size, long long mtime,
                     long long ctime, unsigned int mode, const unsigned char *path,
                     unsigned int plen)
{
    if (out_reserve(&r->state, STATE_SIZE + plen) < 0)
        return -1;
    unsigned char *w = (unsigned char *)r->state.buf + r->state.len;
    put64(w, ino);
    put64(w + 8, (unsigned long long)size);
    put64(w + 16, (unsigned long long)mtime);
    put64(w + 24, (unsigned long long)ctime);
    put32(w + 32, mode);
    put32(w + 36, plen);
    memcpy(w + STATE_SIZE, path, plen);
    r->state.len += STATE_SIZE + plen;
    r->state_rows++;
    return 0;
}

static long long ns_of(struct timespec t)
{
    return (long long)t.tv_sec * NS + t.tv_nsec;
}

static int stable(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && ns_of(a->st_mtim) == ns_of(b->st_mtim)
           && ns_of(a->st_ctim) == ns_of(b->st_ctim);
}

static ssize_t pread_full(int fd, char *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, buf + got, want - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -1 : (ssize_t)got;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Open a spooled file as FilesystemTranslator._open_file does (no following a symlink
 * swapped in, O_NOATIME when allowed), fstat it, and read it whole into ``data`` between two
 * fstats; a recently changed file (ctime under racy_ns old) is read twice and must read the
 * same. Returns 1 with *st filled when the copy is clean, 0 for anything Python must decide
 * (gone, no longer a plain file, extended attributes, holes, too big, changing, an error).
 * ``scan`` is the file's spool row: when O_NOATIME holds (nothing of ours moves the atime),
 * its lstat stands for the first fstat, and the fstat after the read must match it (same
 * inode, mode, size, mtime and ctime: unchanged since the scan, so unchanged during the read)
 * or Python redoes the file as before: one syscall of six a file less, the same bytes.
 * Runs without the GIL: it touches no Python object; ``data`` has room for ``room`` bytes. */
static int read_clean(int dir_fd, const char *path, const unsigned char *scan, char *data,
                      long long room, long long racy_ns, struct stat *st)
{
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
    int noatime = 1;
    int fd = openat(dir_fd, path, flags | O_NOATIME);
    if (fd < 0 && errno == EPERM) {
        noatime = 0;
        fd = openat(dir_fd, path, flags);
    }
    if (fd < 0)
        return 0;
    int ok = 0;
    struct stat st1;
    long long size;
    if (noatime) {
        size = le64(scan + 37);
        if (size > room || (size && le64(scan + 77) * 512 < size))
            goto done; /* maybe sparse: _sparse_map decides */
    } else {
        if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode) || st->st_nlink != 1 || st->st_size > room)
            goto done;
        if ((unsigned long long)st->st_ino != (unsigned long long)le64(scan + 5)
            || (unsigned long long)st->st_dev != (unsigned long long)le64(scan + 13))
            goto done; /* not the file scanned (replaced, or reached through a moved directory) */
        if (st->st_size && (long long)st->st_blocks * 512 < st->st_size)
            goto done; /* maybe sparse: _sparse_map decides */
        size = st->st_size;
    }
    ssize_t x = flistxattr(fd, NULL, 0);
    if (x > 0)
        goto done; /* read_xattrs and the Python header carry them */
    size_t want = (size_t)size;
    if (pread_full(fd, data, want) != (ssize_t)want || fstat(fd, &st1) < 0)
        goto done;
    if (noatime) {
        /* the scan's lstat was the "before": the inode must be the one scanned, a plain file
         * of one link, unchanged (its headers come from this fstat, equal to the scan's but
         * for the atime, which is the file's at the read, as the first fstat's would be) */
        if ((unsigned long long)st1.st_ino != (unsigned long long)le64(scan + 5)
            || (unsigned long long)st1.st_dev != (unsigned long long)le64(scan + 13)
            || st1.st_mode != le32(scan + 1) || !S_ISREG(st1.st_mode) || st1.st_nlink != 1
            || st1.st_size != size || ns_of(st1.st_mtim) != le64(scan + 53)
            || ns_of(st1.st_ctim) != le64(scan + 61)
            || (size && (long long)st1.st_blocks * 512 < size))
            goto done;
        *st = st1;
    } else if (!stable(st, &st1)) {
        goto done;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (ns_of(now) - ns_of(st->st_ctim) < racy_ns) {
        char *again = want ? malloc(want) : NULL;
        if (want && again == NULL)
            goto done;
        ok = pread_full(fd, again, want) == (ssize_t)want && memcmp(again, data, want) == 0
             && fstat(fd, &st1) == 0 && stable(st, &st1);
        free(again);
        goto done;
    }
    ok = 1;
done:
    close(fd);
    return ok;
}

/* The name for an id from the caller's cache ({id: bytes}); NULL (no error) when absent. */
static PyObject *cached_name(PyObject *names, unsigned int id)
{
    PyObject *key = PyLong_FromUnsignedLong(id);
    if (key == NULL)
        return NULL;
    PyObject *v = PyDict_GetItemWithError(names, key);
    Py_DECREF(key);
    return v != NULL && PyBytes_Check(v) ? v : NULL;
}

/* One changed regular file of the spool into the run's outputs: 1 done, 0 Python's, -1 error. */
static int pack_file(Run *r, const unsigned char *row, const unsigned char *path,
                     unsigned int plen, int root_fd, long long offset, PyObject *unames,
                     PyObject *gnames, long long limit, long long racy_ns)
{
    long long scan_size = (long long)le64(row + 37);
    if (plen == 0 || plen > 100 || le64(row + 21) != 1 || scan_size > limit || scan_size < 0)
        return 0;
    char cpath[101];
    memcpy(cpath, path, plen);
    cpath[plen] = '\0';
    if (memchr(cpath, 0, plen) || !plain_ascii(cpath, plen))
        return 0;
    /* room for the headers, the data as scanned (plus growth up to the limit is refused by
     * read_clean's room check) and the padding */
    long long room = scan_size + 65536 < limit ? scan_size + 65536 : limit;
    if (out_reserve(&r->stream, MAX_FILE_HEADERS + room + BLOCK) < 0)
        return -1;
    char *data = r->stream.buf + r->stream.len + MAX_FILE_HEADERS;
    struct stat st;
    int ok;
    const char *slash = memrchr(cpath, '/', plen);
    unsigned int dlen = slash ? (unsigned int)(slash - cpath) : 0;
    Py_BEGIN_ALLOW_THREADS
    if (dlen && (r->dir_fd < 0 || dlen != r->dir_len || memcmp(r->dir, cpath, dlen) != 0)) {
        /* a new directory: opened from the root as the whole path would be walked (a file
         * found through another directory than the scanned one fails the inode check) */
        if (r->dir_fd >= 0)
            close(r->dir_fd);
        cpath[dlen] = '\0';
        r->dir_fd = openat(root_fd, cpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        cpath[dlen] = '/';
        r->dir_len = dlen;
        memcpy(r->dir, cpath, dlen);
    }
    if (dlen == 0)
        ok = read_clean(root_fd, cpath, row, data, room, racy_ns, &st);
    else
        ok = r->dir_fd >= 0 && read_clean(r->dir_fd, cpath + dlen + 1, row, data, room, racy_ns, &st);
    Py_END_ALLOW_THREADS
    if (!ok)
        return 0;
    PyObject *uname = cached_name(unames, st.st_uid), *gname = cached_name(gnames, st.st_gid);
    if (PyErr_Occurred())
        return -1;
    if (uname == NULL || gname == NULL)
        return 0;
    long long size = st.st_size, mtime = ns_of(st.st_mtim), atime = ns_of(st.st_atim);
    long long mode = st.st_mode & 07777;
    char *w = r->stream.buf + r->stream.len; /* the headers go here, the data lies after them */
    Py_ssize_t hlen = build_file_headers(
        w, cpath, plen, mode, st.st_uid, st.st_gid, size, mtime, atime < 0 ? -1 : atime,
        PyBytes_AS_STRING(uname), PyBytes_GET_SIZE(uname), PyBytes_AS_STRING(gname),
        PyBytes_GET_SIZE(gname));
    if (hlen < 0 || atime < 0)
        return 0;
    /* headers, data, padding in place: the data moves down next to its headers */
    memmove(w + hlen, data, (size_t)size);
    Py_ssize_t pad = (BLOCK - size % BLOCK) % BLOCK;
    memset(w + hlen + size, 0, (size_t)pad);
    unsigned char md[32];
    SHA256((const unsigned char *)w + hlen, (size_t)size, md);
    long long header_offset = offset + r->stream.len;
    r->stream.len += hlen + size + pad;
    /* the stream digest's view: headers, the data's sha256, padding */
    if (out_reserve(&r->feed, hlen + 32 + pad) < 0)
        return -1;
    memcpy(r->feed.buf + r->feed.len, w, (size_t)hlen);
    memcpy(r->feed.buf + r->feed.len + hlen, md, 32);
    memset(r->feed.buf + r->feed.len + hlen + 32, 0, (size_t)pad);
    r->feed.len += hlen + 32 + pad;
    /* the file index row (packed_index.py's _ROW, sha256, path) */
    if (out_reserve(&r->index, ROW_SIZE + 32 + plen) < 0)
        return -1;
    unsigned char *x = (unsigned char *)r->index.buf + r->index.len;
    x[0] = 0; /* "file" */
    x[1] = HAS_SHA;
    long long fields[7] = {size, mtime, mode, st.st_uid, st.st_gid, header_offset,
                           header_offset + hlen};
    for (int i = 0; i < 7; i++)
        put64(x + 2 + 8 * i, (unsigned long long)fields[i]);
    put32(x + 58, plen);
    put32(x + 62, 0);
    memcpy(x + ROW_SIZE, md, 32);
    memcpy(x + ROW_SIZE + 32, path, plen);
    r->index.len += ROW_SIZE + 32 + plen;
    r->files++;
    r->data_bytes += size;
    return state_row(r, st.st_ino, size, mtime, ns_of(st.st_ctim), st.st_mode, path, plen) < 0
               ? -1 : 1;
}

/* pack_files(spool, pos, root_fd, offset, unames, gnames, limit, racy_ns, links, max_out,
 *            stream, feed) -> (pos, stop, stream_len, feed_len, index, state, files,
 *                              data_bytes, state_rows)
 * The spooled entries from ``pos`` (SCAN_ROW rows, each then its path) that need no decision
 * of Python's, as _write_entries would do them one by one: an entry that is not written
 * carries its key into the state; a changed plain regular file (one link, no xattrs, no
 * holes, up to ``limit`` bytes, an ASCII name of up to 100 bytes, its owner's names in the
 * caches) is read cleanly and becomes its members' bytes at stream ``offset`` on, its
 * digest-feed bytes, its index row and its state row. Stops at the end of the complete rows
 * (stop 0), at a row Python must do (stop 1, ``pos`` at that row) or once ``max_out`` stream
 * bytes are built (stop 2). ``links``: whether some hard-linked inode changed (then an
 * unchanged name of a hard link is Python's). The members' bytes and the digest feed go into
 * the caller's bytearrays ``stream`` and ``feed`` from their start (grown when too small, and
 * kept by the caller for the next call: a fresh 4 MiB buffer and a bytes copy of it per call
 * cost page faults and memmoves, ~7% of the writing thread at 200,000 small files); their
 * lengths say how much of them this call filled. */
static PyObject *pack_files(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t pos, max_out;
    int root_fd, links;
    long long offset, limit, racy_ns;
    PyObject *unames, *gnames, *stream, *feed;
    if (!PyArg_ParseTuple(args, "y*niLO!O!LLpnO!O!", &view, &pos, &root_fd, &offset,
                          &PyDict_Type, &unames, &PyDict_Type, &gnames, &limit, &racy_ns, &links,
                          &max_out, &PyByteArray_Type, &stream, &PyByteArray_Type, &feed))
        return NULL;
    Run r;
    memset(&r, 0, sizeof r);
    r.dir_fd = -1;
    r.stream.owner = stream;
    r.stream.buf = PyByteArray_AS_STRING(stream);
    r.stream.cap = PyByteArray_GET_SIZE(stream);
    r.feed.owner = feed;
    r.feed.buf = PyByteArray_AS_STRING(feed);
    r.feed.cap = PyByteArray_GET_SIZE(feed);
    /* room for a run of small files up front: growing the buffers by doubling copied them
     * over and over (~1.7% of a small-file backup's CPU) */
    Py_ssize_t room = (max_out < (64 << 20) ? max_out : (64 << 20)) + MAX_FILE_HEADERS + 2 * BLOCK;
    if (out_reserve(&r.stream, room + 65536) < 0 || out_reserve(&r.feed, room) < 0)
        goto fail;
    const unsigned char *d = view.buf;
    int stop = RUN_END;
    while (pos + SCAN_SIZE <= view.len) {
        const unsigned char *row = d + pos;
        unsigned int plen = le32(row + 89);
        if (pos + SCAN_SIZE + (Py_ssize_t)plen > view.len)
            break;
        if (r.stream.len >= max_out) {
            stop = RUN_FULL;
            break;
        }
        unsigned flags = row[0];
        unsigned int mode = le32(row + 1);
        const unsigned char *path = row + SCAN_SIZE;
        int done;
        if (!(flags & SCAN_CHANGED)) {
            if (!(flags & SCAN_KEPT) && links && le64(row + 21) >= 2 && !S_ISDIR(mode))
                done = 0; /* _to_write asks link_changed */
            else
                done = state_row(&r, (unsigned long long)le64(row + 5), le64(row + 37),
                                 le64(row + 53), le64(row + 61), mode, path, plen) < 0 ? -1 : 1;
        } else if (S_ISREG(mode)) {
            done = pack_file(&r, row, path, plen, root_fd, offset, unames, gnames, limit,
                             racy_ns);
        } else {
            done = 0;
        }
        if (done < 0)
            goto fail;
        if (done == 0) {
            stop = RUN_PYTHON;
            break;
        }
        pos += SCAN_SIZE + plen;
    }
    PyBuffer_Release(&view);
    if (r.dir_fd >= 0)
        close(r.dir_fd);
    PyObject *res = Py_BuildValue("(ninny#y#LLL)", pos, stop, r.stream.len, r.feed.len,
                                  r.index.buf ? r.index.buf : "", r.index.len,
                                  r.state.buf ? r.state.buf : "", r.state.len, r.files,
                                  r.data_bytes, r.state_rows);
    PyMem_Free(r.index.buf);
    PyMem_Free(r.state.buf);
    return res;
fail:
    PyBuffer_Release(&view);
    if (r.dir_fd >= 0)
        close(r.dir_fd);
    PyMem_Free(r.index.buf);
    PyMem_Free(r.state.buf);
    return NULL;
}
/* ---- the filesystem translator's walk of a baseline: one directory in one call ---- */
#include <dirent.h>

typedef struct {
    char *name;
    size_t len;
} Name;

static int by_name(const void *a, const void *b)
{
    const Name *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static void free_names(Name *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i].name);
    free(names);
}

/* The names in a directory (not "." and ".."), or -1 when one is not ASCII (Python sorts
 * str names; for ASCII that is the byte order used here) or the listing fails. */
static Py_ssize_t list_names(int dfd, Name **out)
{
    DIR *dir = fdopendir(dfd);
    if (dir == NULL) {
        close(dfd);
        return -1;
    }
    size_t n = 0, cap = 64;
    Name *names = malloc(cap * sizeof *names);
    struct dirent *de;
    int bad = names == NULL;
    errno = 0;
    while (!bad && (de = readdir(dir)) != NULL) {
        const char *s = de->d_name;
        if (s[0] == '.' && (s[1] == '\0' || (s[1] == '.' && s[2] == '\0')))
            continue;
        size_t len = strlen(s);
        if (!plain_ascii(s, (Py_ssize_t)len)) {
            bad = 1;
            break;
        }
        if (n == cap) {
            Name *more = realloc(names, 2 * cap * sizeof *names);
            if (more == NULL) {
                bad = 1;
                break;
            }
            names = more;
            cap *= 2;
        }
        names[n].name = malloc(len + 1);
        if (names[n].name == NULL) {
            bad = 1;
            break;
        }
        memcpy(names[n].name, s, len + 1);
        names[n++].len = len;
    }
    if (!bad && errno != 0)
        bad = 1;
    closedir(dir);
    if (bad) {
        if (names)
            free_names(names, n);
        return -1;
    }
    qsort(names, n, sizeof *names, by_name);
    *out = names;
    return (Py_ssize_t)n;
}

/* scan_dir(path, prefix) -> (rows, dirs, count, files_bytes) | None
 * The walk's entries of one directory of a baseline as ScanSpool rows (SCAN_ROW, flags
 * CHANGED, then prefix + name), sorted by name, each lstat'ed; ``dirs``: for each
 * subdirectory, (end of its row in ``rows``, name, st_dev), where its own entries go in
 * pre-order; ``files_bytes``: the sizes of the regular files. None when Python must walk
 * (a name that is not ASCII, a listing or an lstat that fails). */
static PyObject *scan_dir(PyObject *self, PyObject *args)
{
    (void)self;
    const char *path, *prefix;
    Py_ssize_t prefix_len;
    if (!PyArg_ParseTuple(args, "yy#", &path, &prefix, &prefix_len))
        return NULL;
    Name *names = NULL;
    Py_ssize_t n;
    Out rows = {NULL, 0, 0};
    struct stat *st = NULL;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    n = dfd < 0 ? -1 : list_names(dup(dfd), &names);
    if (n >= 0 && (st = malloc(((size_t)n + 1) * sizeof *st)) != NULL) {
        for (Py_ssize_t i = 0; i < n && ok; i++)
            ok = fstatat(dfd, names[i].name, &st[i], AT_SYMLINK_NOFOLLOW) == 0;
    } else {
        ok = 0;
    }
    if (dfd >= 0)
        close(dfd);
    Py_END_ALLOW_THREADS
    PyObject *dirs = NULL, *result = NULL;
    long long file_bytes = 0;
    if (!ok)
        goto decline;
    dirs = PyList_New(0);
    if (dirs == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t plen = prefix_len + (Py_ssize_t)names[i].len;
        if (out_reserve(&rows, SCAN_SIZE + plen) < 0)
            goto done;
        unsigned char *w = (unsigned char *)rows.buf + rows.len;
        const struct stat *s = &st[i];
        w[0] = SCAN_CHANGED;
        put32(w + 1, s->st_mode);
        put64(w + 5, s->st_ino);
        put64(w + 13, s->st_dev);
        put64(w + 21, s->st_nlink);
        put32(w + 29, s->st_uid);
        put32(w + 33, s->st_gid);
        put64(w + 37, (unsigned long long)s->st_size);
        put64(w + 45, (unsigned long long)ns_of(s->st_atim));
        put64(w + 53, (unsigned long long)ns_of(s->st_mtim));
        put64(w + 61, (unsigned long long)ns_of(s->st_ctim));
        put64(w + 69, s->st_rdev);
        put64(w + 77, (unsigned long long)s->st_blocks);
        put32(w + 85, 0);
        put32(w + 89, (unsigned int)plen);
        memcpy(w + SCAN_SIZE, prefix, (size_t)prefix_len);
        memcpy(w + SCAN_SIZE + prefix_len, names[i].name, names[i].len);
        rows.len += SCAN_SIZE + plen;
        if (S_ISREG(s->st_mode))
            file_bytes += s->st_size;
        if (S_ISDIR(s->st_mode)) {
            PyObject *item = Py_BuildValue("(ny#K)", rows.len, names[i].name,
                                           (Py_ssize_t)names[i].len,
                                           (unsigned long long)s->st_dev);
            if (item == NULL || PyList_Append(dirs, item) < 0) {
                Py_XDECREF(item);
                goto done;
            }
            Py_DECREF(item);
        }
    }
    result = Py_BuildValue("(y#OnL)", rows.buf ? rows.buf : "", rows.len, dirs, n, file_bytes);
    goto done;
decline:
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(dirs);
    if (names)
        free_names(names, (size_t)n);
    free(st);
    PyMem_Free(rows.buf);
    return result;
}
/* ---- restoring: a run of plain regular files of one directory in one call ---- */

typedef struct {
    char base[101]; /* the name inside the directory, NUL-terminated */
    const unsigned char *data;
    long long size, mode, uid, gid, mtime_ns, atime_ns;
    unsigned char sha[32];
} Plain;

/* A pax time as parse_pax_time reads it, plain case only: up to 10 digits of seconds, then
 * optionally '.' and 1 to 9 digits. 0 and *ns, or -1 (Python decides). */
static int plain_pax_time(const unsigned char *v, Py_ssize_t n, long long *ns)
{
    long long secs = 0, frac = 0;
    Py_ssize_t i = 0;
    for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
        if (i == 10)
            return -1;
        secs = secs * 10 + (v[i] - '0');
    }
    if (i == 0)
        return -1;
    if (i < n) {
        if (v[i++] != '.')
            return -1;
        int digits = 0;
        for (; i < n && v[i] >= '0' && v[i] <= '9'; i++, digits++) {
            if (digits == 9)
                return -1;
            frac = frac * 10 + (v[i] - '0');
        }
        if (digits == 0 || i < n)
            return -1;
        for (; digits < 9; digits++)
            frac *= 10;
    }
    *ns = secs * NS + frac;
    return 0;
}

/* The records of a plain file's pax 'x' header (parse_pax_records' format): only mtime,
 * atime and ctime (which a restore does not set). 0, or -1 for anything else. */
static int plain_records(const unsigned char *b, Py_ssize_t n, long long *mtime,
                         long long *atime)
{
    Py_ssize_t pos = 0;
    while (pos < n) {
        long long len = 0;
        Py_ssize_t i = pos;
        for (; i < n && i - pos < 6 && b[i] >= '0' && b[i] <= '9'; i++)
            len = len * 10 + (b[i] - '0');
        if (i == pos || i >= n || b[i] != ' ' || len <= i - pos + 1 || pos + len > n
            || b[pos + len - 1] != '\n')
            return -1;
        const unsigned char *kv = b + i + 1;
        Py_ssize_t kv_len = pos + len - 1 - (i + 1);
        const unsigned char *eq = memchr(kv, '=', (size_t)kv_len);
        if (eq == NULL || eq - kv != 5)
            return -1;
        long long t, *into = &t;
        if (memcmp(kv, "mtime", 5) == 0)
            into = mtime;
        else if (memcmp(kv, "atime", 5) == 0)
            into = atime;
        else if (memcmp(kv, "ctime", 5) != 0)
            return -1;
        if (plain_pax_time(eq + 1, kv_len - 6, into) < 0)
            return -1;
        pos += len;
    }
    return 0;
}

/* The member at ``b`` (``avail`` bytes buffered) if it is a plain regular file named
 * ``prefix`` + a name of one component: an optional pax 'x' header of times only, a ustar
 * block (no prefix field, ASCII name), its data and padding, all in the buffer. Fills ``p``
 * (but its sha) and returns the member's length, or 0 for anything Python must read. */
static Py_ssize_t plain_member(const unsigned char *b, Py_ssize_t avail, const char *prefix,
                               Py_ssize_t prefix_len, Plain *p)
{
    long long num[PLAIN_FIELDS], mtime = -1, atime = -1;
    Py_ssize_t at = 0;
    if (avail < BLOCK || plain_header(b, num) < 0)
        return 0;
    if (b[156] == 'x') {
        long long body = num[F_SIZE];
        if (body <= 0 || body > 4 * BLOCK)
            return 0;
        at = BLOCK + (Py_ssize_t)((body + BLOCK - 1) / BLOCK) * BLOCK;
        if (avail < at + BLOCK || plain_records(b + BLOCK, (Py_ssize_t)body, &mtime, &atime) < 0
            || plain_header(b + at, num) < 0)
            return 0;
    }
    const unsigned char *h = b + at;
    if ((h[156] != '0' && h[156] != '\0') || h[345] != '\0')
        return 0;
    Py_ssize_t name_len = (Py_ssize_t)strnlen((const char *)h, 100);
    const unsigned char *base = h + prefix_len;
    Py_ssize_t base_len = name_len - prefix_len;
    if (base_len <= 0 || memcmp(h, prefix, (size_t)prefix_len) != 0
        || !plain_ascii((const char *)h, name_len) || memchr(base, '/', (size_t)base_len)
        || (base[0] == '.' && (base_len == 1 || (base_len == 2 && base[1] == '.'))))
        return 0;
    long long size = num[F_SIZE];
    Py_ssize_t len = at + BLOCK + (Py_ssize_t)size + (Py_ssize_t)((BLOCK - size % BLOCK) % BLOCK);
    if (size > avail || len > avail || (mtime < 0 && num[F_MTIME] >= 9000000000LL))
        return 0;
    memcpy(p->base, base, (size_t)base_len);
    p->base[base_len] = '\0';
    p->data = h + BLOCK;
    p->size = size;
    p->mode = num[F_MODE] & 07777;
    p->uid = num[F_UID];
    p->gid = num[F_GID];
    p->mtime_ns = mtime >= 0 ? mtime : num[F_MTIME] * NS;
    p->atime_ns = atime >= 0 ? atime : p->mtime_ns;
    return len;
}

/* The catalog row (header_offset, path, sha256) that must describe the member at
 * ``offset`` named ``name``: its sha256 into ``sha``, 0; -1 when it does not (a missing
 * entry, another path, no digest: Python raises or decides), -2 with an exception set. */
static int row_matches(PyObject *row, long long offset, const unsigned char *name,
                       Py_ssize_t name_len, unsigned char *sha)
{
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 3)
        return -1;
    long long row_offset = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 0));
    if (row_offset == -1 && PyErr_Occurred())
        return -2;
    PyObject *path = PyTuple_GET_ITEM(row, 1), *digest = PyTuple_GET_ITEM(row, 2);
    if (row_offset != offset || !PyUnicode_Check(path) || !PyUnicode_IS_ASCII(path)
        || PyUnicode_GET_LENGTH(path) != name_len
        || memcmp(PyUnicode_DATA(path), name, (size_t)name_len) != 0
        || !PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) != 32)
        return -1;
    memcpy(sha, PyBytes_AS_STRING(digest), 32);
    return 0;
}

static int write_full(int fd, const unsigned char *data, long long size)
{
    while (size > 0) {
        ssize_t n = write(fd, data, (size_t)size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        size -= n;
    }
    return 0;
}

/* One planned file created in ``dirfd`` as _Restorer.restore_file does (exclusive create
 * with no following, data, owner when ``owner``, mode, times): 0, or -1 with nothing left
 * behind (Python then restores it and reports what went wrong). Runs without the GIL. */
static int create_plain(int dirfd, const Plain *p, int owner)
{
    unsigned char md[32];
    SHA256(p->data, (size_t)p->size, md);
    if (memcmp(md, p->sha, 32) != 0)
        return -1;
    int fd = openat(dirfd, p->base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    struct timespec times[2] = {{p->atime_ns / NS, p->atime_ns % NS},
                                {p->mtime_ns / NS, p->mtime_ns % NS}};
    int ok = write_full(fd, p->data, p->size) == 0
             && (!owner || fchown(fd, (uid_t)p->uid, (gid_t)p->gid) == 0)
             && fchmod(fd, (mode_t)p->mode) == 0 && futimens(fd, times) == 0;
    if (close(fd) == 0 && ok)
        return 0;
    unlinkat(dirfd, p->base, 0);
    return -1;
}

/* The run of members at ``b + pos`` (``len`` bytes buffered, stream ``offset`` at ``pos``)
 * that extract_files takes: plain_member, each matching the next row of ``rows`` from
 * ``row_at``, at most ``max`` of them. Fills ``plan`` and each member's length into
 * ``lens``; returns how many, or -1 with an exception set. Holds the GIL (reads rows). */
static Py_ssize_t plan_run(const unsigned char *b, Py_ssize_t len, Py_ssize_t pos,
                           long long offset, const char *prefix, Py_ssize_t prefix_len,
                           PyObject *rows, Py_ssize_t row_at, Py_ssize_t max, Plain *plan,
                           Py_ssize_t *lens)
{
    Py_ssize_t planned = 0, at = pos;
    while (planned < max && at < len && prefix_len < 100) {
        Plain *p = &plan[planned];
        Py_ssize_t n = plain_member(b + at, len - at, prefix, prefix_len, p);
        if (n == 0)
            break;
        const unsigned char *name = p->data - BLOCK;
        int m = row_matches(PyList_GET_ITEM(rows, row_at + planned), offset + (at - pos), name,
                            (Py_ssize_t)strnlen((const char *)name, 100), p->sha);
        if (m == -2)
            return -1;
        if (m < 0)
            break;
        lens[planned++] = n;
        at += n;
    }
    return planned;
}

/* extract_files(buf, pos, offset, dirfd, prefix, rows, row_at, owner)
 *   -> (used, files, data_bytes)
 * The members buffered in ``buf`` from ``pos`` (stream ``offset``) that are plain regular
 * files in one directory (plain_member: ``prefix`` is its path and '/', b"" for the root),
 * each checked against the next catalog row of ``rows`` from ``row_at`` (same offset, same
 * path, its sha256 over the data), created in ``dirfd`` with the GIL released. Stops at the
 * first member that is anything else, is cut by the buffer's end, has no matching row, or
 * fails (its file removed): Python restores that one, reporting the failure as it would.
 * ``used``: the bytes of the ``files`` members done; ``data_bytes``: their sizes. */
typedef struct {
    Py_buffer view;
    Py_ssize_t pos, prefix_len, row_at;
    long long offset;
    int dirfd, owner;
    const char *prefix;
    PyObject *rows;
} RunArgs;

/* extract_files' arguments (Extractor.submit's too): 0, or -1 with an exception set and
 * no buffer held. */
static int run_args(PyObject *args, RunArgs *a, const char *who)
{
    if (!PyArg_ParseTuple(args, "y*nLiy#O!np", &a->view, &a->pos, &a->offset, &a->dirfd,
                          &a->prefix, &a->prefix_len, &PyList_Type, &a->rows, &a->row_at,
                          &a->owner))
        return -1;
    if (a->pos < 0 || a->pos > a->view.len || a->row_at < 0
        || a->row_at > PyList_GET_SIZE(a->rows)) {
        PyBuffer_Release(&a->view);
        PyErr_Format(PyExc_ValueError, "%s: pos or row_at out of range", who);
        return -1;
    }
    return 0;
}

static PyObject *extract_files(PyObject *self, PyObject *args)
{
    (void)self;
    RunArgs a;
    if (run_args(args, &a, "extract_files") < 0)
        return NULL;
    Py_buffer view = a.view;
    Py_ssize_t pos = a.pos, prefix_len = a.prefix_len, row_at = a.row_at;
    long long offset = a.offset;
    int dirfd = a.dirfd, owner = a.owner;
    const char *prefix = a.prefix;
    PyObject *rows = a.rows;
    Py_ssize_t nrows = PyList_GET_SIZE(rows) - row_at;
    Plain *plan = nrows > 0 ? PyMem_Malloc(sizeof(Plain) * (size_t)nrows) : NULL;
    Py_ssize_t *lens = nrows > 0 ? PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)nrows) : NULL;
    PyObject *result = NULL;
    if (nrows > 0 && (plan == NULL || lens == NULL)) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t planned = plan_run(view.buf, view.len, pos, offset, prefix, prefix_len, rows,
                                  row_at, nrows, plan, lens);
    if (planned < 0)
        goto done;
    Py_ssize_t files = 0, used = 0;
    long long data_bytes = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; files < planned && create_plain(dirfd, &plan[files], owner) == 0; files++) {
        used += lens[files];
        data_bytes += plan[files].size;
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(nnL)", used, files, data_bytes);
done:
    PyMem_Free(plan);
    PyMem_Free(lens);
    PyBuffer_Release(&view);
    return result;
}

/* ---- Extractor: extract_files' runs created by threads of its own, behind the reader ----
 *
 * Why: a whole restore's one thread parsed the stream and created every file, so reading,
 * hashing and the kernel's file creation and page-cache writes took turns. An Extractor
 * plans a run as extract_files does (same checks, with the GIL) and returns at once; its
 * worker threads (no GIL, no Python objects) hash and create the files while the caller
 * reads on. Runs of one directory never run at once (two creators in one directory wait
 * on its lock), runs of different directories do. A job holds the caller's buffer (a
 * Py_buffer: its bytes never change, see ebm/restore.py) and a dup of the directory's
 * descriptor; at most EXTRACT_IN_FLIGHT jobs are queued or running (memory stays flat).
 * A file that fails (digest, create, write, metadata) is removed by the worker as
 * create_plain does, and its member's bytes come back from settle(), for Python to restore
 * the ordinary way, which reports what went wrong.
 *
 * Extractor(workers) ; .submit(buf, pos, offset, dirfd, prefix, rows, row_at, owner)
 *   -> (used, files, data_bytes), extract_files' arguments and answer, the files queued;
 * .settle(wait=True) -> [(member bytes, header offset, sha256)]: waits for every queued
 *   file (not with wait false: then of the jobs done only), and returns the members that
 *   failed since the last settle; .close(): wait, stop the threads.
 * Lock order: the GIL, then ``mu`` (never the GIL while holding ``mu``). */
#include <pthread.h>

#define EXTRACT_WORKERS_MAX 4
#define EXTRACT_IN_FLIGHT 8

typedef struct Job {
    struct Job *next;
    Py_buffer view;
    int dirfd, owner;
    char key[101]; /* the directory's prefix */
    Py_ssize_t n, pos;
    long long offset; /* the stream offset of view.buf + pos */
    Plain *plan;
    Py_ssize_t *lens;
    unsigned char *failed;
    Py_ssize_t nfailed;
} Job;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t work, done; /* work: queued or stopping; done: a job finished */
    Job *queue, *finished;     /* queue in submit order (a singly linked list) */
    const char *running[EXTRACT_WORKERS_MAX];
    pthread_t threads[EXTRACT_WORKERS_MAX];
    int workers, started, stopping, in_flight;
    PyObject *failures; /* list of (bytes, int, bytes) */
} Extractor;

typedef struct {
    Extractor *x;
    int slot;
} WorkerArg;

static void job_free_nogil(Job *j)
{
    PyMem_RawFree(j->plan);
    PyMem_RawFree(j->lens);
    PyMem_RawFree(j->failed);
}

/* The first queued job whose directory no other worker is in, unlinked; NULL if none. */
static Job *take_job(Extractor *x)
{
    for (Job **link = &x->queue; *link != NULL; link = &(*link)->next) {
        Job *j = *link;
        int busy = 0;
        for (int w = 0; w < x->workers; w++)
            busy |= x->running[w] != NULL && strcmp(x->running[w], j->key) == 0;
        if (!busy) {
            *link = j->next;
            j->next = NULL;
            return j;
        }
    }
    return NULL;
}

static void *extract_worker(void *arg)
{
    Extractor *x = ((WorkerArg *)arg)->x;
    int slot = ((WorkerArg *)arg)->slot;
    PyMem_RawFree(arg);
    pthread_mutex_lock(&x->mu);
    for (;;) {
        Job *j = take_job(x);
        if (j == NULL) {
            if (x->stopping)
                break;
            pthread_cond_wait(&x->work, &x->mu);
            continue;
        }
        x->running[slot] = j->key;
        pthread_mutex_unlock(&x->mu);
        for (Py_ssize_t i = 0; i < j->n; i++) {
            j->failed[i] = create_plain(j->dirfd, &j->plan[i], j->owner) != 0;
            j->nfailed += j->failed[i];
        }
        close(j->dirfd);
        pthread_mutex_lock(&x->mu);
        x->running[slot] = NULL;
        j->next = x->finished;
        x->finished = j;
        x->in_flight--;
        pthread_cond_broadcast(&x->done);
        pthread_cond_broadcast(&x->work); /* a job of this directory may go now */
    }
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

/* Free the finished jobs (with the GIL): their buffers released, failed members noted.
 * 0, or -1 with an exception set (the jobs are freed either way). */
static int collect(Extractor *x)
{
    pthread_mutex_lock(&x->mu);
    Job *j = x->finished;
    x->finished = NULL;
    pthread_mutex_unlock(&x->mu);
    int rc = 0;
    while (j != NULL) {
        Job *next = j->next;
        const unsigned char *b = j->view.buf;
        Py_ssize_t at = j->pos;
        for (Py_ssize_t i = 0; i < j->n && j->nfailed; at += j->lens[i], i++) {
            if (!j->failed[i] || rc < 0)
                continue;
            PyObject *item = Py_BuildValue("(y#Ly#)", (const char *)b + at, j->lens[i],
                                           j->offset + (at - j->pos),
                                           (const char *)j->plan[i].sha, (Py_ssize_t)32);
            if (item == NULL || PyList_Append(x->failures, item) < 0)
                rc = -1;
            Py_XDECREF(item);
        }
        PyBuffer_Release(&j->view);
        job_free_nogil(j);
        PyMem_RawFree(j);
        j = next;
    }
    return rc;
}

/* Wait (GIL released) until at most ``limit`` jobs are queued or running. */
static void wait_in_flight(Extractor *x, int limit)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&x->mu);
    while (x->in_flight > limit)
        pthread_cond_wait(&x->done, &x->mu);
    pthread_mutex_unlock(&x->mu);
    Py_END_ALLOW_THREADS
}

static int start_workers(Extractor *x)
{
    for (; x->started < x->workers; x->started++) {
        WorkerArg *arg = PyMem_RawMalloc(sizeof(WorkerArg));
        if (arg == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        arg->x = x;
        arg->slot = x->started;
        int e = pthread_create(&x->threads[x->started], NULL, extract_worker, arg);
        if (e != 0) {
            PyMem_RawFree(arg);
            errno = e;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

static PyObject *extractor_submit(Extractor *x, PyObject *args)
{
    RunArgs a;
    if (run_args(args, &a, "submit") < 0)
        return NULL;
    Py_buffer view = a.view;
    Py_ssize_t pos = a.pos, prefix_len = a.prefix_len, row_at = a.row_at;
    const char *prefix = a.prefix;
    PyObject *rows = a.rows;
    Job *j = NULL;
    if (x->stopping) {
        PyErr_SetString(PyExc_ValueError, "submit: the extractor is closed");
        goto fail;
    }
    if (collect(x) < 0 || start_workers(x) < 0)
        goto fail;
    Py_ssize_t nrows = PyList_GET_SIZE(rows) - row_at;
    if (nrows == 0 || prefix_len >= 100) {
        PyBuffer_Release(&view);
        return Py_BuildValue("(nnL)", (Py_ssize_t)0, (Py_ssize_t)0, 0LL);
    }
    j = PyMem_RawCalloc(1, sizeof(Job));
    if (j == NULL)
        goto nomem;
    j->plan = PyMem_RawMalloc(sizeof(Plain) * (size_t)nrows);
    j->lens = PyMem_RawMalloc(sizeof(Py_ssize_t) * (size_t)nrows);
    j->failed = PyMem_RawCalloc((size_t)nrows, 1);
    if (j->plan == NULL || j->lens == NULL || j->failed == NULL)
        goto nomem;
    Py_ssize_t n = plan_run(view.buf, view.len, pos, a.offset, prefix, prefix_len, rows,
                            row_at, nrows, j->plan, j->lens);
    if (n < 0)
        goto fail;
    Py_ssize_t used = 0;
    long long data_bytes = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        used += j->lens[i];
        data_bytes += j->plan[i].size;
    }
    if (n == 0 || (j->dirfd = fcntl(a.dirfd, F_DUPFD_CLOEXEC, 0)) < 0) {
        int none = n == 0;
        job_free_nogil(j);
        PyMem_RawFree(j);
        PyBuffer_Release(&view);
        if (none)
            return Py_BuildValue("(nnL)", (Py_ssize_t)0, (Py_ssize_t)0, 0LL);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    j->view = view;
    j->owner = a.owner;
    j->n = n;
    j->pos = pos;
    j->offset = a.offset;
    memcpy(j->key, prefix, (size_t)prefix_len);
    j->key[prefix_len] = '\0';
    wait_in_flight(x, EXTRACT_IN_FLIGHT - 1);
    pthread_mutex_lock(&x->mu);
    Job **link = &x->queue;
    while (*link != NULL)
        link = &(*link)->next;
    *link = j;
    x->in_flight++;
    pthread_cond_signal(&x->work);
    pthread_mutex_unlock(&x->mu);
    return Py_BuildValue("(nnL)", used, n, data_bytes);
nomem:
    PyErr_NoMemory();
fail:
    if (j != NULL) {
        job_free_nogil(j);
        PyMem_RawFree(j);
    }
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *extractor_settle(Extractor *x, PyObject *args)
{
    int wait = 1;
    if (!PyArg_ParseTuple(args, "|p", &wait))
        return NULL;
    if (wait)
        wait_in_flight(x, 0);
    if (collect(x) < 0)
        return NULL;
    PyObject *out = x->failures, *fresh = PyList_New(0);
    if (fresh == NULL)
        return NULL;
    x->failures = fresh;
    return out;
}

static void extractor_stop(Extractor *x)
{
    wait_in_flight(x, 0);
    pthread_mutex_lock(&x->mu);
    x->stopping = 1;
    pthread_cond_broadcast(&x->work);
    pthread_mutex_unlock(&x->mu);
    Py_BEGIN_ALLOW_THREADS
    for (int w = 0; w < x->started; w++)
        pthread_join(x->threads[w], NULL);
    Py_END_ALLOW_THREADS
    x->started = 0;
}

static PyObject *extractor_close(Extractor *x, PyObject *unused)
{
    (void)unused;
    extractor_stop(x);
    if (collect(x) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int extractor_init(Extractor *x, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"workers", NULL};
    int workers = 2;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|i", kwlist, &workers))
        return -1;
    if (x->failures != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Extractor.__init__ called twice");
        return -1;
    }
    if (workers < 1 || workers > EXTRACT_WORKERS_MAX) {
        PyErr_Format(PyExc_ValueError, "workers must be 1 to %d", EXTRACT_WORKERS_MAX);
        return -1;
    }
    x->failures = PyList_New(0);
    if (x->failures == NULL)
        return -1;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->work, NULL);
    pthread_cond_init(&x->done, NULL);
    x->workers = workers;
    return 0;
}

static void extractor_dealloc(Extractor *x)
{
    if (x->failures != NULL) { /* initialised */
        extractor_stop(x);
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        collect(x);
        PyErr_Restore(type, value, tb);
        pthread_mutex_destroy(&x->mu);
        pthread_cond_destroy(&x->work);
        pthread_cond_destroy(&x->done);
        Py_CLEAR(x->failures);
    }
    Py_TYPE(x)->tp_free((PyObject *)x);
}

static PyMethodDef extractor_methods[] = {
    {"submit", (PyCFunction)extractor_submit, METH_VARARGS,
     "extract_files' run, planned now and created by the workers: (used, files, data_bytes)."},
    {"settle", (PyCFunction)extractor_settle, METH_VARARGS,
     "Wait for every submitted file (unless wait=False: only those done); the members that "
     "failed: [(bytes, offset, sha256)]."},
    {"close", (PyCFunction)extractor_close, METH_NOARGS,
     "Wait for every submitted file and stop the workers (failures are left for settle)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ExtractorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tape_formats.archive._paxfast.Extractor",
    .tp_basicsize = sizeof(Extractor),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "extract_files' runs created by worker threads (see the C source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)extractor_init,
    .tp_dealloc = (destructor)extractor_dealloc,
    .tp_methods = extractor_methods,
};
#endif /* EBM_HAVE_LIBCRYPTO */

static PyMethodDef methods[] = {
    {"ustar_fields", ustar_fields, METH_O,
     "The fields of a plain POSIX ustar header block as a tuple, or None (use Python)."},
    {"index_json", index_json, METH_O,
     "The complete packed index rows at the start of a buffer as JSON lines, and the bytes used."},
    {"index_rows", index_rows, METH_VARARGS,
     "The complete packed index rows at the start of a buffer as catalog rows (see above)."},
    {"header_sum", header_sum, METH_O,
     "The unsigned checksum of a ustar header block (its checksum field as spaces)."},
    {"file_headers", file_headers, METH_VARARGS,
     "The pax 'x' header and ustar block of a plain regular file, or None (use Python)."},
#ifdef EBM_HAVE_SQLITE
    {"stage_rows", stage_rows, METH_VARARGS,
     "Whole packed index rows inserted into a catalog in one transaction (see above)."},
    {"sqlite_symbol", sqlite_symbol, METH_NOARGS,
     "The address of the SQLite this module links (one copy in the process?)."},
#endif
#ifdef EBM_HAVE_LIBCRYPTO
    {"pack_files", pack_files, METH_VARARGS,
     "A run of spooled filesystem entries as stream bytes, index and state rows (see above)."},
    {"scan_dir", scan_dir, METH_VARARGS,
     "One directory of a baseline walk as scan spool rows, sorted, lstat'ed (see above)."},
    {"extract_files", extract_files, METH_VARARGS,
     "A run of buffered plain file members of one directory created as files (see above)."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tape_formats.archive._paxfast",
    "The pax headers of a plain regular file in C (PaxWriter.add is the reference).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__paxfast(void)
{
    PyObject *m = PyModule_Create(&module);
#ifdef EBM_HAVE_LIBCRYPTO
    if (m != NULL && (PyType_Ready(&ExtractorType) < 0
                      || PyModule_AddObjectRef(m, "Extractor", (PyObject *)&ExtractorType) < 0))
        Py_CLEAR(m);
#endif
    return m;
}
