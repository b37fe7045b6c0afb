/*
 * analyze-store.c: where RAM page contents go when they are wanted.
 *
 * With -x DIR each RAM block becomes the file DIR/<idstr> (as
 * analyze-migration.py writes ./<idstr>), created at the block's size and
 * left sparse: never-sent and zero pages cost nothing. With -m and no -x a
 * block gets an unlinked temporary file instead. Either way the store is
 * also the "previous version" an XBZRLE page is decoded against.
 *
 * Writes of consecutive pages are gathered into one run and written with
 * one pwrite (up to RUN_MAX), so a 2 GiB stream is not 512 Ki syscalls.
 * Reads flush the run first.
 *
 * Block names come from the stream: they become paths only after every
 * component is checked (no "..", no empty or "." parts, nothing absolute),
 * and files are opened with O_NOFOLLOW under directories opened with
 * O_NOFOLLOW, so a hostile stream cannot write outside DIR.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analyze-int.h"

#define RUN_MAX (4u << 20)

int an_safe_relpath(const char *name, char *out, size_t outsz)
{
    size_t o = 0;
    const char *p = name;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        bool dotdot = (n == 2 && !memcmp(p, "..", 2));
        bool dot = (n == 1 && p[0] == '.');
        if (!dot) {
            const char *comp = dotdot ? "%2e%2e" : p;
            size_t cn = dotdot ? 6 : n;
            if (o + cn + 2 > outsz)
                return -1;
            if (o)
                out[o++] = '/';
            memcpy(out + o, comp, cn);
            o += cn;
        }
        p += n;
    }
    if (o == 0)
        return -1;
    out[o] = '\0';
    return 0;
}

/* Each file -x writes is named on stdout. Extracting into "." (the way
 * analyze-migration.py always does) names it as the script does: the
 * block's idstr as the stream has it, "desc.json", "state.json". */
static void print_extracted(An *a, const char *name, const char *path)
{
    printf("%s\n", strcmp(a->o.extract_dir, ".") ? path : name);
}

/* Open rel (a safe relative path) under dirfd, creating directories. */
static int open_under(int dirfd, char *rel, int flags, mode_t mode)
{
    int cur = dup(dirfd);
    char *p = rel;
    for (;;) {
        char *slash = strchr(p, '/');
        if (!slash)
            break;
        *slash = '\0';
        if (mkdirat(cur, p, 0755) < 0 && errno != EEXIST) {
            close(cur);
            *slash = '/';
            return -1;
        }
        int next = openat(cur, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        *slash = '/';
        close(cur);
        if (next < 0)
            return -1;
        cur = next;
        p = slash + 1;
    }
    int fd = openat(cur, p, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    int saved = errno;
    close(cur);
    errno = saved;
    return fd;
}

/* A file under the extract directory (also used for desc.json/state.json). */
static int open_extract_file(An *a, const char *name, char *rel, size_t relsz)
{
    if (an_safe_relpath(name, rel, relsz) < 0) {
        errno = EINVAL;
        return -1;
    }
    int dfd = open(a->o.extract_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int fd = open_under(dfd, rel, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int saved = errno;
    close(dfd);
    errno = saved;
    return fd;
}

int an_store_open(An *a, AnBlock *b)
{
    char rel[1024];
    int fd;
    if (a->o.extract_dir) {
        fd = open_extract_file(a, b->name, rel, sizeof(rel));
        if (fd < 0) {
            an_fail(a, 0, "cannot create %s/%s for RAM block '%s': %s",
                    a->o.extract_dir, rel, b->label, strerror(errno));
            return -1;
        }
        size_t plen = strlen(a->o.extract_dir) + strlen(rel) + 2;
        b->store_path = malloc(plen);
        if (b->store_path)
            snprintf(b->store_path, plen, "%s/%s", a->o.extract_dir, rel);
        if (!a->o.quiet)
            print_extracted(a, b->label, b->store_path ? b->store_path : rel);
    } else {
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !*tmp)
            tmp = "/tmp";
        fd = open(tmp, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/ferry-analyze-XXXXXX", tmp);
            fd = mkstemp(path);
            if (fd >= 0)
                unlink(path);
        }
        if (fd < 0) {
            an_fail(a, 0, "cannot create a temporary file in %s for RAM block "
                    "'%s': %s", tmp, b->label, strerror(errno));
            return -1;
        }
        b->store_path = strdup("(temporary file)");
    }
    if (ftruncate(fd, (off_t)b->length) < 0) {
        an_fail(a, 0, "cannot size the store of RAM block '%s' to %" PRIu64
                " bytes: %s", b->label, b->length, strerror(errno));
        close(fd);
        return -1;
    }
    b->store_fd = fd;
    return 0;
}

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int an_store_flush(An *a)
{
    AnRam *R = &a->ram;
    if (!R->run_blk || !R->run_len)
        return 0;
    AnBlock *b = R->run_blk;
    int ret = pwrite_all(b->store_fd, R->run_buf, R->run_len, R->run_addr);
    R->run_len = 0;
    R->run_blk = NULL;
    if (ret < 0) {
        an_fail(a, 0, "cannot write %s (RAM block '%s'): %s",
                b->store_path ? b->store_path : "?", b->label, strerror(errno));
        return -1;
    }
    return 0;
}

int an_store_write(An *a, AnBlock *b, uint64_t addr, const uint8_t *p, size_t n)
{
    AnRam *R = &a->ram;
    if (!R->run_buf) {
        R->run_buf = malloc(RUN_MAX);
        if (!R->run_buf) {
            an_fail(a, 0, "out of memory");
            return -1;
        }
    }
    if (R->run_blk != b || R->run_addr + R->run_len != addr ||
        R->run_len + n > RUN_MAX) {
        if (an_store_flush(a) < 0)
            return -1;
        R->run_blk = b;
        R->run_addr = addr;
    }
    memcpy(R->run_buf + R->run_len, p, n);
    R->run_len += n;
    return 0;
}

int an_store_read(An *a, AnBlock *b, uint64_t addr, uint8_t *p, size_t n)
{
    if (a->ram.run_blk == b && an_store_flush(a) < 0)
        return -1;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(b->store_fd, p + done, n - done, (off_t)(addr + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            an_fail(a, 0, "cannot read back %s: %s", b->store_path ? b->store_path
                    : "?", strerror(errno));
            return -1;
        }
        if (r == 0) {
            memset(p + done, 0, n - done);
            break;
        }
        done += (size_t)r;
    }
    return 0;
}

/* Write a whole small file under the extract directory. */
int an_extract_write_file(An *a, const char *name, const char *data, size_t len)
{
    char rel[1024];
    int fd = open_extract_file(a, name, rel, sizeof(rel));
    if (fd < 0 || pwrite_all(fd, (const uint8_t *)data, len, 0) < 0) {
        an_fail(a, 0, "cannot write %s/%s: %s", a->o.extract_dir, name,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    if (!a->o.quiet) {
        char path[2048];
        snprintf(path, sizeof(path), "%s/%s", a->o.extract_dir, rel);
        print_extracted(a, name, path);
    }
    return 0;
}

int an_extract_write_json(An *a, const char *name, json_t *j)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) {
        an_fail(a, 0, "cannot write %s/%s: %s", a->o.extract_dir, name,
                strerror(errno));
        return -1;
    }
    an_json_print(m, j, 0);
    fclose(m);
    int ret = an_extract_write_file(a, name, buf, len);
    free(buf);
    return ret;
}
