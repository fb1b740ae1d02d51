/*
 * iscsi_tape_client: stream blocks to an iSCSI tape drive and read them back, one synchronous
 * command at a time, the way the Linux st driver drives a tape (variable mode, or fixed mode
 * as after `mt setblk N`).
 *
 * Why C and libiscsi: the benchmark must measure the target, not the client. A Python
 * initiator would be the bottleneck; libiscsi is the same initiator stack the project's
 * real-client tests use (iscsi-ls, iscsi-inq, qemu's iscsi driver).
 *
 * Sequence: TEST UNIT READY until ready -> MODE SENSE(6) (12 bytes, as st does at open) ->
 * MODE SELECT(6) to block length 0 (--fixed: to the fixed block length) unless the drive is
 * there already -> REWIND -> N x WRITE(6) variable (--fixed: FIXED, BLOCK_SIZE / length
 * blocks each) -> WRITE FILEMARKS(6) 1 -> REWIND -> N x READ(6) variable with SILI (--fixed:
 * FIXED, no SILI: SSC forbids both).
 *
 * Output: one JSON object on stdout (times in seconds, errors with raw sense bytes).
 * Exit status 0 when every command returned GOOD (or a NO SENSE early-warning), else 1.
 *
 * Usage: iscsi_tape_client PORTAL TARGET_IQN LUN BLOCK_SIZE COUNT [--no-verify]
 *                          [--write-only | --read-only] [--no-compression]
 *                          [--data mixed|random|text|zero] [--fixed LENGTH]
 * --no-compression sends MODE SELECT(6) with the data compression page's DCE bit cleared
 * before the stream (as `mt compression 0` does).
 * --write-only stops after the filemark; --read-only rewinds and reads COUNT blocks written
 * by an earlier --write-only run (so the caller can measure the server's CPU per phase).
 * --data picks the pool (below): mixed (default), random (incompressible), text or zero.
 * --fixed LENGTH runs the drive in fixed-block mode with blocks of LENGTH bytes (0: LENGTH =
 * BLOCK_SIZE, one block per command, as `mt setblk 10240` under `tar -b 20`); BLOCK_SIZE
 * must be a multiple of it (`mt setblk 512` under tar: 20 blocks per command).
 */
#include <sys/resource.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define INITIATOR "iqn.2026-01.dev.vtl:bench-client"
#define POOL_CHUNK 4096
#define MAX_ERRORS 8

static char errors_json[8192];
static int n_errors;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Raw sense bytes of a CHECK CONDITION: libiscsi keeps the sense segment in datain,
 * prefixed by its 2-byte length. */
static void sense_hex(struct scsi_task *t, char *out, size_t outlen)
{
    out[0] = 0;
    if (t->datain.data == NULL || t->datain.size <= 2)
        return;
    int n = t->datain.size - 2;
    if (n > 32)
        n = 32;
    size_t pos = 0;
    for (int i = 0; i < n && pos + 3 < outlen; i++)
        pos += snprintf(out + pos, outlen - pos, "%02x", t->datain.data[2 + i]);
}

static void record_error(const char *what, long index, struct scsi_task *t, const char *msg)
{
    if (n_errors >= MAX_ERRORS)
        return;
    char hex[80] = "";
    int status = -1;
    if (t != NULL) {
        status = t->status;
        if (t->status == SCSI_STATUS_CHECK_CONDITION)
            sense_hex(t, hex, sizeof hex);
    }
    size_t len = strlen(errors_json);
    snprintf(errors_json + len, sizeof errors_json - len,
             "%s{\"op\":\"%s\",\"index\":%ld,\"status\":%d,\"sense\":\"%s\",\"key\":\"%s\",\"ascq\":\"%s\",\"msg\":\"%s\"}",
             n_errors ? "," : "", what, index, status, hex,
             t && t->status == SCSI_STATUS_CHECK_CONDITION ? scsi_sense_key_str(t->sense.key) : "",
             t && t->status == SCSI_STATUS_CHECK_CONDITION ? scsi_sense_ascq_str(t->sense.ascq) : "",
             msg ? msg : "");
    n_errors++;
}

/* Run one CDB synchronously. Returns the task (caller frees) or NULL on transport failure. */
static struct scsi_task *run(struct iscsi_context *ctx, int lun, unsigned char *cdb, int cdb_len,
                             int dir, int xfer_len, unsigned char *out_buf, unsigned char *in_buf)
{
    struct scsi_task *t = scsi_create_task(cdb_len, cdb, dir, xfer_len);
    if (t == NULL)
        return NULL;
    struct iscsi_data d, *dp = NULL;
    if (dir == SCSI_XFER_WRITE) {
        d.size = xfer_len;
        d.data = out_buf;
        dp = &d;
    } else if (dir == SCSI_XFER_READ && in_buf != NULL) {
        /* Land Data-In payload straight in our buffer: no copy inside the client. */
        scsi_task_add_data_in_buffer(t, xfer_len, in_buf);
    }
    if (iscsi_scsi_command_sync(ctx, lun, t, dp) == NULL) {
        scsi_free_scsi_task(t);
        return NULL;
    }
    return t;
}

/* Run a control command that must end GOOD (6-byte CDB); record the failure otherwise. */
static int run_good(struct iscsi_context *ctx, int lun, unsigned char *cdb, int dir,
                    int xfer_len, unsigned char *out_buf, const char *what, long index)
{
    struct scsi_task *t = run(ctx, lun, cdb, 6, dir, xfer_len, out_buf, NULL);
    int good = t != NULL && t->status == SCSI_STATUS_GOOD;
    if (!good)
        record_error(what, index, t, t ? "" : iscsi_get_error(ctx));
    if (t)
        scsi_free_scsi_task(t);
    return good;
}

/* MODE SELECT(6) with PF set, parameter list `param` of `len` bytes. */
static int mode_select6(struct iscsi_context *ctx, int lun, unsigned char *param, int len,
                        const char *what)
{
    unsigned char cdb[6] = {0x15, 0x10, 0, 0, (unsigned char)len, 0};
    return run_good(ctx, lun, cdb, SCSI_XFER_WRITE, len, param, what, 0);
}

static int rewind_tape(struct iscsi_context *ctx, int lun, long index)
{
    unsigned char cdb[6] = {0x01, 0, 0, 0, 0, 0};
    return run_good(ctx, lun, cdb, SCSI_XFER_NONE, 0, NULL, "rewind", index);
}

static void put24(unsigned char *p, uint32_t v)
{
    p[0] = (v >> 16) & 0xff;
    p[1] = (v >> 8) & 0xff;
    p[2] = v & 0xff;
}

/*
 * Half-compressible data pool: 4 KiB chunks alternate between random bytes (incompressible)
 * and log-like text lines (compress very well), so zstd does real work on every block and
 * the overall ratio is about 2:1. Block i starts at a different offset in the pool, so
 * consecutive blocks are not identical.
 */
enum data_kind { DATA_MIXED, DATA_RANDOM, DATA_TEXT, DATA_ZERO };

static unsigned char *make_pool(size_t size, enum data_kind kind)
{
    unsigned char *p = calloc(1, size);
    if (p == NULL || kind == DATA_ZERO)
        return p;
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t off = 0; off < size; off += POOL_CHUNK) {
        size_t n = size - off < POOL_CHUNK ? size - off : POOL_CHUNK;
        if (kind == DATA_RANDOM || (kind == DATA_MIXED && (off / POOL_CHUNK) % 2 == 0)) {
            for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                p[off + i] = (unsigned char)(x >> 32);
            }
        } else {
            size_t i = 0;
            unsigned line = (unsigned)(off / POOL_CHUNK);
            while (i < n) {
                char buf[96];
                int l = snprintf(buf, sizeof buf,
                                 "2026-11-25T14:%02u:%02u host backup[%u]: wrote block %u ok\n",
                                 line % 60, (line / 60) % 60, 4000 + line % 7, line);
                line++;
                for (int j = 0; j < l && i < n; j++)
                    p[off + i++] = (unsigned char)buf[j];
            }
        }
    }
    return p;
}

static size_t block_offset(long i, size_t pool_size, size_t bs)
{
    size_t slots = (pool_size - bs) / POOL_CHUNK + 1;
    return ((size_t)i * 7 % slots) * POOL_CHUNK;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s PORTAL TARGET_IQN LUN BLOCK_SIZE COUNT [--no-verify] "
                        "[--write-only|--read-only] [--no-compression] "
                        "[--data mixed|random|text|zero] [--fixed LENGTH]\n", argv[0]);
        return 2;
    }
    const char *portal = argv[1];
    const char *iqn = argv[2];
    int lun = atoi(argv[3]);
    long bs = atol(argv[4]);
    long count = atol(argv[5]);
    int verify = 1, do_write = 1, do_read = 1, compression = 1;
    long fixed = -1; /* fixed-block length; -1: variable mode */
    enum data_kind data = DATA_MIXED;
    for (int a = 6; a < argc; a++) {
        if (strcmp(argv[a], "--no-verify") == 0)
            verify = 0;
        else if (strcmp(argv[a], "--write-only") == 0)
            do_read = 0;
        else if (strcmp(argv[a], "--read-only") == 0)
            do_write = 0;
        else if (strcmp(argv[a], "--no-compression") == 0)
            compression = 0;
        else if (strcmp(argv[a], "--fixed") == 0 && a + 1 < argc)
            fixed = atol(argv[++a]);
        else if (strcmp(argv[a], "--data") == 0 && a + 1 < argc) {
            const char *k = argv[++a];
            if (strcmp(k, "mixed") == 0)
                data = DATA_MIXED;
            else if (strcmp(k, "random") == 0)
                data = DATA_RANDOM;
            else if (strcmp(k, "text") == 0)
                data = DATA_TEXT;
            else if (strcmp(k, "zero") == 0)
                data = DATA_ZERO;
            else {
                fprintf(stderr, "unknown --data %s\n", k);
                return 2;
            }
        }
        else {
            fprintf(stderr, "unknown option %s\n", argv[a]);
            return 2;
        }
    }
    if (bs <= 0 || bs > 0xFFFFFF || count <= 0) {
        fprintf(stderr, "bad block size or count\n");
        return 2;
    }
    if (fixed == 0)
        fixed = bs;
    if (fixed != -1 && (fixed < 0 || fixed > 0xFFFFFF || bs % fixed != 0)) {
        fprintf(stderr, "bad --fixed %ld: the block size must be a multiple of it\n", fixed);
        return 2;
    }
    /* the drive's block length, and each WRITE/READ(6)'s byte 1 and transfer length */
    uint32_t want_blen = fixed > 0 ? (uint32_t)fixed : 0;
    unsigned char wflags = fixed > 0 ? 0x01 : 0x00, rflags = fixed > 0 ? 0x01 : 0x02;
    uint32_t xfer = fixed > 0 ? (uint32_t)(bs / fixed) : (uint32_t)bs;

    size_t pool_size = (size_t)bs + 64 * POOL_CHUNK * 2;
    unsigned char *pool = make_pool(pool_size, data);
    unsigned char *rbuf = malloc(bs);
    if (pool == NULL || rbuf == NULL) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }

    struct iscsi_context *ctx = iscsi_create_context(INITIATOR);
    if (ctx == NULL) {
        fprintf(stderr, "iscsi_create_context failed\n");
        return 2;
    }
    iscsi_set_targetname(ctx, iqn);
    iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE);
    iscsi_set_noautoreconnect(ctx, 1);
    if (iscsi_full_connect_sync(ctx, portal, lun) != 0) {
        fprintf(stderr, "login to %s %s lun %d failed: %s\n", portal, iqn, lun, iscsi_get_error(ctx));
        iscsi_destroy_context(ctx);
        return 2;
    }

    unsigned char cdb[16];
    struct scsi_task *t;
    int ok = 1;
    double t_write = 0, t_wfm = 0, t_read = 0;
    /* CLOCK_MONOTONIC (one clock for every process on the box) at the first data command's
     * start and the last one's completion (the filemark's, writing): the bench's aggregate
     * MB/s over several clients is their bytes over the union of these windows, as fio
     * reports a group's bandwidth. */
    double w_start = 0, w_end = 0, r_start = 0, r_end = 0;
    long written = 0, read_n = 0, mismatches = 0, early_warning = 0;

    /* TEST UNIT READY until ready (UNIT ATTENTION after login, NOT READY while loading). */
    double deadline = now() + 60;
    for (;;) {
        memset(cdb, 0, sizeof cdb);
        t = run(ctx, lun, cdb, 6, SCSI_XFER_NONE, 0, NULL, NULL);
        if (t == NULL) {
            record_error("test_unit_ready", 0, NULL, iscsi_get_error(ctx));
            ok = 0;
            goto out;
        }
        int st = t->status;
        if (st == SCSI_STATUS_GOOD) {
            scsi_free_scsi_task(t);
            break;
        }
        if (now() > deadline) {
            record_error("test_unit_ready", 0, t, "drive never became ready");
            scsi_free_scsi_task(t);
            ok = 0;
            goto out;
        }
        scsi_free_scsi_task(t);
        usleep(100000);
    }

    /* MODE SENSE(6), 12 bytes: header + one block descriptor, as st does at open. */
    memset(cdb, 0, sizeof cdb);
    cdb[0] = 0x1A;
    cdb[2] = 0x3F;
    cdb[4] = 12;
    unsigned char ms[12];
    memset(ms, 0, sizeof ms);
    t = run(ctx, lun, cdb, 6, SCSI_XFER_READ, 12, NULL, NULL);
    int need_select = 1;
    unsigned char dev_specific = 0x10;
    if (t != NULL && t->status == SCSI_STATUS_GOOD && t->datain.size >= 12) {
        memcpy(ms, t->datain.data, 12);
        dev_specific = ms[2] & 0x70; /* keep the buffered mode, clear WP */
        uint32_t blen = ((uint32_t)ms[9] << 16) | ((uint32_t)ms[10] << 8) | ms[11];
        need_select = ms[3] < 8 || blen != want_blen;
    }
    if (t)
        scsi_free_scsi_task(t);

    if (need_select) {
        unsigned char param[12];
        memset(param, 0, sizeof param);
        param[2] = dev_specific;
        param[3] = 8; /* block descriptor length */
        /* density 0 (keep), number of blocks 0, block length (0 = variable) */
        put24(param + 9, want_blen);
        if (!mode_select6(ctx, lun, param, sizeof param, "mode_select")) {
            ok = 0;
            goto out;
        }
    }

    if (!compression) {
        /* MODE SELECT(6) of the data compression page (0x0F) with DCE = 0, as
         * `mt compression 0` does: the drive then stores blocks as they come. */
        unsigned char param[20] = {0, 0, 0, 0, 0x0F, 0x0E, 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1};
        param[2] = dev_specific;
        if (!mode_select6(ctx, lun, param, sizeof param, "mode_select_compression")) {
            ok = 0;
            goto out;
        }
    }

    if (!rewind_tape(ctx, lun, 0)) {
        ok = 0;
        goto out;
    }

    double t0;
    if (!do_write) {
        written = count;
        goto read_phase;
    }

    /* N x WRITE(6): one variable block, or bs / fixed fixed blocks. */
    t0 = now();
    w_start = t0;
    for (long i = 0; i < count; i++) {
        memset(cdb, 0, sizeof cdb);
        cdb[0] = 0x0A;
        cdb[1] = wflags;
        put24(cdb + 2, xfer);
        t = run(ctx, lun, cdb, 6, SCSI_XFER_WRITE, bs, pool + block_offset(i, pool_size, bs), NULL);
        if (t == NULL) {
            record_error("write", i, NULL, iscsi_get_error(ctx));
            ok = 0;
            goto out;
        }
        if (t->status == SCSI_STATUS_CHECK_CONDITION && t->sense.key == SCSI_SENSE_NO_SENSE) {
            early_warning++; /* EOM early warning: block was written */
        } else if (t->status != SCSI_STATUS_GOOD) {
            record_error("write", i, t, "");
            scsi_free_scsi_task(t);
            ok = 0;
            break;
        }
        scsi_free_scsi_task(t);
        written++;
    }
    double t1 = now();
    t_write = t1 - t0;
    if (!ok)
        goto out;

    /* WRITE FILEMARKS(6) 1, not immediate: the data is durable when it returns. */
    memset(cdb, 0, sizeof cdb);
    cdb[0] = 0x10;
    put24(cdb + 2, 1);
    t = run(ctx, lun, cdb, 6, SCSI_XFER_NONE, 0, NULL, NULL);
    w_end = now();
    t_wfm = w_end - t1;
    if (t == NULL || !(t->status == SCSI_STATUS_GOOD ||
                       (t->status == SCSI_STATUS_CHECK_CONDITION && t->sense.key == SCSI_SENSE_NO_SENSE))) {
        record_error("write_filemarks", 0, t, t ? "" : iscsi_get_error(ctx));
        ok = 0;
        if (t)
            scsi_free_scsi_task(t);
        goto out;
    }
    scsi_free_scsi_task(t);
    if (!do_read)
        goto out;

read_phase:
    if (!rewind_tape(ctx, lun, 1)) {
        ok = 0;
        goto out;
    }

    /* N x READ(6): variable mode with SILI, or fixed. */
    t0 = now();
    r_start = t0;
    for (long i = 0; i < written; i++) {
        memset(cdb, 0, sizeof cdb);
        cdb[0] = 0x08;
        cdb[1] = rflags;
        put24(cdb + 2, xfer);
        t = run(ctx, lun, cdb, 6, SCSI_XFER_READ, bs, NULL, rbuf);
        if (t == NULL) {
            record_error("read", i, NULL, iscsi_get_error(ctx));
            ok = 0;
            goto out;
        }
        if (t->status != SCSI_STATUS_GOOD) {
            record_error("read", i, t, "");
            scsi_free_scsi_task(t);
            ok = 0;
            break;
        }
        if (t->residual_status != SCSI_RESIDUAL_NO_RESIDUAL && t->residual != 0) {
            record_error("read", i, t, "short block (residual)");
            mismatches++;
        } else if (verify && memcmp(rbuf, pool + block_offset(i, pool_size, bs), bs) != 0) {
            if (mismatches == 0)
                record_error("read", i, t, "data mismatch");
            mismatches++;
        }
        scsi_free_scsi_task(t);
        read_n++;
    }
    r_end = now();
    t_read = r_end - t0;
    if (mismatches)
        ok = 0;

out:
    iscsi_logout_sync(ctx);
    iscsi_destroy_context(ctx);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("{\"client_cpu_s\":%.3f,\"fixed_block\":%ld,\"block_size\":%ld,\"count\":%ld,\"written\":%ld,\"read\":%ld,"
           "\"write_s\":%.6f,\"wfm_s\":%.6f,\"read_s\":%.6f,\"write_window\":[%.6f,%.6f],"
           "\"read_window\":[%.6f,%.6f],\"early_warning\":%ld,"
           "\"mismatches\":%ld,\"verified\":%s,\"ok\":%s,\"errors\":[%s]}\n",
           cpu, fixed > 0 ? fixed : 0, bs, count, written, read_n, t_write, t_wfm, t_read, w_start, w_end, r_start, r_end,
           early_warning, mismatches,
           verify ? "true" : "false", ok ? "true" : "false", errors_json);
    free(pool);
    free(rbuf);
    return ok ? 0 : 1;
}
