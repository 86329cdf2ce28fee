"""One media job's attempt: probe → extract → transcribe → translate → synthesize → mix → write.

Each stage reports `job.progress` with its `stage` and `stage_progress` (ffmpeg's own
`-progress` output where ffmpeg works); overall progress is the stages' weighted sum. The
attempt works in `jobs/<id>/work-<attempt>/` and only the last stage moves finished files
(result.mp4, captions.srt, captions.vtt) into `jobs/<id>/`, so a cancel, a failure or a crash
leaves no partial result; the work directory is removed on the way out (and, after a crash,
when the next attempt starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from ..models import Stage
from ..scheduler import Plan
from ..store import StoreUnavailable
from . import script
from .probe import INPUT_GUARD, NotAVideo, probe
from .tools import FfmpegProgress, ToolFailed

if TYPE_CHECKING:
    from ..jobs import JobService, Record
    from . import Media

log = logging.getLogger(__name__)

STAGES: Final = tuple(Stage)
# share of the overall progress each stage stands for (the mix does most of the work)
WEIGHTS: Final = {
    Stage.PROBE: 2,
    Stage.EXTRACT: 10,
    Stage.TRANSCRIBE: 6,
    Stage.TRANSLATE: 2,
    Stage.SYNTHESIZE: 20,
    Stage.MIX: 55,
    Stage.WRITE: 5,
}
REPORT_INTERVAL_S: Final = 0.25  # per-stage progress at most this often
SILENCE: Final = "silencedetect=noise=-35dB:duration=0.3"
_SILENCE_START = re.compile(r"silence_start: (-?[0-9.]+)")
_SILENCE_END = re.compile(r"silence_end: (-?[0-9.]+)")
ESPEAK_WPM: Final = "185"
DUCK: Final = "sidechaincompress=threshold=0.02:ratio=12:attack=20:release=400"
AUDIO_FORMAT: Final = "aformat=sample_rates=44100:channel_layouts=stereo"
ENCODE: Final = ("libx264", "-preset", "veryfast")  # a video MP4 can't hold as it is


class Stuck(Exception):
    """The scenario hangs here (raised to the runner, which hangs)."""


class _Reporter:
    """Coalesces per-stage progress into job.progress events, at most every 250 ms."""

    def __init__(self, service: JobService, record: Record, attempt: int) -> None:
        self.service, self.record, self.attempt = service, record, attempt
        self.latest: tuple[Stage, float] = (Stage.PROBE, 0.0)
        self.sent: tuple[Stage, int] | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def update(self, fraction: float) -> None:
        self.latest = (self.latest[0], fraction)
        self.wake.set()

    async def begin(self, stage: Stage) -> None:
        self.latest = (stage, 0.0)
        await self.send()

    async def send(self) -> None:
        stage, fraction = self.latest
        key = (stage, int(fraction * 100))
        if key == self.sent:
            return
        self.sent = key
        before = sum(WEIGHTS[s] for s in STAGES[: STAGES.index(stage)])
        overall = int((before + WEIGHTS[stage] * fraction) * 100 / sum(WEIGHTS.values()))
        with contextlib.suppress(StoreUnavailable):  # progress is news, not state
            await self.service.report_progress(
                self.record, overall, self.attempt, stage=stage, stage_progress=key[1]
            )

    async def loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self.send()
            await asyncio.sleep(REPORT_INTERVAL_S)


class Attempt:
    """The state of one attempt's pipeline."""

    def __init__(self, media: Media, record: Record, attempt: int, plan: Plan) -> None:
        self.media, self.record, self.attempt, self.plan = media, record, attempt, plan
        job = record.job
        self.job_dir = media.job_dir(job.id)
        self.work = self.job_dir / f"work-{attempt}"
        self.reporter = _Reporter(media.service, record, attempt)
        self.stop_at: Stage | None = None  # fail or hang when this stage begins
        if plan.fail_at is not None or plan.stuck_at is not None:
            chosen = job.scenario.fail_stage if job.scenario is not None else msgspec.UNSET
            if isinstance(chosen, Stage):
                self.stop_at = chosen
            else:
                at = plan.fail_at if plan.fail_at is not None else plan.stuck_at
                self.stop_at = STAGES[min(int((at or 0.0) * len(STAGES)), len(STAGES) - 1)]

    async def run(self) -> Plan:
        """The plan the scheduler should follow: as given (completed, or the scripted
        failure), or a media_error failure. Raises Stuck for a scripted hang."""
        video = self.record.job.video
        if isinstance(video, msgspec.UnsetType):  # the runner only gets media jobs
            raise ValueError("not a media job")
        source = self.media.assets.path(video.asset_id)
        self.reporter.task = asyncio.create_task(self.reporter.loop())
        try:
            await asyncio.to_thread(_fresh_dir, self.job_dir, self.work)
            return await self._stages(source)
        except (ToolFailed, NotAVideo, OSError) as exc:
            log.warning("media job %s attempt %d failed: %s", self.record.job.id, self.attempt, exc)
            return Plan(self.plan.duration_s, fail_at=1.0, error_code="media_error")
        finally:
            self.reporter.task.cancel()
            with contextlib.suppress(BaseException):
                await self.reporter.task
            # off the loop, and finished even if this task is cancelled again meanwhile
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, self.work, True))

    async def _begin(self, stage: Stage) -> None:
        await self.reporter.begin(stage)
        if stage is self.stop_at:  # the job shows the stage it failed (or hangs) in
            if self.plan.stuck_at is not None:
                raise Stuck(stage)
            raise _ScriptedFailure(stage)

    async def _stages(self, source: Path) -> Plan:
        media, job, work = self.media, self.record.job, self.work
        tools = media.tools
        try:
            await self._begin(Stage.PROBE)
            if not await asyncio.to_thread(source.exists):
                raise NotAVideo("the job's input asset is gone")
            info = await probe(tools, source, media.assets.limits)
            duration = info.duration_s

            await self._begin(Stage.EXTRACT)
            original = work / "original.wav"
            _, err = await tools.run(
                "ffmpeg",
                [
                    *("-hide_banner", "-nostats", "-y", *INPUT_GUARD, "-i", str(source), "-vn"),
                    # no more than the probe measured, whatever the file holds past it
                    *("-af", SILENCE, "-ac", "1", "-ar", "22050", "-t", f"{duration:.3f}"),
                    str(original),
                    *("-progress", "pipe:1"),
                ],
                on_line=FfmpegProgress(duration, self.reporter.update),
            )

            # speech only where sound was decoded: a header may claim hours the file has not
            heard = min(duration, await asyncio.to_thread(_wav_seconds, original, duration))

            await self._begin(Stage.TRANSCRIBE)
            speech = speech_spans(err.decode(errors="replace"), heard)
            cues = script.transcribe(media.script_seed(self.record), speech)

            await self._begin(Stage.TRANSLATE)
            translated = script.translate(cues, job.target_language)

            await self._begin(Stage.SYNTHESIZE)
            voice = await self._synthesize(translated, heard)

            await self._begin(Stage.MIX)
            result = work / "result.mp4"
            await self._mix(source, voice, result, duration)

            await self._begin(Stage.WRITE)
            await asyncio.to_thread(_publish, work, self.job_dir, result, translated)
            self.reporter.update(1.0)
            await self.reporter.send()
        except _ScriptedFailure:
            return self.plan
        return Plan(self.plan.duration_s)

    async def _synthesize(self, cues: list[script.Cue], duration: float) -> Path:
        tools, work = self.media.tools, self.work
        voice = work / "voice.wav"
        language = self.media.voice(self.record.job.target_language)
        done = 0

        async def speak(i: int, cue: script.Cue) -> Path:
            nonlocal done
            path = work / f"cue-{i}.wav"
            await tools.run(
                "espeak-ng", ["-v", language, "-s", ESPEAK_WPM, "-w", str(path), cue.text]
            )
            done += 1
            self.reporter.update(0.5 * done / max(1, len(cues)))
            return path

        spoken = await asyncio.gather(*(speak(i, c) for i, c in enumerate(cues)))
        args = ["-hide_banner", "-nostats", "-y"]
        if not spoken:
            args += ["-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo"]
            graph = f"[0:a]{AUDIO_FORMAT},atrim=0:{duration:.3f}[voice]"
        else:
            parts = []
            for i, (path, cue) in enumerate(zip(spoken, cues, strict=True)):
                args += ["-i", str(path)]
                delay = round(cue.start_s * 1000)
                parts.append(
                    f"[{i}:a]{AUDIO_FORMAT},atrim=0:{cue.end_s - cue.start_s:.3f},"
                    f"adelay={delay}:all=1[c{i}]"
                )
            inputs = "".join(f"[c{i}]" for i in range(len(spoken)))
            parts.append(
                f"{inputs}amix=inputs={len(spoken)}:normalize=0:duration=longest,"
                f"apad,atrim=0:{duration:.3f}[voice]"
            )
            graph = ";".join(parts)
        args += ["-filter_complex", graph, "-map", "[voice]", str(voice), "-progress", "pipe:1"]
        await tools.run(
            "ffmpeg",
            args,
            on_line=FfmpegProgress(duration, lambda f: self.reporter.update(0.5 + f / 2)),
        )
        return voice

    async def _mix(self, source: Path, voice: Path, result: Path, duration: float) -> None:
        """Duck the original under the new voice; keep the video as it is (copied)."""
        graph = (
            f"[0:a]{AUDIO_FORMAT}[orig];[1:a]{AUDIO_FORMAT},asplit=2[voice][key];"
            f"[orig][key]{DUCK}[ducked];"
            "[ducked][voice]amix=inputs=2:duration=first:normalize=0[mixed]"
        )
        pace = ["-re"] if self.media.realtime else []
        limits = self.media.assets.limits
        # decoding (to encode), a frame past MAX_VIDEO_PIXELS (and its slack) is never decoded
        guard = ["-max_pixels", str(limits.max_pixels)] if limits is not None else []
        for video_codec, decoder in ((["-c:v", "copy"], []), (["-c:v", *ENCODE], guard)):
            args = [
                *("-hide_banner", "-nostats", "-y", *pace, *decoder, *INPUT_GUARD),
                *("-i", str(source)),
                *("-i", str(voice)),
                *("-filter_complex", graph, "-map", "0:v:0", "-map", "[mixed]", *video_codec),
                *("-c:a", "aac", "-b:a", "128k", "-t", f"{duration:.3f}"),
                *("-movflags", "+faststart", "-f", "mp4", str(result), "-progress", "pipe:1"),
            ]
            try:
                await self.media.tools.run(
                    "ffmpeg", args, on_line=FfmpegProgress(duration, self.reporter.update)
                )
                return
            except ToolFailed:
                if video_codec[1] != "copy":
                    raise
                # this codec can't go into MP4 as it is: encode it (H.264) instead
                log.info("job %s: the video can't be copied into MP4; encoding it", source.name)


class _ScriptedFailure(Exception):
    pass


def speech_spans(log_text: str, duration: float) -> list[tuple[float, float]]:
    """The spans with sound, from silencedetect's log (everything, when it found no silence)."""
    spans: list[tuple[float, float]] = []
    cursor = 0.0
    for line in log_text.splitlines():
        if (start := _SILENCE_START.search(line)) is not None:
            at = max(0.0, float(start.group(1)))
            if at > cursor:
                spans.append((cursor, min(at, duration)))
            cursor = duration  # until its end is seen, the silence lasts
        elif (end := _SILENCE_END.search(line)) is not None:
            cursor = float(end.group(1))
    if cursor < duration:
        spans.append((cursor, duration))
    return [(round(a, 3), round(b, 3)) for a, b in spans if b - a > 0]


def _wav_seconds(path: Path, otherwise: float) -> float:
    """How long the WAV ffmpeg decoded is (`otherwise` if it can't be read)."""
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes() / wav.getframerate()
    except (OSError, EOFError, wave.Error, ZeroDivisionError):
        return otherwise


def _fresh_dir(job_dir: Path, work: Path) -> None:
    """A clean work directory (and none left over from an attempt a crash interrupted)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    for old in job_dir.glob("work-*"):
        shutil.rmtree(old, ignore_errors=True)
    work.mkdir()


def _publish(work: Path, job_dir: Path, result: Path, cues: list[script.Cue]) -> None:
    (work / "captions.srt").write_text(script.srt(cues), encoding="utf-8")
    (work / "captions.vtt").write_text(script.vtt(cues), encoding="utf-8")
    # the captions first, the video last: a result.mp4 means everything is there
    for name in ("captions.srt", "captions.vtt"):
        os.replace(work / name, job_dir / name)
    os.replace(result, job_dir / "result.mp4")
