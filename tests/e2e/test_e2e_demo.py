#!/usr/bin/env python3
"""`make demo` keeps working: scripts/demo, run small (128 MiB, a short
warm-up), must finish on its own with status 0 and "Verified": the
switchover snapshots equal, the guest clock went on without a jump, and the
destination run on to a step count equals a VM that never migrated. A demo
that cannot start its VMs must say so and exit 1.
"""
import os
import subprocess
import sys

from ferrylib import BUILD, SLOW, check, check_eq, check_in, done, run

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                    "scripts", "demo")


def demo(**env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, DEMO, BUILD], capture_output=True,
                          text=True, timeout=300 * SLOW, env=e)


def test_demo_small():
    r = demo(FERRY_DEMO_RAM="128M", FERRY_DEMO_WARMUP="1",
             FERRY_DEMO_WORKLOAD="hotspot,seed=42,wss=64M,rate=50000p")
    for line in r.stdout.splitlines():
        print(f"# {line}")
    check_eq(r.returncode, 0, f"exit status; stderr {r.stderr}")
    for want in ("[1/5]", "[3/5]", "Migration completed",
                 "destination before resume", "no jump", "Verified"):
        check_in(want, r.stdout, "demo output")
    check("MISMATCH" not in r.stdout, "no mismatch")
    check_in("destination |", r.stdout, "the console goes on there")


def test_demo_fails_loudly():
    r = demo(FERRY_DEMO_RAM="128M", FERRY_DEMO_WARMUP="0",
             FERRY_DEMO_WORKLOAD="juggling")
    check_eq(r.returncode, 1, "exit status")
    check_in("demo failed", r.stdout, "says so")
    check_in("juggling", r.stdout, "and why")


if __name__ == "__main__":
    for t in (test_demo_small, test_demo_fails_loudly):
        run(t)
    done()
