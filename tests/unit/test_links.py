"""Signed artifact links: valid until they expire, for exactly the job and artifact signed."""

import pytest

from service.links import Links

NOW = 1_800_000_000


def parts(path: str) -> tuple[str, str, str]:
    """(artifact, expires, sig) of a signed path."""
    route, query = path.split("?")
    fields = dict(item.split("=") for item in query.split("&"))
    return route.rsplit("/", 1)[1], fields["expires"], fields["sig"]


def test_a_link_is_valid_until_it_expires_and_only_for_what_it_names() -> None:
    links = Links("an-admin-token-of-some-length")
    path = links.path("job1", "result", NOW + 60)
    assert path.startswith("/v1/jobs/job1/result?expires=1800000060&sig=")
    artifact, expires, sig = parts(path)
    assert artifact == "result"
    assert links.valid("job1", "result", expires, sig, NOW)
    assert links.valid("job1", "result", expires, sig, NOW + 60)
    assert not links.valid("job1", "result", expires, sig, NOW + 61)  # expired
    assert not links.valid("job2", "result", expires, sig, NOW)  # another job
    assert not links.valid("job1", "captions.vtt", expires, sig, NOW)  # another artifact
    assert not links.valid("job1", "result", str(NOW + 3600), sig, NOW)  # a later expiry
    assert not links.valid("job1", "result", expires, sig[:-1] + "0", NOW)
    assert not links.valid("job1", "result", "²", sig, NOW)  # not ASCII digits: refused, no crash
    assert not links.valid("job1", "result", expires, "é" * 64, NOW)


def test_links_die_with_a_token_change_and_unknown_artifacts_are_refused() -> None:
    path = Links("an-admin-token-of-some-length").path("job1", "captions.srt", NOW + 60)
    _, expires, sig = parts(path)
    assert not Links("another-admin-token-entirely").valid(
        "job1", "captions.srt", expires, sig, NOW
    )
    with pytest.raises(ValueError):
        Links("an-admin-token-of-some-length").path("job1", "../secret", NOW)
