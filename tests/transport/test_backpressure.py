"""A producer that outruns the memory budget is paused, not dropped, and resumes once a
consumer drains (memory store: nothing can be paged out)."""

from __future__ import annotations

import socket
import time

from dovecote.pytest_plugin import BrokerThread

BODY = b"x" * 10_000
FRAME = b"SEND\ndestination:/queue/bp\ncontent-length:%d\n\n%s\0" % (len(BODY), BODY)


def test_producer_is_paused_past_the_budget_and_resumed_by_a_consumer() -> None:
    thread = BrokerThread(memory_limit=2_000_000).start()
    producer = socket.create_connection((thread.host, thread.port), timeout=10)
    consumer = socket.create_connection((thread.host, thread.port), timeout=10)
    try:
        assert thread.broker is not None
        budget = thread.broker.router.budget
        producer.sendall(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
        producer.recv(1000)
        producer.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and budget.waiting == 0:
            try:
                sent += producer.send(FRAME * 10) // len(FRAME)
            except BlockingIOError:
                time.sleep(0.01)
        assert budget.waiting == 1  # the producer is paused ...
        assert budget.used >= budget.limit  # ... because the budget is spent
        queued = thread.broker.router.queue("bp")
        assert queued is not None
        held = queued.ready_count
        assert held * len(BODY) < 2 * budget.limit  # nothing beyond the budget was taken in

        consumer.sendall(
            b"CONNECT\naccept-version:1.2\nhost:x\n\n\0SUBSCRIBE\nid:1\ndestination:/queue/bp\n\n\0"
        )
        received = 0
        deadline = time.monotonic() + 10
        # The broker may resume the producer before this thread reads a byte, so keep
        # reading until a message has arrived as well.
        while (budget.waiting or not received) and time.monotonic() < deadline:
            received += consumer.recv(1 << 20).count(b"MESSAGE\n")
        assert budget.waiting == 0  # resumed once the consumer freed memory
        assert received > 0
    finally:
        producer.close()
        consumer.close()
        thread.stop()
