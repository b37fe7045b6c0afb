#!/bin/sh
# measure-stream.sh BUILDDIR [MIB] [ROUNDS]: how fast `ferry analyze` reads a
# big stream, next to `cat` reading the same file (the disk's speed).
#
# Writes a stream of MIB MiB (default 4096) with gen-big-stream into
# $TMPDIR (default /tmp), then, ROUNDS times (default 3), each from a cold
# page cache (only this file's pages are dropped, with dd iflag=nocache):
#   cat FILE > /dev/null               the disk delivering the file
#   ferry analyze --check FILE         validate it
#   ferry analyze --summary FILE       count it
#   cat FILE | ferry analyze --check - through a pipe (and cat FILE | cat, the
#                                      pipe's own speed, to compare with)
#   cp FILE1 DIR; sync                 the disk writing a file
#   ferry analyze -q -x DIR FILE1; sync extract a one-pass stream (FILE1,
#                                      every page sent once: MIB MiB written)
#   ferry analyze -q -x DIR FILE; sync extract FILE (its second pass
#                                      rewrites 1/5 of the pages in place)
# and the same warm (file in the page cache), printing seconds, MB/s and
# peak RSS for each. Timing is printed, never asserted. FERRY=path picks
# another ferry binary.
set -eu
B=${1:?usage: measure-stream.sh BUILDDIR [MIB] [ROUNDS]}
MIB=${2:-4096}
ROUNDS=${3:-3}
T=$(mktemp -d "${TMPDIR:-/tmp}/ferry-measure-XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
F=$T/big.mig
FERRY=${FERRY:-$B/src/tools/ferry}
F1=$T/one-pass.mig
"$B/tests/analyze/gen-big-stream" "$MIB" > "$F"
"$B/tests/analyze/gen-big-stream" "$MIB" 1 > "$F1"
SIZE=$(stat -c %s "$F")
echo "stream: $SIZE bytes ($MIB MiB of RAM pages), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
drop() { for f in "$F" "$F1"; do dd if="$f" iflag=nocache count=0 status=none; done; }
clean() { rm -rf "$T/x" "$T/copy"; sync; } # outside the timing
one() { # LABEL COLD(1/0) SHELL-COMMAND
    [ "$2" = 1 ] && drop
    /usr/bin/time -f "%e %M" -o "$T/t" sh -c "$3" > /dev/null
    read -r s kib < "$T/t"
    echo "$1 $s $kib" | awk -v size="$SIZE" '{ printf "  %-34s %6.2f s  %7.0f MB/s  peak RSS %6d KiB\n", $1, $2, size / ($2 > 0 ? $2 : 0.001) / 1e6, $3 }'
}
for cold in 1 0; do
    [ "$cold" = 1 ] && echo "cold page cache:" || { echo "warm page cache:"; cat "$F" > /dev/null; }
    r=0
    while [ "$r" -lt "$ROUNDS" ]; do
        one "cat>/dev/null" "$cold" "cat '$F'"
        one "analyze--check" "$cold" "'$FERRY' analyze -q --check '$F'"
        one "analyze--summary" "$cold" "'$FERRY' analyze -q --summary '$F'"
        one "cat|cat" "$cold" "cat '$F' | cat"
        one "cat|analyze--check-" "$cold" "cat '$F' | '$FERRY' analyze -q --check -"
        clean; one "cp+sync" "$cold" "cp '$F1' '$T/copy' && sync"
        clean; one "analyze-x+sync(one-pass)" "$cold" "'$FERRY' analyze -q -x '$T/x' '$F1' && sync"
        clean; one "analyze-x+sync" "$cold" "'$FERRY' analyze -q -x '$T/x' '$F' && sync"
        clean
        r=$((r + 1))
    done
done
