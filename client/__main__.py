"""The `dubsim` command line (also `python -m dubsim`; `python -m client` in a clone).

```
dubsim [--url URL] [--token T] [--user U] [--json] COMMAND ...

  submit [--role R] [--language L] [--scenario JSON] [--idempotency-key K] [--wait [--timeout S]]
         [--video FILE|URL] [--callback-url URL] [--callback-id ID]   a media job; a callback
  wait ID... [--timeout S]           a live progress bar per job until each one ends
  watch [--job ID]... [--mine|--all] [--since SEQ]   a live table from the event stream
  jobs [--status S] [--role R] [--owner U] [--limit N]
  cancel ID [--reason TEXT]          (admin)
  retry ID | process [--count N] | cleanup [--older-than S]   (admin)
  config [KEY=VALUE...]              show, or change (admin), the runtime settings
  clock [advance SECONDS]            the server's time; move a virtual one on (admin)
  listen --forward-to URL [--events T,T] [--secret whsec_...]   forward events, signed
  trigger EVENT_TYPE                 make a job that produces that event now (prints its id)
  keys create --user U [--plan P] [--name N] | keys list | keys revoke ID   API keys (admin)
```

Options also come from DUBSIM_URL, DUBSIM_TOKEN, DUBSIM_USER and DUBSIM_API_KEY (`--api-key`:
a server with AUTH=keys). `--json` prints machine-readable
output on stdout (progress goes to stderr, and only without --json).

Exit codes: 0 success / completed, 1 a job failed or was cancelled (wins over 4), 2 usage or a
request the server refused (4xx), 3 server unreachable (or answering 5xx), 4 timed out (the job
goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import _cli_webhooks
from . import _render as render
from ._async import DEFAULT_URL, AsyncClient
from ._errors import APIError, JobError, TransportError, WaitTimeout
from ._models import Event, Job, Status

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4


class _Usage(Exception):
    """A bad argument the parser couldn't catch (e.g. malformed --scenario JSON)."""


def _parser() -> argparse.ArgumentParser:
    # The shared options work before and after the command (`dubsim wait ID --json`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="server URL [DUBSIM_URL]")
    common.add_argument("--token", default=argparse.SUPPRESS, help="admin token [DUBSIM_TOKEN]")
    common.add_argument("--user", default=argparse.SUPPRESS, help="X-User-Id [DUBSIM_USER]")
    common.add_argument(
        "--api-key", default=argparse.SUPPRESS, help="API key (AUTH=keys) [DUBSIM_API_KEY]"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    parser = argparse.ArgumentParser(
        prog="dubsim",
        description="Command line client for a dubsim server.",
        parents=[common],
        epilog="exit codes: 0 ok, 1 job failed/cancelled, 2 usage/refused, 3 unreachable, "
        "4 timed out",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("submit", parents=[common], help="submit a job")
    p.add_argument("--role", choices=["free", "premium"])
    p.add_argument("--language", dest="target_language", help="target language, e.g. es")
    p.add_argument("--scenario", help='JSON, e.g. \'{"outcome": "failed", "duration_s": 1}\'')
    p.add_argument("--idempotency-key")
    p.add_argument(
        "--video",
        metavar="FILE|URL",
        help="a media job: a local video file (uploaded first) or an http(s) URL to fetch",
    )
    p.add_argument("--callback-url", help="POST the job's terminal events here (signed)")
    p.add_argument("--callback-id", help="your own reference, echoed in the job and its events")
    p.add_argument("--wait", action="store_true", help="wait for the outcome (exit code says)")
    p.add_argument("--timeout", type=float, help="seconds to wait at most")

    p = sub.add_parser("wait", parents=[common], help="wait for jobs to end, with progress")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--timeout", type=float, help="seconds to wait at most")

    p = sub.add_parser("watch", parents=[common], help="a live table of the event stream")
    p.add_argument("--job", action="append", dest="jobs", metavar="ID")
    p.add_argument("--mine", action="store_true", help="own jobs (needs --user)")
    p.add_argument("--all", action="store_true", help="every job (needs --token)")
    p.add_argument("--since", type=int, help="resume after this seq")

    p = sub.add_parser("jobs", parents=[common], help="list jobs (own; all for admin)")
    p.add_argument("--status", choices=[s.value for s in Status])
    p.add_argument("--role", choices=["free", "premium"])
    p.add_argument("--owner", help="only this user's jobs (admin)")
    p.add_argument("--limit", type=int, default=50, help="show at most N (default 50)")

    p = sub.add_parser("cancel", parents=[common], help="cancel a job (admin)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason")

    p = sub.add_parser("retry", parents=[common], help="requeue a permanently failed job (admin)")
    p.add_argument("id", metavar="ID")

    p = sub.add_parser("process", parents=[common], help="start N queued jobs (admin)")
    p.add_argument("--count", type=int, default=1)

    p = sub.add_parser("cleanup", parents=[common], help="delete finished jobs (admin)")
    p.add_argument("--older-than", type=float, dest="older_than_s", metavar="SECONDS")

    p = sub.add_parser("config", parents=[common], help="show or change runtime settings")
    p.add_argument("changes", nargs="*", metavar="KEY=VALUE")

    _cli_webhooks.add_parsers(sub, common)  # clock, listen, trigger
    _add_keys_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `dubsim` / `python -m dubsim`; returns the exit code."""
    args = _parser().parse_args(argv)
    err = Console(stderr=True)
    try:
        return asyncio.run(_run(args, err))
    except (_Usage, _cli_webhooks.Usage) as exc:
        err.print(f"[red]usage:[/] {exc}")
        return EXIT_USAGE
    except WaitTimeout as exc:
        err.print(f"[yellow]timed out:[/] {exc}")
        return EXIT_TIMEOUT
    except JobError as exc:
        err.print(f"[red]{exc}[/]")
        return EXIT_JOB_FAILED
    except TransportError as exc:
        err.print(f"[red]server unreachable:[/] {exc}", soft_wrap=True, highlight=False)
        return EXIT_UNREACHABLE
    except APIError as exc:
        err.print(f"[red]error:[/] {exc}")
        return EXIT_UNREACHABLE if exc.status >= 500 else EXIT_USAGE
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace, err: Console) -> int:
    url = getattr(args, "url", None) or os.environ.get("DUBSIM_URL") or DEFAULT_URL
    if "://" not in url:
        url = "http://" + url  # `--url 127.0.0.1:4777`
    token = getattr(args, "token", None) or os.environ.get("DUBSIM_TOKEN") or None
    user = getattr(args, "user", None) or os.environ.get("DUBSIM_USER") or None
    api_key = getattr(args, "api_key", None) or os.environ.get("DUBSIM_API_KEY") or None
    as_json = bool(getattr(args, "json", False))
    try:
        client = AsyncClient(url, token=token, user_id=user, api_key=api_key)
    except ValueError as exc:
        raise _Usage(str(exc)) from exc
    out = Console(highlight=False)
    async with client:
        command = _COMMANDS[args.command]
        return await command(client, args, as_json, out, err)


# ---- commands ----------------------------------------------------------------------


async def _submit(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    scenario = None
    if args.scenario:
        try:
            scenario = msgspec.json.decode(args.scenario)
        except msgspec.DecodeError as exc:
            raise _Usage(f"--scenario is not JSON: {exc}") from exc
    video_url = asset_id = None
    if args.video and args.video.startswith(("http://", "https://")):
        video_url = args.video
    elif args.video:
        try:
            asset = await client.upload(args.video)
        except FileNotFoundError as exc:
            raise _Usage(f"--video: {exc}") from exc
        if not as_json:
            err.print(f"uploaded {args.video} as asset {asset.id} ({asset.duration_s:g} s)")
        asset_id = asset.id
    job = await client.submit(
        role=args.role,
        target_language=args.target_language,
        scenario=scenario,
        idempotency_key=args.idempotency_key,
        video_url=video_url,
        asset_id=asset_id,
        callback_url=args.callback_url,
        callback_id=args.callback_id,
    )
    if not args.wait:
        render.print_jobs([job], as_json, out, single=True)
        return EXIT_OK
    if not as_json:
        err.print(f"submitted {job.id}")
    return await _wait_jobs(client, [job.id], args.timeout, as_json, out, err, single=True)


async def _wait(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    return await _wait_jobs(client, args.ids, args.timeout, as_json, out, err, single=False)


async def _wait_jobs(
    client: AsyncClient,
    ids: Sequence[str],
    timeout_s: float | None,
    as_json: bool,
    out: Console,
    err: Console,
    *,
    single: bool,
) -> int:
    ids = list(dict.fromkeys(ids))
    # One plain read first: an unreachable server or an unknown id fails fast (exit 3 / 2)
    # instead of being retried until the deadline.
    latest = {job_id: await client.get(job_id) for job_id in ids}
    bars = render.Bars(err, enabled=not as_json)
    for job in latest.values():
        bars.add(job)

    def on_progress(job: Job) -> None:
        latest[job.id] = job
        bars.update(job)

    code = EXIT_OK
    with bars:
        try:
            async for job in client.as_completed(ids, timeout_s, on_progress):
                latest[job.id] = job
                bars.update(job)
        except WaitTimeout:
            code = EXIT_TIMEOUT
    jobs = [latest[job_id] for job_id in ids]
    if any(j.status in (Status.PERMANENTLY_FAILED, Status.CANCELLED) for j in jobs):
        code = EXIT_JOB_FAILED  # a known bad outcome matters more than an unknown one
    if as_json:
        render.print_json(jobs[0] if single else jobs)
    else:
        for job in jobs:
            out.print(render.outcome_line(job))
        if code == EXIT_TIMEOUT:
            err.print("[yellow]timed out[/]: the unfinished jobs go on on the server")
    return code


async def _watch(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    stream = client.events(jobs=args.jobs, mine=args.mine, all=args.all, since=args.since)
    async with stream:
        if as_json or not out.is_terminal:
            # A pipe or a log: one line per event, written as it arrives.
            async for event in stream:
                if as_json:
                    text = msgspec.json.encode(render.to_wire(event)).decode()
                else:
                    text = render.event_line(event)
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            return EXIT_OK
        jobs: dict[str, Job] = {}
        last: list[Event] = []
        table = render.watch_table(jobs, last, out.width)
        with Live(table, console=out, refresh_per_second=8) as live:
            async for event in stream:
                if event.job is not None:
                    jobs[event.job.id] = event.job
                last[:] = [event]
                live.update(render.watch_table(jobs, last, out.width))
    return EXIT_OK


async def _jobs(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    if args.limit < 1:
        raise _Usage("--limit must be at least 1")
    found: list[Job] = []
    source = client.list(
        status=args.status, role=args.role, user=args.owner, page_size=min(args.limit, 500)
    )
    async for job in source:
        found.append(job)
        if len(found) >= args.limit:
            break
    await source.aclose()
    render.print_jobs(found, as_json, out)
    return EXIT_OK


async def _cancel(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    render.print_jobs([await client.cancel(args.id, reason=args.reason)], as_json, out, single=True)
    return EXIT_OK


async def _retry(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    render.print_jobs([await client.retry(args.id)], as_json, out, single=True)
    return EXIT_OK


async def _process(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    render.print_jobs(await client.process(args.count), as_json, out)
    return EXIT_OK


async def _cleanup(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    deleted = await client.cleanup(args.older_than_s)
    if as_json:
        render.print_json({"deleted": deleted})
    else:
        out.print(f"deleted {deleted} finished job(s)")
    return EXIT_OK


async def _config(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    if args.changes:
        config = await client.update_config(**_parse_changes(args.changes))
    else:
        config = await client.config()
    if as_json:
        render.print_json(config)
    else:
        table = Table("setting", "value", title="config")
        for name, value in msgspec.structs.asdict(config).items():
            table.add_row(name, str(value))
        out.print(table)
    return EXIT_OK


_COMMANDS = {
    "submit": _submit,
    "wait": _wait,
    "watch": _watch,
    "jobs": _jobs,
    "cancel": _cancel,
    "retry": _retry,
    "process": _process,
    "cleanup": _cleanup,
    "config": _config,
    **_cli_webhooks.COMMANDS,
}


# ---- API keys (admin) ----------------------------------------------------------------


def _add_keys_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", parents=[common], help="make, list and revoke API keys (admin)")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    # here --user names the key's user, not X-User-Id: the shared options without that one
    bare = argparse.ArgumentParser(add_help=False)
    bare.add_argument("--url", default=argparse.SUPPRESS, help="server URL [DUBSIM_URL]")
    bare.add_argument("--token", default=argparse.SUPPRESS, help="admin token [DUBSIM_TOKEN]")
    bare.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    p = actions.add_parser("create", parents=[bare], help="make a key (printed once)")
    p.add_argument(
        "--user", dest="key_user", metavar="USER", required=True, help="the user the key names"
    )
    p.add_argument("--plan", default="free", help="free (default) or premium")
    p.add_argument("--name", help="a label to recognise it by")
    actions.add_parser("list", parents=[common], help="every live key, without secrets")
    p = actions.add_parser("revoke", parents=[common], help="revoke a key at once")
    p.add_argument("id", metavar="ID")


async def _keys(
    client: AsyncClient, args: argparse.Namespace, as_json: bool, out: Console, err: Console
) -> int:
    if args.keys_command == "create":
        made = await client.create_key(args.key_user, args.plan, args.name)
        if as_json:
            render.print_json(made)
        else:
            out.print(made.key, soft_wrap=True)
            err.print(f"key {made.id} for {made.user_id} ({made.plan}): shown once, store it now")
        return EXIT_OK
    if args.keys_command == "list":
        keys = await client.list_keys()
        if as_json:
            render.print_json(keys)
        else:
            table = Table(title="API keys")
            for column in ("id", "key", "user", "plan", "name", "created", "last used"):
                table.add_column(column, no_wrap=column in ("id", "key"))
            for key in keys:
                when = [
                    t.strftime("%Y-%m-%d %H:%M") if t else "-"
                    for t in (key.created_at, key.last_used_at)
                ]
                table.add_row(key.id, key.prefix, key.user_id, key.plan, key.name or "-", *when)
            out.print(table)
        return EXIT_OK
    revoked = await client.revoke_key(args.id)
    if as_json:
        render.print_json(revoked)
    else:
        out.print(f"revoked {revoked.id} ({revoked.prefix}, {revoked.user_id})")
    return EXIT_OK


_COMMANDS["keys"] = _keys


# ---- input -------------------------------------------------------------------------


def _parse_changes(pairs: Sequence[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise _Usage(f"expected KEY=VALUE, got {pair!r}")
        try:
            # Numbers and booleans as JSON (0.5, true); anything else stays a string.
            changes[key] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            changes[key] = raw
    return changes


if __name__ == "__main__":
    sys.exit(main())
