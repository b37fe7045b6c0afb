#!/usr/bin/env python3
"""Failures, with real processes: the destination killed (kill -9) before
the source connects, while RAM streams (active) and at the switchover
(device phase); the connection cut by a proxy; a cancel; and configuration
mismatches (RAM size, RAM blocks, vCPUs, machine type), where both sides
must say what differs.

After every failure the source must report `failed` (or `cancelled`) with
an error-desc that says what happened, keep running its VM, and the VM must
be intact: stopped and run to a step count, its RAM equals a VM that never
tried to migrate.
"""
import os

from ferrylib import (VM, Proxy, QMPError, check, check_eq, check_in, done,
                      free_port, reference_digests, run, tmp_path, wait_until)

# All 64 MiB written by the guest: nothing is a cheap zero page, so a
# migration held at 8 MiB/s stays active for seconds.
SLOW_CFG = dict(ram="64M", vcpus=2, workload="sweep,seed=21")
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


def test_kill_destination_active():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **SLOW_CFG)
    src = VM(name="src", **SLOW_CFG)
    hold_active(src, dst.incoming_uri())
    dst.kill()
    info = src.wait_migration(want="failed")
    desc = info.get("error-desc", "")
    check(any(w in desc for w in ("Broken pipe", "Connection reset")),
          f"error-desc says the connection broke: {desc!r}")
    source_intact(src, SLOW_CFG, "active")


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
    check(info.get("error-desc"), f"error-desc: {info}")
    source_intact(src, FAST_CFG, "device")


def test_cut_connection():
    dst = VM(incoming="tcp:127.0.0.1:0", name="dst", **SLOW_CFG)
    proxy = Proxy(int(dst.incoming_uri().rsplit(":", 1)[1]))
    src = VM(name="src", **SLOW_CFG)
    hold_active(src, f"tcp:127.0.0.1:{proxy.port}")
    check(proxy.bytes > (2 << 20), f"bytes through the proxy: {proxy.bytes}")
    proxy.cut()
    info = src.wait_migration(want="failed")
    check(info.get("error-desc"), f"error-desc: {info}")
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
    check(info.get("error-desc"), f"error-desc: {info}")
    check_eq(dst.wait_exit(30), 1, "destination exit status")
    check_in("incoming migration failed", dst.stderr(), "destination stderr")
    source_intact(src, FAST_CFG, "cut at device")


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


# ---- configuration mismatches ----

def mismatch(src_kw, dst_kw, dst_words, return_path,
             src_any=("destination",)):
    cfg = dict(FAST_CFG)
    dcfg = dict(cfg, **dst_kw)
    scfg = dict(cfg, **src_kw)
    # The destination's capabilities can only change before it listens:
    # --incoming defer, then migrate-incoming (as with QEMU).
    dst = VM(incoming="defer", name="dst", **dcfg)
    check_eq(dst.status(), "inmigrate", "destination run state")
    if return_path:
        dst.set_caps(return_path=True)
    dst.cmd("migrate-incoming", uri="tcp:127.0.0.1:0")
    src = VM(name="src", **scfg)
    if return_path:
        src.set_caps(return_path=True)
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
              test_kill_destination_active,
              test_kill_destination_device,
              test_cut_connection,
              test_cut_connection_device,
              test_cancel,
              test_mismatch_ram_size,
              test_mismatch_ram_size_return_path,
              test_mismatch_ram_block,
              test_mismatch_vcpus,
              test_mismatch_machine_type,
              test_bad_stream_file,
              test_bad_incoming_uri):
        run(t)
    done()
