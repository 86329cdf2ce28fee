"""A subscriber process: many cheap raw-asyncio WebSocket or SSE clients that count events.

    python -m bench._subscribers --port P --kind ws|sse --path /v1/ws --count N [--sample K]

Speaks JSON lines with its parent: prints {"ready": n} once every client is connected and
subscribed, then reads {"window": [t0, t1]} (wall-clock seconds) and prints
{"frames": n, "latencies": [...], "closed": n} after t1: the events received inside the window
and, for every K-th client, each event's receive time minus its `at`. Exits on stdin EOF.

Clients are deliberately minimal (no per-frame JSON decoding) so that, on a small machine, the
receivers cost as little CPU as possible next to the server being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import sys
import time

from bench._common import raise_nofile

AT = b'"at":"'
_epochs: dict[bytes, float] = {}


def at_epoch(buf: bytes | bytearray, start: int) -> float | None:
    i = buf.find(AT, start)
    if i < 0:
        return None
    raw = bytes(buf[i + 6 : i + 33])
    when = _epochs.get(raw)
    if when is None:
        when = _epochs[raw] = dt.datetime.fromisoformat(
            raw.decode().replace("Z", "+00:00")
        ).timestamp()
    return when


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


class Stats:
    def __init__(self) -> None:
        self.window = (float("inf"), float("inf"))
        self.frames = 0
        self.latencies: list[float] = []
        self.closed = 0


class Client(asyncio.Protocol):
    def __init__(self, stats: Stats, kind: str, sample: bool, request: bytes, hello: bytes) -> None:
        self.stats = stats
        self.kind = kind
        self.sample = sample
        self.request = request
        self.hello = hello
        self.buf = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status and b" 200 " not in status:
                self.ready.set_exception(ConnectionError(status.decode()))
                return
            self.upgraded = True
            if self.hello and self.transport is not None:
                self.transport.write(self.hello)
            if self.kind == "sse" or not self.hello:
                self.ready.set_result(None)
        if self.kind == "ws":
            self._ws_frames(now)
        else:
            self._sse_events(now)

    def _ws_frames(self, now: float) -> None:
        buf = self.buf
        stats = self.stats
        inside = stats.window[0] <= now <= stats.window[1]
        i = 0
        size = len(buf)
        while size - i >= 2:
            n = buf[i + 1] & 0x7F
            if n < 126:
                hl = 2
            elif n == 126:
                if size - i < 4:
                    break
                n = int.from_bytes(buf[i + 2 : i + 4], "big")
                hl = 4
            else:
                if size - i < 10:
                    break
                n = int.from_bytes(buf[i + 2 : i + 10], "big")
                hl = 10
            if size - i < hl + n:
                break
            opcode = buf[i] & 0x0F
            start = i + hl
            if opcode == 1:
                if buf.startswith(b'{"type":"event"', start):
                    if inside:
                        stats.frames += 1
                        if self.sample:
                            at = at_epoch(buf, start)
                            if at is not None:
                                stats.latencies.append(now - at)
                elif not self.ready.done():
                    self.ready.set_result(None)  # "subscribed"
            elif opcode == 9 and self.transport is not None:
                self.transport.write(b"\x8a\x80" + os.urandom(4))  # pong, empty
            i = start + n
        del buf[:i]

    def _sse_events(self, now: float) -> None:
        buf = self.buf
        end = buf.rfind(b"\n\n")
        if end < 0:
            return
        stats = self.stats
        if stats.window[0] <= now <= stats.window[1]:
            count = buf.count(AT, 0, end)
            stats.frames += count
            if self.sample:
                i = buf.find(AT, 0, end)
                while i >= 0:
                    at = at_epoch(buf, i)
                    if at is not None:
                        stats.latencies.append(now - at)
                    i = buf.find(AT, i + 6, end)
        del buf[: end + 2]


def request_bytes(kind: str, path: str, port: int, token: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if kind == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
    else:
        lines += ["Accept: text/event-stream"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    hello = masked_text(args.hello.encode()) if args.kind == "ws" and args.hello else b""
    clients: list[Client] = []
    gate = asyncio.Semaphore(args.concurrency)

    async def connect(i: int) -> None:
        async with gate:
            request = request_bytes(args.kind, args.path, args.port, args.token)
            for attempt in range(5):
                try:
                    _, client = await loop.create_connection(
                        lambda: Client(stats, args.kind, i % args.sample == 0, request, hello),
                        "127.0.0.1",
                        args.port,
                    )
                    await asyncio.wait_for(client.ready, 30)
                    clients.append(client)
                    return
                except (OSError, TimeoutError):
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise ConnectionError(f"client {i} could not connect")

    await asyncio.gather(*(connect(i) for i in range(args.count)))
    stats.closed = 0
    print(json.dumps({"ready": len(clients)}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        message = json.loads(line)
        if "window" in message:
            t0, t1 = message["window"]
            stats.window = (t0, t1)
            stats.frames = 0
            stats.latencies = []
            await asyncio.sleep(max(0.0, t1 - time.time()) + 0.5)
            print(
                json.dumps(
                    {"frames": stats.frames, "latencies": stats.latencies, "closed": stats.closed}
                ),
                flush=True,
            )
        elif message.get("exit"):
            break
    for client in clients:
        if client.transport is not None:
            client.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description="many minimal WS/SSE subscribers (a helper)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=["ws", "sse"], required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sample", type=int, default=10, help="every K-th client times events")
    parser.add_argument("--token", default=None)
    parser.add_argument("--hello", default="", help="WS text sent after the upgrade")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    raise_nofile()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
