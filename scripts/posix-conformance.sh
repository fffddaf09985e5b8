#!/usr/bin/env bash
# POSIX conformance of bucketfs, measured with pjdfstest (issue 12).
#
# Why a script and not a test: the suite takes minutes per mount and its result is
# a count to compare with other file systems (docs/SEMANTICS.md, BENCHMARKS.md),
# not a pass/fail gate; `make test` does not run it.
#
# What it does: runs the Rust port of pjdfstest (`cargo install pjdfstest`) on
#   - a local:// mount of an embedded store,
#   - an s3:// mount over `bucketfs serve` (the same store behind the S3 API),
# each with default flags and with --enable-perms, and prints the failing test
# cases by group (the syscall the test exercises). Everything runs on 127.0.0.1
# in a temporary directory that is removed at the end.
#
# The Rust port groups its tests differently from the original shell suite (whose
# "test files" such as tests/rename/00.t the issue counted): one Rust test case is
# one function on one file type (`rename::ctime::regular`), so its counts are not
# the original's. Both test cases and test functions (file type stripped) are
# reported.
#
# Usage: scripts/posix-conformance.sh [PJDFSTEST_PATTERN...]
#   BUCKETFS=path/to/bucketfs (default target/debug/bucketfs; built if missing)
#   OUT=dir for the logs (default target/posix-conformance)
#   CONFIGS="local local-perms s3 s3-perms" (default: all four)
# Needs root (pjdfstest switches users, mknod of devices) and /dev/fuse.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BUCKETFS:-target/debug/bucketfs}
OUT=${OUT:-target/posix-conformance}
CONFIGS=${CONFIGS:-local local-perms s3 s3-perms}
command -v pjdfstest >/dev/null || { echo "pjdfstest not found: cargo install pjdfstest" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root: pjdfstest switches users and makes device nodes" >&2; exit 1; }
[ -x "$BIN" ] || cargo build
BIN=$(realpath "$BIN")
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

work=$(mktemp -d /tmp/bucketfs-posix.XXXXXX)
chmod 755 "$work" # the suite's other users must reach the mount point
pids=()
cleanup() {
    for m in "$work"/mnt-*; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m"
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# users the suite switches to: ones every Debian system has
cat > "$work/pjdfstest.toml" <<'EOF'
[features]
utimensat = {}
utime_now = {}
rename_ctime = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]
EOF

"$BIN" mb --drives "$work/local{1...4}" posix >/dev/null
"$BIN" mb --drives "$work/served{1...4}" posix >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export BUCKETFS_ACCESS_KEY=posix AWS_ACCESS_KEY_ID=posix
export BUCKETFS_SECRET_KEY=conformance-secret AWS_SECRET_ACCESS_KEY=conformance-secret
"$BIN" serve --drives "$work/served{1...4}" --address "127.0.0.1:$port" >"$OUT/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

summary="$OUT/summary.txt"
: >"$summary"
for config in $CONFIGS; do
    mnt="$work/mnt-$config"
    mkdir -p "$mnt"
    flags=(-f --allow-other)
    [[ $config == *-perms ]] && flags+=(--enable-perms)
    case $config in
        local*) source=(--drives "$work/local{1...4}" "local://posix/$config") ;;
        s3*) source=(--endpoint "http://127.0.0.1:$port" --region us-east-1 "s3://posix/$config") ;;
    esac
    "$BIN" "${flags[@]}" "${source[@]}" "$mnt" >"$OUT/$config.mount.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 200); do
        mountpoint -q "$mnt" && break
        sleep 0.1
    done
    mountpoint -q "$mnt" || { echo "$config: mount failed, see $OUT/$config.mount.log" >&2; exit 1; }
    chmod 777 "$mnt" 2>/dev/null || true
    log="$OUT/$config.log"
    (cd "$mnt" && pjdfstest -c "$work/pjdfstest.toml" -p "$mnt" "$@") >"$log" 2>&1 || true
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
    wait "$pid" 2>/dev/null || true

    # "name   FAILED" lines; a group is the syscall (first component)
    failed=$(grep -E '^[a-z_0-9:]+ +FAILED$' "$log" | awk '{print $1}' | sort || true)
    cases=$(printf '%s\n' "$failed" | grep -c . || true)
    funcs=$(printf '%s\n' "$failed" | grep . | sed -E 's/::(regular|dir|fifo|block|char|socket|symlink)$//' | sort -u | grep -c . || true)
    total=$(grep -E '^Summary:' "$log" || echo "Summary: (none; see $log)")
    {
        echo "== $config: $cases failing test cases, $funcs failing test functions"
        echo "   $total"
        printf '%s\n' "$failed" | grep . | cut -d: -f1 | sort | uniq -c | sort -rn | awk '{printf "   %-12s %s\n", $2, $1}'
    } | tee -a "$summary"
done
echo "logs: $OUT (summary.txt, CONFIG.log)"
