/*
 * test_postcopy_queue.c: the source's page request queue -- validation of
 * what the destination asks for, order, bounds, waiting, and a producer
 * and a consumer thread going at it at once.
 */
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "pc-test.h"
#include "t.h"

static FyRamBlock ram_a = { .idstr = "pc.ram", .used_length = 64 << 12,
                            .page_size = 4096, .fd = -1 };
static FyRamBlock ram_b = { .idstr = "vga.vram", .used_length = 8 << 12,
                            .page_size = 4096, .fd = -1 };
static FyRamList ram = { .count = 2, .blocks = { &ram_a, &ram_b } };

static void test_validation(void)
{
    FyPostcopyReqQueue *q = fy_postcopy_req_queue_new(&ram, 16);
    FyError *err = NULL;

    T_EQ_INT(fy_postcopy_req_queue_push(q, NULL, 0, 4096, &err), -1);
    T_CONTAINS(fy_error_msg(err), "without a RAM block: no earlier request");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_req_queue_push(q, "nope", 0, 4096, &err), -1);
    T_CONTAINS(fy_error_msg(err), "unknown RAM block 'nope'");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", 100, 4096, &err), -1);
    T_CONTAINS(fy_error_msg(err), "'pc.ram' start 0x64 length 0x1000 is not aligned");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", 0, 100, &err), -1);
    T_CONTAINS(fy_error_msg(err), "not aligned");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", 0, 0, &err), -1);
    T_CONTAINS(fy_error_msg(err), "is empty");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", 64 << 12, 4096, &err), -1);
    T_CONTAINS(fy_error_msg(err), "runs past the end of the block (0x40000 bytes)");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", 63 << 12, 8192, &err), -1);
    T_CONTAINS(fy_error_msg(err), "runs past the end");
    fy_error_clear(&err);
    /* start + len wraps around 2^64 */
    T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", 4096, 0xfffffffffffff000ull, &err),
             -1);
    T_CONTAINS(fy_error_msg(err), "runs past the end");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_req_queue_len(q), 0);
    T_ASSERT(fy_postcopy_req_queue_empty(q));

    /* Whole block is fine; REQ_PAGES then means the same block. */
    T_EQ_INT(fy_postcopy_req_queue_push(q, "vga.vram", 0, 8 << 12, &err), 0);
    T_EQ_INT(fy_postcopy_req_queue_push(q, NULL, 4096, 4096, &err), 0);
    T_EQ_INT(fy_postcopy_req_queue_push(q, NULL, 8 << 12, 4096, &err), -1);
    T_CONTAINS(fy_error_msg(err), "'vga.vram' start 0x8000");
    fy_error_clear(&err);
    FyPostcopyReq r;
    T_ASSERT(fy_postcopy_req_queue_pop(q, &r));
    T_ASSERT(r.rb == &ram_b && r.offset == 0 && r.len == 8 << 12);
    T_ASSERT(fy_postcopy_req_queue_pop(q, &r));
    T_ASSERT(r.rb == &ram_b && r.offset == 4096 && r.len == 4096);
    T_ASSERT(!fy_postcopy_req_queue_pop(q, &r));
    T_EQ_INT(fy_postcopy_req_queue_total(q), 2);
    fy_postcopy_req_queue_free(q);
}

static void test_order_and_bound(void)
{
    FyPostcopyReqQueue *q = fy_postcopy_req_queue_new(&ram, 4);
    FyError *err = NULL;
    FyPostcopyReq r;
    /* Wrap the ring a few times. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++)
            T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", (uint64_t)(i + round) << 12,
                                                4096, &err), 0);
        T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", 0, 4096, &err), -1);
        T_CONTAINS(fy_error_msg(err), "the queue is full (4 requests not yet served)");
        fy_error_clear(&err);
        T_EQ_INT(fy_postcopy_req_queue_len(q), 4);
        for (int i = 0; i < 3; i++) {
            T_ASSERT(fy_postcopy_req_queue_pop(q, &r));
            T_EQ_INT(r.offset, (uint64_t)(i + round) << 12);
        }
        T_ASSERT(fy_postcopy_req_queue_pop(q, &r));
    }
    T_ASSERT(!fy_postcopy_req_queue_pop(q, &r));

    /* reset forgets the previous block and every request. */
    T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", 0, 4096, &err), 0);
    fy_postcopy_req_queue_reset(q);
    T_EQ_INT(fy_postcopy_req_queue_len(q), 0);
    T_EQ_INT(fy_postcopy_req_queue_push(q, NULL, 0, 4096, &err), -1);
    fy_error_clear(&err);
    fy_postcopy_req_queue_free(q);
}

static void test_push_rp(void)
{
    FyPostcopyReqQueue *q = fy_postcopy_req_queue_new(&ram, 8);
    FyPostcopyReqEncoder e;
    uint8_t buf[FY_POSTCOPY_REQ_MAX];
    uint16_t type;
    FyError *err = NULL;
    FyPostcopyReq r;

    fy_postcopy_req_encoder_reset(&e);
    int n = fy_postcopy_encode_req_pages(&e, "vga.vram", 3 << 12, 4096, buf, &type);
    T_EQ_INT(fy_postcopy_req_queue_push_rp(q, type, buf, (size_t)n, &err), 0);
    n = fy_postcopy_encode_req_pages(&e, "vga.vram", 5 << 12, 4096, buf, &type);
    T_EQ_INT(type, FY_RP_MSG_REQ_PAGES);
    T_EQ_INT(fy_postcopy_req_queue_push_rp(q, type, buf, (size_t)n, &err), 0);
    T_ASSERT(fy_postcopy_req_queue_pop(q, &r) && r.rb == &ram_b && r.offset == 3 << 12);
    T_ASSERT(fy_postcopy_req_queue_pop(q, &r) && r.rb == &ram_b && r.offset == 5 << 12);

    /* A malformed message is refused with the decoder's words. */
    T_EQ_INT(fy_postcopy_req_queue_push_rp(q, FY_RP_MSG_REQ_PAGES, buf, 11, &err), -1);
    T_CONTAINS(fy_error_msg(err), "REQ_PAGES: length 11");
    fy_error_clear(&err);
    /* A well-formed request for a block that does not exist. */
    fy_postcopy_req_encoder_reset(&e);
    n = fy_postcopy_encode_req_pages(&e, "ghost", 0, 4096, buf, &type);
    T_EQ_INT(fy_postcopy_req_queue_push_rp(q, type, buf, (size_t)n, &err), -1);
    T_CONTAINS(fy_error_msg(err), "unknown RAM block 'ghost'");
    fy_error_clear(&err);
    fy_postcopy_req_queue_free(q);
}

typedef struct {
    FyPostcopyReqQueue *q;
    int n;
    int errors;
} Producer;

static void *producer(void *opaque)
{
    Producer *p = opaque;
    for (int i = 0; i < p->n; i++) {
        FyError *err = NULL;
        while (fy_postcopy_req_queue_len(p->q) >= 32)
            sched_yield();
        if (fy_postcopy_req_queue_push(p->q, "pc.ram", (uint64_t)(i % 64) << 12, 4096,
                                       &err) < 0) {
            p->errors++;
            fy_error_free(err);
        }
    }
    return NULL;
}

static void test_threads_and_wait(void)
{
    FyPostcopyReqQueue *q = fy_postcopy_req_queue_new(&ram, 64);
    FyPostcopyReq r;

    /* Timeout with nothing queued. */
    uint64_t t0 = pc_now_ns();
    T_ASSERT(!fy_postcopy_req_queue_wait(q, 30));
    T_ASSERT(pc_now_ns() - t0 >= 25000000ull);

    Producer p = { .q = q, .n = 20000 };
    pthread_t th;
    pthread_create(&th, NULL, producer, &p);
    int got = 0, bad_order = 0;
    while (got < p.n) {
        if (!fy_postcopy_req_queue_wait(q, 5000))
            break;
        while (fy_postcopy_req_queue_pop(q, &r)) {
            if (r.offset != (uint64_t)(got % 64) << 12)
                bad_order++;
            got++;
        }
    }
    pthread_join(th, NULL);
    T_EQ_INT(got, p.n);
    T_EQ_INT(bad_order, 0);
    T_EQ_INT(p.errors, 0);

    /* shutdown wakes a waiter for good. */
    fy_postcopy_req_queue_shutdown(q);
    t0 = pc_now_ns();
    T_ASSERT(!fy_postcopy_req_queue_wait(q, -1));
    T_ASSERT(pc_now_ns() - t0 < 1000000000ull);
    fy_postcopy_req_queue_reset(q);
    FyError *err = NULL;
    T_EQ_INT(fy_postcopy_req_queue_push(q, "pc.ram", 0, 4096, &err), 0);
    T_ASSERT(fy_postcopy_req_queue_wait(q, 0));
    fy_postcopy_req_queue_free(q);
}

int main(void)
{
    T_RUN(test_validation);
    T_RUN(test_order_and_bound);
    T_RUN(test_push_rp);
    T_RUN(test_threads_and_wait);
    return t_done();
}
