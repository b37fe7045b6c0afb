/*
 * test_analyze_qemu_live: fresh streams from the QEMU on this machine.
 *
 * Runs scripts/make-qemu-fixtures.sh into a temporary directory (real QEMU:
 * paused pc and q35 guests, a running guest migrated with xbzrle and, to a
 * second QEMU, with postcopy, a guest with compress and validate-uuid, one
 * with x-ignore-shared), then checks each new stream as the committed
 * fixtures are checked: every section decoded, --check passes, extracted
 * pc.ram equal to QEMU's own pmemsave of the guest. Skipped when QEMU (or
 * python3, binutils) is absent; `make deps-qemu` installs them.
 */
#include "analyze/analyze-test.h"

static char *dir;

static void test_fresh_streams(void)
{
    for (size_t i = 0; i < N_QEMU_FIXTURES; i++)
        check_qemu_fixture(dir, &qemu_fixtures[i]);
    /* what each scenario is for */
    char mig[4200];
    snprintf(mig, sizeof(mig), "%s/qemu-xbzrle.mig", dir);
    An *a = analyze_file(mig, NULL);
    T_ASSERT(a->ram.xbzrle > 0);
    an_free(a);
    json_t *desc = fixture_desc(dir, &qemu_fixtures[3]);
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .desc_override = desc };
    snprintf(mig, sizeof(mig), "%s/qemu-postcopy.mig", dir);
    a = analyze_file(mig, &o);
    T_ASSERT(a->postcopy && a->cmd_count[7] == 1 && a->cmd_count[5] == 1);
    an_free(a);
    json_decref(desc);
    snprintf(mig, sizeof(mig), "%s/qemu-compress.mig", dir);
    a = analyze_file(mig, NULL);
    T_ASSERT(a->ram.compressed > 0);
    an_free(a);
    snprintf(mig, sizeof(mig), "%s/qemu-shared.mig", dir);
    a = analyze_file(mig, NULL);
    T_ASSERT(a->cap_ignore_shared);
    an_free(a);
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
