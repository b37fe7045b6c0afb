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
#   NAME.pmem.gz      pmemsave of guest-physical [0, 32 MiB) after migration
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
QPID=""
cleanup() {
    [ -n "$QPID" ] && kill "$QPID" 2>/dev/null || true
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

# QMP driver: qmp.py SOCKET MODE STREAM PMEM
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
def status():
    return cmd("query-migrate")
cmd("qmp_capabilities")
if mode == "xbzrle":
    # slow enough that the 64 pages are dirty again at every pass, and a
    # downtime limit no pass can meet, until enough XBZRLE pages went out
    cmd("migrate-set-capabilities", capabilities=[{"capability": "xbzrle", "state": True}])
    cmd("migrate-set-parameters", **{"downtime-limit": 1, "max-bandwidth": 256 << 10})
    cmd("cont")
    time.sleep(0.3)
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
cmd("pmemsave", val=0, size=32 << 20, filename=pmem)
cmd("quit")
EOF

run() { # NAME MODE QEMU-ARGS...
    name=$1 mode=$2
    shift 2
    sock="$WORK/$name.sock"
    "$QEMU" -m 32 -S -display none -nodefaults -qmp "unix:$sock,server=on,wait=off" "$@" \
        2>"$WORK/$name.err" &
    QPID=$!
    if ! python3 "$WORK/qmp.py" "$sock" "$mode" "$WORK/$name.mig" "$WORK/$name.pmem"; then
        cat "$WORK/$name.err" >&2
        exit 1
    fi
    wait "$QPID" || true
    QPID=""
    cp "$WORK/$name.mig" "$OUT/$name.mig"
    gzip -9n < "$WORK/$name.pmem" > "$OUT/$name.pmem.gz"
    echo "$name: $QEMU -m 32 -S -display none -nodefaults $*" >> "$WORK/fixtures.txt"
}

PAT="loader,file=$WORK/pattern.bin,addr=0x100000,force-raw=on"
run qemu-pc paused -M pc -device e1000 -device "$PAT"
run qemu-q35 paused -M q35 -device virtio-net-pci -device virtio-rng-pci \
    -device virtio-balloon-pci -device ich9-usb-ehci1 -device "$PAT"
run qemu-xbzrle xbzrle -M pc -kernel "$WORK/dirty.elf"

{
    "$QEMU" --version | head -1
    echo "made by scripts/make-qemu-fixtures.sh; the pattern loaded at 1 MiB is a"
    echo "32-bit LCG (seed 12345, top byte of each step); the xbzrle guest writes"
    echo "64 pages from 16 MiB"
    sed "s|$WORK/||g" "$WORK/fixtures.txt"
} > "$OUT/qemu-fixtures.txt"
ls -l "$OUT"/qemu-*
