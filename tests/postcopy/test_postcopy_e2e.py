#!/usr/bin/env python3
"""Postcopy end to end through `ferry run` processes, QMP and HMP, as an
operator drives it:

- a guest that dirties RAM faster than the link carries it: precopy goes on
  pass after pass; `migrate_start_postcopy` (HMP) switches;
- `migrate-pause` (QMP) on the source: both sides postcopy-paused, the
  destination says how much RAM is still on the source; migrate_cancel is
  refused; `migrate_recover` (HMP) + `migrate resume=true` (QMP) go on;
- `migrate_pause` (HMP) on the destination; `migrate-recover` (QMP) +
  `migrate -d -r` (HMP);
- completion: `info migrate` shows blocktime, the source refuses to
  migrate its stale copy, and the destination run on to a step count has
  the RAM of a VM that never migrated;
- the source process killed mid-postcopy: the destination pauses and says
  how much RAM it lacks.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "e2e"))
from ferrylib import (VM, QMPError, check, check_eq, check_in, done,  # noqa: E402
                     precopy_until, reference_digests, run, tmp_path)

CFG = dict(ram="64M", vcpus=2, workload="sweep,seed=5,wss=16M,rate=40000p")


def wait_both(a, b, status, timeout=60):
    a.wait_status(status, timeout)
    b.wait_status(status, timeout)


def paused_and_recover(src, dst, rec, how):
    wait_both(src, dst, "postcopy-paused")
    check_in("still on the source", dst.query_migrate().get("error-desc"),
             "destination error-desc")
    check_in("postcopy paused", src.query_migrate().get("error-desc"),
             "source error-desc")
    try:
        src.cmd("migrate_cancel")
        check(False, "migrate_cancel during postcopy was accepted")
    except QMPError as e:
        check_in("cannot be cancelled", e.desc, "migrate_cancel refusal")
    uri = f"unix:{tmp_path(rec)}"
    if how == "hmp-qmp":
        check_eq(dst.qmp.hmp(f"migrate_recover {uri}"), "", "migrate_recover")
        src.cmd("migrate", uri=uri, resume=True)
    else:
        dst.cmd("migrate-recover", uri=uri)
        check_eq(src.qmp.hmp(f"migrate -d -r {uri}"), "", "migrate -r")
    wait_both(src, dst, "postcopy-active")


def test_postcopy_qmp_hmp():
    dst = VM(incoming="defer", paused=True, name="dst", snapshot=False, **CFG)
    src = VM(name="src", snapshot=False, **CFG)
    dst.set_caps(postcopy_blocktime=True)
    precopy_until(src, dst, f"unix:{tmp_path('pc-main.sock')}",
                  lambda ram: ram.get("dirty-sync-count", 0) >= 3,
                  "three dirty passes", max_bandwidth=8 << 20,
                  downtime_limit=1, max_postcopy_bandwidth=1 << 20)
    check_eq(src.mig_status(), "active", "precopy does not converge")

    check_eq(src.qmp.hmp("migrate_start_postcopy"), "", "migrate_start_postcopy")
    wait_both(src, dst, "postcopy-active")

    src.cmd("migrate-pause")
    paused_and_recover(src, dst, "rec1.sock", "hmp-qmp")
    check_eq(dst.qmp.hmp("migrate_pause"), "", "migrate_pause")
    paused_and_recover(src, dst, "rec2.sock", "qmp-hmp")

    src.set_params(max_postcopy_bandwidth=0)
    src.wait_migration(want="completed")
    dst.wait_migration(want="completed")
    info = dst.qmp.hmp("info migrate")
    check_in("Postcopy Blocktime", info, "info migrate")
    check(src.query_migrate()["ram"].get("postcopy-bytes", 0) > 0,
          "postcopy-bytes")
    try:
        src.cmd("migrate", uri=f"unix:{tmp_path('again.sock')}")
        check(False, "the stale source was migrated again")
    except QMPError as e:
        check_in("stale", e.desc, "stale refusal")
    try:
        src.cmd("cont")
        check(False, "the stale source was started again")
    except QMPError as e:
        check_in("stale", e.desc, "cont refused on a stale source")
    check_eq(src.status(), "postmigrate", "the stale source stays stopped")

    n = max(dst.steps()) + 3000
    dst.run_until(n)
    check_eq(dst.digests(), reference_digests(n, **CFG),
             "destination RAM vs a VM that never migrated")
    check_eq(src.quit(), 0, "source exit status")
    check_eq(dst.quit(), 0, "destination exit status")


def test_source_killed():
    """The source process dies mid-postcopy: the destination pauses, says
    what is missing, and stays paused (its guest cannot run on without the
    pages); it still quits cleanly."""
    dst = VM(incoming="defer", name="dst", snapshot=False, **CFG)
    src = VM(name="src", snapshot=False, **CFG)
    precopy_until(src, dst, f"unix:{tmp_path('pc-killed.sock')}",
                  lambda ram: ram.get("dirty-sync-count", 0) >= 2,
                  "two dirty passes", max_bandwidth=8 << 20,
                  downtime_limit=1, max_postcopy_bandwidth=1 << 20)
    src.cmd("migrate-start-postcopy")
    wait_both(src, dst, "postcopy-active")
    src.kill()
    dst.wait_status("postcopy-paused")
    desc = dst.query_migrate().get("error-desc")
    check_in("MiB of RAM still on the source", desc, "destination error-desc")
    time.sleep(0.5)
    check_eq(dst.mig_status(), "postcopy-paused", "still paused")
    check_eq(dst.quit(), 0, "destination exit status")


if __name__ == "__main__":
    run(test_postcopy_qmp_hmp)
    run(test_source_killed)
    done()
