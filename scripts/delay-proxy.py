#!/usr/bin/env python3
"""A TCP proxy that adds latency: every chunk is forwarded DELAY_MS/2 after it
arrived, in each direction, so a request/response round trip costs DELAY_MS more.
Bandwidth is not limited and order is kept. For benchmarks only.

Usage: delay-proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT RTT_MS
"""
import asyncio
import sys
import time


async def pump(reader, writer, one_way):
    queue = asyncio.Queue()

    async def read():
        try:
            while data := await reader.read(256 * 1024):
                await queue.put((time.monotonic() + one_way, data))
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
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()
        try:
            writer.close()
        except Exception:
            pass


async def main():
    listen_port, target, rtt_ms = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    host, port = target.rsplit(":", 1)
    one_way = rtt_ms / 2000.0

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer, one_way),
            pump(server_reader, client_writer, one_way),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
