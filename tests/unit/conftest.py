"""Fixtures shared by the unit tests of the Redis store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Any]:
    """A plain Redis client on the test's Redis: to look at what the store wrote."""
    client: Any = aioredis.from_url(redis_url)
    yield client
    await client.aclose()
