"""ferrylib: helpers for ferry's end-to-end tests.

Real processes only: each VM is a `ferry run` process with a QMP socket;
tests talk to it with a small QMP client (a socket and the json module, no
third-party code). TAP output: one `ok`/`not ok` line per test function, a
failing check prints why as a `#` comment and the run goes on.

Environment: FERRY_BUILD is the meson build directory (the binary is
$FERRY_BUILD/src/tools/ferry). Scratch files live in one temporary
directory per test program, removed at exit.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

BUILD = os.environ.get("FERRY_BUILD") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
FERRY = os.path.join(BUILD, "src", "tools", "ferry")
# Sanitizer builds are several times slower: scale every wait.
SLOW = 4.0 if "asan" in os.path.basename(os.path.normpath(BUILD)) else 1.0
TMP = tempfile.mkdtemp(prefix="ferry-e2e-")


class QMPError(Exception):
    def __init__(self, cls, desc):
        super().__init__(f"{cls}: {desc}")
        self.cls = cls
        self.desc = desc


class Failed(Exception):
    pass


# ---- TAP ----

_count = 0
_failed = 0
_cur_failed = False


def check(cond, what):
    """A soft check: report and go on."""
    global _cur_failed
    if not cond:
        _cur_failed = True
        for line in str(what).splitlines() or [""]:
            print(f"# {line}", flush=True)
    return cond


def check_eq(a, b, what=""):
    return check(a == b, f"{what}: {a!r} != {b!r}" if what else f"{a!r} != {b!r}")


def check_in(needle, hay, what=""):
    return check(hay is not None and needle in hay,
                 f"{what}: {needle!r} not in {hay!r}")


def run(fn, todo=None):
    """Run one test function and print its TAP line. todo: the reason a
    known gap makes it fail (TAP "# TODO": an expected failure, and an
    unexpected pass once the gap is closed)."""
    global _count, _failed, _cur_failed
    _cur_failed = False
    t0 = time.monotonic()
    try:
        fn()
    except Exception as e:  # a hard failure ends this test only
        _cur_failed = True
        for line in traceback.format_exc().splitlines():
            print(f"# {line}")
        print(f"# {e}")
    finally:
        cleanup_processes()
    _count += 1
    if _cur_failed:
        _failed += 1
    status = "not ok" if _cur_failed else "ok"
    if todo:
        if _cur_failed:
            _failed -= 1
        print(f"{status} {_count} {fn.__name__} # TODO {todo}", flush=True)
        return
    print(f"{status} {_count} {fn.__name__} ({time.monotonic() - t0:.1f}s)",
          flush=True)


def done():
    print(f"1..{_count}", flush=True)
    shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(1 if _failed else 0)


def wait_until(pred, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise Failed(f"timed out after {timeout * SLOW:.0f}s waiting for {what}")


def tmp_path(name):
    return os.path.join(TMP, name)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- QMP ----

class QMP:
    """A synchronous QMP client; events are kept in self.events."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout * SLOW)
        # The socket file appears at bind(), a moment before listen().
        deadline = time.monotonic() + timeout * SLOW
        while True:
            try:
                self.sock.connect(path)
                break
            except (ConnectionRefusedError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.buf = b""
        self.events = []
        self.next_id = 0
        self.greeting = self._read()
        if "QMP" not in self.greeting:
            raise Failed(f"not a QMP greeting: {self.greeting}")

    def negotiate(self):
        self.cmd("qmp_capabilities")
        return self

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failed("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def read_response(self):
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def execute(self, name, args=None, **kw):
        """The whole response object."""
        self.next_id += 1
        req = {"execute": name, "id": self.next_id}
        if args is not None:
            req["arguments"] = args
        elif kw:
            req["arguments"] = {k.replace("_", "-"): v for k, v in kw.items()}
        self.send_raw(json.dumps(req) + "\n")
        while True:
            resp = self.read_response()
            if resp.get("id") == self.next_id:
                return resp

    def cmd(self, name, args=None, **kw):
        """The return value, or QMPError."""
        resp = self.execute(name, args, **kw)
        if "error" in resp:
            raise QMPError(resp["error"]["class"], resp["error"]["desc"])
        return resp["return"]

    def hmp(self, line):
        return self.cmd("human-monitor-command", {"command-line": line})

    def wait_event(self, name, timeout=20, pred=lambda e: True):
        deadline = time.monotonic() + timeout * SLOW
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name and pred(e):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed(f"no {name} event within {timeout * SLOW:.0f}s")
            self.sock.settimeout(left)
            try:
                self.events.append(self._read())
            except socket.timeout:
                pass
            finally:
                self.sock.settimeout(10 * SLOW)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- VM processes ----

_procs = []


def cleanup_processes():
    while _procs:
        p = _procs.pop()
        if p.poll() is None:
            p.kill()
        p.wait()


class VM:
    """A `ferry run` process with a QMP socket (and a negotiated client)."""

    n = 0

    def __init__(self, *args, ram="128M", vcpus=2,
                 workload="random,seed=7,wss=16M", tracking="bitmap",
                 incoming=None, paused=False, snapshot=True, pass_fds=(),
                 extra=(), name=None, wait_qmp=True,
                 stdout=subprocess.DEVNULL, prefix=()):
        VM.n += 1
        self.name = name or f"vm{VM.n}"
        self.qmp_path = tmp_path(f"{self.name}-{VM.n}.qmp")
        self.stderr_path = tmp_path(f"{self.name}-{VM.n}.stderr")
        argv = [FERRY, "run", "--ram", ram, "--vcpus", str(vcpus),
                "--workload", workload, "--dirty-tracking", tracking,
                "--qmp", f"unix:{self.qmp_path}"]
        if incoming:
            argv += ["--incoming", incoming]
        if paused:
            argv.append("-S")
        if snapshot:
            argv.append("--debug-switchover-snapshot")
        argv += list(extra) + list(args)
        # prefix: an argv prefix, e.g. `ip netns exec NS` (it must exec).
        argv = list(prefix) + argv
        self.argv = argv
        self.stderr_file = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=stdout,
                                     stderr=self.stderr_file,
                                     pass_fds=pass_fds)
        _procs.append(self.proc)
        self.qmp = None
        if wait_qmp:
            wait_until(lambda: os.path.exists(self.qmp_path) or
                       self.proc.poll() is not None, 20, f"{self.name}'s QMP")
            if self.proc.poll() is not None:
                raise Failed(f"{self.name} exited {self.proc.returncode}: "
                             f"{self.stderr()}")
            self.qmp = QMP(self.qmp_path).negotiate()

    def stderr(self):
        self.stderr_file.flush()
        with open(self.stderr_path) as f:
            return f.read()

    def cmd(self, name, args=None, **kw):
        return self.qmp.cmd(name, args, **kw)

    def status(self):
        return self.cmd("query-status")["status"]

    def query_migrate(self):
        return self.cmd("query-migrate")

    def mig_status(self):
        return self.query_migrate().get("status")

    def incoming_uri(self):
        """tcp:HOST:PORT the destination listens on (for port 0)."""
        sa = self.query_migrate()["socket-address"][0]
        if sa["type"] == "unix":
            return f"unix:{sa['path']}"
        return f"tcp:{sa['host']}:{sa['port']}"

    def set_caps(self, **caps):
        self.cmd("migrate-set-capabilities", {"capabilities": [
            {"capability": k.replace("_", "-"), "state": v}
            for k, v in caps.items()]})

    def set_params(self, **params):
        self.cmd("migrate-set-parameters",
                 {k.replace("_", "-"): v for k, v in params.items()})

    def wait_migration(self, timeout=60, want=None):
        """Wait for a final status; returns query-migrate."""
        final = ("completed", "failed", "cancelled")
        info = wait_until(lambda: (lambda q: q if q.get("status") in final
                                   else None)(self.query_migrate()),
                          timeout, f"{self.name}'s migration to finish",
                          interval=0.05)
        if want is not None and info.get("status") != want:
            raise Failed(f"{self.name}: migration {info.get('status')}, "
                         f"wanted {want}: {info.get('error-desc')}\n"
                         f"stderr: {self.stderr()}")
        return info

    def wait_status(self, status, timeout=30):
        return wait_until(lambda: self.mig_status() == status, timeout,
                          f"{self.name} in migration status {status}",
                          interval=0.01)

    def steps(self):
        return self.cmd("x-ferry-query-vcpus")["steps"]

    def run_until(self, n, timeout=120):
        self.cmd("x-ferry-run-until", steps=n)
        wait_until(lambda: not self.cmd("x-ferry-query-vcpus")[
            "run-until-busy"], timeout, f"{self.name} to reach step {n}",
            interval=0.02)
        got = self.steps()
        if any(s != n for s in got):
            raise Failed(f"{self.name}: steps {got} after run-until {n}")

    def stop(self):
        self.cmd("stop")

    def digests(self):
        return self.cmd("x-ferry-ram-digest")

    def snapshot(self):
        return self.cmd("x-ferry-snapshot")

    def quit(self, timeout=30):
        """quit over QMP; the process must exit 0 (ASan: no leaks)."""
        try:
            self.cmd("quit")
        except (Failed, OSError):
            pass
        return self.wait_exit(timeout)

    def wait_exit(self, timeout=30):
        try:
            rc = self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failed(f"{self.name} did not exit")
        if self.qmp:
            self.qmp.close()
        return rc

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        if self.qmp:
            self.qmp.close()


def precopy_until(src, dst, uri, until, what, caps=None, **params):
    """The opening of every postcopy test: both sides get postcopy-ram (and
    caps), the destination listens on uri, the source migrates with params
    until until(its query-migrate "ram") holds. Switching is the caller's."""
    for v in (src, dst):
        v.set_caps(postcopy_ram=True, **(caps or {}))
    dst.cmd("migrate-incoming", uri=uri)
    src.set_params(**params)
    src.cmd("migrate", uri=uri)
    wait_until(lambda: until(src.query_migrate().get("ram", {})), 60, what)


def reference_digests(steps, **vm_kwargs):
    """RAM digests of a VM that never migrated, run to `steps`."""
    ref = VM(paused=True, snapshot=False, name=None, **vm_kwargs)
    ref.run_until(steps)
    d = ref.digests()
    check_eq(ref.quit(), 0, "reference VM exit status")
    return d


def ferry(*args, timeout=60, input=None):
    """Run a ferry subcommand; returns CompletedProcess (text)."""
    return subprocess.run([FERRY] + list(args), capture_output=True,
                          text=True, timeout=timeout * SLOW, input=input)


class Proxy(threading.Thread):
    """A TCP proxy that the test can cut: every connection is forwarded to
    target until cut() closes everything."""

    def __init__(self, target_port, reset_on_accept=False):
        super().__init__(daemon=True)
        self.target = ("127.0.0.1", target_port)
        # reset_on_accept: every connection is reset at once, before a byte
        # is read (the link drops while the source sets up).
        self.reset_on_accept = reset_on_accept
        self.accepted = 0
        self.held = threading.Event()   # set: the pumps stop moving data
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        self.bytes = 0
        self.lock = threading.Lock()
        self.cut_done = False
        self.start()

    def _pump(self, a, b):
        try:
            while True:
                while self.held.is_set() and not self.cut_done:
                    time.sleep(0.01)
                data = a.recv(1 << 16)
                if not data:
                    break
                with self.lock:
                    self.bytes += len(data)
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run(self):
        try:
            while True:
                c, _ = self.lsock.accept()
                self.accepted += 1
                if self.reset_on_accept:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.close()
                    continue
                t = socket.create_connection(self.target)
                with self.lock:
                    if self.cut_done:
                        c.close()
                        t.close()
                        return
                    self.socks += [c, t]
                threading.Thread(target=self._pump, args=(c, t),
                                 daemon=True).start()
                threading.Thread(target=self._pump, args=(t, c),
                                 daemon=True).start()
        except OSError:
            pass

    def hold(self):
        """Stop moving data (both ways); the connections stay open, so the
        sender blocks once the socket buffers are full."""
        self.held.set()

    def cut(self):
        """Cut every connection and stop. shutdown() wakes the pumps (a
        close() alone would not while they sit in recv); with SO_LINGER 0
        the final close resets the connection, and data that still arrives
        is answered with a reset too."""
        with self.lock:
            self.cut_done = True
            socks = list(self.socks)
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        time.sleep(0.05)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)   # wakes accept()
        except OSError:
            pass
        self.lsock.close()


# ---- holding a peer still ----

def sigstop(proc):
    """SIGSTOP a process and wait until every thread of it has stopped
    (kill() returns before they do)."""
    os.kill(proc.pid, signal.SIGSTOP)

    def stopped():
        for t in os.listdir(f"/proc/{proc.pid}/task"):
            try:
                with open(f"/proc/{proc.pid}/task/{t}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                continue
            if state not in ("t", "T"):
                return False
        return True
    wait_until(stopped, 10, f"process {proc.pid} to stop")


def fill_unix_backlog(path):
    """Connect to the unix listener at path until its backlog is full (the
    listener must not be accepting: stopped). A later blocking connect then
    waits until the listener goes away or accepts. Returns the sockets."""
    socks = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            break
        socks.append(s)
        if len(socks) > 4096:
            raise Failed("the unix backlog never filled")
    return socks


# ---- a live migration between two processes, verified ----

def start_pair(transport, cfg, dst_cfg=None, tag=""):
    """Source and destination VMs and the URI the source migrates to. For
    file, the destination is started later (it reads what was written):
    it is None here. dst_cfg: the destination's configuration, if not cfg."""
    dcfg = cfg if dst_cfg is None else dst_cfg
    name = f"{transport}{tag}"
    if transport == "tcp":
        dst = VM(incoming="tcp:127.0.0.1:0", name=f"dst-{name}", **dcfg)
        return VM(name=f"src-{name}", **cfg), dst, dst.incoming_uri()
    if transport == "unix":
        path = tmp_path(f"mig-{name}.sock")
        dst = VM(incoming=f"unix:{path}", name=f"dst-{name}", **dcfg)
        return VM(name=f"src-{name}", **cfg), dst, f"unix:{path}"
    if transport == "exec":
        fifo = tmp_path(f"mig-{name}.fifo")
        if os.path.exists(fifo):
            os.unlink(fifo)
        os.mkfifo(fifo)
        dst = VM(incoming=f"exec:cat {fifo}", name=f"dst-{name}", **dcfg)
        return VM(name=f"src-{name}", **cfg), dst, f"exec:cat > {fifo}"
    if transport == "fd":
        a, b = socket.socketpair()
        dst = VM(incoming=f"fd:{b.fileno()}", pass_fds=[b.fileno()],
                 name=f"dst-{name}", **dcfg)
        src = VM(pass_fds=[a.fileno()], name=f"src-{name}", **cfg)
        uri = f"fd:{a.fileno()}"   # the same number in the child
        a.close()
        b.close()
        return src, dst, uri
    if transport == "file":
        path = tmp_path(f"mig-{name}.img")
        return VM(name=f"src-{name}", **cfg), None, f"file:{path},offset=4096"
    raise ValueError(transport)


def migrate_and_verify(transport, cfg, warm_steps=100000, run_on=10000,
                       final=50000, dst_cfg=None, ref_cfg=None):
    """Migrate a running, dirtying VM over `transport` and verify it:
    1. at the switchover: the source's RAM digests, device state and vCPU
       steps when it stopped equal the destination's just before it started
       (both recorded by --debug-switchover-snapshot);
    2. afterwards: the destination runs on, then to a chosen step count, and
       its RAM equals that of a VM that never migrated, run to that count.
    dst_cfg / ref_cfg: the destination's and the reference VM's
    configuration when not cfg (e.g. --ram-file on the source only).
    Returns (the source's final query-migrate, the switchover snapshot)."""
    dcfg = cfg if dst_cfg is None else dst_cfg
    src, dst, uri = start_pair(transport, cfg, dcfg)
    # Let the guest dirty for a moment, then migrate while it goes on.
    wait_until(lambda: min(src.steps()) > warm_steps, 30, "the guest to run")
    steps_before = src.steps()
    src.cmd("migrate", uri=uri)
    info = src.wait_migration(want="completed")
    if dst is None:   # file: the stream is complete, load it now
        dst = VM(incoming=uri, name=f"dst-{transport}", **dcfg)
    dinfo = dst.wait_migration(want="completed")

    ram = info["ram"]
    print(f"# {transport}/{cfg.get('tracking', 'bitmap')}/"
          f"{cfg.get('workload')}: {ram['dirty-sync-count']} dirty syncs, "
          f"{ram['transferred'] >> 20} MiB, total {info['total-time']} ms, "
          f"downtime {info['downtime']} ms", flush=True)
    check(ram["dirty-sync-count"] >= 2, f"dirty syncs: {ram}")
    check_eq(ram["remaining"], 0, "remaining")
    check(info["downtime"] >= 0 and info["total-time"] >= info["downtime"],
          f"times: {info}")
    check_eq(dinfo["status"], "completed", "destination status")
    check_eq(src.status(), "postmigrate", "source run state")

    # 1. The switchover: the source as it stopped, the destination as it
    # was about to start.
    a = src.cmd("x-ferry-switchover-snapshot")
    b = dst.cmd("x-ferry-switchover-snapshot")
    check("error" not in a and "error" not in b, f"snapshots: {a} {b}")
    # Any vCPU, not every one: a migration of an idle guest can take 1 ms,
    # less than a loaded host may leave one vCPU thread off the CPU.
    check(any(x > y for x, y in zip(a["vcpu-steps"], steps_before)),
          f"the guest ran during the migration: {steps_before} -> "
          f"{a['vcpu-steps']}")
    check_eq(b["ram"], a["ram"], "RAM digests at the switchover")
    check_eq(b["devices"], a["devices"], "device state at the switchover")
    check_eq(b["vcpu-steps"], a["vcpu-steps"], "vCPU steps at the switchover")

    # 2. The destination runs on, then to N; a VM that never migrated,
    # run to N, has the same RAM.
    check_eq(dst.status(), "running", "destination run state")
    wait_until(lambda: min(dst.steps()) > max(a["vcpu-steps"]) + run_on, 30,
               "the destination to run on")
    dst.stop()
    n = max(dst.steps()) + final
    dst.run_until(n)
    got = dst.digests()
    want = reference_digests(n, **(cfg if ref_cfg is None else ref_cfg))
    check_eq(got, want, f"RAM at step {n} (migrated vs never migrated)")
    check_eq(src.quit(), 0, "source exit status")
    check_eq(dst.quit(), 0, "destination exit status")
    return info, a
