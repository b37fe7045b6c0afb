#!/usr/bin/env python3
"""Postcopy across a real network link that fails mid-postcopy.

Source and destination `ferry run` run in two network namespaces joined by
a veth pair shaped with tbf (as scenario 5 of scripts/bench; this kernel has
no netem, matchall or gact). The migration goes over tcp across the veth
with postcopy-ram, switches to postcopy, then the link fails:

- tbf_drop_pause_source / tbf_drop_pause_destination (the latter with
  postcopy-preempt): the qdisc on both ends is replaced by a tbf of
  near-zero rate and a one-byte queue, which drops every packet (checked:
  the tbf counts drops, the destination's pages-remaining and the source's
  transferred bytes stop moving, both sides stay postcopy-active, as a
  silent link looks like a slow one). The operator pauses one side, then
  the other (migrate-pause), both go postcopy-paused, the shaping is
  restored, and migrate-recover (a new tcp address in the destination's
  namespace) + migrate resume=true finish the job;
- link_down: the veth is set down mid-postcopy, the transfer stalls, the
  link comes back up and TCP carries on by itself (nothing was closed),
  up to completion.

Every case ends with the destination run on to a step count; its RAM must
equal that of a VM that never migrated. The namespaces are named after this
process, and removed at exit whatever happens. Needs root (`ip netns add`);
without it the whole program is one TAP skip.
"""
import atexit
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import vethlink  # noqa: E402
from ferrylib import (VM, check, check_eq, check_in, done,  # noqa: E402
                      precopy_until, reference_digests, run, wait_until)

PID = os.getpid()
NS = {"src": f"fpcs{PID}", "dst": f"fpcd{PID}"}
DEV = {"src": f"fpcs{PID}v", "dst": f"fpcd{PID}v"}   # <= 15 characters
IP = {"src": "10.79.0.1", "dst": "10.79.0.2"}
SHAPE = vethlink.SHAPE_1GBIT
# Near-zero rate, room for one packet in the bucket, a one-byte queue: every
# packet after the first is dropped.
DROP = ["tbf", "rate", "8bit", "burst", "1540", "limit", "1"]

# The destination runs the guest during postcopy, so it faults; a random
# workload at a modest pace keeps part of the working set missing for a
# while, and the background stream is capped so postcopy lasts.
CFG = dict(ram="64M", vcpus=2, workload="random,seed=11,wss=48M,rate=2000p")


def sh(*argv):
    r = subprocess.run(list(argv), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


def link_teardown():
    vethlink.remove(NS)


def link_setup():
    """Two namespaces and a shaped veth pair. False: not permitted here."""
    err = vethlink.create(NS, DEV, IP, SHAPE)
    if err and err.startswith(f"ip netns add {NS['src']}:"):
        return False
    if err:
        raise RuntimeError(err)
    atexit.register(link_teardown)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, lambda *_: sys.exit(1))   # runs atexit
    return True


def qdisc(spec):
    for side in ("src", "dst"):
        sh("tc", "-n", NS[side], "qdisc", "replace", "dev", DEV[side], "root",
           *spec)


def link(state):
    for side in ("src", "dst"):
        sh("ip", "-n", NS[side], "link", "set", DEV[side], state)


def tc_drops(side):
    """Packets the root qdisc of one end has dropped."""
    out = sh("tc", "-s", "-n", NS[side], "qdisc", "show", "dev",
             DEV[side]).stdout
    for tok in out.split("(dropped ")[1:]:
        return int(tok.split(",")[0])
    return 0


def netns_vm(side, **kw):
    return VM(prefix=("ip", "netns", "exec", NS[side]), name=side,
              snapshot=False, **kw, **CFG)


def progress(src, dst):
    d = dst.query_migrate().get("x-ferry-postcopy", {})
    return (d.get("pages-remaining"), d.get("placed"),
            src.query_migrate().get("ram", {}).get("transferred"))


def wait_stalled(src, dst):
    """Until nothing moves for a whole second; returns the frozen values."""
    last = [None]

    def still():
        p = progress(src, dst)
        same = p == last[0]
        last[0] = p
        return p if same else None
    return wait_until(still, 60, "the transfer to stall", interval=1.0)


def start_postcopy(port, preempt=False):
    dst = netns_vm("dst", incoming="defer")
    src = netns_vm("src")
    dst.set_caps(postcopy_blocktime=True)
    # The guest dirties 8 MB/s, the link may carry 2: precopy would
    # never end. Switch a few MiB into the first pass.
    precopy_until(src, dst, f"tcp:{IP['dst']}:{port}",
                  lambda ram: ram.get("transferred", 0) >= 4 << 20,
                  "4 MiB of precopy", caps={"postcopy_preempt": preempt},
                  max_bandwidth=2 << 20, downtime_limit=1,
                  max_postcopy_bandwidth=512 << 10)
    check_eq(src.mig_status(), "active", "still in precopy")
    src.cmd("migrate-start-postcopy")
    for v in (src, dst):
        v.wait_status("postcopy-active")
    return src, dst


def stall(src, dst, how):
    before = progress(src, dst)
    drops0 = tc_drops("src")
    if how == "drop":
        qdisc(DROP)
    else:
        link("down")
    frozen = wait_stalled(src, dst)
    print(f"# {how}: pages-remaining {before[0]} -> {frozen[0]} (frozen), "
          f"source transferred {before[2]} -> {frozen[2]}", flush=True)
    check(frozen[0] and frozen[0] > 0,
          f"pages still missing when stalled: {frozen}")
    if how == "drop":
        check(tc_drops("src") > drops0, "the source's tbf drops packets")
    # A silent link looks like a slow one: nobody notices.
    check_eq(src.mig_status(), "postcopy-active", "source while stalled")
    check_eq(dst.mig_status(), "postcopy-active", "destination while stalled")
    return frozen


def finish_and_verify(src, dst):
    src.set_params(max_postcopy_bandwidth=0)
    src.wait_migration(timeout=120, want="completed")
    dinfo = dst.wait_migration(timeout=120, want="completed")
    pc = dinfo.get("x-ferry-postcopy", {})
    print(f"# destination: faults {pc.get('faults')}, placed "
          f"{pc.get('placed')}, latency median {pc.get('latency-median-ns')} "
          f"ns p99 {pc.get('latency-p99-ns')} ns, blocktime "
          f"{dinfo.get('postcopy-blocktime')} ms", flush=True)
    check_eq(pc.get("pages-remaining"), 0, "pages missing at completion")
    check(pc.get("faults", 0) > 0, f"the destination faulted: {pc}")
    dst.stop()
    n = max(dst.steps()) + 3000
    dst.run_until(n)
    check_eq(dst.digests(), reference_digests(n, **CFG),
             "destination RAM vs a VM that never migrated")
    check_eq(src.quit(), 0, "source exit status")
    check_eq(dst.quit(), 0, "destination exit status")


def drop_and_recover(first, port, preempt=False):
    qdisc(SHAPE)
    link("up")
    src, dst = start_postcopy(port, preempt)
    frozen = stall(src, dst, "drop")
    a, b = (src, dst) if first == "src" else (dst, src)
    a.cmd("migrate-pause")
    a.wait_status("postcopy-paused")
    # The other side cannot hear about it over a dead link.
    check_eq(b.mig_status(), "postcopy-active", f"{b.name} before its pause")
    b.cmd("migrate-pause")
    b.wait_status("postcopy-paused")
    check_in("still on the source", dst.query_migrate().get("error-desc"),
             "destination error-desc")
    qdisc(SHAPE)
    rec = f"tcp:{IP['dst']}:{port + 1}"
    dst.cmd("migrate-recover", uri=rec)
    src.cmd("migrate", uri=rec, resume=True)
    for v in (src, dst):
        v.wait_status("postcopy-active", 60)
    # Moving again.
    wait_until(lambda: progress(src, dst)[0] != frozen[0], 60,
               "pages to flow after the recovery")
    finish_and_verify(src, dst)


def test_tbf_drop_pause_source():
    drop_and_recover("src", 4601)


def test_tbf_drop_pause_destination():
    # With postcopy-preempt: its second connection is lost and remade too.
    drop_and_recover("dst", 4611, preempt=True)


def test_link_down():
    qdisc(SHAPE)
    link("up")
    src, dst = start_postcopy(4621)
    frozen = stall(src, dst, "down")
    link("up")
    # Nothing was closed: TCP retransmits and the migration goes on.
    wait_until(lambda: progress(src, dst)[0] != frozen[0], 120,
               "pages to flow after the link came back")
    check_eq(src.mig_status(), "postcopy-active", "source after link up")
    finish_and_verify(src, dst)


if __name__ == "__main__":
    if os.geteuid() != 0 or not link_setup():
        print("1..0 # SKIP needs root for network namespaces (ip netns add)")
        sys.exit(0)
    try:
        run(test_tbf_drop_pause_source)
        run(test_tbf_drop_pause_destination)
        run(test_link_down)
    finally:
        link_teardown()
    done()
