"""Run one load: start the worker processes, release the producers, watch, collect.

Order of a run: consumers subscribe (each waits for its RECEIPT) while producers connect and
pre-encode their frames; once all are ``Ready`` the parent sets ``go``; it then polls the
consumers' progress on the shared board until every message arrived, progress stalls for
``idle_timeout`` seconds, or a worker fails; it raises the STOP flag and collects one report
per worker.

Invariants: the parent owns every process it starts and ends those still alive when it
returns (terminate, then kill); a run never waits without a deadline; a worker failure is
raised as ``BenchError`` naming the worker.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import cast

from .frames import BenchError
from .session import Target
from .workers import (
    STOP,
    ConsumerReport,
    ConsumerSpec,
    Failed,
    ProducerReport,
    ProducerSpec,
    Ready,
    consumer_main,
    producer_main,
)

MONITOR_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class Load:
    """A run's shape. On a topic every consumer expects every message; on a queue they share.

    ``timed_from_seq`` >= 0 makes consumers record latencies from that sequence number on.
    ``quick_ack`` makes consumers ACK every TCP segment at once (for round-trip-bound loads:
    see ``workers._consume``); throughput loads leave ACK timing to the kernel.
    """

    target: Target
    destination: str
    messages: int  # per producer
    size: int
    producers: int = 1
    consumers: int = 1
    persistent: bool = False
    receipt_every: int = 0
    ack: str = "auto"
    rate: float = 0.0
    timed_from_seq: int = -1
    quick_ack: bool = False
    subscribe_headers: tuple[tuple[str, str], ...] = ()
    # Per consumer: more SUBSCRIBE headers for consumer i (e.g. its selector).
    consumer_headers: tuple[tuple[tuple[str, str], ...], ...] = ()
    # Extra SEND header lines by sequence number (see frames.SendTemplate).
    header_cycle: tuple[str, ...] = ()
    # False: the messages are already queued (a drain); consumers still expect
    # ``producers`` x ``messages`` of them, and time runs from the go signal.
    start_producers: bool = True
    timeout: float = 30.0
    idle_timeout: float = 15.0
    # > 0: consumers NACK the first delivery of every nack_every-th message (redelivery cost)
    nack_every: int = 0

    @property
    def is_topic(self) -> bool:
        """True when every consumer must see every message (a topic subscription each)."""
        return self.destination.startswith("/topic/")

    @property
    def total(self) -> int:
        """Messages the producers send together."""
        return self.messages * self.producers

    def is_complete(self, unique_per_consumer: Sequence[int]) -> bool:
        """True when the consumers, with these counts of distinct messages, have it all."""
        if self.is_topic:
            return all(count >= self.total for count in unique_per_consumer)
        return sum(unique_per_consumer) >= self.total


@dataclass(frozen=True, slots=True)
class Outcome:
    """Every worker's report; time runs from the first send to the last arrival."""

    load: Load
    producers: tuple[ProducerReport, ...]
    consumers: tuple[ConsumerReport, ...]
    go_ns: int = 0  # perf_counter_ns when the workers were told to start

    @property
    def first_send_ns(self) -> int:
        """When the first producer started sending (the go signal if none was started)."""
        return min((p.first_send_ns for p in self.producers), default=self.go_ns)

    @property
    def last_receive_ns(self) -> int:
        """When the last message arrived (the last send, for a load with no consumer)."""
        if not self.consumers:
            return max(p.last_send_ns for p in self.producers)
        return max(c.last_ns for c in self.consumers)

    @property
    def seconds(self) -> float:
        """From first send to last arrival."""
        return max(self.last_receive_ns - self.first_send_ns, 1) / 1e9

    @property
    def first_arrival_seconds(self) -> float:
        """From the go signal to the first message any consumer received."""
        first = min((c.first_ns for c in self.consumers if c.first_ns), default=self.go_ns)
        return max(first - self.go_ns, 0) / 1e9

    @property
    def sent(self) -> int:
        """Messages the producers sent."""
        return sum(p.sent for p in self.producers)


@dataclass(slots=True)
class _Worker:
    name: str
    process: BaseProcess
    reader: Connection
    is_consumer: bool
    ready: bool = False
    report: ProducerReport | ConsumerReport | None = None


def run_load(load: Load) -> Outcome:
    """Run ``load`` to the end and return the reports; raise ``BenchError`` on failure."""
    ctx = multiprocessing.get_context("spawn")
    board = cast(MutableSequence[int], ctx.RawArray("q", 1 + load.consumers))
    go = ctx.Event()
    go_ns = 0
    workers: list[_Worker] = []
    try:
        for index in range(load.consumers):
            spec = _consumer_spec(load, index)
            workers.append(_start(ctx, f"consumer {index}", consumer_main, spec, go, board))
        for producer_id in range(load.producers if load.start_producers else 0):
            pspec = ProducerSpec(
                target=load.target,
                producer_id=producer_id,
                destination=load.destination,
                messages=load.messages,
                size=load.size,
                persistent=load.persistent,
                receipt_every=load.receipt_every,
                rate=load.rate,
                header_cycle=load.header_cycle,
                timeout=load.timeout,
            )
            workers.append(_start(ctx, f"producer {producer_id}", producer_main, pspec, go, board))
        deadline = time.monotonic() + load.timeout + 30  # process start-up is slow under load
        while not all(w.ready for w in workers):
            _collect(workers, deadline, "to connect and subscribe")
        go_ns = time.perf_counter_ns()
        go.set()
        _watch(load, workers, board)
        board[STOP] = 1
        deadline = time.monotonic() + load.timeout
        while any(w.report is None for w in workers):
            _collect(workers, deadline, "to finish")
    finally:
        board[STOP] = 1
        go.set()  # producers still waiting give up at once
        _reap(workers)
    return Outcome(
        load=load,
        producers=tuple(w.report for w in workers if isinstance(w.report, ProducerReport)),
        consumers=tuple(w.report for w in workers if isinstance(w.report, ConsumerReport)),
        go_ns=go_ns,
    )


def _consumer_spec(load: Load, index: int) -> ConsumerSpec:
    # One queue consumer, or a topic subscriber, knows when it has everything; consumers
    # sharing a queue do not, and the parent tells them to stop.
    expect = load.total if load.is_topic or load.consumers == 1 else 0
    return ConsumerSpec(
        target=load.target,
        index=index,
        destination=load.destination,
        producers=load.producers,
        per_producer=load.messages,
        ack=load.ack,
        expect=expect,
        timed_from_seq=load.timed_from_seq,
        quick_ack=load.quick_ack,
        subscribe_headers=load.subscribe_headers
        + (load.consumer_headers[index] if index < len(load.consumer_headers) else ()),
        timeout=load.timeout,
        idle_timeout=load.idle_timeout,
        nack_every=load.nack_every,
    )


def _start(
    ctx: multiprocessing.context.SpawnContext,
    name: str,
    target: Callable[..., None],
    spec: ConsumerSpec | ProducerSpec,
    go: object,
    board: MutableSequence[int],
) -> _Worker:
    reader, writer = ctx.Pipe(duplex=False)
    process = ctx.Process(target=target, args=(spec, go, board, writer), name=name, daemon=True)
    process.start()
    writer.close()  # the child holds its own copy; EOF on reader now means the child is gone
    return _Worker(name, process, reader, isinstance(spec, ConsumerSpec))


def _collect(workers: list[_Worker], deadline: float, doing: str) -> None:
    """Wait for the next message from any worker and record it."""
    pending = [w for w in workers if w.report is None]
    left = deadline - time.monotonic()
    if left <= 0:
        names = ", ".join(w.name for w in pending)
        raise BenchError(f"timed out waiting for {names} {doing}")
    for reader in wait([w.reader for w in pending], timeout=min(left, 1.0)):
        worker = next(w for w in pending if w.reader is reader)
        _receive(worker)


def _receive(worker: _Worker) -> None:
    try:
        message = worker.reader.recv()
    except EOFError:
        worker.process.join(5)
        raise BenchError(
            f"{worker.name} died without a report (exit code {worker.process.exitcode})"
        ) from None
    if isinstance(message, Failed):
        raise BenchError(message.reason)
    if isinstance(message, Ready):
        worker.ready = True
    elif isinstance(message, ProducerReport | ConsumerReport):
        worker.report = message
    else:
        raise BenchError(f"{worker.name} sent {type(message).__name__}")


def _watch(load: Load, workers: list[_Worker], board: MutableSequence[int]) -> None:
    """Return once every message arrived or progress stalled; raise if a worker fails."""
    consumers = load.consumers
    if consumers == 0:  # a fill: done when every producer has its last receipt
        while any(w.report is None for w in workers):
            _collect(workers, time.monotonic() + load.timeout, "to finish sending")
        return
    progress = -1
    quiet_since = time.monotonic()
    while True:
        counts = [board[1 + i] for i in range(consumers)]
        if load.is_complete(counts) or all(w.report is not None for w in workers if w.is_consumer):
            return
        now = time.monotonic()
        if sum(counts) != progress:
            progress = sum(counts)
            quiet_since = now
        elif now - quiet_since > load.idle_timeout:
            return  # the consumers' reports say what is missing
        for reader in wait([w.reader for w in workers if w.report is None], MONITOR_SECONDS):
            _receive(next(w for w in workers if w.reader is reader))


def _reap(workers: list[_Worker]) -> None:
    """End every worker process this run started that is still alive."""
    for worker in workers:
        worker.process.join(timeout=5 if worker.report is not None else 0.5)
    for worker in workers:
        if worker.process.is_alive():
            worker.process.terminate()
            worker.process.join(timeout=2)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=2)
        worker.reader.close()
