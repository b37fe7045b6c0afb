/*
 * multifd.h: RAM pages over several extra channels, in QEMU's multifd format.
 *
 * With the multifd capability the main channel keeps the migration stream
 * (sections, devices, RAM_SAVE_FLAG_MULTIFD_FLUSH markers) and the pages
 * themselves travel on `multifd-channels` more connections, each served by
 * one thread on both sides:
 *
 *   source                                    destination
 *   RAM sender --batches--> send thread i  ==channel i==>  recv thread i
 *                           (zero check,                   (checks, readv
 *                            compress, writev)              or inflate into
 *                                                           guest memory)
 *
 * Wire (QEMU migration/multifd.h, multifd.c; all integers big-endian):
 * - Handshake, once per channel, 64 bytes (MultiFDInit_t): be32 magic
 *   0x11223344, be32 version 1, uuid[16], u8 id, u8 unused[7], u64 unused[4].
 *   The destination checks magic, version, uuid (its own) and id < channels.
 * - Then packets (MultiFDPacket_t), always FY_MULTIFD_PACKET_LEN bytes
 *   (320 fixed + 8 x 128 offsets, whatever the page count):
 *     0  be32 magic        4  be32 version      8  be32 flags
 *    12  be32 pages_alloc 16  be32 normal_pages 20  be32 next_packet_size
 *    24  be64 packet_num  32  be32 zero_pages   36  u32 unused32[1]
 *    40  u64 unused64[3]  64  char ramblock[256] (NUL-terminated)
 *   320  be64 offset[128]: normal pages first, then zero pages; slots past
 *        normal_pages + zero_pages are ignored (QEMU leaves stale values).
 *   followed by next_packet_size bytes: the normal pages' raw contents in
 *   offset order (nocomp), or one compressed chunk of all normal pages.
 * - QEMU 7.2 (before zero_pages, 9.0) has bytes 32..63 as u64 unused[4]
 *   (always zero) and calls normal_pages pages_used. A 7.2 packet therefore
 *   decodes here as zero_pages = 0, and what we send decodes in 7.2 as long
 *   as zero_pages is 0: FY_MULTIFD_WIRE_7_2 only forbids zero pages in
 *   packets (zero-page-detection=multifd), everything else is identical.
 *   7.2 receivers also accept pages_alloc up to 100 x 128 and check the
 *   handshake id with `id > channels`; we are strict in both.
 * - Compression keeps ONE stream per channel for the whole migration: zlib
 *   deflates page after page with Z_NO_FLUSH and Z_SYNC_FLUSH after the
 *   last page of a packet; zstd compresses with ZSTD_e_continue and
 *   ZSTD_e_flush after the last page, in one endless frame. A packet's
 *   chunk is therefore only decodable after every earlier packet of the
 *   same channel, which TCP's order gives.
 * - SYNC: a packet with FY_MULTIFD_FLAG_SYNC and no pages on every channel,
 *   sent after the pages queued before it; it pairs with the main stream's
 *   RAM_SAVE_FLAG_MULTIFD_FLUSH (or EOS with multifd-flush-after-each-
 *   section). A destination channel stops after its SYNC until the main
 *   loader has seen every channel's SYNC (fy_multifd_recv_sync), so no page
 *   of the next round lands before the main stream reached the flush.
 *
 * Objects and threads: everything lives in a FyMultifdSend or FyMultifdRecv
 * (no globals); their threads are joined by *_free(). The first error of
 * any channel fails the whole object: it is kept, every channel is shut
 * down so no thread stays blocked, and every later call returns it.
 */
#ifndef FERRY_MULTIFD_H
#define FERRY_MULTIFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/channel.h"
#include "ferry/error.h"
#include "ferry/ramblock.h"

/* ---- wire constants ---- */
#define FY_MULTIFD_MAGIC   0x11223344u
#define FY_MULTIFD_VERSION 1u

enum {
    FY_MULTIFD_FLAG_SYNC             = 1u << 0,
    FY_MULTIFD_FLAG_COMPRESSION_MASK = 0x1fu << 1,
    FY_MULTIFD_FLAG_NOCOMP           = 0u << 1,
    FY_MULTIFD_FLAG_ZLIB             = 1u << 1,
    FY_MULTIFD_FLAG_ZSTD             = 2u << 1,
    FY_MULTIFD_FLAG_QPL              = 4u << 1,  /* not supported here */
    FY_MULTIFD_FLAG_UADK             = 8u << 1,  /* not supported here */
    FY_MULTIFD_FLAG_QATZIP           = 16u << 1, /* not supported here */
    FY_MULTIFD_FLAG_DEVICE_STATE     = 32u << 1, /* not supported here */
};

#define FY_MULTIFD_PACKET_SIZE      (512u * 1024)
#define FY_MULTIFD_PAGES_PER_PACKET (FY_MULTIFD_PACKET_SIZE / FY_TARGET_PAGE_SIZE)
#define FY_MULTIFD_INIT_LEN         64
#define FY_MULTIFD_PACKET_FIXED_LEN 320
#define FY_MULTIFD_PACKET_LEN \
    (FY_MULTIFD_PACKET_FIXED_LEN + 8 * FY_MULTIFD_PAGES_PER_PACKET)
/* The id is one byte on the wire. */
#define FY_MULTIFD_CHANNELS_MAX     255
/* Largest compressed chunk a destination accepts (QEMU's receive buffer). */
#define FY_MULTIFD_COMPRESSED_MAX   (2 * FY_MULTIFD_PACKET_SIZE)

/* QMP multifd-compression (QEMU's order; only these three exist here). */
typedef enum {
    FY_MULTIFD_COMPRESSION_NONE,
    FY_MULTIFD_COMPRESSION_ZLIB,
    FY_MULTIFD_COMPRESSION_ZSTD,
} FyMultifdCompression;

/* QMP zero-page-detection (QEMU's order). */
typedef enum {
    FY_MULTIFD_ZERO_NONE,    /* no detection: zero pages go as data */
    FY_MULTIFD_ZERO_LEGACY,  /* the RAM sender checks pages itself and puts
                                zero ones on the main stream as ZERO records;
                                multifd gets only the others */
    FY_MULTIFD_ZERO_MULTIFD, /* the send threads check, zero pages travel as
                                zero offsets in the packet (QEMU 9.0+) */
} FyMultifdZeroDetect;

/* Which packet layout the source writes (see the top of this file). */
typedef enum {
    FY_MULTIFD_WIRE_CURRENT, /* QEMU 9.0 and later: zero_pages */
    FY_MULTIFD_WIRE_7_2,     /* QEMU up to 8.2: no zero pages in packets */
} FyMultifdWire;

/* "none", "zlib", "zstd" (NULL if out of range). */
const char *fy_multifd_compression_name(FyMultifdCompression c);
/* Parse a QMP name; -1 if unknown. */
int fy_multifd_compression_parse(const char *name);

/* True when len bytes at buf are all zero. Exits at the first non-zero
 * 64-byte run; all-zero memory is read with the widest vectors the CPU has
 * (AVX-512, AVX2 or SSE2, chosen once by the loader). For the RAM code too. */
bool fy_multifd_buffer_is_zero(const void *buf, size_t len);

/* ---- handshake (MultiFDInit_t) ---- */
void fy_multifd_init_encode(uint8_t out[FY_MULTIFD_INIT_LEN],
                            const uint8_t uuid[16], uint8_t id);
/* Check magic, version, uuid == expected_uuid and id < channels. Returns the
 * channel id, or -1 with *errp naming the field. */
int fy_multifd_init_decode(const uint8_t in[FY_MULTIFD_INIT_LEN],
                           const uint8_t expected_uuid[16], int channels,
                           FyError **errp);
/* Read and check the handshake from c. prefix/prefix_len: bytes of it the
 * caller already read (to tell a multifd channel from the main one by its
 * first 4 bytes); at most FY_MULTIFD_INIT_LEN. Returns the id or -1. */
int fy_multifd_read_init(FyChannel *c, const void *prefix, size_t prefix_len,
                         const uint8_t expected_uuid[16], int channels,
                         FyError **errp);
int fy_multifd_write_init(FyChannel *c, const uint8_t uuid[16], uint8_t id,
                          FyError **errp);
/* True if 4 bytes start a multifd channel (MULTIFD_MAGIC, big-endian). */
bool fy_multifd_is_multifd_magic(const uint8_t first4[4]);

/* ---- packets (MultiFDPacket_t) ---- */
typedef struct FyMultifdPacket {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t pages_alloc;
    uint32_t normal_pages;
    uint32_t next_packet_size;
    uint64_t packet_num;
    uint32_t zero_pages;
    char ramblock[256];
    uint64_t offset[FY_MULTIFD_PAGES_PER_PACKET]; /* normal, then zero */
} FyMultifdPacket;

/* Exactly the bytes QEMU would send for p, except that offset slots past
 * normal_pages + zero_pages and the unused fields are written as zero, and
 * ramblock is zero-padded after its NUL. Counts above the offset array are
 * clamped when writing offsets (the counts themselves are written as is). */
void fy_multifd_packet_encode(const FyMultifdPacket *p,
                              uint8_t out[FY_MULTIFD_PACKET_LEN]);
/* Bytes to fields, no checks (ramblock is copied raw, maybe unterminated). */
void fy_multifd_packet_decode(const uint8_t in[FY_MULTIFD_PACKET_LEN],
                              FyMultifdPacket *p);

/* What a destination checks a packet against. */
typedef struct FyMultifdCheck {
    FyMultifdCompression compression;
    const FyRamList *ram;
} FyMultifdCheck;

/* Validate a decoded packet: magic, version, flags (no unknown bits, no
 * device state, compression bits equal to ours when it carries pages),
 * pages_alloc <= 128, normal_pages <= pages_alloc, zero_pages <=
 * pages_alloc - normal_pages, next_packet_size when there are normal
 * pages (nocomp: exactly normal_pages pages; compressed: 1 to
 * FY_MULTIFD_COMPRESSED_MAX; without normal pages nothing follows and the
 * field is ignored, as QEMU does: 7.2 leaves a stale value in SYNC
 * packets), and when it carries pages: ramblock
 * NUL-terminated and a block of ram, every offset page-aligned and inside
 * used_length. *block is that block (NULL for a packet without pages).
 * Messages name the field: "field 'zero_pages' = 9 exceeds ...". */
int fy_multifd_packet_check(const FyMultifdPacket *p, const FyMultifdCheck *chk,
                            FyRamBlock **block, FyError **errp);

/* ---- statistics ---- */
/* Counters of one side, summed over channels; each read atomically. */
typedef struct FyMultifdStats {
    uint64_t bytes;        /* on the multifd channels: handshakes, packets,
                              payload (query-migrate's multifd-bytes) */
    uint64_t packets;      /* including SYNC packets */
    uint64_t normal_pages; /* pages whose contents travelled */
    uint64_t zero_pages;   /* pages sent/received as zero offsets */
    uint64_t syncs;        /* completed sync rounds */
    uint64_t zero_skipped; /* destination: zero pages that were already zero */
    uint64_t zero_copy_sends;  /* source: MSG_ZEROCOPY sendmsg calls */
    uint64_t zero_copy_copied; /* ... that the kernel copied anyway (QEMU's
                                  dirty-sync-missed-zero-copy counts these) */
} FyMultifdStats;

/* ---- source ---- */
typedef struct FyMultifdSendConfig {
    int channels;                     /* 1..255 (QEMU default 2) */
    FyMultifdCompression compression;
    int zlib_level;                   /* 0..9 (default 1) */
    int zstd_level;                   /* 0..20 (default 1) */
    FyMultifdZeroDetect zero_detect;  /* default multifd */
    /* zero-copy-send: pages leave with MSG_ZEROCOPY straight from guest
     * memory (tcp channels only, compression none); completions are
     * collected as they come and waited for at every sync, as QEMU does. */
    bool zero_copy;
    FyMultifdWire wire;
    uint8_t uuid[16];                 /* our qemu_uuid (zero if none) */
} FyMultifdSendConfig;

/* QEMU's defaults: 2 channels, none, levels 1, zero detection multifd,
 * no zero copy, current wire, zero uuid. */
void fy_multifd_send_config_init(FyMultifdSendConfig *cfg);

typedef struct FyMultifdSend FyMultifdSend;

/* Start one send thread per channel; each first writes its handshake
 * (channel i gets id i). chans[0..channels) are connected channels; on
 * success the object owns them and closes them in free(); on failure they
 * stay the caller's. */
FyMultifdSend *fy_multifd_send_new(const FyMultifdSendConfig *cfg,
                                   FyChannel *const *chans, FyError **errp);

/* Producer side: called by ONE thread (the RAM sender), in any order.
 *
 * Queue a page of rb (offset page-aligned, inside used_length). Pages
 * collect into a batch that goes to the next idle channel when it holds
 * 128 pages or the block changes; when every channel is busy this waits.
 * The page is read by a send thread later, straight from rb->host (no
 * copy): rb must stay mapped until the next sync. A page may be queued at
 * most ONCE between two syncs: two copies could go on two channels and
 * land in either order. The dirty bitmap gives that if the RAM sender
 * syncs multifd (and puts MULTIFD_FLUSH) between a dirty-bitmap sync and
 * queueing a page it already queued since the last multifd sync. The
 * guest may write the page meanwhile: then it is dirty again and goes in a
 * later round. Returns 0, or -1 with the object's first error. */
int fy_multifd_queue_page(FyMultifdSend *s, FyRamBlock *rb, uint64_t offset,
                          FyError **errp);
/* The same for n pages of one block. */
int fy_multifd_queue_pages(FyMultifdSend *s, FyRamBlock *rb,
                           const uint64_t *offsets, size_t n, FyError **errp);
/* A page the caller knows is all zero (e.g. a memfd hole it never wrote):
 * it travels as a zero offset of a packet and is never read, so a hole is
 * not faulted in on the source. Needs zero-page-detection multifd (the
 * only mode where packets carry zero pages); the same rules as
 * fy_multifd_queue_page otherwise. */
int fy_multifd_queue_zero_page(FyMultifdSend *s, FyRamBlock *rb,
                               uint64_t offset, FyError **errp);
/* Hand the partly filled batch to a channel now. */
int fy_multifd_send_flush(FyMultifdSend *s, FyError **errp);
/* Flush, then have every channel send a SYNC packet after its queued
 * pages, and wait until all are written (with zero copy: and completed).
 * The caller then puts RAM_SAVE_FLAG_MULTIFD_FLUSH on the main stream. */
int fy_multifd_send_sync(FyMultifdSend *s, FyError **errp);

/* Fail the object with "why" (if it has not failed yet) and shut every
 * channel down: for cancel and yank. Any thread. */
void fy_multifd_send_cancel(FyMultifdSend *s, const char *why);
/* 0, or -1 with a copy of the first error. Any thread. */
int fy_multifd_send_check(FyMultifdSend *s, FyError **errp);
void fy_multifd_send_get_stats(FyMultifdSend *s, FyMultifdStats *out);
/* Stop the threads and close the channels. Pages queued since the last
 * sync may be dropped: sync first. NULL is a no-op. */
void fy_multifd_send_free(FyMultifdSend *s);

/* ---- destination ---- */
/* Optional calls from the receive threads (several at once, so they must
 * be thread-safe), to let the RAM loader skip work and keep its maps. */
typedef struct FyMultifdRecvHooks {
    /* True if the page is known to be all zero here (e.g. never written
     * since the destination RAM was created): a zero page then costs
     * neither a read nor a fault. Without it the page is read, and written
     * only if it is not zero already. */
    bool (*page_known_zero)(void *opaque, FyRamBlock *rb, uint64_t offset);
    /* After a packet's pages are in place. */
    void (*pages_done)(void *opaque, FyRamBlock *rb,
                       const uint64_t *normal, uint32_t n_normal,
                       const uint64_t *zero, uint32_t n_zero);
    /* Once, when the object fails (a channel's error, or a cancel), from
     * the thread that failed it, with the object's lock held: it must only
     * wake others up (e.g. shut the main channel down so the main loader
     * returns), never call back into this object. */
    void (*failed)(void *opaque);
    void *opaque;
} FyMultifdRecvHooks;

typedef struct FyMultifdRecvConfig {
    int channels;                     /* 1..255, as the source */
    FyMultifdCompression compression; /* as the source */
    uint8_t uuid[16];                 /* our qemu_uuid: the source's must match */
    const FyRamList *ram;             /* packets name blocks of this list; it
                                         must not change while receiving */
    FyMultifdRecvHooks hooks;
    /* Threads read no packet until fy_multifd_recv_enable(): the RAM
     * loader enables them once its maps are ready (default false: at once). */
    bool start_disabled;
} FyMultifdRecvConfig;

void fy_multifd_recv_config_init(FyMultifdRecvConfig *cfg);

typedef struct FyMultifdRecv FyMultifdRecv;

FyMultifdRecv *fy_multifd_recv_new(const FyMultifdRecvConfig *cfg,
                                   FyError **errp);
/* A channel whose handshake said `id` (read with fy_multifd_read_init):
 * start its receive thread. Channels may come in any order. On success
 * the object owns c; on failure (id out of range or already connected) c
 * stays the caller's. */
int fy_multifd_recv_add_channel(FyMultifdRecv *r, FyChannel *c, int id,
                                FyError **errp);
/* fy_multifd_read_init (with the optional prefix) + add_channel. Returns
 * the id or -1. */
int fy_multifd_recv_new_channel(FyMultifdRecv *r, FyChannel *c,
                                const void *prefix, size_t prefix_len,
                                FyError **errp);
bool fy_multifd_recv_all_channels_created(FyMultifdRecv *r);
/* With start_disabled: let the threads read packets from now on. */
void fy_multifd_recv_enable(FyMultifdRecv *r);

/* The main loader met RAM_SAVE_FLAG_MULTIFD_FLUSH: wait until every
 * channel (also those not connected yet) has received its SYNC, i.e.
 * every page sent before the source's sync is in place, then let the
 * channels go on. Returns -1 with the first error if a channel failed, or
 * ended, or the object was cancelled. */
int fy_multifd_recv_sync(FyMultifdRecv *r, FyError **errp);

void fy_multifd_recv_cancel(FyMultifdRecv *r, const char *why);
int fy_multifd_recv_check(FyMultifdRecv *r, FyError **errp);
void fy_multifd_recv_get_stats(FyMultifdRecv *r, FyMultifdStats *out);
/* Shut the channels down, join the threads, close the channels. */
void fy_multifd_recv_free(FyMultifdRecv *r);

#endif
