"""Media jobs end to end: upload, pipeline stages, the dubbed MP4 and its captions, links."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, ApiFactory, wait_for_status
from tests.media.conftest import Inputs, changed, ffprobe

ALICE = {"X-User-Id": "alice"}
STAGES = ["probe", "extract", "transcribe", "translate", "synthesize", "mix", "write"]
_STAMP = r"(\d\d):(\d\d):(\d\d)[.,](\d\d\d)"


def seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def read(path: Path) -> bytes:
    return path.read_bytes()


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def parse_captions(text: str, sep: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue; fails on anything malformed."""
    cues = []
    pattern = re.compile(rf"^{_STAMP} --> {_STAMP}$".replace("[.,]", re.escape(sep)))
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "-->" in line:
            match = pattern.match(line)
            assert match is not None, line
            start, end = seconds(match.groups()[:4]), seconds(match.groups()[4:])
            assert lines[i + 1].strip(), "a cue without text"
            cues.append((start, end, lines[i + 1]))
    return cues


async def upload(client: TestClient[Any, Any], path: Path, **kw: Any) -> Any:
    resp = await client.post("/v1/assets", data=read(path), headers=ALICE, **kw)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def events_of(client: TestClient[Any, Any], job: dict[str, Any], since: int) -> list[Any]:
    """Every event of the job after `since`, until its outcome (SSE, until=terminal)."""
    url = f"/v1/events?job={job['id']}&until=terminal&last_event_id={since}"
    resp = await client.get(url, headers=ALICE)
    body = await asyncio.wait_for(resp.text(), 60)
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


async def submit(client: TestClient[Any, Any], body: dict[str, Any]) -> tuple[Any, int]:
    resp = await client.post("/v1/jobs", json=body, headers=ALICE)
    assert resp.status == 201, await resp.text()
    return await resp.json(), int(resp.headers["ETag"].strip('"'))


async def test_a_media_job_dubs_the_video_and_writes_captions(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path), public_url="https://dub.example")
    asset = await upload(client, inputs.ok)
    assert asset["width"] == 160 and asset["height"] == 120
    assert asset["video_codec"] == "h264" and asset["audio_codec"] == "aac"
    assert abs(asset["duration_s"] - 3.0) < 0.1 and asset["size"] == inputs.ok.stat().st_size
    assert (await (await client.get(f"/v1/assets/{asset['id']}", headers=ALICE)).json()) == asset

    video = {"type": "asset_id", "asset_id": asset["id"]}
    job, version = await submit(client, {"video": video, "target_language": "de"})
    assert job["video"] == video and "stage" not in job
    events = await events_of(client, job, version)
    assert events[-1]["type"] == "job.completed", events[-1]
    progress = [e["job"] for e in events if e["type"] == "job.progress"]
    seen = [p["stage"] for p in progress]
    assert sorted(set(seen), key=STAGES.index) == STAGES  # every stage reported ...
    assert seen == sorted(seen, key=STAGES.index)  # ... in order
    overall = [p["progress"] for p in progress]
    assert overall == sorted(overall) and all(0 <= p["stage_progress"] <= 100 for p in progress)

    done = events[-1]["job"]
    result = urlsplit(done["result_url"])
    assert (result.scheme, result.netloc) == ("https", "dub.example")
    assert result.path == f"/v1/jobs/{job['id']}/result"
    # a signed link needs no credentials
    resp = await client.get(f"{result.path}?{result.query}")
    assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
    mp4 = await resp.read()
    out = tmp_path / "out.mp4"
    out.write_bytes(mp4)
    probed = ffprobe(out)
    kinds = sorted(s["codec_type"] for s in probed["streams"])
    assert kinds == ["audio", "video"]
    picture = next(s for s in probed["streams"] if s["codec_type"] == "video")
    assert (picture["width"], picture["height"], picture["codec_name"]) == (160, 120, "h264")
    source = float(ffprobe(inputs.ok)["format"]["duration"])
    assert abs(float(probed["format"]["duration"]) - source) <= 0.1
    assert changed(inputs.ok, out) > 0.5  # the voice is new, the original ducked under it

    # Range: exactly the bytes asked for; ETag revalidates
    etag = resp.headers["ETag"]
    part = await client.get(f"{result.path}?{result.query}", headers={"Range": "bytes=100-1099"})
    assert part.status == 206 and await part.read() == mp4[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(mp4)}"
    same = await client.get(f"{result.path}?{result.query}", headers={"If-None-Match": etag})
    assert same.status == 304

    for name, sep in (("captions.srt", ","), ("captions.vtt", ".")):
        resp = await client.get(f"/v1/jobs/{job['id']}/{name}", headers=ALICE)
        assert resp.status == 200
        text = await resp.text()
        if name.endswith("vtt"):
            assert text.startswith("WEBVTT\n") and resp.content_type == "text/vtt"
        cues = parse_captions(text, sep)
        assert cues and cues[0][0] == pytest.approx(0.0, abs=0.1)
        assert cues[-1][1] == pytest.approx(3.0, abs=0.1)  # they cover the speech
        assert all(a < b for a, b, _ in cues)
        assert all(c[1] <= d[0] for c, d in itertools.pairwise(cues))
        assert any(ch in text for ch in "äöüßÄÖÜ") or "Willkommen" in text or "Schritt" in text


async def test_result_links_need_a_valid_signature_or_the_owner(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path))
    asset = await upload(client, inputs.ok)
    job, _ = await submit(client, {"video": {"type": "asset_id", "asset_id": asset["id"]}})
    done = await wait_for_status(client, job["id"], {"completed"}, timeout=60)
    link = urlsplit(done["result_url"])
    base = f"/v1/jobs/{job['id']}/result"
    tampered = link.query[:-1] + ("0" if link.query[-1] != "0" else "1")
    other_artifact = link.query  # signed for "result", not for the captions
    cases = [
        (f"{base}?{link.query}", {}, 200),
        (f"{base}?{tampered}", {}, 403),
        (f"{base}?expires=1&sig=00", {}, 403),
        (f"/v1/jobs/{job['id']}/captions.vtt?{other_artifact}", {}, 403),
        (base, {}, 403),  # anonymous, not the owner
        (base, {"X-User-Id": "mallory"}, 403),
        (base, ALICE, 200),
        (base, ADMIN, 200),
        (f"{base}?{tampered}", ALICE, 200),  # a bad link still lets the owner in
    ]
    for url, headers, status in cases:
        resp = await client.get(url, headers=headers)
        assert resp.status == status, (url, headers, resp.status)
        if status != 200:
            assert (await resp.json())["error"]["code"] == "forbidden"


async def test_odd_sizes_and_other_codecs_keep_their_shape(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path))
    asset = await upload(client, inputs.odd)
    assert (asset["width"], asset["height"], asset["video_codec"]) == (161, 121, "mpeg4")
    job, _ = await submit(
        client, {"video": {"type": "asset_id", "asset_id": asset["id"]}, "target_language": "xx"}
    )
    await wait_for_status(client, job["id"], {"completed"}, timeout=60)
    resp = await client.get(f"/v1/jobs/{job['id']}/result", headers=ALICE)
    out = tmp_path / "odd-out.mp4"
    out.write_bytes(await resp.read())
    probed = ffprobe(out)
    picture = next(s for s in probed["streams"] if s["codec_type"] == "video")
    assert (picture["width"], picture["height"], picture["codec_name"]) == (161, 121, "mpeg4")
    assert len(probed["streams"]) == 2
    source = float(ffprobe(inputs.odd)["format"]["duration"])
    assert abs(float(probed["format"]["duration"]) - source) <= 0.1
    vtt = await (await client.get(f"/v1/jobs/{job['id']}/captions.vtt", headers=ALICE)).text()
    assert "[xx] " in vtt  # an unknown language gets a visible pseudo-translation


async def test_plain_jobs_get_a_placeholder_and_409_until_completed(
    api: ApiFactory, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path), auto_process=False)
    job = await (await client.post("/v1/jobs", json={}, headers=ALICE)).json()
    for name in ("result", "captions.srt", "captions.vtt"):
        resp = await client.get(f"/v1/jobs/{job['id']}/{name}", headers=ALICE)
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "conflict"
    await client.post("/v1/process", json={"count": 1}, headers=ADMIN)
    done = await wait_for_status(client, job["id"], {"completed"})
    link = urlsplit(done["result_url"])
    resp = await client.get(f"{link.path}?{link.query}")
    assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
    probed = ffprobe(await resp.read())
    assert sorted(s["codec_type"] for s in probed["streams"]) == ["audio", "video"]
    srt = await (await client.get(f"/v1/jobs/{job['id']}/captions.srt", headers=ALICE)).text()
    cues = parse_captions(srt, ",")
    assert cues and cues[-1][1] == pytest.approx(float(probed["format"]["duration"]), abs=0.1)
    assert listing(tmp_path) == []  # plain jobs write nothing


async def test_files_go_with_the_job(api: ApiFactory, inputs: Inputs, tmp_path: Path) -> None:
    client = await api(media_dir=str(tmp_path))
    asset = await upload(client, inputs.ok)
    job, _ = await submit(client, {"video": {"type": "asset_id", "asset_id": asset["id"]}})
    await wait_for_status(client, job["id"], {"completed"}, timeout=60)
    job_dir = tmp_path / "jobs" / job["id"]
    assert sorted(p.name for p in job_dir.iterdir()) == [
        "captions.srt",
        "captions.vtt",
        "result.mp4",
    ]
    resp = await client.post("/v1/cleanup", json={}, headers=ADMIN)
    assert (await resp.json())["deleted"] == 1
    async with asyncio.timeout(10):
        while job_dir.exists():
            await asyncio.sleep(0.02)


async def test_with_redis_any_process_serves_any_result(
    aiohttp_client: Any, redis_url: str, inputs: Inputs, tmp_path: Path
) -> None:
    from service.app import create_app
    from tests.conftest import make_settings

    def app() -> Any:
        return create_app(make_settings(redis_url=redis_url, media_dir=str(tmp_path)))

    one, two = await aiohttp_client(app()), await aiohttp_client(app())
    asset = await upload(one, inputs.ok)
    # the asset uploaded through one process is known to the other (a Store document)
    assert (await (await two.get(f"/v1/assets/{asset['id']}", headers=ALICE)).json()) == asset
    job, _ = await submit(two, {"video": {"type": "asset_id", "asset_id": asset["id"]}})
    done = await wait_for_status(one, job["id"], {"completed"}, timeout=60)
    link = urlsplit(done["result_url"])
    bodies = []
    for client in (one, two):
        resp = await client.get(f"{link.path}?{link.query}")
        assert resp.status == 200
        bodies.append(await resp.read())
        vtt = await client.get(f"/v1/jobs/{job['id']}/captions.vtt", headers=ALICE)
        assert vtt.status == 200
    assert bodies[0] == bodies[1] and len(bodies[0]) > 1000
