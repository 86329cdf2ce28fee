"""The dashboard with media jobs: the running stage, then links to the video and captions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from playwright.async_api import expect

from tests.browser.conftest import Server
from tests.media.conftest import ffmpeg

if TYPE_CHECKING:
    from tests.browser.conftest import Dash


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """The usual server, with its media in the test's directory."""
    srv = Server(
        tmp_path / "dubsim.db", tmp_path / "server.log", **{"media-dir": str(tmp_path / "m")}
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def media_job(server: Server, data: bytes, **extra: object) -> str:
    headers = {"X-User-Id": "alice"}
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/assets", data=data, headers=headers) as resp:
            asset = await resp.json()
        body = {"video": {"type": "asset_id", "asset_id": asset["id"]}, **extra}
        async with http.post(server.url + "/v1/jobs", json=body, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            return str((await resp.json())["id"])


@pytest.fixture
def clip(tmp_path: Path) -> bytes:
    path = tmp_path / "clip.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=s=160x120:r=15:d=2"),
        *("-f", "lavfi", "-i", "sine=f=440:sample_rate=44100:d=2"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"),
        str(path),
    )
    return path.read_bytes()


async def test_a_media_job_shows_its_stage_then_plays(dash: Dash, clip: bytes) -> None:
    await dash.open()
    await dash.login()
    data = clip
    stuck = await media_job(
        dash.server, data, scenario={"outcome": "stuck", "fail_stage": "synthesize"}
    )
    await expect(dash.row(stuck).locator(".media .stage")).to_have_text("synthesize 0%")
    await dash.server.call("POST", f"/v1/jobs/{stuck}/cancel", json={}, expect=200)

    job_id = await media_job(dash.server, data)
    await dash.wait_row_status(job_id, "completed")
    links = dash.row(job_id).locator(".media a")
    await expect(links).to_have_text(["▶ video", "SRT", "VTT"])
    # every link answers in the page's session: the signed video link and the captions
    for i, kind in enumerate(("video/mp4", "application/x-subrip", "text/vtt")):
        href = await links.nth(i).get_attribute("href")
        assert href is not None
        resp = await dash.page.request.get(dash.server.url + href)
        assert resp.status == 200 and resp.headers["content-type"].startswith(kind), href
    assert dash.console_errors == []
