#!/usr/bin/env bash
# Sequential write and read throughput through a real mount over the embedded store.
# Usage: scripts/bench-mount.sh [path/to/bucketfs] [size_mib] [drives]
# Prints MiB/s; a figure is one run, so run it twice before quoting it.
set -euo pipefail
BIN=${1:-target/release/bucketfs}
SIZE_MIB=${2:-1024}
NDRIVES=${3:-4}
BIN=$(realpath "$BIN")
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bucketfs-bench.XXXXXX")
MNT=$WORK/mnt
cleanup() { umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$MNT"
SPEC="$WORK/d{1...$NDRIVES}"
"$BIN" mb --drives "$SPEC" bench >/dev/null
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/src"

now() { date +%s.%N; }
rate() { awk -v s="$SIZE_MIB" -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", s / (b - a) }'; }

"$BIN" --drives "$SPEC" local://bench "$MNT"
t0=$(now); dd if="$WORK/src" of="$MNT/f" bs=1M status=none; t1=$(now)
echo "sequential write ${SIZE_MIB} MiB (${NDRIVES} drives, until close returns): $(rate "$t0" "$t1") MiB/s"
umount "$MNT"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
"$BIN" --drives "$SPEC" local://bench "$MNT"
t0=$(now); dd if="$MNT/f" of=/dev/null bs=1M status=none; t1=$(now)
echo "sequential read ${SIZE_MIB} MiB, cold (${NDRIVES} drives): $(rate "$t0" "$t1") MiB/s"
t0=$(now); dd if="$MNT/f" of=/dev/null bs=1M status=none; t1=$(now)
echo "sequential read ${SIZE_MIB} MiB, second pass: $(rate "$t0" "$t1") MiB/s"
cmp "$WORK/src" "$MNT/f" && echo "content verified"
# raw disk for comparison (same filesystem as the drives)
t0=$(now); dd if="$WORK/src" of="$WORK/raw" bs=1M conv=fsync status=none; t1=$(now)
echo "raw disk write (dd conv=fsync, same filesystem): $(rate "$t0" "$t1") MiB/s"
