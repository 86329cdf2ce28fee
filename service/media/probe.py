"""ffprobe: is this a video with sound, and what is it (duration, size, codecs)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec

from ..errors import ValidationFailed
from .tools import ToolFailed, Tools

# Containers that hold their own media. Playlists and lists of other files (hls, concat,
# image sequences...) are refused: ffmpeg would open whatever they name (local files, other
# users' assets, any URL), so an upload could read what it must not.
CONTAINERS: Final = frozenset(
    {"mov", "mp4", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "ogg", "asf"}
)
# ffmpeg's own guard, put before every `-i` of an input video: other demuxers are not even
# opened, so a playlist can't make ffprobe or ffmpeg touch the files it names.
INPUT_GUARD: Final = ("-format_whitelist", ",".join(sorted(CONTAINERS)))


class Probed(msgspec.Struct, frozen=True):
    duration_s: float
    width: int
    height: int
    video_codec: str
    audio_codec: str
    size: int
    largest_frame: int = 0  # pixels of the largest video stream's frames (a file may hold more)


class NotAVideo(ValidationFailed):
    code = "invalid_video"


class Limits(msgspec.Struct, frozen=True):
    """What an accepted video may be at most (MAX_VIDEO_S, MAX_VIDEO_PIXELS): a small file can
    hold hours of video or huge frames, and each would hold a media worker (and its memory)."""

    duration_s: float
    pixels: int

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


async def probe(tools: Tools, path: Path) -> Probed:
    """What `path` is; NotAVideo (422, naming why) unless it has video and audio."""
    try:
        out, _ = await tools.run(
            "ffprobe",
            [
                *("-v", "error", *INPUT_GUARD),
                *("-show_streams", "-show_format", "-of", "json", str(path)),
            ],
        )
    except ToolFailed as exc:
        # ffprobe names the file it read: the server's own path, which is nobody's business
        said = exc.stderr.replace(str(path), "the file").strip()[-200:]
        raise NotAVideo(
            "not a video ffprobe can read: " + (said or "unknown format"), reason="unreadable"
        ) from None
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
    duration = _float(found.format.duration if found.format else None) or _float(video.duration)
    # the container's header may claim far more than its streams hold: believe the streams
    streams = [d for s in (video, audio) if (d := _float(s.duration)) is not None and d > 0]
    if duration is not None and streams:
        duration = min(duration, max(streams))
    if duration is None or duration <= 0:
        raise NotAVideo("the video has no measurable duration", reason="no_duration")
    return Probed(
        duration_s=round(duration, 3),
        width=video.width,
        height=video.height,
        video_codec=video.codec_name,
        audio_codec=audio.codec_name,
        size=int(_float(found.format.size if found.format else None) or 0),
        largest_frame=max(s.width * s.height for s in found.streams if s.codec_type == "video"),
    )


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
