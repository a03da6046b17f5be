"""Transport behaviour under hostile peers: slow consumers, connection storms, shutdown.

The broker runs in a background thread (``make_broker``); queue and connection counts are
read on the broker's own loop (``broker.call``), never from the test thread directly.
"""

from __future__ import annotations

import re
import threading
import time

from dovecote.pytest_plugin import BrokerThread
from dovecote.transport.connection import ConnectionLimits

SMALL_BUFFERS = ConnectionLimits(high_water=64 * 1024, low_water=16 * 1024)


async def _queue_counts(thread: BrokerThread, name: str) -> tuple[int, int]:
    assert thread.broker is not None
    queue = thread.broker.router.queue(name)
    assert queue is not None
    return queue.ready_count, queue.in_flight_count


async def _largest_outbound(thread: BrokerThread) -> int:
    """Bytes waiting to go out on the connection with the most waiting."""
    assert thread.broker is not None
    connections = [c for listener in thread.broker.listeners for c in listener.connections]
    return max(connection.outbound_bytes for connection in connections)


async def _connection_count(thread: BrokerThread) -> int:
    assert thread.broker is not None
    return thread.broker.connection_count


class FrameCounter(threading.Thread):
    """Reads MESSAGE frames from a raw socket in the background, keeping each one's ``n``."""

    def __init__(self, client, expected: int) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.expected = expected
        self.numbers: list[int] = []
        self.redelivered = 0

    def run(self) -> None:
        while len(self.numbers) < self.expected:
            frame = self.client.read_frame(timeout=15)
            head = frame.partition(b"\n\n")[0]
            self.numbers.append(int(re.search(rb"\nn:(\d+)", head).group(1)))
            self.redelivered += b"\nredelivered:true" in head


def test_slow_consumer_does_not_block_the_queue_or_other_connections(
    make_broker, raw_stomp, wait_for
):
    broker = make_broker(connection_limits=SMALL_BUFFERS)
    # The slow consumer never reads; a tiny receive buffer makes the kernel give up early too.
    slow = raw_stomp(broker.port, rcvbuf=4096)
    slow.connect()
    slow.send(b"SUBSCRIBE\nid:0\ndestination:/queue/flow\nack:client-individual\nreceipt:s\n\n\0")
    slow.expect(b"RECEIPT\nreceipt-id:s\n\n\0")
    fast = raw_stomp(broker.port)
    fast.connect()
    fast.send(b"SUBSCRIBE\nid:0\ndestination:/queue/flow\nreceipt:s\n\n\0")
    fast.expect(b"RECEIPT\nreceipt-id:s\n\n\0")
    count = 5000  # 20 MB: far more than the kernel buffers of the slow connection hold
    counter = FrameCounter(fast, count)
    counter.start()

    producer = raw_stomp(broker.port)
    producer.connect()
    body = b"x" * 4096
    producer.send(
        b"".join(b"SEND\ndestination:/queue/flow\nn:%d\n\n%s\0" % (n, body) for n in range(count))
        + b"SEND\ndestination:/queue/flow.done\nreceipt:sent\n\n\0"
    )
    producer.expect(b"RECEIPT\nreceipt-id:sent\n\n\0", timeout=10)

    # Another connection is served while the slow one is stuck.
    other = raw_stomp(broker.port)
    other.connect()
    other.send(b"SEND\ndestination:/queue/elsewhere\nreceipt:o\n\nx\0")
    other.expect(b"RECEIPT\nreceipt-id:o\n\n\0", timeout=2)

    # Everything not stuck with the slow consumer reaches the fast one.
    def settled() -> tuple[int, int] | None:
        ready, in_flight = broker.call(_queue_counts(broker, "flow"))
        return (
            (ready, in_flight) if ready == 0 and len(counter.numbers) + in_flight == count else None
        )

    _, stuck = wait_for(settled, timeout=15)
    # Dispatch to the slow consumer paused once its buffers filled (kernel ones included);
    # without the pause it would have been handed half of the 5000.
    assert 0 < stuck < count // 4
    assert slow.is_open()

    slow.close()  # its unacknowledged messages go to the fast consumer, marked redelivered
    counter.join(timeout=15)
    assert sorted(counter.numbers) == list(range(count))
    assert counter.redelivered == stuck


def test_broker_survives_500_connections_opened_and_reset(make_broker, raw_stomp, wait_for):
    broker = make_broker()
    clients = [raw_stomp(broker.port) for _ in range(500)]
    for i, client in enumerate(clients):
        if i % 3 == 0:
            client.send(b"CONNECT\naccept-version:1.2\n\n\0")
        elif i % 3 == 1:
            client.send(b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:0\ndestination:/queue/st")
    wait_for(lambda: broker.call(_connection_count(broker)) == 500, timeout=10)
    for client in clients:
        client.abort()
    wait_for(lambda: broker.call(_connection_count(broker)) == 0, timeout=10)
    survivor = raw_stomp(broker.port)
    survivor.connect()
    survivor.send(b"SEND\ndestination:/queue/storm\nreceipt:ok\n\nstill up\0")
    survivor.expect(b"RECEIPT\nreceipt-id:ok\n\n\0")


def test_broker_stop_closes_live_client_connections(raw_stomp, wait_for):
    thread = BrokerThread().start()
    try:
        connected = raw_stomp(thread.port)
        connected.connect()
        connected.send(b"SUBSCRIBE\nid:0\ndestination:/queue/stop\nreceipt:s\n\n\0")
        connected.expect(b"RECEIPT\nreceipt-id:s\n\n\0")
        idle = raw_stomp(thread.port)  # never even sent CONNECT
        wait_for(lambda: thread.call(_connection_count(thread)) == 2)
        start = time.monotonic()
        thread.call(thread.broker.stop())
        assert time.monotonic() - start < 2
        assert connected.read_until_closed(timeout=2) == b""
        assert idle.read_until_closed(timeout=2) == b""
        assert thread.call(_connection_count(thread)) == 0
    finally:
        thread.stop()


def test_broker_stop_aborts_a_client_that_does_not_read_after_the_deadline(raw_stomp, wait_for):
    thread = BrokerThread(connection_limits=SMALL_BUFFERS, shutdown_timeout=0.3).start()
    try:
        stuck = raw_stomp(thread.port, rcvbuf=4096)
        stuck.connect()
        stuck.send(b"SUBSCRIBE\nid:0\ndestination:/queue/stuck\nreceipt:s\n\n\0")
        stuck.expect(b"RECEIPT\nreceipt-id:s\n\n\0")
        producer = raw_stomp(thread.port)
        producer.connect()
        body = b"y" * 65536
        producer.send(
            b"".join(b"SEND\ndestination:/queue/stuck\n\n%s\0" % body for _ in range(128))
            + b"SEND\ndestination:/queue/stuck.done\nreceipt:sent\n\n\0"
        )
        producer.expect(b"RECEIPT\nreceipt-id:sent\n\n\0", timeout=10)

        def kernel_buffers_full() -> bool:
            # Bytes still wait in user space and the kernel takes no more of them.
            before = thread.call(_largest_outbound(thread))
            time.sleep(0.05)
            return before > 0 and thread.call(_largest_outbound(thread)) == before

        wait_for(kernel_buffers_full)
        start = time.monotonic()
        thread.call(thread.broker.stop())
        # Closing waits for unsent bytes only up to shutdown_timeout, then aborts.
        assert 0.25 <= time.monotonic() - start < 2
        assert thread.call(_connection_count(thread)) == 0
    finally:
        thread.stop()
