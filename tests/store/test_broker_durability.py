"""Durability through the broker: a broker in a thread (``BrokerThread``) on a data directory,
stomp.py clients, a clean stop and a start on the same directory.

"Nothing else arrives" is checked with a marker: a message sent after the broker restarted, on
the same destination; everything recovered is queued before it, so it must come last.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import stomp
from journal_os import JournalOs

from dovecote.pytest_plugin import BrokerThread
from dovecote.store.journal import JournalConfig
from stomp_peers import Inbox

TIMEOUT = 10.0


class Client(Inbox):
    """One stomp.py connection (STOMP 1.2) recording what arrives; every wait is bounded."""

    def __init__(self, port: int, client_id: str | None = None) -> None:
        super().__init__()
        self._receipt_ids = 0
        self.conn = stomp.Connection12(
            [("127.0.0.1", port)], auto_decode=False, reconnect_attempts_max=1
        )
        self.conn.set_listener("client", self)
        self.conn.connect(wait=True, headers={"client-id": client_id} if client_id else {})

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        self._wait(predicate, what, TIMEOUT)

    def receipt(self) -> str:
        self._receipt_ids += 1
        return f"r{self._receipt_ids}"

    def confirmed(self, send: Callable[[str], None]) -> None:
        receipt = self.receipt()
        send(receipt)
        self.wait(lambda: receipt in self.receipts, f"no receipt {receipt}")

    def send(self, destination: str, body: bytes, **headers: str) -> None:
        """Send and wait for the broker's RECEIPT."""
        self.confirmed(
            lambda r: self.conn.send(destination, body, headers={**headers, "receipt": r})
        )

    def subscribe(self, destination: str, sub_id: str, ack: str = "auto", **headers: str) -> None:
        self.confirmed(
            lambda r: self.conn.subscribe(
                destination, sub_id, ack=ack, headers={**headers, "receipt": r}
            )
        )

    def wait_messages(self, count: int) -> list[Any]:
        self.wait(lambda: len(self.messages) >= count, f"no {count} messages")
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        if self.conn.is_connected():
            self.conn.disconnect()
            self.wait(lambda: self.disconnected, "not disconnected")
        self.conn.transport.disconnect_socket()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    opened: list[Client] = []

    def connect(port: int, client_id: str | None = None) -> Client:
        client = Client(port, client_id)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


@contextmanager
def broker_on(data_dir: Path, **overrides: Any) -> Iterator[BrokerThread]:
    broker = BrokerThread(data_dir=data_dir, **overrides).start()
    try:
        yield broker
    finally:
        broker.stop()


def bodies(frames: list[Any]) -> list[bytes]:
    return [frame.body for frame in frames]


PERSISTENT = {"persistent": "true"}


def test_persistent_messages_survive_a_restart_and_non_persistent_do_not(
    tmp_path: Path, clients: Callable[..., Client]
) -> None:
    binary = b"\x00\x01binary\x00\xff"
    with broker_on(tmp_path) as broker:
        producer = clients(broker.port)
        producer.send("/queue/orders", b"one", **PERSISTENT, priority="9", **{"x-app": "ünï"})
        producer.send("/queue/orders", b"not kept")
        producer.send("/queue/orders", binary, **PERSISTENT)
        producer.send("/queue/orders", b"", **PERSISTENT)
        # A durable subscription, then away while messages come for it.
        subscriber = clients(broker.port, client_id="c1")
        subscriber.subscribe(
            "/topic/prices.eu", "d1", "client-individual", **{"activemq.subscriptionName": "s1"}
        )
        subscriber.close()
        producer.send("/topic/prices.eu", b"price kept", **PERSISTENT)
        producer.send("/topic/prices.eu", b"price not kept")
    with broker_on(tmp_path) as broker:
        consumer = clients(broker.port)
        consumer.subscribe("/queue/orders", "q", "client-individual")
        consumer.wait_messages(3)
        clients(broker.port).send("/queue/orders", b"marker")
        got = consumer.wait_messages(4)
        # Priority 9 first; then the rest in order. The non-persistent one is gone.
        assert bodies(got) == [b"one", binary, b"", b"marker"]
        first = got[0].headers
        assert (first["persistent"], first["priority"], first["x-app"]) == ("true", "9", "ünï")
        assert all("redelivered" not in frame.headers for frame in got)
        subscriber = clients(broker.port, client_id="c1")
        subscriber.subscribe(
            "/topic/prices.eu", "d1", "client-individual", **{"activemq.subscriptionName": "s1"}
        )
        subscriber.wait_messages(1)
        clients(broker.port).send("/topic/prices.eu", b"marker")
        assert bodies(subscriber.wait_messages(2)) == [b"price kept", b"marker"]


def test_delivered_but_unacknowledged_messages_come_back_redelivered(
    tmp_path: Path, clients: Callable[..., Client]
) -> None:
    with broker_on(tmp_path) as broker:
        producer = clients(broker.port)
        for body in (b"first", b"second", b"third"):
            producer.send("/queue/work", body, **PERSISTENT)
        consumer = clients(broker.port)
        consumer.subscribe("/queue/work", "w", "client-individual")
        frames = consumer.wait_messages(3)
        assert all("redelivered" not in frame.headers for frame in frames)
        consumer.confirmed(lambda r: consumer.conn.ack(frames[1].headers["ack"], receipt=r))
        # The broker stops with "first" and "third" delivered and not acknowledged.
    with broker_on(tmp_path) as broker:
        consumer = clients(broker.port)
        consumer.subscribe("/queue/work", "w", "client-individual")
        consumer.wait_messages(2)
        clients(broker.port).send("/queue/work", b"marker")
        frames = consumer.wait_messages(3)
        assert bodies(frames) == [b"first", b"third", b"marker"]
        assert [frame.headers.get("redelivered") for frame in frames] == ["true", "true", None]


def test_a_committed_transaction_survives_and_an_aborted_one_does_not(
    tmp_path: Path, clients: Callable[..., Client]
) -> None:
    with broker_on(tmp_path) as broker:
        producer = clients(broker.port)
        producer.confirmed(lambda r: producer.conn.begin("t1", receipt=r))
        producer.send("/queue/tx", b"a1", transaction="t1", **PERSISTENT)
        producer.send("/queue/tx", b"a2", transaction="t1", **PERSISTENT)
        producer.confirmed(lambda r: producer.conn.commit("t1", receipt=r))
        producer.confirmed(lambda r: producer.conn.begin("t2", receipt=r))
        producer.send("/queue/tx", b"b1", transaction="t2", **PERSISTENT)
        producer.confirmed(lambda r: producer.conn.abort("t2", receipt=r))
        # Still open when the broker stops: never committed.
        producer.confirmed(lambda r: producer.conn.begin("t3", receipt=r))
        producer.send("/queue/tx", b"c1", transaction="t3", **PERSISTENT)
    with broker_on(tmp_path) as broker:
        consumer = clients(broker.port)
        consumer.subscribe("/queue/tx", "t")
        consumer.wait_messages(2)
        clients(broker.port).send("/queue/tx", b"marker")
        assert bodies(consumer.wait_messages(3)) == [b"a1", b"a2", b"marker"]


class FailingWrites:
    """``os.write`` for the journal that raises ENOSPC while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = threading.Event()

    def write(self, fd: int, data: Any) -> int:
        if self.failing.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


_UNESCAPE = {"\\c": ":", "\\n": "\n", "\\r": "\r", "\\\\": "\\"}


def _barrier(client: Any) -> None:
    """Wait until everything the broker recorded so far is on disk (a persistent SEND's
    RECEIPT waits for it), so that no earlier batch is left to fail."""
    client.send(b"SEND\ndestination:/topic/barrier\npersistent:true\nreceipt:b\n\n\0")
    assert client.read_frame() == b"RECEIPT\nreceipt-id:b\n\n\0"


@contextmanager
def _writes_restored(writes: FailingWrites) -> Iterator[None]:
    """Writes succeed again before the broker stops, even if the test failed half way."""
    try:
        yield
    finally:
        writes.failing.clear()


def _headers(frame: bytes) -> tuple[bytes, dict[str, str]]:
    """A frame's command and headers, unescaped (STOMP 1.2 "Value Encoding")."""
    head = frame.split(b"\n\n", 1)[0].decode()
    command, *lines = head.split("\n")
    headers = {}
    for line in lines:
        name, value = line.split(":", 1)
        headers[name] = re.sub(r"\\.", lambda m: _UNESCAPE[m.group(0)], value)
    return command.encode(), headers


def test_while_the_journal_cannot_write_persistent_sends_are_refused(
    tmp_path: Path, journal_os: JournalOs, raw_stomp: Callable[..., Any]
) -> None:
    writes = FailingWrites()
    journal_os.instead["write"] = writes.write
    with (
        broker_on(tmp_path, journal=JournalConfig(retry_interval=0.05)) as broker,
        _writes_restored(writes),  # (exits first: before the broker stops)
    ):
        assert broker.broker is not None
        journal = broker.broker.journal
        assert journal is not None
        consumer = raw_stomp(broker.port)
        consumer.connect()
        consumer.send(b"SUBSCRIBE\nid:0\ndestination:/queue/plain\nreceipt:s\n\n\0")
        assert consumer.read_frame() == b"RECEIPT\nreceipt-id:s\n\n\0"
        _barrier(consumer)
        writes.failing.set()
        stuck = raw_stomp(broker.port)
        stuck.connect()
        stuck.send(b"SEND\ndestination:/queue/kept\npersistent:true\nreceipt:k1\n\nkept\0")
        deadline = time.monotonic() + TIMEOUT
        while journal.is_available():
            assert time.monotonic() < deadline, "the journal never became unavailable"
            time.sleep(0.01)
        refused = raw_stomp(broker.port)
        refused.connect()
        refused.send(b"SEND\ndestination:/queue/kept\npersistent:true\nreceipt:k2\n\nno\0")
        command, headers = _headers(refused.read_frame())
        assert command == b"ERROR"
        assert headers["message"] == (
            "Service unavailable: the broker cannot write its journal (disk full or I/O "
            "error); persistent messages are refused until it recovers"
        )
        assert headers["receipt-id"] == "k2"
        assert refused.read_until_closed() == b""
        # Non-persistent traffic and consumers carry on (receipts too: see the next test).
        plain = raw_stomp(broker.port)
        plain.connect()
        plain.send(b"SEND\ndestination:/queue/plain\n\nstill works\0")
        frame = consumer.read_frame()
        assert _headers(frame)[0] == b"MESSAGE"
        assert _headers(frame)[1]["destination"] == "/queue/plain"
        assert frame.endswith(b"\n\nstill works\0")
        # Nor is a persistent message taken into a transaction (refused at its SEND).
        plain.send(b"BEGIN\ntransaction:t\n\n\0")
        plain.send(b"SEND\ndestination:/queue/kept\npersistent:true\ntransaction:t\n\nno\0")
        command, headers = _headers(plain.read_frame())
        assert command == b"ERROR"
        assert headers["message"] == (
            "Service unavailable: the broker cannot write its journal (disk full or I/O "
            "error); persistent messages are refused until it recovers"
        )
        # The stuck persistent message was never confirmed; once writes succeed, it is.
        time.sleep(0.1)
        writes.failing.clear()
        assert stuck.read_frame() == b"RECEIPT\nreceipt-id:k1\n\n\0"
        assert journal.is_available()
        stuck.send(b"SEND\ndestination:/queue/kept\npersistent:true\nreceipt:k3\n\nalso\0")
        assert stuck.read_frame() == b"RECEIPT\nreceipt-id:k3\n\n\0"
    with broker_on(tmp_path) as broker:
        reader = raw_stomp(broker.port)
        reader.connect()
        reader.send(b"SUBSCRIBE\nid:0\ndestination:/queue/kept\n\n\0")
        got = [reader.read_frame().split(b"\n\n", 1)[1] for _ in range(2)]
        assert got == [b"kept\0", b"also\0"]


def test_receipts_of_non_persistent_sends_do_not_wait_for_a_stuck_journal(
    tmp_path: Path, journal_os: JournalOs, raw_stomp: Callable[..., Any]
) -> None:
    """Regression: every RECEIPT went through call_when_durable, so while the journal could
    not write, a non-persistent SEND's receipt waited behind another connection's batch."""
    writes = FailingWrites()
    journal_os.instead["write"] = writes.write
    with (
        broker_on(tmp_path, journal=JournalConfig(retry_interval=0.05)) as broker,
        _writes_restored(writes),  # (exits first: before the broker stops)
    ):
        assert broker.broker is not None
        journal = broker.broker.journal
        assert journal is not None
        stuck = raw_stomp(broker.port)
        stuck.connect()
        _barrier(stuck)
        writes.failing.set()
        stuck.send(b"SEND\ndestination:/queue/kept\npersistent:true\nreceipt:k1\n\nkept\0")
        deadline = time.monotonic() + TIMEOUT
        while journal.is_available():
            assert time.monotonic() < deadline, "the journal never became unavailable"
            time.sleep(0.01)
        plain = raw_stomp(broker.port)
        plain.connect()
        plain.send(b"SEND\ndestination:/queue/plain\nreceipt:p1\n\nstill works\0")
        assert plain.read_frame(timeout=2.0) == b"RECEIPT\nreceipt-id:p1\n\n\0"
