#!/usr/bin/env bash
# Sparse reads with and without --enable-multi-range, through a real mount of
# `bucketfs serve` behind a TCP proxy that adds a round-trip latency.
# Usage: scripts/bench-multirange.sh [path/to/bucketfs] [rtts_ms="0 5 20"] [size_mib=256] \
#            [workloads="strided concurrent sequential"] [repeat=1]
# Workloads on one SIZE_MIB object, each on a fresh mount (cold page cache):
#   strided    200 preads of 16 KiB, 1 MiB apart
#   concurrent 5 threads, 200 preads of 16 KiB at scattered offsets, one open file
#   sequential the whole object with dd bs=1M
# Prints one row per (rtt, workload, flag): wall seconds and the GETs the server saw
# (from its --access-log). A figure is one run: run it twice before quoting it.
set -euo pipefail
BIN=$(realpath "${1:-target/release/bucketfs}")
RTTS=${2:-"0 5 20"}
SIZE_MIB=${3:-256}
WORKLOADS=${4:-"strided concurrent sequential"}
REPEAT=${5:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bucketfs-mrbench.XXXXXX")
MNT=$WORK/mnt
PIDS=()
cleanup() {
    umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 not up" >&2; exit 1; }

export BUCKETFS_ACCESS_KEY=bench BUCKETFS_SECRET_KEY=bench-secret-key
export AWS_ACCESS_KEY_ID=$BUCKETFS_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$BUCKETFS_SECRET_KEY AWS_REGION=us-east-1
SPEC="$WORK/d{1...4}"
"$BIN" mb --drives "$SPEC" local://bench >/dev/null
GW_PORT=$(free_port)
"$BIN" serve --drives "$SPEC" --address "127.0.0.1:$GW_PORT" --access-log "$WORK/access.log" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_port "$GW_PORT"

"$BIN" --endpoint "http://127.0.0.1:$GW_PORT" s3://bench "$MNT"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/src"
dd if="$WORK/src" of="$MNT/big" bs=1M status=none
umount "$MNT"

gets() { grep -c "^GET /bench/big" "$WORK/access.log" || true; }

run_workload() { # workload file
    case "$1" in
    strided) python3 - "$2" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
for i in range(200):
    assert len(os.pread(fd, 16384, i * (1 << 20) + 262144)) == 16384
PY
    ;;
    concurrent) python3 - "$2" "$SIZE_MIB" <<'PY'
import os, sys, threading
fd = os.open(sys.argv[1], os.O_RDONLY)
mib = int(sys.argv[2])
x, offsets = 0x2545F4914F6CDD1D, []
for _ in range(200):
    x ^= (x << 13) & (2**64 - 1); x ^= x >> 7; x ^= (x << 17) & (2**64 - 1)
    offsets.append((x % (mib - 1)) * (1 << 20) + 655360)
def reader(t):
    for off in offsets[t::5]:
        assert len(os.pread(fd, 16384, off)) == 16384
threads = [threading.Thread(target=reader, args=(t,)) for t in range(5)]
for t in threads: t.start()
for t in threads: t.join()
PY
    ;;
    sequential) dd if="$2" of=/dev/null bs=1M status=none ;;
    esac
}

printf "%-6s %-11s %-6s %9s %6s\n" "rtt_ms" "workload" "flag" "seconds" "GETs"
for rtt in $RTTS; do
    PX_PORT=$(free_port)
    python3 "$HERE/delay-proxy.py" "$PX_PORT" "127.0.0.1:$GW_PORT" "$rtt" &
    PX=$!
    PIDS+=($PX)
    wait_port "$PX_PORT"
    for workload in $WORKLOADS; do
        for _ in $(seq "$REPEAT"); do
        for flag in off on; do
            extra=()
            [ "$flag" = on ] && extra=(--enable-multi-range)
            "$BIN" --endpoint "http://127.0.0.1:$PX_PORT" "${extra[@]}" s3://bench "$MNT"
            stat "$MNT/big" >/dev/null
            before=$(gets)
            t0=$(date +%s.%N)
            run_workload "$workload" "$MNT/big"
            t1=$(date +%s.%N)
            after=$(gets)
            umount "$MNT"
            printf "%-6s %-11s %-6s %9.3f %6d\n" "$rtt" "$workload" "$flag" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" $((after - before))
        done
        done
    done
    kill "$PX" 2>/dev/null || true
done
