import json

import pytest

from service.hub import SLOW_CONSUMER, Hub, Published, Wire
from service.models import EventType


def _event(pub: Published) -> bytes:
    return json.dumps({"seq": pub.seq, "type": pub.type, "job": pub.job_id}).encode()


def _snapshot(seq: int, job: bytes) -> bytes:
    return json.dumps({"snapshot": json.loads(job), "seq": seq}).encode()


def _reset(reason: str, seq: int) -> bytes:
    return json.dumps({"reset": reason, "seq": seq}).encode()


WIRE = Wire("test", _event, _snapshot, _reset)


def publish(hub: Hub, job: str, user: str = "u", type: EventType = EventType.PROGRESS) -> None:
    """A committed event gets the next seq from the store; here, one more than the last."""
    seq = hub.seq + 1
    hub.publish(Published(seq, type, "t", job, user, json.dumps({"id": job}).encode()))


def frames(sub: object) -> list[dict[str, object]]:
    queued = list(sub._frames)  # type: ignore[attr-defined]
    sub._frames.clear()  # type: ignore[attr-defined]
    return [json.loads(f) for f in queued]


def test_subscribe_gives_snapshot_then_live_events() -> None:
    hub = Hub(buffer_size=100, queue_limit=100)
    publish(hub, "a", type=EventType.CREATED)
    publish(hub, "b", type=EventType.CREATED)
    sub = hub.open(WIRE)
    assert hub.subscribe(sub, jobs=["a", "zzz"]) == ["zzz"]
    assert frames(sub) == [{"snapshot": {"id": "a"}, "seq": 2}]
    publish(hub, "b")
    publish(hub, "a")
    assert [f["seq"] for f in frames(sub)] == [4]


def test_resume_replays_exactly_the_missed_events_in_order() -> None:
    hub = Hub(buffer_size=100, queue_limit=100)
    for i in range(10):
        publish(hub, "a" if i % 2 else "b", user="u" if i % 2 else "v")
    sub = hub.open(WIRE)
    hub.subscribe(sub, user="u", since=4)
    assert [f["seq"] for f in frames(sub)] == [6, 8, 10]
    everything = hub.open(WIRE)
    hub.subscribe(everything, everything=True, since=7)
    assert [f["seq"] for f in frames(everything)] == [8, 9, 10]


@pytest.mark.parametrize(("since", "reason"), [(1, "since_too_old"), (99, "since_in_future")])
def test_gap_outside_the_buffer_resets_then_snapshots(since: int, reason: str) -> None:
    hub = Hub(buffer_size=3, queue_limit=100)
    for i in range(6):
        publish(hub, f"j{i}")
    sub = hub.open(WIRE)
    hub.subscribe(sub, jobs=["j5"], since=since)
    got = frames(sub)
    assert got[0] == {"reset": reason, "seq": 6}
    assert got[1:] == [{"snapshot": {"id": "j5"}, "seq": 6}]


def test_a_reset_on_a_socket_already_following_resends_all_it_follows() -> None:
    """A reset promises fresh snapshots: of everything the subscription follows, not only of
    what this subscribe added (a socket resuming a job it already follows got a bare reset)."""
    hub = Hub(buffer_size=3, queue_limit=100)
    for i in range(4):
        publish(hub, f"j{i}")
    sub = hub.open(WIRE)
    hub.subscribe(sub, jobs=["j2", "j3"])
    frames(sub)
    hub.subscribe(sub, jobs=["j3"], since=99)  # from the future: a reset
    got = frames(sub)
    assert got[0] == {"reset": "since_in_future", "seq": 4}
    assert sorted(got[1:], key=str) == [
        {"snapshot": {"id": "j2"}, "seq": 4},
        {"snapshot": {"id": "j3"}, "seq": 4},
    ]
    mine = hub.open(WIRE)
    hub.subscribe(mine, user="u")
    frames(mine)
    hub.subscribe(mine, jobs=["j0"], since=0)  # too old: all of the user's jobs again
    got = frames(mine)
    assert got[0] == {"reset": "since_too_old", "seq": 4}
    assert len(got[1:]) == 4


def test_oldest_event_still_buffered_is_a_valid_resume_point() -> None:
    hub = Hub(buffer_size=3, queue_limit=100)
    for _ in range(6):
        publish(hub, "a")
    sub = hub.open(WIRE)
    hub.subscribe(sub, jobs=["a"], since=3)  # 4, 5, 6 are buffered
    assert [f["seq"] for f in frames(sub)] == [4, 5, 6]


def test_a_subscriber_matching_twice_gets_each_event_once() -> None:
    hub = Hub(buffer_size=10, queue_limit=10)
    publish(hub, "a", user="u")
    sub = hub.open(WIRE)
    hub.subscribe(sub, jobs=["a"])
    hub.subscribe(sub, user="u")
    hub.subscribe(sub, everything=True)
    frames(sub)
    publish(hub, "a", user="u")
    assert len(frames(sub)) == 1


def test_slow_consumer_is_closed_and_others_keep_receiving() -> None:
    hub = Hub(buffer_size=1000, queue_limit=5)
    publish(hub, "a")
    slow, fast = hub.open(WIRE), hub.open(WIRE)
    closed: list[str] = []
    slow.on_close = closed.append
    hub.subscribe(slow, everything=True, since=1)
    hub.subscribe(fast, everything=True, since=1)
    delivered = 0
    for _ in range(20):
        publish(hub, "a")
        delivered += len(frames(fast))
    assert delivered == 20
    assert closed == [SLOW_CONSUMER] and slow.closed_reason == SLOW_CONSUMER
    assert slow not in hub.subscriptions and hub.slow_consumers == 1
    assert slow.pending == 0 and slow.pending_bytes == 0  # dropped: it would never read them


def test_event_frames_are_encoded_once_per_wire() -> None:
    calls: list[int] = []

    def counting(pub: Published) -> bytes:
        calls.append(pub.seq)
        return b"x"

    wire = Wire("count", counting, _snapshot, _reset)
    hub = Hub(buffer_size=10, queue_limit=10)
    publish(hub, "a")
    subs = [hub.open(wire) for _ in range(50)]
    for sub in subs:
        hub.subscribe(sub, everything=True, since=1)
    publish(hub, "a")
    assert calls == [2]
    assert all(sub.pending == 1 for sub in subs)


def test_deleted_job_is_forgotten_for_snapshots() -> None:
    hub = Hub(buffer_size=10, queue_limit=10)
    publish(hub, "a")
    publish(hub, "a", type=EventType.DELETED)
    assert not hub.knows("a")


def test_a_replay_larger_than_the_live_bound_still_succeeds() -> None:
    hub = Hub(buffer_size=100, queue_limit=5)
    for _ in range(30):
        publish(hub, "a")
    sub = hub.open(WIRE)
    hub.subscribe(sub, jobs=["a"], since=0)
    assert sub.closed_reason is None
    assert [f["seq"] for f in frames(sub)] == list(range(1, 31))
    publish(hub, "a")  # live delivery is bounded again
    assert sub.pending == 1


def test_live_pushes_are_bounded_in_bytes_too() -> None:
    hub = Hub(buffer_size=100, queue_limit=1_000)
    sub = hub.open(WIRE)
    sub.byte_limit, sub.burst_bytes = 1_000, 4_000
    assert sub.push(b"x" * 600) and sub.pending_bytes == 600
    assert not sub.push(b"y" * 401)  # 1,001 bytes: over, though far under 1,000 frames
    assert sub.closed_reason == SLOW_CONSUMER
    assert sub.pending == 0 and sub.pending_bytes == 0  # what it held is let go


async def test_reading_frees_the_byte_budget() -> None:
    sub = Hub(buffer_size=10, queue_limit=1_000).open(WIRE)
    sub.byte_limit = 1_000
    for _ in range(10):  # 10 x 900 bytes through a 1,000-byte queue: fine when read
        assert sub.push(b"z" * 900)
        assert await sub.get() == [b"z" * 900]
    assert sub.closed_reason is None and sub.pending_bytes == 0


def test_snapshots_and_replays_count_and_are_capped() -> None:
    hub = Hub(buffer_size=1_000, queue_limit=1_000)
    for i in range(50):
        job = b'{"id":"%d","pad":"%s"}' % (i, b"p" * 90)
        hub.publish(Published(hub.seq + 1, EventType.CREATED, "t", f"j{i}", "u", job))
    sub = hub.open(WIRE)
    sub.byte_limit, sub.burst_bytes = 1_000, 3_000
    hub.subscribe(sub, jobs=["j1", "j2"])  # a small snapshot may pass the live bound
    assert sub.closed_reason is None and 0 < sub.pending_bytes <= 3_000
    hub.subscribe(sub, user="u")  # 50 snapshots of ~130 bytes: over the burst cap
    assert sub.closed_reason == SLOW_CONSUMER and sub.pending_bytes == 0
    again = hub.open(WIRE)
    again.byte_limit, again.burst_bytes = 1_000, 2_000
    hub.subscribe(again, everything=True, since=0)  # a replay of 50 ~55-byte events: capped
    assert again.closed_reason == SLOW_CONSUMER
