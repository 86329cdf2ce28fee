"""API keys end to end: `dubsim keys create/list/revoke` in a subprocess against a real
server with AUTH=keys, and the Python client's `api_key=` (REST and the WebSocket)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from client import Client, Unauthorized
from tests.conftest import ADMIN_TOKEN, ServerProcess
from tests.integration.test_client_cli import dubsim


@pytest.fixture
def server(server_process: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process(db=":memory:", auth="keys", rate_limit=1000)


def test_cli_keys_round_trip(server: ServerProcess) -> None:
    made = dubsim(server.url, "keys", "create", "--user", "alice", "--plan", "premium", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["key"].startswith("dsk_") and key["user_id"] == "alice"
    assert key["plan"] == "premium"

    plain = dubsim(server.url, "keys", "create", "--user", "bob", "--name", "laptop")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip().startswith("dsk_") and "shown once" in plain.stderr

    listed = dubsim(server.url, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = json.loads(listed.stdout)
    assert sorted(k["user_id"] for k in keys) == ["alice", "bob"]
    assert all(k["key"] is None for k in keys)
    assert key["key"] not in listed.stdout and plain.stdout.strip() not in listed.stdout
    table = dubsim(server.url, "keys", "list")
    assert table.returncode == 0 and key["id"] in table.stdout and "laptop" in table.stdout

    # the key at work: the job is alice's and premium
    env = {"DUBSIM_API_KEY": key["key"], "DUBSIM_TOKEN": "", "DUBSIM_USER": ""}
    job = dubsim(server.url, "submit", "--json", extra_env=env)
    assert job.returncode == 0, job.stderr
    submitted = json.loads(job.stdout)
    assert (submitted["user_id"], submitted["role"]) == ("alice", "premium")
    # an X-User-Id naming someone else is refused, not silently ignored
    other = dubsim(server.url, "submit", "--user", "mallory", extra_env=env)
    assert other.returncode == 2 and "403" in other.stderr + other.stdout
    # without a key: refused (exit 2, the server said 401)
    refused = dubsim(server.url, "jobs", extra_env={"DUBSIM_TOKEN": "", "DUBSIM_USER": ""})
    assert refused.returncode == 2 and "401" in refused.stderr + refused.stdout

    revoked = dubsim(server.url, "keys", "revoke", key["id"])
    assert revoked.returncode == 0 and key["id"] in revoked.stdout
    after = dubsim(server.url, "submit", "--json", "--api-key", key["key"], extra_env=env)
    assert after.returncode == 2, after.stdout
    assert dubsim(server.url, "keys", "revoke", key["id"]).returncode == 2  # 404 now
    # key management needs the admin token
    denied = dubsim(server.url, "keys", "list", extra_env={"DUBSIM_TOKEN": ""})
    assert denied.returncode == 2


def test_python_client_with_an_api_key(server: ServerProcess) -> None:
    with Client(server.url, token=ADMIN_TOKEN) as admin:
        made = admin.create_key("carol", "premium", name="ci")
        assert made.key is not None and made.key.startswith("dsk_")
        assert [k.id for k in admin.list_keys()] == [made.id]
    with Client(server.url, api_key=made.key, user_id="carol") as carol:
        job = carol.submit(scenario={"duration_s": 0.2})
        assert (job.user_id, job.role) == ("carol", "premium")
        done = carol.wait(job.id, timeout=30)  # the WebSocket, with the key on the upgrade
        assert done.status == "completed"
        assert carol.stats.sockets_opened >= 1 and carol.stats.waits_polled == 0
    with Client(server.url, token=ADMIN_TOKEN) as admin:
        assert admin.revoke_key(made.id).id == made.id
        assert admin.list_keys() == []
    with Client(server.url, api_key=made.key) as carol, pytest.raises(Unauthorized):
        carol.get(job.id)
    with Client(server.url) as nobody, pytest.raises(Unauthorized):
        nobody.submit()
