#!/usr/bin/env python3
"""File workloads of scripts/bench-peers.sh, timed from open to the last byte
(or, for writes, until close returns). Prints one line: `SECONDS BYTES`.

  bench_reads.py write SRC DST          copy SRC into DST in 1 MiB writes
  bench_reads.py seq FILE [SRC]         read FILE sequentially in 1 MiB reads
  bench_reads.py strided FILE [SRC]     200 preads of 16 KiB, stride size//200 (not page-aligned)
  bench_reads.py shuffled FILE [SRC]    the same 200 offsets in a fixed random order (seed 42)
  bench_reads.py threads FILE [SRC]     64 preads of 16 KiB from 8 threads on one open file

The open (and so a cold lookup) is inside the timed window. With SRC (a local
copy of FILE), what was read is compared with it after the clock stops; a
mismatch exits 1. Sizes: BENCH_READS (200), BENCH_READ_KIB (16),
BENCH_THREAD_READS (64), BENCH_THREADS (8).
"""
import os
import random
import sys
import threading
import time

READS = int(os.environ.get("BENCH_READS", "200"))
READ_SIZE = int(os.environ.get("BENCH_READ_KIB", "16")) * 1024
THREAD_READS = int(os.environ.get("BENCH_THREAD_READS", "64"))
THREADS = int(os.environ.get("BENCH_THREADS", "8"))
PAGE = 4096


def stride_offsets(size, n):
    """n offsets at a fixed stride of size//n, nudged off page alignment as real records are."""
    stride = size // n
    if stride % PAGE == 0:
        stride -= 1
    if stride < READ_SIZE:
        sys.exit(f"object of {size} bytes too small for {n} reads of {READ_SIZE}")
    return [i * stride for i in range(n)]


def verify(src, pieces):
    with open(src, "rb") as f:
        for off, data in pieces:
            f.seek(off)
            if data != f.read(len(data)):
                sys.exit(f"content mismatch at offset {off} ({len(data)} bytes)")


def threaded(fd, offsets):
    """THREADS threads, released together, each preading its share of offsets."""
    pieces, errors = [], []
    start = threading.Barrier(THREADS + 1)

    def reader(mine):
        start.wait()
        try:
            for off in mine:
                pieces.append((off, os.pread(fd, READ_SIZE, off)))
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(offsets[t::THREADS],)) for t in range(THREADS)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return pieces


def sparse(path, mode):
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if mode == "threads":
            offsets = stride_offsets(size, THREAD_READS)
            random.Random(7).shuffle(offsets)
            pieces = threaded(fd, offsets)
        else:
            offsets = stride_offsets(size, READS)
            if mode == "shuffled":
                random.Random(42).shuffle(offsets)
            pieces = [(off, os.pread(fd, READ_SIZE, off)) for off in offsets]
        elapsed = time.monotonic() - t0
    finally:
        os.close(fd)
    for off, data in pieces:
        if len(data) != READ_SIZE:
            sys.exit(f"short read at {off}: {len(data)} bytes")
    return elapsed, pieces


def write(src, dst):
    buf = bytearray(1 << 20)
    total = 0
    with open(src, "rb") as f:
        t0 = time.monotonic()
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while n := f.readinto(buf):
                view = memoryview(buf)[:n]
                while view:
                    view = view[os.write(fd, view) :]
                total += n
        finally:
            os.close(fd)
        return time.monotonic() - t0, total


def seq(path):
    buf = bytearray(1 << 20)
    total = 0
    t0 = time.monotonic()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return time.monotonic() - t0, total


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    mode, path = sys.argv[1], sys.argv[2]
    other = sys.argv[3] if len(sys.argv) > 3 else None
    if mode == "write":
        elapsed, total = write(path, other)
    elif mode == "seq":
        elapsed, total = seq(path)
        if other and total != os.path.getsize(other):
            sys.exit(f"read {total} bytes, expected {os.path.getsize(other)}")
    elif mode in ("strided", "shuffled", "threads"):
        elapsed, pieces = sparse(path, mode)
        if other:
            verify(other, pieces)
        total = sum(len(d) for _, d in pieces)
    else:
        sys.exit(__doc__)
    print(f"{elapsed:.3f} {total}")


if __name__ == "__main__":
    main()
