#!/usr/bin/env bash
# POSIX conformance of bucketfs, measured with pjdfstest (issue 12).
#
# Why a script and not a test: the suite takes minutes per mount and its result is
# a count to compare with other file systems (docs/SEMANTICS.md, BENCHMARKS.md),
# not a pass/fail gate; `make test` does not run it.
#
# What it runs, on
#   - a local:// mount of an embedded store,
#   - an s3:// mount over `bucketfs serve` (the same store behind the S3 API),
# each with default flags and with --enable-perms (all with --allow-other, so the
# suite's other users reach the mount):
#   - the ORIGINAL pjdfstest (C program + 238 prove .t files, github.com/pjd/pjdfstest),
#     the suite issue 12 counts: `prove -r tests` from inside the mount, and the
#     failing TEST FILES are counted by group (tests/rename/10.t is group rename).
#     ext4 fails 0 of them.
#   - optionally the Rust port (`cargo install pjdfstest`), whose test cases (one
#     function on one file type) do not compare with the original's files.
# Everything runs on 127.0.0.1 in a temporary directory that is removed at the end.
#
# Usage: scripts/posix-conformance.sh [GROUP...]      (GROUP: chmod, rename, ...; default all)
#   SUITE=orig | rust | both        (default orig)
#   PJDFSTEST_SRC=dir               a checkout of github.com/pjd/pjdfstest; default
#                                   $OUT/pjdfstest, cloned from GitHub if absent.
#                                   Building it needs autoconf and automake: the script
#                                   installs them with apt-get when missing (as root on
#                                   Debian/Ubuntu); elsewhere install them first.
#   BUCKETFS=path/to/bucketfs       (default target/debug/bucketfs; built if missing)
#   OUT=dir for the logs            (default target/posix-conformance)
#   CONFIGS="local local-perms s3 s3-perms"   (default: all four)
# Needs root (pjdfstest switches users and makes device nodes), /dev/fuse, prove (perl).
# Output: $OUT/summary.txt, and per config $OUT/CONFIG.prove.log (and CONFIG.rust.log).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BUCKETFS:-target/debug/bucketfs}
OUT=${OUT:-target/posix-conformance}
CONFIGS=${CONFIGS:-local local-perms s3 s3-perms}
SUITE=${SUITE:-orig}
[ "$(id -u)" = 0 ] || { echo "run as root: pjdfstest switches users and makes device nodes" >&2; exit 1; }
[ -x "$BIN" ] || cargo build
BIN=$(realpath "$BIN")
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

# --- the original suite: fetch and build once -----------------------------------
if [[ $SUITE != rust ]]; then
    command -v prove >/dev/null || { echo "prove not found (perl's Test::Harness)" >&2; exit 1; }
    SRC=${PJDFSTEST_SRC:-$OUT/pjdfstest}
    if [ ! -f "$SRC/configure.ac" ]; then
        git clone --depth 1 https://github.com/pjd/pjdfstest "$SRC" || {
            echo "cannot clone pjdfstest: set PJDFSTEST_SRC to a checkout" >&2
            exit 1
        }
    fi
    SRC=$(realpath "$SRC")
    if [ ! -x "$SRC/pjdfstest" ]; then
        if ! command -v autoreconf >/dev/null || ! command -v automake >/dev/null; then
            if command -v apt-get >/dev/null; then
                echo "installing autoconf and automake to build pjdfstest" >&2
                apt-get install -y autoconf automake >/dev/null ||
                    { apt-get update >/dev/null && apt-get install -y autoconf automake >/dev/null; }
            else
                echo "building pjdfstest needs autoconf and automake: install them" >&2
                exit 1
            fi
        fi
        (cd "$SRC" && autoreconf -ifs && ./configure && make pjdfstest) >"$OUT/pjdfstest-build.log" 2>&1 ||
            { echo "building pjdfstest failed, see $OUT/pjdfstest-build.log" >&2; exit 1; }
    fi
fi
if [[ $SUITE != orig ]]; then
    command -v pjdfstest >/dev/null || { echo "pjdfstest (Rust port) not found: cargo install pjdfstest" >&2; exit 1; }
fi

work=$(mktemp -d /tmp/bucketfs-posix.XXXXXX)
chmod 755 "$work" # the suite's other users must reach the mount point
pids=()
cleanup() {
    for m in "$work"/mnt-*; do
        mountpoint -q "$m" 2>/dev/null && fusermount3 -uz "$m"
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# the Rust port's configuration: users every Debian system has
cat >"$work/pjdfstest.toml" <<'EOF'
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

# mount CONFIG SUBDIR: mounts bucket posix/CONFIG-SUBDIR at $work/mnt-CONFIG-SUBDIR, prints the path
mount_config() {
    local config=$1 sub=$2 mnt="$work/mnt-$1-$2" flags=(-f --allow-other) source
    mkdir -p "$mnt"
    [[ $config == *-perms ]] && flags+=(--enable-perms)
    case $config in
        local*) source=(--drives "$work/local{1...4}" "local://posix/$config-$sub") ;;
        s3*) source=(--endpoint "http://127.0.0.1:$port" --region us-east-1 "s3://posix/$config-$sub") ;;
        *) echo "unknown config $config" >&2; exit 1 ;;
    esac
    "$BIN" "${flags[@]}" "${source[@]}" "$mnt" >"$OUT/$config-$sub.mount.log" 2>&1 &
    mount_pid=$!
    pids+=("$mount_pid")
    for _ in $(seq 200); do
        mountpoint -q "$mnt" && break
        sleep 0.1
    done
    mountpoint -q "$mnt" || { echo "$config: mount failed, see $OUT/$config-$sub.mount.log" >&2; exit 1; }
    chmod 777 "$mnt" 2>/dev/null || true
    mnt_path=$mnt
}
unmount_config() {
    fusermount3 -u "$mnt_path" 2>/dev/null || fusermount3 -uz "$mnt_path"
    wait "$mount_pid" 2>/dev/null || true
}

# The failing test files of a prove log, from its "Test Summary Report": a file is
# listed there as "/path/tests/GROUP/NN.t (Wstat: W Tests: T Failed: F)" and fails
# when F > 0, W != 0 (it died) or "Parse errors" follow (a bad plan); files listed
# only for "TODO passed" lines pass.
failing_files() {
    sed -n '/^Test Summary Report/,$p' "$1" | awk '
        match($0, /^[^ ]+\/tests\/[a-z_]+\/[0-9]+\.t/) {
            file = substr($0, RSTART, RLENGTH)
            if ($0 ~ /Failed: [1-9]/ || $0 !~ /Wstat: 0 /) bad[file] = 1
            next
        }
        /^ +Parse errors:/ && file != "" { bad[file] = 1 }
        END { for (f in bad) print f }' | sort
}

summary="$OUT/summary.txt"
: >"$summary"
for config in $CONFIGS; do
    if [[ $SUITE != rust ]]; then
        mount_config "$config" orig
        log="$OUT/$config.prove.log"
        dirs=()
        if [ $# -gt 0 ]; then
            for g in "$@"; do dirs+=("$SRC/tests/$g"); done
        else
            dirs=("$SRC/tests")
        fi
        start=$(date +%s)
        (cd "$mnt_path" && prove -r "${dirs[@]}") >"$log" 2>&1 || true
        secs=$(($(date +%s) - start))
        # the failing files again, verbosely (same mount): which subtests fail and how
        failing=$(failing_files "$log")
        if [ -n "$failing" ]; then
            # shellcheck disable=SC2086 # one word per file
            (cd "$mnt_path" && prove -v $failing) >"$OUT/$config.failures.log" 2>&1 || true
        fi
        unmount_config
        failed=$(failing_files "$log" | sed -E 's#.*/tests/##' | sort -u)
        nfiles=$(printf '%s\n' "$failed" | grep -c . || true)
        files_line=$(grep -E '^Files=' "$log" || echo "(no Files= line; see $log)")
        {
            echo "== $config, original pjdfstest: $nfiles failing test files ($secs s)"
            echo "   $files_line"
            echo "   by group: $(printf '%s\n' "$failed" | grep . | cut -d/ -f1 | sort | uniq -c |
                sort -k1,1rn -k2 | awk '{printf "%s %s, ", $2, $1}' | sed 's/, $//')"
            echo "   files: $(printf '%s\n' "$failed" | grep . | sed 's/\.t$//' | tr '\n' ' ')"
        } | tee -a "$summary"
    fi
    if [[ $SUITE != orig ]]; then
        mount_config "$config" rust
        log="$OUT/$config.rust.log"
        (cd "$mnt_path" && pjdfstest -c "$work/pjdfstest.toml" -p "$mnt_path" "$@") >"$log" 2>&1 || true
        unmount_config
        # "name   FAILED" lines; a group is the syscall (first component)
        failed=$(grep -E '^[a-z_0-9:]+ +FAILED$' "$log" | awk '{print $1}' | sort || true)
        cases=$(printf '%s\n' "$failed" | grep -c . || true)
        funcs=$(printf '%s\n' "$failed" | grep . | sed -E 's/::(regular|dir|fifo|block|char|socket|symlink)$//' | sort -u | grep -c . || true)
        total=$(grep -E '^Summary:' "$log" || echo "Summary: (none; see $log)")
        {
            echo "== $config, Rust port: $cases failing test cases, $funcs failing test functions"
            echo "   $total"
            printf '%s\n' "$failed" | grep . | cut -d: -f1 | sort | uniq -c | sort -rn | awk '{printf "   %-12s %s\n", $2, $1}'
        } | tee -a "$summary"
    fi
done
echo "logs: $OUT (summary.txt, CONFIG.prove.log, CONFIG.rust.log)"
