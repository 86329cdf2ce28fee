"""Real media for jobs that name a video: assets in, a dubbed MP4 and captions out.

`Media` is the one object the app holds: the tools (ffmpeg, ffprobe, espeak-ng under one
concurrency cap), the assets, the attempt runner the scheduler hands media jobs to, the signed
result links, and the files of finished jobs (`MEDIA_DIR/jobs/<id>/`), removed with the job.
The translation itself stays simulated (docs/media.md).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from ..errors import NotFound
from ..jobs import JobService, Record
from ..links import Links
from ..models import Asset, AssetVideo, Job, SubmitRequest, UrlVideo
from ..scheduler import Plan
from ..settings import Settings
from . import script
from .assets import Assets
from .pipeline import Attempt, Stuck
from .probe import Limits, NotAVideo
from .tools import Tools

log = logging.getLogger(__name__)

PLACEHOLDER: Final = Path(__file__).with_name("placeholder.mp4")
PLACEHOLDER_S: Final = 2.0  # its duration: plain jobs' captions cover it
_ESPEAK_LANGUAGES: Final = (
    "af am an ar as az ba be bg bn bs ca cmn cs cy da de el en eo es et eu fa fi fr ga gd gn "
    "gu he hi hr ht hu hy ia id is it ja ka kk kl kn ko ku ky la lb lt lv mi mk ml mr ms mt my "
    "nb ne nl om or pa pl pt ro ru sd si sk sl sq sr sv sw ta te th tk tn tr tt ug uk ur uz vi "
    "yue"
)
VOICES: Final = frozenset(_ESPEAK_LANGUAGES.split())


class Media:
    def __init__(self, settings: Settings, service: JobService, links: Links) -> None:
        self.service = service
        self.links = links
        self.root = Path(settings.media_dir)
        self.seed = settings.seed
        self.realtime = settings.media_realtime
        self.ttl_s = settings.result_url_ttl_s
        self.base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
        self.tools = Tools(settings.media_workers)
        self.assets = Assets(
            service.store,
            self.tools,
            self.root,
            max_bytes=settings.max_upload_mb << 20,
            fetch_timeout_s=settings.media_fetch_timeout_s,
            clock=service.clock,
            limits=Limits(settings.max_video_s, settings.max_video_pixels),
            allow_private=settings.media_fetch_allow_private,
        )
        self._forgetting: set[asyncio.Task[None]] = set()

    # ---- submission ---------------------------------------------------------------

    async def prepare(self, user_id: str, request: SubmitRequest) -> AssetVideo | None:
        """A job's video as an asset of this user (a URL is fetched now); None: no video."""
        video = request.video
        if video is None:
            return None
        self.tools.require()
        if isinstance(video, UrlVideo):
            fetched = await self.assets.fetch(user_id, video.url)
            return AssetVideo(fetched.id)
        asset: Asset | None
        try:
            asset = await self.assets.get(video.asset_id)
        except NotFound:
            asset = None
        if asset is None or asset.user_id != user_id:
            raise NotAVideo(
                "video.asset_id names no asset of this user (upload it with POST /v1/assets)",
                field="video.asset_id",
                reason="unknown_asset",
            )
        return video

    # ---- attempts (the scheduler's AttemptRunner) -----------------------------------

    def handles(self, record: Record) -> bool:
        return not isinstance(record.job.video, msgspec.UnsetType)

    async def run(
        self, record: Record, attempt: int, plan: Plan, release: Callable[[], None]
    ) -> Plan:
        try:
            return await Attempt(self, record, attempt, plan).run()
        except Stuck:
            release()  # a hung stage holds no worker slot
            await asyncio.Event().wait()
            raise  # never reached: the wait ends only by a cancel

    def job_deleted(self, job_id: str) -> None:
        """The job is gone (cleanup, JOB_TTL): so are its files (off the event loop)."""
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(shutil.rmtree, self.job_dir(job_id), True)
        )
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    # ---- files and links ------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def result_url(self, job: Job) -> str:
        return self.signed(job, "result")

    def signed(self, job: Job, artifact: str) -> str:
        # the service's clock, the one links are checked against (CLOCK=virtual included)
        expires = int(self.service.clock.now()) + self.ttl_s
        return self.base + self.links.path(job.id, artifact, expires)

    def script_seed(self, record: Record) -> str:
        return f"{self.seed}/{record.ordinal}" if self.seed is not None else record.job.id

    def voice(self, language: str) -> str:
        base = language.split("-")[0].lower()
        return base if base in VOICES else "en"

    def placeholder_captions(self, record: Record) -> list[script.Cue]:
        cues = script.transcribe(self.script_seed(record), [(0.0, PLACEHOLDER_S)])
        return script.translate(cues, record.job.target_language)


__all__ = ["PLACEHOLDER", "Media"]
