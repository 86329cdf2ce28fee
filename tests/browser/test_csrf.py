"""CSRF on the dashboard's cookie, in real Chromium: after the admin logs in to the dashboard,
pages on another port of 127.0.0.1 (same site: the SameSite=Strict cookie *is* sent) and on
another host name (`localhost`) try every cross-origin way to cancel, delete and reconfigure:
no-cors `fetch` with a text/plain body, credentialed CORS `fetch` with JSON, and a
cross-site form post. Nothing may change, and the dashboard stays logged in.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

if TYPE_CHECKING:
    from tests.browser.conftest import Dash, Server

ATTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>not the dashboard</title>
<iframe name="sink" style="display:none"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink"
      action="TARGET/v1/jobs/JOB/cancel"><input name='{"reason":"form","x":"' value='"}'></form>
<script>
const target = "TARGET", job = "JOB";
const attempts = [
  [target + "/v1/jobs/" + job + "/cancel", {method: "POST", body: '{"reason":"csrf"}'}],
  [target + "/cancel/" + job, {method: "POST", body: '{"reason":"csrf"}'}],
  [target + "/v1/cleanup", {method: "POST", body: "{}"}],
  [target + "/cleanup", {method: "POST", body: ""}],
  [target + "/v1/config", {method: "PATCH", body: '{"error_rate":1}'}],
  [target + "/config", {method: "POST", body: '{"ERROR_RATE":1,"TRANSLATION_DELAY":3600}'}],
  [target + "/v1/process", {method: "POST", body: '{"count":1}'}],
  [target + "/v1/session", {method: "DELETE"}],
];
async function attack() {
  const results = [];
  for (const [url, init] of attempts) {
    for (const [mode, type] of [["no-cors", "text/plain"], ["cors", "application/json"]]) {
      try {
        const resp = await fetch(url, {...init, mode, credentials: "include",
                                       headers: init.body === undefined ? {} : {"Content-Type": type}});
        results.push([url, mode, resp.type, resp.status]);
      } catch (e) {
        results.push([url, mode, "error", String(e)]);
      }
    }
  }
  document.getElementById("form").submit();
  window.__results = results;
}
attack();
</script>"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def attacker(server: Server) -> AsyncIterator[tuple[int, dict[str, str]]]:
    """A plain web server on another port of 127.0.0.1 that serves the attack page for `?job=`."""
    posted: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        html = ATTACK_PAGE.replace("TARGET", server.url).replace("JOB", request.query["job"])
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, posted
    finally:
        await runner.cleanup()


async def _state(server: Server, *job_ids: str) -> Any:
    jobs = [await server.call("GET", f"/v1/jobs/{j}", expect=200) for j in job_ids]
    config = await server.call("GET", "/v1/config", expect=200)
    return [(j["id"], j["status"], j.get("cancel_reason")) for j in jobs], config


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["other-port", "other-host"])
async def test_cross_origin_pages_cannot_use_the_admin_cookie(
    dash: Dash, server: Server, attacker: tuple[int, dict[str, str]], host: str
) -> None:
    stuck = await server.submit(outcome="stuck")
    done = await server.submit(duration_s=0.05)
    await server.wait_status(done["id"], "completed")
    await server.wait_status(stuck["id"], "processing")
    await dash.open()
    await dash.login()
    before = await _state(server, stuck["id"], done["id"])

    port, _ = attacker
    evil = await dash.context.new_page()
    await evil.goto(f"http://{host}:{port}/?job={stuck['id']}")
    await evil.wait_for_function("window.__results !== undefined", timeout=20_000)
    results = await evil.evaluate("window.__results")
    # the form post goes to the hidden iframe; wait until it has been answered
    await evil.wait_for_function(
        "() => { try { return frames[0].location.href !== 'about:blank'; }"
        " catch (e) { return true; } }",
        timeout=20_000,
    )
    assert len(results) == 16, results

    assert await _state(server, stuck["id"], done["id"]) == before, json.dumps(results)
    # the dashboard is still logged in: no cross-site logout either
    session = await dash.page.evaluate(
        "fetch('/v1/session', {credentials: 'same-origin'}).then(r => r.json())"
    )
    assert session == {"admin": True}
    # and its own requests work: the guard lets the dashboard through
    await dash.page.evaluate(
        f"""fetch('/v1/jobs/{stuck["id"]}/cancel', {{method: 'POST', credentials: 'same-origin',
              headers: {{'Content-Type': 'application/json'}}, body: '{{"reason":"mine"}}'}})
           .then(r => {{ if (!r.ok) throw new Error(r.status); }})"""
    )
    job = await server.call("GET", f"/v1/jobs/{stuck['id']}", expect=200)
    assert job["status"] == "cancelled" and job["cancel_reason"] == "mine"
