/*
 * ram.c: guest RAM. Each block is a memfd (or a memfd handed in by the
 * caller) mapped MAP_SHARED, so a local destination can be given the same
 * memory by fd. Nothing is touched here: a block's untouched pages stay
 * holes in the memfd until the guest writes them.
 *
 * Or, on request (rc->anon), private anonymous memory with MADV_HUGEPAGE,
 * as QEMU's memory-backend-ram: this kernel gives shmem no huge pages
 * (shmem_enabled=never here), so a destination loading into a memfd pays
 * a fault and a clear per 4 KiB; anonymous THP pays them per 2 MiB. Such
 * a block has fd -1 and shared false, which the handover refuses by name.
 *
 * Blocks are laid end to end in config order, both as guest-physical
 * addresses (mr_addr) and as the linear page numbers the workloads use.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "machine/machine-int.h"

static int ram_block_open(const FyMachineRamConfig *rc, FyError **errp)
{
    if (rc->fd < 0) {
        int fd = memfd_create(rc->idstr, MFD_CLOEXEC);
        if (fd < 0) {
            fy_error_setg_errno(errp, errno, "RAM block '%s': memfd_create", rc->idstr);
            return -1;
        }
        if (ftruncate(fd, (off_t)rc->size) < 0) {
            fy_error_setg_errno(errp, errno, "RAM block '%s': ftruncate to %" PRIu64
                                " bytes", rc->idstr, rc->size);
            close(fd);
            return -1;
        }
        return fd;
    }
    struct stat st;
    if (fstat(rc->fd, &st) < 0) {
        fy_error_setg_errno(errp, errno, "RAM block '%s': fd %d", rc->idstr, rc->fd);
        return -1;
    }
    if ((uint64_t)st.st_size < rc->size) {
        fy_error_setg(errp, "RAM block '%s': fd %d holds %" PRIu64 " bytes, "
                      "%" PRIu64 " needed", rc->idstr, rc->fd, (uint64_t)st.st_size,
                      rc->size);
        return -1;
    }
    int fd = fcntl(rc->fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        fy_error_setg_errno(errp, errno, "RAM block '%s': dup of fd %d", rc->idstr,
                            rc->fd);
    return fd;
}

/*
 * Huge pages only where a 2 MiB page can fit: the mapping is placed on a
 * 2 MiB boundary (over-reserve, trim) so the first and last huge pages are
 * not lost to alignment. MADV_HUGEPAGE failing (THP compiled out) only
 * costs speed.
 */
static void *ram_anon_map(uint64_t size)
{
    const uint64_t huge = 2u << 20;
    uint8_t *p = mmap(NULL, size + huge, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return MAP_FAILED;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1);
    uint64_t head = a - (uintptr_t)p;
    if (head)
        munmap(p, head);
    if (huge - head)
        munmap((uint8_t *)a + size, huge - head);
    (void)madvise((void *)a, size, MADV_HUGEPAGE);
    return (void *)a;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Every page allocated now. Before Linux 5.14 there is no
 * MADV_POPULATE_WRITE: touch each page instead, rewriting its own first
 * byte so that a given memfd's contents stay. */
static int ram_prealloc(FyRamBlock *b, FyError **errp)
{
    if (madvise(b->host, b->used_length, MADV_POPULATE_WRITE) == 0)
        return 0;
    if (errno != EINVAL) {
        fy_error_setg_errno(errp, errno, "RAM block '%s': preallocating %" PRIu64
                            " bytes", b->idstr, b->used_length);
        return -1;
    }
    for (uint64_t off = 0; off < b->used_length; off += FY_TARGET_PAGE_SIZE) {
        volatile uint8_t *p = b->host + off;
        *p = *p;
    }
    return 0;
}

static int ram_block_create(FyMachine *m, int i, uint64_t gpa, FyError **errp)
{
    const FyMachineRamConfig *rc = &m->cfg.ram[i];
    if (rc->size == 0 || rc->size % FY_TARGET_PAGE_SIZE) {
        fy_error_setg(errp, "RAM block '%s': size %" PRIu64 " is not a non-zero "
                      "multiple of %u", rc->idstr, rc->size, FY_TARGET_PAGE_SIZE);
        return -1;
    }
    for (int j = 0; j < i; j++) {
        if (strcmp(m->cfg.ram[j].idstr, rc->idstr) == 0) {
            fy_error_setg(errp, "RAM block '%s' is configured twice", rc->idstr);
            return -1;
        }
    }
    bool anon = rc->anon && rc->fd < 0;
    int fd = anon ? -1 : ram_block_open(rc, errp);
    if (fd < 0 && !anon)
        return -1;
    void *host = anon ? ram_anon_map(rc->size)
                      : mmap(NULL, rc->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (host == MAP_FAILED) {
        fy_error_setg_errno(errp, errno, "RAM block '%s': mmap of %" PRIu64 " bytes",
                            rc->idstr, rc->size);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    FyRamBlock *b = &m->blocks[i];
    memset(b, 0, sizeof(*b));
    snprintf(b->idstr, sizeof(b->idstr), "%s", rc->idstr);
    b->host = host;
    b->used_length = rc->size;
    b->page_size = FY_TARGET_PAGE_SIZE;
    b->fd = fd;
    b->fd_offset = 0;
    b->mr_addr = gpa;
    b->shared = !anon;
    m->nblocks = i + 1;
    return rc->prealloc ? ram_prealloc(b, errp) : 0;
}

int fy_machine_ram_create(FyMachine *m, FyError **errp)
{
    if (m->cfg.nr_ram < 1 || m->cfg.nr_ram > FY_MACHINE_MAX_RAM) {
        fy_error_setg(errp, "machine: %d RAM blocks (1..%d)", m->cfg.nr_ram,
                      FY_MACHINE_MAX_RAM);
        return -1;
    }
    uint64_t gpa = 0, lpage = 0;
    for (int i = 0; i < m->cfg.nr_ram; i++) {
        if (ram_block_create(m, i, gpa, errp) < 0)
            return -1;
        FyRamBlock *b = &m->blocks[i];
        m->list.blocks[i] = b;
        m->gmap.host[i] = b->host;
        m->gmap.first[i] = lpage;
        lpage += b->used_length / FY_TARGET_PAGE_SIZE;
        m->gmap.end[i] = lpage;
        /* Next block on a 2 MiB guest-physical boundary, as a board would. */
        gpa = (gpa + b->used_length + (2u << 20) - 1) & ~(uint64_t)((2u << 20) - 1);
    }
    m->list.count = m->nblocks;
    m->gmap.nblocks = m->nblocks;
    return 0;
}

void fy_machine_ram_destroy(FyMachine *m)
{
    for (int i = 0; i < m->nblocks; i++) {
        FyRamBlock *b = &m->blocks[i];
        if (b->host)
            munmap(b->host, b->used_length);
        if (b->fd >= 0)
            close(b->fd);
        b->host = NULL;
        b->fd = -1;
    }
    m->nblocks = 0;
    m->list.count = 0;
}
