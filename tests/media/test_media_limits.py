"""What a video may be at most (MAX_VIDEO_S, MAX_VIDEO_PIXELS), and where the server may fetch
one from (MEDIA_FETCH_ALLOW_PRIVATE, redirects followed hop by hop, each hop checked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import service.egress
from tests.conftest import ApiFactory
from tests.media.conftest import Inputs

ALICE = {"X-User-Id": "alice"}
OK_S = 3.0  # inputs.ok: 160x120, 3 s (tests/media/conftest.py)
OK_PIXELS = 160 * 120


def files(media_dir: Path) -> list[Path]:
    return [p for p in media_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("limits", "reason", "detail"),
    [
        ({"max_video_s": OK_S - 0.5}, "too_long", {"limit_s": OK_S - 0.5}),
        ({"max_video_pixels": OK_PIXELS - 1}, "too_many_pixels", {"limit_pixels": OK_PIXELS - 1}),
    ],
)
async def test_a_video_over_a_limit_is_refused_and_leaves_nothing(
    api: ApiFactory,
    inputs: Inputs,
    tmp_path: Path,
    limits: dict[str, Any],
    reason: str,
    detail: dict[str, Any],
) -> None:
    client = await api(media_dir=str(tmp_path), **limits)
    resp = await client.post("/v1/assets", data=inputs.ok.read_bytes(), headers=ALICE)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_video"
    assert error["details"] == {"reason": reason, **detail}
    assert files(tmp_path) == []


async def test_a_video_at_the_limits_is_taken(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path), max_video_s=OK_S + 0.1, max_video_pixels=OK_PIXELS)
    resp = await client.post("/v1/assets", data=inputs.ok.read_bytes(), headers=ALICE)
    assert resp.status == 201, await resp.text()
    asset = await resp.json()
    assert (asset["width"], asset["height"]) == (160, 120)


class Origin:
    """A loopback web server with a video, redirects and a hit counter."""

    def __init__(self, video: bytes) -> None:
        self.hits: list[str] = []
        self.video = video
        self.app = web.Application(middlewares=[self.count])
        self.app.router.add_get("/clip.mp4", self.clip)
        self.app.router.add_get("/to/{n:\\d+}", self.hop)
        self.app.router.add_get("/away", self.away)
        self.server: TestServer | None = None
        self.elsewhere = ""

    @web.middleware
    async def count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.hits.append(request.path)
        return await handler(request)  # type: ignore[no-any-return]

    async def clip(self, request: web.Request) -> web.Response:
        return web.Response(body=self.video, content_type="video/mp4")

    async def hop(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])  # n more redirects, then the clip (relative Locations)
        raise web.HTTPFound("/clip.mp4" if n == 0 else f"/to/{n - 1}")

    async def away(self, request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(self.elsewhere)

    async def start(self, host: str = "127.0.0.1") -> str:
        self.server = TestServer(self.app, host=host)
        await self.server.start_server()
        return f"http://{host}:{self.server.port}"

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


async def submit(client: Any, url: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/jobs", json={"video": {"type": "url", "url": url}}, headers=ALICE)
    return resp.status, await resp.json()


async def test_redirects_are_followed_up_to_five(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    origin = Origin(inputs.ok.read_bytes())
    base = await origin.start()
    try:
        client = await api(media_dir=str(tmp_path))
        status, body = await submit(client, f"{base}/to/4")  # 5 redirects: taken
        assert status == 201, body
        assert origin.hits == ["/to/4", "/to/3", "/to/2", "/to/1", "/to/0", "/clip.mp4"]
        origin.hits.clear()
        status, body = await submit(client, f"{base}/to/5")  # 6 redirects: refused
        assert status == 422, body
        assert body["error"]["code"] == "video_unreachable"
        assert body["error"]["details"]["reason"] == "too_many_redirects"
        assert "/clip.mp4" not in origin.hits
    finally:
        await origin.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_addresses_are_refused_when_not_allowed(
    api: ApiFactory, inputs: Inputs, tmp_path: Path, host: str
) -> None:
    """A literal (which aiohttp never resolves) and a name (refused by the resolver)."""
    origin = Origin(inputs.ok.read_bytes())
    base = (await origin.start()).replace("127.0.0.1", host)
    try:
        client = await api(media_dir=str(tmp_path), media_fetch_allow_private=False)
        status, body = await submit(client, f"{base}/clip.mp4")
        assert status == 422, body
        assert body["error"]["code"] == "video_unreachable"
        assert body["error"]["details"]["reason"] == "private_address"
        assert origin.hits == []  # refused before any connection
        assert files(tmp_path) == []
        resp = await client.get("/v1/jobs", headers=ALICE)
        assert (await resp.json())["jobs"] == []  # nothing made
    finally:
        await origin.close()


async def test_a_redirect_to_a_private_address_is_refused(
    api: ApiFactory, inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hop is checked, not just the URL given: a "public" origin (127.0.0.1, made public
    for this test) redirecting to a private one (127.0.0.2) never reaches the private one."""
    monkeypatch.setattr(service.egress, "is_private", lambda address: address == "127.0.0.2")
    public, private = Origin(inputs.ok.read_bytes()), Origin(inputs.ok.read_bytes())
    base = await public.start()
    public.elsewhere = await private.start("127.0.0.2") + "/clip.mp4"
    try:
        client = await api(media_dir=str(tmp_path), media_fetch_allow_private=False)
        status, body = await submit(client, f"{base}/to/0")
        assert status == 201, body  # the check lets public addresses through
        status, body = await submit(client, f"{base}/away")
        assert status == 422, body
        assert body["error"]["details"]["reason"] == "private_address"
        assert public.hits == ["/to/0", "/clip.mp4", "/away"]
        assert private.hits == []
    finally:
        await public.close()
        await private.close()


async def test_private_addresses_are_fetched_when_allowed(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    origin = Origin(inputs.ok.read_bytes())
    base = await origin.start()
    try:
        client = await api(media_dir=str(tmp_path))  # the default: a sandbox on one's machine
        status, body = await submit(client, f"{base}/clip.mp4")
        assert status == 201, body
        assert origin.hits == ["/clip.mp4"]
    finally:
        await origin.close()
