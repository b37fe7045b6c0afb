/*
 * test_analyze_qemu_live: fresh streams from the QEMU on this machine.
 *
 * Runs scripts/make-qemu-fixtures.sh into a temporary directory (real QEMU,
 * paused pc and q35 guests and a running guest migrated with xbzrle), then
 * checks each new stream as the committed fixtures are checked: every
 * section decoded, --check passes, extracted pc.ram equal to QEMU's own
 * pmemsave of the guest. Skipped when QEMU (or python3, binutils) is absent;
 * `make deps-qemu` installs them.
 */
#include "analyze/analyze-test.h"

static char *dir;

static void test_fresh_streams(void)
{
    static const char *const names[] = { "qemu-pc", "qemu-q35", "qemu-xbzrle" };
    for (int i = 0; i < 3; i++) {
        char mig[4200], pm[4200];
        snprintf(mig, sizeof(mig), "%s/%s.mig", dir, names[i]);
        snprintf(pm, sizeof(pm), "%s/%s.pmem.gz", dir, names[i]);
        An *a = analyze_file(mig, NULL);
        check_all_decoded(mig, a);
        if (i == 2)
            T_ASSERT(a->ram.xbzrle > 0);
        an_free(a);
        AnOpts c = { .dump = AN_DUMP_NONE, .quiet = true, .check = true };
        a = analyze_file(mig, &c);
        T_ASSERT(!a->failed);
        an_free(a);
        check_ram_equals_pmem(mig, pm, i < 2);
    }
}

int main(void)
{
    dir = make_tmpdir();
    Run r = run_sh("'%s/scripts/make-qemu-fixtures.sh' '%s'", src_dir(), dir);
    if (r.status == 77) {
        printf("1..0 # SKIP %s", r.err);
        run_free(&r);
        rm_rf(dir);
        return 0;
    }
    if (r.status != 0) {
        printf("# make-qemu-fixtures.sh failed (%d):\n# %s\n", r.status, r.err);
        printf("not ok 1 make-qemu-fixtures\n1..1\n");
        run_free(&r);
        rm_rf(dir);
        return 1;
    }
    run_free(&r);
    T_RUN(test_fresh_streams);
    rm_rf(dir);
    free(dir);
    return t_done();
}
