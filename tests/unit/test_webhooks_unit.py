"""Webhook building blocks: signatures (checked against the spec, not the code), ids,
Retry-After, private addresses, event filters, the payload."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook

from service.api.stream import SSE_WIRE
from service.errors import ValidationFailed
from service.hub import Published
from service.models import EventType
from service.webhooks import (
    _private,
    _retry_after,
    event_body,
    message_id,
    new_secret,
    parse_schedule,
    sign,
    validate_events,
)
from tests.webhook_support import verify


def test_signature_is_the_spec_hmac() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    header = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}')
    # the example from the Standard Webhooks spec's reference implementations
    assert header == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000"}
    headers["webhook-signature"] = sign(secret, "msg_1", 1700000000, '{"a":1}')
    assert verify(secret, headers, b'{"a":1}')
    assert not verify(secret, headers, b'{"a":2}')
    assert not verify(new_secret(), headers, b'{"a":1}')


def test_new_secrets_are_random_and_usable_by_the_library() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("whsec_")
    Webhook(a)  # decodes


def test_message_id_is_stable_per_endpoint_and_event() -> None:
    assert message_id("wh_a", 7) == message_id("wh_a", 7)
    assert message_id("wh_a", 7) != message_id("wh_a", 8)
    assert message_id("wh_a", 7) != message_id("wh_b", 7)
    assert message_id("wh_a", 7).startswith("msg_")


def test_retry_after() -> None:
    assert _retry_after("120", 0) == 120
    assert _retry_after(None, 0) is None
    assert _retry_after("soon", 0) is None
    assert _retry_after("99999999", 0) == 86_400  # capped at a day
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 60) == pytest.approx(60)


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("fe80::1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_private_addresses(address: str, private: bool) -> None:
    assert _private(address) is private


def test_event_filter() -> None:
    assert validate_events(None) == ["job.completed", "job.permanently_failed", "job.cancelled"]
    assert validate_events(["*"]) == ["*"]
    assert validate_events(["job.created", "job.created"]) == ["job.created"]
    for bad in (["job.exploded"], [], ["JOB.CREATED"]):
        with pytest.raises(ValidationFailed):
            validate_events(bad)


def test_body_is_the_sse_event_data() -> None:
    pub = Published(42, EventType.COMPLETED, "2026-11-26T06:00:01.123456Z", "j", "u", b'{"id":"j"}')
    sse = pub.frame(SSE_WIRE.event).decode()
    data = next(line for line in sse.splitlines() if line.startswith("data: "))[6:]
    assert event_body(pub).decode() == data
    assert event_body(pub) == (
        b'{"seq":42,"type":"job.completed","at":"2026-11-26T06:00:01.123456Z","job":{"id":"j"}}'
    )


def test_schedule_parsing() -> None:
    assert parse_schedule("0,5,300") == [0, 5, 300]
    with pytest.raises(ValueError):
        parse_schedule("")
