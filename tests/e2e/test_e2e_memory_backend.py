#!/usr/bin/env python3
"""`ferry run --memory-backend ram`: guest RAM as private anonymous memory
with transparent huge pages (QEMU's memory-backend-ram) instead of memfds.

- precopy between every pairing of the two backends, with both dirty
  trackers, verified at the switchover and against a VM that never migrated
  (ferrylib.migrate_and_verify);
- postcopy into an anonymous destination (userfaultfd MISSING on private
  memory, discards by MADV_DONTNEED) with destination RAM equal to a VM
  that never migrated;
- the local handover (mode cpr-transfer) refused on an anonymous source,
  naming the block, with the source still running;
- file:PATH: the file is the guest's RAM, in both directions, and migrates;
- a bad backend name or a missing file refused at the command line.
"""
from ferrylib import (VM, QMPError, check, check_eq, check_in, done, ferry,
                      migrate_and_verify, precopy_until, reference_digests, run,
                      tmp_path, wait_until)

ANON = ["--memory-backend", "ram"]


def make_precopy(src_anon, dst_anon, tracking, transport):
    def test():
        cfg = dict(ram="96M", vcpus=2, workload="random,seed=21,wss=24M",
                   tracking=tracking, extra=ANON if src_anon else ())
        dcfg = dict(cfg, extra=ANON if dst_anon else ())
        info, _ = migrate_and_verify(transport, cfg, dst_cfg=dcfg)
        check_eq(info["ram"]["total"], 96 << 20, "total")
    name = (f"test_{'ram' if src_anon else 'memfd'}_to_"
            f"{'ram' if dst_anon else 'memfd'}_{transport}_"
            f"{tracking.replace('-', '_')}")
    test.__name__ = name
    return test


def test_postcopy_into_anonymous_ram():
    cfg = dict(ram="64M", vcpus=2, workload="sweep,seed=9,wss=16M,rate=40000p")
    dst = VM(incoming="defer", paused=True, name="dst-pc-anon", snapshot=False,
             extra=ANON, **cfg)
    src = VM(name="src-pc-anon", snapshot=False, **cfg)
    precopy_until(src, dst, f"unix:{tmp_path('pc-anon.sock')}",
                  lambda ram: ram.get("dirty-sync-count", 0) >= 2,
                  "two dirty passes", max_bandwidth=8 << 20, downtime_limit=1,
                  max_postcopy_bandwidth=4 << 20)
    src.cmd("migrate-start-postcopy")
    src.wait_migration(want="completed", timeout=120)
    dst.wait_migration(want="completed", timeout=120)
    check(src.query_migrate()["ram"].get("postcopy-bytes", 0) > 0,
          "pages went in postcopy")
    n = max(dst.steps()) + 3000
    dst.run_until(n)
    check_eq(dst.digests(), reference_digests(n, **cfg),
             "anonymous destination RAM vs a VM that never migrated")
    check_eq(src.quit(), 0, "source exit status")
    check_eq(dst.quit(), 0, "destination exit status")


def test_handover_refused_on_anonymous_ram():
    path = tmp_path("ho-anon.sock")
    dst = VM(incoming="defer", name="dst-ho-anon", snapshot=False, ram="32M")
    src = VM(name="src-ho-anon", snapshot=False, ram="32M", extra=ANON)
    for v in (src, dst):
        v.set_params(mode="cpr-transfer")
    dst.cmd("migrate-incoming", uri=f"unix:{path}")
    steps = max(src.steps())
    try:
        src.cmd("migrate", uri=f"unix:{path}")
        info = src.wait_migration(want="failed")
        desc = info.get("error-desc", "")
    except QMPError as e:
        desc = e.desc
    check_in("'pc.ram' is not a shared memfd", desc, "refusal names the block")
    check_eq(src.status(), "running", "the source runs on")
    wait_until(lambda: max(src.steps()) > steps, 20, "the source to go on")
    check_eq(src.quit(), 0, "source exit status")
    dst.kill()


def test_file_backend():
    """file:PATH maps the file shared (QEMU's memory-backend-file share=on):
    its bytes are the guest's RAM, the guest's writes land in it, and it
    migrates like any RAM."""
    path = tmp_path("ram-file-backend.img")
    pattern = bytes((i * 7 + 3) & 0xff for i in range(4096)) * 2048  # 8 MiB
    with open(path, "wb") as f:
        f.write(pattern)
        f.truncate(32 << 20)
    filled = VM(paused=True, snapshot=False, ram="32M", workload="idle",
                name="filled", extra=["--ram-file", path])
    src = VM(paused=True, snapshot=False, ram="32M", workload="idle",
             name="src-file", extra=["--memory-backend", f"file:{path}"])
    check_eq(src.digests(), filled.digests(), "file-backed RAM vs the file copied in")
    sock = f"unix:{tmp_path('file-backend.sock')}"
    dst = VM(incoming=sock, paused=True, snapshot=False, ram="32M",
             workload="idle", name="dst-file", extra=ANON)
    src.cmd("migrate", uri=sock)
    src.wait_migration(want="completed")
    dst.wait_migration(want="completed")
    check_eq(dst.digests(), src.digests(), "destination RAM vs the file's")
    for v in (filled, dst):
        check_eq(v.quit(), 0, f"{v.name} exit status")
    # The guest's stores go to the file.
    sweeper = VM(paused=True, snapshot=False, ram="32M", name="sweep-file",
                 workload="sweep,wss=16M", vcpus=1,
                 extra=["--memory-backend", f"file:{path}"])
    sweeper.run_until(5000)
    with open(path, "rb") as f:
        now = f.read(16 << 20)
    check(now[:8 << 20] != pattern, "the guest's writes reached the file")
    check_eq(sweeper.quit(), 0, "sweeper exit status")
    check_eq(src.quit(), 0, "source exit status")
    r = ferry("run", "--memory-backend", "file:/nonexistent/ferry-ram")
    check(r.returncode != 0, f"accepted a missing file: {r}")
    check_in("--memory-backend file:/nonexistent/ferry-ram: No such file or "
             "directory", r.stderr, "missing file message")


def test_bad_backend_name():
    r = ferry("run", "--memory-backend", "hugetlbfs", "--help")
    check(r.returncode != 0, f"accepted: {r}")
    check_in("--memory-backend: expected 'memfd', 'ram' or 'file:PATH', "
             "got 'hugetlbfs'",
             r.stderr, "message")


if __name__ == "__main__":
    for src_anon, dst_anon, tracking, transport in (
            (False, True, "bitmap", "unix"),
            (True, True, "uffd-wp", "tcp"),
            (True, False, "bitmap", "unix"),
            (True, True, "bitmap", "file")):
        run(make_precopy(src_anon, dst_anon, tracking, transport))
    run(test_postcopy_into_anonymous_ram)
    run(test_handover_refused_on_anonymous_ram)
    run(test_file_backend)
    run(test_bad_backend_name)
    done()
