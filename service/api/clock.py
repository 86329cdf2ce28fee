"""The service's clock: read it (anyone), move a virtual one on (admin).

`GET /v1/clock` -> `{"mode": "real"|"virtual", "now": iso}`;
`POST /v1/clock/advance {"seconds": n}` (admin, CLOCK=virtual only) -> `{"now", "advanced_s"}`
once everything that came due has run (service/clock.py says exactly what that means).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from aiohttp import web

from ..appkeys import CLOCK
from ..auth import admin_only
from ..clock import MAX_ADVANCE_S, VirtualClock
from ..errors import Conflict, ValidationFailed
from ..models import iso_ms
from ._http import json_response, read_json

# the last instant an RFC 3339 time (four-digit year) can name: time stops short of it
LAST_TIME: Final = 253_402_300_799.999  # 9999-12-31T23:59:59.999Z


class AdvanceRequest(msgspec.Struct, forbid_unknown_fields=True):
    seconds: Annotated[float, msgspec.Meta(gt=0, le=MAX_ADVANCE_S)]


class Advanced(msgspec.Struct):
    now: str
    advanced_s: float


class ClockState(msgspec.Struct):
    mode: Literal["real", "virtual"]
    now: str


async def get_clock(request: web.Request) -> web.Response:
    """GET /v1/clock"""
    clock = request.app[CLOCK]
    mode: Literal["real", "virtual"] = "virtual" if isinstance(clock, VirtualClock) else "real"
    return json_response(ClockState(mode, iso_ms(clock.now())))


@admin_only
async def advance(request: web.Request) -> web.Response:
    """POST /v1/clock/advance {"seconds": n}"""
    clock = request.app[CLOCK]
    if not isinstance(clock, VirtualClock):
        raise Conflict("the clock is real: start the server with CLOCK=virtual to move it")
    body = await read_json(request, AdvanceRequest)
    if clock.now() + body.seconds > LAST_TIME:
        raise ValidationFailed(
            "the clock would pass 9999-12-31T23:59:59.999Z, the last time RFC 3339 can name",
            field="seconds",
        )
    now = await clock.advance(body.seconds)
    return json_response(Advanced(iso_ms(now), body.seconds))


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/clock", get_clock)
    app.router.add_post("/v1/clock/advance", advance)
