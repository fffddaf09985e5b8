#!/usr/bin/env python3
"""A TCP proxy that adds latency: every chunk is forwarded DELAY_MS/2 after it
arrived, in each direction, so a request/response round trip costs DELAY_MS more.
Bandwidth is not limited and order is kept. For benchmarks only.

It also counts what crosses it, for HTTP/1.x traffic: requests (request heads
client->server, framed by Content-Length / chunked encoding so that upload
bodies are never mistaken for requests), requests by kind (GET, HEAD, LIST =
a GET of a bucket (path-style, no key), PUT, POST, DELETE, ...), bytes
downloaded (server->client, headers included, counted when handed to the
client's socket), bytes uploaded (client->server),
connections, and the peak number of requests waiting at once (from a request
head until the first byte of the answer on that connection).

Usage: delay-proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT RTT_MS [--control PORT] [--window BYTES]

At most --window bytes (default 4 MiB) are held per direction of a connection,
as a TCP window would: a sender is paced by its receiver, and bytes a client
never took (it closed the connection mid-body) are not counted as downloaded.

With --control PORT, a line-based control server listens on 127.0.0.1:PORT;
each connection sends one command line and gets one line back, then is closed:
  stats   ->  requests=N down=BYTES up=BYTES conns=N peak=N kinds=GET:3,HEAD:1
  reset   ->  the same line (the counters just before), then zeroes them
  rtt MS  ->  "ok": changes the added round trip for data arriving from now on
From bash:  exec 3<>/dev/tcp/127.0.0.1/PORT; echo stats >&3; read -r line <&3
"""
import asyncio
import re
import sys
import time

REQUEST_LINE = re.compile(rb"(GET|HEAD|PUT|POST|DELETE|OPTIONS|PATCH) (\S+) HTTP/1\.[01]\r\n")
MAX_HEAD = 1 << 20


class Stats:
    def __init__(self):
        self.reset()
        self.waiting = 0  # requests sent, answer not started (not reset: live state)

    def reset(self):
        self.requests = 0
        self.down = 0
        self.up = 0
        self.conns = 0
        self.peak = 0
        self.kinds = {}

    def line(self):
        kinds = ",".join(f"{k}:{v}" for k, v in sorted(self.kinds.items(), key=lambda kv: -kv[1]))
        return (
            f"requests={self.requests} down={self.down} up={self.up} conns={self.conns} "
            f"peak={self.peak} kinds={kinds or '-'}"
        )

    def request(self, method, target):
        self.requests += 1
        kind = method.decode()
        if method == b"GET":
            path = target.partition(b"?")[0]
            # path-style addressing: a GET of /bucket or /bucket/ (no key) is a listing
            if b"/" not in path.strip(b"/"):
                kind = "LIST"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.waiting += 1
        self.peak = max(self.peak, self.waiting)


class RequestParser:
    """Counts HTTP/1.x request heads in a client->server byte stream."""

    def __init__(self, stats, conn):
        self.stats, self.conn = stats, conn
        self.buf = b""
        self.body = 0  # bytes of body still to skip
        self.chunked = False
        self.lost = False  # framing not understood: fall back to scanning for request lines

    def feed(self, data):
        while data:
            if self.body:
                n = min(self.body, len(data))
                self.body -= n
                data = data[n:]
                continue
            if self.lost:
                for m in REQUEST_LINE.finditer(data):
                    self.conn.sent_request()
                    self.stats.request(m.group(1), m.group(2))
                return
            self.buf += data
            data = b""
            if self.chunked:
                data = self._chunk()
                continue
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.lost, self.buf = True, b""
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            data, self.buf = self.buf, b""
            self._head(head)

    def _head(self, head):
        lines = head.split(b"\r\n")
        m = REQUEST_LINE.match(lines[0] + b"\r\n")
        if not m:
            self.lost = True
            return
        self.conn.sent_request()
        self.stats.request(m.group(1), m.group(2))
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length" and value.isdigit():
                self.body = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                self.chunked = True

    def _chunk(self):
        """Consumes chunked body framing from self.buf; returns bytes left after the body."""
        while True:
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                if len(self.buf) > 4096:
                    self.lost, self.buf = True, b""
                return b""
            size_field = self.buf[:nl].split(b";")[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                self.lost, self.buf = True, b""
                return b""
            if size == 0:
                # last chunk: trailers end with an empty line
                end = self.buf.find(b"\r\n\r\n", nl)
                if end < 0:
                    return b""
                rest = self.buf[end + 4 :]
                self.buf, self.chunked = b"", False
                return rest
            need = nl + 2 + size + 2
            if len(self.buf) >= need:
                self.buf = self.buf[need:]
                continue
            # skip the rest of this chunk without buffering it
            have = len(self.buf) - (nl + 2)
            self.buf = b""
            self._pending_chunk_skip(size + 2 - have)
            return b""

    def _pending_chunk_skip(self, n):
        # reuse the plain body skipper; after it, chunk framing resumes (chunked stays True)
        self.body = n


class Conn:
    def __init__(self, stats):
        self.stats = stats
        self.waiting = 0

    def sent_request(self):
        self.waiting += 1

    def answer_started(self):
        if self.waiting:
            self.stats.waiting -= self.waiting
            self.waiting = 0

    def closed(self):
        self.answer_started()


async def pump(reader, writer, delay, window, on_read, on_delivered):
    """Forwards reader to writer, each chunk delay() seconds after it arrived, with at
    most `window` bytes held in between (as a TCP window would), so a sender is slowed
    down by a slow or vanished receiver instead of being drained into memory."""
    queue = asyncio.Queue()
    held = [0]
    room = asyncio.Event()
    room.set()

    async def read():
        try:
            while data := await reader.read(256 * 1024):
                on_read(data)
                await queue.put((time.monotonic() + delay(), data))
                held[0] += len(data)
                if held[0] >= window:
                    room.clear()
                    await room.wait()
        except (ConnectionError, OSError):
            pass
        await queue.put((0.0, b""))

    reading = asyncio.ensure_future(read())
    try:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            on_delivered(len(data))
            held[0] -= len(data)
            if held[0] < window:
                room.set()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()
        try:
            writer.close()
        except Exception:
            pass


async def main():
    args = sys.argv[1:]
    control, window = None, 4 << 20
    for flag in ("--control", "--window"):
        if flag in args:
            i = args.index(flag)
            if flag == "--control":
                control = int(args[i + 1])
            else:
                window = int(args[i + 1])
            del args[i : i + 2]
    listen_port, target, rtt_ms = int(args[0]), args[1], float(args[2])
    host, port = target.rsplit(":", 1)
    one_way = [rtt_ms / 2000.0]
    stats = Stats()

    def delay():
        return one_way[0]

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        stats.conns += 1
        conn = Conn(stats)
        parser = RequestParser(stats, conn)

        def up_delivered(n):
            stats.up += n

        def down_read(data):
            conn.answer_started()

        def down_delivered(n):
            stats.down += n

        try:
            await asyncio.gather(
                pump(client_reader, server_writer, delay, window, parser.feed, up_delivered),
                pump(server_reader, client_writer, delay, window, down_read, down_delivered),
            )
        finally:
            conn.closed()

    async def handle_control(reader, writer):
        try:
            cmd = (await reader.readline()).decode().split()
            if cmd[:1] == ["stats"]:
                reply = stats.line()
            elif cmd[:1] == ["reset"]:
                reply = stats.line()
                stats.reset()
                stats.peak = stats.waiting
            elif cmd[:1] == ["rtt"] and len(cmd) == 2:
                one_way[0] = float(cmd[1]) / 2000.0
                reply = "ok"
            else:
                reply = "error: commands are stats, reset, rtt MS"
            writer.write(reply.encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    servers = [server]
    if control is not None:
        servers.append(await asyncio.start_server(handle_control, "127.0.0.1", control))
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
