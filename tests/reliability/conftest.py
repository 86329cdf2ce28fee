"""Helpers shared by the reliability suite: a state fingerprint and paging through jobs."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from service.appkeys import HUB, SERVICE

ADMIN_ROUTES_KNOWN = {
    ("POST", "/v1/jobs/{id}/cancel"),
    ("POST", "/v1/jobs/{id}/retry"),
    ("POST", "/v1/process"),
    ("POST", "/v1/cleanup"),
    ("PATCH", "/v1/config"),
    ("POST", "/cancel/{id}"),
    ("POST", "/cleanup"),
    ("POST", "/config"),
    ("POST", "/process"),
    ("POST", "/process_jobs"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("DELETE", "/v1/keys/{id}"),
}


def fingerprint(app: web.Application) -> tuple[Any, ...]:
    """Everything a bad request must leave alone: every job's bytes, the config, the seq."""
    service = app[SERVICE]
    jobs = tuple((record.job.id, record.data) for record in service.records())
    return jobs, msgspec.json.encode(service.config), app[HUB].seq


async def all_jobs(session: Any, base: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every job visible with `headers`, following the cursor."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        url = f"{base}/v1/jobs?limit=500" + (f"&cursor={cursor}" if cursor else "")
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        jobs += page["jobs"]
        cursor = page["next_cursor"]
        if not cursor:
            return jobs
