#!/bin/sh
# make-qemu-fixtures.sh [OUTDIR]: real QEMU migration streams for the tests
# of `ferry analyze` (tests/analyze/), written to OUTDIR (tests/fixtures/).
#
# Each scenario starts QEMU with -S (nothing runs until told), migrates it
# over QMP with `migrate exec:cat > FILE`, then dumps the guest's memory with
# QMP `pmemsave` from the same, now stopped, source. The tests check that the
# RAM ferry extracts from FILE equals that dump.
#
#   qemu-pc.mig       -M pc, 32 MiB, e1000, a 64 KiB pattern at 1 MiB, paused
#   qemu-q35.mig      -M q35, 32 MiB, virtio-net/rng/balloon, EHCI, pattern, paused
#   qemu-xbzrle.mig   -M pc, 32 MiB, a running guest that keeps writing 64
#                     pages, migrated slowly with the xbzrle capability, so
#                     later passes carry XBZRLE pages (real QEMU encoding)
#   qemu-postcopy.mig the same running guest migrated to a second QEMU with
#                     postcopy-ram, through a proxy that records the main
#                     channel: OPEN_RETURN_PATH, POSTCOPY_ADVISE, PINGs, a
#                     RAM discard, the PACKAGED device state with LISTEN and
#                     RUN, then the pages the destination asked for. No VM
#                     description (QEMU sends none after postcopy): decode it
#                     with qemu-xbzrle.mig's, the same VM.
#   qemu-compress.mig -M pc, 32 MiB, the pattern, paused, with the compress
#                     capability (zlib pages) and validate-uuid (a uuid in
#                     the configuration section)
#   qemu-shared.mig   -M pc with its RAM on a shared memfd backend and the
#                     x-ignore-shared capability: the configuration carries
#                     the capability, MEM_SIZE each block's address, and the
#                     shared RAM itself is not sent
#   NAME.pmem.gz      pmemsave of guest-physical [0, 32 MiB) after migration
#                     (not for qemu-shared: its RAM is not in the stream)
#   qemu-fixtures.txt the QEMU version and the command lines
#
# Needs qemu-system-x86_64 (Debian: qemu-system-x86; `make deps-qemu`),
# python3 (for QMP), as and ld (binutils) for the tiny guest, gzip.
set -eu

OUT=${1:-$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures}
QEMU=${QEMU:-qemu-system-x86_64}
for tool in "$QEMU" python3 as ld gzip; do
    command -v "$tool" >/dev/null 2>&1 || { echo "make-qemu-fixtures: $tool is missing" >&2; exit 77; }
done
mkdir -p "$OUT"
WORK=$(mktemp -d)
QPID="" QPID2=""
cleanup() {
    [ -n "$QPID" ] && kill "$QPID" 2>/dev/null || true
    [ -n "$QPID2" ] && kill "$QPID2" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# A known pattern for guest RAM (deterministic: a 32-bit LCG).
python3 - "$WORK/pattern.bin" <<'EOF'
import sys
x, out = 12345, bytearray()
for _ in range(65536):
    x = (x * 1103515245 + 12345) & 0xffffffff
    out.append(x >> 24)
open(sys.argv[1], "wb").write(out)
EOF

# The dirtying guest: a multiboot kernel that increments one byte in each of
# 64 pages at 16 MiB, forever. invlpg after each store drops the page from
# TCG's TLB, so the next store is seen by dirty tracking every time.
cat > "$WORK/dirty.S" <<'EOF'
    .text
    .align 4
    .long 0x1BADB002
    .long 0
    .long -0x1BADB002
    .globl _start
_start:
    cli
1:  mov $0x1000000, %edi
2:  incb (%edi)
    invlpg (%edi)
    add $4096, %edi
    cmp $(0x1000000 + 0x40000), %edi
    jb 2b
    jmp 1b
EOF
as --32 "$WORK/dirty.S" -o "$WORK/dirty.o"
ld -m elf_i386 -Ttext 0x100000 -o "$WORK/dirty.elf" "$WORK/dirty.o"

# QMP driver: qmp.py SOCKET MODE STREAM PMEM; MODE is paused, xbzrle, or
# caps=CAP,CAP (paused, with those capabilities); PMEM - for none
cat > "$WORK/qmp.py" <<'EOF'
import json, socket, sys, time
sock, mode, stream, pmem = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX)
for _ in range(200):
    try:
        s.connect(sock)
        break
    except OSError:
        time.sleep(0.05)
f = s.makefile("rw")
json.loads(f.readline())
def cmd(name, **args):
    f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r:
            return r["return"]
        if "error" in r:
            raise SystemExit("QMP %s: %s" % (name, r["error"]))
# The guest boots through the BIOS first: under load that can take seconds
# of TCG. Migrating before its loop runs would send a guest that dirties
# nothing, and the migration would end at the first pass. So wait until the
# byte it increments at 16 MiB changes.
def wait_dirtying(cmd):
    def byte():
        return cmd("human-monitor-command", **{"command-line": "xp /1bx 0x1000000"})
    first, t0 = byte(), time.time()
    while byte() == first:
        if time.time() - t0 > 120:
            raise SystemExit("the guest never started writing its pages")
        time.sleep(0.05)
def status():
    return cmd("query-migrate")
cmd("qmp_capabilities")
if mode.startswith("caps="):
    cmd("migrate-set-capabilities", capabilities=[
        {"capability": c, "state": True} for c in mode[5:].split(",")])
if mode == "xbzrle":
    # slow enough that the 64 pages are dirty again at every pass, and a
    # downtime limit no pass can meet, until enough XBZRLE pages went out
    cmd("migrate-set-capabilities", capabilities=[{"capability": "xbzrle", "state": True}])
    cmd("migrate-set-parameters", **{"downtime-limit": 1, "max-bandwidth": 256 << 10})
    cmd("cont")
    wait_dirtying(cmd)
cmd("migrate", uri="exec:cat > " + stream)
t0 = time.time()
while True:
    r = status()
    if r.get("status") in ("completed", "failed", "cancelled"):
        break
    if mode == "xbzrle" and (r.get("xbzrle-cache", {}).get("pages", 0) >= 128 or time.time() - t0 > 60):
        cmd("migrate-set-parameters", **{"downtime-limit": 10000, "max-bandwidth": 1 << 30})
    time.sleep(0.05)
if r["status"] != "completed":
    raise SystemExit("migration %s: %s" % (r["status"], r.get("error-desc", "")))
if mode == "xbzrle" and r.get("xbzrle-cache", {}).get("pages", 0) == 0:
    raise SystemExit("no XBZRLE pages were sent")
if pmem != "-":
    cmd("pmemsave", val=0, size=32 << 20, filename=pmem)
cmd("quit")
EOF

# Postcopy driver: pair.py SRC-QMP DST-QMP PROXY-SOCK DST-SOCK STREAM PMEM.
# The source migrates to PROXY-SOCK; the proxy connects each connection on
# to the destination's DST-SOCK and records the first one (the main
# channel), source to destination, into STREAM.
cat > "$WORK/pair.py" <<'EOF'
import json, socket, sys, threading, time
src_qmp, dst_qmp, proxy_sock, dst_sock, stream, pmem = sys.argv[1:7]

class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        for _ in range(200):
            try:
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")
    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise SystemExit("QMP %s: %s" % (name, r["error"]))

# The guest boots through the BIOS first: under load that can take seconds
# of TCG. Migrating before its loop runs would send a guest that dirties
# nothing, and the migration would end at the first pass. So wait until the
# byte it increments at 16 MiB changes.
def wait_dirtying(cmd):
    def byte():
        return cmd("human-monitor-command", **{"command-line": "xp /1bx 0x1000000"})
    first, t0 = byte(), time.time()
    while byte() == first:
        if time.time() - t0 > 120:
            raise SystemExit("the guest never started writing its pages")
        time.sleep(0.05)

def pump(a, b, rec):
    try:
        while True:
            d = a.recv(1 << 16)
            if not d:
                break
            if rec:
                rec.write(d)
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass

lst = socket.socket(socket.AF_UNIX)
lst.bind(proxy_sock)
lst.listen(4)
rec = open(stream, "wb")
pumps = []
def accept_loop():
    first = True
    while True:
        try:
            c, _ = lst.accept()
        except OSError:
            return
        d = socket.socket(socket.AF_UNIX)
        d.connect(dst_sock)
        for args in ((c, d, rec if first else None), (d, c, None)):
            t = threading.Thread(target=pump, args=args)
            t.start()
            pumps.append(t)
        first = False
threading.Thread(target=accept_loop, daemon=True).start()

src, dst = Qmp(src_qmp), Qmp(dst_qmp)
caps = [{"capability": "postcopy-ram", "state": True}]
src.cmd("migrate-set-capabilities", capabilities=caps)
dst.cmd("migrate-set-capabilities", capabilities=caps)
dst.cmd("migrate-incoming", uri="unix:" + dst_sock)
# precopy that cannot converge (the guest dirties its 64 pages faster than
# a 1 ms downtime allows), so it iterates until postcopy is started
src.cmd("migrate-set-parameters", **{"max-bandwidth": 4 << 20, "downtime-limit": 1})
src.cmd("cont")
wait_dirtying(src.cmd)
src.cmd("migrate", uri="unix:" + proxy_sock)
t0 = time.time()
while True:
    r = src.cmd("query-migrate")
    if r.get("status") == "active" and r.get("ram", {}).get("dirty-sync-count", 0) >= 3:
        break
    if r.get("status") in ("failed", "cancelled", "completed") or time.time() - t0 > 60:
        raise SystemExit("precopy did not iterate: %s" % r)
    time.sleep(0.05)
# (max-bandwidth stays low: raised, the 1 ms downtime would fit and the
# migration end as precopy; the postcopy phase has its own, unlimited)
src.cmd("migrate-start-postcopy")
while True:
    r = src.cmd("query-migrate")
    if r.get("status") in ("completed", "failed", "cancelled"):
        break
    time.sleep(0.05)
if r["status"] != "completed" or r.get("ram", {}).get("postcopy-bytes", 0) == 0:
    raise SystemExit("postcopy migration %s: %s" % (r["status"], r))
for _ in range(600):
    if dst.cmd("query-migrate").get("status") == "completed":
        break
    time.sleep(0.05)
# the source stopped at the switch to postcopy: its RAM is what was sent
src.cmd("pmemsave", val=0, size=32 << 20, filename=pmem)
src.cmd("quit")
dst.cmd("quit")
for t in pumps:
    t.join(30)
rec.close()
EOF

run() { # NAME MODE QEMU-ARGS...
    name=$1 mode=$2
    shift 2
    sock="$WORK/$name.sock"
    pmem="$WORK/$name.pmem"
    [ "$name" = qemu-shared ] && pmem=-
    "$QEMU" -m 32 -S -display none -nodefaults -qmp "unix:$sock,server=on,wait=off" "$@" \
        2>"$WORK/$name.err" &
    QPID=$!
    if ! python3 "$WORK/qmp.py" "$sock" "$mode" "$WORK/$name.mig" "$pmem"; then
        cat "$WORK/$name.err" >&2
        exit 1
    fi
    wait "$QPID" || true
    QPID=""
    cp "$WORK/$name.mig" "$OUT/$name.mig"
    [ "$pmem" = - ] || gzip -9n < "$pmem" > "$OUT/$name.pmem.gz"
    echo "$name ($mode): $QEMU -m 32 -S -display none -nodefaults $*" >> "$WORK/fixtures.txt"
}

run_postcopy() { # NAME QEMU-ARGS... (source and destination alike)
    name=$1
    shift
    "$QEMU" -m 32 -S -display none -nodefaults \
        -qmp "unix:$WORK/$name.src,server=on,wait=off" "$@" 2>"$WORK/$name.err" &
    QPID=$!
    "$QEMU" -m 32 -display none -nodefaults -incoming defer \
        -qmp "unix:$WORK/$name.dst,server=on,wait=off" "$@" 2>"$WORK/$name.dst.err" &
    QPID2=$!
    if ! python3 "$WORK/pair.py" "$WORK/$name.src" "$WORK/$name.dst" "$WORK/$name.proxy" \
            "$WORK/$name.in" "$WORK/$name.mig" "$WORK/$name.pmem"; then
        cat "$WORK/$name.err" "$WORK/$name.dst.err" >&2
        exit 1
    fi
    wait "$QPID" "$QPID2" || true
    QPID="" QPID2=""
    cp "$WORK/$name.mig" "$OUT/$name.mig"
    gzip -9n < "$WORK/$name.pmem" > "$OUT/$name.pmem.gz"
    echo "$name (postcopy-ram, recorded on its way to a second QEMU with -incoming): $QEMU -m 32 -S -display none -nodefaults $*" >> "$WORK/fixtures.txt"
}

PAT="loader,file=$WORK/pattern.bin,addr=0x100000,force-raw=on"
run qemu-pc paused -M pc -device e1000 -device "$PAT"
run qemu-q35 paused -M q35 -device virtio-net-pci -device virtio-rng-pci \
    -device virtio-balloon-pci -device ich9-usb-ehci1 -device "$PAT"
run qemu-xbzrle xbzrle -M pc -kernel "$WORK/dirty.elf"
run_postcopy qemu-postcopy -M pc -kernel "$WORK/dirty.elf"
run qemu-compress caps=compress,validate-uuid -M pc \
    -uuid 12345678-9abc-def0-1122-334455667788 -device "$PAT"
run qemu-shared caps=x-ignore-shared -M pc,memory-backend=ram \
    -object memory-backend-memfd,id=ram,size=32M,share=on

{
    "$QEMU" --version | head -1
    echo "made by scripts/make-qemu-fixtures.sh; the pattern loaded at 1 MiB is a"
    echo "32-bit LCG (seed 12345, top byte of each step); the xbzrle guest writes"
    echo "64 pages from 16 MiB"
    sed "s|$WORK/||g" "$WORK/fixtures.txt"
} > "$OUT/qemu-fixtures.txt"
ls -l "$OUT"/qemu-*
