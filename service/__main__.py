"""`python -m service` / `dubsim-server`: serve with settings from env vars and flags."""

from __future__ import annotations

import logging
import secrets
import sys

import msgspec
from aiohttp import web

from .app import create_app
from .settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> None:
    try:
        settings = Settings.load(argv)
    except SettingsError as exc:
        print(f"dubsim: bad setting {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    if settings.admin_token is None:
        settings = msgspec.structs.replace(settings, admin_token=secrets.token_urlsafe(24))
        print(f"admin token (generated, set ADMIN_TOKEN to choose one): {settings.admin_token}")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    url = f"http://{settings.host}:{settings.port}"
    print(f"dubsim serving on {url}  (dashboard: {url}/, db: {settings.db})", flush=True)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        shutdown_timeout=settings.shutdown_grace_s,
        keepalive_timeout=settings.idle_timeout_s,
        access_log=None,
    )


if __name__ == "__main__":
    main()
