"""Attacks on MAX_VIDEO_S / MAX_VIDEO_PIXELS and MEDIA_FETCH_ALLOW_PRIVATE (docs/media.md),
breaks found from outside (each was a strict xfail until the code was fixed):

- A video whose *first* video stream is within MAX_VIDEO_PIXELS but whose second is not.
- An MPEG-TS whose frames grow past MAX_VIDEO_PIXELS after its first frames (two TS files
  concatenated: ffprobe's stream header reports the first SPS's size). Now the key frames are
  decoded and measured; a frame far past the limit is refused by ffprobe's decoder
  (`-max_pixels`) without being decoded.
- A Matroska, FLV or MP4 header that claims a shorter duration than the file holds. Now the
  duration is what the packets' timestamps and durations say.
- A loopback address written as a non-canonical IPv4 literal (decimal, hex, short, octal):
  refused, and nothing reached, but as `unreachable`, not as the documented `private_address`.
  Now such a host is the address it denotes: private, refused as `private_address`; public
  (or private with MEDIA_FETCH_ALLOW_PRIVATE), fetched at that address.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import service.media.probe
from service.egress import ip_literal
from service.media.probe import GUARD_SLACK, _held
from service.media.tools import ToolFailed, Tools, ToolTimedOut
from tests.conftest import ApiFactory, wait_for_status
from tests.media.conftest import ffmpeg
from tests.media.test_media_limits import Origin, files, submit

ALICE = {"X-User-Id": "alice"}
SMALL = (160, 120)
BIG = (320, 240)  # over a MAX_VIDEO_PIXELS of 160*120


def _video(path: Path, size: tuple[int, int], seconds: float, fmt: str | None = None) -> Path:
    ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=s={size[0]}x{size[1]}:r=5:d={seconds}"),
        *("-f", "lavfi", "-i", f"sine=f=440:sample_rate=8000:d={seconds}"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"),
        *(("-f", fmt) if fmt else ()),
        str(path),
    )
    return path


async def _upload_refused(
    api: ApiFactory, media_dir: Path, body: bytes, reason: str, **limits: float
) -> None:
    client = await api(media_dir=str(media_dir / "media"), **limits)
    resp = await client.post("/v1/assets", data=body, headers=ALICE)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_video"
    assert error["details"]["reason"] == reason
    assert files(media_dir / "media") == []


async def test_a_second_video_stream_over_the_pixel_limit_is_refused(
    api: ApiFactory, tmp_path: Path
) -> None:
    clip = tmp_path / "two.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=s={SMALL[0]}x{SMALL[1]}:r=5:d=2"),
        *("-f", "lavfi", "-i", f"testsrc=s={BIG[0]}x{BIG[1]}:r=5:d=1"),
        *("-f", "lavfi", "-i", "sine=f=440:sample_rate=8000:d=2"),
        *("-map", "0", "-map", "1", "-map", "2"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"),
        str(clip),
    )
    await _upload_refused(
        api, tmp_path, clip.read_bytes(), "too_many_pixels", max_video_pixels=SMALL[0] * SMALL[1]
    )


async def test_frames_that_grow_past_the_pixel_limit_mid_stream_are_refused(
    api: ApiFactory, tmp_path: Path
) -> None:
    small = _video(tmp_path / "small.ts", SMALL, 2, "mpegts")
    big = _video(tmp_path / "big.ts", BIG, 1, "mpegts")
    await _upload_refused(
        api,
        tmp_path,
        small.read_bytes() + big.read_bytes(),
        "too_many_pixels",
        max_video_pixels=SMALL[0] * SMALL[1],
    )


def _lying_mkv(tmp_path: Path, seconds: int) -> bytes:
    """A Matroska of `seconds` whose Segment Duration and DURATION tags claim 1 s."""
    clip = _video(tmp_path / "long.mkv", (32, 24), seconds)
    body = bytearray(clip.read_bytes())
    at = body.find(b"\x44\x89")  # Segment Info Duration, in ms (TimecodeScale 1 ms)
    assert at > 0 and body[at + 2] == 0x88
    body[at + 3 : at + 11] = struct.pack(">d", 1000.0)
    claimed = f"00:00:{seconds:02d}".encode()
    at = body.find(claimed)
    while at >= 0:  # the streams' DURATION tags, same length
        body[at : at + 8] = b"00:00:01"
        at = body.find(claimed, at + 8)
    return bytes(body)


def _lying_flv(tmp_path: Path, seconds: int) -> bytes:
    """An FLV of `seconds` whose onMetaData duration claims 1 s."""
    clip = tmp_path / "long.flv"
    ffmpeg(
        *("-f", "lavfi", "-i", f"color=c=gray:s=32x24:r=5:d={seconds}"),
        *("-f", "lavfi", "-i", f"sine=f=440:sample_rate=22050:d={seconds}"),
        *("-c:v", "flv", "-c:a", "aac"),
        str(clip),
    )
    body = bytearray(clip.read_bytes())
    at = body.find(b"duration")
    assert at > 0 and body[at + 8] == 0  # AMF0 number
    body[at + 9 : at + 17] = struct.pack(">d", 1.0)
    return bytes(body)


def _lying_mp4(tmp_path: Path, seconds: int) -> bytes:
    """An MP4 of `seconds` whose every duration field (movie, tracks, media, edit lists) claims
    1 s, while its sample tables hold all of it (the streams' durations agree with the lie)."""
    clip = _video(tmp_path / "long.mp4", (32, 24), seconds)
    body = bytearray(clip.read_bytes())
    movie = body.find(b"mvhd") + 8  # fields after the box type, version and flags
    movie_scale = body[movie + 8 : movie + 12]  # created, modified, timescale, duration
    for box in (b"mvhd", b"tkhd", b"mdhd", b"elst"):
        at = body.find(box)
        while at >= 0:
            assert body[at + 4] == 0  # version 0: 32-bit fields
            fields = at + 8
            if box in (b"mvhd", b"mdhd"):  # duration = timescale: 1 s
                body[fields + 12 : fields + 16] = body[fields + 8 : fields + 12]
            elif box == b"tkhd":  # created, modified, track, reserved, duration (movie scale)
                body[fields + 16 : fields + 20] = movie_scale
            else:  # entry count, then (segment duration in movie scale, media time, rate)
                for k in range(struct.unpack(">I", body[fields : fields + 4])[0]):
                    entry = fields + 4 + 12 * k
                    body[entry : entry + 4] = movie_scale
            at = body.find(box, at + 4)
    return bytes(body)


@pytest.mark.parametrize(
    "make", [_lying_mkv, _lying_flv, _lying_mp4], ids=["matroska", "flv", "mp4"]
)
async def test_a_header_claiming_less_than_the_file_holds_is_refused(
    api: ApiFactory, tmp_path: Path, make: object
) -> None:
    seconds = 20
    body = make(tmp_path, seconds)  # type: ignore[operator]
    # ffmpeg decodes all 20 s of it (the header lies, the clusters/tags do not)
    await _upload_refused(api, tmp_path, body, "too_long", max_video_s=5.0)


async def test_a_decimal_loopback_literal_is_a_private_address(
    api: ApiFactory, tmp_path: Path
) -> None:
    origin = Origin(b"")
    base = await origin.start()
    port = base.rsplit(":", 1)[1]
    try:
        client = await api(media_dir=str(tmp_path), media_fetch_allow_private=False)
        status, body = await submit(client, f"http://2130706433:{port}/clip.mp4")
        assert origin.hits == []  # holds today: nothing is reached
        assert status == 422, body
        assert body["error"]["code"] == "video_unreachable"
        assert body["error"]["details"]["reason"] == "private_address"
    finally:
        await origin.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # egress: no store involved
@pytest.mark.parametrize(
    "host", ["0x7f000001", "127.1", "0177.0.0.1", "127.000.000.001", "0x7f.0.0.1", "017700000001"]
)
async def test_other_ipv4_forms_of_loopback_are_private_addresses(
    api: ApiFactory, tmp_path: Path, host: str
) -> None:
    """What the C library reads as 127.0.0.1 (inet_aton: hex, short, octal, mixed): refused as
    private before anything is fetched."""
    origin = Origin(b"")
    base = await origin.start()
    port = base.rsplit(":", 1)[1]
    try:
        client = await api(media_dir=str(tmp_path), media_fetch_allow_private=False)
        status, body = await submit(client, f"http://{host}:{port}/clip.mp4")
        assert status == 422, body
        assert body["error"]["code"] == "video_unreachable"
        assert body["error"]["details"]["reason"] == "private_address"
        assert "127.0.0.1" in body["error"]["message"]  # the address it denotes, named
        assert origin.hits == []
        assert files(tmp_path) == []
    finally:
        await origin.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # egress: no store involved
@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1"])
async def test_another_ipv4_form_is_fetched_at_the_address_it_denotes(
    api: ApiFactory, tmp_path: Path, host: str
) -> None:
    """Where such a host may be fetched (here MEDIA_FETCH_ALLOW_PRIVATE, as for a public one),
    it is: at the address it denotes, as curl or a browser would (aiohttp alone refuses it)."""
    clip = _video(tmp_path / "clip.mp4", SMALL, 1)
    origin = Origin(clip.read_bytes())
    base = await origin.start()
    port = base.rsplit(":", 1)[1]
    try:
        client = await api(media_dir=str(tmp_path / "media"))
        status, body = await submit(client, f"http://{host}:{port}/clip.mp4")
        assert status == 201, body
        assert origin.hits == ["/clip.mp4"]
    finally:
        await origin.close()


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7F000001", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("0300.0250.1", "192.168.0.1"),
        ("8.8.8.8", "8.8.8.8"),
        ("::1", "::1"),
        ("0127.0.0.1", "87.0.0.1"),  # octal: not loopback at all
        ("example.com", None),
        ("deadbeef", None),  # hex digits without 0x: a name
        ("1.2.3.4.5", None),
        ("08.0.0.1", None),  # not octal: a name (getaddrinfo would ask DNS)
        ("127.0.0.1 x", None),  # inet_aton would stop at the space; a host never has one
        ("", None),
    ],
)
def test_an_ip_literal_is_what_the_c_library_reads(host: str, address: str | None) -> None:
    assert ip_literal(host) == address


@pytest.mark.parametrize("where", ["first", "mid-stream"])
async def test_frames_far_past_the_limit_are_refused_without_being_decoded(
    api: ApiFactory, tmp_path: Path, where: str
) -> None:
    """Frames past MAX_VIDEO_PIXELS and its slack (probe.GUARD_SLACK) are refused by
    ffprobe's own decoder (`-max_pixels`): their size is never reported, only the refusal."""
    limit = SMALL[0] * SMALL[1]
    huge = _video(tmp_path / "huge.ts", (1280, 960), 1, "mpegts")  # 1.2 M pixels: > limit + 1 M
    body = huge.read_bytes()
    if where == "mid-stream":  # past what ffprobe's first look decodes (its first ~5 s)
        body = _video(tmp_path / "small.ts", SMALL, 12, "mpegts").read_bytes() + body
    await _upload_refused(api, tmp_path, body, "too_many_pixels", max_video_pixels=limit)


async def test_concatenated_files_whose_timestamps_start_over_count_in_full(
    api: ApiFactory, tmp_path: Path
) -> None:
    """Three 4 s MPEG-TS files end to end: each one's timestamps start where the first's did,
    so the packets span 4 s, but they hold 12 s (ffmpeg plays all of it): their durations
    add up."""
    part = _video(tmp_path / "part.ts", (32, 24), 4, "mpegts").read_bytes()
    await _upload_refused(api, tmp_path, part * 3, "too_long", max_video_s=6.0)


def test_the_scan_counts_a_stream_by_its_timestamps_when_packets_have_no_durations() -> None:
    """Packets without a duration of their own (FLV video, some Matroska blocks) still count:
    a stream lasts at least from its first timestamp to its last."""
    entries = [{"type": "packet", "stream_index": 0, "pts_time": f"{t}.0"} for t in range(21)]
    entries.append({"type": "frame", "stream_index": 0, "width": 64, "height": 48})
    held = _held(json.dumps({"packets_and_frames": entries}).encode(), [])
    assert (held.duration_s, held.largest_frame) == (20.0, 64 * 48)


async def test_the_pipeline_decodes_no_frame_past_the_limit_nor_sound_past_the_probe(
    api: ApiFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Second lines of defence, for a file that would slip past the checks: the audio is
    extracted for no longer than the probe measured (`-t`), and when the video can't be
    copied and is decoded to be encoded, its decoder refuses frames past the limit
    (`-max_pixels`). Here the copy is made to fail, so the encode runs."""
    calls: list[list[str]] = []
    real = Tools.run

    async def run(
        self: Tools,
        tool: str,
        args: Sequence[str],
        *,
        on_line: Callable[[str], None] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[bytes, bytes]:
        calls.append([tool, *args])
        if tool == "ffmpeg" and "[mixed]" in args and "copy" in args:
            raise ToolFailed(tool, 1, "Could not find tag for codec in stream #0")
        return await real(self, tool, args, on_line=on_line, timeout_s=timeout_s)

    monkeypatch.setattr(Tools, "run", run)
    limit = SMALL[0] * SMALL[1]
    client = await api(media_dir=str(tmp_path / "media"), max_video_pixels=limit)
    clip = _video(tmp_path / "clip.mp4", SMALL, 2)
    resp = await client.post("/v1/assets", data=clip.read_bytes(), headers=ALICE)
    assert resp.status == 201, await resp.text()
    asset = await resp.json()
    resp = await client.post(
        "/v1/jobs", json={"video": {"type": "asset_id", "asset_id": asset["id"]}}, headers=ALICE
    )
    assert resp.status == 201, await resp.text()
    done = await wait_for_status(client, (await resp.json())["id"], {"completed"}, timeout=60)
    assert done["status"] == "completed"

    (extract,) = [c for c in calls if "-vn" in c]
    assert extract[extract.index("-t") + 1] == f"{asset['duration_s']:.3f}"
    assert extract.index("-t") > extract.index("-i")  # an output option: what is decoded
    (encode,) = [c for c in calls if "libx264" in c]
    guard = encode.index("-max_pixels")
    assert encode[guard + 1] == str(limit + GUARD_SLACK)
    assert guard < encode.index("-i")  # an input option: the source's decoder


async def test_a_video_the_scan_cannot_finish_in_its_budget_is_refused(
    api: ApiFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan decodes every key frame, so a file of nothing else has a budget
    (probe.SCAN_BUDGET_S); past it, the upload is refused and nothing is kept. A budget of 0
    here: every scan runs out of it."""
    monkeypatch.setattr(service.media.probe, "SCAN_BUDGET_S", 0.0)
    clip = _video(tmp_path / "clip.mp4", SMALL, 1)
    await _upload_refused(api, tmp_path, clip.read_bytes(), "too_complex")


async def test_a_tool_past_its_timeout_is_killed() -> None:
    tools = Tools(1)
    endless = ["-v", "error", "-f", "lavfi", "-i", "anullsrc", "-f", "null", "-"]
    with pytest.raises(ToolTimedOut) as raised:
        # the outer bound only keeps a broken timeout from hanging the test
        await asyncio.wait_for(tools.run("ffmpeg", endless, timeout_s=0.2), 30)
    assert raised.value.timeout_s == 0.2
    assert tools.running == set()  # killed and reaped
