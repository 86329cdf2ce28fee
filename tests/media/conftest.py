"""Media test inputs, made here with ffmpeg's lavfi sources (nothing is downloaded)."""

from __future__ import annotations

import array
import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Inputs:
    ok: Path  # 160x120, 3 s, H.264 + AAC (a tone: "speech" all through)
    odd: Path  # 161x121, 2 s, MPEG-4 part 2 + MP3 in AVI: odd size, another codec family
    no_audio: Path
    corrupt: Path
    truncated: Path  # the first half of an MP4 whose index is at its end
    long: Path  # 60 s but tiny (32x24, 5 fps, sound for 2 s): a real-time mix outlasting waits


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


def ffprobe(path: Path | bytes) -> dict[str, Any]:
    source = "pipe:0" if isinstance(path, bytes) else str(path)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", source],
        input=path if isinstance(path, bytes) else None,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def pcm(path: Path) -> bytes:
    """The audio, decoded to 8 kHz mono 16-bit: to tell whether two tracks differ."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-ac",
            "1",
            "-ar",
            "8000",
            "-f",
            "s16le",
            "-",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return out.stdout


def changed(before: Path, after: Path) -> float:
    """How much of `after`'s audio is not `before`'s: RMS of the difference over RMS of
    `before` (a re-encode alone gives a few percent; a new voice over ducked audio, far more)."""
    a, b = array.array("h", pcm(before)), array.array("h", pcm(after))
    n = min(len(a), len(b))
    diff = math.sqrt(sum((a[i] - b[i]) ** 2 for i in range(n)) / n)
    base = math.sqrt(sum(a[i] ** 2 for i in range(n)) / n)
    return diff / base


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("media-inputs")
    ok = root / "ok.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=s=160x120:r=15:d=3"),
        *("-f", "lavfi", "-i", "sine=f=440:sample_rate=44100:d=3"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"),
        str(ok),
    )
    odd = root / "odd.avi"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=s=161x121:r=10:d=2"),
        *("-f", "lavfi", "-i", "sine=f=220:sample_rate=22050:d=2"),
        *("-c:v", "mpeg4", "-c:a", "libmp3lame"),
        str(odd),
    )
    no_audio = root / "no_audio.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=s=160x120:r=15:d=2"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
        str(no_audio),
    )
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    whole = ok.read_bytes()
    truncated = root / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 2])
    long = root / "long.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", "color=c=gray:s=32x24:r=5:d=60"),
        *("-f", "lavfi", "-i", "sine=f=300:sample_rate=8000:d=2"),  # then silence: one line
        *("-af", "apad", "-t", "60"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
        *("-c:a", "aac", "-b:a", "16k"),
        str(long),
    )
    return Inputs(ok, odd, no_audio, corrupt, truncated, long)
