"""Requests and answers of the v1 API, without I/O: URL building, headers, decoding, error mapping.

Both the plain calls and the multi-step flows build their requests here, so a route or a header
is spelled once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import msgspec

from ._errors import (
    APIError,
    Conflict,
    InvalidRequest,
    JobNotFound,
    RateLimited,
    Unauthorized,
)
from ._models import ErrorBody, Scenario
from ._polling import parse_retry_after
from ._transport import Request, Response

__all__ = ["Api", "decode", "error_from"]

T = TypeVar("T")

USER_AGENT = "dubsim-client/0.1"

_encoder = msgspec.json.Encoder()


class Api:
    """Builds the Request for each route from the client's base URL and identity."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        user_id: str | None = None,
        timeout: float = 10.0,
        api_key: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.user_id = user_id
        self.timeout = timeout
        self.api_key = api_key

    # ---- building blocks --------------------------------------------------------

    def url(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        """`base_url + path`, with the query string encoded."""
        return self.base_url + path + (("?" + urlencode(list(query))) if query else "")

    def headers(self, *, user_id: str | None = None, json_body: bool = False) -> dict[str, str]:
        """Identity and content headers for one request."""
        headers = {"accept": "application/json", "user-agent": USER_AGENT}
        user = user_id if user_id is not None else self.user_id
        if user is not None:
            headers["x-user-id"] = user
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key
        if json_body:
            headers["content-type"] = "application/json"
        return headers

    def _json(self, method: str, path: str, body: Any, **kw: Any) -> Request:
        return Request(
            method,
            self.url(path),
            self.headers(json_body=True, **kw),
            _encoder.encode(body),
            self.timeout,
        )

    @staticmethod
    def job_path(job_id: str) -> str:
        """`/v1/jobs/{id}` with the id escaped (an id is data, never a path)."""
        if not job_id:
            raise ValueError("job_id must not be empty")
        return "/v1/jobs/" + quote(job_id, safe="")

    # ---- routes -----------------------------------------------------------------

    def submit(
        self,
        *,
        role: str | None = None,
        user_id: str | None = None,
        target_language: str | None = None,
        scenario: Scenario | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        video_url: str | None = None,
        asset_id: str | None = None,
        callback_url: str | None = None,
        callback_id: str | None = None,
    ) -> Request:
        """POST /v1/jobs. Absent fields take the server's defaults."""
        if video_url is not None and asset_id is not None:
            raise ValueError("a job has one video: give video_url or asset_id, not both")
        body: dict[str, Any] = {}
        if role is not None:
            body["role"] = str(role)
        if target_language is not None:
            body["target_language"] = target_language
        if scenario is not None:
            body["scenario"] = scenario
        if video_url is not None:
            body["video"] = {"type": "url", "url": video_url}
        if asset_id is not None:
            body["video"] = {"type": "asset_id", "asset_id": asset_id}
        if callback_url is not None:
            body["callback_url"] = callback_url
        if callback_id is not None:
            body["callback_id"] = callback_id
        headers = self.headers(user_id=user_id, json_body=True)
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        return Request("POST", self.url("/v1/jobs"), headers, _encoder.encode(body), self.timeout)

    def upload(self, path: Path, *, user_id: str | None = None) -> Request:
        """POST /v1/assets with the file as the raw body (streamed from disk by the transport);
        no total timeout: a large video takes as long as the network needs."""
        headers = self.headers(user_id=user_id)
        headers["content-type"] = "application/octet-stream"
        return Request("POST", self.url("/v1/assets"), headers, path, None)

    def get_job(
        self,
        job_id: str,
        *,
        etag: str | None = None,
        wait: float | None = None,
        until_terminal: bool = False,
    ) -> Request:
        """GET /v1/jobs/{id}; `etag` makes it conditional, `wait` makes it a long poll (that
        `until_terminal` ends only on the outcome, not on progress)."""
        headers = self.headers()
        if etag is not None:
            headers["if-none-match"] = etag
        query = [("wait", f"{wait:g}")] if wait is not None else []
        if wait is not None and until_terminal:
            query.append(("until", "terminal"))
        # A long poll may legitimately take `wait` seconds before any byte comes back.
        timeout = self.timeout + (wait or 0.0)
        return Request("GET", self.url(self.job_path(job_id), query), headers, None, timeout)

    def list_jobs(
        self,
        *,
        status: str | None = None,
        role: str | None = None,
        user: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Request:
        """GET /v1/jobs: one page."""
        query = [
            (name, str(value))
            for name, value in (
                ("status", status),
                ("role", role),
                ("user", user),
                ("limit", limit),
                ("cursor", cursor),
            )
            if value is not None
        ]
        return Request("GET", self.url("/v1/jobs", query), self.headers(), None, self.timeout)

    def cancel(self, job_id: str, *, reason: str | None = None) -> Request:
        """POST /v1/jobs/{id}/cancel (admin)."""
        body = {"reason": reason} if reason is not None else {}
        return self._json("POST", self.job_path(job_id) + "/cancel", body)

    def retry(self, job_id: str) -> Request:
        """POST /v1/jobs/{id}/retry (admin)."""
        return self._json("POST", self.job_path(job_id) + "/retry", {})

    def process(self, count: int) -> Request:
        """POST /v1/process (admin)."""
        return self._json("POST", "/v1/process", {"count": count})

    def cleanup(self, older_than_s: float | None) -> Request:
        """POST /v1/cleanup (admin)."""
        body = {"older_than_s": older_than_s} if older_than_s is not None else {}
        return self._json("POST", "/v1/cleanup", body)

    def config(self) -> Request:
        """GET /v1/config."""
        return Request("GET", self.url("/v1/config"), self.headers(), None, self.timeout)

    def update_config(self, changes: Mapping[str, Any]) -> Request:
        """PATCH /v1/config (admin)."""
        return self._json("PATCH", "/v1/config", dict(changes))

    # ---- webhooks and the clock ---------------------------------------------------------

    @staticmethod
    def webhook_path(webhook_id: str, *rest: str) -> str:
        """`/v1/webhooks/{id}[/...]` with every id escaped."""
        if not webhook_id or not all(rest):
            raise ValueError("ids must not be empty")
        return "/v1/webhooks/" + "/".join(quote(part, safe="") for part in (webhook_id, *rest))

    def _get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> Request:
        return Request("GET", self.url(path, query), self.headers(), None, self.timeout)

    def create_webhook(
        self, url: str, events: Sequence[str] | None, description: str | None
    ) -> Request:
        """POST /v1/webhooks."""
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        if description is not None:
            body["description"] = description
        return self._json("POST", "/v1/webhooks", body)

    def list_webhooks(self) -> Request:
        """GET /v1/webhooks."""
        return self._get("/v1/webhooks")

    def get_webhook(self, webhook_id: str) -> Request:
        """GET /v1/webhooks/{id}."""
        return self._get(self.webhook_path(webhook_id))

    def update_webhook(self, webhook_id: str, fields: Mapping[str, Any]) -> Request:
        """PATCH /v1/webhooks/{id}."""
        return self._json("PATCH", self.webhook_path(webhook_id), dict(fields))

    def delete_webhook(self, webhook_id: str) -> Request:
        """DELETE /v1/webhooks/{id}."""
        path = self.url(self.webhook_path(webhook_id))
        return Request("DELETE", path, self.headers(), None, self.timeout)

    def rotate_webhook_secret(self, webhook_id: str) -> Request:
        """POST /v1/webhooks/{id}/rotate-secret."""
        return self._json("POST", self.webhook_path(webhook_id, "rotate-secret"), {})

    def webhook_deliveries(self, webhook_id: str, limit: int | None, status: str | None) -> Request:
        """GET /v1/webhooks/{id}/deliveries."""
        query = [(k, str(v)) for k, v in (("limit", limit), ("status", status)) if v is not None]
        return self._get(self.webhook_path(webhook_id, "deliveries"), query)

    def redeliver(self, webhook_id: str, delivery_id: str) -> Request:
        """POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver."""
        path = self.webhook_path(webhook_id, "deliveries", delivery_id, "redeliver")
        return self._json("POST", path, {})

    def replay_webhook(self, webhook_id: str, since: Any) -> Request:
        """POST /v1/webhooks/{id}/replay {since}."""
        return self._json("POST", self.webhook_path(webhook_id, "replay"), {"since": since})

    def clock(self) -> Request:
        """GET /v1/clock."""
        return self._get("/v1/clock")

    def advance_clock(self, seconds: float) -> Request:
        """POST /v1/clock/advance (admin; a server with CLOCK=virtual)."""
        return self._json("POST", "/v1/clock/advance", {"seconds": seconds})

    # ---- API keys (admin) --------------------------------------------------------

    def create_key(self, user_id: str, plan: str, name: str | None = None) -> Request:
        """POST /v1/keys (admin)."""
        body = {"user_id": user_id, "plan": plan}
        if name is not None:
            body["name"] = name
        return self._json("POST", "/v1/keys", body)

    def list_keys(self) -> Request:
        """GET /v1/keys (admin)."""
        return Request("GET", self.url("/v1/keys"), self.headers(), None, self.timeout)

    def revoke_key(self, key_id: str) -> Request:
        """DELETE /v1/keys/{id} (admin)."""
        if not key_id:
            raise ValueError("key_id must not be empty")
        url = self.url("/v1/keys/" + quote(key_id, safe=""))
        return Request("DELETE", url, self.headers(), None, self.timeout)

    def ws_url(self) -> str:
        """The WebSocket endpoint: `/v1/ws` on the same host, ws:// or wss://."""
        parts = urlsplit(self.base_url + "/v1/ws")
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path, "", ""))

    def ws_headers(self) -> dict[str, str]:
        """Identity headers for the WebSocket upgrade."""
        headers = self.headers()
        headers.pop("accept", None)
        return headers


def error_from(response: Response, *, job_id: str | None = None) -> APIError:
    """The typed error for a non-2xx answer. A 404 on a job route becomes JobNotFound."""
    try:
        detail = msgspec.json.decode(response.content, type=ErrorBody).error
        code, message, details = detail.code, detail.message, detail.details
    except (msgspec.DecodeError, msgspec.ValidationError):
        # Not our error body (a proxy's HTML page, an empty 502): keep what there is.
        code = "http_" + str(response.status)
        message = response.content[:200].decode("utf-8", "replace") or "no body"
        details = {}
    status = response.status
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
        return RateLimited(status, code, message, details, retry_after=retry_after)
    if status in (401, 403):
        return Unauthorized(status, code, message, details)
    if status == 404 and job_id is not None:
        return JobNotFound(status, code, message or f"no job {job_id}", details)
    if status == 409:
        return Conflict(status, code, message, details)
    if status in (400, 413, 415, 422):
        return InvalidRequest(status, code, message, details)
    return APIError(status, code, message, details)


def decode(response: Response, type_: type[T], *, job_id: str | None = None) -> T:
    """The body of a 2xx answer as `type_`, else raise the typed error."""
    if not 200 <= response.status < 300:
        raise error_from(response, job_id=job_id)
    try:
        return msgspec.json.decode(response.content, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise APIError(
            response.status, "bad_response", f"cannot decode {type_.__name__}: {exc}"
        ) from exc
