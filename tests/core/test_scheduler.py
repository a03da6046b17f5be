"""Scheduled delivery in the core: cron parsing, due times on an injected clock (no sleeps),
repeats, paging of held messages, the store records, and recovery."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dovecote.core.cron import parse_cron
from dovecote.core.errors import InvalidRequest, StoreUnavailable
from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.queue import Consumer
from dovecote.core.router import Router
from dovecote.core.scheduler import FIRE_SLICE, JOB_ID, SCHEDULE_QUEUE, schedule_of
from dovecote.store.memory import MemoryStore
from failing_acks import FailFirstScheduledAck
from fake_clock import FakeClock


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO time in UTC."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


class Sink:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.messages.append(entry.message)

    def bodies(self) -> list[bytes]:
        return [m.body for m in self.messages]


class JournalLikeStore(MemoryStore):
    """Keeps scheduled records (so load_message works) and says which are 'on disk'."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], Message] = {}
        self.calls: list[tuple[object, ...]] = []
        self.written = True  # every record counts as on disk
        self.readable = True

    def record_queue(self, name: str, address: str, filter_: str | None) -> None:
        self.calls.append(("queue", name))

    def record_message(self, queue: str, seq: int, message: Message) -> None:
        self.records[(queue, seq)] = message
        self.calls.append(("message", queue, seq))

    def record_ack(self, queue: str, seq: int) -> None:
        self.records.pop((queue, seq), None)
        self.calls.append(("ack", queue, seq))

    def begin_atomic(self) -> None:
        self.calls.append(("begin",))

    def end_atomic(self) -> None:
        self.calls.append(("end",))

    def is_on_disk(self, queue: str, seq: int) -> bool:
        return self.written and (queue, seq) in self.records

    def load_message(self, queue: str, seq: int) -> Message:
        if not self.readable:
            raise StoreUnavailable("disk gone")
        return self.records[(queue, seq)]


START = ms("2030-01-01T10:00:00")


class Wakeup:
    """The Wakeup port, recording each time it is asked for."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def wake_at(self, due_ms: int) -> None:
        self.asked.append(due_ms)


class Harness:
    def __init__(self, store: JournalLikeStore | None = None, hold_limit: int = 10_000) -> None:
        self.clock = FakeClock(START)
        self.store = store or JournalLikeStore()
        self.router = Router(self.store, self.clock, schedule_hold_limit=hold_limit)
        self.sink = Sink()
        self.wakeup = Wakeup()
        self.woken = self.wakeup.asked
        self.router.timers.set_wakeup(self.wakeup)
        self.router.consume_queue("jobs", Consumer("c", self.sink))

    def send(self, body: bytes, *, persistent: bool = True, **properties: str) -> int:
        message = Message(
            self.router.new_message_id(),
            "jobs",
            RoutingType.ANYCAST,
            body,
            properties,
            persistent=persistent,
        )
        return self.router.send(message)

    def at(self, when: int) -> list[bytes]:
        """Move the clock to ``when`` and run the due timers as the server's driver does
        (again while a run leaves one due); the bodies delivered so far."""
        self.clock.now = when
        while self.router.timers.run_due():
            pass
        return self.sink.bodies()


# --- cron -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", "2030-01-01T10:00:00", "2030-01-01T10:01:00"),
        ("* * * * *", "2030-01-01T10:00:59.999", "2030-01-01T10:01:00"),
        ("0 * * * *", "2030-01-01T10:00:00", "2030-01-01T11:00:00"),
        ("*/15 * * * *", "2030-01-01T10:16:00", "2030-01-01T10:30:00"),
        ("5-10/5 3 * * *", "2030-01-01T03:05:00", "2030-01-01T03:10:00"),
        ("30 2 1,15 * *", "2030-01-02T00:00:00", "2030-01-15T02:30:00"),
        ("0 0 * * 0", "2030-01-01T00:00:00", "2030-01-06T00:00:00"),  # Sunday
        ("0 0 * * 7", "2030-01-01T00:00:00", "2030-01-06T00:00:00"),  # 7 is Sunday too
        ("0 0 13 * 5", "2030-01-01T00:00:00", "2030-01-04T00:00:00"),  # Friday OR the 13th
        ("0 12 29 2 *", "2030-03-01T00:00:00", "2032-02-29T12:00:00"),  # leap day
        ("59 23 31 12 *", "2030-12-31T23:59:00", "2031-12-31T23:59:00"),
    ],
)
def test_cron_next_after(expression: str, after: str, expected: str) -> None:
    assert parse_cron(expression).next_after(ms(after)) == ms(expected)


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("* * * *", "must have 5 fields"),
        ("* * * * * *", "must have 5 fields"),
        ("60 * * * *", "minute '60' is outside 0-59"),
        ("* 24 * * *", "hour '24' is outside 0-23"),
        ("* * 0 * *", "day of month '0' is outside 1-31"),
        ("* * * 13 *", "month '13' is outside 1-12"),
        ("* * * * 8", "day of week '8' is outside 0-7"),
        ("5-1 * * * *", "minute '5-1' is outside 0-59"),
        ("*/0 * * * *", "minute '*/0' has a bad step"),
        ("a * * * *", "minute 'a' is not a number, range or *"),
        ("* * * JAN *", "month 'JAN' is not a number, range or *"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_cron_is_refused_with_a_reason(expression: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_cron(expression)
    assert why in info.value.message


# --- schedule properties ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("properties", "why"),
    [
        ({"AMQ_SCHEDULED_DELAY": "-1"}, "AMQ_SCHEDULED_DELAY must be between 0 and"),
        ({"AMQ_SCHEDULED_DELAY": "soon"}, "AMQ_SCHEDULED_DELAY must be a whole number"),
        ({"AMQ_SCHEDULED_REPEAT": "-2"}, "AMQ_SCHEDULED_REPEAT must be between 0 and"),
        ({"AMQ_SCHEDULED_PERIOD": "1.5"}, "AMQ_SCHEDULED_PERIOD must be a whole number"),
        ({"AMQ_SCHEDULED_CRON": "61 * * * *"}, "minute '61' is outside 0-59"),
    ],
)
def test_bad_schedule_properties_are_refused(properties: dict[str, str], why: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        schedule_of(properties)
    assert why in info.value.message
    h = Harness()
    with pytest.raises(InvalidRequest):
        h.send(b"x", **properties)
    assert h.router.scheduler.next_due() is None


def test_no_schedule_when_nothing_delays() -> None:
    assert schedule_of({"x": "1"}) is None
    assert schedule_of({"AMQ_SCHEDULED_DELAY": "0"}) is None
    assert schedule_of({"AMQ_SCHEDULED_DELAY": "500", JOB_ID: "ID:x"}) is None  # already fired


# --- firing -----------------------------------------------------------------------------------


def test_delayed_message_fires_at_its_time_not_before() -> None:
    h = Harness()
    h.send(b"later", AMQ_SCHEDULED_DELAY="1500")
    h.send(b"now")
    assert h.sink.bodies() == [b"now"]
    assert h.woken == [START + 1500]
    assert h.router.scheduler.next_due() == START + 1500
    assert h.at(START + 1499) == [b"now"]
    assert h.at(START + 1500) == [b"now", b"later"]
    delivered = h.sink.messages[1]
    assert delivered.properties[JOB_ID] == delivered.message_id  # a single firing keeps its id
    assert delivered.properties["AMQ_SCHEDULED_DELAY"] == "1500"
    assert not any(name.startswith("_dovecote") for name in delivered.properties)
    assert h.router.scheduler.next_due() is None
    assert len(h.router.scheduler) == 0


@pytest.mark.parametrize("owner_leaves", [False, True])
def test_a_message_scheduled_to_a_temporary_queue_goes_with_it(owner_leaves: bool) -> None:
    """Delivered if the temporary queue is still there when it fires; dropped if its owner
    has gone (routing it would have created a plain, durable queue of that name)."""
    h = Harness()
    owner = object()
    temp = "ID:requester-1:1"
    h.router.get_or_create_queue(temp, temporary_owner=owner)
    sink = Sink()
    h.router.consume_queue(temp, Consumer("r", sink))
    message = Message(
        h.router.new_message_id(),
        temp,
        RoutingType.ANYCAST,
        b"reply",
        {"AMQ_SCHEDULED_DELAY": "1000"},
        persistent=True,
    )
    h.router.send(message)
    if owner_leaves:
        h.router.delete_owned(owner)
    h.at(START + 1000)
    assert len(h.router.scheduler) == 0
    if owner_leaves:
        assert h.router.queue(temp) is None
        assert sink.bodies() == []
    else:
        assert sink.bodies() == [b"reply"]
        assert not any(name.startswith("_dovecote") for name in sink.messages[0].properties)


def test_messages_fire_in_due_order_and_wake_only_for_an_earlier_time() -> None:
    h = Harness()
    for delay in (300, 100, 200, 100):
        h.send(str(delay).encode(), AMQ_SCHEDULED_DELAY=str(delay))
    assert h.woken == [START + 300, START + 100]
    assert h.at(START + 1000) == [b"100", b"100", b"200", b"300"]


def test_a_backlog_fires_in_slices_each_run_leaving_the_next_to_the_driver() -> None:
    """2,500 due at once: one slice of at most FIRE_SLICE per timer callback, the timer set
    again for now, which Timers leaves to its next run (the server's next loop turn)."""
    h = Harness()
    for n in range(2500):
        h.send(b"%d" % n, persistent=False, AMQ_SCHEDULED_DELAY="10")
    h.clock.now = START + 10
    delivered = []
    for _ in range(3):
        assert h.router.timers.run_due() == 1  # one scheduler timer callback per run
        delivered.append(len(h.sink.messages))
        if len(h.router.scheduler):
            assert h.router.timers.next_due() == START + 10  # due now: the driver comes back
            assert h.woken[-1] <= h.clock.now
    assert delivered == [FIRE_SLICE, 2 * FIRE_SLICE, 2500]
    assert h.router.timers.run_due() == 0
    assert h.router.timers.next_due() is None
    assert h.sink.bodies() == [b"%d" % n for n in range(2500)]


def test_one_timer_however_many_are_scheduled() -> None:
    h = Harness()
    for n in range(10_000):
        h.send(b"%d" % n, persistent=False, AMQ_SCHEDULED_DELAY=str(1000 + n % 7))
    assert len(h.router.timers) == 1  # no timer per message
    assert h.woken == [START + 1000]
    # Ever earlier messages: the timer moves (cancelled, set again), the heap stays small.
    for n in range(10_000):
        h.send(b"early", persistent=False, AMQ_SCHEDULED_DELAY=str(999 - n // 11))
        assert len(h.router.timers) <= 70
    in_due_order = sorted(range(10_000), key=lambda n: (n % 7, n))
    assert h.at(START + 2000)[-10_000:] == [b"%d" % n for n in in_due_order]
    assert len(h.sink.messages) == 20_000
    assert h.router.timers.next_due() is None


class FailingAckStore(FailFirstScheduledAck, JournalLikeStore):
    """Fails the first ack of a scheduled record (an I/O error the scheduler does not expect)."""


def test_the_timer_is_set_again_after_a_firing_raises() -> None:
    h = Harness(FailingAckStore())
    h.send(b"a", AMQ_SCHEDULED_DELAY="10")
    h.send(b"b", AMQ_SCHEDULED_DELAY="20")
    h.clock.now = START + 10
    with pytest.raises(RuntimeError, match="boom"):
        h.router.timers.run_due()
    assert h.store.calls[-1] == ("end",)  # the atomic group was closed all the same
    assert h.router.timers.next_due() == START + 20
    assert h.at(START + 20) == [b"a", b"b"]


def test_delay_period_repeat() -> None:
    h = Harness()
    h.send(b"r", AMQ_SCHEDULED_DELAY="1000", AMQ_SCHEDULED_PERIOD="500", AMQ_SCHEDULED_REPEAT="2")
    assert h.at(START + 999) == []
    assert h.at(START + 1000) == [b"r"]
    assert h.at(START + 1499) == [b"r"]
    assert h.at(START + 1500) == [b"r", b"r"]
    assert h.at(START + 2000) == [b"r", b"r", b"r"]
    assert h.at(START + 60_000) == [b"r", b"r", b"r"]  # repeat 2: three deliveries in all
    ids = [m.message_id for m in h.sink.messages]
    assert len(set(ids)) == 3  # each repeat is a new message


def test_cron_fires_every_time_without_a_repeat() -> None:
    h = Harness()
    h.send(b"c", AMQ_SCHEDULED_CRON="*/10 * * * *", AMQ_SCHEDULED_DELAY="5000")
    # Cron takes precedence over the delay: it fires on the cron time itself.
    assert h.router.scheduler.next_due() == ms("2030-01-01T10:10:00")
    assert h.at(ms("2030-01-01T10:10:00")) == [b"c"]
    assert h.router.scheduler.next_due() == ms("2030-01-01T10:20:00")
    assert h.at(ms("2030-01-01T10:30:00")) == [b"c", b"c"]  # a missed time fires once
    assert h.router.scheduler.next_due() == ms("2030-01-01T10:40:00")


def test_cron_with_repeat_fires_a_run_each_time() -> None:
    h = Harness()
    h.send(
        b"c",
        AMQ_SCHEDULED_CRON="0 * * * *",
        AMQ_SCHEDULED_DELAY="1000",
        AMQ_SCHEDULED_PERIOD="1000",
        AMQ_SCHEDULED_REPEAT="2",
    )
    hour = ms("2030-01-01T11:00:00")
    assert h.router.scheduler.next_due() == hour + 1000
    for n, offset in enumerate((1000, 2000, 3000), start=1):
        assert h.at(hour + offset) == [b"c"] * n
    assert h.router.scheduler.next_due() == ms("2030-01-01T12:00:01")


def test_firing_is_atomic_in_the_store() -> None:
    h = Harness()
    h.send(b"p", AMQ_SCHEDULED_DELAY="10")
    assert h.store.calls == [
        ("queue", "jobs"),
        ("queue", SCHEDULE_QUEUE),
        ("message", SCHEDULE_QUEUE, 1),
    ]
    h.store.calls.clear()
    h.at(START + 10)
    # The copy is journaled on its queue (and acked: the consumer auto-acknowledges), and the
    # scheduled record acked, all in one group.
    assert h.store.calls == [
        ("begin",),
        ("message", "jobs", 1),
        ("ack", "jobs", 1),
        ("ack", SCHEDULE_QUEUE, 1),
        ("end",),
    ]


def test_a_repeat_replaces_its_record_in_the_same_group() -> None:
    h = Harness()
    h.send(b"p", AMQ_SCHEDULED_DELAY="10", AMQ_SCHEDULED_PERIOD="10", AMQ_SCHEDULED_REPEAT="1")
    h.store.calls.clear()
    h.at(START + 10)
    assert h.store.calls == [
        ("begin",),
        ("message", "jobs", 1),
        ("ack", "jobs", 1),
        ("ack", SCHEDULE_QUEUE, 1),
        ("message", SCHEDULE_QUEUE, 2),
        ("end",),
    ]
    stored = h.store.records[(SCHEDULE_QUEUE, 2)]
    assert stored.properties["_dovecote.due"] == str(START + 20)
    assert stored.properties["_dovecote.left"] == "1"


def test_non_persistent_schedules_touch_no_store() -> None:
    h = Harness()
    h.send(b"np", persistent=False, AMQ_SCHEDULED_DELAY="10")
    h.at(START + 10)
    assert h.store.calls == [("queue", "jobs")]
    assert h.sink.bodies() == [b"np"]


def test_held_messages_are_bounded_and_read_back_when_they_fire() -> None:
    h = Harness(hold_limit=10)
    for n in range(100):
        h.send(b"%d" % n, AMQ_SCHEDULED_DELAY=str(1000 + n))
    assert h.router.scheduler.held_count == 10
    assert len(h.router.scheduler) == 100
    assert h.at(START + 5000) == [b"%d" % n for n in range(100)]
    assert h.router.scheduler.held_count == 0


def test_unwritten_messages_stay_held() -> None:
    store = JournalLikeStore()
    store.written = False
    h = Harness(store, hold_limit=10)
    for n in range(30):
        h.send(b"%d" % n, AMQ_SCHEDULED_DELAY="1000")
    assert h.router.scheduler.held_count == 30
    store.written = True
    assert h.router.scheduler.page_out() == 20


def test_an_unreadable_body_is_retried_not_lost() -> None:
    h = Harness(hold_limit=0)
    h.send(b"x", AMQ_SCHEDULED_DELAY="10")
    h.store.readable = False
    assert h.at(START + 5000) == []  # long overdue: retried a second from now, not at once
    assert h.router.scheduler.last_error == "disk gone"
    assert h.router.scheduler.next_due() == START + 6000
    h.store.readable = True
    assert h.at(START + 5999) == []
    assert h.at(START + 6000) == [b"x"]


def test_restore_rebuilds_the_schedule_from_records() -> None:
    first = Harness()
    first.send(b"a", AMQ_SCHEDULED_DELAY="2000")
    first.send(
        b"b", AMQ_SCHEDULED_DELAY="1000", AMQ_SCHEDULED_PERIOD="100", AMQ_SCHEDULED_REPEAT="1"
    )
    first.at(START + 1000)  # b fired once; its repeat is recorded
    assert first.sink.bodies() == [b"b"]
    again = Harness()
    for (queue, seq), message in sorted(first.store.records.items()):
        assert queue == SCHEDULE_QUEUE
        again.store.records[(queue, seq)] = message
        again.router.scheduler.restore(seq, message, paged=seq % 2 == 0)
    assert again.router.scheduler.next_due() == START + 1100
    assert again.at(START + 5000) == [b"b", b"a"]
    # New records never reuse a recovered seq.
    again.send(b"c", AMQ_SCHEDULED_DELAY="1")
    assert max(seq for _, seq in again.store.records) > max(seq for _, seq in first.store.records)
