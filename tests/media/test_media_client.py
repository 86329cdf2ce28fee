"""The client and the CLI make media jobs: upload a file (streamed), submit with its asset id or
a URL, a callback id echoed; refusals are InvalidRequest / exit 2, as for any bad request."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from client import Asset, Client, InvalidRequest, Status
from tests.conftest import ServerProcess
from tests.integration.test_client_cli import dubsim
from tests.media.conftest import Inputs


@pytest.fixture
def server(server_process: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    return server_process(db=":memory:", media_dir=str(tmp_path / "media"), rate_limit=1000)


def test_upload_then_a_media_job_to_its_end(server: ServerProcess, inputs: Inputs) -> None:
    with Client(server.url, user_id="alice") as client:
        asset = client.upload(inputs.ok)
        assert isinstance(asset, Asset)
        assert (asset.width, asset.height, asset.user_id) == (160, 120, "alice")
        assert asset.size == inputs.ok.stat().st_size
        job = client.submit(asset_id=asset.id, target_language="fr", callback_id="ref-1")
        assert job.video == {"type": "asset_id", "asset_id": asset.id}
        assert job.callback_id == "ref-1"
        done = client.wait(job.id, timeout=120)
        assert done.status is Status.COMPLETED
        assert done.result_url is not None


def test_refusals_are_clear(server: ServerProcess, inputs: Inputs, tmp_path: Path) -> None:
    with Client(server.url, user_id="alice") as client:
        with pytest.raises(InvalidRequest) as info:
            client.upload(inputs.no_audio)
        assert (info.value.status, info.value.code) == (422, "invalid_video")
        assert info.value.details["reason"] == "no_audio"
        with pytest.raises(FileNotFoundError):
            client.upload(tmp_path / "nothing-here.mp4")
        with pytest.raises(ValueError, match="one video"):
            client.submit(video_url="http://127.0.0.1:1/x.mp4", asset_id="a")
        with pytest.raises(InvalidRequest) as info:  # nobody listens there
            client.submit(video_url="http://127.0.0.1:1/x.mp4")
        assert info.value.code == "video_unreachable"
        with pytest.raises(InvalidRequest) as info:  # another user's asset is nobody's
            asset = client.upload(inputs.ok)
            client.submit(asset_id=asset.id, user_id="bob")
        assert info.value.details["reason"] == "unknown_asset"
        assert list(client.list()) == []  # every submission here was refused: none made


def test_the_cli_uploads_a_file_and_waits(server: ServerProcess, inputs: Inputs) -> None:
    result = dubsim(
        server.url,
        *("submit", "--video", str(inputs.ok), "--callback-id", "cli-ref"),
        *("--wait", "--json", "--timeout", "120"),
        timeout=150,
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "completed"
    assert job["video"]["type"] == "asset_id"
    assert job["callback_id"] == "cli-ref"
    missing = dubsim(server.url, "submit", "--video", "/nonexistent/clip.mp4")
    assert missing.returncode == 2, missing.stderr
    assert "--video" in missing.stderr
