/* LD_PRELOAD shim for crash tests: the process SIGKILLs itself when it syncs an SQLite WAL
   file (a name ending in "-wal") for the Nth time, N from $KILL_AT_WAL_SYNC. With
   synchronous=FULL that is inside a COMMIT, between writing the transaction's frames to the
   WAL and publishing them in the wal-index: a commit in flight. Built by the test with cc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int seen;

static void maybe_die(int fd) {
    const char *n = getenv("KILL_AT_WAL_SYNC");
    char link[64], path[4096];
    ssize_t len;
    if (n == NULL)
        return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    len = readlink(link, path, sizeof path - 1);
    if (len < 4 || memcmp(path + len - 4, "-wal", 4) != 0)
        return;
    if (++seen == atoi(n))
        kill(getpid(), SIGKILL);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    maybe_die(fd);
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    maybe_die(fd);
    return real(fd);
}
