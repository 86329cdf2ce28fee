"""The `dubsim` CLI through a subprocess against a real server process: exit codes and --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from client import Client
from tests.conftest import ADMIN_TOKEN, ROOT, ServerProcess, free_port


def dubsim(
    server_url: str, *args: str, timeout: float = 60, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DUBSIM_URL": server_url,
        "DUBSIM_TOKEN": ADMIN_TOKEN,
        "DUBSIM_USER": "cli-user",
        **(extra_env or {}),
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


def test_unreachable_server_exits_3_with_one_plain_line() -> None:
    port = free_port()
    result = dubsim(f"http://127.0.0.1:{port}", "jobs", timeout=60)
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("server unreachable: ")
    assert f"can't connect to 127.0.0.1:{port} (connection refused)" in lines[0]
    assert "ClientConnectorError" not in result.stderr and "ssl:" not in result.stderr


def test_url_without_scheme_means_http(server: ServerProcess) -> None:
    job = submit(server)
    result = dubsim(server.url.removeprefix("http://"), "jobs", "--json")
    assert result.returncode == 0, result.stderr
    assert [j["id"] for j in json.loads(result.stdout)] == [job["id"]]


def test_jobs_at_80_columns_prints_ids_whole(server: ServerProcess) -> None:
    ids = [submit(server, "--user", f"user-with-a-long-name-{n}")["id"] for n in range(3)]
    env = {"COLUMNS": "80", "DUBSIM_USER": "x"}
    result = dubsim(server.url, "jobs", extra_env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), result.stdout
    for job_id in ids:
        assert len([line for line in lines if job_id in line]) == 1, result.stdout


def test_jobs_json_is_what_the_api_sends(server: ServerProcess) -> None:
    job = submit(server, "--role", "premium", "--scenario", '{"duration_s": 0.05}')
    with Client(server.url) as client:
        client.wait(job["id"], timeout=60)  # finished: nothing changes between the two reads
    listed = dubsim(server.url, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    with urllib.request.urlopen(
        urllib.request.Request(server.url + "/v1/jobs", headers={"X-User-Id": "cli-user"})
    ) as resp:
        assert json.loads(listed.stdout) == json.loads(resp.read())["jobs"]


def test_watch_without_a_tty_prints_a_line_per_event_as_it_comes(server: ServerProcess) -> None:
    job = submit(server, "--scenario", '{"outcome": "stuck"}')
    env = {
        **os.environ,
        "DUBSIM_URL": server.url,
        "DUBSIM_TOKEN": ADMIN_TOKEN,
        "COLUMNS": "80",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "client", "watch", "--job", job["id"]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the snapshot, while the command still runs
        assert first.split()[1:3] == ["snapshot", job["id"]], first
        with Client(server.url, token=ADMIN_TOKEN) as client:
            client.cancel(job["id"], reason="watched")
        second = proc.stdout.readline()
        assert second.split()[1:4] == ["job.cancelled", job["id"], "cancelled"], second
        assert proc.poll() is None  # lines come as events arrive, not when the command ends
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


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
