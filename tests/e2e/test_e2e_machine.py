#!/usr/bin/env python3
"""The reference VM end to end, as `ferry run` offers it, each case migrated
live and verified (switchover snapshots equal; the destination run to a
step count equals a VM that never migrated):

- every workload (idle, sweep, random, hotspot) with seed, wss and rate,
  and several vCPUs; the rate is an upper bound on the guest's stores;
- several RAM blocks (--ram-block), with both dirty-tracking backends,
  and gigabytes of (sparse) RAM;
- the UART on every backend (file:, unix:, stdio): the guest's console
  lines, concatenated over two migrations, are exactly the lines of one
  guest that never stopped: none lost, none repeated, none torn;
- the guest clock: frozen while the VM is stopped, and on the destination
  it goes on from the source's value without counting the downtime;
- --ram-file: RAM filled from a file, across several blocks;
- QMP on a tcp socket, with `ferry migrate` and `ferry monitor` over it.
"""
import os
import re
import socket
import subprocess
import threading
import time

from ferrylib import (FERRY, QMP, SLOW, VM, Failed, check, check_eq,
                      check_in, done, ferry, migrate_and_verify,
                      reference_digests, run, tmp_path, wait_until)

# ---- workloads and vCPUs ----

RATE = 60000          # stores per second, machine-wide
VCPUS = 3


def workload_case(workload, transport, tracking):
    spec = f"{workload},seed=17,wss=24M,rate={RATE}p"
    cfg = dict(ram="48M", vcpus=VCPUS, workload=spec, tracking=tracking)
    per_vcpu = RATE // VCPUS

    # The rate is a ceiling: over any interval a vCPU makes at most
    # rate x interval steps, plus the pacer's 100 ms of slack and a batch.
    probe = VM(name=f"rate-{workload}", **cfg)
    t0 = time.monotonic()
    s0 = probe.steps()
    time.sleep(0.5)
    s1 = probe.steps()
    t1 = time.monotonic()
    for a, b in zip(s0, s1):
        bound = per_vcpu * (t1 - t0 + 0.1) + 256
        check(0 < b - a <= bound, f"{workload}: {b - a} steps in "
              f"{t1 - t0:.3f} s at {per_vcpu} steps/s (bound {bound:.0f})")
    check_eq(probe.quit(), 0, "probe exit status")

    info, snap = migrate_and_verify(transport, cfg, warm_steps=per_vcpu // 2,
                                    run_on=per_vcpu // 4,
                                    final=per_vcpu // 2)
    check_eq(len(snap["vcpu-steps"]), VCPUS, "vCPUs")
    check_eq(len(snap["devices"]["cpu"]), VCPUS, "cpu device instances")
    ram = info["ram"]
    if workload == "idle":
        # Nothing was ever written: every page went as a ZERO record.
        check_eq(ram["normal"], 0, "idle: pages sent as PAGE")
        check(ram["duplicate"] >= (48 << 20) // 4096,
              f"idle: zero pages {ram['duplicate']}")
    else:
        check(ram["normal"] > 0, f"{workload}: pages sent {ram}")


def test_workload_idle():
    workload_case("idle", "unix", "bitmap")


def test_workload_sweep():
    workload_case("sweep", "tcp", "uffd-wp")


def test_workload_random():
    workload_case("random", "exec", "bitmap")


def test_workload_hotspot():
    workload_case("hotspot", "fd", "uffd-wp")


# ---- RAM blocks ----

BLOCKS = ["--ram-block", "vga.vram=8M", "--ram-block", "extra.ram=24M"]


def blocks_case(transport, tracking):
    # 64 MiB in three blocks, all of it the working set: vCPU 1's slice
    # spans all three blocks. Paced, so that it converges at the default
    # max-bandwidth.
    cfg = dict(ram="32M", vcpus=VCPUS,
               workload="random,seed=23,wss=64M,rate=30000p",
               tracking=tracking, extra=BLOCKS)
    info, snap = migrate_and_verify(transport, cfg, warm_steps=5000,
                                    run_on=2000, final=10000)
    check_eq([(b["idstr"], b["length"]) for b in snap["ram"]],
             [("pc.ram", 32 << 20), ("vga.vram", 8 << 20),
              ("extra.ram", 24 << 20)], "blocks")
    check_eq(info["ram"]["total"], 64 << 20, "ram total")


def test_blocks_uffd_wp():
    blocks_case("unix", "uffd-wp")


def test_blocks_bitmap():
    blocks_case("tcp", "bitmap")


def test_large_sparse_ram():
    """Sizes like --ram 2G: RAM is a memfd that only holds what the guest
    wrote, and untouched pages travel as ZERO records."""
    cfg = dict(ram="2G", vcpus=2, workload="hotspot,seed=29,wss=32M,"
               "rate=100000p", tracking="uffd-wp",
               extra=["--ram-block", "extra.ram=1G"])
    info, snap = migrate_and_verify("unix", cfg, warm_steps=20000,
                                    run_on=5000, final=20000)
    check_eq(info["ram"]["total"], 3 << 30, "ram total")
    check(info["ram"]["duplicate"] > (3 << 30) // 4096 - (32 << 20) // 4096,
          f"zero pages: {info['ram']}")


# ---- the UART on every backend ----

EVERY = 2000
LINE = re.compile(r"ferry guest: step (\d+) time (\d+)\.(\d{3})s")


class UnixSink(threading.Thread):
    """A listening unix socket that keeps what its one client sends."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(1)
        self.data = b""
        self.start()

    def run(self):
        c, _ = self.lsock.accept()
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            self.data += chunk
        c.close()


def console_lines(text, what):
    """The complete lines, checked: each is a progress line, the k-th of
    them printed at step k * EVERY (or just after), the guest time never
    going back."""
    lines = text.split("\n")[:-1]     # the last one may be cut short
    last_ns = -1
    for i, line in enumerate(lines):
        m = LINE.fullmatch(line)
        if not check(m, f"{what}: line {i + 1} is torn: {line!r}"):
            return lines
        step = int(m.group(1))
        ns = int(m.group(2)) * 10 ** 9 + int(m.group(3)) * 10 ** 6
        if not check(step // EVERY == i + 1,
                     f"{what}: line {i + 1} is for step {step}: a line was "
                     f"lost or repeated\n" + "\n".join(lines[max(0, i - 3):
                                                             i + 2])):
            return lines
        check(ns >= last_ns, f"{what}: guest time went back at line {i + 1}")
        last_ns = ns
    return lines


def migrate_live(src, dst, uri, dst_paused=False):
    """Migrate and compare the source at its switchover with the
    destination before it ran (a paused destination: as it is now)."""
    src.cmd("migrate", uri=uri)
    src.wait_migration(want="completed")
    dst.wait_migration(want="completed")
    a = src.cmd("x-ferry-switchover-snapshot")
    b = dst.cmd("x-ferry-snapshot" if dst_paused
                else "x-ferry-switchover-snapshot")
    check_eq(b, a, "switchover snapshots")
    return a


def test_serial_every_backend():
    """file: -> unix: -> stdio, one guest console."""
    cfg = dict(ram="32M", vcpus=2, workload=f"random,seed=31,wss=8M,"
               f"rate=40000p", extra=["--serial-every", str(EVERY)])
    path_a = tmp_path("console-a.txt")
    sink = UnixSink(tmp_path("console-b.sock"))
    a = VM(name="con-a", **dict(cfg, extra=cfg["extra"] + [
        "--serial", f"file:{path_a}"]))
    b = VM(name="con-b", incoming="tcp:127.0.0.1:0", **dict(
        cfg, extra=cfg["extra"] + ["--serial",
                                   f"unix:{tmp_path('console-b.sock')}"]))
    c = VM(name="con-c", incoming="tcp:127.0.0.1:0", stdout=subprocess.PIPE,
           **dict(cfg, extra=cfg["extra"] + ["--serial", "stdio"]))
    wait_until(lambda: min(a.steps()) > 6 * EVERY, 20, "lines on the source")
    migrate_live(a, b, b.incoming_uri())
    wait_until(lambda: min(b.steps()) > max(a.steps()) + 6 * EVERY, 20,
               "lines on the second VM")
    migrate_live(b, c, c.incoming_uri())
    wait_until(lambda: min(c.steps()) > max(b.steps()) + 6 * EVERY, 20,
               "lines on the third VM")
    c.stop()
    for vm in (a, b):
        check_eq(vm.quit(), 0, f"{vm.name} exit status")
    check_eq(c.quit(), 0, "third VM exit status")
    sink.join(10)
    out_a = open(path_a).read()
    out_b = sink.data.decode()
    out_c = c.proc.stdout.read().decode()
    for what, out in (("file:", out_a), ("unix:", out_b), ("stdio", out_c)):
        check(out.count("\n") >= 3, f"{what} backend printed {out!r}")
    lines = console_lines(out_a + out_b + out_c, "console over two migrations")
    print(f"# {len(lines)} console lines: {out_a.count(chr(10))} on file:, "
          f"{out_b.count(chr(10))} on unix:, {out_c.count(chr(10))} on stdio",
          flush=True)


def test_serial_unix_not_listening():
    r = ferry("run", "--serial", f"unix:{tmp_path('nobody.sock')}")
    check_eq(r.returncode, 1, "exit status")
    check_in("nobody.sock", r.stderr, "names the socket")
    r = ferry("run", "--serial", "pipe:x")
    check_eq(r.returncode, 1, "exit status for a bad backend")
    check_in("pipe:x", r.stderr, "names the backend")


# ---- the guest clock ----

def clock(vm):
    return vm.cmd("x-ferry-query-vcpus")["clock-ns"]


def test_clock_continues_without_jump():
    cfg = dict(ram="32M", vcpus=2, workload="random,seed=37,wss=8M")
    dst = VM(incoming="tcp:127.0.0.1:0", paused=True, name="clk-dst", **cfg)
    src = VM(name="clk-src", **cfg)
    c0 = clock(src)
    wait_until(lambda: clock(src) > c0, 10, "the source's clock to run")
    snap = migrate_live(src, dst, dst.incoming_uri(), dst_paused=True)
    at_stop = snap["devices"]["clock"]["ns"]
    # Stopped VMs: the clock stands still, on both sides.
    check_eq(clock(src), at_stop, "source clock after the switchover")
    check_eq(clock(dst), at_stop, "destination clock before cont")
    time.sleep(1.0)
    check_eq(clock(src), at_stop, "source clock, a second later")
    check_eq(clock(dst), at_stop, "destination clock, a second later")
    # The destination goes on from at_stop: it cannot gain more than the
    # time that passed since cont (the second it waited does not count).
    t0 = time.monotonic_ns()
    dst.cmd("cont")
    time.sleep(0.2)
    now = clock(dst)
    t1 = time.monotonic_ns()
    check(0 < now - at_stop <= t1 - t0 + 10 ** 6,
          f"destination clock gained {(now - at_stop) / 1e6:.1f} ms in "
          f"{(t1 - t0) / 1e6:.1f} ms of running")
    # The timer device came along, running on that clock.
    timer = snap["devices"]["ferry-timer"]
    check(timer["ctrl"] & 1, f"timer enabled: {timer}")
    for vm in (src, dst):
        check_eq(vm.quit(), 0, "exit status")


# ---- --ram-file ----

def write_file(name, size, chunks):
    """A sparse file of `size` bytes with data only where chunks say:
    [(offset, bytes)]."""
    path = tmp_path(name)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in chunks:
            f.seek(off)
            f.write(data)
    return path


def test_ram_file():
    rnd = os.urandom(1 << 20)
    # 16 MiB over two 8 MiB blocks: data at 3 MiB (pc.ram) and 12 MiB
    # (second block), holes elsewhere.
    f1 = write_file("fill1.bin", 16 << 20, [(3 << 20, rnd), (12 << 20, rnd)])
    f2 = write_file("fill2.bin", 16 << 20, [(3 << 20, rnd),
                                            (12 << 20, rnd[:-1] + b"\0")])
    f3 = write_file("fill3.bin", 8 << 20, [(3 << 20, rnd)])
    base = dict(ram="8M", vcpus=2, workload="sweep,seed=41,wss=4M",
                extra=["--ram-block", "b2=8M"])

    def with_file(path):
        return dict(base, extra=base["extra"] + ["--ram-file", path])

    n = 30000
    plain = reference_digests(n, **base)
    one = reference_digests(n, **with_file(f1))
    again = reference_digests(n, **with_file(f1))
    other = reference_digests(n, **with_file(f2))
    short = reference_digests(n, **with_file(f3))
    check_eq(one, again, "the same file, the same RAM")
    check(one[0]["digest"] != plain[0]["digest"], "pc.ram was filled")
    check(one[1]["digest"] != plain[1]["digest"], "the second block was "
          "filled from the file's second half")
    check_eq(other[0], one[0], "pc.ram from the same first half")
    check(other[1]["digest"] != one[1]["digest"], "one byte differs in b2")
    check_eq(short[0], one[0], "a shorter file fills pc.ram alike")
    check_eq(short[1], plain[1], "and leaves the second block zero")

    # A filled VM migrates like any other; the destination has no file.
    cfg = dict(base, workload="sweep,seed=41,wss=16M",
               extra=base["extra"] + ["--ram-file", f1])
    dcfg = dict(cfg, extra=base["extra"])
    migrate_and_verify("unix", cfg, dst_cfg=dcfg, warm_steps=20000)

    for args, want in [([f1 + ".missing"], "No such file"),
                       ([tmp_path("")], "not a regular file")]:
        r = ferry("run", "--ram", "32M", "--ram-file", *args)
        check_eq(r.returncode, 1, f"{args} exit status")
        check_in(want, r.stderr, f"{args} message")
    r = ferry("run", "--ram", "4M", "--ram-file", f1)
    check_eq(r.returncode, 1, "a file larger than RAM")
    check_in("more than the guest's 4194304 bytes", r.stderr, "says so")
    r = ferry("run", "--ram-file", f1, "--incoming", "defer")
    check_eq(r.returncode, 2, "--ram-file with --incoming")


# ---- QMP on tcp ----

def test_qmp_tcp():
    stderr_path = tmp_path("qmp-tcp.stderr")
    with open(stderr_path, "w") as err:
        p = subprocess.Popen([FERRY, "run", "--ram", "32M", "--qmp",
                              "tcp:127.0.0.1:0", "--workload",
                              "random,seed=43,wss=8M"],
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err)
    from ferrylib import _procs
    _procs.append(p)

    def address():
        m = re.search(r"QMP listening on (tcp:127\.0\.0\.1:\d+)",
                      open(stderr_path).read())
        return m.group(1) if m else None
    addr = wait_until(address, 20, "the QMP address on stderr")
    host, port = addr.split(":")[1:]
    s = socket.create_connection((host, int(port)), timeout=10 * SLOW)
    f = s.makefile("rw")
    greeting = f.readline()
    check_in('"QMP"', greeting, "greeting over tcp")
    f.write('{"execute": "qmp_capabilities", "id": 1}\n')
    f.flush()
    check_in('"return"', f.readline(), "negotiated")
    f.write('{"execute": "query-status", "id": 2}\n')
    f.flush()
    check_in('"running"', f.readline(), "query-status over tcp")
    s.close()

    r = ferry("monitor", addr, "info status")
    check_eq((r.returncode, r.stdout), (0, "VM status: running\n"),
             "ferry monitor over tcp")
    dst = VM(incoming="tcp:127.0.0.1:0", ram="32M", vcpus=1,
             workload="random,seed=43,wss=8M")
    r = ferry("migrate", "--qmp", addr, "--max-bandwidth", "0",
              dst.incoming_uri())
    check_eq(r.returncode, 0, f"ferry migrate over tcp QMP: {r.stderr}")
    check_in("Migration completed", r.stdout, "summary")
    dst.wait_migration(want="completed")
    r = ferry("monitor", addr, "quit")
    check_eq(r.returncode, 0, "quit")
    check_eq(p.wait(20 * SLOW), 0, "exit status")
    check_eq(dst.quit(), 0, "destination exit status")


if __name__ == "__main__":
    for t in (test_workload_idle, test_workload_sweep, test_workload_random,
              test_workload_hotspot, test_blocks_uffd_wp, test_blocks_bitmap,
              test_large_sparse_ram,
              test_serial_every_backend, test_serial_unix_not_listening,
              test_clock_continues_without_jump, test_ram_file,
              test_qmp_tcp):
        run(t)
    done()
