#!/usr/bin/env bash
# Sequential write and read throughput through a real mount over S3 servers on
# 127.0.0.1 (`bucketfs serve` on 4 drives, and SeaweedFS), next to plain clients
# on the same object: curl (SigV4-signed GET) for reads, the aws CLI for writes.
# Usage: scripts/bench-s3.sh [path/to/bucketfs] [size_mib]
# Needs: curl >= 7.75, weed and aws (scripts/test-servers.sh install). Prints MiB/s;
# a figure is one run, so run it twice before quoting it.
set -euo pipefail
BIN=$(realpath "${1:-target/release/bucketfs}")
SIZE_MIB=${2:-512}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bucketfs-bench-s3.XXXXXX")
MNT=$WORK/mnt
PIDS=()
cleanup() {
	umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"
export AWS_ACCESS_KEY_ID=bench-access AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_DEFAULT_REGION=us-east-1
export BUCKETFS_ACCESS_KEY=$AWS_ACCESS_KEY_ID BUCKETFS_SECRET_KEY=$AWS_SECRET_ACCESS_KEY
unset AWS_PROFILE AWS_SHARED_CREDENTIALS_FILE
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/src"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.2; done; echo "port $1 never opened" >&2; exit 1; }
now() { date +%s.%N; }
rate() { awk -v s="$SIZE_MIB" -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", s / (b - a) }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

# bench NAME ENDPOINT: mount write/read, then aws CLI write and curl read of the same object.
bench() {
	local name=$1 ep=$2 bucket=bench
	aws --endpoint-url "$ep" s3 mb "s3://$bucket" >/dev/null
	"$BIN" --endpoint "$ep" --region us-east-1 "s3://$bucket" "$MNT"
	local t0 t1
	t0=$(now); dd if="$WORK/src" of="$MNT/f" bs=1M status=none; t1=$(now)
	echo "$name: mount sequential write ${SIZE_MIB} MiB (until close returns): $(rate "$t0" "$t1") MiB/s"
	umount "$MNT"; drop_caches
	"$BIN" --endpoint "$ep" --region us-east-1 "s3://$bucket" "$MNT"
	t0=$(now); dd if="$MNT/f" of=/dev/null bs=1M status=none; t1=$(now)
	echo "$name: mount sequential read ${SIZE_MIB} MiB (fresh mount, caches dropped): $(rate "$t0" "$t1") MiB/s"
	cmp "$WORK/src" "$MNT/f" && echo "$name: content verified"
	umount "$MNT"; drop_caches
	t0=$(now); curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
		-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
		-o /dev/null "$ep/$bucket/f"; t1=$(now)
	echo "$name: curl GET of the same object: $(rate "$t0" "$t1") MiB/s"
	t0=$(now); aws --endpoint-url "$ep" s3 cp --only-show-errors "$WORK/src" "s3://$bucket/g"; t1=$(now)
	echo "$name: aws s3 cp upload (8 MiB parts, 10 in parallel): $(rate "$t0" "$t1") MiB/s"
}

port=$(free_port)
"$BIN" serve --drives "$WORK/d{1...4}" --address "127.0.0.1:$port" 2>"$WORK/serve.log" &
PIDS+=($!); disown
wait_port "$port"
bench "bucketfs serve (4 drives)" "http://127.0.0.1:$port"
kill "${PIDS[-1]}"

p=($(free_port) $(free_port) $(free_port) $(free_port) $(free_port) $(free_port) $(free_port) $(free_port))
cat >"$WORK/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$AWS_ACCESS_KEY_ID","secretKey":"$AWS_SECRET_ACCESS_KEY"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
mkdir -p "$WORK/weed"
weed server -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
	-master.port="${p[0]}" -master.port.grpc="${p[1]}" -volume.port="${p[2]}" -volume.port.grpc="${p[3]}" \
	-filer -filer.port="${p[4]}" -filer.port.grpc="${p[5]}" -s3 -s3.port="${p[6]}" -s3.port.grpc="${p[7]}" \
	-s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$WORK/s3.json" -volume.max=0 \
	-master.volumeSizeLimitMB=1024 -master.telemetry=false >"$WORK/weed.log" 2>&1 &
PIDS+=($!); disown
wait_port "${p[6]}"
sleep 2 # the S3 port opens before the filer is ready
for _ in $(seq 30); do aws --endpoint-url "http://127.0.0.1:${p[6]}" s3 ls >/dev/null 2>&1 && break; sleep 1; done
bench "SeaweedFS" "http://127.0.0.1:${p[6]}"
