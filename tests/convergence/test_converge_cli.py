"""Convergence end to end with real `ferry run` processes and `ferry migrate`.

  progress     auto-converge on a workload that cannot converge on its own:
               `ferry migrate`'s progress lines show the throttle, the
               summary its peak and where the downtime went; the
               destination (-S, so it stays stopped) has the source's RAM
               digests
  xbzrle       the same workload with XBZRLE alone: its 8-byte stores
               encode so small that it converges; the bar and the summary
               show XBZRLE
  stall        the same workload alone stalls: query-migrate, `info migrate`
               and the progress bar say STALLED; x-stall-action=throttle set
               live makes it complete, with the source's RAM
  dirty rate   calc-dirty-rate / info dirty_rate over QMP and HMP in the
               real program (page-sampling and dirty-bitmap)

Assertions are on what the programs report, never on how long things took.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "e2e"))
from ferrylib import (FERRY, SLOW, VM, check, check_eq, check_in,  # noqa: E402
                      done, run, wait_until)

# 2 vCPUs writing 40000 random pages/s over 32 MiB, against 32 MiB/s.
CFG = dict(ram="32M", vcpus=2, workload="random,seed=3,rate=40000p",
           snapshot=False)
BW = str(32 << 20)


def warm(vm):
    # Untouched pages cost nothing to send: let the guest touch them first.
    time.sleep(1.5)
    return vm


def same_ram(src, dst):
    return check_eq(src.digests(), dst.digests(), "destination RAM digests")


def test_progress_shows_convergence():
    dst = VM(incoming="tcp:127.0.0.1:0", paused=True, **CFG)
    src = warm(VM(**CFG))
    r = subprocess.run(
        [FERRY, "migrate", "--qmp", src.qmp_path, "--interval", "50",
         "--max-bandwidth", BW, "--downtime-limit", "100",
         "-c", "auto-converge", "-c", "return-path",
         "-p", "cpu-throttle-initial=60", "-p", "cpu-throttle-increment=35",
         dst.incoming_uri()],
        capture_output=True, text=True, timeout=300 * SLOW)
    check_eq(r.returncode, 0, f"exit status; stderr {r.stderr[-2000:]}")
    check_in(", throttle 60%", r.stderr, "the bar shows the throttle")
    for line in ("Migration completed", "downtime was  stop",
                 "dest. load", "cpu throttle  peak 95%"):
        check_in(line, r.stdout, "summary")
    dst.wait_migration(want="completed")
    same_ram(src, dst)
    for vm in (src, dst):
        check_eq(vm.quit(), 0, "exit")


def test_xbzrle_converges():
    dst = VM(incoming="tcp:127.0.0.1:0", paused=True, **CFG)
    src = warm(VM(**CFG))
    r = subprocess.run(
        [FERRY, "migrate", "--qmp", src.qmp_path, "--interval", "50",
         "--max-bandwidth", BW, "--downtime-limit", "100", "-c", "xbzrle",
         "-p", "xbzrle-cache-size=" + str(32 << 20), dst.incoming_uri()],
        capture_output=True, text=True, timeout=300 * SLOW)
    check_eq(r.returncode, 0, f"exit status; stderr {r.stderr[-2000:]}")
    check_in(", xbzrle ", r.stderr, "the bar shows XBZRLE")
    check_in(", dirty ", r.stderr, "the bar shows the dirty rate")
    check_in("  xbzrle        ", r.stdout, "summary")
    dst.wait_migration(want="completed")
    same_ram(src, dst)
    x = src.query_migrate()["xbzrle-cache"]
    check(x["pages"] > 0 and x["cache-size"] == 32 << 20, f"xbzrle: {x}")
    out = src.cmd("human-monitor-command", {"command-line": "info migrate"})
    for line in ("xbzrle pages: ", "xbzrle cache miss: ",
                 "xbzrle encoding rate: ", "dirty rate: "):
        check_in(line, out, "info migrate")
    for vm in (src, dst):
        check_eq(vm.quit(), 0, "exit")


def stalled(vm):
    x = vm.query_migrate().get("x-convergence", {})
    return x.get("stall", {}).get("stalled")


def test_stall_shown_then_escalated():
    dst = VM(incoming="tcp:127.0.0.1:0", paused=True, **CFG)
    src = warm(VM(**CFG))
    bar = subprocess.Popen(
        [FERRY, "migrate", "--qmp", src.qmp_path, "--interval", "50",
         "--max-bandwidth", BW, "--downtime-limit", "100",
         "-p", "x-stall-iterations=2", "-p", "cpu-throttle-initial=95",
         dst.incoming_uri()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: src.query_migrate().get("status") == "active",
               60, "the migration to start")
    wait_until(lambda: stalled(src), 240, "the stall")
    check_eq(src.mig_status(), "active", "stalled, not ended")
    out = src.cmd("human-monitor-command",
                  {"command-line": "info migrate"})
    check_in("stall: STALLED", out, "info migrate")
    check_in("downtime estimate:", out, "info migrate")
    time.sleep(1.2)     # the bar prints a line a second when not a tty
    src.set_params(x_stall_action="throttle")
    stdout, stderr = bar.communicate(timeout=300 * SLOW)
    check_eq(bar.returncode, 0, f"exit status; stderr {stderr[-2000:]}")
    check_in("STALLED", stderr, "the bar shows the stall")
    check_in("stalls ", stdout, "the summary counts stalls")
    dst.wait_migration(want="completed")
    same_ram(src, dst)
    st = src.query_migrate()["x-convergence"]["stall"]
    check(st["escalations"] >= 1, f"escalated: {st}")
    for vm in (src, dst):
        check_eq(vm.quit(), 0, "exit")


def test_dirty_rate_commands():
    vm = VM(ram="64M", vcpus=2, workload="sweep,rate=8192p", snapshot=False)
    time.sleep(0.3)
    for mode in ("dirty-bitmap", "page-sampling"):
        vm.cmd("calc-dirty-rate", {"calc-time": 1, "mode": mode})
        q = wait_until(lambda: (lambda r: r if r["status"] == "measured"
                                else None)(vm.cmd("query-dirty-rate")),
                       60, "the measurement")
        check_eq(q["mode"], mode, "mode")
        # 8192 pages/s is 32 MB/s; the C tests hold it to 10%.
        check(16 <= q["dirty-rate"] <= 48, f"{mode}: {q}")
    out = vm.cmd("human-monitor-command",
                 {"command-line": "calc_dirty_rate -b 1"})
    check_in("Starting dirty rate measurement", out, "HMP calc_dirty_rate")
    wait_until(lambda: vm.cmd("query-dirty-rate")["status"] == "measured",
               60, "the HMP measurement")
    out = vm.cmd("human-monitor-command", {"command-line": "info dirty_rate"})
    check_in("Mode: dirty-bitmap", out, "info dirty_rate")
    out = vm.cmd("human-monitor-command",
                 {"command-line": "set_vcpu_dirty_limit 4 1"})
    check_eq(out, "", "set_vcpu_dirty_limit")
    out = vm.cmd("human-monitor-command",
                 {"command-line": "info vcpu_dirty_limit"})
    check_in("vcpu[1], limit rate 4 (MB/s)", out, "info vcpu_dirty_limit")
    check_eq(vm.quit(), 0, "exit")


if __name__ == "__main__":
    for t in (test_dirty_rate_commands, test_progress_shows_convergence,
              test_xbzrle_converges, test_stall_shown_then_escalated):
        run(t)
    done()
