"""Producer and consumer processes: the two ends of every load the benchmark drives.

Each worker runs in its own process (started by ``runner`` with the ``spawn`` context), owns
one STOMP connection, and talks to the parent only through:

- its end of a one-way ``Pipe``: ``Ready`` once set up, then exactly one report (a
  ``ProducerReport``/``ConsumerReport``) or a ``Failed`` carrying a readable reason;
- ``go``, an Event the parent sets when every worker is ready (producers wait for it);
- ``board``, a shared array of int64: slot ``STOP`` asks consumers to finish, slot
  ``1 + consumer index`` holds that consumer's count of distinct messages so far.

Producers either send pre-encoded SEND frames in batches, one ``sendall`` per batch, or (when
paced) build each frame at its due time ``t0 + k / rate`` so a slow moment never shifts the
schedule. With ``receipt_every = N`` every Nth SEND asks for a RECEIPT and the producer
waits for it before going on.

Consumers that time messages set TCP_QUICKACK after every read (see ``_consume``); the
others leave ACK timing to the kernel, as ordinary clients do.

Invariants: every wait has a deadline; a consumer that sees nothing new for
``idle_timeout`` seconds stops and reports what it has; a worker whose parent is gone exits.
"""

from __future__ import annotations

import os
import socket
import time
from array import array
from collections.abc import Iterator, MutableSequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

from .frames import BenchError, SendTemplate, disconnect_frame, subscribe_frame
from .receiver import Receiver
from .session import RECV_SIZE, Session, Target

STOP = 0
BATCH_BYTES = 64 * 1024
PREBUILD_LIMIT = 256 * 1024 * 1024  # encode a whole run up front when it fits in this
POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class ProducerSpec:
    """What one producer sends; ``rate`` 0 means as fast as the broker takes it."""

    target: Target
    producer_id: int
    destination: str
    messages: int
    size: int
    persistent: bool = False
    receipt_every: int = 0
    rate: float = 0.0
    header_cycle: tuple[str, ...] = ()  # extra header lines by seq (see SendTemplate)
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """One subscription; ``expect`` > 0 makes the consumer stop once it saw that many."""

    target: Target
    index: int
    destination: str
    producers: int
    per_producer: int
    ack: str = "auto"
    expect: int = 0
    timed_from_seq: int = -1
    quick_ack: bool = False
    subscribe_headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 30.0
    idle_timeout: float = 15.0
    nack_every: int = 0


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker is connected (and subscribed); producers now wait for ``go``."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The worker gave up; ``reason`` is meant for the person running the benchmark."""

    reason: str


@dataclass(frozen=True, slots=True)
class ProducerReport:
    """What a producer sent and when; lag is how far behind its schedule it fell."""

    producer_id: int
    sent: int
    first_send_ns: int
    last_send_ns: int
    max_lag_ns: int = 0
    late_sends: int = 0  # paced sends more than a millisecond behind schedule


@dataclass(frozen=True, slots=True)
class ConsumerReport:
    """What one subscription received; ``counts`` has one counter per message of the run."""

    index: int
    counts: array[int]
    messages: int
    unique: int
    foreign: int
    first_ns: int
    last_ns: int
    stalled: bool
    latency_ns: array[int]
    schedule_latency_ns: array[int]


def producer_main(
    spec: ProducerSpec, go: Event, board: MutableSequence[int], out: Connection
) -> None:
    """Process entry point of a producer."""
    try:
        out.send(_produce(spec, go, board, out))
    except BenchError as exc:
        out.send(Failed(f"producer {spec.producer_id}: {exc}"))
    except OSError as exc:
        out.send(Failed(f"producer {spec.producer_id}: socket error: {exc}"))
    finally:
        out.close()


def consumer_main(
    spec: ConsumerSpec, go: Event, board: MutableSequence[int], out: Connection
) -> None:
    """Process entry point of a consumer."""
    try:
        out.send(_consume(spec, go, board, out))
    except BenchError as exc:
        out.send(Failed(f"consumer {spec.index}: {exc}"))
    except OSError as exc:
        out.send(Failed(f"consumer {spec.index}: socket error: {exc}"))
    finally:
        out.close()


def _batches(spec: ProducerSpec, template: SendTemplate) -> Iterator[tuple[bytes, str]]:
    """(bytes to send at once, receipt to wait for after it or "") for an unpaced run."""
    pending: list[bytes] = []
    size = 0
    every = spec.receipt_every
    for seq in range(spec.messages):
        receipt = f"r{seq}" if every and (seq + 1) % every == 0 else ""
        frame = template.frame(spec.producer_id, seq, receipt=receipt)
        pending.append(frame)
        size += len(frame)
        if receipt or size >= BATCH_BYTES:
            yield b"".join(pending), receipt
            pending.clear()
            size = 0
    if pending:
        yield b"".join(pending), ""


def _await_go(go: Event, timeout: float) -> None:
    if not go.wait(timeout):
        raise BenchError(f"no start signal within {timeout:.0f} s")


def _produce(
    spec: ProducerSpec, go: Event, board: MutableSequence[int], out: Connection
) -> ProducerReport:
    template = SendTemplate(
        spec.destination, spec.size, persistent=spec.persistent, header_cycle=spec.header_cycle
    )
    session = Session.open(spec.target, spec.timeout)
    sock = session.sock
    sock.settimeout(spec.timeout)  # a broker that stops reading fails the run, never hangs it
    if spec.rate > 0:
        out.send(Ready())
        _await_go(go, spec.timeout)
        report = _send_paced(spec, session, template)
    else:
        batches: Iterator[tuple[bytes, str]] | list[tuple[bytes, str]]
        batches = _batches(spec, template)
        if spec.messages * (spec.size + 200) <= PREBUILD_LIMIT:
            batches = list(batches)
        out.send(Ready())
        _await_go(go, spec.timeout)
        first = time.perf_counter_ns()
        for data, receipt in batches:
            sock.sendall(data)
            if receipt:
                session.expect(b"RECEIPT", receipt, spec.timeout)
            else:
                session.poll_errors()
        last = time.perf_counter_ns()
        report = ProducerReport(spec.producer_id, spec.messages, first, last)
    session.disconnect(spec.timeout)
    return report


def _send_paced(spec: ProducerSpec, session: Session, template: SendTemplate) -> ProducerReport:
    sock = session.sock
    clock = time.perf_counter_ns
    period_ns = 1e9 / spec.rate
    every = spec.receipt_every
    start = clock()
    max_lag = 0
    late = 0
    now = start
    for seq in range(spec.messages):
        due = start + round(seq * period_ns)
        now = clock()
        if now < due:
            time.sleep((due - now) / 1e9)
            now = clock()
        lag = now - due
        if lag > max_lag:
            max_lag = lag
        if lag > 1_000_000:
            late += 1
        receipt = f"r{seq}" if every and (seq + 1) % every == 0 else ""
        sock.sendall(template.frame(spec.producer_id, seq, due, now, receipt))
        if receipt:
            session.expect(b"RECEIPT", receipt, spec.timeout)
        elif seq % 64 == 0:
            session.poll_errors()
    return ProducerReport(spec.producer_id, spec.messages, start, now, max_lag, late)


def _consume(
    spec: ConsumerSpec, go: Event, board: MutableSequence[int], out: Connection
) -> ConsumerReport:
    session = Session.open(spec.target, spec.timeout)
    sock = session.sock
    receipt = f"sub-{spec.index}"
    sock.sendall(
        subscribe_frame(
            spec.destination, str(spec.index), spec.ack, receipt, spec.subscribe_headers
        )
    )
    session.expect(b"RECEIPT", receipt, spec.timeout)
    receiver = Receiver(
        spec.producers, spec.per_producer, spec.ack, spec.timed_from_seq, spec.nack_every
    )
    clock = time.perf_counter_ns
    receiver.feed(bytes(session.buf), clock())
    out.send(Ready())
    slot = 1 + spec.index
    parent = os.getppid()
    idle_ns = int(spec.idle_timeout * 1e9)
    sock.settimeout(POLL_SECONDS)
    stalled = False
    go_seen_ns = 0  # the idle clock starts with the go signal, not while producers start up
    while not board[STOP]:
        try:
            data = sock.recv(RECV_SIZE)
            if spec.quick_ack:
                # A broker that writes with Nagle on (ActiveMQ's default) holds each small
                # frame until the previous one is ACKed; a delayed ACK (40 ms on Linux) would
                # then show up as broker latency. Linux clears QUICKACK, so re-arm per read.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except TimeoutError:
            if os.getppid() != parent:
                raise BenchError("the benchmark process went away") from None
            if not go.is_set():
                continue  # producers still starting; the parent's deadline covers that
            now = clock()
            go_seen_ns = go_seen_ns or now
            if now - max(go_seen_ns, receiver.last_ns) > idle_ns:
                stalled = True
                break
            continue
        if not data:
            raise BenchError("the broker closed the connection")
        acks = receiver.feed(data, clock())
        if acks:
            sock.sendall(acks)
        board[slot] = receiver.unique
        if spec.expect and receiver.unique >= spec.expect:
            break
    _drain_and_disconnect(session, receiver, spec.timeout)
    return ConsumerReport(
        index=spec.index,
        counts=receiver.counts,
        messages=receiver.messages,
        unique=receiver.unique,
        foreign=receiver.foreign,
        first_ns=receiver.first_ns,
        last_ns=receiver.last_ns,
        stalled=stalled,
        latency_ns=receiver.latency_ns,
        schedule_latency_ns=receiver.schedule_latency_ns,
    )


def _drain_and_disconnect(session: Session, receiver: Receiver, timeout: float) -> None:
    """DISCONNECT; keep counting what still arrives (late duplicates) until its RECEIPT."""
    sock = session.sock
    deadline = time.monotonic() + timeout
    try:
        sock.sendall(disconnect_frame("bye"))
        while b"bye" not in receiver.receipts:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("no RECEIPT for DISCONNECT")
            sock.settimeout(left)
            try:
                data = sock.recv(RECV_SIZE)
            except TimeoutError:
                raise BenchError("no RECEIPT for DISCONNECT") from None
            if not data:
                break  # the broker may close right after the receipt's bytes
            receiver.feed(data, time.perf_counter_ns())  # no ACKs after DISCONNECT
    finally:
        sock.close()
