/*
 * mfd-mig.h: helpers for whole migrations with multifd and handover
 * between two TestVMs (tests/migration/testvm.h) in one process.
 *
 * The toggler is a second "vCPU" for the source: it flips pages between
 * all-zero and data (page by page, under the VM's lock, checking that the
 * VM runs), so successive dirty-sync rounds send a page as a ZERO record,
 * then as data, then as zero again: exactly what the SYNC / MULTIFD_FLUSH
 * ordering must keep straight. Holding vm->lock per page means tvm_stop()
 * (which takes the lock) cannot return while a page is half written.
 */
#ifndef FERRY_TESTS_MFD_MIG_H
#define FERRY_TESTS_MFD_MIG_H

#include <sys/stat.h>

#include "migration/testvm.h"
#include "t.h"

typedef struct Toggler {
    TestVM *vm;
    pthread_t thread;
    bool started;
    atomic_bool quit;
    uint64_t first, count; /* pages of block 0 */
    atomic_ulong flips;
} Toggler;

static inline void *toggler_main(void *opaque)
{
    Toggler *t = opaque;
    TestVM *vm = t->vm;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    while (!atomic_load(&t->quit)) {
        pthread_mutex_lock(&vm->lock);
        if (vm->running && !vm->quit) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            uint64_t page = t->first + x % t->count;
            uint8_t *p = vm->blocks[0].host + page * FY_TARGET_PAGE_SIZE;
            if (fy_buffer_is_zero(p, FY_TARGET_PAGE_SIZE)) {
                for (size_t k = 0; k < FY_TARGET_PAGE_SIZE; k += 97)
                    p[k] = (uint8_t)(x >> (k % 56)) | 1;
            } else {
                memset(p, 0, FY_TARGET_PAGE_SIZE);
            }
            tvm_mark_dirty(vm, 0, page);
            atomic_fetch_add(&t->flips, 1);
        }
        pthread_mutex_unlock(&vm->lock);
        usleep(20);
    }
    return NULL;
}

static inline void toggler_start(Toggler *t, TestVM *vm, uint64_t first,
                                 uint64_t count)
{
    memset(t, 0, sizeof(*t));
    t->vm = vm;
    t->first = first;
    t->count = count;
    t->started = pthread_create(&t->thread, NULL, toggler_main, t) == 0;
}

static inline void toggler_stop(Toggler *t)
{
    atomic_store(&t->quit, true);
    if (t->started)
        pthread_join(t->thread, NULL);
    t->started = false;
}

/* Set parameters from a JSON text; returns the error message or "". */
static inline const char *mm_set_params(TestVM *vm, const char *js, char *buf,
                                        size_t len)
{
    json_error_t je;
    json_t *o = json_loads(js, 0, &je);
    FyError *err = NULL;
    buf[0] = 0;
    if (!o)
        snprintf(buf, len, "bad json: %s", je.text);
    else if (fy_migration_set_parameters(vm->mig, o, &err) < 0)
        snprintf(buf, len, "%s", fy_error_msg(err));
    json_decref(o);
    fy_error_free(err);
    return buf;
}

static inline const char *mm_set_cap(TestVM *vm, const char *cap, bool on,
                                     char *buf, size_t len)
{
    FyError *err = NULL;
    buf[0] = 0;
    if (fy_migration_set_capability(vm->mig, cap, on, &err) < 0)
        snprintf(buf, len, "%s", fy_error_msg(err));
    fy_error_free(err);
    return buf;
}

/* Both sides: the same capabilities and parameters, as QEMU requires. */
static inline bool mm_both(TestVM *src, TestVM *dst, const char *cap,
                           const char *params)
{
    char e[512];
    bool ok = true;
    TestVM *vms[2] = { src, dst };
    for (int i = 0; i < 2; i++) {
        if (cap && mm_set_cap(vms[i], cap, true, e, sizeof(e))[0]) {
            printf("# %s: cap %s: %s\n", vms[i]->name, cap, e);
            ok = false;
        }
        if (params && mm_set_params(vms[i], params, e, sizeof(e))[0]) {
            printf("# %s: %s: %s\n", vms[i]->name, params, e);
            ok = false;
        }
    }
    return ok;
}

static inline long long mm_ram_int(TestVM *vm, const char *key)
{
    return tvm_query_int(vm, "ram", key);
}

/* Bytes of the memfd behind block i that hold pages (not holes). */
static inline uint64_t mm_memfd_allocated(TestVM *vm, int i)
{
    struct stat st;
    if (vm->blocks[i].fd < 0 || fstat(vm->blocks[i].fd, &st) < 0)
        return UINT64_MAX;
    return (uint64_t)st.st_blocks * 512;
}

static inline void mm_unix_uri(char *uri, size_t len)
{
    char path[128];
    snprintf(uri, len, "unix:%s", tvm_path(path, sizeof(path), "sock"));
}

#endif
