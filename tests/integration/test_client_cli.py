"""The `dubsim` CLI through a subprocess against a real server process: exit codes and --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from client import Client
from tests.conftest import ADMIN_TOKEN, ROOT, ServerProcess, free_port


def dubsim(server_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DUBSIM_URL": server_url,
        "DUBSIM_TOKEN": ADMIN_TOKEN,
        "DUBSIM_USER": "cli-user",
    }
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def server(server_process: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process(db=":memory:", rate_limit=1000)


def submit(server: ServerProcess, *args: str) -> dict[str, Any]:
    result = dubsim(server.url, "submit", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_submit_wait_completed_exits_0(server: ServerProcess) -> None:
    result = dubsim(
        server.url,
        "submit",
        "--role",
        "premium",
        "--wait",
        "--json",
        "--timeout",
        "60",
        "--scenario",
        '{"duration_s": 0.2}',
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "completed" and job["user_id"] == "cli-user"


def test_wait_failed_and_cancelled_exit_1(server: ServerProcess) -> None:
    failed = submit(server, "--scenario", '{"outcome": "permanently_failed"}')
    result = dubsim(server.url, "wait", failed["id"], "--json", "--timeout", "60")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)[0]["status"] == "permanently_failed"

    stuck = submit(server, "--scenario", '{"outcome": "stuck"}')
    cancel = dubsim(server.url, "cancel", stuck["id"], "--reason", "cli test", "--json")
    assert cancel.returncode == 0 and json.loads(cancel.stdout)["status"] == "cancelled"
    result = dubsim(server.url, "wait", stuck["id"])  # with the progress display
    assert result.returncode == 1
    assert "cancelled" in result.stdout


def test_wait_timeout_exits_4_and_the_job_goes_on(server: ServerProcess) -> None:
    stuck = submit(server, "--scenario", '{"outcome": "stuck"}')
    done = submit(server, "--role", "premium", "--scenario", '{"duration_s": 0.1}')
    with Client(server.url) as client:  # finished before the CLI starts: no race with its clock
        client.wait(done["id"], timeout=60)
    result = dubsim(server.url, "wait", done["id"], stuck["id"], "--timeout", "1", "--json")
    assert result.returncode == 4, result.stderr
    jobs = {j["id"]: j["status"] for j in json.loads(result.stdout)}
    assert jobs[done["id"]] == "completed" and jobs[stuck["id"]] in ("pending", "processing")


def test_jobs_config_and_usage(server: ServerProcess) -> None:
    job = submit(server)
    listed = dubsim(server.url, "jobs", "--json")
    assert listed.returncode == 0 and job["id"] in {j["id"] for j in json.loads(listed.stdout)}
    changed = dubsim(server.url, "config", "error_rate=0.25", "auto_process=true", "--json")
    assert changed.returncode == 0 and json.loads(changed.stdout)["error_rate"] == 0.25
    shown = dubsim(server.url, "config", "--json")
    assert json.loads(shown.stdout)["error_rate"] == 0.25
    assert dubsim(server.url, "config", "error_rate=7").returncode == 2  # refused: 422
    assert dubsim(server.url, "wait").returncode == 2  # argparse: an ID is required
    assert dubsim(server.url, "submit", "--scenario", "{nope").returncode == 2


def test_unreachable_server_exits_3() -> None:
    result = dubsim(f"http://127.0.0.1:{free_port()}", "jobs", timeout=60)
    assert result.returncode == 3
    assert "unreachable" in result.stderr


def test_sync_client_against_a_real_server(server: ServerProcess) -> None:
    progress: list[int] = []
    with Client(server.url, token=ADMIN_TOKEN, user_id="sync-user") as client:
        job = client.submit(role="premium", scenario={"duration_s": 0.3})
        done = client.wait(job.id, timeout=60, on_progress=lambda j: progress.append(j.progress))
        assert done.status == "completed" and progress[-1] == 100
        assert [j.id for j in client.list(user="sync-user")] == [job.id]
        assert client.config().rate_limit == 1000
        with client.events(jobs=[job.id]) as stream:
            first = next(stream)
        assert first.type == "snapshot" and first.job is not None and first.job.id == job.id
        assert [j.id for j in client.wait_many([job.id], timeout=30)] == [job.id]
