"""ffprobe: is this a video with sound, and what is it (duration, size, codecs).

Two ffprobe runs: the streams and the container (what the headers say), then a scan of every
packet's timestamps and every key frame's size (what the file holds), because a header can
claim less than the file holds and a stream's size can change after its first frames."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Final

import msgspec

from ..errors import ValidationFailed
from .tools import ToolFailed, Tools, ToolTimedOut

# Containers that hold their own media. Playlists and lists of other files (hls, concat,
# image sequences...) are refused: ffmpeg would open whatever they name (local files, other
# users' assets, any URL), so an upload could read what it must not.
CONTAINERS: Final = frozenset(
    {"mov", "mp4", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "ogg", "asf"}
)
# ffmpeg's own guard, put before every `-i` of an input video: other demuxers are not even
# opened, so a playlist can't make ffprobe or ffmpeg touch the files it names.
INPUT_GUARD: Final = ("-format_whitelist", ",".join(sorted(CONTAINERS)))


# ffmpeg's decoders refuse a frame of more than `-max_pixels` before allocating it; they count
# the width rounded up to their alignment (up to 64), so the guard leaves 64 columns of room at
# any height up to 16384: a frame within the limit always passes it, one over the guard is
# never decoded (its refusal is named in ffmpeg's error log, `_OVER_GUARD`)
GUARD_SLACK: Final = 64 * 16384
_OVER_GUARD: Final = "exceeds specified max pixel count"
# a header's duration is believed when the packets agree with it this closely (encoder priming
# and padding: a 30:00 video holds 30:00.023 of AAC packets); otherwise the packets are
DURATION_SLACK_S: Final = 0.5
# the scan decodes every key frame: a file of nothing but tiny key frames (hundreds of
# thousands of them in MAX_UPLOAD_MB) would hold a tool for many minutes, so it has this long
# (all-intra 1080p MJPEG: 4-5 s per 75 MB on 2 busy cores, so ~30 s for 500 MB; a 10 min
# 720p H.264 with a key frame every 2 s: 2 s)
SCAN_BUDGET_S: Final = 120.0


class Probed(msgspec.Struct, frozen=True):
    duration_s: float
    width: int
    height: int
    video_codec: str
    audio_codec: str
    size: int
    largest_frame: int = 0  # pixels of the largest frame any video stream has (its key frames)


class NotAVideo(ValidationFailed):
    code = "invalid_video"


class Limits(msgspec.Struct, frozen=True):
    """What an accepted video may be at most (MAX_VIDEO_S, MAX_VIDEO_PIXELS): a small file can
    hold hours of video or huge frames, and each would hold a media worker (and its memory)."""

    duration_s: float
    pixels: int

    @property
    def max_pixels(self) -> int:
        """ffmpeg's `-max_pixels` for a decoder of such a video (GUARD_SLACK)."""
        return self.pixels + GUARD_SLACK

    def over_pixels(self) -> NotAVideo:
        return NotAVideo(
            f"the video has frames of more than MAX_VIDEO_PIXELS ({self.pixels:,} pixels)",
            reason="too_many_pixels",
            limit_pixels=self.pixels,
        )

    def check(self, video: Probed) -> None:
        if video.duration_s > self.duration_s:
            raise NotAVideo(
                f"the video lasts {video.duration_s:g} s; at most MAX_VIDEO_S "
                f"({self.duration_s:g} s) is accepted",
                reason="too_long",
                limit_s=self.duration_s,
            )
        largest = max(video.largest_frame, video.width * video.height)
        if largest > self.pixels:  # any of its video streams: ffmpeg would decode each
            raise NotAVideo(
                f"the video has frames of {largest:,} pixels; at most MAX_VIDEO_PIXELS "
                f"({self.pixels:,} pixels) is accepted",
                reason="too_many_pixels",
                limit_pixels=self.pixels,
            )


class _Stream(msgspec.Struct):
    codec_type: str = ""
    codec_name: str = ""
    width: int = 0
    height: int = 0
    duration: str | None = None


class _Format(msgspec.Struct):
    format_name: str = ""
    duration: str | None = None
    size: str | None = None


class _Output(msgspec.Struct):
    streams: list[_Stream] = []
    format: _Format | None = None


class _Entry(msgspec.Struct):
    """A packet (timestamps) or a decoded key frame (its size), as the scan lists them."""

    type: str = ""
    stream_index: int = -1
    pts_time: str | None = None
    dts_time: str | None = None
    duration_time: str | None = None
    width: int = 0
    height: int = 0


class _Scan(msgspec.Struct):
    packets_and_frames: list[_Entry] = []


class _Held(msgspec.Struct, frozen=True):
    duration_s: float | None  # None: no packet has a timestamp
    largest_frame: int


async def probe(tools: Tools, path: Path, limits: Limits | None = None) -> Probed:
    """What `path` is; NotAVideo (422, naming why) unless it has video and audio.

    With `limits`, ffprobe's decoders refuse frames over `limits.max_pixels` (too_many_pixels)
    instead of decoding them; Limits.check is the caller's."""
    guard = ("-max_pixels", str(limits.max_pixels)) if limits is not None else ()
    out = await _ffprobe(
        tools, path, limits, args=[*guard, "-show_streams", "-show_format", "-of", "json"]
    )
    try:
        found = msgspec.json.decode(out, type=_Output)
    except msgspec.MsgspecError:
        raise NotAVideo("ffprobe could not describe the file", reason="unreadable") from None
    container = found.format.format_name if found.format else ""
    if not CONTAINERS.intersection(container.split(",")):
        raise NotAVideo(
            f"not a video container dubsim accepts ({container or 'unknown'})",
            reason="unreadable",
        )
    video = next((s for s in found.streams if s.codec_type == "video"), None)
    audio = next((s for s in found.streams if s.codec_type == "audio"), None)
    if video is None or video.width <= 0 or video.height <= 0:
        raise NotAVideo("the file has no video stream", reason="no_video")
    if audio is None:
        raise NotAVideo("the video has no audio track to dub", reason="no_audio")
    claimed = _float(found.format.duration if found.format else None) or _float(video.duration)
    # the container's header may claim far more than its streams hold: believe the streams
    streams = [d for s in (video, audio) if (d := _float(s.duration)) is not None and d > 0]
    if claimed is not None and streams:
        claimed = min(claimed, max(streams))
    # ... and it may claim less, or a stream may change size after its first frames: what
    # the packets and the key frames say (every packet is read, only key frames decoded)
    out = await _ffprobe(
        tools,
        path,
        limits,
        timeout_s=SCAN_BUDGET_S,
        args=[
            *guard,
            *("-skip_frame", "nokey", "-of", "json", "-show_entries"),
            "packet=stream_index,pts_time,dts_time,duration_time:frame=stream_index,width,height",
        ],
    )
    try:
        held = await asyncio.to_thread(_held, out, found.streams)  # can be ~10^5 entries
    except msgspec.MsgspecError:
        raise NotAVideo("ffprobe could not describe the file", reason="unreadable") from None
    duration = claimed
    if held.duration_s is not None and (
        claimed is None or abs(held.duration_s - claimed) > DURATION_SLACK_S
    ):
        duration = held.duration_s
    if duration is None or duration <= 0:
        raise NotAVideo("the video has no measurable duration", reason="no_duration")
    return Probed(
        duration_s=round(duration, 3),
        width=video.width,
        height=video.height,
        video_codec=video.codec_name,
        audio_codec=audio.codec_name,
        size=int(_float(found.format.size if found.format else None) or 0),
        largest_frame=held.largest_frame,
    )


async def _ffprobe(
    tools: Tools,
    path: Path,
    limits: Limits | None,
    *,
    args: list[str],
    timeout_s: float | None = None,
) -> bytes:
    try:
        out, err = await tools.run(
            "ffprobe", ["-v", "error", *INPUT_GUARD, *args, str(path)], timeout_s=timeout_s
        )
    except ToolTimedOut as exc:
        raise NotAVideo(
            f"the video has too many key frames to check in {exc.timeout_s:g} s",
            reason="too_complex",
            limit_s=exc.timeout_s,
        ) from None
    except ToolFailed as exc:
        if limits is not None and _OVER_GUARD in exc.stderr:
            raise limits.over_pixels() from None
        # ffprobe names the file it read: the server's own path, which is nobody's business
        said = exc.stderr.replace(str(path), "the file").strip()[-200:]
        raise NotAVideo(
            "not a video ffprobe can read: " + (said or "unknown format"), reason="unreadable"
        ) from None
    if limits is not None and _OVER_GUARD.encode() in err:
        raise limits.over_pixels()  # a frame was refused, not decoded: its size is unknown
    return out


def _held(out: bytes, streams: list[_Stream]) -> _Held:
    """What the scan found: the longest stream (each: from its first timestamp to its last
    packet's end, or the sum of its packets' durations when more, as when the timestamps of
    concatenated files start over), and the largest video frame (headers and key frames)."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    total: dict[int, float] = {}
    largest = max((s.width * s.height for s in streams if s.codec_type == "video"), default=0)
    for entry in msgspec.json.decode(out, type=_Scan).packets_and_frames:
        i = entry.stream_index
        if entry.type == "frame":
            largest = max(largest, entry.width * entry.height)
            continue
        length = max(0.0, _float(entry.duration_time) or 0.0)
        total[i] = total.get(i, 0.0) + length
        at = _float(entry.pts_time)
        if at is None:
            at = _float(entry.dts_time)
        if at is not None:
            first[i] = min(first.get(i, at), at)
            last[i] = max(last.get(i, at), at + length)
    spans = [max(last[i] - first[i], total.get(i, 0.0)) for i in first]
    return _Held(max(spans) if spans else None, largest)


def _float(text: str | None) -> float | None:
    """A finite number, or None (ffprobe says N/A for what it doesn't know)."""
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
