#!/usr/bin/env python3
"""Failures, with real processes, at each phase of a migration:

  setup    the destination killed before the source connects, and while
           the source's connect waits in its full backlog (it is stopped);
           the connection reset as soon as it is accepted
  active   the destination killed, the connection cut, while RAM streams
           (with both dirty-tracking backends)
  device   the destination killed / the connection cut while paused before
           the switchover, and while the final state is being sent (the
           destination stopped, so the source blocks in the send)
  cancel   in setup, active, pre-switchover and device

and configuration mismatches (RAM size, RAM blocks, vCPUs, machine type),
where both sides must say what differs.

After every failure the source must report `failed` (or `cancelled`) with
an error-desc that says what happened, keep running its VM, and the VM must
be intact: stopped and run to a step count, its RAM equals a VM that never
tried to migrate.
"""
import os
import signal
import time

from ferrylib import (SLOW, VM, Proxy, check, check_eq, check_in, done,
                      fill_unix_backlog, free_port, reference_digests, run,
                      sigstop, tmp_path, wait_until)

# All 64 MiB written by the guest: nothing is a cheap zero page, so a
# migration held at 8 MiB/s stays active for seconds.
SLOW_CFG = dict(ram="64M", vcpus=2, workload="sweep,seed=21")
SLOW_UFFD_CFG = dict(SLOW_CFG, tracking="uffd-wp")
BROKEN = ("Broken pipe", "Connection reset")
# With the return path the source may see the destination go there first.
BROKEN_RP = BROKEN + ("return path",)
FAST_CFG = dict(ram="64M", vcpus=2, workload="random,seed=9,wss=8M")


def note(what, text):
    for line in (text or "").strip().splitlines():
        print(f"# {what}: {line}", flush=True)


def source_intact(src, cfg, what):
    """The source runs on after the failure, and its RAM is right."""
    note(f"{what}: source error-desc", src.query_migrate().get("error-desc"))
    check_eq(src.status(), "running", f"{what}: source run state")
    s0 = src.steps()
    wait_until(lambda: all(x > y for x, y in zip(src.steps(), s0)), 20,
               "the source to run on")
    src.stop()
    n = max(src.steps()) + 20000
    src.run_until(n)
    check_eq(src.digests(), reference_digests(n, **cfg),
             f"{what}: source RAM at step {n} vs a VM that never migrated")
    check_eq(src.quit(), 0, f"{what}: source exit status")


def hold_active(src, dst_uri, **caps):
    src.set_params(max_bandwidth=8 << 20)
    if caps:
        src.set_caps(**caps)
    src.cmd("migrate", uri=dst_uri)
    src.wait_status("active")
    wait_until(lambda: src.query_migrate().get("ram", {}).get(
        "transferred", 0) > (2 << 20), 20, "some RAM to be sent")


def test_kill_destination_before_connect():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **FAST_CFG)
    uri = dst.incoming_uri()
    dst.kill()
    src = VM(name="src", **FAST_CFG)
    src.cmd("migrate", uri=uri)
    info = src.wait_migration(want="failed")
    check_in("Connection refused", info.get("error-desc"), "error-desc")
    check_in(uri.split(":", 1)[1], info.get("error-desc"), "error-desc")
    source_intact(src, FAST_CFG, "setup")


def test_kill_destination_setup():
    """The source's connect is stuck in setup (the destination is stopped
    and its listen backlog full) when the destination dies."""
    path = tmp_path("setup.sock")
    dst = VM(incoming=f"unix:{path}", name="dst", **FAST_CFG)
    sigstop(dst.proc)
    backlog = fill_unix_backlog(path)
    src = VM(name="src", **FAST_CFG)
    src.set_caps(events=True)
    src.cmd("migrate", uri=f"unix:{path}")
    time.sleep(0.3 * SLOW)
    check_eq(src.mig_status(), "setup", "status while connecting")
    check_eq(src.status(), "running", "the VM runs meanwhile")
    dst.kill()
    info = src.wait_migration(want="failed")
    check_in("Connection refused", info.get("error-desc"), "error-desc")
    check_in(path, info.get("error-desc"), "error-desc names the address")
    src.qmp.wait_event("MIGRATION", pred=lambda e: e["data"]["status"] ==
                       "failed")
    ev = [e["data"]["status"] for e in src.qmp.events
          if e["event"] == "MIGRATION"]
    check_eq(ev, ["setup"], "MIGRATION events before failed")
    for sk in backlog:
        sk.close()
    source_intact(src, FAST_CFG, "setup")


def test_cut_connection_setup():
    """The link drops as soon as the source connects: reset before the
    destination has read a byte."""
    proxy = Proxy(free_port(), reset_on_accept=True)
    src = VM(name="src", **FAST_CFG)
    src.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
    info = src.wait_migration(want="failed")
    check_eq(proxy.accepted, 1, "connections")
    desc = info.get("error-desc", "")
    check(any(w in desc for w in BROKEN),
          f"error-desc says the connection broke: {desc!r}")
    proxy.cut()
    source_intact(src, FAST_CFG, "cut at setup")


def kill_active(cfg, what):
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **cfg)
    src = VM(name="src", **cfg)
    hold_active(src, dst.incoming_uri())
    dst.kill()
    info = src.wait_migration(want="failed")
    desc = info.get("error-desc", "")
    check(any(w in desc for w in BROKEN),
          f"error-desc says the connection broke: {desc!r}")
    source_intact(src, cfg, what)


def test_kill_destination_active():
    kill_active(SLOW_CFG, "active")


def test_kill_destination_active_uffd_wp():
    kill_active(SLOW_UFFD_CFG, "active, uffd-wp")


def test_kill_destination_device():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **FAST_CFG)
    src = VM(name="src", **FAST_CFG)
    # With the return path the source waits for the destination's verdict,
    # so the kill cannot go unnoticed even if the last bytes fit in socket
    # buffers.
    src.set_caps(pause_before_switchover=True, return_path=True)
    src.cmd("migrate", uri=dst.incoming_uri())
    src.wait_status("pre-switchover")
    check_eq(src.status(), "finish-migrate", "run state while paused")
    dst.kill()
    src.cmd("migrate-continue", state="pre-switchover")
    info = src.wait_migration(want="failed")
    desc = info.get("error-desc", "")
    check(any(w in desc for w in BROKEN_RP),
          f"error-desc says the connection broke: {desc!r}")
    source_intact(src, FAST_CFG, "device")


def test_cut_connection():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **SLOW_CFG)
    proxy = Proxy(int(dst.incoming_uri().rsplit(":", 1)[1]))
    src = VM(name="src", **SLOW_CFG)
    hold_active(src, f"tcp:127.0.0.1:{proxy.port}")
    check(proxy.bytes > (2 << 20), f"bytes through the proxy: {proxy.bytes}")
    proxy.cut()
    info = src.wait_migration(want="failed")
    desc = info.get("error-desc", "")
    check(any(w in desc for w in BROKEN),
          f"error-desc says the connection broke: {desc!r}")
    # The destination gives up on the broken stream: exit 1, with why.
    rc = dst.wait_exit(30)
    check_eq(rc, 1, "destination exit status")
    check_in("incoming migration failed", dst.stderr(), "destination stderr")
    source_intact(src, SLOW_CFG, "cut")


def test_cut_connection_device():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **FAST_CFG)
    proxy = Proxy(int(dst.incoming_uri().rsplit(":", 1)[1]))
    src = VM(name="src", **FAST_CFG)
    src.set_caps(pause_before_switchover=True, return_path=True)
    src.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
    src.wait_status("pre-switchover")
    proxy.cut()
    src.cmd("migrate-continue", state="pre-switchover")
    info = src.wait_migration(want="failed")
    desc = info.get("error-desc", "")
    check(any(w in desc for w in BROKEN_RP),
          f"error-desc says the connection broke: {desc!r}")
    check_eq(dst.wait_exit(30), 1, "destination exit status")
    check_in("incoming migration failed", dst.stderr(), "destination stderr")
    source_intact(src, FAST_CFG, "cut at device")


def hold_device(src, dst_uri, stop_peer):
    """Bring the source into the device phase with most of RAM still to
    send, and keep it there: pause before the switchover, switch over at
    once (a huge downtime-limit at 8 MiB/s), stop the peer, continue. The
    ~60 MiB of final pages cannot all fit in socket buffers, so the source
    blocks in the send, in status device, with the VM stopped."""
    src.set_params(max_bandwidth=8 << 20, downtime_limit=2000000)
    src.set_caps(pause_before_switchover=True, events=True)
    src.cmd("migrate", uri=dst_uri)
    src.wait_status("pre-switchover")
    stop_peer()
    src.cmd("migrate-continue", state="pre-switchover")
    src.wait_status("device")
    time.sleep(0.3 * SLOW)
    info = src.query_migrate()
    check_eq(info.get("status"), "device", "still sending the final state")
    check_eq(src.status(), "finish-migrate", "run state while sending")


def test_kill_destination_device_sending():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **SLOW_CFG)
    src = VM(name="src", **SLOW_CFG)
    hold_device(src, dst.incoming_uri(), lambda: sigstop(dst.proc))
    dst.kill()
    info = src.wait_migration(want="failed")
    desc = info.get("error-desc", "")
    check(any(w in desc for w in BROKEN),
          f"error-desc says the connection broke: {desc!r}")
    source_intact(src, SLOW_CFG, "device (sending)")


def test_cut_connection_device_sending():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **SLOW_CFG)
    proxy = Proxy(int(dst.incoming_uri().rsplit(":", 1)[1]))
    src = VM(name="src", **SLOW_CFG)
    hold_device(src, f"tcp:127.0.0.1:{proxy.port}", proxy.hold)
    proxy.cut()
    info = src.wait_migration(want="failed")
    desc = info.get("error-desc", "")
    check(any(w in desc for w in BROKEN),
          f"error-desc says the connection broke: {desc!r}")
    check_eq(dst.wait_exit(30), 1, "destination exit status")
    check_in("incoming migration failed", dst.stderr(), "destination stderr")
    source_intact(src, SLOW_CFG, "cut at device (sending)")


def test_return_path_waits_for_destination():
    """With the return path the source completes only when the destination
    says it loaded the VM: while the destination is stopped after the whole
    stream was sent, the source stays in device, and can no longer cancel."""
    cfg = dict(ram="64M", vcpus=2, workload="idle")
    dst = VM(incoming="defer", name="dst", **cfg)
    dst.set_caps(return_path=True)
    dst.cmd("migrate-incoming", uri="tcp:127.0.0.1:0")
    src = VM(name="src", **cfg)
    src.set_caps(return_path=True, pause_before_switchover=True)
    src.cmd("migrate", uri=dst.incoming_uri())
    src.wait_status("pre-switchover")
    sigstop(dst.proc)
    src.cmd("migrate-continue", state="pre-switchover")
    src.wait_status("device")
    time.sleep(0.5 * SLOW)
    check_eq(src.mig_status(), "device", "waiting for the destination")
    r = src.qmp.execute("migrate_cancel")
    check_in("can no longer be cancelled", r.get("error", {}).get("desc"),
             "cancel after the whole stream is out")
    os.kill(dst.proc.pid, signal.SIGCONT)
    info = src.wait_migration(want="completed")
    dst.wait_migration(want="completed")
    check_eq(dst.status(), "running", "destination")
    # The vCPUs stopped before the pause and the destination answered after
    # the half second it was stopped: the downtime covers both.
    check(info["downtime"] >= 500,
          f"the downtime runs to the destination's start: {info}")
    for vm in (src, dst):
        check_eq(vm.quit(), 0, "exit")


def cancelled_events(src):
    statuses = []
    for _ in range(2):
        statuses.append(src.qmp.wait_event(
            "MIGRATION", pred=lambda e: e["data"]["status"] in
            ("cancelling", "cancelled"))["data"]["status"])
    check_eq(statuses, ["cancelling", "cancelled"], "MIGRATION events")


def test_cancel_setup():
    path = tmp_path("cancel-setup.sock")
    dst = VM(incoming=f"unix:{path}", name="dst", **FAST_CFG)
    sigstop(dst.proc)
    backlog = fill_unix_backlog(path)
    src = VM(name="src", **FAST_CFG)
    src.set_caps(events=True)
    src.cmd("migrate", uri=f"unix:{path}")
    time.sleep(0.3 * SLOW)
    check_eq(src.mig_status(), "setup", "status while connecting")
    src.cmd("migrate_cancel")
    try:
        # The destination stays stopped: only the cancel may end it.
        info = src.wait_migration(timeout=10)
        check_eq(info.get("status"), "cancelled", "after cancel in setup")
        cancelled_events(src)
    finally:
        dst.kill()
        for sk in backlog:
            sk.close()
    source_intact(src, FAST_CFG, "cancel in setup")


def test_cancel_pre_switchover():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **FAST_CFG)
    src = VM(name="src", **FAST_CFG)
    src.set_caps(pause_before_switchover=True, events=True)
    src.cmd("migrate", uri=dst.incoming_uri())
    src.wait_status("pre-switchover")
    src.cmd("migrate_cancel")
    info = src.wait_migration(want="cancelled")
    check("error-desc" not in info, f"no error-desc on cancel: {info}")
    cancelled_events(src)
    check_eq(dst.wait_exit(30), 1, "destination exit status")
    source_intact(src, FAST_CFG, "cancel in pre-switchover")


def test_cancel_device_sending():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **SLOW_CFG)
    src = VM(name="src", **SLOW_CFG)
    hold_device(src, dst.incoming_uri(), lambda: sigstop(dst.proc))
    src.cmd("migrate_cancel")
    info = src.wait_migration(want="cancelled")
    check("error-desc" not in info, f"no error-desc on cancel: {info}")
    cancelled_events(src)
    os.kill(dst.proc.pid, signal.SIGCONT)
    check_eq(dst.wait_exit(30), 1, "destination exit status")
    source_intact(src, SLOW_CFG, "cancel in device")


def test_cancel():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **SLOW_CFG)
    src = VM(name="src", **SLOW_CFG)
    src.set_caps(events=True)
    hold_active(src, dst.incoming_uri())
    src.cmd("migrate_cancel")
    info = src.wait_migration(want="cancelled")
    check("error-desc" not in info, f"no error-desc on cancel: {info}")
    statuses = []
    for _ in range(2):
        statuses.append(src.qmp.wait_event(
            "MIGRATION", pred=lambda e: e["data"]["status"] in
            ("cancelling", "cancelled"))["data"]["status"])
    check_eq(statuses, ["cancelling", "cancelled"], "MIGRATION events")
    check_eq(dst.wait_exit(30), 1, "destination exit status")
    source_intact(src, SLOW_CFG, "cancel")


def test_transport_failures():
    """Each transport failing its own way: the source reports `failed`
    with the root cause in error-desc, and runs on, intact."""
    src = VM(name="src", **FAST_CFG)
    for uri, words in [
            ("exec:exit 3", ["exec:exit 3", "exited with status 3"]),
            ("exec:head -c 4096 > /dev/null", ["exec:head", "Broken pipe"]),
            ("file:" + tmp_path("no/such/dir/vm.img"),
             ["no/such/dir/vm.img", "No such file or directory"]),
            ("fd:77", ["fd:77", "Bad file descriptor"]),
            ("unix:" + tmp_path("nobody-listens.sock"),
             ["nobody-listens.sock", "No such file or directory"])]:
        src.cmd("migrate", uri=uri)
        info = src.wait_migration(want="failed")
        note(uri, info.get("error-desc"))
        for w in words:
            check_in(w, info.get("error-desc"), f"{uri}: error-desc")
        check_eq(src.status(), "running", f"{uri}: the VM runs on")
    source_intact(src, FAST_CFG, "transport failures")


# ---- configuration mismatches ----

def mismatch(src_kw, dst_kw, dst_words, return_path,
             src_any=("destination",), caps=None):
    cfg = dict(FAST_CFG)
    dcfg = dict(cfg, **dst_kw)
    scfg = dict(cfg, **src_kw)
    # The destination's capabilities can only change before it listens:
    # --incoming defer, then migrate-incoming (as with QEMU).
    dst = VM(incoming="defer", name="dst", **dcfg)
    check_eq(dst.status(), "inmigrate", "destination run state")
    if return_path:
        dst.set_caps(return_path=True)
    if caps:
        dst.set_caps(**caps)
    dst.cmd("migrate-incoming", uri="tcp:127.0.0.1:0")
    src = VM(name="src", **scfg)
    if return_path:
        src.set_caps(return_path=True)
    if caps:
        src.set_caps(**caps)
    src.cmd("migrate", uri=dst.incoming_uri())
    info = src.wait_migration(want="failed")
    rc = dst.wait_exit(30)
    check_eq(rc, 1, "destination exit status")
    err = dst.stderr()
    note("destination stderr", err)
    check_in("incoming migration failed", err, "destination stderr")
    for w in dst_words:
        check_in(w, err, "destination's error names the difference")
    desc = info.get("error-desc", "")
    if return_path:
        check(any(w in desc for w in src_any),
              f"source error-desc {desc!r} has one of {src_any}")
    check(desc, "source error-desc is set")
    source_intact(src, scfg, "mismatch")


def test_mismatch_ram_size():
    mismatch({"ram": "64M"}, {"ram": "32M"}, ["pc.ram"], return_path=False)


def test_mismatch_ram_size_return_path():
    mismatch({"ram": "64M"}, {"ram": "96M"}, ["pc.ram"], return_path=True)


def test_mismatch_ram_block():
    mismatch({"extra": ["--ram-block", "vga.vram=4M"]}, {}, ["vga.vram"],
             return_path=True)


def test_mismatch_vcpus():
    mismatch({"vcpus": 3}, {}, ["cpu"], return_path=True)


def test_mismatch_machine_type():
    # The destination refuses the configuration section, before the
    # command that opens the return path: the source sees the connection
    # go, or the return path end.
    mismatch({"extra": ["--machine-type", "other-machine-9"]}, {},
             ["other-machine-9"], return_path=True,
             src_any=("destination", "return path", "Connection reset",
                      "Broken pipe"))


UUID_A = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
UUID_B = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"


def test_mismatch_uuid():
    """validate-uuid: a destination with another UUID refuses the VM and
    names both UUIDs."""
    mismatch({"extra": ["--uuid", UUID_A]}, {"extra": ["--uuid", UUID_B]},
             [UUID_A, UUID_B], return_path=True,
             caps={"validate_uuid": True})


def test_validate_uuid_same():
    """validate-uuid with the same UUID on both sides: the migration
    completes (the uuid subsection is sent and checked)."""
    cfg = dict(FAST_CFG, extra=["--uuid", UUID_A])
    # The stream carries QEMU's configuration/uuid subsection with the
    # UUID's 16 bytes only with the capability on.
    raw = bytes.fromhex(UUID_A.replace("-", ""))
    for on in (False, True):
        vm = VM(name=f"file-{on}", **cfg)
        vm.set_caps(validate_uuid=on)
        path = tmp_path(f"uuid-{on}.img")
        vm.cmd("migrate", uri=f"file:{path}")
        vm.wait_migration(want="completed")
        with open(path, "rb") as f:
            data = f.read()
        check_eq(b"configuration/uuid" in data and raw in data, on,
                 f"uuid subsection with validate-uuid={on}")
        check_eq(vm.quit(), 0, "exit")
    dst = VM(incoming="defer", name="dst", **cfg)
    dst.set_caps(validate_uuid=True)
    dst.cmd("migrate-incoming", uri="tcp:127.0.0.1:0")
    src = VM(name="src", **cfg)
    src.set_caps(validate_uuid=True)
    src.cmd("migrate", uri=dst.incoming_uri())
    src.wait_migration(want="completed")
    dst.wait_migration(want="completed")
    check_eq(dst.status(), "running", "destination")
    for vm in (src, dst):
        check_eq(vm.quit(), 0, "exit")


def test_bad_stream_file():
    path = tmp_path("garbage.img")
    with open(path, "wb") as f:
        f.write(b"QEVM\x00\x00\x00\x03" + os.urandom(4096))
    dst = VM(incoming=f"file:{path}", name="dst", wait_qmp=False, **FAST_CFG)
    check_eq(dst.wait_exit(30), 1, "exit status")
    check_in("incoming migration failed", dst.stderr(), "stderr")
    check_in("stream offset", dst.stderr(), "the error says where")


def test_bad_incoming_uri():
    dst = VM(incoming="carrier-pigeon:7", name="dst", wait_qmp=False,
             **FAST_CFG)
    check_eq(dst.wait_exit(30), 1, "exit status")
    check_in("carrier-pigeon:7", dst.stderr(), "stderr names the URI")
    port = free_port()
    busy = VM(incoming=f"tcp:127.0.0.1:{port}", name="busy", **FAST_CFG)
    dst = VM(incoming=f"tcp:127.0.0.1:{port}", name="dst2", wait_qmp=False,
             **FAST_CFG)
    check_eq(dst.wait_exit(30), 1, "exit status on a busy port")
    check_in("Address already in use", dst.stderr(), "stderr")
    check_eq(busy.quit(), 0, "the other destination exits cleanly")


if __name__ == "__main__":
    for t in (test_kill_destination_before_connect,
              test_kill_destination_setup,
              test_cut_connection_setup,
              test_kill_destination_active,
              test_kill_destination_active_uffd_wp,
              test_kill_destination_device,
              test_kill_destination_device_sending,
              test_cut_connection,
              test_cut_connection_device,
              test_cut_connection_device_sending,
              test_return_path_waits_for_destination,
              test_cancel_setup,
              test_cancel_pre_switchover,
              test_cancel_device_sending,
              test_cancel,
              test_transport_failures,
              test_mismatch_ram_size,
              test_mismatch_ram_size_return_path,
              test_mismatch_ram_block,
              test_mismatch_vcpus,
              test_mismatch_machine_type,
              test_mismatch_uuid,
              test_validate_uuid_same,
              test_bad_stream_file,
              test_bad_incoming_uri):
        run(t)
    done()
