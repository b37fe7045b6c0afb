#!/usr/bin/env python3
"""Live migration between two `ferry run` processes over every transport
(tcp, unix, exec, fd, file) and with both dirty-tracking backends (bitmap,
uffd-wp), while the guest keeps writing RAM.

Each migration is verified twice:
1. at the switchover: the source's RAM digests, device state and vCPU
   steps when it stopped equal the destination's just before it started
   (both recorded by --debug-switchover-snapshot);
2. afterwards: the destination runs on, then to a chosen step count, and
   its RAM equals that of a VM that never migrated, run to the same count.
"""
import os
import socket

from ferrylib import (VM, Failed, check, check_eq, done, reference_digests,
                      run, tmp_path, wait_until)

WORKLOADS = {
    "tcp": "random,seed=7,wss=16M",
    "unix": "hotspot,seed=11,wss=24M",
    "exec": "sweep,seed=3,wss=8M",
    "fd": "random,seed=5,wss=16M",
    "file": "hotspot,seed=13,wss=16M",
}


def vm_config(transport, tracking):
    return dict(ram="128M", vcpus=2, workload=WORKLOADS[transport],
                tracking=tracking)


def start_pair(transport, cfg):
    """Source and destination, and the URI the source migrates to. For
    file, the destination is started later (it reads what was written)."""
    if transport == "tcp":
        dst = VM(incoming="tcp:127.0.0.1:0", name="dst-tcp", **cfg)
        return VM(name="src-tcp", **cfg), dst, dst.incoming_uri()
    if transport == "unix":
        path = tmp_path("mig.sock")
        dst = VM(incoming=f"unix:{path}", name="dst-unix", **cfg)
        return VM(name="src-unix", **cfg), dst, f"unix:{path}"
    if transport == "exec":
        fifo = tmp_path("mig.fifo")
        if os.path.exists(fifo):
            os.unlink(fifo)
        os.mkfifo(fifo)
        dst = VM(incoming=f"exec:cat {fifo}", name="dst-exec", **cfg)
        return VM(name="src-exec", **cfg), dst, f"exec:cat > {fifo}"
    if transport == "fd":
        a, b = socket.socketpair()
        dst = VM(incoming=f"fd:{b.fileno()}", pass_fds=[b.fileno()],
                 name="dst-fd", **cfg)
        src = VM(pass_fds=[a.fileno()], name="src-fd", **cfg)
        uri = f"fd:{a.fileno()}"   # the same number in the child
        a.close()
        b.close()
        return src, dst, uri
    if transport == "file":
        path = tmp_path("mig.img")
        return VM(name="src-file", **cfg), None, f"file:{path},offset=4096"
    raise ValueError(transport)


def migrate_and_verify(transport, tracking):
    cfg = vm_config(transport, tracking)
    src, dst, uri = start_pair(transport, cfg)
    # Let the guest dirty for a moment, then migrate while it goes on.
    wait_until(lambda: min(src.steps()) > 100000, 20, "the guest to run")
    steps_before = src.steps()
    src.cmd("migrate", uri=uri)
    info = src.wait_migration(want="completed")
    if dst is None:   # file: the stream is complete, load it now
        dst = VM(incoming=uri, name=f"dst-{transport}", **cfg)
    dinfo = dst.wait_migration(want="completed")

    ram = info["ram"]
    print(f"# {transport}/{tracking}: {ram['dirty-sync-count']} dirty syncs, "
          f"{ram['transferred'] >> 20} MiB, total {info['total-time']} ms, "
          f"downtime {info['downtime']} ms", flush=True)
    check(ram["dirty-sync-count"] >= 2, f"dirty syncs: {ram}")
    check_eq(ram["remaining"], 0, "remaining")
    check_eq(ram["total"], 128 << 20, "total")
    check(info["downtime"] >= 0 and info["total-time"] >= info["downtime"],
          f"times: {info}")
    check_eq(dinfo["status"], "completed", "destination status")
    check_eq(src.status(), "postmigrate", "source run state")

    # 1. The switchover: the source as it stopped, the destination as it
    # was about to start.
    a = src.cmd("x-ferry-switchover-snapshot")
    b = dst.cmd("x-ferry-switchover-snapshot")
    check("error" not in a and "error" not in b, f"snapshots: {a} {b}")
    check(all(x > y for x, y in zip(a["vcpu-steps"], steps_before)),
          f"the guest ran during the migration: {steps_before} -> "
          f"{a['vcpu-steps']}")
    check_eq(b["ram"], a["ram"], "RAM digests at the switchover")
    check_eq(b["devices"], a["devices"], "device state at the switchover")
    check_eq(b["vcpu-steps"], a["vcpu-steps"], "vCPU steps at the switchover")

    # 2. The destination runs on, then to N; a VM that never migrated,
    # run to N, has the same RAM.
    check_eq(dst.status(), "running", "destination run state")
    wait_until(lambda: min(dst.steps()) > max(a["vcpu-steps"]) + 10000, 20,
               "the destination to run on")
    dst.stop()
    n = max(dst.steps()) + 50000
    dst.run_until(n)
    got = dst.digests()
    want = reference_digests(n, **cfg)
    check_eq(got, want, f"RAM at step {n} (migrated vs never migrated)")
    check_eq(src.quit(), 0, "source exit status")
    check_eq(dst.quit(), 0, "destination exit status")


def make_test(transport, tracking):
    def test():
        migrate_and_verify(transport, tracking)
    test.__name__ = f"test_{transport}_{tracking.replace('-', '_')}"
    return test


if __name__ == "__main__":
    for tracking in ("bitmap", "uffd-wp"):
        for transport in ("tcp", "unix", "exec", "fd", "file"):
            run(make_test(transport, tracking))
    done()
