from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from service.models import iso_ms, iso_us, parse_iso


def reference(ts: float, spec: str) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=spec).replace("+00:00", "Z")


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_fast_formatting_matches_datetime_exactly(ts: float) -> None:
    assert iso_ms(ts) == reference(ts, "milliseconds")
    assert iso_us(ts) == reference(ts, "microseconds")


def test_edges_and_round_trip() -> None:
    for ts in (0.0, 0.9999996, 1_700_000_000.9999995, 1_800_000_000.123456):
        assert iso_us(ts) == reference(ts, "microseconds")
        assert abs(parse_iso(iso_us(ts)) - ts) < 1e-6
    assert iso_ms(1_700_000_000.5) == "2023-11-14T22:13:20.500Z"


@given(st.lists(st.floats(min_value=0, max_value=4e9, allow_nan=False), min_size=2, max_size=6))
def test_interleaved_timestamps_never_get_another_ones_text(stamps: list[float]) -> None:
    # each timestamp formatted is remembered for the next call: the next one must not reuse it
    for ts in stamps + stamps[::-1]:
        assert iso_us(ts) == reference(ts, "microseconds")
        assert iso_ms(ts) == reference(ts, "milliseconds")
