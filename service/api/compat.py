"""The seed-era routes (see LEGACY.md): thin adapters over JobService."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Added by the legacy work; empty until then."""
