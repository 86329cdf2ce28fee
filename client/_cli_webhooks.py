"""`dubsim clock`, `dubsim listen` and `dubsim trigger`: the command line for integrating webhooks.

```
clock [advance SECONDS]              the server's time; move a virtual one on (admin)
listen --forward-to URL [--events T,T] [--secret whsec_...]
                                     forward the live events to a local receiver, signed
trigger EVENT_TYPE                   make a job that produces that event now; prints its id
```

`listen` follows the WebSocket event stream (the client's own, resumed by seq after a drop,
so nothing is skipped) and POSTs each `job.*` event to `--forward-to`, signed per Standard
Webhooks with its secret (generated unless given, printed first). The body is the event exactly
as the server's own webhooks carry it (and the SSE stream's `data:`): `{"seq", "type", "at",
"job"}`, so one receiver serves both; `webhook-id` is `evt_<seq>`, the same however often it
is sent. One line per delivery says the receiver's
status and how long it took. Ctrl-C (or SIGTERM) ends it with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import msgspec
from rich.console import Console

from . import _render as render
from ._async import AsyncClient
from ._models import Event
from ._webhooks import EVENT_TYPES, generate_secret, sign_webhook

__all__ = ["COMMANDS", "Usage", "add_parsers"]

FORWARD_TIMEOUT_S: Final = 10.0
# the scenario that makes each event happen at once (job.cancelled and job.deleted then act)
SCENARIOS: Final[dict[str, dict[str, Any]]] = {
    "job.created": {"duration_s": 0.5},
    "job.started": {"duration_s": 0.5},
    "job.progress": {"duration_s": 1.0},  # progress every 5 %, at most every 250 ms
    "job.failed": {"duration_s": 0.1, "fail_attempts": 1},
    "job.retrying": {"duration_s": 0.1, "fail_attempts": 1},
    "job.completed": {"duration_s": 0.1},
    "job.permanently_failed": {"duration_s": 0.1, "outcome": "permanently_failed"},
    "job.cancelled": {"outcome": "stuck"},
    "job.deleted": {"outcome": "stuck"},
}

Command = Callable[[AsyncClient, argparse.Namespace, bool, Console, Console], Awaitable[int]]


class Usage(Exception):
    """A bad argument the parser couldn't catch."""


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `clock`, `listen` and `trigger` to the `dubsim` command line."""
    p = sub.add_parser("clock", parents=[common], help="the server's clock; advance a virtual one")
    p.add_argument("action", nargs="?", choices=["advance"], help="advance (admin)")
    p.add_argument("seconds", nargs="?", type=float, help="how far to move the clock on")

    p = sub.add_parser("listen", parents=[common], help="forward live events to a local receiver")
    p.add_argument("--forward-to", required=True, metavar="URL", help="where to POST each event")
    p.add_argument("--events", help="comma-separated event types (default: every job event)")
    p.add_argument("--secret", help="whsec_ signing secret (default: a new one, printed)")
    p.add_argument("--since", type=int, help="start after this seq (replay what came after)")

    p = sub.add_parser("trigger", parents=[common], help="make a job that produces an event now")
    p.add_argument("event_type", choices=EVENT_TYPES, metavar="EVENT_TYPE")


# ---- clock ---------------------------------------------------------------------------


async def _clock(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    if args.action is None:
        if args.seconds is not None:
            raise Usage("expected: dubsim clock [advance SECONDS]")
        state = await client.clock()
    else:
        if args.seconds is None:
            raise Usage("dubsim clock advance SECONDS")
        state = await client.advance_clock(args.seconds)
    if as_json:
        render.print_json(state)
    else:
        mode = f" ({state.mode})" if state.mode else ""
        moved = f", moved on {state.advanced_s:g} s" if state.advanced_s is not None else ""
        out.print(f"{render.to_wire(state)['now']}{mode}{moved}")
    return 0


# ---- listen --------------------------------------------------------------------------


def webhook_body(event: Event) -> bytes:
    """What a webhook carries for one event: the server's own body (its `event_body`)."""
    wire = render.to_wire(event)
    body = {"seq": event.seq, "type": event.type, "at": wire.get("at"), "job": wire["job"]}
    return msgspec.json.encode(body)


async def _listen(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    secret = args.secret or generate_secret()
    try:
        sign_webhook(b"", secret, "check")
    except ValueError as exc:
        raise Usage(f"--secret: {exc}") from exc
    wanted = set(EVENT_TYPES)
    if args.events:
        wanted = {t.strip() for t in args.events.split(",") if t.strip()}
        unknown = wanted - set(EVENT_TYPES)
        if unknown:
            raise Usage(f"--events: unknown {', '.join(sorted(unknown))}")
    target = args.forward_to
    if not target.startswith(("http://", "https://")):
        raise Usage("--forward-to must be an http(s) URL")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _line(f"secret: {secret}")
    stream = client.events(since=args.since)
    timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
    try:
        async with stream, aiohttp.ClientSession(timeout=timeout) as session:
            # subscribed before saying so: whatever happens after this line is forwarded
            await stream.ready()
            _line(f"forwarding {', '.join(sorted(wanted))} to {target} (Ctrl-C to stop)")
            while not stop.is_set():
                nxt = asyncio.ensure_future(anext(stream))
                halt = asyncio.ensure_future(stop.wait())
                await asyncio.wait([nxt, halt], return_when=asyncio.FIRST_COMPLETED)
                halt.cancel()
                if not nxt.done():
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await nxt
                    break
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    break
                if event.type == "reset":
                    _line(f"reset: events were lost ({event.reason}); snapshots follow")
                if event.job is None or event.type not in wanted:
                    continue
                await _forward(session, target, secret, event)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    _line("stopped")
    return 0


async def _forward(session: aiohttp.ClientSession, target: str, secret: str, event: Event) -> None:
    body = webhook_body(event)
    headers = {**sign_webhook(body, secret, f"evt_{event.seq}"), "content-type": "application/json"}
    job_id = event.job.id if event.job is not None else "-"
    started = time.perf_counter()
    try:
        async with session.post(target, data=body, headers=headers) as resp:
            await resp.read()
            outcome = str(resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        outcome = f"error {type(exc).__name__}: {exc}"
    took = (time.perf_counter() - started) * 1000
    _line(f"{event.type} seq={event.seq} job={job_id} -> {outcome} ({took:.0f} ms)")


def _line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ---- trigger -------------------------------------------------------------------------


async def _trigger(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    kind = args.event_type
    job = await client.submit(role="premium", scenario=SCENARIOS[kind])
    if kind in ("job.cancelled", "job.deleted"):
        job = await client.cancel(job.id, reason=f"dubsim trigger {kind}")
    if kind == "job.deleted":
        # there is no per-job delete: a cleanup of what finished up to now takes it with them
        await client.cleanup()
    if as_json:
        render.print_json({"id": job.id, "event_type": kind})
    else:
        out.print(job.id)
    if kind == "job.deleted" and not as_json:
        err.print("note: job.deleted came from a cleanup, which deleted every finished job")
    return 0


COMMANDS: Final[dict[str, Command]] = {
    "clock": _clock,
    "listen": _listen,
    "trigger": _trigger,
}
