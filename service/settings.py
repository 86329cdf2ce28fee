"""Settings: one validated Struct from defaults, env vars and flags; a runtime subset is patchable.

Every field has an env var (its name upper-cased, e.g. TRANSLATION_DELAY) and a flag
(`--translation-delay`). Validation is msgspec's: the same constraints guard the CLI, the env
and `PATCH /v1/config`, so a bad value is refused the same way everywhere.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec
from msgspec import Meta

Delay = Annotated[float, Meta(ge=0, le=3600)]
Rate = Annotated[float, Meta(ge=0, le=1)]
MIN_ADMIN_TOKEN = 16  # a guessable token is no token: refused at start


class Config(msgspec.Struct, forbid_unknown_fields=True):
    """The runtime-tunable part of the settings (GET/PATCH /v1/config)."""

    translation_delay: Delay = 15.0
    error_rate: Rate = 0.2
    rate_limit: Annotated[int, Meta(ge=0, le=1_000_000)] = 5
    premium_speedup: Annotated[float, Meta(gt=0, le=10)] = 0.5
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    retry_delay: Delay = 1.0
    workers: Annotated[int, Meta(ge=1, le=10_000)] = 4
    auto_process: bool = True
    fault_rate: Rate = 0.0
    fault_stall_s: Annotated[float, Meta(ge=0, le=60)] = 2.0


class ConfigPatch(msgspec.Struct, forbid_unknown_fields=True):
    """A partial Config: absent fields stay as they are."""

    translation_delay: Delay | msgspec.UnsetType = msgspec.UNSET
    error_rate: Rate | msgspec.UnsetType = msgspec.UNSET
    rate_limit: Annotated[int, Meta(ge=0, le=1_000_000)] | msgspec.UnsetType = msgspec.UNSET
    premium_speedup: Annotated[float, Meta(gt=0, le=10)] | msgspec.UnsetType = msgspec.UNSET
    max_attempts: Annotated[int, Meta(ge=1, le=100)] | msgspec.UnsetType = msgspec.UNSET
    retry_delay: Delay | msgspec.UnsetType = msgspec.UNSET
    workers: Annotated[int, Meta(ge=1, le=10_000)] | msgspec.UnsetType = msgspec.UNSET
    auto_process: bool | msgspec.UnsetType = msgspec.UNSET
    fault_rate: Rate | msgspec.UnsetType = msgspec.UNSET
    fault_stall_s: Annotated[float, Meta(ge=0, le=60)] | msgspec.UnsetType = msgspec.UNSET

    def apply(self, config: Config) -> Config:
        changes = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not msgspec.UNSET}
        return msgspec.structs.replace(config, **changes)


class Settings(msgspec.Struct, kw_only=True):
    """Everything the service is started with. Build it with `Settings.load()` or directly."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 4777
    db: str = "./dubsim.db"
    admin_token: Annotated[str, Meta(min_length=MIN_ADMIN_TOKEN, max_length=512)] | None = None
    seed: int | None = None
    event_buffer: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000
    subscriber_queue: Annotated[int, Meta(ge=1, le=10_000_000)] = 1_000
    heartbeat_s: Annotated[float, Meta(gt=0, le=3600)] = 15.0
    allowed_origins: list[str] = []
    config: Config = msgspec.field(default_factory=Config)
    # ---- limits facing the network (docs/deployment.md) ----
    shutdown_grace_s: Annotated[float, Meta(gt=0, le=600)] = 5.0
    """On SIGTERM, how long open requests get to say goodbye before they are cut."""
    max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 1_000
    """Open WebSockets, SSE streams and long polls together; beyond it, 503 + Retry-After."""
    subscriber_queue_bytes: Annotated[int, Meta(ge=1024, le=2**40)] = 1024 * 1024
    """A subscriber's live queue, in bytes (SUBSCRIBER_QUEUE bounds it in messages)."""
    subscriber_burst_bytes: Annotated[int, Meta(ge=1024, le=2**40)] = 16 * 1024 * 1024
    """What snapshots and replays may queue at subscribe time (they count against it too)."""
    idle_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 15.0
    """A connection with no complete request (idle keep-alive or slow headers) is cut."""
    auth_failures: Annotated[int, Meta(ge=1, le=1_000_000)] = 10
    """Failed admin-token attempts per client address per AUTH_WINDOW_S before 429."""
    auth_window_s: Annotated[float, Meta(gt=0, le=86_400)] = 60.0

    @classmethod
    def load(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults < env vars < flags. Raises SettingsError naming the bad variable."""
        environ = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for name in _FIELDS:
            if name.upper() in environ:
                raw[name] = environ[name.upper()]
        args = _parser().parse_args(argv)
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


_CONFIG_FIELDS = frozenset(Config.__struct_fields__)
_STATIC_FIELDS = frozenset(Settings.__struct_fields__) - {"config"}
_FIELDS = sorted(_CONFIG_FIELDS | _STATIC_FIELDS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="dubsim: a live video-translation job service. Every flag also reads "
        "the env var of its upper-cased name (TRANSLATION_DELAY, ...).",
    )
    for name in _FIELDS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, metavar=name.upper())
    return parser
