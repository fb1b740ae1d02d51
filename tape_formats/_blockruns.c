/* tape_formats._blockruns: the records of a run of fixed-length blocks, packed or decoded
 * in one call.
 *
 * Why: a fixed-block command (`mt setblk 512`) moves up to thousands of blocks, each its own
 * record (header, CRC32C, per-block compression). block_runs._pack_run/_unpack_run, the
 * reference and the fallback, spend ~3 us of interpreter per 512-byte block; here the header,
 * both checksums and the copies cost well under one. zstd stays the zstandard module's (its
 * compressor and decompressor objects are called per block, exactly as the reference calls
 * them), so the records are byte for byte the reference's; tests/tape_formats/
 * test_block_runs.py holds the two to the same output.
 *
 * configure(magic, min_compress, misses_before_skip, skip_blocks, zstd_error)
 * pack_run(data, size, packer, compress, room, file_no, obj, offset)
 *     -> (records, offsets, meta, stored)
 * unpack_run(raw, base, offsets, meta, r0, end, obj, size, buf, dctx) -> (done, stored)
 *     as block_runs._pack_run / _unpack_run (their docstrings say what each does).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER 32
#define CRC_SPAN 28
#define KIND_DATA 1
#define KIND_DATA_RUN 4  /* RecordKind.DATA_RUN: native_len = count << 24 | block size */
#define FLAG_COMPRESSED 0x01
#define FLAG_ENCRYPTED 0x02

static char magic[2];
static long min_compress = 256, misses_before_skip = 8, skip_blocks = 32;
static PyObject *zstd_error, *s_cctx, *s_misses, *s_skip, *s_compress, *s_decompress,
    *kw_max_output;
static int configured;

/* ---- CRC32C (Castagnoli), as the crc32c module computes it -------------------------- */
static uint32_t crc_table[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t crc_soft(uint32_t c, const uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
                           | (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF]
            ^ crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24]
            ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_HW_CRC 1
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

static int hw_crc;

static uint32_t crc32c(const void *buf, size_t n)
{
#ifdef HAVE_HW_CRC
    if (hw_crc)
        return ~crc_hw(0xFFFFFFFFu, buf, n);
#endif
    return ~crc_soft(0xFFFFFFFFu, buf, n);
}

/* ---- little-endian fields ------------------------------------------------------------ */
static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* records.pack_record_header for a data block */
static void put_header(uint8_t *h, uint8_t flags, uint32_t stored, uint32_t native,
                       uint32_t file_no, uint64_t obj, uint32_t payload_crc)
{
    h[0] = (uint8_t)magic[0];
    h[1] = (uint8_t)magic[1];
    h[2] = KIND_DATA;
    h[3] = flags;
    put32(h + 4, stored);
    put32(h + 8, native);
    put32(h + 12, file_no);
    put32(h + 16, (uint32_t)obj);
    put32(h + 20, (uint32_t)(obj >> 32));
    put32(h + 24, payload_crc);
    put32(h + 28, crc32c(h, CRC_SPAN));
}

static PyObject *configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    const char *m;
    Py_ssize_t mlen;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "configure(magic, min_compress, misses, skip, error)");
        return NULL;
    }
    if (PyBytes_AsStringAndSize(args[0], (char **)&m, &mlen) < 0)
        return NULL;
    if (mlen != 2) {
        PyErr_SetString(PyExc_ValueError, "the record magic is two bytes");
        return NULL;
    }
    memcpy(magic, m, 2);
    min_compress = PyLong_AsLong(args[1]);
    misses_before_skip = PyLong_AsLong(args[2]);
    skip_blocks = PyLong_AsLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    Py_INCREF(args[4]);
    Py_XSETREF(zstd_error, args[4]);
    configured = 1;
    Py_RETURN_NONE;
}

static int get_long_attr(PyObject *o, PyObject *name, long *v)
{
    PyObject *x = PyObject_GetAttr(o, name);
    if (x == NULL)
        return -1;
    *v = PyLong_AsLong(x);
    Py_DECREF(x);
    return *v == -1 && PyErr_Occurred() ? -1 : 0;
}

static int set_long_attr(PyObject *o, PyObject *name, long v)
{
    PyObject *x = PyLong_FromLong(v);
    if (x == NULL)
        return -1;
    int r = PyObject_SetAttr(o, name, x);
    Py_DECREF(x);
    return r;
}

/* BlockPacker.pack(block, compress) without a key: the zstd output (a new reference) when
 * it is shorter than the block, else Py_None (stored as is); NULL on error. Keeps the
 * packer's skip state as the Python method does. */
static PyObject *try_compress(PyObject *cctx, const uint8_t *p, Py_ssize_t n, int compress,
                              long *misses, long *skip)
{
    if (!compress || n < min_compress)
        Py_RETURN_NONE;
    if (*skip) {
        (*skip)--;
        Py_RETURN_NONE;
    }
    PyObject *view = PyMemoryView_FromMemory((char *)p, n, PyBUF_READ);
    if (view == NULL)
        return NULL;
    PyObject *z = PyObject_CallMethodOneArg(cctx, s_compress, view);
    Py_DECREF(view);
    if (z == NULL)
        return NULL;
    if (!PyBytes_Check(z)) {
        Py_DECREF(z);
        PyErr_SetString(PyExc_TypeError, "the compressor returned no bytes");
        return NULL;
    }
    if (PyBytes_GET_SIZE(z) < n) {
        *misses = 0;
        return z;
    }
    Py_DECREF(z);
    if (++*misses >= misses_before_skip)
        *skip = skip_blocks;
    Py_RETURN_NONE;
}

static PyObject *pack_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "pack_run(data, size, packer, compress, room, file_no, obj, offset)");
        return NULL;
    }
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_blockruns.configure() was not called");
        return NULL;
    }
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    PyObject *packer = args[2], *cctx = NULL, *records = NULL, *offs = NULL, *metas = NULL,
        *result = NULL;
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    int compress = PyObject_IsTrue(args[3]);
    long long room = PyLong_AsLongLong(args[4]);
    unsigned long file_no = PyLong_AsUnsignedLong(args[5]);
    unsigned long long obj = PyLong_AsUnsignedLongLong(args[6]);
    unsigned long long offset = PyLong_AsUnsignedLongLong(args[7]);
    long misses = 0, skip = 0;
    if (PyErr_Occurred() || compress < 0)
        goto done;
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "the block size must be positive");
        goto done;
    }
    if (get_long_attr(packer, s_misses, &misses) < 0 || get_long_attr(packer, s_skip, &skip) < 0)
        goto done;
    cctx = PyObject_GetAttr(packer, s_cctx);
    if (cctx == NULL)
        goto done;
    Py_ssize_t n = data.len / size;
    records = PyBytes_FromStringAndSize(NULL, n * (HEADER + size));
    offs = PyBytes_FromStringAndSize(NULL, n * 8);
    metas = PyBytes_FromStringAndSize(NULL, n * 8);
    if (records == NULL || offs == NULL || metas == NULL)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(records);
    uint64_t *ov = (uint64_t *)PyBytes_AS_STRING(offs), *mv = (uint64_t *)PyBytes_AS_STRING(metas);
    Py_ssize_t at = 0, i;
    long long stored = 0;
    for (i = 0; i < n; i++) {
        const uint8_t *block = (const uint8_t *)data.buf + i * size;
        PyObject *z = try_compress(cctx, block, size, compress, &misses, &skip);
        if (z == NULL)
            goto done;
        const uint8_t *payload = block;
        Py_ssize_t plen = size;
        uint8_t flags = 0;
        if (z != Py_None) {
            payload = (const uint8_t *)PyBytes_AS_STRING(z);
            plen = PyBytes_GET_SIZE(z);
            flags = FLAG_COMPRESSED;
        }
        if (HEADER + plen > room) {
            Py_DECREF(z);
            break;
        }
        room -= HEADER + plen;
        memcpy(out + at + HEADER, payload, plen);
        put_header(out + at, flags, (uint32_t)plen, (uint32_t)size, (uint32_t)file_no, obj + i,
                   crc32c(out + at + HEADER, plen));
        Py_DECREF(z);
        ov[i] = offset + at;
        mv[i] = ((uint64_t)size << 16) | ((uint64_t)flags << 8) | KIND_DATA;
        at += HEADER + plen;
        stored += plen;
    }
    if (set_long_attr(packer, s_misses, misses) < 0 || set_long_attr(packer, s_skip, skip) < 0)
        goto done;
    if (_PyBytes_Resize(&records, at) < 0 || _PyBytes_Resize(&offs, i * 8) < 0
            || _PyBytes_Resize(&metas, i * 8) < 0)
        goto done;
    result = Py_BuildValue("(OOOL)", records, offs, metas, stored);
done:
    Py_XDECREF(cctx);
    Py_XDECREF(records);
    Py_XDECREF(offs);
    Py_XDECREF(metas);
    PyBuffer_Release(&data);
    return result;
}

/* dctx.decompress(payload, max_output_size=size) into slot: 1 done, 0 not this block (a
 * zstd error or another length: the reference stops there), -1 another error. */
static int decompress_into(PyObject *dctx, const uint8_t *p, Py_ssize_t n, uint8_t *slot,
                           Py_ssize_t size)
{
    PyObject *view = PyMemoryView_FromMemory((char *)p, n, PyBUF_READ);
    PyObject *limit = PyLong_FromSsize_t(size);
    if (view == NULL || limit == NULL) {
        Py_XDECREF(view);
        Py_XDECREF(limit);
        return -1;
    }
    PyObject *callargs[3] = {dctx, view, limit};
    PyObject *out = PyObject_VectorcallMethod(s_decompress, callargs,
                                              2, kw_max_output);
    Py_DECREF(view);
    Py_DECREF(limit);
    if (out == NULL) {
        if (PyErr_ExceptionMatches(zstd_error)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(out, &b, PyBUF_C_CONTIGUOUS) < 0) {
        Py_DECREF(out);
        return -1;
    }
    int r = b.len == size;
    if (r)
        memcpy(slot, b.buf, size);
    PyBuffer_Release(&b);
    Py_DECREF(out);
    return r;
}

static PyObject *unpack_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError,
                        "unpack_run(raw, base, offsets, meta, r0, end, obj, size, buf, dctx)");
        return NULL;
    }
    Py_buffer raw = {0}, offs = {0}, metas = {0}, buf = {0};
    PyObject *result = NULL;
    if (PyObject_GetBuffer(args[0], &raw, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &offs, PyBUF_C_CONTIGUOUS) < 0)
        goto done;
    if (PyObject_GetBuffer(args[3], &metas, PyBUF_C_CONTIGUOUS) < 0)
        goto done;
    if (PyObject_GetBuffer(args[8], &buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        goto done;
    unsigned long long base = PyLong_AsUnsignedLongLong(args[1]);
    Py_ssize_t r0 = PyLong_AsSsize_t(args[4]);
    unsigned long long end = PyLong_AsUnsignedLongLong(args[5]);
    unsigned long long obj = PyLong_AsUnsignedLongLong(args[6]);
    Py_ssize_t size = PyLong_AsSsize_t(args[7]);
    PyObject *dctx = args[9];
    if (PyErr_Occurred())
        goto done;
    if (size <= 0 || offs.len % 8 || metas.len % 8 || !configured) {
        PyErr_SetString(PyExc_ValueError, "unpack_run: bad size, index arrays or setup");
        goto done;
    }
    const uint64_t *ov = offs.buf, *mv = metas.buf;
    Py_ssize_t records = metas.len / 8, noffs = offs.len / 8;
    Py_ssize_t n = buf.len / size;
    if (r0 < 0 || r0 > records || noffs < records) {
        PyErr_SetString(PyExc_ValueError, "unpack_run: r0 outside the index");
        goto done;
    }
    const uint64_t want = ((uint64_t)size << 16) | KIND_DATA;
    const uint8_t *rb = raw.buf;
    uint8_t *out = buf.buf;
    long long stored_total = 0;
    Py_ssize_t j = 0;  /* blocks decoded */
    for (Py_ssize_t r = r0; j < n && r < records; r++) {
        uint64_t m = mv[r];
        Py_ssize_t count = 1;
        unsigned kind = KIND_DATA;
        if ((m & ~((uint64_t)FLAG_COMPRESSED << 8)) != want) {
            /* a run of blocks of this size, all of them wanted */
            if ((m & 0xFF) != KIND_DATA_RUN || ((m >> 16) & 0xFFFFFF) != (uint64_t)size
                    || (m & ((uint64_t)FLAG_ENCRYPTED << 8)))
                break;
            count = (Py_ssize_t)((m >> 40) & 0xFF);
            if (count < 1 || count > n - j)
                break;
            kind = KIND_DATA_RUN;
        }
        uint64_t o = ov[r], nx = r + 1 < noffs ? ov[r + 1] : end;
        if (o < base || nx < o + HEADER || nx - base > (uint64_t)raw.len)
            break;
        const uint8_t *h = rb + (o - base);
        uint64_t stored = nx - o - HEADER;
        /* RecordHeader.unpack: magic, header CRC, a known kind; then the object, length */
        if (h[0] != (uint8_t)magic[0] || h[1] != (uint8_t)magic[1]
                || crc32c(h, CRC_SPAN) != get32(h + 28) || h[2] != kind
                || (h[3] & FLAG_ENCRYPTED) || get64(h + 16) != obj + j
                || get32(h + 4) != stored
                || (kind == KIND_DATA_RUN && get32(h + 8) != (uint32_t)(m >> 16)))
            break;
        const uint8_t *payload = h + HEADER;
        if (crc32c(payload, stored) != get32(h + 24))
            break;
        uint8_t *slot = out + j * size;
        Py_ssize_t len = count * size;
        if (m & ((uint64_t)FLAG_COMPRESSED << 8)) {
            int d = decompress_into(dctx, payload, (Py_ssize_t)stored, slot, len);
            if (d < 0)
                goto done;
            if (d == 0)
                break;
        } else if (stored != (uint64_t)len) {
            break;
        } else {
            memcpy(slot, payload, len);
        }
        stored_total += (long long)stored;
        j += count;
    }
    result = Py_BuildValue("(nL)", j, stored_total);
done:
    if (raw.obj) PyBuffer_Release(&raw);
    if (offs.obj) PyBuffer_Release(&offs);
    if (metas.obj) PyBuffer_Release(&metas);
    if (buf.obj) PyBuffer_Release(&buf);
    return result;
}

static PyObject *crc32c_py(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    uint32_t c = crc32c(b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(magic, min_compress, misses_before_skip, skip_blocks, zstd_error)"},
    {"pack_run", (PyCFunction)(void (*)(void))pack_run, METH_FASTCALL,
     "block_runs._pack_run in C."},
    {"unpack_run", (PyCFunction)(void (*)(void))unpack_run, METH_FASTCALL,
     "block_runs._unpack_run in C."},
    {"crc32c", crc32c_py, METH_O,
     "crc32c(data) -> int: this module's CRC32C (tests check it against crc32c's)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_blockruns",
                                    "Runs of fixed-length blocks' records (block_runs.py).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__blockruns(void)
{
    crc_init();
#ifdef HAVE_HW_CRC
    __builtin_cpu_init();
    hw_crc = __builtin_cpu_supports("sse4.2");
#endif
    s_cctx = PyUnicode_InternFromString("_cctx");
    s_misses = PyUnicode_InternFromString("_misses");
    s_skip = PyUnicode_InternFromString("_skip");
    s_compress = PyUnicode_InternFromString("compress");
    s_decompress = PyUnicode_InternFromString("decompress");
    kw_max_output = Py_BuildValue("(s)", "max_output_size");
    if (!s_cctx || !s_misses || !s_skip || !s_compress || !s_decompress || !kw_max_output)
        return NULL;
    return PyModule_Create(&module);
}
