#!/usr/bin/env python3
"""Every QMP and HMP command of a real `ferry run`, with good and bad
arguments; the run states; events; `ferry monitor` (one command, and
interactive); HMP on `--monitor stdio`; `ferry migrate` with its progress
bar and --json; and `ferry run`'s own option errors.
"""
import json
import os
import pty
import select
import signal
import subprocess
import time

from ferrylib import (FERRY, QMP, SLOW, VM, QMPError, check, check_eq,
                      check_in, done, ferry, run, tmp_path, wait_until)

CFG = dict(ram="64M", vcpus=2, workload="random,seed=3,wss=8M")
SLOW_CFG = dict(ram="64M", vcpus=1, workload="sweep,seed=4")


def qmp_error(vm, name, args=None):
    try:
        r = vm.cmd(name, args)
    except QMPError as e:
        return e
    check(False, f"{name} {args} succeeded: {r}")
    return QMPError("", "")


# ---- QMP protocol on a real socket ----

def test_qmp_protocol():
    vm = VM(paused=True, **CFG)
    q = QMP(vm.qmp_path)   # not negotiated
    v = q.greeting["QMP"]["version"]
    check_eq(v["qemu"], {"major": 7, "minor": 2, "micro": 0}, "version")
    check_in("ferry", v["package"], "package")
    check_eq(q.greeting["QMP"]["capabilities"], [], "capabilities")
    r = q.execute("query-status")
    check_eq(r["error"]["class"], "CommandNotFound", "before negotiation")
    q.send_raw('{"execute": "qmp_capabilities", "id": {"any": ["json"]}}')
    r = q.read_response()
    check_eq(r, {"return": {}, "id": {"any": ["json"]}}, "negotiation")
    for raw, want in [
            ('[]', "QMP input must be a JSON object"),
            ('{"arguments": {}}', "QMP input lacks member 'execute'"),
            ('{"execute": "stop", "x": 1}', "QMP input member 'x' is unexpected"),
            ('{"execute": ', "JSON parse error"),
    ]:
        q.send_raw(raw + ("}" if raw.endswith(": ") else "") + "\n")
        r = q.read_response()
        check_in(want, r.get("error", {}).get("desc"), raw)
    r = q.execute("no-such-command")
    check_eq(r["error"], {"class": "CommandNotFound",
                          "desc": "The command no-such-command has not been "
                                  "found"}, "unknown command")
    names = [c["name"] for c in q.cmd("query-commands")]
    for n in ("migrate", "migrate-incoming", "query-migrate",
              "migrate-set-capabilities", "query-migrate-capabilities",
              "migrate-set-parameters", "query-migrate-parameters",
              "migrate_cancel", "migrate-continue", "query-status", "stop",
              "cont", "quit", "human-monitor-command", "x-ferry-ram-digest",
              "x-ferry-device-state", "x-ferry-run-until"):
        check_in(n, names, "query-commands")
    check_eq(q.cmd("query-version")["package"], v["package"], "query-version")
    q.close()
    check_eq(vm.quit(), 0, "exit status")


def test_run_states_and_events():
    vm = VM(paused=True, **CFG)
    check_eq(vm.cmd("query-status"), {"running": False, "singlestep": False,
                                      "status": "prelaunch"}, "-S")
    vm.cmd("cont")
    vm.qmp.wait_event("RESUME")
    check_eq(vm.status(), "running", "after cont")
    vm.cmd("cont")   # already running: nothing happens
    vm.cmd("stop")
    ev = vm.qmp.wait_event("STOP")
    check(ev["timestamp"]["seconds"] > 1.6e9 and
          0 <= ev["timestamp"]["microseconds"] < 1000000, f"timestamp {ev}")
    check_eq(vm.status(), "paused", "after stop")
    for name in ("stop", "cont", "query-status", "quit", "x-ferry-ram-digest",
                 "x-ferry-device-state", "x-ferry-query-vcpus",
                 "migrate_cancel", "query-migrate"):
        e = qmp_error(vm, name, {"bogus": 1})
        check_eq(e.desc, "Parameter 'bogus' is unexpected", name)
    vm.qmp.cmd("quit")
    vm.qmp.wait_event("SHUTDOWN")
    check_eq(vm.wait_exit(), 0, "exit status after quit")


def test_debug_commands():
    vm = VM(**CFG)
    e = qmp_error(vm, "x-ferry-device-state")
    check_in("stopped", e.desc, "device state while running")
    e = qmp_error(vm, "x-ferry-snapshot")
    check_in("stop it first", e.desc, "snapshot while running")
    e = qmp_error(vm, "x-ferry-run-until", {"steps": 10})
    check_in("running", e.desc, "run-until while running")
    e = qmp_error(vm, "x-ferry-switchover-snapshot")
    check_in("no switchover", e.desc, "switchover snapshot before any")
    vm.stop()
    st = vm.cmd("x-ferry-device-state")
    for dev in ("cpu", "serial", "clock", "ferry-timer"):
        check_in(dev, st, "devices")
    check_eq(len(st["cpu"]), 2, "cpu instances")
    d = vm.digests()
    check_eq([(b["idstr"], b["length"]) for b in d], [("pc.ram", 64 << 20)],
             "blocks")
    check_eq(len(d[0]["digest"]), 32, "digest length")
    check_eq(vm.snapshot()["ram"], d, "snapshot RAM")
    steps = vm.steps()
    e = qmp_error(vm, "x-ferry-run-until", {"steps": min(steps) - 1})
    check_in("past", e.desc, "run-until into the past")
    e = qmp_error(vm, "x-ferry-run-until", {"steps": "many"})
    check_in("expected: integer", e.desc, "run-until type")
    e = qmp_error(vm, "x-ferry-run-until", {"steps": -1})
    check_in("non-negative", e.desc, "run-until negative")
    vm.run_until(max(steps) + 1000)
    check_eq(vm.status(), "paused", "after run-until")
    # The same step count from the start gives the same RAM, whatever the
    # timing: a second VM run straight to it.
    other = VM(paused=True, **CFG)
    other.run_until(max(steps) + 1000)
    check_eq(other.digests(), vm.digests(), "deterministic RAM")
    check_eq(other.quit(), 0, "exit")
    check_eq(vm.quit(), 0, "exit")


def test_capabilities_and_parameters():
    vm = VM(**CFG)
    caps = {c["capability"]: c["state"]
            for c in vm.cmd("query-migrate-capabilities")}
    check_eq(caps.get("events"), False, "events default")
    vm.set_caps(events=True, return_path=True)
    caps = {c["capability"]: c["state"]
            for c in vm.cmd("query-migrate-capabilities")}
    check(caps["events"] and caps["return-path"], f"caps {caps}")
    for args, want in [
            ({}, "Parameter 'capabilities' is missing"),
            ({"capabilities": {}}, "expected: array"),
            ({"capabilities": [{"capability": "nope", "state": True}]},
             "'nope'"),
            ({"capabilities": [{"capability": "events"}]}, "is missing"),
            ({"capabilities": [{"capability": "x-colo", "state": True}]},
             "not supported"),
    ]:
        check_in(want, qmp_error(vm, "migrate-set-capabilities", args).desc,
                 str(args))
    p = vm.cmd("query-migrate-parameters")
    check_eq((p["max-bandwidth"], p["downtime-limit"]), (128 << 20, 300),
             "defaults")
    vm.set_params(max_bandwidth=1 << 30, downtime_limit=100)
    p = vm.cmd("query-migrate-parameters")
    check_eq((p["max-bandwidth"], p["downtime-limit"]), (1 << 30, 100), "set")
    for args, want in [
            ({"downtime-limit": "x"}, "downtime-limit"),
            ({"downtime-limit": 10 ** 9}, "downtime-limit"),
            ({"max-bandwidth": -1}, "max-bandwidth"),
            ({"warp": 1}, "Parameter 'warp' is unexpected"),
            ({"zero-page-detection": "sometimes"}, "sometimes"),
    ]:
        check_in(want, qmp_error(vm, "migrate-set-parameters", args).desc,
                 str(args))
    check_eq(vm.cmd("query-migrate-parameters")["downtime-limit"], 100,
             "unchanged after errors")
    check_eq(vm.quit(), 0, "exit")


def test_migrate_commands():
    dst = VM(incoming="defer", **SLOW_CFG)
    check_eq(dst.status(), "inmigrate", "deferred destination")
    check_eq(dst.query_migrate(), {}, "nothing yet")
    for args, want in [({}, "Parameter 'uri' is missing"),
                       ({"uri": 1}, "expected: string"),
                       ({"uri": "nowhere:1"}, "nowhere:1")]:
        check_in(want, qmp_error(dst, "migrate-incoming", args).desc, str(args))
    dst.cmd("migrate-incoming", uri="tcp:127.0.0.1:0")
    check_eq(dst.mig_status(), "setup", "listening")
    check_in("in progress", qmp_error(dst, "migrate-incoming",
                                      {"uri": "tcp:127.0.0.1:0"}).desc,
             "second migrate-incoming")
    check_in("waiting for an incoming", qmp_error(
        dst, "migrate", {"uri": "tcp:127.0.0.1:1"}).desc, "migrate on a dest")

    src = VM(**SLOW_CFG)
    check_in("running", qmp_error(src, "migrate-incoming",
                                  {"uri": "tcp:127.0.0.1:0"}).desc,
             "migrate-incoming on a running VM")
    for args, want in [({}, "Parameter 'uri' is missing"),
                       ({"uri": True}, "expected: string"),
                       ({"uri": "tcp:1.2.3.4"}, "tcp:1.2.3.4"),
                       ({"uri": "tcp:h:1", "blk": True}, "Block migration"),
                       ({"uri": "tcp:h:1", "speed": 1},
                        "Parameter 'speed' is unexpected")]:
        check_in(want, qmp_error(src, "migrate", args).desc, str(args))
    check_in("not in expected state", qmp_error(
        src, "migrate-continue", {"state": "pre-switchover"}).desc,
        "migrate-continue")
    src.cmd("migrate_cancel")   # nothing runs: fine
    src.set_caps(events=True)
    src.set_params(max_bandwidth=16 << 20)
    src.cmd("migrate", uri=dst.incoming_uri())
    src.wait_status("active")
    src.qmp.wait_event("MIGRATION", pred=lambda e: e["data"]["status"] ==
                       "active")
    src.qmp.wait_event("MIGRATION_PASS")
    time.sleep(0.3 * SLOW)
    info = src.query_migrate()
    for k in ("status", "total-time", "expected-downtime", "setup-time"):
        check_in(k, info, "query-migrate while active")
    for k in ("transferred", "remaining", "total", "duplicate", "normal",
              "mbps", "dirty-pages-rate", "dirty-sync-count",
              "pages-per-second"):
        check_in(k, info["ram"], "query-migrate ram while active")
    check(0 < info["ram"]["remaining"] < info["ram"]["total"],
          f"progress: {info['ram']}")
    check_in("in progress", qmp_error(src, "migrate",
                                      {"uri": "tcp:127.0.0.1:1"}).desc,
             "second migrate")
    check_in("in progress", qmp_error(src, "migrate-set-capabilities", {
        "capabilities": [{"capability": "events", "state": False}]}).desc,
        "caps during migration")
    # max-bandwidth applies at once: lift it and the migration completes.
    src.set_params(max_bandwidth=0)
    src.wait_migration(want="completed")
    dst.wait_migration(want="completed")
    src.qmp.wait_event("STOP")
    src.qmp.wait_event("MIGRATION", pred=lambda e: e["data"]["status"] ==
                       "completed")
    check_eq(src.status(), "postmigrate", "source after")
    check_eq(dst.status(), "running", "destination after")
    # A source can run again after migrating (QEMU allows cont too).
    src.cmd("cont")
    check_eq(src.status(), "running", "source after cont")
    check_eq(src.quit(), 0, "exit")
    check_eq(dst.quit(), 0, "exit")


def test_max_bandwidth_bounds_precopy():
    """max-bandwidth bounds the iterations: 32 MiB of random RAM at
    8 MiB/s cannot go out faster than that. Only a lower bound on the time
    is checked (a loaded machine can only make it slower): the precopy
    bytes fit in max-bandwidth x the time spent, plus one second of burst
    allowance. Then the switchover is verified."""
    fill = tmp_path("bw-fill.bin")
    with open(fill, "wb") as f:
        f.write(os.urandom(32 << 20))
    cfg = dict(ram="64M", vcpus=1, workload="idle")
    rate = 8 << 20
    dst = VM(incoming="tcp:127.0.0.1:0", **cfg)
    src = VM(extra=["--ram-file", fill], **cfg)
    src.set_params(max_bandwidth=rate)
    src.cmd("migrate", uri=dst.incoming_uri())
    info = src.wait_migration(timeout=120, want="completed")
    dst.wait_migration(want="completed")
    ram = info["ram"]
    print(f"# {ram['precopy-bytes']} precopy bytes, {ram['downtime-bytes']} "
          f"at the switchover, total {info['total-time']} ms, downtime "
          f"{info['downtime']} ms", flush=True)
    check(ram["precopy-bytes"] + ram["downtime-bytes"] >= 32 << 20,
          f"all the random RAM went: {ram}")
    precopy_ms = info["total-time"] - info["downtime"]
    check(ram["precopy-bytes"] <= rate * precopy_ms / 1000 + rate,
          f"precopy at most max-bandwidth: {ram['precopy-bytes']} bytes in "
          f"{precopy_ms} ms at {rate} bytes/s")
    check(ram["mbps"] <= rate * 8 / 1e6 * 1.5,
          f"reported throughput {ram['mbps']} mbps")
    a = src.cmd("x-ferry-switchover-snapshot")
    b = dst.cmd("x-ferry-switchover-snapshot")
    check_eq(b["ram"], a["ram"], "RAM at the switchover")
    check_eq(b["devices"], a["devices"], "devices at the switchover")
    for vm in (src, dst):
        check_eq(vm.quit(), 0, "exit")


def test_pause_before_switchover():
    dst = VM(incoming="tcp:127.0.0.1:0", paused=True, **CFG)
    src = VM(**CFG)
    src.set_caps(pause_before_switchover=True)
    src.cmd("migrate", uri=dst.incoming_uri())
    src.wait_status("pre-switchover")
    check_eq(src.status(), "finish-migrate", "run state")
    check_in("switchover", qmp_error(src, "cont").desc, "cont while paused")
    check_in("pre-switchover", qmp_error(src, "migrate-continue",
                                         {"state": "active"}).desc,
             "continue from the wrong state")
    src.cmd("migrate-continue", state="pre-switchover")
    src.wait_migration(want="completed")
    dst.wait_migration(want="completed")
    # -S on the destination: it stays paused until cont.
    check_eq(dst.status(), "paused", "destination with -S")
    a = src.cmd("x-ferry-switchover-snapshot")
    check_eq(dst.snapshot(), a, "destination before cont = source at stop")
    dst.cmd("cont")
    check_eq(dst.status(), "running", "destination after cont")
    check_eq(src.quit(), 0, "exit")
    check_eq(dst.quit(), 0, "exit")


def test_qmp_bad_arguments():
    """Every QMP command the issue lists, with bad arguments: the error
    class, QEMU's words, and nothing changed."""
    vm = VM(**CFG)
    caps0 = vm.cmd("query-migrate-capabilities")
    params0 = vm.cmd("query-migrate-parameters")
    cases = [
        ("migrate", {}, "Parameter 'uri' is missing"),
        ("migrate", {"uri": 5}, "Invalid parameter type for 'uri', "
                                "expected: string"),
        ("migrate", {"uri": "tcp:127.0.0.1:1", "detach": "yes"},
         "Invalid parameter type for 'detach', expected: boolean"),
        ("migrate", {"uri": "ftp://x"}, "ftp://x"),
        ("migrate-incoming", {}, "Parameter 'uri' is missing"),
        ("migrate-incoming", {"uri": []}, "expected: string"),
        ("migrate-incoming", {"uri": "tcp:127.0.0.1:0", "x": 1},
         "Parameter 'x' is unexpected"),
        ("query-migrate", {"x": 1}, "Parameter 'x' is unexpected"),
        ("migrate-set-capabilities", {"capabilities": [1]},
         "expected: object"),
        ("migrate-set-capabilities", {"capabilities": [
            {"capability": "events", "state": "on"}]}, "expected: boolean"),
        ("migrate-set-capabilities", {"capabilities": [
            {"capability": "events", "state": True, "extra": 1}]},
         "is unexpected"),
        ("query-migrate-capabilities", {"x": 1},
         "Parameter 'x' is unexpected"),
        ("migrate-set-parameters", {"max-bandwidth": "fast"},
         "max-bandwidth"),
        ("migrate-set-parameters", {"downtime-limit": 2000001},
         "downtime-limit"),
        ("migrate-set-parameters", {"downtime-limit": 1.5},
         "downtime-limit"),
        ("migrate-set-parameters", {"x-checkpoint-delay": 10},
         "not supported"),
        ("query-migrate-parameters", {"x": 1}, "Parameter 'x' is unexpected"),
        ("migrate_cancel", {"x": 1}, "Parameter 'x' is unexpected"),
        ("migrate-continue", {}, "Parameter 'state' is missing"),
        ("migrate-continue", {"state": 3}, "expected: string"),
        ("migrate-continue", {"state": "sideways"}, "'sideways'"),
        ("migrate-continue", {"state": "pre-switchover"},
         "not in expected state"),
        ("query-status", {"x": 1}, "Parameter 'x' is unexpected"),
        ("stop", {"x": 1}, "Parameter 'x' is unexpected"),
        ("cont", {"x": 1}, "Parameter 'x' is unexpected"),
        ("quit", {"x": 1}, "Parameter 'x' is unexpected"),
    ]
    for name, args, want in cases:
        r = vm.qmp.execute(name, args)
        if check("error" in r, f"{name} {args}: {r}"):
            check_eq(r["error"]["class"], "GenericError", f"{name} {args}")
            check_in(want, r["error"]["desc"], f"{name} {args}")
    # Arguments that are not an object at all.
    vm.qmp.send_raw('{"execute": "stop", "arguments": [1], "id": "a"}\n')
    r = vm.qmp.read_response()
    check_in("arguments", r.get("error", {}).get("desc"), "arguments: array")
    r = vm.qmp.execute("qmp_capabilities")
    check_eq(r["error"]["class"], "CommandNotFound", "second negotiation")
    check_eq(vm.cmd("query-migrate-capabilities"), caps0, "capabilities "
             "unchanged")
    check_eq(vm.cmd("query-migrate-parameters"), params0, "parameters "
             "unchanged")
    check_eq(vm.status(), "running", "still running")
    check_eq(vm.mig_status(), None, "no migration started")
    check_eq(vm.quit(), 0, "exit")


def test_migration_events():
    """MIGRATION, MIGRATION_PASS, STOP and RESUME, in order, with
    timestamps, on both sides."""
    dst = VM(incoming="defer", **CFG)
    dst.set_caps(events=True)
    dst.cmd("migrate-incoming", uri="tcp:127.0.0.1:0")
    src = VM(**CFG)
    src.set_caps(events=True)
    src.cmd("migrate", uri=dst.incoming_uri())
    src.wait_migration(want="completed")
    dst.wait_migration(want="completed")
    src.qmp.wait_event("MIGRATION", pred=lambda e: e["data"]["status"] ==
                       "completed")
    dst.qmp.wait_event("RESUME")
    # Drain what is left (the events come in order on one socket).
    src.cmd("query-status")
    dst.cmd("query-status")

    def stamps(events):
        return [e["timestamp"]["seconds"] * 10 ** 6 +
                e["timestamp"]["microseconds"] for e in events]

    sev = src.qmp.events
    names = [(e["event"], e.get("data", {}).get("status")) for e in sev
             if e["event"] != "MIGRATION_PASS"]
    check_eq(names, [("MIGRATION", "setup"), ("MIGRATION", "active"),
                     ("STOP", None)], "source events before completed")
    passes = [e["data"]["pass"] for e in sev if e["event"] == "MIGRATION_PASS"]
    check(len(passes) >= 2, f"MIGRATION_PASS events: {passes}")
    check_eq(passes, list(range(1, len(passes) + 1)), "pass numbers")
    t = stamps(sev)
    check(t == sorted(t), f"source timestamps in order: {t}")
    check(all(x > 1.6e15 for x in t), f"timestamps are wall-clock: {t}")
    dev = dst.qmp.events
    dnames = [(e["event"], e.get("data", {}).get("status")) for e in dev]
    check_in(("MIGRATION", "active"), dnames, "destination events")
    check_in(("MIGRATION", "completed"), dnames, "destination events")
    t = stamps(dev)
    check(t == sorted(t), f"destination timestamps in order: {t}")
    # The destination starts the VM after loading it: RESUME follows.
    src.cmd("cont")
    src.qmp.wait_event("RESUME")
    src.cmd("stop")
    src.qmp.wait_event("STOP")
    for vm in (src, dst):
        check_eq(vm.quit(), 0, "exit")


def test_events_need_the_capability():
    dst = VM(incoming="tcp:127.0.0.1:0", **CFG)
    src = VM(**CFG)
    src.cmd("migrate", uri=dst.incoming_uri())
    src.wait_migration(want="completed")
    src.qmp.wait_event("STOP")
    src.cmd("query-status")
    mig = [e for e in src.qmp.events if e["event"].startswith("MIGRATION")]
    check_eq(mig, [], "no MIGRATION events without the events capability")
    for vm in (src, dst):
        check_eq(vm.quit(), 0, "exit")


# ---- HMP ----

def monitor(vm, *words):
    return ferry("monitor", vm.qmp_path, *words)


def test_hmp_via_ferry_monitor():
    dst = VM(incoming="tcp:127.0.0.1:0", **CFG)
    src = VM(**CFG)
    r = monitor(src, "help")
    for name in ("migrate_set_capability", "migrate_incoming", "info"):
        check_in(name, r.stdout, "help")
    r = monitor(src, "info", "status")
    check_eq((r.returncode, r.stdout), (0, "VM status: running\n"), "info status")
    r = monitor(src, "info", "version")
    check_eq(r.stdout, "7.2.0 (ferry 0.1.0)\n", "info version")
    r = monitor(src, "info", "migrate_capabilities")
    check(r.stdout.startswith("xbzrle: off\n"), r.stdout)
    r = monitor(src, "migrate_set_capability", "events", "on")
    check_eq((r.returncode, r.stdout), (0, ""), "set capability")
    check_in("events: on\n", monitor(src, "info migrate_capabilities").stdout,
             "capability shown")
    r = monitor(src, "migrate_set_capability", "events", "perhaps")
    check_eq((r.returncode, r.stdout), (1, "Expected 'on' or 'off'\n"),
             "bad on/off")
    r = monitor(src, "migrate_set_capability", "nope", "on")
    check_eq(r.returncode, 1, "unknown capability fails")
    check_in("Error: ", r.stdout, "unknown capability")
    r = monitor(src, "migrate_set_parameter", "downtime-limit", "200")
    check_eq(r.returncode, 0, "set parameter")
    r = monitor(src, "info", "migrate_parameters")
    check_in("downtime-limit: 200 ms\n", r.stdout, "parameter shown")
    r = monitor(src, "migrate_set_parameter", "max-bandwidth", "100")
    check_in("max-bandwidth: 104857600 bytes/second",
             monitor(src, "info migrate_parameters").stdout, "MiB default")
    r = monitor(src, "migrate_set_parameter", "max-bandwidth", "lots")
    check_eq((r.returncode, r.stdout), (1, "Error: Invalid size lots\n"),
             "bad size")
    r = monitor(src, "frobnicate")
    check_eq((r.returncode, r.stdout), (1, "unknown command: 'frobnicate'\n"),
             "unknown command")
    r = monitor(src, "migrate")
    check_in("missing argument", r.stdout, "migrate without a URI")
    r = monitor(src, "migrate_continue", "pre-switchover")
    check_in("Error: Migration not in expected state", r.stdout,
             "migrate_continue")
    r = monitor(src, "migrate_incoming", "tcp:127.0.0.1:0")
    check_in("Error: ", r.stdout, "migrate_incoming on a running VM")
    check_eq(monitor(src, "migrate_cancel").returncode, 0, "migrate_cancel")
    r = monitor(src, "info", "ram_digest")
    check(r.stdout.startswith("pc.ram: ") and "(67108864 bytes)" in r.stdout,
          r.stdout)
    r = monitor(src, "info", "device_state")
    check_in("Error: ", r.stdout, "device_state while running")
    check_eq(monitor(src, "stop").returncode, 0, "stop")
    r = monitor(src, "info", "device_state")
    check_in('"ferry-timer"', r.stdout, "device_state while stopped")
    check_eq(monitor(src, "info status").stdout, "VM status: paused\n",
             "paused")
    check_eq(monitor(src, "cont").returncode, 0, "cont")
    # A synchronous migrate: ferry monitor waits for the end.
    r = monitor(src, "migrate", dst.incoming_uri())
    check_eq((r.returncode, r.stdout), (0, ""), "migrate")
    check_eq(src.mig_status(), "completed", "migrated by the time it returned")
    r = monitor(src, "info", "migrate")
    for line in ("globals:\n", "Migration status: completed\n", "total time: ",
                 "downtime: ", "setup: ", "transferred ram: ",
                 "total ram: 65536 kbytes\n", "dirty sync count: "):
        check_in(line, r.stdout, "info migrate")
    check_eq(monitor(src, "info status").stdout,
             "VM status: paused (postmigrate)\n", "postmigrate")
    dst.wait_migration(want="completed")
    # A failing synchronous migrate prints why and fails.
    r = monitor(dst, "migrate", "unix:" + tmp_path("nobody-listens.sock"))
    check_eq(r.returncode, 1, "failed migrate")
    check_in("nobody-listens.sock", r.stdout, "failed migrate says why")
    check_in("Migration status: failed (", monitor(dst, "info migrate").stdout,
             "info migrate after failure")
    r = monitor(dst, "quit")
    check_eq(r.returncode, 0, "quit")
    check_eq(dst.wait_exit(), 0, "exit after HMP quit")
    r = monitor(dst, "info", "status")
    check_eq(r.returncode, 1, "monitor of a VM that is gone")
    check_in("cannot connect", r.stderr, "says why")
    check_eq(src.quit(), 0, "exit")


def test_hmp_bad_arguments():
    """Each HMP command the issue lists, with bad arguments, through
    `ferry monitor`: an error on stdout, exit status 1, nothing changed."""
    vm = VM(**CFG)
    before = monitor(vm, "info", "migrate_parameters").stdout
    caps = monitor(vm, "info", "migrate_capabilities").stdout
    cases = [
        ("migrate", "migrate: missing argument"),
        ("migrate -q tcp:127.0.0.1:1", "migrate: unsupported option -q"),
        ("migrate tcp:127.0.0.1:1 more", "extraneous characters"),
        ("migrate -d nowhere:7", "Error: "),
        ("migrate_incoming", "migrate_incoming: missing argument"),
        ("migrate_incoming a b", "extraneous characters"),
        ("info migrate now", "extraneous characters"),
        ("info migrate_capabilities x", "extraneous characters"),
        ("info migrate_parameters x", "extraneous characters"),
        ("info nothing", "info: unknown item 'nothing'"),
        ("migrate_set_capability events", "missing argument"),
        ("migrate_set_capability events on off", "extraneous characters"),
        ("migrate_set_capability events 1", "Expected 'on' or 'off'"),
        ("migrate_set_capability x-colo on", "not supported"),
        ("migrate_set_parameter downtime-limit", "missing argument"),
        ("migrate_set_parameter downtime-limit ten", "Error: "),
        ("migrate_set_parameter downtime-limit 99999999", "downtime-limit"),
        ("migrate_set_parameter warp 9", "Error: "),
        ("migrate_cancel now", "extraneous characters"),
        ("stop now", "extraneous characters"),
        ("cont now", "extraneous characters"),
        ("info status now", "extraneous characters"),
        ("quit now", "extraneous characters"),
    ]
    for line, want in cases:
        r = monitor(vm, line)
        check_eq(r.returncode, 1, f"{line!r} exit status ({r.stdout!r})")
        check_in(want, r.stdout, line)
    check_eq(monitor(vm, "info", "migrate_parameters").stdout, before,
             "parameters unchanged")
    check_eq(monitor(vm, "info", "migrate_capabilities").stdout, caps,
             "capabilities unchanged")
    check_eq(vm.status(), "running", "still running (and not quit)")
    check_eq(vm.quit(), 0, "exit")


def test_monitor_plain_qmp_peer():
    """A peer with only QEMU's human-monitor-command (a stand-in server):
    `ferry monitor` falls back to it and takes "Error:" as a failure."""
    import socket
    import threading
    path = tmp_path("fake-qemu.qmp")
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(path)
    ls.listen(4)
    seen = []

    def requests(c):
        """JSON values as they come (QMP needs no newlines)."""
        buf, dec = "", json.JSONDecoder()
        while True:
            buf = buf.lstrip()
            try:
                v, end = dec.raw_decode(buf)
            except ValueError:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk.decode()
                continue
            buf = buf[end:]
            yield v

    def serve():
        for _ in range(2):
            c, _ = ls.accept()
            f = c.makefile("w")
            f.write(json.dumps({"QMP": {"version": {"qemu": {
                "major": 7, "minor": 2, "micro": 0}, "package": ""},
                "capabilities": []}}) + "\n")
            f.flush()
            for req in requests(c):
                seen.append(req["execute"])
                if req["execute"] == "qmp_capabilities":
                    resp = {"return": {}}
                elif req["execute"] == "human-monitor-command":
                    cl = req["arguments"]["command-line"]
                    resp = {"return": "Error: boom\n" if cl == "bad"
                            else "VM status: running\n"}
                else:
                    resp = {"error": {"class": "CommandNotFound",
                                      "desc": "no"}}
                if "id" in req:
                    resp["id"] = req["id"]
                f.write(json.dumps(resp) + "\n")
                f.flush()
            c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r = ferry("monitor", path, "info status")
    check_eq((r.returncode, r.stdout), (0, "VM status: running\n"), "ok line")
    r = ferry("monitor", path, "bad")
    check_eq((r.returncode, r.stdout), (1, "Error: boom\n"), "error line")
    check_in("x-ferry-human-monitor-command", seen, "tried ferry's first")
    check_in("human-monitor-command", seen, "then QEMU's")
    t.join(10)
    ls.close()


def test_hmp_interactive_and_detached():
    dst = VM(incoming="tcp:127.0.0.1:0", **CFG)
    src = VM(**CFG)
    script = (f"info status\nmigrate -d {dst.incoming_uri()}\n"
              "info migrate_parameters\nbogus\n")
    r = ferry("monitor", src.qmp_path, input=script)
    check_eq(r.returncode, 0, "exit status")
    check(r.stdout.startswith("VM status: running\n"), r.stdout)
    check_in("downtime-limit: 300 ms", r.stdout, "parameters")
    check_in("unknown command: 'bogus'", r.stdout, "bad line")
    src.wait_migration(want="completed")
    dst.wait_migration(want="completed")
    # HMP through QMP directly: migrate without -d cannot wait there.
    back = VM(incoming="tcp:127.0.0.1:0", **CFG)
    out = dst.qmp.hmp(f"migrate {back.incoming_uri()}")
    check_eq(out, "terminal does not allow synchronous migration, "
                  "continuing detached\n", "human-monitor-command migrate")
    dst.wait_migration(want="completed")
    check_in("expected: string", qmp_error(
        dst, "human-monitor-command", {"command-line": 5}).desc, "bad type")
    for vm in (src, dst, back):
        check_eq(vm.quit(), 0, "exit")


def test_monitor_stdio():
    qmp_path = tmp_path("stdio.qmp")
    wl = "random,seed=8,wss=8M"
    dst = VM(incoming="tcp:127.0.0.1:0", ram="32M", vcpus=1, workload=wl)
    p = subprocess.Popen([FERRY, "run", "--ram", "32M", "--monitor", "stdio",
                          "--workload", wl,
                          "--qmp", f"unix:{qmp_path}", "-S"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)

    def read_until_prompt(timeout=20):
        buf = b""
        deadline = time.monotonic() + timeout * SLOW
        while not buf.endswith(b"(ferry) "):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                raise AssertionError(f"no prompt; got {buf!r}")
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"stdout closed; got {buf!r}")
            buf += chunk
        return buf.decode()

    try:
        banner = read_until_prompt()
        check_in("monitor", banner, "banner")
        for line, want in [("info status", "VM status: paused (prelaunch)\n"),
                           ("cont", ""), ("info status", "VM status: running\n"),
                           ("migrate_set_capability events on", ""),
                           ("info migrate_capabilities", "events: on"),
                           ("nonsense", "unknown command: 'nonsense'"),
                           ("migrate_set_parameter downtime-limit 250", ""),
                           ("info migrate_parameters",
                            "downtime-limit: 250 ms"),
                           ("migrate_cancel", ""),
                           # A synchronous migrate: the prompt comes back
                           # once it is over.
                           (f"migrate {dst.incoming_uri()}", ""),
                           ("info migrate", "Migration status: completed"),
                           ("info status",
                            "VM status: paused (postmigrate)")]:
            p.stdin.write((line + "\n").encode())
            p.stdin.flush()
            out = read_until_prompt(60)
            if want:
                check_in(want, out, line)
            else:
                check_eq(out, "(ferry) ", line)
        dst.wait_migration(want="completed")
        check_eq(dst.status(), "running", "destination")
        p.stdin.write(b"quit\n")
        p.stdin.flush()
        check_eq(p.wait(20 * SLOW), 0, "exit status")
        check_eq(dst.quit(), 0, "destination exit status")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---- ferry migrate ----

def test_ferry_migrate_cli():
    dst = VM(incoming="tcp:127.0.0.1:0", **CFG)
    src = VM(**CFG)
    r = ferry("migrate", "--qmp", src.qmp_path, "--json", "--interval", "20",
              "--max-bandwidth", str(32 << 20), "-c", "events=on",
              dst.incoming_uri())
    check_eq(r.returncode, 0, f"exit status; stderr {r.stderr}")
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    check(len(lines) >= 2, f"progress lines: {r.stdout}")
    check(all(l["type"] == "progress" for l in lines[:-1]), "progress")
    check(any(0 < l["percent"] < 100 for l in lines[:-1]),
          "a progress line between 0 and 100%")
    last = lines[-1]
    check_eq((last["type"], last["status"]), ("result", "completed"), "result")
    check_in("downtime", last["query-migrate"], "result details")
    check_eq(src.cmd("query-migrate-parameters")["max-bandwidth"], 32 << 20,
             "--max-bandwidth applied")
    dst.wait_migration(want="completed")

    # The human form: a summary on stdout, the bar on stderr.
    back = VM(incoming="tcp:127.0.0.1:0", **CFG)
    r = ferry("migrate", "--qmp", f"unix:{dst.qmp_path}", "--max-bandwidth",
              "0", back.incoming_uri())
    check_eq(r.returncode, 0, f"exit status; stderr {r.stderr}")
    for line in ("Migration completed", "total time", "downtime",
                 "setup time", "transferred", "iterations"):
        check_in(line, r.stdout, "summary")

    # Failure: exit 1 and the reason.
    r = ferry("migrate", "--qmp", back.qmp_path, "unix:" +
              tmp_path("nobody.sock"))
    check_eq(r.returncode, 1, "failed migration")
    check_in("Migration failed", r.stderr, "says it failed")
    check_in("nobody.sock", r.stderr, "says why")
    r = ferry("migrate", "--qmp", back.qmp_path, "bogus:uri")
    check_eq(r.returncode, 1, "bad URI")
    check_in("bogus:uri", r.stderr, "names the URI")
    r = ferry("migrate", "tcp:127.0.0.1:1")
    check_eq(r.returncode, 2, "missing --qmp")
    r = ferry("migrate", "--qmp", tmp_path("none.sock"), "tcp:127.0.0.1:1")
    check_eq(r.returncode, 1, "no such socket")
    check_in("cannot connect", r.stderr, "says why")
    r = ferry("migrate", "--qmp", back.qmp_path, "-c", "events=maybe", "x")
    check_eq(r.returncode, 2, "bad --cap")
    for vm in (src, dst, back):
        check_eq(vm.quit(), 0, "exit")


def test_ferry_migrate_progress_bar():
    """Without a terminal the bar is a line a second on stderr; on a
    terminal it is redrawn in place. Either way: percent, throughput, dirty
    rate, remaining, pass and expected downtime."""
    # 48 MiB of random data (--ram-file) at 24 MiB/s: about two seconds.
    fill = tmp_path("bar-fill.bin")
    with open(fill, "wb") as f:
        f.write(os.urandom(48 << 20))
    cfg = dict(ram="64M", vcpus=2, workload="random,seed=5,wss=8M,rate=4000p")
    dst = VM(incoming="tcp:127.0.0.1:0", **cfg)
    src = VM(extra=["--ram-file", fill], **cfg)
    r = ferry("migrate", "--qmp", src.qmp_path, "--max-bandwidth",
              str(24 << 20), dst.incoming_uri())
    check_eq(r.returncode, 0, f"exit status; stderr {r.stderr}")
    bars = [l for l in r.stderr.splitlines() if l.startswith("[")]
    check(len(bars) >= 2, f"a line a second: {r.stderr!r}")
    for l in bars:
        for part in ("%", "/s, dirty ", "/s, left ", ", pass ",
                     ", exp. downtime ", " ms, "):
            check_in(part, l, "bar line")
    check(any("active" in l and " 0.0%" not in l for l in bars),
          f"progress while active: {bars}")
    check("\r" not in r.stderr, "no redraw without a terminal")
    dst.wait_migration(want="completed")

    # On a terminal (a pty as stderr).
    back = VM(incoming="tcp:127.0.0.1:0", **cfg)
    master, slave = pty.openpty()
    p = subprocess.Popen([FERRY, "migrate", "--qmp", dst.qmp_path,
                          "--max-bandwidth", str(32 << 20),
                          back.incoming_uri()],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=slave)
    os.close(slave)
    tty = b""
    while True:
        ready = select.select([master], [], [], 60 * SLOW)[0]
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        tty += chunk
    out = p.communicate(timeout=30 * SLOW)[0].decode()
    os.close(master)
    check_eq(p.returncode, 0, "exit status on a terminal")
    text = tty.decode(errors="replace")
    check(text.count("\r\x1b[K") >= 3, f"redrawn in place: {text[:300]!r}")
    check_in("Migration completed", out, "the summary on stdout")
    for vm in (src, dst, back):
        check_eq(vm.quit(), 0, "exit")


def test_ferry_migrate_interrupt():
    """Ctrl-C (SIGINT) cancels the migration, waits for it to end, and
    exits 1; the VM goes on running."""
    dst = VM(incoming="tcp:127.0.0.1:0", **SLOW_CFG)
    src = VM(**SLOW_CFG)
    p = subprocess.Popen([FERRY, "migrate", "--qmp", src.qmp_path,
                          "--max-bandwidth", str(4 << 20),
                          dst.incoming_uri()],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    src.wait_status("active")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30 * SLOW)
    check_eq(p.returncode, 1, "exit status")
    check_in("Migration cancelled", err.decode(), "says so")
    check_eq(src.mig_status(), "cancelled", "status")
    check_eq(src.status(), "running", "the VM runs on")
    check_eq(src.quit(), 0, "exit")
    dst.kill()


def test_ferry_run_options():
    for args, want in [
            (["--ram", "lots"], "lots"),
            (["--vcpus", "0"], "--vcpus"),
            (["--workload", "dance"], "dance"),
            (["--workload", "sweep,speed=3"], "speed"),
            (["--dirty-tracking", "magic"], "magic"),
            (["--monitor", "tcp:1"], "--monitor"),
            (["--bogus"], "bogus"),
            (["--uuid", "6ba7b810-9dad-11d1-80b4-00c04fd430cz"], "--uuid"),
            (["--uuid", "6ba7b8109dad-11d1-80b4-00c04fd430c8-"], "--uuid"),
            (["extra"], "extra"),
    ]:
        r = ferry("run", *args)
        check_eq(r.returncode, 2, f"{args} exit status")
        check_in(want, r.stderr, f"{args} message")
    r = ferry("run", "--qmp", "pipe:x")
    check_eq(r.returncode, 1, "bad --qmp")
    check_in("pipe:x", r.stderr, "bad --qmp names it")
    r = ferry("run", "--help")
    check_eq(r.returncode, 0, "--help")
    check_in("--dirty-tracking", r.stdout, "--help text")
    r = ferry("monitor")
    check_eq(r.returncode, 2, "monitor without a socket")


if __name__ == "__main__":
    for t in (test_qmp_protocol, test_run_states_and_events,
              test_debug_commands, test_capabilities_and_parameters,
              test_qmp_bad_arguments, test_migration_events,
              test_events_need_the_capability,
              test_migrate_commands, test_max_bandwidth_bounds_precopy,
              test_pause_before_switchover,
              test_hmp_via_ferry_monitor, test_hmp_bad_arguments,
              test_monitor_plain_qmp_peer,
              test_hmp_interactive_and_detached,
              test_monitor_stdio, test_ferry_migrate_cli,
              test_ferry_migrate_progress_bar, test_ferry_migrate_interrupt,
              test_ferry_run_options):
        run(t)
    done()
