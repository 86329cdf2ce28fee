"""Helpers shared by the reliability suite: a state fingerprint, paging through jobs, and a
Redis with two server processes (`redis_cluster`)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from deploy.cluster import Cluster
from service.appkeys import HUB, SERVICE
from tests.conftest import ADMIN_TOKEN

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


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """redis-server (AOF, fsync always) and two dubsim processes on it, short leases; Redis is
    continued if a test left it stopped, and everything is stopped by PID."""
    env = {"LEASE_S": "2", "ERROR_RATE": "0", "TRANSLATION_DELAY": "0.3", "RATE_LIMIT": "100000",
           "WORKERS": "4", "HEARTBEAT_S": "2", "RETRY_DELAY": "0.05", "MAX_ATTEMPTS": "3"}  # fmt: skip
    cluster = Cluster(tmp_path, processes=2, admin_token=ADMIN_TOKEN, env=env, appendfsync="always")
    try:
        cluster.start_redis()
        cluster.start_backend(0)
        cluster.start_backend(1)
        yield cluster
    finally:
        if cluster.redis is not None and cluster.redis.poll() is None:
            cluster.redis.send_signal(signal.SIGCONT)
        cluster.stop()
