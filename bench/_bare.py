"""Bare aiohttp baselines: the raw limits the benchmarks compare dubsim against.

    python -m bench._bare hello --port P   GET /hello -> {"hello": "world"}
    python -m bench._bare ws --port P      WebSocket /ws; POST /start, POST /stop broadcast
    python -m bench._bare sse --port P     SSE /events;   POST /start, POST /stop broadcast
    python -m bench._bare lifecycle --port P --db FILE   bench/_bare_lifecycle.py

The broadcast is the naive shape on purpose: build one event frame (the size of a dubsim
event, with the same `at` timestamp), then a plain sequential `await send` to every socket,
then the next event, as fast as the loop allows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import time
import weakref

import msgspec
from aiohttp import WSMsgType, web

from bench._bare_lifecycle import make_app as lifecycle_app
from service.models import Job, Role, Status, iso_ms, iso_us

SOCKETS = web.AppKey("sockets", weakref.WeakSet)
STREAMS = web.AppKey("streams", set)
LOOP = web.AppKey("loop", dict)


def _job_bytes() -> bytes:
    now = time.time()
    job = Job(
        id="x" * 22,
        user_id="bench",
        role=Role.PREMIUM,
        status=Status.COMPLETED,
        progress=100,
        attempt=1,
        max_attempts=3,
        priority=1,
        target_language="es",
        created_at=iso_ms(now),
        updated_at=iso_ms(now),
    )
    return msgspec.json.encode(job)


JOB = _job_bytes()


def ws_frame(seq: int) -> bytes:
    at = iso_us(time.time())
    head = f'{{"type":"event","seq":{seq},"event_type":"job.completed","at":"{at}","job":'
    return head.encode() + JOB + b"}"


def sse_frame(seq: int) -> bytes:
    at = iso_us(time.time())
    data = f'{{"seq":{seq},"type":"job.completed","at":"{at}","job":'
    return f"event: job.completed\nid: {seq}\ndata: {data}".encode() + JOB + b"}\n\n"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    async for msg in ws:
        if msg.type is WSMsgType.ERROR:
            break
    return ws


async def sse_handler(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    request.app[STREAMS].add((resp, done))
    try:
        await done
    finally:
        request.app[STREAMS].discard((resp, done))
    return resp


async def broadcast_ws(app: web.Application) -> None:
    seq = 0
    while True:
        seq += 1
        frame = ws_frame(seq).decode()
        for ws in list(app[SOCKETS]):
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(frame)
        await asyncio.sleep(0)


async def broadcast_sse(app: web.Application) -> None:
    seq = 0
    while True:
        seq += 1
        frame = sse_frame(seq)
        for resp, done in list(app[STREAMS]):
            try:
                await resp.write(frame)
            except (ConnectionError, RuntimeError):
                if not done.done():
                    done.set_result(None)
        await asyncio.sleep(0)


async def start(request: web.Request) -> web.Response:
    state = request.app[LOOP]
    if state.get("task") is None:
        fn = broadcast_ws if request.app["kind"] == "ws" else broadcast_sse
        state["task"] = asyncio.create_task(fn(request.app))
    return web.json_response({"started": True})


async def stop(request: web.Request) -> web.Response:
    task = request.app[LOOP].pop("task", None)
    if task is not None:
        task.cancel()
    return web.json_response({"stopped": True})


def make_app(kind: str) -> web.Application:
    app = web.Application()
    app["kind"] = kind
    app[SOCKETS] = weakref.WeakSet()
    app[STREAMS] = set()
    app[LOOP] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/hello", hello)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/events", sse_handler)
    app.router.add_post("/start", start)
    app.router.add_post("/stop", stop)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["hello", "ws", "sse", "lifecycle"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", help="lifecycle: the SQLite file")
    args = parser.parse_args()
    if args.kind == "lifecycle":
        if not args.db:
            parser.error("lifecycle needs --db")
        app = lifecycle_app(args.db)
        gc.freeze()  # as the server does once started (service/__main__.py)
    else:
        app = make_app(args.kind)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        shutdown_timeout=1,
    )


if __name__ == "__main__":
    main()
