# bucketfs: the two commands a fresh machine needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DEMO ?= $(CURDIR)/demo
BIN := target/debug/bucketfs
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Erasure-code SIMD: the x86-64-v2 baseline of .cargo/config.toml, "native" when asked
# (NATIVE=1: fastest, runs only on CPUs like this one) or off x86-64.
ifneq ($(NATIVE)$(filter-out x86_64,$(shell uname -m)),)
export RUST_REED_SOLOMON_ERASURE_ARCH := native
endif
DEB_PACKAGES := fuse3 libfuse3-dev pkg-config curl openssl rsync btrfs-progs

.PHONY: all build deps test-deps run test run-test-multirange bench bench-multirange bench-peers install uninstall clean fmt lint

all: build

# Debian packages the mount and the tests need; installed only when missing.
deps:
	@if ! dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1; then \
		echo "installing $(DEB_PACKAGES)"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES); \
	fi

# Local servers of the integration tests (moto, SeaweedFS, fake-gcs-server, Azurite), installed only when missing.
test-deps:
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest
	scripts/test-servers.sh install

build: deps
	$(CARGO) build --bins

# A 4-drive embedded store under ./demo, a demo bucket mounted in the foreground; Ctrl-C unmounts.
run: build
	@mkdir -p $(DEMO)/mnt $(DEMO)/drives
	@$(BIN) mb --exist-ok --drives '$(DEMO)/drives/d{1...4}' local://demo
	@echo "mounting local://demo (4 drives under $(DEMO)/drives) on $(DEMO)/mnt; try another shell: cp /etc/hosts $(DEMO)/mnt/ && ls -l $(DEMO)/mnt"
	$(BIN) -f --drives '$(DEMO)/drives/d{1...4}' local://demo $(DEMO)/mnt

# Unit and integration tests share one dev build (integration tests use the same binary).
# check-isolated: the tools test-deps installed are found by absolute path with a fresh
# HOME and a bare PATH, as on a fresh machine (issue 14; a few seconds, no network).
test: deps test-deps
	scripts/test-servers.sh check-isolated
	$(CARGO) nextest run --no-fail-fast

# The multi-range suite: analyzer, batching and fallback unit tests, the
# multipart/byteranges parser, backend capability reporting (crafted servers,
# bucketfs serve, moto, SeaweedFS), and sparse reads through a real mount.
MULTIRANGE_TESTS := test(/^read::(pattern|multirange)::/) | test(/multi_range|multirange|byteranges|sparse/) \
	| test(/^(mount_multirange|s3_multirange|s3_multirange_servers|capabilities)::/) \
	| test(/ranges_in_parallel/)
run-test-multirange: deps test-deps
	$(CARGO) nextest run --no-fail-fast -E '$(MULTIRANGE_TESTS)'

# Wall time and requests of sparse reads with and without --enable-multi-range at 0, 5, 20 ms RTT.
bench-multirange: deps
	$(CARGO) build --release --bins
	scripts/bench-multirange.sh target/release/bucketfs

# bucketfs next to s3fs, rclone mount and curl (installed when missing), against
# SeaweedFS and `bucketfs serve` behind a delaying, counting proxy at 0 and 20 ms RTT:
# one Markdown row per (server, RTT, client, workload). Sizes: BENCH_* variables,
# e.g. `make bench-peers BENCH_OBJECT_MIB=32 BENCH_WRITE_MIB=32 BENCH_FILES=200`.
bench-peers: deps
	$(CARGO) build --release --bins
	scripts/bench-peers.sh target/release/bucketfs

bench: deps
	$(CARGO) bench --bench store
	$(CARGO) build --release --bins
	scripts/bench-mount.sh target/release/bucketfs
	scripts/bench-s3.sh target/release/bucketfs
	scripts/bench-peers.sh target/release/bucketfs

# A portable binary (x86-64-v2 baseline); `make install NATIVE=1` for this CPU only.
# reed-solomon-erasure's build script does not rerun when its -march setting changes,
# so a release dir built for another setting has that crate rebuilt first.
RS_ARCH = $(or $(RUST_REED_SOLOMON_ERASURE_ARCH),x86-64-v2)
install:
	@if [ "$$(cat target/release/.rs-arch 2>/dev/null)" != "$(RS_ARCH)" ]; then \
		$(CARGO) clean --release -p reed-solomon-erasure; mkdir -p target/release; echo "$(RS_ARCH)" > target/release/.rs-arch; fi
	$(CARGO) build --release --bins
	$(SUDO) install -D -m 0755 target/release/bucketfs $(DESTDIR)$(PREFIX)/bin/bucketfs

uninstall:
	$(SUDO) rm -f $(DESTDIR)$(PREFIX)/bin/bucketfs

fmt:
	$(CARGO) fmt

# Run by CI (.ci/run). --all-features also lints the test-util example.
# module-graph.sh: the layers of src/ depend only downward (docs/ARCHITECTURE.md).
lint:
	@$(CARGO) clippy --version >/dev/null 2>&1 && $(CARGO) fmt --version >/dev/null 2>&1 || rustup component add clippy rustfmt
	$(CARGO) fmt --check
	scripts/module-graph.sh
	$(CARGO) clippy --all-targets --all-features -- -D warnings

clean:
	-fusermount3 -u -z $(DEMO)/mnt 2>/dev/null
	rm -rf $(DEMO)
	$(CARGO) clean
