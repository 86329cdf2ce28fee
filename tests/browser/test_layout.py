"""The dashboard fits real screens: a laptop at 1280x800 and a phone at 390x844.

A table of ~50 jobs (long user names, every status) must show each row's whole job id and its
actions without sideways scrolling, and Cancel must work by clicking where the button is.
The screenshots in docs/ are taken from the same data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.async_api import expect

if TYPE_CHECKING:
    from tests.browser.conftest import Dash, Server

    MakeDash = Callable[..., Awaitable[Dash]]

DOCS = Path(__file__).resolve().parents[2] / "docs"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
USERS = [
    "alice",
    "bob",
    "localization-team@example-studio.com",
    "carol.martinez",
    "dave",
    "subtitles-pipeline-eu-west",
]
TOTAL_JOBS = 50
DONE = 40  # then 1 permanently failed, 1 retrying, 1 cancelled, 4 running and the rest queued


async def populate(server: Server, dash: Dash) -> dict[str, Any]:
    """~50 jobs as an operator sees them: mostly done, some running, queued, failed, cancelled."""
    # A long retry delay keeps the flaky job visibly "failed, retry scheduled".
    await server.call("PATCH", "/v1/config", json={"workers": 8, "retry_delay": 120}, expect=200)
    # Staggered durations spread the completions over a few bars of the throughput chart.
    done = [
        await server.submit(
            user=USERS[i % len(USERS)], role=("premium", "free")[i % 2], duration_s=0.2 + 0.05 * i
        )
        for i in range(DONE)
    ]
    for job in done:
        await server.wait_status(job["id"], "completed")
    failing = await server.submit(
        user="localization-team@example-studio.com", duration_s=0.4, outcome="permanently_failed"
    )
    flaky = await server.submit(
        user="carol.martinez", role="premium", duration_s=0.4, fail_attempts=1
    )
    cancelled = await server.submit(user="dave", outcome="stuck")
    running = [
        await server.submit(user="subtitles-pipeline-eu-west", role="premium", outcome="stuck"),
        await server.submit(user="alice", role="premium", outcome="stuck"),
        await server.submit(user="erin", duration_s=60),
        await server.submit(user="bob", role="premium", duration_s=20),
    ]
    await dash.wait_row_status(failing["id"], "permanently_failed")
    await dash.wait_row_status(flaky["id"], "failed")
    for job in running:
        await dash.wait_row_status(job["id"], "processing")
    await dash.wait_row_status(cancelled["id"], "processing")
    await server.call(
        "POST",
        f"/v1/jobs/{cancelled['id']}/cancel",
        json={"reason": "duplicate upload: the customer sent the same file twice"},
    )
    await dash.wait_row_status(cancelled["id"], "cancelled")
    await server.call("PATCH", "/v1/config", json={"auto_process": False}, expect=200)
    queued = [
        await server.submit(user=USERS[i % len(USERS)], role=("premium", "free")[i % 2])
        for i in range(TOTAL_JOBS - DONE - 7)
    ]
    for job in queued:
        await dash.wait_row_status(job["id"], "pending")
    await expect(dash.page.locator("#count-total")).to_have_text(str(TOTAL_JOBS))
    await expect(dash.page.locator("#jobs-body tr")).to_have_count(TOTAL_JOBS)
    return {"failing": failing, "flaky": flaky, "running": running, "queued": queued}


# Everything that can be wrong with the table's fit, measured in the page: the table's box
# scrolls sideways, the page does, an id cell is shortened or clipped, a status chip is cut,
# an action button lies outside the table's box or the window.
MEASURE = """() => {
    const vw = document.documentElement.clientWidth;
    const wrap = document.querySelector('#jobs-table').parentElement;
    const box = wrap.getBoundingClientRect();
    const out = {
        wrap: [wrap.scrollWidth, wrap.clientWidth],
        page: [document.documentElement.scrollWidth, vw],
        rows: 0, buttons: 0, chips: 0, bad: [],
    };
    const inside = (r, outer) => r.left >= outer.left - 0.5 && r.right <= outer.right + 0.5;
    const text = node => {
        const range = document.createRange();
        range.selectNodeContents(node);
        return range.getBoundingClientRect();
    };
    for (const tr of document.querySelectorAll('#jobs-body tr')) {
        out.rows += 1;
        const id = tr.dataset.id;
        const cell = tr.querySelector('.c-id');
        if (cell.textContent.trim() !== id)
            out.bad.push(`id shown as ${JSON.stringify(cell.textContent)}, not ${id}`);
        if (cell.scrollWidth > cell.clientWidth)
            out.bad.push(`id cell of ${id} clipped: ${cell.scrollWidth} > ${cell.clientWidth}`);
        const idText = text(cell);
        const cellBox = cell.getBoundingClientRect();
        if (!inside(idText, cellBox) || !inside(idText, box) || idText.left < 0 || idText.right > vw)
            out.bad.push(`id ${id} drawn at ${idText.left}..${idText.right}, cell ${cellBox.left}..${cellBox.right}`);
        const chip = tr.querySelector('.c-status .chip');
        if (chip) {
            out.chips += 1;
            const r = chip.getBoundingClientRect();
            const td = chip.closest('td');
            if (chip.scrollWidth > chip.clientWidth || td.scrollWidth > td.clientWidth
                || !inside(r, td.getBoundingClientRect()) || r.left < 0 || r.right > vw)
                out.bad.push(`chip ${chip.textContent} of ${id} cut at ${r.left}..${r.right}`);
        }
        for (const b of tr.querySelectorAll('.c-actions button')) {
            out.buttons += 1;
            const r = b.getBoundingClientRect();
            if (!inside(r, box) || r.left < 0 || r.right > vw || r.width === 0)
                out.bad.push(`${b.textContent} of ${id} at ${r.left}..${r.right}, window ${vw}`);
        }
    }
    return out;
}"""


async def assert_table_fits(dash: Dash, cancelled: int = 0) -> dict[str, Any]:
    m = await dash.page.evaluate(MEASURE)
    assert m["rows"] == TOTAL_JOBS
    # Cancel on the queued, running and retrying jobs, Retry on the permanently failed one
    assert m["buttons"] == TOTAL_JOBS - DONE - 1 - cancelled, m
    wrap_scroll, wrap_client = m["wrap"]
    assert wrap_scroll <= wrap_client, f"the table scrolls sideways: {m['wrap']}"
    page_scroll, page_client = m["page"]
    assert page_scroll <= page_client, f"the page scrolls sideways: {m['page']}"
    assert m["bad"] == [], m["bad"][:5]
    return m


async def cancel_by_clicking_where_it_is(dash: Dash, server: Server, job_id: str) -> None:
    """Bring the row into view vertically only, then click the Cancel button where it is."""
    page = dash.page
    button = dash.row(job_id).get_by_role("button", name="Cancel")
    await button.evaluate("b => b.scrollIntoView({block: 'center', inline: 'nearest'})")
    scroll = "() => [window.scrollX, document.querySelector('.table-wrap').scrollLeft]"
    assert await page.evaluate(scroll) == [0, 0], "reaching the row scrolled sideways"
    box = await button.bounding_box()
    viewport = page.viewport_size
    assert box and viewport
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], box
    await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    dialog = page.locator("#cancel-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#cancel-job-id")).to_contain_text(job_id[:8])
    await dialog.get_by_label("Reason").fill("clicked on a small screen")
    await dialog.get_by_role("button", name="Cancel job").click()
    await expect(dialog).to_be_hidden()
    await dash.wait_row_status(job_id, "cancelled")
    stored = await server.call("GET", f"/v1/jobs/{job_id}")
    assert (stored["status"], stored["cancel_reason"]) == (
        "cancelled",
        "clicked on a small screen",
    )
    assert await page.evaluate(scroll) == [0, 0]


async def test_table_fits_1280x800(make_dash: MakeDash, server: Server) -> None:
    dash = await make_dash(viewport=LAPTOP)
    await dash.open()
    await dash.login()
    jobs = await populate(server, dash)
    await assert_table_fits(dash)
    # A running job further down the table, and a queued one near its top.
    await cancel_by_clicking_where_it_is(dash, server, jobs["running"][0]["id"])
    await cancel_by_clicking_where_it_is(dash, server, jobs["queued"][0]["id"])
    await assert_table_fits(dash, cancelled=2)
    assert dash.console_errors == []


async def test_table_fits_phone_390x844(make_dash: MakeDash, server: Server) -> None:
    dash = await make_dash(viewport=PHONE, is_mobile=True, has_touch=True)
    await dash.open()
    await dash.login()
    jobs = await populate(server, dash)
    m = await assert_table_fits(dash)
    assert m["chips"] == TOTAL_JOBS
    failing = dash.row(jobs["failing"]["id"])
    await expect(failing.locator(".chip")).to_have_text(re.compile("perm"))
    # The header bar, counts and login state stay on the screen.
    for selector in ("#conn", "#count-completed", "#admin-badge"):
        await expect(dash.page.locator(selector)).to_be_in_viewport()
    await cancel_by_clicking_where_it_is(dash, server, jobs["running"][1]["id"])
    await assert_table_fits(dash, cancelled=1)
    assert dash.console_errors == []


@pytest.mark.parametrize(
    ("name", "context"),
    [
        ("dashboard.png", {"viewport": LAPTOP}),
        ("dashboard-phone.png", {"viewport": PHONE, "is_mobile": True, "has_touch": True}),
    ],
)
async def test_screenshot(
    make_dash: MakeDash, server: Server, tmp_path: Path, name: str, context: dict[str, Any]
) -> None:
    """Save docs/dashboard.png (1280x800) and docs/dashboard-phone.png (390x844)."""
    dash = await make_dash(**context)
    await dash.open()
    await dash.login()
    jobs = await populate(server, dash)
    # Config changes are not pushed; the idle page re-reads them within a few seconds.
    await expect(dash.page.locator("#cfg-auto_process")).not_to_be_checked()
    # Let the running jobs' progress bars get somewhere before the picture is taken.
    await expect(
        dash.row(jobs["running"][3]["id"]).locator("[role=progressbar]")
    ).not_to_have_attribute("aria-valuenow", re.compile(r"^\d$"))
    await assert_table_fits(dash)
    if context["viewport"] is PHONE:
        # On a phone the counts fill the first screen: show the job cards instead.
        await dash.page.evaluate(
            """() => {
                const bar = document.querySelector('.topbar').getBoundingClientRect();
                const jobs = document.querySelector('.jobs').getBoundingClientRect();
                window.scrollBy(0, jobs.top - bar.bottom - 8);
            }"""
        )
        await expect(dash.page.locator("#jobs-body tr").first).to_be_in_viewport()

    # docs/ is rewritten only on request, so `make test` leaves the tree clean
    target = DOCS / name if os.environ.get("DUBSIM_SCREENSHOT") else tmp_path / name
    await dash.page.screenshot(path=str(target))
    assert target.stat().st_size > 20_000
    assert dash.console_errors == []
