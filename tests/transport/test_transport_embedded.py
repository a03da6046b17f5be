"""``dovecote.Broker`` embedded in an asyncio program, talked to over asyncio streams.

pytest-asyncio is not used: each test runs its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from pathlib import Path

import pytest

import dovecote
from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.queue import Consumer
from dovecote.core.router import Router
from dovecote.core.scheduler import FIRE_SLICE
from dovecote.server import LoopWakeup
from dovecote.store.memory import MemoryStore
from failing_acks import FailFirstScheduledAck
from fake_clock import FakeClock

TIMEOUT = 5.0


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame (bodies here hold no NUL), with any heart-beat EOLs before it dropped."""
    frame = await asyncio.wait_for(reader.readuntil(b"\0"), TIMEOUT)
    return frame.lstrip(b"\n")


async def connect(broker: dovecote.Broker) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await connect_to(broker.port)


async def connect_to(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
    assert (await read_frame(reader)).startswith(b"CONNECTED\nversion:1.2\n")
    return reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def test_embedded_broker_sends_and_receives_over_asyncio_streams():
    async def main() -> None:
        async with dovecote.Broker(listen=["stomp://127.0.0.1:0"]) as broker:
            assert broker.port != 0
            assert broker.url == f"stomp://127.0.0.1:{broker.port}"
            consumer_reader, consumer = await connect(broker)
            consumer.write(b"SUBSCRIBE\nid:0\ndestination:/queue/embedded\nreceipt:s\n\n\0")
            assert await read_frame(consumer_reader) == b"RECEIPT\nreceipt-id:s\n\n\0"
            producer_reader, producer = await connect(broker)
            producer.write(b"SEND\ndestination:/queue/embedded\nreceipt:p\n\nfrom asyncio\0")
            assert await read_frame(producer_reader) == b"RECEIPT\nreceipt-id:p\n\n\0"
            message = await read_frame(consumer_reader)
            assert re.sub(rb"(message-id|timestamp):[^\n]*", rb"\1:*", message) == (
                b"MESSAGE\nsubscription:0\nmessage-id:*\ndestination:/queue/embedded\n"
                b"expires:0\npriority:4\ntimestamp:*\ncontent-length:12\n\nfrom asyncio\0"
            )
            assert broker.connection_count == 2
            await close(producer)
            await close(consumer)

    asyncio.run(main())


def test_broker_stop_closes_live_connections_and_refuses_new_ones():
    async def main() -> None:
        broker = dovecote.Broker(listen=["stomp://127.0.0.1:0"])
        await broker.start()
        try:
            reader, writer = await connect(broker)
            silent_reader, silent = await asyncio.open_connection(broker.host, broker.port)
            port = broker.port
            await asyncio.wait_for(broker.stop(), TIMEOUT)
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            assert await asyncio.wait_for(silent_reader.read(), TIMEOUT) == b""
            assert broker.connection_count == 0
            await close(writer)
            await close(silent)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
        finally:
            await broker.stop()

    asyncio.run(main())


def test_two_listeners_share_one_broker():
    async def main() -> None:
        listen = ["stomp://127.0.0.1:0", "stomp://127.0.0.1:0"]
        async with dovecote.Broker(listen=listen) as broker:
            first, second = (int(url.rsplit(":", 1)[1]) for url in broker.urls)
            assert first != second
            consumer_reader, consumer = await connect_to(second)
            consumer.write(b"SUBSCRIBE\nid:0\ndestination:/topic/shared\nreceipt:s\n\n\0")
            assert await read_frame(consumer_reader) == b"RECEIPT\nreceipt-id:s\n\n\0"
            _, producer = await connect_to(first)
            producer.write(b"SEND\ndestination:/topic/shared\n\nacross listeners\0")
            assert (await read_frame(consumer_reader)).endswith(b"\n\nacross listeners\0")
            assert broker.connection_count == 2
            await close(producer)
            await close(consumer)

    asyncio.run(main())


def test_embedded_broker_fires_scheduled_messages_and_restores_them(tmp_path):
    """The scheduler's timer on the loop: an earlier due time re-arms it; a restart restores
    the persistent schedules and arms them (one falls due after the restart and is delivered)."""

    async def main() -> None:
        data = tmp_path / "data"
        async with dovecote.Broker(listen=["stomp://127.0.0.1:0"], data_dir=data) as broker:
            reader, client = await connect(broker)
            client.write(b"SUBSCRIBE\nid:0\ndestination:/queue/timed\nreceipt:s\n\n\0")
            assert await read_frame(reader) == b"RECEIPT\nreceipt-id:s\n\n\0"
            for body, delay in ((b"third", 400), (b"first", 100), (b"second", 200)):
                client.write(
                    b"SEND\ndestination:/queue/timed\nAMQ_SCHEDULED_DELAY:%d\n\n%s\0"
                    % (delay, body)
                )
            bodies = [(await read_frame(reader)).split(b"\n\n")[1] for _ in range(3)]
            assert bodies == [b"first\0", b"second\0", b"third\0"]
            client.write(
                b"SEND\ndestination:/queue/timed\npersistent:true\nAMQ_SCHEDULED_DELAY:60000\n"
                b"receipt:p\n\nafter restart\0"
            )
            assert await read_frame(reader) == b"RECEIPT\nreceipt-id:p\n\n\0"
            client.write(b"UNSUBSCRIBE\nid:0\nreceipt:u\n\n\0")
            assert await read_frame(reader) == b"RECEIPT\nreceipt-id:u\n\n\0"
            client.write(
                b"SEND\ndestination:/queue/timed\npersistent:true\nAMQ_SCHEDULED_DELAY:300\n"
                b"receipt:q\n\nsoon after restart\0"
            )
            assert await read_frame(reader) == b"RECEIPT\nreceipt-id:q\n\n\0"
            await close(client)
        async with dovecote.Broker(listen=["stomp://127.0.0.1:0"], data_dir=data) as broker:
            reader, client = await connect(broker)
            client.write(b"SUBSCRIBE\nid:0\ndestination:/queue/timed\n\n\0")
            assert (await read_frame(reader)).endswith(b"\n\nsoon after restart\0")
            scheduler = broker.router.scheduler
            assert len(scheduler) == 1
            due = scheduler.next_due()
            assert due is not None
            assert due - broker.clock.now_ms() > 50_000
            assert broker.router.timers.next_due() == due  # armed
            await close(client)

    asyncio.run(main())


def test_a_broker_that_fails_to_start_leaves_no_loop_timer_behind():
    async def main() -> None:
        async with dovecote.Broker(listen=["stomp://127.0.0.1:0"]) as first:
            broker = dovecote.Broker(listen=[f"stomp://127.0.0.1:{first.port}"])
            with pytest.raises(OSError, match="address already in use"):
                await broker.start()  # the port is taken
            fired: list[int] = []
            broker.router.timers.call_later(0, lambda: fired.append(1))
            await asyncio.sleep(0.05)
            assert fired == []  # nothing of the broker that never started runs on the loop

    asyncio.run(main())


class Sink:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.bodies.append(entry.message.body)


class FailingAckStore(FailFirstScheduledAck, MemoryStore):
    """Fails the first ack of a scheduled record."""


def scheduled(router: Router, body: bytes, delay_ms: int, *, persistent: bool) -> None:
    router.send(
        Message(
            router.new_message_id(),
            "timed",
            RoutingType.ANYCAST,
            body,
            {"AMQ_SCHEDULED_DELAY": str(delay_ms)},
            persistent=persistent,
        )
    )


def test_the_loop_driver_keeps_the_scheduler_going_after_a_firing_fails() -> None:
    """A firing that raises is reported by the loop, and the timer is armed again: scheduled
    delivery never stops for good."""
    T0 = 1_000_000

    async def main() -> tuple[list[object], list[bytes], bool]:
        loop = asyncio.get_running_loop()
        errors: list[object] = []
        loop.set_exception_handler(lambda loop, context: errors.append(context["exception"]))
        clock = FakeClock(T0)
        router = Router(FailingAckStore(), clock)
        sink = Sink()
        router.consume_queue("timed", Consumer("c", sink))
        scheduled(router, b"a", 10, persistent=True)
        scheduled(router, b"b", 10, persistent=True)
        clock.now += 10
        wakeup = LoopWakeup(loop, router.timers, clock)
        router.timers.set_wakeup(wakeup)
        for _ in range(100):
            await asyncio.sleep(0)
            if len(sink.bodies) == 2:
                break
        return errors, sink.bodies, wakeup.is_armed

    errors, bodies, armed = asyncio.run(main())
    assert [str(e) for e in errors] == ["boom"]
    assert bodies == [b"a", b"b"]
    assert not armed  # nothing left to wait for


@pytest.mark.parametrize("runner", ["asyncio", "uvloop"])
def test_a_scheduled_backlog_fires_in_slices_with_loop_turns_between(runner: str) -> None:
    """2,500 messages due at once fire FIRE_SLICE per loop turn: the connections (here a
    callback run once per turn) are served between the slices."""
    T0 = 1_000_000

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        clock = FakeClock(T0)
        router = Router(MemoryStore(), clock)
        sink = Sink()
        router.consume_queue("timed", Consumer("c", sink))
        for n in range(2500):
            scheduled(router, b"%d" % n, 10, persistent=False)
        clock.now += 10
        seen: list[int] = []  # messages delivered, sampled once per loop turn

        def turn() -> None:
            seen.append(len(sink.bodies))
            if len(sink.bodies) < 2500 and len(seen) < 1000:
                loop.call_soon(turn)

        loop.call_soon(turn)
        router.timers.set_wakeup(LoopWakeup(loop, router.timers, clock))
        for _ in range(1000):
            await asyncio.sleep(0)
            if len(sink.bodies) == 2500:
                break
        await asyncio.sleep(0)
        return seen

    run = asyncio.run if runner == "asyncio" else pytest.importorskip("uvloop").run
    seen = run(main())
    assert seen[-1] == 2500
    assert {FIRE_SLICE, 2 * FIRE_SLICE} <= set(seen)
    assert max(b - a for a, b in itertools.pairwise(seen)) <= FIRE_SLICE


def test_broker_stop_leaves_no_timer_armed() -> None:
    async def main() -> None:
        broker = dovecote.Broker(listen=["stomp://127.0.0.1:0"])
        await broker.start()
        try:
            reader, client = await connect(broker)
            client.write(
                b"SEND\ndestination:/queue/timed\nAMQ_SCHEDULED_DELAY:50\nreceipt:p\n\nlate\0"
            )
            assert await read_frame(reader) == b"RECEIPT\nreceipt-id:p\n\n\0"
            assert broker._wakeup is not None
            assert broker._wakeup.is_armed
            await close(client)
        finally:
            await broker.stop()
        assert not broker._wakeup.is_armed
        await asyncio.sleep(0.1)
        assert broker.router.scheduler.fired == 0
        assert len(broker.router.scheduler) == 1

    asyncio.run(main())


def test_a_broker_that_fails_to_start_closes_its_journal(tmp_path: Path) -> None:
    async def main() -> None:
        async with dovecote.Broker(listen=["stomp://127.0.0.1:0"]) as first:
            broker = dovecote.Broker(
                listen=[f"stomp://127.0.0.1:{first.port}"], data_dir=tmp_path / "data"
            )
            with pytest.raises(OSError, match="address already in use"):
                await broker.start()  # the port is taken

    asyncio.run(main())
    assert not [t for t in threading.enumerate() if t.name == "dovecote-journal"]
