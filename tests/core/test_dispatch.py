"""Dispatch features on one queue: selectors, exclusive consumers, consumer priority, message
groups, browsing; plus a model-based check that no message is lost, duplicated, given to a
consumer whose selector refuses it, or stranded."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovecote.core.consumer import MAX_GROUPS, GroupTable, is_group_end
from dovecote.core.limits import MemoryBudget
from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.queue import AckMode, Consumer, Queue
from dovecote.core.selector import Selector, compile_selector
from dovecote.store.memory import MemoryStore


class Sink:
    def __init__(self) -> None:
        self.deliveries: list[tuple[object, str, bool]] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.deliveries.append((consumer.key, entry.message.message_id, entry.redelivered))

    def ids(self, key: object | None = None) -> list[str]:
        return [d[1] for d in self.deliveries if key is None or d[0] == key]

    def keys(self) -> list[object]:
        return [d[0] for d in self.deliveries]


class CountingSelector(Selector):
    """A compiled selector that counts its evaluations."""

    __slots__ = ("calls",)

    def __init__(self, text: str) -> None:
        compiled = compile_selector(text)
        super().__init__(text, compiled._test)
        self.calls = 0

    def matches(self, message: Message) -> bool:
        self.calls += 1
        return super().matches(message)


class PagingStore(MemoryStore):
    """Keeps bodies so a test can page entries out and read them back."""

    def __init__(self) -> None:
        self.bodies: dict[tuple[str, int], bytes] = {}

    def record_message(self, queue: str, seq: int, message: Message) -> None:
        self.bodies[queue, seq] = message.body

    def is_on_disk(self, queue: str, seq: int) -> bool:
        return True

    def load_body(self, queue: str, seq: int) -> bytes:
        return self.bodies[queue, seq]


def msg(message_id: str, priority: int = 4, **properties: str) -> Message:
    return Message(
        message_id,
        "q",
        RoutingType.ANYCAST,
        message_id.encode(),
        properties,
        persistent=True,
        priority=priority,
    )


class H:
    def __init__(self) -> None:
        self.store = PagingStore()
        self.sink = Sink()
        self.budget = MemoryBudget()
        self.queue = Queue(
            "q",
            address="q",
            durable=True,
            store=self.store,
            now_ms=lambda: 1,
            budget=self.budget,
        )

    def consumer(
        self,
        key: str,
        *,
        selector: str | Selector | None = None,
        prefetch: int = 1000,
        ack_mode: str = AckMode.INDIVIDUAL,
        priority: int = 0,
        exclusive: bool = False,
    ) -> Consumer:
        compiled = compile_selector(selector) if isinstance(selector, str) else selector
        consumer = Consumer(
            key,
            self.sink,
            ack_mode=ack_mode,
            prefetch=prefetch,
            selector=compiled,
            priority=priority,
            exclusive=exclusive,
        )
        self.queue.add_consumer(consumer)
        return consumer

    def send(self, message_id: str, priority: int = 4, **properties: str) -> None:
        self.queue.add(msg(message_id, priority, **properties))

    def ack_all(self, consumer: Consumer) -> None:
        for seq in list(consumer.in_flight):
            self.queue.ack(consumer, seq)


@pytest.fixture
def h() -> H:
    return H()


# --- selectors --------------------------------------------------------------------------------


def test_selector_consumers_get_only_what_they_match(h: H) -> None:
    h.consumer("red", selector="color = 'red'")
    h.consumer("blue", selector="color = 'blue'")
    for i, color in enumerate(["red", "blue", "blue", "red", "green"]):
        h.send(f"m{i}", color=color)
    assert h.sink.ids("red") == ["m0", "m3"]
    assert h.sink.ids("blue") == ["m1", "m2"]
    assert h.queue.ready_count == 1  # green waits
    assert [m.message_id for m in h.queue.browse()] == ["m4"]


def test_skipped_message_does_not_block_the_ones_behind_it(h: H) -> None:
    h.send("nobody", color="green")
    h.send("r1", color="red")
    h.consumer("red", selector="color = 'red'")
    h.send("r2", color="red")
    assert h.sink.ids() == ["r1", "r2"]


def test_message_nobody_matches_waits_for_a_matching_consumer(h: H) -> None:
    h.consumer("red", selector="color = 'red'")
    h.send("g1", color="green")
    h.send("r1", color="red")
    assert h.sink.ids() == ["r1"]
    assert h.queue.parked_count == 1
    h.consumer("green", selector="color = 'green'")
    assert h.sink.ids("green") == ["g1"]
    assert h.queue.ready_count == 0


def test_message_skipped_by_a_full_consumer_goes_to_it_when_it_has_credit(h: H) -> None:
    red = h.consumer("red", selector="color = 'red'", prefetch=1)
    h.consumer("any")
    h.send("r1", color="red")
    h.send("r2", color="red")  # red is full: r2 goes to "any" (it matches everything)
    assert h.sink.deliveries == [("red", "r1", False), ("any", "r2", False)]
    any_ = h.queue.consumers[1]
    any_.paused = True
    h.send("r3", color="red")
    h.send("b1", color="blue")
    assert h.queue.parked_count == 0  # nobody has credit: nothing is examined yet
    assert h.queue.ready_count == 2
    h.queue.ack(red, 1)
    assert h.sink.ids("red") == ["r1", "r3"]
    h.queue.resume(any_)
    assert h.sink.ids("any") == ["r2", "b1"]


def test_each_message_is_examined_once_not_once_per_delivery(h: H) -> None:
    selectors = [CountingSelector(f"shard = '{i}'") for i in range(10)]
    consumers = [h.consumer(f"c{i}", selector=s, prefetch=1) for i, s in enumerate(selectors)]
    for n in range(1000):
        h.send(f"m{n}", shard=str(n % 10))

    def evaluations() -> int:
        return sum(s.calls for s in selectors)

    def drain(consumer: Consumer) -> None:
        for _ in range(100):
            h.queue.ack(consumer, next(iter(consumer.in_flight)))

    # Consumer 0 drains its 100 messages one ack at a time: walking the queue parks the
    # other consumers' messages, each examined once (11 evaluations: 10 to park, 1 to take).
    drain(consumers[0])
    assert len(h.sink.ids("c0")) == 100
    assert evaluations() <= 1000 * 11
    # Consumer 1's messages are parked for it: each ack costs one evaluation, no rescan.
    before = evaluations()
    drain(consumers[1])
    assert len(h.sink.ids("c1")) == 100
    assert evaluations() - before <= 100
    assert h.queue.ready_count == 1000 - 200 - 8  # c2..c9 hold one each


def test_parked_priority_beats_lower_fresh_priority(h: H) -> None:
    red = h.consumer("red", selector="color = 'red'", prefetch=1)
    other = h.consumer("other", selector="color = 'blue'")
    h.send("r0", color="red")
    h.send("r9", 9, color="red")  # red is full: parked
    other.paused = True
    h.send("r4", 4, color="red")  # no credit anywhere: stays fresh
    h.queue.resume(other)
    h.queue.ack(red, 1)
    h.queue.ack(red, 2)
    assert h.sink.ids("red") == ["r0", "r9", "r4"]


def test_topic_subscription_selector_filters_at_enqueue() -> None:
    queue = Queue(
        "sub",
        address="t",
        durable=False,
        store=MemoryStore(),
        now_ms=lambda: 1,
        budget=MemoryBudget(),
        filter_="t",
        selector=compile_selector("n > 1"),
    )
    for n in range(4):
        queue.add(msg(f"m{n}", n=str(n)))
    assert [m.message_id for m in queue.browse()] == ["m2", "m3"]
    assert queue.enqueued == 2


# --- exclusive consumers ----------------------------------------------------------------------


def test_exclusive_consumer_gets_everything_and_fails_over(h: H) -> None:
    h.consumer("plain")
    first = h.consumer("first", exclusive=True)
    h.consumer("second", exclusive=True)
    for i in range(3):
        h.send(f"m{i}")
    assert h.sink.keys() == ["first"] * 3
    assert h.queue.exclusive_consumer is first
    h.queue.remove_consumer(first)
    assert h.sink.deliveries[3:] == [
        ("second", "m0", True),
        ("second", "m1", True),
        ("second", "m2", True),
    ]
    h.send("m3")
    assert h.sink.keys()[-1] == "second"


def test_exclusive_consumer_without_credit_holds_messages_back(h: H) -> None:
    only = h.consumer("x", exclusive=True, prefetch=1)
    h.consumer("plain")
    h.send("m1")
    h.send("m2")
    assert h.sink.ids() == ["m1"]
    h.queue.ack(only, 1)
    assert h.sink.ids() == ["m1", "m2"]


def test_the_highest_priority_exclusive_consumer_is_the_active_one(h: H) -> None:
    h.consumer("low", exclusive=True, priority=1)
    high = h.consumer("high", exclusive=True, priority=5)
    assert h.queue.exclusive_consumer is high


# --- consumer priority ------------------------------------------------------------------------


def test_higher_priority_consumers_first_lower_when_they_are_full(h: H) -> None:
    low = h.consumer("low", priority=1)
    h.consumer("high1", priority=9, prefetch=2)
    h.consumer("high2", priority=9, prefetch=2)
    for i in range(6):
        h.send(f"m{i}")
    assert h.sink.keys() == ["high1", "high2", "high1", "high2", "low", "low"]
    assert [c.key for c in h.queue.consumers] == ["high1", "high2", "low"]
    h.ack_all(low)


def test_lower_priority_consumer_gets_what_higher_ones_do_not_select(h: H) -> None:
    h.consumer("high", priority=9, selector="kind = 'a'")
    h.consumer("low", priority=0)
    h.send("a1", kind="a")
    h.send("b1", kind="b")
    assert h.sink.deliveries == [("high", "a1", False), ("low", "b1", False)]


# --- message groups ---------------------------------------------------------------------------


def test_group_sticks_to_one_consumer(h: H) -> None:
    h.consumer("A")
    h.consumer("B")
    for i in range(6):
        h.send(f"m{i}", JMSXGroupID="g1" if i % 2 == 0 else "g2")
    assert h.sink.ids("A") == ["m0", "m2", "m4"]
    assert h.sink.ids("B") == ["m1", "m3", "m5"]
    assert h.queue.group_count == 2


def test_group_waits_for_its_owner_without_blocking_others(h: H) -> None:
    a = h.consumer("A", prefetch=1)
    h.consumer("B")
    h.send("g1", JMSXGroupID="g")  # A owns g
    h.send("g2", JMSXGroupID="g")  # A is full: parked for A
    h.send("x1")
    assert h.sink.deliveries == [("A", "g1", False), ("B", "x1", False)]
    h.queue.ack(a, 1)
    assert h.sink.ids("A") == ["g1", "g2"]


def test_negative_group_sequence_closes_the_group(h: H) -> None:
    h.consumer("A")
    h.consumer("B")
    h.send("m1", JMSXGroupID="g")
    h.send("m2", JMSXGroupID="g", JMSXGroupSeq="-1")
    assert h.queue.group_count == 0
    h.send("m3", JMSXGroupID="g")
    assert h.sink.deliveries == [("A", "m1", False), ("A", "m2", False), ("B", "m3", False)]


def test_closing_a_group_frees_the_messages_that_waited_for_its_owner(h: H) -> None:
    # Found by the model test: m2 waited for A (the owner); the group closed; B had credit.
    a = h.consumer("A", prefetch=2)
    b = h.consumer("B")
    b.paused = True
    h.send("m1", JMSXGroupID="g")
    h.send("x")
    h.queue.resume(b)
    h.send("m2", JMSXGroupID="g")  # A is full: parked for A
    h.send("m3", 9, JMSXGroupID="g", JMSXGroupSeq="-1")  # also for A
    assert h.queue.parked_count == 2
    h.queue.ack(a, 2)  # A takes m3 (higher priority), which closes the group
    assert h.sink.ids("A") == ["m1", "x", "m3"]
    assert h.sink.ids("B") == ["m2"]
    assert h.queue.parked_count == 0


def test_a_parked_message_whose_group_got_another_owner_is_freed_when_the_group_closes(
    h: H,
) -> None:
    # f waited for B alone (A's selector said no); then A came to own f's group, so B may not
    # take it. Once the group closes, B may again: f must not stay parked for nobody.
    a = h.consumer("A", selector="color = 'blue'", prefetch=1)
    b = h.consumer("B", prefetch=1)
    h.send("x", color="red")  # to B: B is full
    h.send("f", JMSXGroupID="g", color="red")  # A has credit, but not for f: parked for B
    h.send("g1", JMSXGroupID="g", color="blue")  # A owns g; A is full
    h.queue.ack(b, 1)  # B looks at f: now A's group
    h.send("g2", JMSXGroupID="g", color="blue", JMSXGroupSeq="-1")  # waits for A
    h.queue.ack(a, 3)  # A takes g2, which closes the group
    assert h.sink.ids("A") == ["g1", "g2"]
    assert h.sink.ids("B") == ["x", "f"]
    assert h.queue.parked_count == 0


def test_a_forgotten_group_frees_the_messages_that_waited_for_its_owner(h: H) -> None:
    h.queue._groups.limit = 1
    a = h.consumer("A", prefetch=1)
    b = h.consumer("B", prefetch=1)
    h.send("g1", JMSXGroupID="g")  # A owns g; A is full
    h.send("g2", JMSXGroupID="g")  # waits for A
    h.send("k1", JMSXGroupID="k")  # B owns k: g is forgotten (limit 1), so g2 may go anywhere
    assert h.queue.group_owner("g") is None
    h.queue.ack(b, 3)
    assert h.sink.ids("B") == ["k1", "g2"]
    assert a.in_flight


def test_group_is_reassigned_when_its_owner_leaves(h: H) -> None:
    a = h.consumer("A")
    h.consumer("B")
    h.send("m1", JMSXGroupID="g")
    assert h.queue.group_owner("g") is a
    h.queue.remove_consumer(a)
    assert h.sink.deliveries[-1] == ("B", "m1", True)
    assert h.queue.group_owner("g") is h.queue.consumers[0]


def test_group_table_is_bounded() -> None:
    table = GroupTable(limit=2)
    a, b = object(), object()
    table.assign("g1", a)  # type: ignore[arg-type]
    table.assign("g2", b)  # type: ignore[arg-type]
    table.assign("g3", a)  # type: ignore[arg-type]
    assert len(table) == 2
    assert table.owner("g1") is None
    assert table.forget(a) == 1  # type: ignore[arg-type]
    assert MAX_GROUPS == 65_536


@pytest.mark.parametrize(
    ("text", "closes"), [(None, False), ("1", False), ("0", False), ("-1", True), ("x", False)]
)
def test_is_group_end(text: str | None, closes: bool) -> None:
    assert is_group_end(text) is closes


# --- browsing and priority --------------------------------------------------------------------


def test_browse_page_reads_paged_bodies_and_takes_nothing(h: H) -> None:
    for i, priority in enumerate([4, 9, 4, 0]):
        h.send(f"m{i}", priority)
    h.budget.page_at = -1  # everything over the paging level: page all written bodies out
    assert h.queue.page_out() == 4
    assert [m.body for m in h.queue.browse()] == [b""] * 4
    page = h.queue.browse_page()
    assert [(m.message_id, m.body) for m in page] == [
        ("m1", b"m1"),
        ("m0", b"m0"),
        ("m2", b"m2"),
        ("m3", b"m3"),
    ]
    assert [m.message_id for m in h.queue.browse_page(1, 2)] == ["m0", "m2"]
    assert h.queue.browse_page(10) == []
    assert h.queue.ready_count == 4


def test_browse_includes_parked_messages_in_dispatch_order(h: H) -> None:
    h.consumer("red", selector="color = 'red'")
    h.send("g1", color="green")
    h.send("g2", 9, color="green")
    h.send("f1")
    assert [m.message_id for m in h.queue.browse_page()] == ["g2", "g1", "f1"]


def test_redelivered_message_keeps_its_place_before_later_ones(h: H) -> None:
    a = h.consumer("A", prefetch=1)
    h.send("m1")
    h.send("m2")
    h.send("m3", 9)
    a.paused = True
    h.queue.nack(a, 1)  # m1 back, ahead of m2 but behind the higher-priority m3
    assert [m.message_id for m in h.queue.browse()] == ["m3", "m1", "m2"]


# --- a model: nothing lost, duplicated, misdelivered or stranded ----------------------------

_SHARDS = ("a", "b", "c")
_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("send"),
            st.sampled_from(_SHARDS),
            st.integers(0, 9),
            st.sampled_from([None, "g1", "g2", "g1 end"]),
        ),
        st.tuples(
            st.just("attach"),
            st.sampled_from([None, *_SHARDS]),
            st.integers(1, 3),
            st.integers(0, 2),
        ),
        st.tuples(st.just("detach"), st.integers(0, 5)),
        st.tuples(st.just("ack"), st.integers(0, 5)),
        st.tuples(st.just("nack"), st.integers(0, 5)),
        st.tuples(st.just("pause"), st.integers(0, 5), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_operations, st.booleans())
def test_model_nothing_lost_duplicated_misdelivered_or_stranded(
    operations: list[tuple[object, ...]], exclusive_first: bool
) -> None:
    h = H()
    consumers: list[Consumer] = []
    settled: set[str] = set()
    sent: dict[str, Mapping[str, str]] = {}
    for op in operations:
        if op[0] == "send":
            _, shard, priority, group = op
            message_id = f"m{len(sent)}"
            props = {"shard": str(shard)}
            if group is not None:
                group_id, _, end = str(group).partition(" ")
                props["JMSXGroupID"] = group_id
                if end:
                    props["JMSXGroupSeq"] = "-1"
            sent[message_id] = props
            h.send(message_id, int(priority), **props)  # type: ignore[call-overload]
        elif op[0] == "attach":
            _, shard, prefetch, priority = op
            consumers.append(
                h.consumer(
                    f"c{len(consumers)}",
                    selector=None if shard is None else f"shard = '{shard}'",
                    prefetch=int(prefetch),  # type: ignore[call-overload]
                    priority=int(priority),  # type: ignore[call-overload]
                    exclusive=exclusive_first and not consumers,
                )
            )
        elif consumers:
            consumer = consumers[int(op[1]) % len(consumers)]  # type: ignore[call-overload]
            if consumer.queue is None:
                continue
            if op[0] == "detach":
                h.queue.remove_consumer(consumer)
            elif op[0] == "pause":
                if op[2]:
                    consumer.paused = True
                else:
                    h.queue.resume(consumer)
            elif consumer.in_flight:
                seq = next(iter(consumer.in_flight))
                if op[0] == "ack":
                    settled.add(consumer.in_flight[seq].message.message_id)
                    h.queue.ack(consumer, seq)
                else:
                    h.queue.nack(consumer, seq)
        # Every delivery went to a consumer whose selector matches it.
        for key, message_id, _ in h.sink.deliveries:
            consumer = consumers[int(str(key)[1:])]
            if consumer.selector is not None:
                assert consumer.selector.matches(msg(message_id, **sent[message_id]))
        # Nothing delivered twice unless it came back first (nack or consumer gone).
        for consumer in consumers:
            for entry in consumer.in_flight.values():
                assert not entry.ready
        held = {e.message.message_id for c in consumers for e in c.in_flight.values()}
        ready = [m.message_id for m in h.queue.browse()]
        assert len(ready) == len(set(ready)) == h.queue.ready_count
        assert held.isdisjoint(ready)
        assert set(sent) == settled | held | set(ready)
        assert not settled & (held | set(ready))
        # Quiescent: no ready message is left that a consumer with credit may take now.
        for entry in h.queue._entries():
            for consumer in h.queue.consumers:
                assert not (consumer.has_credit() and h.queue._may_take(consumer, entry)), (
                    entry,
                    consumer,
                )
    # Not stranded: once every consumer leaves and a catch-all arrives, everything left flows.
    for consumer in consumers:
        if consumer.queue is not None:
            h.queue.remove_consumer(consumer)
    before = len(h.sink.deliveries)
    h.consumer("drain", ack_mode=AckMode.AUTO)
    assert h.queue.ready_count == 0
    assert {d[1] for d in h.sink.deliveries[before:]} == set(sent) - settled


# --- topic subscriptions through the router ---------------------------------------------------


class _Clock:
    def now_ms(self) -> int:
        return 1


def _topic(message_id: str, **properties: str) -> Message:
    return Message(message_id, "t.x", RoutingType.MULTICAST, b"", properties)


def test_topic_subscriptions_with_selectors_enqueue_only_matches() -> None:
    from dovecote.core.router import Router

    router = Router(MemoryStore(), _Clock())
    sink = Sink()
    red = Consumer("red", sink, selector=compile_selector("color = 'red'"))
    every = Consumer("all", sink)
    router.subscribe_topic("t.*", red)
    router.subscribe_topic("t.>", every)
    router.send(_topic("m1", color="red"))
    router.send(_topic("m2", color="blue"))
    assert sink.ids("red") == ["m1"]
    assert sink.ids("all") == ["m1", "m2"]


def test_restored_durable_subscription_keeps_its_recorded_selector() -> None:
    from dovecote.core.router import Router

    router = Router(MemoryStore(), _Clock())
    queue = router.restore_durable_subscription("c.d", "t.x", "color = 'red'")
    router.send(_topic("red", color="red"))
    router.send(_topic("blue", color="blue"))
    assert [m.message_id for m in queue.browse()] == ["red"]
    sink = Sink()
    again = Consumer("d", sink, selector=compile_selector("color = 'red'"))
    assert router.subscribe_topic("t.x", again, durable_name="c.d") is queue
    router.unsubscribe(again)
    # Another selector: a new subscription (JMS), the old messages gone with the old one.
    other = Consumer("d", sink, selector=compile_selector("color = 'blue'"))
    assert router.subscribe_topic("t.x", other, durable_name="c.d") is not queue
    assert sink.ids() == ["red"]


def test_restored_selector_that_no_longer_compiles_is_adopted_from_the_consumer() -> None:
    from dovecote.core.router import Router

    router = Router(MemoryStore(), _Clock())
    queue = router.restore_durable_subscription("c.d", "t.x", "color = ")
    router.send(_topic("red", color="red"))
    router.send(_topic("blue", color="blue"))
    sink = Sink()
    consumer = Consumer("d", sink, selector=compile_selector("color = 'red'"))
    assert router.subscribe_topic("t.x", consumer, durable_name="c.d") is queue
    assert sink.ids() == ["red"]
    assert queue.ready_count == 0


def test_durable_subscription_records_its_selector_only_when_it_has_one() -> None:
    from dovecote.core.router import Router

    calls: list[tuple[object, ...]] = []

    class Recording(MemoryStore):
        def record_queue(self, *args: object) -> None:  # type: ignore[override]
            calls.append(args)

    router = Router(Recording(), _Clock())
    with_selector = Consumer("a", Sink(), selector=compile_selector("n > 1"))
    router.subscribe_topic("t.a", with_selector, durable_name="c.a")
    router.subscribe_topic("t.b", Consumer("b", Sink()), durable_name="c.b")
    assert calls == [("c.a", "t.a", "t.a", "n > 1"), ("c.b", "t.b", "t.b")]
