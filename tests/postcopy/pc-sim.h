/*
 * pc-sim.h: a postcopy migration in miniature, for the tests and the
 * benchmark: the real destination (FyPostcopyDest with real userfaultfd)
 * against a simulated source over real socketpairs.
 *
 *   destination                               simulated source
 *   fault thread --request_fn: REQ_PAGES(_ID)--> rp reader -> FyPostcopyReqQueue
 *   loader(s)   <--RAM records (PAGE/ZERO/EOS)-- sender: queue first, then
 *                                                 the background scan
 *   (preempt: a second channel; a preempt sender serves the queue on it
 *    and the main sender only streams background pages)
 *
 * The wire is QEMU's: return-path messages `be16 type, be16 len, payload`
 * with the library's REQ_PAGES encoder, and RAM records `be64 offset|flags
 * [, u8 n + name]` then 4096 bytes (PAGE) or one 0 byte (ZERO). The
 * source's RAM is pc_fill_page(); its background "to send" bitmap persists
 * across a break, and recovery replaces it with the complement of the
 * destination's received bitmap, as QEMU does.
 */
#ifndef PC_SIM_H
#define PC_SIM_H

#include <pthread.h>
#include <signal.h>

#include "ferry/channel.h"
#include "ferry/ram.h"
#include "ferry/stream.h"
#include "pc-test.h"
#include "ram/bitmap.h"

typedef struct PcSim {
    FyRamList *ram;
    FyPostcopyDest *d;
    bool background, preempt;
    int delay_ms;                 /* before serving each request */
    int fail_requests;            /* request_fn fails this many times */

    pthread_mutex_t lock;         /* rp_out, err */
    FyStream *rp_out, *rp_in;     /* dest -> source */
    FyStream *pg_out, *pg_in;     /* source -> dest, main channel */
    FyStream *pp_out, *pp_in;     /* source -> dest, preempt channel */
    FyPostcopyReqEncoder enc;
    FyError *err;

    FyPostcopyReqQueue *q;
    unsigned long *to_send[FY_RAMBLOCK_MAX];
    uint64_t cursor_blk, cursor_page;
    bool stop;
    uint64_t requests_seen;       /* atomic */
    uint64_t bg_sent;             /* atomic */
    pthread_t rp_th, send_th, preempt_th, load_th, pload_th;
    bool running;
} PcSim;

static inline void sim_set_err(PcSim *s, FyError *e, const char *where)
{
    if (!e)
        return;
    fy_error_prepend(&e, "%s: ", where);
    pthread_mutex_lock(&s->lock);
    fy_error_propagate(&s->err, e);
    pthread_mutex_unlock(&s->lock);
}

/* ---- destination side ---- */

static inline int sim_request(void *opaque, const char *idstr, uint64_t off,
                              uint64_t len)
{
    PcSim *s = opaque;
    uint8_t buf[FY_POSTCOPY_REQ_MAX];
    uint16_t type;
    int ok = -1;
    pthread_mutex_lock(&s->lock);
    if (s->fail_requests > 0) {
        s->fail_requests--;
    } else if (s->rp_out && !fy_stream_error(s->rp_out)) {
        int n = fy_postcopy_encode_req_pages(&s->enc, idstr, off, (uint32_t)len, buf,
                                             &type);
        fy_put_be16(s->rp_out, type);
        fy_put_be16(s->rp_out, (uint16_t)n);
        fy_put_buffer(s->rp_out, buf, (size_t)n);
        fy_stream_flush(s->rp_out);
        ok = fy_stream_error(s->rp_out) ? -1 : 0;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static inline int sim_block_index(FyRamList *ram, const FyRamBlock *rb)
{
    for (int i = 0; i < ram->count; i++)
        if (ram->blocks[i] == rb)
            return i;
    return -1;
}

/* Read RAM records until EOS or the end of the connection. */
static inline void sim_load(PcSim *s, FyStream *f)
{
    uint8_t *page = malloc(FY_TARGET_PAGE_SIZE);
    FyRamBlock *rb = NULL;
    FyError *err = NULL;
    for (;;) {
        uint64_t addr = fy_get_be64(f);
        if (fy_stream_error(f))
            break;   /* the connection broke: the caller pauses */
        unsigned flags = (unsigned)(addr & (FY_TARGET_PAGE_SIZE - 1));
        uint64_t off = addr & ~(uint64_t)(FY_TARGET_PAGE_SIZE - 1);
        if (flags & RAM_SAVE_FLAG_EOS)
            break;
        if (!(flags & RAM_SAVE_FLAG_CONTINUE)) {
            char id[256];
            if (fy_get_counted_string(f, id) < 0)
                break;
            rb = fy_ram_list_find(s->ram, id);
        }
        if (!rb) {
            fy_error_setg(&err, "record for an unknown block");
            break;
        }
        if (flags & RAM_SAVE_FLAG_ZERO) {
            fy_get_byte(f);
            if (fy_stream_error(f) ||
                fy_postcopy_dest_place_zero_page(s->d, rb, off, &err) < 0)
                break;
        } else {
            fy_get_buffer(f, page, FY_TARGET_PAGE_SIZE);
            if (fy_stream_error(f) ||
                fy_postcopy_dest_place_page(s->d, rb, off, page, &err) < 0)
                break;
        }
    }
    free(page);
    sim_set_err(s, err, "destination loader");
}

static inline void *sim_load_main(void *opaque)
{
    PcSim *s = opaque;
    sim_load(s, s->pg_in);
    return NULL;
}

static inline void *sim_load_preempt(void *opaque)
{
    PcSim *s = opaque;
    sim_load(s, s->pp_in);
    return NULL;
}

/* ---- source side ---- */

static inline void *sim_rp_reader(void *opaque)
{
    PcSim *s = opaque;
    uint8_t buf[512];
    FyError *err = NULL;
    for (;;) {
        uint16_t type = fy_get_be16(s->rp_in);
        uint16_t len = fy_get_be16(s->rp_in);
        if (fy_stream_error(s->rp_in))
            break;
        if (len > sizeof(buf)) {
            fy_error_setg(&err, "return path message of %u bytes", len);
            break;
        }
        fy_get_buffer(s->rp_in, buf, len);
        if (fy_stream_error(s->rp_in))
            break;
        if (fy_postcopy_req_queue_push_rp(s->q, type, buf, len, &err) < 0)
            break;
        __atomic_fetch_add(&s->requests_seen, 1, __ATOMIC_RELAXED);
    }
    sim_set_err(s, err, "source return path");
    return NULL;
}

typedef struct SimOut {
    FyStream *f;
    FyRamBlock *last;
    uint8_t page[FY_TARGET_PAGE_SIZE];
} SimOut;

static inline bool sim_take_bit(unsigned long *map, uint64_t bit)
{
    unsigned long m = 1ul << (bit % FY_BITS_PER_LONG);
    return __atomic_fetch_and(&map[bit / FY_BITS_PER_LONG], ~m, __ATOMIC_SEQ_CST) & m;
}

static inline void sim_put_page(PcSim *s, SimOut *o, int blk, uint64_t page)
{
    FyRamBlock *rb = s->ram->blocks[blk];
    bool zero = pc_page_is_zero(blk, page);
    uint64_t hdr = (page << FY_TARGET_PAGE_BITS) |
                   (zero ? RAM_SAVE_FLAG_ZERO : RAM_SAVE_FLAG_PAGE);
    if (rb == o->last) {
        fy_put_be64(o->f, hdr | RAM_SAVE_FLAG_CONTINUE);
    } else {
        fy_put_be64(o->f, hdr);
        fy_put_counted_string(o->f, rb->idstr);
        o->last = rb;
    }
    if (zero) {
        fy_put_byte(o->f, 0);
    } else {
        pc_fill_page(o->page, blk, page);
        fy_put_buffer(o->f, o->page, FY_TARGET_PAGE_SIZE);
    }
}

static inline void sim_serve(PcSim *s, SimOut *o, const FyPostcopyReq *r)
{
    int blk = sim_block_index(s->ram, r->rb);
    if (s->delay_ms)
        pc_sleep_ms(s->delay_ms);
    for (uint64_t p = r->offset >> 12; p < (r->offset + r->len) >> 12; p++) {
        sim_take_bit(s->to_send[blk], p);
        sim_put_page(s, o, blk, p);
    }
    fy_stream_flush(o->f);
}

/* Next background page, or false when every page went. */
static inline bool sim_next_bg(PcSim *s, int *blk, uint64_t *page)
{
    while (s->cursor_blk < (uint64_t)s->ram->count) {
        int b = (int)s->cursor_blk;
        uint64_t n = s->ram->blocks[b]->used_length >> 12;
        uint64_t p = fy_find_next_bit(s->to_send[b], n, s->cursor_page);
        if (p < n) {
            s->cursor_page = p + 1;
            if (!sim_take_bit(s->to_send[b], p))
                continue;   /* a request took it */
            *blk = b;
            *page = p;
            return true;
        }
        s->cursor_blk++;
        s->cursor_page = 0;
    }
    return false;
}

static inline bool sim_stopping(PcSim *s)
{
    return __atomic_load_n(&s->stop, __ATOMIC_ACQUIRE);
}

static inline void *sim_sender(void *opaque)
{
    PcSim *s = opaque;
    SimOut *o = calloc(1, sizeof(*o));
    o->f = s->pg_out;
    int since_flush = 0;
    while (!sim_stopping(s) && !fy_stream_error(o->f)) {
        FyPostcopyReq r;
        if (!s->preempt && fy_postcopy_req_queue_pop(s->q, &r)) {
            sim_serve(s, o, &r);
            since_flush = 0;
            continue;
        }
        int blk;
        uint64_t page;
        if (s->background && sim_next_bg(s, &blk, &page)) {
            sim_put_page(s, o, blk, page);
            __atomic_fetch_add(&s->bg_sent, 1, __ATOMIC_RELAXED);
            if (++since_flush == 16) {
                fy_stream_flush(o->f);
                since_flush = 0;
            }
            continue;
        }
        fy_stream_flush(o->f);
        if (s->preempt)
            pc_sleep_ms(2);
        else
            fy_postcopy_req_queue_wait(s->q, 10);
    }
    fy_put_be64(o->f, RAM_SAVE_FLAG_EOS);
    fy_stream_flush(o->f);
    free(o);
    return NULL;
}

static inline void *sim_preempt_sender(void *opaque)
{
    PcSim *s = opaque;
    SimOut *o = calloc(1, sizeof(*o));
    o->f = s->pp_out;
    while (!sim_stopping(s) && !fy_stream_error(o->f)) {
        FyPostcopyReq r;
        if (fy_postcopy_req_queue_pop(s->q, &r))
            sim_serve(s, o, &r);
        else
            fy_postcopy_req_queue_wait(s->q, 10);
    }
    fy_put_be64(o->f, RAM_SAVE_FLAG_EOS);
    fy_stream_flush(o->f);
    free(o);
    return NULL;
}

/* ---- life cycle ---- */

static inline int sim_pair(FyStream **out, FyStream **in)
{
    FyChannel *a, *b;
    *out = *in = NULL;
    if (fy_channel_socketpair(&a, &b, NULL) < 0)
        return -1;
    *out = fy_stream_new_output(a, true);
    *in = fy_stream_new_input(b, true);
    return 0;
}

/* The source's RAM to send: every page (precopy pages are sent again in
 * the background, as QEMU resends nothing it sent -- close enough: the
 * destination answers EEXIST). */
static inline int sim_init(PcSim *s, FyRamList *ram, FyPostcopyDest **d)
{
    memset(s, 0, sizeof(*s));
    signal(SIGPIPE, SIG_IGN);
    s->ram = ram;
    pthread_mutex_init(&s->lock, NULL);
    s->q = fy_postcopy_req_queue_new(ram, 1024);
    for (int i = 0; i < ram->count; i++) {
        uint64_t n = ram->blocks[i]->used_length >> 12;
        s->to_send[i] = fy_bitmap_new(n);
        fy_bitmap_fill(s->to_send[i], n);
    }
    s->d = fy_postcopy_dest_new(ram, sim_request, s);
    *d = s->d;
    return s->d ? 0 : -1;
}

/* Connect (again, after a break): fresh socketpairs, and a REQ_PAGES
 * encoder that names its first block. */
static inline void sim_connect(PcSim *s)
{
    FyStream *rp_out = NULL;
    sim_pair(&rp_out, &s->rp_in);
    sim_pair(&s->pg_out, &s->pg_in);
    if (s->preempt)
        sim_pair(&s->pp_out, &s->pp_in);
    pthread_mutex_lock(&s->lock);
    s->rp_out = rp_out;
    fy_postcopy_req_encoder_reset(&s->enc);
    pthread_mutex_unlock(&s->lock);
}

static inline void sim_run(PcSim *s)
{
    s->stop = false;
    s->cursor_blk = s->cursor_page = 0;
    pthread_create(&s->rp_th, NULL, sim_rp_reader, s);
    pthread_create(&s->load_th, NULL, sim_load_main, s);
    pthread_create(&s->send_th, NULL, sim_sender, s);
    if (s->preempt) {
        pthread_create(&s->pload_th, NULL, sim_load_preempt, s);
        pthread_create(&s->preempt_th, NULL, sim_preempt_sender, s);
    }
    s->running = true;
}

static inline void sim_start(PcSim *s)
{
    sim_connect(s);
    sim_run(s);
}

static inline void sim_join_close(PcSim *s)
{
    pthread_join(s->send_th, NULL);
    pthread_join(s->load_th, NULL);
    if (s->preempt) {
        pthread_join(s->preempt_th, NULL);
        pthread_join(s->pload_th, NULL);
    }
    pthread_mutex_lock(&s->lock);
    FyStream *rp_out = s->rp_out;
    s->rp_out = NULL;
    pthread_mutex_unlock(&s->lock);
    fy_channel_shutdown(fy_stream_channel(rp_out), FY_SHUTDOWN_BOTH, NULL);
    pthread_join(s->rp_th, NULL);
    fy_stream_close(rp_out, NULL);
    fy_stream_close(s->rp_in, NULL);
    fy_stream_close(s->pg_out, NULL);
    fy_stream_close(s->pg_in, NULL);
    fy_stream_close(s->pp_out, NULL);
    fy_stream_close(s->pp_in, NULL);
    s->rp_in = s->pg_out = s->pg_in = s->pp_out = s->pp_in = NULL;
    s->running = false;
}

/* Orderly end: EOS on every channel, loaders return, return path closed. */
static inline void sim_finish(PcSim *s)
{
    if (!s->running)
        return;
    __atomic_store_n(&s->stop, true, __ATOMIC_RELEASE);
    fy_postcopy_req_queue_shutdown(s->q);
    sim_join_close(s);
    fy_postcopy_req_queue_reset(s->q);
}

/* The connection breaks: every socket is shut down under the threads'
 * feet; the destination pauses as an integrator would on the error. */
static inline void sim_break(PcSim *s)
{
    fy_postcopy_dest_pause(s->d);
    __atomic_store_n(&s->stop, true, __ATOMIC_RELEASE);
    fy_postcopy_req_queue_shutdown(s->q);
    FyStream *all[] = { s->rp_in, s->pg_out, s->pg_in, s->pp_out, s->pp_in };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (all[i])
            fy_channel_shutdown(fy_stream_channel(all[i]), FY_SHUTDOWN_BOTH, NULL);
    sim_join_close(s);
    /* The source forgets its queue: the destination will ask again. */
    fy_postcopy_req_queue_reset(s->q);
}

static inline void sim_fini(PcSim *s)
{
    sim_finish(s);
    fy_postcopy_dest_free(s->d);
    fy_postcopy_req_queue_free(s->q);
    for (int i = 0; i < FY_RAMBLOCK_MAX; i++)
        free(s->to_send[i]);
    fy_error_free(s->err);
    pthread_mutex_destroy(&s->lock);
}

/* Every page of every block equals the source's. Returns mismatches. */
static inline int sim_verify_all(FyRamList *ram)
{
    uint8_t expect[FY_TARGET_PAGE_SIZE];
    int bad = 0;
    for (int b = 0; b < ram->count; b++) {
        uint64_t n = ram->blocks[b]->used_length >> 12;
        for (uint64_t p = 0; p < n; p++) {
            pc_fill_page(expect, b, p);
            if (memcmp(ram->blocks[b]->host + (p << 12), expect, sizeof(expect)))
                bad++;
        }
    }
    return bad;
}

/* Wait until the destination has every page (or timeout). */
static inline bool sim_wait_complete(PcSim *s, int timeout_ms)
{
    for (int i = 0; i < timeout_ms; i++) {
        if (fy_postcopy_dest_pages_remaining(s->d) == 0)
            return true;
        pc_sleep_ms(1);
    }
    return false;
}

#endif
