/*
 * test_postcopy_migrate.c: postcopy through the real migration engine:
 * two reference VMs (FyMachine) in one process, FyMigration on each, unix
 * sockets between them, real userfaultfd on the destination.
 *
 *   exact        the guest dirties its 16 MiB working set far faster than
 *                the 16 MiB/s link: precopy goes on pass after pass;
 *                migrate-start-postcopy; the destination (autostart off)
 *                ends with the source's RAM, devices and clock exactly,
 *                then runs on to the RAM of a VM that never migrated
 *   faults       the destination runs at once while the background stream
 *                crawls (max-postcopy-bandwidth): its vCPUs fault, the
 *                pages come by request; blocktime is reported; the result
 *                equals the never-migrated VM
 *   preempt      the same with postcopy-preempt (urgent pages on their
 *                own channel)
 *   recover      migrate-pause on the source, then on the destination,
 *                then the source again, mid-postcopy; migrate-recover +
 *                migrate resume=true each time; equal RAM at the end (with
 *                and without preempt)
 *   broken_link  the network breaks instead: a proxy between the two dies
 *                (both pause by themselves), then a second one goes silent
 *                (both wait until migrate-pause); recovered each time, equal
 *                RAM at the end (with and without preempt)
 *   source_lost  the source goes away mid-postcopy: the destination stays
 *                postcopy-paused and says why and what is missing
 *   refusals     the commands refuse what they cannot do, with QEMU's
 *                messages
 */
#include "pc-proxy.h"
#include "pc-vm.h"

typedef struct Pair {
    FyMachineConfig cfg;
    PcVm src, dst;
    char uri[128];
} Pair;

/* dst_rate: the destination's pace (pages/s, 0 = as the source). The
 * pace is not guest state: the RAM after S steps does not depend on it. */
static bool pair_init(Pair *p, bool preempt, bool autostart, uint64_t dst_rate)
{
    p->cfg = pv_config(FY_WORKLOAD_SWEEP, 32, 16, 60000);
    FyMachineConfig dc = p->cfg;
    if (dst_rate)
        dc.dirty_rate = dst_rate;
    if (!pv_init(&p->src, &p->cfg) || !pv_init(&p->dst, &dc)) {
        T_FAIL("VM setup");
        return false;
    }
    pv_cap(&p->src, "postcopy-ram", true);
    pv_cap(&p->dst, "postcopy-ram", true);
    pv_cap(&p->dst, "postcopy-blocktime", true);
    if (preempt) {
        pv_cap(&p->src, "postcopy-preempt", true);
        pv_cap(&p->dst, "postcopy-preempt", true);
    }
    fy_migration_set_autostart(p->dst.mig, autostart);
    pv_path(p->uri, sizeof(p->uri), "main");
    return true;
}

static void pair_free(Pair *p)
{
    pv_free(&p->src);
    pv_free(&p->dst);
    unlink(p->uri + 5);
}

/* Precopy that cannot converge: source running, link slower than the
 * guest dirties memory; returns once `passes` dirty syncs are done.
 * Tests that only need postcopy itself pass 1 and switch at once: a
 * precopy that converged anyway (a guest starved of CPU on a loaded host
 * dirties nothing for a while) would then leave nothing to test. */
static bool start_precopy_to(Pair *p, const char *in_uri, const char *bw,
                             int64_t passes);
static bool start_precopy(Pair *p, const char *bw, int64_t passes)
{
    return start_precopy_to(p, p->uri, bw, passes);
}

/* The destination listens at in_uri, the source connects to p->uri. */
static bool start_precopy_to(Pair *p, const char *in_uri, const char *bw,
                             int64_t passes)
{
    FyError *err = NULL;
    /* Every page of the working set written once before the migration
     * starts: the first pass has real data to carry (a fresh guest's RAM
     * is mostly never-touched zero pages, which cost nothing to send). */
    T_EQ_INT(pv_run_until(p->src.mach, 2 * (p->cfg.working_set >> 12)), 0);
    T_EQ_INT(fy_machine_start(p->src.mach, NULL), 0);
    pv_params(&p->src, bw);
    if (fy_migrate_incoming(p->dst.mig, in_uri, &err) < 0 ||
        fy_migrate(p->src.mig, p->uri, false, &err) < 0) {
        pv_err("migrate", err);
        T_FAIL("could not start the migration");
        return false;
    }
    if (!pv_wait_status(&p->src, MIGRATION_STATUS_ACTIVE, 30000))
        return false;
    for (int i = 0; i < 3000 && pv_query_int(&p->src, "ram", "dirty-sync-count") < passes; i++)
        pc_sleep_ms(10);
    T_ASSERT(pv_query_int(&p->src, "ram", "dirty-sync-count") >= passes);
    /* The working set is dirtied far faster than it can be sent. */
    T_EQ_INT(fy_migration_status(p->src.mig), MIGRATION_STATUS_ACTIVE);
    return true;
}

static void start_postcopy(Pair *p)
{
    FyError *err = NULL;
    if (fy_migrate_start_postcopy(p->src.mig, &err) < 0)
        pv_err("migrate-start-postcopy", err);
    pv_wait_status(&p->src, MIGRATION_STATUS_POSTCOPY_ACTIVE, 30000);
}

static bool wait_both(Pair *p, FyMigStatus s, int ms)
{
    bool a = pv_wait_status(&p->src, s, ms);
    bool b = pv_wait_status(&p->dst, s, ms);
    return a && b;
}

static void expect_events(Pair *p)
{
    T_ASSERT(pv_saw(&p->src, "postcopy-active"));
    T_ASSERT(pv_saw(&p->dst, "postcopy-active"));
    T_ASSERT(pv_saw(&p->src, "completed"));
    T_ASSERT(pv_saw(&p->dst, "completed"));
    pv_print_events(&p->src, "source");
    pv_print_events(&p->dst, "destination");
}

static void test_exact(void)
{
    Pair p;
    if (!pair_init(&p, false, false, 0))
        return;
    if (start_precopy(&p, "{\"max-bandwidth\": 16777216, \"downtime-limit\": 1}", 3)) {
        start_postcopy(&p);
        wait_both(&p, MIGRATION_STATUS_COMPLETED, 120000);
    }
    expect_events(&p);
    T_ASSERT(!fy_machine_is_running(p.src.mach));
    T_ASSERT(!fy_machine_is_running(p.dst.mach));
    T_ASSERT(pv_query_int(&p.src, "ram", "postcopy-bytes") > 0);

    /* Nothing ran on either side since the switch: identical VMs. */
    char ds[512], dd[512];
    pv_digests(p.src.mach, ds, sizeof(ds));
    pv_digests(p.dst.mach, dd, sizeof(dd));
    T_EQ_STR(dd, ds);
    json_t *js = fy_machine_state_json(p.src.mach);
    json_t *jd = fy_machine_state_json(p.dst.mach);
    T_ASSERT(js && jd && json_equal(js, jd));
    json_decref(js);
    json_decref(jd);
    T_EQ_INT(fy_machine_clock_ns(p.dst.mach), fy_machine_clock_ns(p.src.mach));

    FyError *err = NULL;
    T_ASSERT(fy_migration_vm_stale(p.src.mig, &err));
    T_CONTAINS(fy_error_msg(err), "stale");
    fy_error_free(err);
    err = NULL;
    /* Nor can the stale copy be migrated anywhere. */
    T_EQ_INT(fy_migrate(p.src.mig, "unix:/tmp/ferry-pc-never.sock", false, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "stale");
    fy_error_free(err);
    T_ASSERT(!fy_migration_vm_stale(p.dst.mig, NULL));
    pv_expect_reference(p.dst.mach, &p.cfg, 20000);
    pair_free(&p);
}

/* The destination runs during postcopy; its faults are served. */
static void faults(bool preempt)
{
    Pair p;
    if (!pair_init(&p, preempt, true, 0))
        return;
    pv_params(&p.src, "{\"max-postcopy-bandwidth\": 4194304}");
    if (start_precopy(&p, "{\"max-bandwidth\": 16777216, \"downtime-limit\": 1}", 1)) {
        start_postcopy(&p);
        pv_wait_status(&p.dst, MIGRATION_STATUS_POSTCOPY_ACTIVE, 30000);
        /* Blocktime is live while postcopy runs. */
        json_t *q = fy_migration_query(p.dst.mig);
        T_ASSERT(json_is_array(json_object_get(q, "postcopy-vcpu-blocktime")));
        json_decref(q);
        wait_both(&p, MIGRATION_STATUS_COMPLETED, 120000);
    }
    expect_events(&p);
    int64_t dst_faults = pv_query_int(&p.dst, "x-ferry-postcopy", "faults");
    int64_t dst_req = pv_query_int(&p.dst, "x-ferry-postcopy", "requests");
    int64_t src_req = pv_query_int(&p.src, "ram", "postcopy-requests");
    printf("# faults %" PRId64 ", requests %" PRId64 " (source served %" PRId64
           "), latency median %" PRId64 " ns p99 %" PRId64 " ns\n", dst_faults,
           dst_req, src_req,
           pv_query_int(&p.dst, "x-ferry-postcopy", "latency-median-ns"),
           pv_query_int(&p.dst, "x-ferry-postcopy", "latency-p99-ns"));
    T_ASSERT(dst_faults > 0);
    T_ASSERT(dst_req > 0);
    T_ASSERT(src_req > 0);
    T_EQ_INT(pv_query_int(&p.dst, "x-ferry-postcopy", "pages-remaining"), 0);

    json_t *q = fy_migration_query(p.dst.mig);
    json_t *vb = json_object_get(q, "postcopy-vcpu-blocktime");
    T_EQ_INT(json_array_size(vb), 2);
    T_ASSERT(json_is_integer(json_object_get(q, "postcopy-blocktime")));
    printf("# blocktime: all vCPUs %" PRId64 " ms, vCPU 0 %" PRId64
           " ms, vCPU 1 %" PRId64 " ms\n",
           (int64_t)json_integer_value(json_object_get(q, "postcopy-blocktime")),
           (int64_t)json_integer_value(json_array_get(vb, 0)),
           (int64_t)json_integer_value(json_array_get(vb, 1)));
    /* Faults were served, so the vCPUs waited some time in total. */
    T_ASSERT(json_integer_value(json_array_get(vb, 0)) +
             json_integer_value(json_array_get(vb, 1)) > 0);
    T_ASSERT(json_integer_value(json_object_get(q, "postcopy-latency")) > 0);
    json_decref(q);

    T_EQ_INT(fy_machine_stop(p.dst.mach, NULL), 0);
    pv_expect_reference(p.dst.mach, &p.cfg, 20000);
    pair_free(&p);
}

static void test_faults(void) { faults(false); }
static void test_preempt(void) { faults(true); }

/* Pause from `who`, wait until both sides are paused, recover. */
static void pause_and_recover(Pair *p, PcVm *who, const char *tag)
{
    FyError *err = NULL;
    int64_t lacks = pv_query_int(&p->dst, "x-ferry-postcopy", "pages-remaining");
    printf("# %s: the destination lacks %" PRId64 " pages\n", tag, lacks);
    /* Not done yet: the pause breaks a live postcopy. */
    T_ASSERT(lacks > 0);
    if (fy_migrate_pause(who->mig, &err) < 0)
        pv_err("migrate-pause", err);
    if (!wait_both(p, MIGRATION_STATUS_POSTCOPY_PAUSED, 30000))
        return;
    char *se = pv_query_str(&p->src, "error-desc");
    char *de = pv_query_str(&p->dst, "error-desc");
    printf("# source: %s\n# destination: %s\n", se ? se : "-", de ? de : "-");
    T_CONTAINS(se, "postcopy paused");
    T_CONTAINS(de, "still on the source");
    free(se);
    free(de);
    /* A paused source must not be cancellable, nor started again. */
    T_EQ_INT(fy_migrate_cancel(p->src.mig, NULL), -1);
    T_ASSERT(!fy_machine_is_running(p->src.mach));

    char uri[128];
    pv_path(uri, sizeof(uri), tag);
    if (fy_migrate_recover(p->dst.mig, uri, &err) < 0 ||
        fy_migrate(p->src.mig, uri, true, &err) < 0) {
        pv_err("recover", err);
        T_FAIL("could not recover");
        return;
    }
    wait_both(p, MIGRATION_STATUS_POSTCOPY_ACTIVE, 30000);
    unlink(uri + 5);
}

static void recover(bool preempt)
{
    Pair p;
    /* A slow guest there: its faults alone would not fetch the working set
     * before the interruptions. */
    if (!pair_init(&p, preempt, true, 1000))
        return;
    /* Slow enough to still be in postcopy after two interruptions. */
    pv_params(&p.src, "{\"max-postcopy-bandwidth\": 1048576}");
    if (start_precopy(&p, "{\"max-bandwidth\": 16777216, \"downtime-limit\": 1}", 1)) {
        start_postcopy(&p);
        pv_wait_status(&p.dst, MIGRATION_STATUS_POSTCOPY_ACTIVE, 30000);
        pc_sleep_ms(200);
        pause_and_recover(&p, &p.src, "r1");
        pc_sleep_ms(200);
        pause_and_recover(&p, &p.dst, "r2");
        pc_sleep_ms(100);
        pause_and_recover(&p, &p.src, "r3");
        T_ASSERT(pv_saw(&p.src, "postcopy-recover"));
        T_ASSERT(pv_saw(&p.dst, "postcopy-recover"));
        /* Let it finish at full speed (still paced, it could finish before
         * a pause at full speed would come). */
        pv_params(&p.src, "{\"max-postcopy-bandwidth\": 0}");
        wait_both(&p, MIGRATION_STATUS_COMPLETED, 120000);
    }
    expect_events(&p);
    T_EQ_INT(pv_query_int(&p.dst, "x-ferry-postcopy", "pages-remaining"), 0);
    T_EQ_INT(fy_machine_stop(p.dst.mach, NULL), 0);
    /* The destination is paced at 1000 steps/s: a few seconds on. */
    pv_expect_reference(p.dst.mach, &p.cfg, 2000);
    pair_free(&p);
}

static void test_recover(void) { recover(false); }
static void test_recover_preempt(void) { recover(true); }

/* The network breaks instead of either side pausing. First the proxy
 * between the two dies: both notice on their own and pause. A second
 * proxy carries the recovery, then goes silent (drops everything, closes
 * nothing): neither side can tell that from a slow link, so both stay
 * postcopy-active until migrate-pause on each; the last recovery is
 * direct. */
static void broken_link(bool preempt)
{
    Pair p;
    if (!pair_init(&p, preempt, true, 1000))
        return;
    /* px1 -> the destination's first listener; px2 -> its first
     * migrate-recover listener (r2); the second recovery is direct (r3). */
    PcProxy px[2];
    char via[2][128], r2[128], r3[128];
    pv_path(r2, sizeof(r2), "k2");
    pv_path(r3, sizeof(r3), "k3");
    for (int i = 0; i < 2; i++) {
        pv_path(via[i], sizeof(via[i]), i ? "px2" : "px1");
        if (!pcx_start(&px[i], via[i] + 5, i ? r2 + 5 : p.uri + 5)) {
            T_FAIL("proxy %d", i);
            pair_free(&p);
            return;
        }
    }
    pv_params(&p.src, "{\"max-postcopy-bandwidth\": 1048576}");
    /* The source connects to the proxy; the destination listens behind. */
    FyError *err = NULL;
    char direct[128];
    snprintf(direct, sizeof(direct), "%s", p.uri);
    snprintf(p.uri, sizeof(p.uri), "%s", via[0]);
    bool ok = start_precopy_to(&p, direct, "{\"max-bandwidth\": 16777216, "
                               "\"downtime-limit\": 1}", 1);
    if (ok) {
        start_postcopy(&p);
        ok = pv_wait_status(&p.dst, MIGRATION_STATUS_POSTCOPY_ACTIVE, 30000);
    }
    for (int round = 0; ok && round < 2; round++) {
        pc_sleep_ms(200);
        int64_t lacks = pv_query_int(&p.dst, "x-ferry-postcopy", "pages-remaining");
        printf("# break %d (%s): the destination lacks %" PRId64 " pages, %"
               PRIu64 " bytes went through the proxy\n", round + 1,
               round ? "link silent" : "proxy killed", lacks,
               pcx_bytes(&px[round]));
        T_ASSERT(lacks > 0);
        if (round == 0) {
            pcx_kill(&px[0]);
        } else {
            /* The link goes silent (packets dropped): no side sees an
             * error, both wait; the operator pauses each side. */
            pcx_hold(&px[1]);
            pc_sleep_ms(300);
            T_EQ_INT(fy_migration_status(p.src.mig), MIGRATION_STATUS_POSTCOPY_ACTIVE);
            T_EQ_INT(fy_migration_status(p.dst.mig), MIGRATION_STATUS_POSTCOPY_ACTIVE);
            if (fy_migrate_pause(p.src.mig, &err) < 0 ||
                fy_migrate_pause(p.dst.mig, &err) < 0) {
                pv_err("migrate-pause", err);
                err = NULL;
            }
        }
        if (!wait_both(&p, MIGRATION_STATUS_POSTCOPY_PAUSED, 30000))
            break;
        char *de = pv_query_str(&p.dst, "error-desc");
        T_CONTAINS(de, "still on the source");
        free(de);
        /* Recover: the destination listens at r2 (then r3); the source
         * goes through the second proxy, then directly. */
        const char *listen_at = round ? r3 : r2;
        const char *connect_to = round ? r3 : via[1];
        if (fy_migrate_recover(p.dst.mig, listen_at, &err) < 0 ||
            fy_migrate(p.src.mig, connect_to, true, &err) < 0) {
            pv_err("recover", err);
            err = NULL;
            T_FAIL("could not recover");
            break;
        }
        ok = wait_both(&p, MIGRATION_STATUS_POSTCOPY_ACTIVE, 30000);
    }
    pv_params(&p.src, "{\"max-postcopy-bandwidth\": 0}");
    wait_both(&p, MIGRATION_STATUS_COMPLETED, 120000);
    expect_events(&p);
    T_EQ_INT(pv_query_int(&p.dst, "x-ferry-postcopy", "pages-remaining"), 0);
    T_EQ_INT(fy_machine_stop(p.dst.mach, NULL), 0);
    pv_expect_reference(p.dst.mach, &p.cfg, 2000);
    for (int i = 0; i < 2; i++)
        pcx_free(&px[i]);
    unlink(r2 + 5);
    unlink(r3 + 5);
    unlink(direct + 5);
    pair_free(&p);
}

static void test_broken_link(void) { broken_link(false); }
static void test_broken_link_preempt(void) { broken_link(true); }

static void test_source_lost(void)
{
    Pair p;
    if (!pair_init(&p, false, true, 1000))
        return;
    pv_params(&p.src, "{\"max-postcopy-bandwidth\": 1048576}");
    if (start_precopy(&p, "{\"max-bandwidth\": 16777216, \"downtime-limit\": 1}", 1)) {
        start_postcopy(&p);
        pv_wait_status(&p.dst, MIGRATION_STATUS_POSTCOPY_ACTIVE, 30000);
        pc_sleep_ms(200);
    }
    /* The source's engine goes away, and its connection with it. */
    fy_migration_free(p.src.mig);
    p.src.mig = NULL;
    pv_wait_status(&p.dst, MIGRATION_STATUS_POSTCOPY_PAUSED, 30000);
    char *de = pv_query_str(&p.dst, "error-desc");
    printf("# destination: %s\n", de ? de : "-");
    T_CONTAINS(de, "postcopy paused");
    T_CONTAINS(de, "MiB of RAM still on the source");
    free(de);
    /* It stays paused: the guest cannot run on without its pages. */
    pc_sleep_ms(300);
    T_EQ_INT(fy_migration_status(p.dst.mig), MIGRATION_STATUS_POSTCOPY_PAUSED);
    pair_free(&p);
}

#define EXPECT_REFUSAL(call, needle)                                        \
    do {                                                                    \
        FyError *err_ = NULL;                                               \
        int r_ = (call);                                                    \
        T_EQ_INT(r_, -1);                                                   \
        T_CONTAINS(err_ ? fy_error_msg(err_) : NULL, needle);               \
        fy_error_free(err_);                                                \
    } while (0)

static void test_refusals(void)
{
    FyMachineConfig c = pv_config(FY_WORKLOAD_IDLE, 8, 0, 0);
    PcVm v;
    if (!pv_init(&v, &c)) {
        T_FAIL("VM setup");
        return;
    }
    EXPECT_REFUSAL(fy_migrate_start_postcopy(v.mig, &err_),
                   "Enable postcopy with migrate_set_capability");
    EXPECT_REFUSAL(fy_migration_set_capability(v.mig, "postcopy-preempt", true,
                                               &err_),
                   "Postcopy preempt requires postcopy-ram");
    pv_cap(&v, "postcopy-ram", true);
    EXPECT_REFUSAL(fy_migration_set_capability(v.mig, "multifd", true, &err_),
                   "not supported by ferry yet");
    EXPECT_REFUSAL(fy_migrate_start_postcopy(v.mig, &err_),
                   "after migration has been started");
    EXPECT_REFUSAL(fy_migrate_pause(v.mig, &err_),
                   "only supported during postcopy-active");
    EXPECT_REFUSAL(fy_migrate_recover(v.mig, "unix:/tmp/x.sock", &err_),
                   "only be run when postcopy is paused");
    EXPECT_REFUSAL(fy_migrate(v.mig, "unix:/tmp/x.sock", true, &err_),
                   "Cannot resume if there is no paused migration");
    pv_free(&v);
}

/* PC_ONLY=name[,name...] runs only those tests (while debugging). */
#define RUN(fn)                                                             \
    do {                                                                    \
        const char *only_ = getenv("PC_ONLY");                              \
        if (!only_ || pc_listed(only_, #fn))                                \
            T_RUN(fn);                                                      \
    } while (0)

static bool pc_listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

int main(void)
{
    RUN(test_refusals);
    RUN(test_exact);
    RUN(test_faults);
    RUN(test_preempt);
    RUN(test_recover);
    RUN(test_recover_preempt);
    RUN(test_broken_link);
    RUN(test_broken_link_preempt);
    RUN(test_source_lost);
    return t_done();
}
