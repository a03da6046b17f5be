"""ActiveMQ's scheduler management address in the core: BROWSE, REMOVE and REMOVEALL sent to
the topic ``ActiveMQ.Scheduler.Management``, on an injected clock (no sleeps), and the
journal records that make a removal durable."""

from __future__ import annotations

import pytest
from test_scheduler import START, Harness, JournalLikeStore, Sink

from dovecote.core.errors import InvalidRequest
from dovecote.core.message import Message, RoutingType
from dovecote.core.queue import Consumer
from dovecote.core.schedule_management import MANAGEMENT_ADDRESS
from dovecote.core.scheduler import JOB_ID, SCHEDULE_QUEUE


def manage(h: Harness, action: str, **properties: str) -> int:
    message = Message(
        h.router.new_message_id(),
        MANAGEMENT_ADDRESS,
        RoutingType.MULTICAST,
        b"",
        {"AMQ_SCHEDULER_ACTION": action, **properties},
    )
    return h.router.send(message)


def replies(h: Harness) -> Sink:
    sink = Sink()
    h.router.consume_queue("replies", Consumer("r", sink))
    return sink


def scheduled(h: Harness, hold_limit_bodies: int = 4) -> None:
    """Four messages due at START + 1000, 2000, 3000, 4000 (bodies d1..d4)."""
    for n in range(1, hold_limit_bodies + 1):
        h.send(b"d%d" % n, AMQ_SCHEDULED_DELAY=str(1000 * n), color="red")


@pytest.mark.parametrize("hold_limit", [10_000, 0])  # held in memory, or read back
def test_browse_sends_a_copy_of_each_scheduled_message_to_reply_to(hold_limit: int) -> None:
    h = Harness(hold_limit=hold_limit)
    scheduled(h)
    sink = replies(h)
    assert manage(h, "BROWSE", **{"reply-to": "queue://replies"}) == 4
    assert sink.bodies() == [b"d1", b"d2", b"d3", b"d4"]
    first = sink.messages[0]
    assert first.properties["AMQ_SCHEDULED_DELAY"] == "1000"
    assert first.properties["color"] == "red"
    assert first.properties["originalDestination"] == "queue://jobs"
    assert not any(k.startswith("_dovecote.") for k in first.properties)
    assert not first.persistent
    job_ids = [m.properties[JOB_ID] for m in sink.messages]
    assert len(set(job_ids)) == 4
    assert first.message_id != job_ids[0]  # a copy has an id of its own
    # Browsing takes nothing: all four still fire.
    assert h.at(START + 4000) == [b"d1", b"d2", b"d3", b"d4"]
    assert [m.properties[JOB_ID] for m in h.sink.messages] == job_ids


def test_browse_within_a_time_range_inclusive() -> None:
    h = Harness()
    scheduled(h)
    sink = replies(h)
    window = {"ACTION_START_TIME": str(START + 2000), "ACTION_END_TIME": str(START + 3000)}
    assert manage(h, "BROWSE", **{"reply-to": "queue://replies"}, **window) == 2
    assert sink.bodies() == [b"d2", b"d3"]
    manage(h, "BROWSE", **{"reply-to": "queue://replies"}, ACTION_START_TIME=str(START + 3500))
    assert sink.bodies() == [b"d2", b"d3", b"d4"]


def test_browse_to_a_topic_and_the_management_topic_is_never_routed() -> None:
    h = Harness()
    scheduled(h)
    on_topic, on_management = Sink(), Sink()
    h.router.subscribe_topic("browsed", Consumer("t", on_topic))
    h.router.subscribe_topic(MANAGEMENT_ADDRESS, Consumer("m", on_management))
    manage(h, "BROWSE", **{"reply-to": "topic://browsed"})
    assert on_topic.bodies() == [b"d1", b"d2", b"d3", b"d4"]
    assert on_management.messages == []


@pytest.mark.parametrize(
    ("action", "properties", "reason"),
    [
        ("BROWSE", {}, "needs a reply-to"),
        ("BROWSE", {"reply-to": "/queue/replies"}, "is not a destination the broker knows"),
        ("PURGE", {}, "must be BROWSE, REMOVE or REMOVEALL, not 'PURGE'"),
        ("REMOVE", {}, "REMOVE needs a scheduledJobId"),
        ("REMOVEALL", {"ACTION_START_TIME": "soon"}, "must be epoch milliseconds"),
        ("REMOVEALL", {"ACTION_END_TIME": "-1"}, "must not be negative"),
    ],
)
def test_bad_management_requests_are_refused_and_change_nothing(
    action: str, properties: dict[str, str], reason: str
) -> None:
    h = Harness()
    scheduled(h)
    with pytest.raises(InvalidRequest, match=reason):
        manage(h, action, **properties)
    assert h.at(START + 4000) == [b"d1", b"d2", b"d3", b"d4"]


def job_ids(h: Harness) -> list[str]:
    sink = replies(h)
    manage(h, "BROWSE", **{"reply-to": "queue://replies"})
    h.router.delete_queue("replies")
    return [m.properties[JOB_ID] for m in sink.messages]


@pytest.mark.parametrize("hold_limit", [10_000, 0])
def test_remove_takes_one_message_by_its_job_id(hold_limit: int) -> None:
    h = Harness(hold_limit=hold_limit)
    scheduled(h)
    ids = job_ids(h)
    h.store.calls.clear()
    assert manage(h, "REMOVE", scheduledJobId=ids[1]) == 1
    assert h.store.calls == [("ack", SCHEDULE_QUEUE, 2)]  # durable: its record acked
    assert len(h.router.scheduler) == 3
    assert h.at(START + 4000) == [b"d1", b"d3", b"d4"]
    assert h.store.records == {}


def test_remove_of_an_unknown_job_id_does_nothing() -> None:
    h = Harness()
    scheduled(h)
    h.store.calls.clear()
    assert manage(h, "REMOVE", scheduledJobId="ID:nobody-1") == 0
    assert h.store.calls == []
    assert h.at(START + 4000) == [b"d1", b"d2", b"d3", b"d4"]


def test_remove_stops_a_repeating_message_for_good() -> None:
    h = Harness()
    h.send(b"r", AMQ_SCHEDULED_DELAY="100", AMQ_SCHEDULED_PERIOD="100", AMQ_SCHEDULED_REPEAT="5")
    h.send(b"other", AMQ_SCHEDULED_DELAY="1000")
    assert h.at(START + 200) == [b"r", b"r"]
    job_id = h.sink.messages[0].properties[JOB_ID]
    assert job_ids(h)[0] == job_id  # the repeat's record (a new seq) has the same job id
    assert manage(h, "REMOVE", scheduledJobId=job_id) == 1
    assert h.at(START + 5000) == [b"r", b"r", b"other"]
    assert h.store.records == {}


def test_a_removed_message_leaves_next_due_and_the_timer_truthful() -> None:
    h = Harness()
    scheduled(h, 2)
    ids = job_ids(h)
    manage(h, "REMOVE", scheduledJobId=ids[0])
    assert h.router.scheduler.next_due() == START + 2000
    manage(h, "REMOVE", scheduledJobId=ids[1])
    assert h.router.scheduler.next_due() is None
    assert len(h.router.scheduler) == 0


def test_job_ids_are_unique_even_for_one_message_id() -> None:
    h = Harness()
    same = Message("ID:x-1", "jobs", RoutingType.ANYCAST, b"a", {"AMQ_SCHEDULED_DELAY": "10"})
    h.router.send(same)
    h.router.send(same)
    ids = job_ids(h)
    assert len(set(ids)) == 2
    manage(h, "REMOVE", scheduledJobId="ID:x-1")
    assert h.at(START + 10) == [b"a"]


def test_non_persistent_messages_are_removed_without_the_store() -> None:
    h = Harness()
    h.send(b"np", persistent=False, AMQ_SCHEDULED_DELAY="10")
    (job_id,) = job_ids(h)
    h.store.calls.clear()
    assert manage(h, "REMOVE", scheduledJobId=job_id) == 1
    assert h.store.calls == []
    assert h.at(START + 10) == []


@pytest.mark.parametrize("hold_limit", [10_000, 0])
def test_removeall_removes_every_message_in_one_atomic_group(hold_limit: int) -> None:
    h = Harness(hold_limit=hold_limit)
    scheduled(h)
    h.store.calls.clear()
    assert manage(h, "REMOVEALL") == 4
    assert h.store.calls == [
        ("begin",),
        *(("ack", SCHEDULE_QUEUE, seq) for seq in (1, 2, 3, 4)),
        ("end",),
    ]
    assert len(h.router.scheduler) == 0
    assert h.router.scheduler.next_due() is None
    assert h.at(START + 10_000) == []
    h.send(b"new", AMQ_SCHEDULED_DELAY="10")  # scheduling goes on afterwards
    assert h.at(START + 10_010) == [b"new"]


def test_removeall_within_a_time_range() -> None:
    h = Harness()
    scheduled(h)
    ids = job_ids(h)
    window = {"ACTION_START_TIME": str(START + 2000), "ACTION_END_TIME": str(START + 3000)}
    assert manage(h, "REMOVEALL", **window) == 2
    assert job_ids(h) == [ids[0], ids[3]]
    # The survivors are still removable by id; the removed ones are gone from the index.
    assert manage(h, "REMOVE", scheduledJobId=ids[1]) == 0
    assert manage(h, "REMOVE", scheduledJobId=ids[3]) == 1
    assert h.at(START + 5000) == [b"d1"]


def test_a_removal_survives_a_restart_from_the_records() -> None:
    first = Harness(hold_limit=0)
    scheduled(first)
    ids = job_ids(first)
    manage(first, "REMOVE", scheduledJobId=ids[0])
    manage(first, "REMOVEALL", ACTION_START_TIME=str(START + 4000))
    again = Harness(JournalLikeStore())
    for (queue, seq), message in sorted(first.store.records.items()):
        again.store.records[(queue, seq)] = message
        again.router.scheduler.restore(seq, message, paged=True)
    assert job_ids(again) == ids[1:3]  # and restored ones are in the index
    assert manage(again, "REMOVE", scheduledJobId=ids[1]) == 1
    assert again.at(START + 10_000) == [b"d3"]
