#!/usr/bin/env python3
"""Live migration between two `ferry run` processes over every transport
(tcp, unix, exec, fd, file) and with both dirty-tracking backends (bitmap,
uffd-wp), while the guest keeps writing RAM.

Each migration is verified twice (ferrylib.migrate_and_verify):
1. at the switchover: the source's RAM digests, device state and vCPU
   steps when it stopped equal the destination's just before it started
   (both recorded by --debug-switchover-snapshot);
2. afterwards: the destination runs on, then to a chosen step count, and
   its RAM equals that of a VM that never migrated, run to the same count.
"""
from ferrylib import check_eq, done, migrate_and_verify, run

WORKLOADS = {
    "tcp": "random,seed=7,wss=16M",
    "unix": "hotspot,seed=11,wss=24M",
    "exec": "sweep,seed=3,wss=8M",
    "fd": "random,seed=5,wss=16M",
    "file": "hotspot,seed=13,wss=16M",
}


def make_test(transport, tracking):
    def test():
        cfg = dict(ram="128M", vcpus=2, workload=WORKLOADS[transport],
                   tracking=tracking)
        info, _ = migrate_and_verify(transport, cfg)
        check_eq(info["ram"]["total"], 128 << 20, "total")
    test.__name__ = f"test_{transport}_{tracking.replace('-', '_')}"
    return test


if __name__ == "__main__":
    for tracking in ("bitmap", "uffd-wp"):
        for transport in ("tcp", "unix", "exec", "fd", "file"):
            run(make_test(transport, tracking))
    done()
