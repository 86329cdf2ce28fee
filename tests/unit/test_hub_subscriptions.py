"""The broker's resume rules and the hub's subscription bookkeeping: where a resume is possible
(the edges of the buffer, gaps in seqs, an empty buffer), that unsubscribing stops delivery
and leaves nothing behind, how subscriptions end (close_all, slow consumers counted once),
the byte bound at its edge, and a reader that waits."""

import asyncio
import json

from service.broker import SINCE_IN_FUTURE, SINCE_TOO_OLD, Broker
from service.hub import GOING_AWAY, SLOW_CONSUMER, Hub, Published, Wire
from service.models import EventType


def pub(seq: int, job: str = "a", user: str = "u") -> Published:
    return Published(seq, EventType.PROGRESS, "t", job, user, b'{"id":"%s"}' % job.encode())


def _event(p: Published) -> bytes:
    return json.dumps({"seq": p.seq, "job": p.job_id}).encode()


def _snapshot(seq: int, job: bytes) -> bytes:
    return json.dumps({"snapshot": json.loads(job), "seq": seq}).encode()


def _reset(reason: str, seq: int) -> bytes:
    return json.dumps({"reset": reason, "seq": seq}).encode()


WIRE = Wire("ws", _event, _snapshot, _reset)


def seqs(events: object) -> list[int]:
    assert isinstance(events, list)
    return [p.seq for p in events]


def drain(sub: object) -> list[dict[str, object]]:
    queued = list(sub._frames)  # type: ignore[attr-defined]
    sub._frames.clear()  # type: ignore[attr-defined]
    sub._bytes = 0  # type: ignore[attr-defined]
    return [json.loads(f) for f in queued]


# ---- broker --------------------------------------------------------------------------


def test_an_empty_buffer_resumes_only_from_the_current_seq() -> None:
    broker = Broker(10)
    assert broker.since(0) == []  # nothing happened, nothing missed
    broker.advance(5)  # seqs used by entries that are not job events
    assert broker.seq == 5
    assert broker.since(5) == []
    assert broker.since(4) == SINCE_TOO_OLD  # seq 5 can't be replayed from an empty buffer
    assert broker.since(6) == SINCE_IN_FUTURE


def test_the_buffer_edge_is_the_oldest_resume_point() -> None:
    broker = Broker(3)
    for seq in range(1, 7):
        broker.append(pub(seq))
    assert seqs(broker.recent()) == [4, 5, 6]
    assert seqs(broker.since(3)) == [4, 5, 6]
    assert broker.since(2) == SINCE_TOO_OLD  # seq 3 was missed and is gone
    assert seqs(broker.since(5)) == [6]
    assert broker.since(6) == []
    assert broker.since(7) == SINCE_IN_FUTURE


def test_gaps_in_seqs_are_skipped_by_value() -> None:
    broker = Broker(10)
    for seq in (3, 4, 8, 9):
        broker.append(pub(seq))
    assert seqs(broker.since(2)) == [3, 4, 8, 9]
    assert seqs(broker.since(4)) == [8, 9]
    assert seqs(broker.since(6)) == [8, 9]  # 5..7 were not job events
    assert broker.since(1) == SINCE_TOO_OLD


def test_seq_only_moves_forward() -> None:
    broker = Broker(10)
    broker.append(pub(4))
    broker.append(pub(2))  # older: already history, not appended
    broker.append(pub(4))  # the same again (a replay on load): once only
    broker.advance(3)
    assert broker.seq == 4 and seqs(broker.recent()) == [4]
    broker.advance(7)
    assert broker.seq == 7
    broker.append(pub(8))
    assert seqs(broker.recent()) == [4, 8]


# ---- hub counters and resets ---------------------------------------------------------


def test_each_reset_and_replay_is_counted_once() -> None:
    hub = Hub(buffer_size=2, queue_limit=100)
    for seq in range(1, 6):
        hub.publish(pub(seq))
    sub = hub.open(Wire("w", _event, _snapshot, _reset))
    hub.subscribe(sub, jobs=["a"], since=0)
    assert drain(sub) == [{"reset": SINCE_TOO_OLD, "seq": 5}, {"snapshot": {"id": "a"}, "seq": 5}]
    assert hub.resets == 1
    for _ in range(3):
        hub.subscribe(hub.open(WIRE), everything=True, since=1)  # too old
    hub.subscribe(hub.open(WIRE), everything=True, since=99)  # in the future
    hub.subscribe(hub.open(WIRE), everything=True, since=4)
    hub.subscribe(hub.open(WIRE), everything=True, since=5)
    assert hub.resets == 5 and hub.replays == 2 and hub.published == 5


# ---- unsubscribing -------------------------------------------------------------------


def test_unsubscribe_stops_each_filter_and_leaves_no_index_behind() -> None:
    hub = Hub(buffer_size=10, queue_limit=100)
    hub.publish(pub(1, "a", "u"))
    hub.publish(pub(2, "b", "v"))
    by_job, by_user, everything = hub.open(WIRE), hub.open(WIRE), hub.open(WIRE)
    hub.subscribe(by_job, jobs=["a", "b"])
    hub.subscribe(by_user, user="v")
    hub.subscribe(everything, everything=True)
    for sub in (by_job, by_user, everything):
        drain(sub)

    hub.unsubscribe(by_job, jobs=["a"])
    hub.unsubscribe(by_user, user="v")
    hub.unsubscribe(everything, everything=True)
    hub.publish(pub(3, "a", "u"))
    hub.publish(pub(4, "b", "v"))
    assert [f["seq"] for f in drain(by_job)] == [4]  # still subscribed to b
    assert drain(by_user) == [] and drain(everything) == []
    assert by_job.jobs == {"b"} and by_user.users == set() and not everything.everything

    both = hub.open(WIRE)
    hub.subscribe(both, jobs=["a"], user="u", everything=True)
    hub.unsubscribe(both, jobs=["a"])  # only what is named goes
    hub.unsubscribe(both, user="u")
    hub.publish(pub(5, "c", "w"))
    assert [f["seq"] for f in drain(both)][-1:] == [5] and both.everything
    hub.unsubscribe_all(both)
    drain(by_job)
    hub.unsubscribe(by_job, jobs=["b"])
    hub.unsubscribe(by_job, jobs=["never-subscribed"], user="nobody")  # harmless
    assert hub._by_job == {} and hub._by_user == {} and hub._everything == set()
    assert hub.subscriptions == {by_job, by_user, everything}  # still open, just idle


def test_unsubscribe_all_drops_every_filter() -> None:
    hub = Hub(buffer_size=10, queue_limit=100)
    hub.publish(pub(1, "a", "u"))
    sub, other = hub.open(WIRE), hub.open(WIRE)
    hub.subscribe(sub, jobs=["a"], user="u", everything=True)
    hub.subscribe(sub, user="w")
    hub.subscribe(other, jobs=["a"])
    drain(sub), drain(other)
    hub.unsubscribe_all(sub)
    hub.publish(pub(2, "a", "u"))
    hub.publish(pub(3, "b", "w"))
    assert drain(sub) == []
    assert [f["seq"] for f in drain(other)] == [2]
    assert sub.jobs == set() and sub.users == set() and not sub.everything
    assert sub not in hub.subscriptions and hub.subscriptions == {other}
    assert hub._by_user == {} and hub._everything == set() and set(hub._by_job) == {"a"}
    assert hub.slow_consumers == 0  # it was not slow


def test_a_slow_consumer_is_counted_once_however_often_it_is_dropped() -> None:
    hub = Hub(buffer_size=10, queue_limit=1)
    hub.publish(pub(1))
    sub = hub.open(WIRE)
    hub.subscribe(sub, everything=True)  # the snapshot fills its one slot
    hub.publish(pub(2))  # over: closed as slow and dropped
    assert sub.closed_reason == SLOW_CONSUMER and hub.slow_consumers == 1
    hub.unsubscribe_all(sub)  # the transport's own cleanup runs after
    assert hub.slow_consumers == 1
    quiet = hub.open(WIRE)
    quiet.close(GOING_AWAY)
    hub.unsubscribe_all(quiet)
    assert hub.slow_consumers == 1
    another = hub.open(WIRE)
    hub.subscribe(another, jobs=["a"])
    hub.publish(pub(3))
    assert another.closed_reason == SLOW_CONSUMER and hub.slow_consumers == 2


def test_close_all_ends_every_subscription_with_the_reason() -> None:
    hub = Hub(buffer_size=10, queue_limit=100)
    ws, sse = Wire("ws", _event, _snapshot, _reset), Wire("sse", _event, _snapshot, _reset)
    subs = [hub.open(ws), hub.open(sse), hub.open(ws)]
    closed: list[str] = []
    for sub in subs:
        sub.on_close = closed.append
        hub.subscribe(sub, everything=True)
    assert hub.count("ws") == 2 and hub.count("sse") == 1 and hub.count("poll") == 0
    hub.close_all(GOING_AWAY)
    assert closed == [GOING_AWAY] * 3
    assert all(sub.closed_reason == GOING_AWAY for sub in subs)
    assert hub.subscriptions == set() and hub.count("ws") == 0
    hub.publish(pub(1))
    assert all(sub.pending == 0 for sub in subs)
    assert hub.slow_consumers == 0


# ---- bounds and reading --------------------------------------------------------------


def test_the_burst_cap_admits_exactly_its_size() -> None:
    sub = Hub(buffer_size=10, queue_limit=100).open(WIRE)
    sub.burst_bytes = 1_000
    sub.push_unbounded(b"a" * 600)
    sub.push_unbounded(b"b" * 400)  # 1,000 in all: at the cap, not over it
    assert sub.closed_reason is None and sub.pending_bytes == 1_000 and sub.pending == 2
    sub.push_unbounded(b"c")
    assert sub.closed_reason == SLOW_CONSUMER and sub.pending_bytes == 0


def test_a_large_frame_alone_counts_against_the_cap() -> None:
    sub = Hub(buffer_size=10, queue_limit=100).open(WIRE)
    sub.burst_bytes = 1_000
    sub.push_unbounded(b"x" * 300)
    sub.push_unbounded(b"y" * 900)  # 1,200 queued would pass the cap
    assert sub.closed_reason == SLOW_CONSUMER


def test_a_closed_subscription_takes_nothing_more() -> None:
    sub = Hub(buffer_size=10, queue_limit=100).open(WIRE)
    sub.close(GOING_AWAY)
    assert not sub.push(b"x")
    sub.push_unbounded(b"y")
    assert sub.pending == 0 and sub.closed_reason == GOING_AWAY
    sub.close(SLOW_CONSUMER)  # the first reason stands
    assert sub.closed_reason == GOING_AWAY


async def test_a_waiting_reader_wakes_for_a_frame_and_for_the_close() -> None:
    sub = Hub(buffer_size=10, queue_limit=100).open(WIRE)
    reader = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not reader.done()  # nothing queued: it waits
    sub.push(b"one")
    sub.push(b"two")
    assert await asyncio.wait_for(reader, 5) == [b"one", b"two"]
    assert sub.pending == 0 and sub.pending_bytes == 0
    assert sub.push(b"three")  # queued for the next read, whoever waited before
    assert await sub.get() == [b"three"]
    reader = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close(GOING_AWAY)
    assert await asyncio.wait_for(reader, 5) == []  # closed: the writer stops
    assert await asyncio.wait_for(sub.get(), 5) == []
    # a frame queued before the close is still read: it was not a slow consumer
    other = Hub(buffer_size=10, queue_limit=100).open(WIRE)
    other.push(b"last")
    other.close(GOING_AWAY)
    assert await other.get() == [b"last"]
    assert await asyncio.wait_for(other.get(), 5) == []


def test_live_events_reach_every_kind_of_filter_once() -> None:
    hub = Hub(buffer_size=10, queue_limit=10)
    hub.publish(pub(1, "a", "u"))
    by_user, all_three = hub.open(WIRE), hub.open(WIRE)
    hub.subscribe(by_user, user="u")
    hub.subscribe(all_three, jobs=["a"], user="u", everything=True)
    drain(by_user), drain(all_three)
    for seq in (2, 3):
        hub.publish(pub(seq, "a", "u"))
    assert [f["seq"] for f in drain(by_user)] == [2, 3]
    assert [f["seq"] for f in drain(all_three)] == [2, 3]  # once each, and it stays open
    assert all_three.closed_reason is None and all_three in hub.subscriptions


def test_subscribing_again_adds_only_what_is_new() -> None:
    hub = Hub(buffer_size=10, queue_limit=100)
    hub.publish(pub(1, "a", "u"))
    hub.publish(pub(2, "b", "u"))
    sub = hub.open(WIRE)
    assert hub.subscribe(sub, jobs=["zzz", "a", "a"]) == ["zzz"]  # unknown ids don't stop it
    assert [f["snapshot"] for f in drain(sub)] == [{"id": "a"}]
    assert hub.subscribe(sub, jobs=["a", "b"]) == []
    assert [f["snapshot"] for f in drain(sub)] == [{"id": "b"}]
    hub.subscribe(sub, user="u")
    assert len(drain(sub)) == 2
    hub.subscribe(sub, user="u")  # already: no second round of snapshots
    assert drain(sub) == []


def test_a_deleted_job_never_seen_is_fine() -> None:
    hub = Hub(buffer_size=10, queue_limit=10)
    hub.publish(Published(1, EventType.DELETED, "t", "ghost", "u", b"{}"))
    assert not hub.knows("ghost") and hub.seq == 1


def test_open_takes_its_own_limit() -> None:
    hub = Hub(buffer_size=10, queue_limit=100)
    sub = hub.open(WIRE, limit=2)
    assert sub.push(b"1") and sub.push(b"2") and not sub.push(b"3")
    assert hub.open(WIRE).limit == 100


def test_the_live_byte_bound_admits_exactly_its_size() -> None:
    sub = Hub(buffer_size=10, queue_limit=100).open(WIRE)
    sub.byte_limit = 1_000
    assert sub.push(b"a" * 300) and sub.push(b"b" * 300) and sub.push(b"c" * 400)
    assert sub.pending_bytes == 1_000 and sub.closed_reason is None
    assert not sub.push(b"d")
