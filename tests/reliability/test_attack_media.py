"""An outsider's attacks on the real-media promises (docs/media.md): what broke, as contracts.

- An upload (or a fetched URL) that is a playlist or a list of other files (an HLS playlist,
  an ffconcat list) is refused like any non-video: ffprobe and ffmpeg must never open what it
  names (a local file, another user's asset), or an upload reads what it must not.
- A malformed multipart form is a 422, not a 500.
- A refusal never names the server's own paths (MEDIA_DIR).
- A full disk during an upload is a clear 507, with nothing left behind.
- `GET /v1/jobs/{id}/result` follows RFC 9110 for Range: what is not one valid byte range is
  ignored (200, the whole file), `If-Range` with another ETag gets the whole file, and
  `bytes=-0` is unsatisfiable (416).
"""

from __future__ import annotations

import io
import re
import resource
import struct
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import ADMIN, ApiFactory, wait_for_status
from tests.media.conftest import Inputs, inputs  # noqa: F401  (the session's test videos)

ALICE = {"X-User-Id": "alice"}
BOB = {"X-User-Id": "bob"}


def leftovers(media_dir: Path) -> list[Path]:
    return [p for p in media_dir.rglob("*") if p.is_file()]


async def upload(client: TestClient[Any, Any], data: bytes, who: dict[str, str]) -> Any:
    resp = await client.post("/v1/assets", data=data, headers=who)
    return resp.status, await resp.json()


def hls_playlist(target: Path) -> bytes:
    return (
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:3.0,\nfile://{target}\n#EXT-X-ENDLIST\n"
    ).encode()


async def test_a_playlist_naming_a_local_file_is_refused(
    api: ApiFactory,
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An HLS playlist whose segment is a file on the server is not a video: 422, nothing
    kept. (It used to be accepted, and a job on it read the server's local file.)"""
    media_dir = tmp_path / "media"
    client = await api(media_dir=str(media_dir))
    status, body = await upload(client, hls_playlist(inputs.ok), ALICE)
    assert status == 422, body
    assert body["error"]["code"] == "invalid_video"
    assert body["error"]["details"]["reason"] == "unreadable"
    assert leftovers(media_dir) == []


async def test_a_concat_list_cannot_reach_another_users_asset(
    api: ApiFactory,
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Bob can't make Alice's asset his own by uploading an ffconcat list naming its id (the
    file sits next to his upload in MEDIA_DIR/assets/). Only Alice's own file stays."""
    media_dir = tmp_path / "media"
    client = await api(media_dir=str(media_dir))
    status, alice = await upload(client, inputs.ok.read_bytes(), ALICE)
    assert status == 201, alice
    steal = f"ffconcat version 1.0\nfile {alice['id']}\nduration 3.0\n".encode()
    status, body = await upload(client, steal, BOB)
    assert status == 422, body
    assert body["error"]["code"] == "invalid_video"
    assert [p.name for p in leftovers(media_dir)] == [alice["id"]]


async def test_a_url_that_serves_a_playlist_is_refused(
    api: ApiFactory,
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same through `video.url`: a remote page must not make the server read its own
    files. 422 invalid_video, no job, no asset."""

    async def playlist(_: web.Request) -> web.Response:
        return web.Response(body=hls_playlist(inputs.ok), content_type="application/x-mpegurl")

    remote = web.Application()
    remote.router.add_get("/talk.m3u8", playlist)
    media_dir = tmp_path / "media"
    client = await api(media_dir=str(media_dir))
    async with TestServer(remote, host="127.0.0.1") as server:
        resp = await client.post(
            "/v1/jobs",
            json={
                "target_language": "fr",
                "video": {"type": "url", "url": str(server.make_url("/talk.m3u8"))},
            },
            headers=ALICE,
        )
        body = await resp.json()
    assert resp.status == 422, body
    assert body["error"]["code"] == "invalid_video"
    listed = await (await client.get("/v1/jobs", headers=ALICE)).json()
    assert listed["jobs"] == []
    assert leftovers(media_dir) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"no boundary anywhere in here"),
        ("multipart/form-data", b"a form without a boundary parameter"),
    ],
)
async def test_a_malformed_multipart_upload_is_a_422(
    api: ApiFactory, tmp_path: Path, content_type: str, body: bytes
) -> None:
    media_dir = tmp_path / "media"
    client = await api(media_dir=str(media_dir))
    resp = await client.post(
        "/v1/assets", data=body, headers={**ALICE, "Content-Type": content_type}
    )
    answer = await resp.json()
    assert resp.status == 422, answer
    assert answer["error"]["code"] == "validation_error"
    assert leftovers(media_dir) == []


async def test_a_refusal_does_not_name_the_servers_paths(api: ApiFactory, tmp_path: Path) -> None:
    media_dir = tmp_path / "secret-place"
    client = await api(media_dir=str(media_dir))
    status, body = await upload(client, b"hello, I am not a video\n" * 50, ALICE)
    assert status == 422, body
    assert body["error"]["details"]["reason"] == "unreadable"
    assert "secret-place" not in body["error"]["message"]
    assert str(tmp_path) not in str(body)


async def test_a_full_disk_during_an_upload_is_a_507_and_leaves_nothing(
    server_process: Any, tmp_path: Path
) -> None:
    """A real server whose files may not grow past 1 MiB (RLIMIT_FSIZE, as `ulimit -f`):
    a 3 MiB upload, raw or chunked, is a 507 JSON error, no part file stays, and the server
    still serves."""
    media_dir = tmp_path / "media"
    server = server_process(media_dir=str(media_dir), max_upload_mb=50)
    assert server.proc is not None
    limit = 1 << 20
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
    payload = b"\0" * (3 << 20)

    async def chunked() -> Any:
        for i in range(0, len(payload), 1 << 16):
            yield payload[i : i + (1 << 16)]

    async with aiohttp.ClientSession(server.url) as session:
        for data in (io.BytesIO(payload), chunked()):
            async with session.post("/v1/assets", data=data, headers=ALICE) as resp:
                body = await resp.json()
                assert resp.status == 507, body
                assert body["error"]["code"] == "insufficient_storage"
        assert list(media_dir.glob("assets/*")) == []
        async with session.get("/healthz") as resp:
            assert resp.status == 200


async def completed_job(client: TestClient[Any, Any], inputs: Inputs) -> str:  # noqa: F811
    status, asset = await upload(client, inputs.ok.read_bytes(), ALICE)
    assert status == 201, asset
    resp = await client.post(
        "/v1/jobs",
        json={"target_language": "fr", "video": {"type": "asset_id", "asset_id": asset["id"]}},
        headers=ALICE,
    )
    job = await resp.json()
    assert resp.status == 201, job
    done = await wait_for_status(client, job["id"], {"completed"}, timeout=60)
    return str(done["id"])


async def test_result_ranges_follow_rfc_9110(
    api: ApiFactory,
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = await api(media_dir=str(tmp_path / "media"))
    job_id = await completed_job(client, inputs)
    url = f"/v1/jobs/{job_id}/result"
    whole_resp = await client.get(url, headers=ALICE)
    whole = await whole_resp.read()
    etag = whole_resp.headers["ETag"]
    size = len(whole)

    async def get(**headers: str) -> tuple[int, bytes, dict[str, str]]:
        resp = await client.get(url, headers={**ALICE, **headers})
        return resp.status, await resp.read(), dict(resp.headers)

    # the one-range forms it serves
    assert (await get(Range="bytes=0-9"))[:2] == (206, whole[:10])
    assert (await get(Range="bytes=-10"))[:2] == (206, whole[-10:])
    status, _, headers = await get(Range=f"bytes={size}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    # not one valid byte range: ignored, the whole file (RFC 9110 14.2), never 416
    for ignored in ("items=0-5", "bytes=0-0,5-9", "bytes=9-0", "bytes=abc"):
        assert (await get(Range=ignored))[:2] == (200, whole), ignored
    # a suffix of zero bytes asks for nothing: unsatisfiable (RFC 9110 14.1.3)
    status, _, headers = await get(Range="bytes=-0")
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    # If-Range: the range only while the ETag is the same, else the whole file (13.1.5)
    assert (await get(Range="bytes=0-9", **{"If-Range": etag}))[:2] == (206, whole[:10])
    assert (await get(Range="bytes=0-9", **{"If-Range": '"another"'}))[:2] == (200, whole)


async def test_a_playlist_asset_cannot_feed_the_pipeline(
    api: ApiFactory,
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Defence in depth: an asset file that is somehow a playlist (written before this check
    existed) fails its job at `probe` with media_error; it never reaches a result."""
    media_dir = tmp_path / "media"
    client = await api(media_dir=str(media_dir), max_attempts=1)
    status, asset = await upload(client, inputs.ok.read_bytes(), ALICE)
    assert status == 201, asset
    (media_dir / "assets" / asset["id"]).write_bytes(hls_playlist(inputs.ok))
    resp = await client.post(
        "/v1/jobs",
        json={"target_language": "fr", "video": {"type": "asset_id", "asset_id": asset["id"]}},
        headers=ALICE,
    )
    job = await resp.json()
    assert resp.status == 201, job
    done = await wait_for_status(client, job["id"], {"completed", "permanently_failed"}, 60)
    assert done["status"] == "permanently_failed"
    assert done["error"]["code"] == "media_error"
    assert done["stage"] == "probe"


async def virtual_job(api: ApiFactory, tmp_path: Path) -> tuple[TestClient[Any, Any], Any]:
    """A plain job completed under CLOCK=virtual (result links valid 600 s)."""
    client = await api(
        clock="virtual",
        clock_start="2030-01-01T00:00:00+00:00",
        attempt_timeout_s=86_400,
        result_url_ttl_s=600,
        media_dir=str(tmp_path / "media"),
    )
    resp = await client.post("/v1/jobs", json={"target_language": "fr"}, headers=ALICE)
    job = await resp.json()
    assert resp.status == 201, job
    resp = await client.post("/v1/clock/advance", json={"seconds": 120}, headers=ADMIN)
    assert resp.status == 200
    return client, await wait_for_status(client, job["id"], {"completed"})


async def test_a_fresh_link_works_under_the_virtual_clock(api: ApiFactory, tmp_path: Path) -> None:
    """Links were signed with the wall clock and checked with the service's: under
    CLOCK=virtual (started in 2030) every result_url was born expired. Signed and checked
    on one clock, a fresh link downloads, and expires RESULT_URL_TTL_S later on that clock."""
    client, done = await virtual_job(api, tmp_path)
    link = urlsplit(done["result_url"])
    resp = await client.get(f"{link.path}?{link.query}")  # no credentials: the link alone
    assert resp.status == 200, await resp.text()
    resp = await client.post("/v1/clock/advance", json={"seconds": 3600}, headers=ADMIN)
    assert resp.status == 200
    resp = await client.get(f"{link.path}?{link.query}")
    assert resp.status == 403


async def test_asking_for_the_job_again_gives_a_link_that_works(
    api: ApiFactory, tmp_path: Path
) -> None:
    """An expired link answers 403 "this link has expired ...; ask for the job again", and
    docs/media.md says result_url is valid RESULT_URL_TTL_S. The outsider found the link was
    signed once at completion and stored, so asking again gave the same dead link. The
    contract: the job read after the TTL carries a link valid now."""
    client, done = await virtual_job(api, tmp_path)
    resp = await client.post("/v1/clock/advance", json={"seconds": 3600}, headers=ADMIN)
    assert resp.status == 200
    again = await (await client.get(f"/v1/jobs/{done['id']}", headers=ALICE)).json()
    link = urlsplit(again["result_url"])
    resp = await client.get(f"{link.path}?{link.query}")
    assert resp.status == 200, await resp.text()


def lying_header(source: Path, dest: Path, claimed_s: int) -> Path:
    """`source` remuxed to `dest` (.mp4 or .mkv) whose container header claims `claimed_s`
    seconds while its streams hold what they held (3 s)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c", "copy", str(dest)],
        check=True,
        timeout=60,
    )
    data = bytearray(dest.read_bytes())
    if dest.suffix == ".mp4":  # mvhd: version/flags, created, modified, timescale, duration
        at = data.index(b"mvhd")
        (timescale,) = struct.unpack(">I", data[at + 16 : at + 20])
        data[at + 20 : at + 24] = struct.pack(">I", timescale * claimed_s)
    else:  # Matroska Segment Info Duration (ID 0x4489, 8-byte float, in milliseconds)
        at = data.index(b"\x44\x89\x88")
        data[at + 3 : at + 11] = struct.pack(">d", claimed_s * 1000.0)
    dest.write_bytes(data)
    return dest


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
async def test_a_header_claiming_hours_costs_what_the_file_holds(
    api: ApiFactory,
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
    suffix: str,
) -> None:
    """A 3 s clip whose header claims 300 s was dubbed as 300 s: one espeak-ng run per 2.5 s
    of claimed "sound" and a voice track padded to the claim (a 117 KB upload claiming 10 h
    started 14,400 espeak-ng runs and ~1 GB of WAVs). Its captions and voice must cover only
    what the file holds; an MP4's stream durations also correct the asset's duration_s."""
    lying = lying_header(inputs.ok, tmp_path / f"lying{suffix}", 300)
    client = await api(media_dir=str(tmp_path / "media"))
    status, asset = await upload(client, lying.read_bytes(), ALICE)
    assert status == 201, asset
    if suffix == ".mp4":
        assert asset["duration_s"] < 4
    resp = await client.post(
        "/v1/jobs",
        json={"target_language": "fr", "video": {"type": "asset_id", "asset_id": asset["id"]}},
        headers=ALICE,
    )
    job = await resp.json()
    assert resp.status == 201, job
    done = await wait_for_status(client, job["id"], {"completed", "permanently_failed"}, 60)
    assert done["status"] == "completed", done
    srt = await (await client.get(f"/v1/jobs/{job['id']}/captions.srt", headers=ALICE)).text()
    ends = re.findall(r"--> (\d\d):(\d\d):(\d\d),(\d\d\d)", srt)
    assert ends, srt
    h, m, s, ms = (int(x) for x in ends[-1])
    assert h * 3600 + m * 60 + s + ms / 1000 <= 3.5, srt
