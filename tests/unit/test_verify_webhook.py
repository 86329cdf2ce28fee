"""dubsim.verify_webhook against the Standard Webhooks specification's own test vectors.

Vectors copied from standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py
(the reference implementation's tests): secret, id, timestamp, body and expected signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from client import WebhookVerificationError, verify_webhook
from client._webhooks import generate_secret, sign_webhook

# --- origin: standard-webhooks/standard-webhooks libraries/python/tests/test_webhooks.py ---
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = '{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
WRONG_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="  # test_invalid_signature
OTHER_SIGNATURES = [  # test_multi_sig_payload_is_valid
    "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
    "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
]
# --- end of copied vectors ---

HEADERS = {
    "webhook-id": MSG_ID,
    "webhook-timestamp": str(TIMESTAMP),
    "webhook-signature": SIGNATURE,
}


def test_the_specification_vector_verifies() -> None:
    assert verify_webhook(BODY, HEADERS, SECRET, now=TIMESTAMP) == {"test": 2432232314}
    assert verify_webhook(BODY.encode(), HEADERS, SECRET, now=TIMESTAMP + 299) == {
        "test": 2432232314
    }


def test_header_names_ignore_case() -> None:
    headers = {
        "Webhook-Id": MSG_ID,
        "WEBHOOK-TIMESTAMP": str(TIMESTAMP),
        "Webhook-Signature": SIGNATURE,
    }
    assert verify_webhook(BODY, headers, SECRET, now=TIMESTAMP)["test"] == 2432232314


def test_signing_reproduces_the_specification_vector() -> None:
    assert sign_webhook(BODY, SECRET, MSG_ID, TIMESTAMP) == HEADERS


def test_one_matching_signature_among_several_is_enough() -> None:
    headers = {**HEADERS, "webhook-signature": " ".join([*OTHER_SIGNATURES, SIGNATURE])}
    assert verify_webhook(BODY, headers, SECRET, now=TIMESTAMP)["test"] == 2432232314


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-signature": WRONG_SIGNATURE},
        {"webhook-signature": " ".join(OTHER_SIGNATURES)},
        {"webhook-signature": "v2," + SIGNATURE[3:]},  # right bytes, unknown version
        {"webhook-signature": "garbage"},
        {"webhook-id": "msg_other"},
        {"webhook-timestamp": str(TIMESTAMP + 1)},
        {"webhook-timestamp": "hello"},
        {"webhook-id": ""},
    ],
)
def test_anything_changed_is_refused(change: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY, {**HEADERS, **change}, SECRET, now=TIMESTAMP)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(missing: str) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != missing}
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(BODY, headers, SECRET, now=TIMESTAMP)


def test_a_changed_body_is_refused() -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook('{"test": 2432232315}', HEADERS, SECRET, now=TIMESTAMP)


def test_the_tolerance_window_both_ways() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(BODY, HEADERS, SECRET, now=TIMESTAMP + 301)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify_webhook(BODY, HEADERS, SECRET, now=TIMESTAMP - 301)
    # a wider tolerance accepts what the default refuses
    assert verify_webhook(BODY, HEADERS, SECRET, now=TIMESTAMP + 3600, tolerance_s=3600)
    # and the default reads the wall clock: the 2021 vector is far too old today
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(BODY, HEADERS, SECRET)


def test_a_wrong_secret_is_refused_and_a_malformed_one_is_a_value_error() -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY, HEADERS, generate_secret(), now=TIMESTAMP)
    for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_***"]:
        with pytest.raises(ValueError):
            verify_webhook(BODY, HEADERS, bad, now=TIMESTAMP)


def test_signatures_agree_with_an_independent_hmac() -> None:
    secret = generate_secret()
    body = b'{"type": "job.completed", "seq": 7}'
    headers = sign_webhook(body, secret, "evt_1", 1_900_000_000)
    key = base64.b64decode(secret[6:])
    mac = hmac.new(key, b"evt_1.1900000000." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    assert verify_webhook(body, headers, secret, now=1_900_000_000)["seq"] == 7


def test_a_body_that_is_not_a_json_object_is_refused() -> None:
    secret = generate_secret()
    for body in [b"[1, 2]", b"not json", b"\xff\xfe"]:
        headers = sign_webhook(body.decode("latin-1"), secret, "evt_1", TIMESTAMP)
        with pytest.raises(WebhookVerificationError):
            verify_webhook(body, headers, secret, now=TIMESTAMP)
