"""Settings: one validated Struct from defaults, env vars and flags; a runtime subset is patchable.

Every field has an env var (its name upper-cased, e.g. TRANSLATION_DELAY) and a flag
(`--translation-delay`). Validation is msgspec's: the same constraints guard the CLI, the env
and `PATCH /v1/config`, so a bad value is refused the same way everywhere.

Each field is documented where it is declared: `Annotated[<type>, doc("what it does", "unit")]`
with its default after the `=`. `--help`, the README's settings table
(`python -m service.settings --markdown`; `make docs` rewrites it) and the OpenAPI schema all
read that one definition; a test checks that the README's table is the generated one. A new
setting is one such line (plus, if runtime-tunable, its twin in ConfigPatch).
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

# Value constraints, shared by Config and ConfigPatch.
Delay = Annotated[float, Meta(ge=0, le=3600)]
Rate = Annotated[float, Meta(ge=0, le=1)]
Limit = Annotated[int, Meta(ge=0, le=1_000_000)]
Speedup = Annotated[float, Meta(gt=0, le=10)]
Attempts = Annotated[int, Meta(ge=1, le=100)]
Workers = Annotated[int, Meta(ge=1, le=10_000)]
Stall = Annotated[float, Meta(ge=0, le=60)]
Bound = Annotated[int, Meta(ge=1, le=10_000_000)]
Deadline = Annotated[float, Meta(gt=0, le=365 * 86_400)]
InFlight = Annotated[int, Meta(ge=1, le=10_000_000)]


def doc(description: str, unit: str = "") -> Meta:
    """A setting's documentation: `--help`, the README table and the OpenAPI schema show it."""
    return Meta(description=description, extra={"unit": unit})


MIN_ADMIN_TOKEN = 16  # a guessable token is no token: refused at start


class Config(msgspec.Struct, forbid_unknown_fields=True):
    """The runtime-tunable part of the settings (GET/PATCH /v1/config)."""

    translation_delay: Annotated[Delay, doc("how long one attempt of a job takes", "s")] = 15.0
    error_rate: Annotated[Rate, doc("chance that an attempt fails (0 to 1)", "fraction")] = 0.2
    rate_limit: Annotated[Limit, doc("submissions a free user may make in any hour", "jobs/h")] = 5
    premium_rate_limit: Annotated[
        Limit, doc("submissions a premium user may make in any hour", "jobs/h")
    ] = 1_000
    max_in_flight: Annotated[
        InFlight, doc("unfinished jobs one user may have at once (either plan)", "jobs")
    ] = 1_000
    premium_speedup: Annotated[
        Speedup, doc("premium jobs take this fraction of TRANSLATION_DELAY", "factor")
    ] = 0.5
    max_attempts: Annotated[
        Attempts, doc("attempts before a job is permanently failed", "attempts")
    ] = 3
    retry_delay: Annotated[Delay, doc("wait before the first retry; doubles each time", "s")] = 1.0
    workers: Annotated[Workers, doc("jobs processed at the same time", "jobs")] = 4
    auto_process: Annotated[
        bool, doc("start queued jobs by themselves (false: only POST /v1/process does)")
    ] = True
    fault_rate: Annotated[
        Rate, doc("chance that a job read gets an injected stall or 5xx (0 to 1)", "fraction")
    ] = 0.0
    fault_stall_s: Annotated[Stall, doc("how long an injected stall lasts", "s")] = 2.0
    attempt_timeout_s: Annotated[
        Deadline, doc("an attempt still running after this fails with error timeout", "s")
    ] = 3600.0
    job_ttl_s: Annotated[
        Deadline, doc("finished jobs are deleted this long after they finished", "s")
    ] = 7 * 86_400.0


class ConfigPatch(msgspec.Struct, forbid_unknown_fields=True):
    """A partial Config: absent fields stay as they are."""

    translation_delay: Delay | msgspec.UnsetType = msgspec.UNSET
    error_rate: Rate | msgspec.UnsetType = msgspec.UNSET
    rate_limit: Limit | msgspec.UnsetType = msgspec.UNSET
    premium_rate_limit: Limit | msgspec.UnsetType = msgspec.UNSET
    max_in_flight: InFlight | msgspec.UnsetType = msgspec.UNSET
    premium_speedup: Speedup | msgspec.UnsetType = msgspec.UNSET
    max_attempts: Attempts | msgspec.UnsetType = msgspec.UNSET
    retry_delay: Delay | msgspec.UnsetType = msgspec.UNSET
    workers: Workers | msgspec.UnsetType = msgspec.UNSET
    auto_process: bool | msgspec.UnsetType = msgspec.UNSET
    fault_rate: Rate | msgspec.UnsetType = msgspec.UNSET
    fault_stall_s: Stall | msgspec.UnsetType = msgspec.UNSET
    attempt_timeout_s: Deadline | msgspec.UnsetType = msgspec.UNSET
    job_ttl_s: Deadline | msgspec.UnsetType = msgspec.UNSET

    def apply(self, config: Config) -> Config:
        changes = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not msgspec.UNSET}
        return msgspec.structs.replace(config, **changes)


class Settings(msgspec.Struct, kw_only=True):
    """Everything the service is started with. Build it with `Settings.load()` or directly."""

    host: Annotated[str, doc("address to listen on")] = "127.0.0.1"
    port: Annotated[
        Annotated[int, Meta(ge=0, le=65535)], doc("TCP port to listen on (0: any free one)")
    ] = 4777
    db: Annotated[str, doc("SQLite file that keeps the jobs (:memory: keeps nothing)")] = (
        "./dubsim.db"
    )
    admin_token: Annotated[
        Annotated[str, Meta(min_length=MIN_ADMIN_TOKEN, max_length=512)] | None,
        doc(
            "the admin bearer token, at least 16 characters (unset: a random one, printed at start)"
        ),
    ] = None
    seed: Annotated[int | None, doc("random seed, for runs that repeat exactly")] = None
    event_buffer: Annotated[Bound, doc("recent events kept for resuming by seq", "events")] = 10_000
    subscriber_queue: Annotated[
        Bound, doc("frames queued per stream before it is dropped as too slow", "frames")
    ] = 1_000
    heartbeat_s: Annotated[
        Annotated[float, Meta(gt=0, le=3600)], doc("WebSocket and SSE ping interval", "s")
    ] = 15.0
    allowed_origins: Annotated[
        list[str],
        doc("other origins whose pages may use the dashboard's cookie, comma-separated"),
    ] = []
    redis_url: Annotated[
        str | None,
        doc(
            "Redis for state shared by several processes (redis://host:port/db or "
            "unix:///path); unset: the SQLite file DB, one process"
        ),
    ] = None
    lease_s: Annotated[
        Annotated[float, Meta(ge=1, le=3600)],
        doc("with Redis: a dead process's running jobs move to another after this", "s"),
    ] = 10.0
    shutdown_grace_s: Annotated[
        Annotated[float, Meta(gt=0, le=600)],
        doc("on SIGTERM, how long open requests get to say goodbye before they are cut", "s"),
    ] = 5.0
    max_connections: Annotated[
        Annotated[int, Meta(ge=1, le=1_000_000)],
        doc("open WebSockets, SSE streams and long polls together; beyond: 503", "connections"),
    ] = 1_000
    subscriber_queue_bytes: Annotated[
        Annotated[int, Meta(ge=1024, le=2**40)],
        doc("a subscriber's live queue before it is dropped as too slow", "bytes"),
    ] = 1024 * 1024
    subscriber_burst_bytes: Annotated[
        Annotated[int, Meta(ge=1024, le=2**40)],
        doc("what snapshots and replays may queue at subscribe time", "bytes"),
    ] = 16 * 1024 * 1024
    idle_timeout_s: Annotated[
        Annotated[float, Meta(gt=0, le=3600)],
        doc("a connection with no complete request (idle, or slow headers) is cut", "s"),
    ] = 15.0
    auth_failures: Annotated[
        Annotated[int, Meta(ge=1, le=1_000_000)],
        doc("failed admin-token attempts per address per AUTH_WINDOW_S before 429", "attempts"),
    ] = 10
    auth_window_s: Annotated[
        Annotated[float, Meta(gt=0, le=86_400)],
        doc("the window AUTH_FAILURES counts in", "s"),
    ] = 60.0
    clock: Annotated[
        Literal["real", "virtual"],
        doc("real: the wall clock; virtual: time moves only on POST /v1/clock/advance (tests)"),
    ] = "real"
    clock_start: Annotated[
        Annotated[datetime, Meta(tz=True)] | None,
        doc("with CLOCK=virtual: the start time, ISO 8601 with a zone (unset: now)"),
    ] = None
    auth: Annotated[
        Literal["open", "keys"],
        doc(
            "open: X-User-Id is trusted (local use); keys: every request needs an API key "
            "(x-api-key) or the admin token"
        ),
    ] = "open"
    key_cache_s: Annotated[
        Annotated[float, Meta(ge=0, le=3600)],
        doc(
            "how long a process reuses an API key it has checked; a revocation reaches the "
            "other processes within this (0: every request reads the store)",
            "s",
        ),
    ] = 1.0
    media_dir: Annotated[
        str,
        doc(
            "directory for uploaded videos and media results (with Redis: shared by every process)"
        ),
    ] = "./media"
    max_upload_mb: Annotated[
        Annotated[int, Meta(ge=1, le=100_000)],
        doc("largest video accepted by POST /v1/assets or fetched from a URL", "MB"),
    ] = 500
    max_video_s: Annotated[
        Annotated[float, Meta(gt=0, le=86_400)],
        doc("longest video accepted (uploaded or fetched), by what its streams hold", "s"),
    ] = 1800.0
    max_video_pixels: Annotated[
        Annotated[int, Meta(ge=1, le=1 << 30)],
        doc("largest video frame accepted, width x height (default: 3840x2160)", "pixels"),
    ] = 3840 * 2160
    media_workers: Annotated[
        Annotated[int, Meta(ge=1, le=1024)] | None,
        doc("ffmpeg/espeak-ng processes run at once (unset: CPU cores - 1, at least 1)"),
    ] = None
    media_fetch_timeout_s: Annotated[
        Annotated[float, Meta(gt=0, le=3600)],
        doc("how long fetching a job's video from a URL may take", "s"),
    ] = 60.0
    media_fetch_allow_private: Annotated[
        bool,
        doc(
            "a job's video.url may name loopback/private addresses (turn off when users are "
            "untrusted: every address it resolves to, redirects included, is checked)"
        ),
    ] = True
    media_realtime: Annotated[
        bool,
        doc("mix media jobs at the input's real-time pace (ffmpeg -re): demos and tests"),
    ] = False
    result_url_ttl_s: Annotated[
        Annotated[int, Meta(ge=1, le=10 * 365 * 86_400)],
        doc("how long a signed result_url (and caption link) stays valid", "s"),
    ] = 7 * 86_400
    public_url: Annotated[
        str | None,
        doc(
            "the base URL clients reach this service at, for absolute result links "
            "(unset: http://HOST:PORT)"
        ),
    ] = None
    webhook_timeout_s: Annotated[
        Annotated[float, Meta(gt=0, le=300)],
        doc("one webhook delivery attempt is given up after this", "s"),
    ] = 10.0
    webhook_retry_schedule: Annotated[
        Annotated[str, Meta(max_length=1000, pattern=r"^\d{1,6}(\.\d+)?(,\d{1,6}(\.\d+)?){0,49}$")],
        doc(
            "waits before each webhook attempt (the first is the first entry), comma-separated; "
            "jittered ±10 %; past the last an endpoint is disabled",
            "s",
        ),
    ] = "0,5,300,1800,7200,18000,36000,50400,72000,86400"
    webhook_secret_grace_s: Annotated[
        Annotated[float, Meta(ge=0, le=30 * 86_400)],
        doc("after a webhook secret rotation, the old secret also signs for this long", "s"),
    ] = 86_400.0
    webhook_allow_private: Annotated[
        bool,
        doc(
            "webhooks may target loopback/private addresses (turn off when users are "
            "untrusted: every resolved address is checked)"
        ),
    ] = True
    webhook_log: Annotated[
        Annotated[int, Meta(ge=1, le=10_000)],
        doc("deliveries kept per webhook endpoint for GET .../deliveries", "deliveries"),
    ] = 100
    webhook_queue: Annotated[
        Annotated[int, Meta(ge=1, le=1_000_000)],
        doc("events queued in memory per webhook endpoint; more wait in the event log", "events"),
    ] = 1000
    heygen_plan: Annotated[
        Literal["free", "pro", "scale", "pay-as-you-go"],
        doc("HeyGen API: the plan of a caller whose request names none (X-Dubsim-Plan)"),
    ] = "pro"
    heygen_queue: Annotated[
        Annotated[int, Meta(ge=0, le=1_000_000)],
        doc(
            "HeyGen API: jobs a user may have waiting beyond its plan's concurrency; beyond: 429",
            "jobs",
        ),
    ] = 20
    config: Config = msgspec.field(default_factory=Config)

    @classmethod
    def load(
        cls,
        argv: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        prog: str = "dubsim-server",
    ) -> Settings:
        """Defaults < env vars < flags. Raises SettingsError naming the bad variable."""
        environ = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for name in _FIELDS:
            if name.upper() in environ:
                raw[name] = environ[name.upper()]
        args = parser(prog).parse_args(argv)
        raw.update({k: v for k, v in vars(args).items() if v is not None})
        return cls.from_flat(raw, source="env")

    @classmethod
    def from_flat(cls, raw: Mapping[str, Any], *, source: str = "setting") -> Settings:
        """Build from one flat mapping of field names (strings are parsed leniently)."""
        static: dict[str, Any] = {}
        runtime: dict[str, Any] = {}
        for name, value in raw.items():
            if name in _CONFIG_FIELDS:
                runtime[name] = value
            elif name in _STATIC_FIELDS:
                static[name] = value
            else:
                raise SettingsError(name, "unknown setting")
        if isinstance(static.get("allowed_origins"), str):
            static["allowed_origins"] = [o for o in static["allowed_origins"].split(",") if o]
        for name, value in {**static, **runtime}.items():
            try:
                target = Config if name in _CONFIG_FIELDS else cls
                msgspec.convert({name: value}, target, strict=False)
            except msgspec.ValidationError as exc:
                label = name.upper() if source == "env" else name
                raise SettingsError(label, str(exc)) from exc
        config = msgspec.convert(runtime, Config, strict=False)
        return msgspec.convert(
            {**static, "config": config}, cls, strict=False, from_attributes=True
        )


class SettingsError(ValueError):
    """A setting has a bad value; `name` is the variable to fix."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


_CONFIG_FIELDS = frozenset(Config.__struct_fields__)
_STATIC_FIELDS = frozenset(Settings.__struct_fields__) - {"config"}
_FIELDS = sorted(_CONFIG_FIELDS | _STATIC_FIELDS)


# ---- documentation, generated from the definitions above ------------------------------


class Documented(msgspec.Struct, frozen=True):
    """One setting as `--help` and the README show it."""

    name: str
    description: str
    default: str
    unit: str
    runtime: bool  # part of Config: also changeable with PATCH /v1/config

    @property
    def env(self) -> str:
        return self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def documented() -> list[Documented]:
    """Every setting in declaration order: the start settings, then the runtime ones."""
    found: list[Documented] = []
    for struct, runtime in ((Settings, False), (Config, True)):
        hints = typing.get_type_hints(struct, include_extras=True)
        for field in msgspec.structs.fields(struct):
            if field.name == "config":
                continue
            meta = [m for m in getattr(hints[field.name], "__metadata__", ()) if m.description]
            if not meta:
                raise TypeError(f"setting {field.name} has no doc(...): describe it")
            has_default = field.default is not msgspec.NODEFAULT
            default = field.default if has_default else field.default_factory()
            unit = (meta[-1].extra or {}).get("unit", "")
            found.append(
                Documented(field.name, meta[-1].description or "", _show(default), unit, runtime)
            )
    return found


def _show(value: Any) -> str:
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def markdown_table() -> str:
    """The README's settings table."""
    rows = [
        "| env var / flag | default | unit | what it sets |",
        "|---|---|---|---|",
    ]
    for s in documented():
        runtime = " Runtime: `PATCH /v1/config`." if s.runtime else ""
        default = f"`{s.default}`" if s.default else "—"
        rows.append(
            f"| `{s.env}` `{s.flag}` | {default} | {s.unit or '—'} | {s.description}.{runtime} |"
        )
    return "\n".join(rows) + "\n"


TABLE_START = "<!-- settings table: generated by `make docs`, do not edit -->\n"
TABLE_END = "<!-- end of settings table -->\n"


def replace_table(text: str) -> str:
    """`text` (the README) with the part between the table markers regenerated."""
    head, start, rest = text.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not (start and end):
        raise ValueError("the settings table markers are missing")
    return head + start + markdown_table() + end + tail


def parser(prog: str = "dubsim-server") -> argparse.ArgumentParser:
    """The server's command line: every setting with its description, default, unit and env."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="dubsim: a live video-translation job service (simulated). Every option "
        "can also be set by its env var (shown in brackets); flags win over env vars.",
    )
    groups = {
        False: parser.add_argument_group("start settings"),
        True: parser.add_argument_group("runtime settings (also PATCH /v1/config)"),
    }
    for s in documented():
        unit = f"; unit: {s.unit}" if s.unit else ""
        text = f"{s.description}. Default: {s.default or 'unset'}{unit}. [env {s.env}]"
        groups[s.runtime].add_argument(
            s.flag, dest=s.name, metavar=s.env, help=text.replace("%", "%%")
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m service.settings --markdown | --update-readme README.md`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--markdown"]:
        sys.stdout.write(markdown_table())
        return 0
    if len(args) == 2 and args[0] == "--update-readme":
        path = Path(args[1])
        path.write_text(replace_table(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print(
        "usage: python -m service.settings --markdown | --update-readme README.md", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
