"""`dubsim-server` / `python -m dubsim.server` (`python -m service` in a clone): serve with
settings from env vars and flags.

Start order: settings, then the app's startup (the store opens), then the socket binds; only
then is "dubsim serving on ..." printed. Anything that stops the start is one line on stderr,
`dubsim: <SETTING>: <problem>`, and exit code 2. SIGTERM and SIGINT stop the server gracefully
(streams are told "going away", requests get up to SHUTDOWN_GRACE_S) with exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import secrets
import signal
import socket
import sqlite3
import sys

import msgspec
from aiohttp import web

from .app import create_app
from .errors import StartupError
from .settings import Settings, SettingsError

EXIT_START_FAILED = 2
CLEANUP_SLACK_S = 0.5  # after SHUTDOWN_GRACE_S, for what follows the requests


def main(argv: list[str] | None = None) -> None:
    try:
        settings = Settings.load(argv, prog=_prog())
    except SettingsError as exc:
        _fail(StartupError(exc.name, exc.problem))
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        asyncio.run(_serve(settings))
    except StartupError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        raise SystemExit(130) from None


def _tune_gc() -> None:
    """Once loaded, what start-up made (modules, the jobs read back) is never garbage: the
    cyclic collector stops walking it (gc.freeze). The collector's thresholds stay CPython's:
    raised (young objects collected every 10,000 allocations rather than 700) the lifecycle
    benchmark gained ~12 %, but garbage in cycles waited longer and what it held with it (a
    closed socket's buffers): the memory test's waves grew 10-25 MiB each under load. What
    the collector walks was cut instead: the read model's records and jobs are untracked."""
    gc.freeze()


def _prog() -> str:
    """The name `--help` shows: the console script's, or `python -m <this package>`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name.startswith("dubsim-server"):
        return "dubsim-server"
    return f"python -m {__package__ or 'dubsim.server'}"


def _fail(exc: StartupError) -> None:
    print(f"dubsim: {exc.setting}: {exc.problem}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_START_FAILED)


async def _serve(settings: Settings) -> None:
    generated = settings.admin_token is None
    if generated:
        settings = msgspec.structs.replace(settings, admin_token=secrets.token_urlsafe(24))
    runner = web.AppRunner(
        create_app(settings),
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_s,
        # a connection without a complete request (idle, or dribbling headers) is cut
        keepalive_timeout=settings.idle_timeout_s,
    )
    try:
        await _start(runner, settings)
    except BaseException:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        raise
    stop = _stop_on_signals()  # before "serving on": a SIGTERM right after it is a clean stop
    _tune_gc()
    try:
        port = runner.addresses[0][1]  # the real one when PORT is 0
        if generated:
            print(f"admin token (generated, set ADMIN_TOKEN to choose one): {settings.admin_token}")
        url = f"http://{_url_host(settings.host)}:{port}"
        store = f"redis: {settings.redis_url}" if settings.redis_url else f"db: {settings.db}"
        print(f"dubsim serving on {url}  (dashboard: {url}/, {store})", flush=True)
        await stop.wait()
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await _cleanup(runner, settings.shutdown_grace_s + CLEANUP_SLACK_S)


async def _cleanup(runner: web.AppRunner, deadline_s: float) -> None:
    """Stop within the deadline: requests get SHUTDOWN_GRACE_S, and what comes after them
    (the scheduler's hand-back, the webhooks, closing the store) must not add to it when the
    store hangs. Past the deadline the process ends here: what is acknowledged is durable
    already, and a task stuck on a store that doesn't answer can't be waited for."""
    try:
        async with asyncio.timeout(deadline_s):
            await runner.cleanup()
    except TimeoutError:
        logging.getLogger("dubsim").warning(
            "shutdown: still cleaning up %.1f s after the stop (is the store answering?); "
            "exiting now",
            deadline_s,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


async def _start(runner: web.AppRunner, settings: Settings) -> None:
    """Open the store (the app's startup), then listen. Failures become StartupError."""
    try:
        await runner.setup()
    except (sqlite3.Error, OSError) as exc:
        # A store that raises StartupError itself says more; this is the fallback.
        raise StartupError("DB", f"can't open {settings.db!r}: {_reason(exc)}") from exc
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        raise _bind_error(exc, settings) from exc


def _bind_error(exc: OSError, settings: Settings) -> StartupError:
    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, socket.gaierror):
        return StartupError("HOST", f"can't resolve {settings.host!r}: {exc.strerror}")
    if exc.errno == errno.EADDRINUSE:
        return StartupError("PORT", f"{where} is already in use (is another server running?)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StartupError("PORT", f"not allowed to listen on {where}: {_reason(exc)}")
    return StartupError("HOST", f"can't listen on {where}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # without asyncio's "error while attempting to bind ..."
    return str(exc) or type(exc).__name__


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (instead of their default: dying on the spot)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


if __name__ == "__main__":
    main()
