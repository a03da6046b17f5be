"""A RECEIPT that confirms something journaled goes out only once the journal says it is
durable: a persistent SEND's, and a scheduler-management REMOVE's (the removal is journaled;
a receipt before it is durable would confirm a removal a crash could undo). Deterministic: a
store whose durability the test releases by hand, a session on a fake link, no sockets."""

from __future__ import annotations

from collections.abc import Callable

from dovecote.adapters.stomp import MessageEncoder, StompSession
from dovecote.core.router import Router
from dovecote.store.memory import MemoryStore
from fake_clock import FakeClock
from fake_link import FakeLink


class HeldStore(MemoryStore):
    """Nothing is durable until :meth:`sync` (as a journal whose batch is being written)."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[], None]] = []

    def call_when_durable(self, callback: Callable[[], None]) -> None:
        self.waiting.append(callback)

    def sync(self) -> None:
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            callback()


def session_on(store: HeldStore) -> tuple[StompSession, FakeLink]:
    link = FakeLink("c1")
    session = StompSession(link, Router(store, FakeClock()), MessageEncoder())
    session.data_received(b"CONNECT\naccept-version:1.2\n\n\0")
    link.written.clear()  # (CONNECTED)
    return session, link


def receipts(link: FakeLink) -> list[bytes]:
    return [w for w in link.written if w.startswith(b"RECEIPT")]


def test_a_management_remove_is_confirmed_once_durable() -> None:
    store = HeldStore()
    session, link = session_on(store)
    session.data_received(
        b"SEND\ndestination:/topic/ActiveMQ.Scheduler.Management\n"
        b"AMQ_SCHEDULER_ACTION:REMOVE\nscheduledJobId:ID:job-1\nreceipt:rm\n\n\0"
    )
    assert receipts(link) == []
    store.sync()
    assert receipts(link) == [b"RECEIPT\nreceipt-id:rm\n\n\0"]


def test_a_persistent_send_is_confirmed_once_durable_and_a_later_receipt_waits_behind_it() -> None:
    store = HeldStore()
    session, link = session_on(store)
    session.data_received(
        b"SEND\ndestination:/queue/q\npersistent:true\nreceipt:p\n\nx\0"
        b"SEND\ndestination:/queue/q\nreceipt:n\n\ny\0"
    )
    assert receipts(link) == []  # (the second is not persistent, but receipts keep their order)
    store.sync()
    assert receipts(link) == [b"RECEIPT\nreceipt-id:p\n\n\0", b"RECEIPT\nreceipt-id:n\n\n\0"]


def test_a_non_persistent_send_alone_is_confirmed_at_once() -> None:
    store = HeldStore()
    session, link = session_on(store)
    session.data_received(b"SEND\ndestination:/queue/q\nreceipt:n\n\ny\0")
    assert receipts(link) == [b"RECEIPT\nreceipt-id:n\n\n\0"]
