"""The benchmark scenarios: each one a function from ``Options`` to a ``Result``.

- ``queue``: non-persistent queue, 1 producer / 1 consumer; msg/s from first send to last
  arrival.
- ``fanout``: topic, 1 producer / ``subscribers`` subscribers; deliveries/s.
- ``latency``: 1 producer paced at ``rate`` for ``duration`` seconds; the first ``warmup``
  seconds are dropped; percentiles of (arrival - send stamp) in ms.
- ``idle``: ``connections`` idle STOMP connections; the broker's RSS and threads per
  connection (needs ``pid``, the broker's process id on this machine), each read once the
  broker's threads and RSS stopped changing (at most ``settle`` seconds).
- ``acked``: as ``queue``, but the consumer acknowledges every message (client-individual):
  the baseline for ``redelivery``.
- ``redelivery``: as ``acked``, but the consumer NACKs the first delivery of every 10th
  message, so 10% of the messages are redelivered once. Meant for a broker whose redelivery
  delay is 0 (Dovecote: ``initial_redelivery_delay_ms = 0`` in its config file), to measure
  the redelivery path itself rather than a delay.
- ``persistent``: persistent queue, 1 producer waiting for a RECEIPT after every send.
- ``persistent16``: persistent queue, 16 producers each waiting for a RECEIPT per send, 4
  consumers acknowledging client-individual, 40,000 x 1 KiB.
- ``selectors``: non-persistent queue, 1 producer / ``SHARDS`` (10) consumers, each with the
  selector ``shard = 'k'``; the producer sets ``shard`` round robin; 100,000 x 256 B. Exact
  loss/duplicate counting, and every message must reach the consumer of its shard.
- ``priority``: like ``queue``, with priorities 0-9 mixed (a fixed pseudo-random cycle).
- ``fill``: 200,000 x 1 KiB persistent into ``destination`` by 4 producers (a RECEIPT every
  100), no consumer; with ``pid``, the broker's RSS once full.
- ``drain``: 1 consumer empties ``destination`` (as ``fill`` left it); time to the first
  message and msg/s. Restart the broker between the two to measure recovery.

A new load is a ``runner.Load`` with other numbers (producers, consumers, ``ack``,
``receipt_every``, ``persistent``) and one of the ``_throughput`` reports.

Invariants: every run uses destinations unique to it (``bench.<run id>``); a result is ``ok``
only when every message arrived exactly once and nothing foreign arrived.
"""

from __future__ import annotations

import random
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .accounting import Tally, describe_missing, merge, percentile, tally
from .frames import BenchError
from .idle import close_all, open_connections, raise_open_file_limit, settled_status
from .runner import Load, Outcome, run_load
from .session import Target

Number = int | float


@dataclass(frozen=True, slots=True)
class Options:
    """Everything a scenario may need; ``messages`` None means the scenario's default."""

    target: Target
    messages: int | None = None
    size: int | None = None  # None: the scenario's own default
    destination: str | None = None
    subscribers: int = 10
    rate: float = 2000.0
    duration: float = 10.0
    warmup: float = 1.0
    connections: int = 5000
    parallel: int = 200
    settle: float = 60.0
    pid: int | None = None
    timeout: float = 30.0
    idle_timeout: float = 15.0


@dataclass(frozen=True, slots=True)
class Result:
    """One scenario's outcome: a line for people and numbers for JSON."""

    scenario: str
    ok: bool
    summary: str
    numbers: dict[str, Number | list[int]] = field(default_factory=dict)


def new_run_id() -> str:
    """A short id that keeps this run's destinations apart from any other run's."""
    return secrets.token_hex(6)


def _load(opts: Options, kind: str, messages: int) -> Load:
    """1 producer / 1 consumer on a fresh ``kind`` ("queue" or "topic") destination."""
    return Load(
        target=opts.target,
        destination=f"/{kind}/bench.{new_run_id()}",
        messages=messages,
        size=opts.size or 256,
        timeout=opts.timeout,
        idle_timeout=opts.idle_timeout,
    )


def _loss_notes(counts: Tally, per_producer: int) -> list[str]:
    notes = []
    if counts.lost:
        missing = describe_missing(counts.first_lost, per_producer)
        notes.append(f"LOST {counts.lost:,} (first missing producer/seq: {missing})")
    if counts.duplicates:
        notes.append(f"DUPLICATES {counts.duplicates:,}")
    return notes


def _run_notes(outcome: Outcome) -> list[str]:
    notes = []
    foreign = sum(c.foreign for c in outcome.consumers)
    if foreign:
        notes.append(f"{foreign:,} messages arrived that this run did not send")
    stalled = [str(c.index) for c in outcome.consumers if c.stalled]
    if stalled:
        notes.append(f"consumer {','.join(stalled)} stalled (nothing new for the idle timeout)")
    return notes


def _throughput(name: str, outcome: Outcome) -> Result:
    """msg/s for loads whose consumers share the messages (queues)."""
    load = outcome.load
    counts = tally(merge(c.counts for c in outcome.consumers))
    seconds = outcome.seconds
    rate = counts.unique / seconds
    note = "; ".join(_loss_notes(counts, load.messages) + _run_notes(outcome))
    summary = (
        f"{rate:,.0f} msg/s  ({load.producers}P/{load.consumers}C, {outcome.sent:,} x "
        f"{load.size} B in {seconds:.2f} s; received {counts.received:,}, "
        f"lost {counts.lost:,}, duplicates {counts.duplicates:,})"
    )
    if note:
        summary += "  " + note
    return Result(
        scenario=name,
        ok=not note,
        summary=summary,
        numbers={
            "msg_per_s": round(rate, 1),
            "seconds": round(seconds, 4),
            "sent": outcome.sent,
            "received": counts.received,
            "lost": counts.lost,
            "duplicates": counts.duplicates,
            "producers": load.producers,
            "consumers": load.consumers,
            "size": load.size,
        },
    )


def queue(opts: Options) -> Result:
    """Non-persistent queue, 1 producer / 1 consumer, 100,000 x 256 B by default."""
    load = _load(opts, "queue", opts.messages or 100_000)
    return _throughput("queue", run_load(load))


def acked(opts: Options) -> Result:
    """``queue`` with a client-individual consumer that ACKs every message."""
    load = replace(_load(opts, "queue", opts.messages or 100_000), ack="client-individual")
    return _throughput("acked", run_load(load))


REDELIVER_EVERY = 10


def redelivery(opts: Options) -> Result:
    """``acked``, but every 10th message is NACKed once and counted on its redelivery."""
    load = replace(
        _load(opts, "queue", opts.messages or 100_000),
        ack="client-individual",
        nack_every=REDELIVER_EVERY,
    )
    return _throughput("redelivery", run_load(load))


def persistent(opts: Options) -> Result:
    """Persistent queue, 1 producer waiting for a RECEIPT per send, 1 consumer, 20,000 x 256 B."""
    load = replace(_load(opts, "queue", opts.messages or 20_000), persistent=True, receipt_every=1)
    return _throughput("persistent", run_load(load))


def fanout(opts: Options) -> Result:
    """Topic, 1 producer -> ``subscribers`` subscribers, 20,000 x 256 B by default."""
    load = replace(_load(opts, "topic", opts.messages or 20_000), consumers=opts.subscribers)
    outcome = run_load(load)
    per_subscriber = [tally(c.counts) for c in outcome.consumers]
    deliveries = sum(t.unique for t in per_subscriber)
    seconds = outcome.seconds
    rate = deliveries / seconds
    lost = [t.lost for t in per_subscriber]
    dups = [t.duplicates for t in per_subscriber]
    notes = [
        f"subscriber {i}: {', '.join(_loss_notes(t, load.messages))}"
        for i, t in enumerate(per_subscriber)
        if not t.is_exact
    ] + _run_notes(outcome)
    summary = (
        f"{rate:,.0f} deliveries/s  ({outcome.sent:,} x {load.size} B to {load.consumers} "
        f"subscribers in {seconds:.2f} s; lost per subscriber {_short(lost)}, "
        f"duplicates per subscriber {_short(dups)})"
    )
    if notes:
        summary += "  " + "; ".join(notes)
    return Result(
        scenario="fanout",
        ok=not notes,
        summary=summary,
        numbers={
            "deliveries_per_s": round(rate, 1),
            "msg_per_s": round(rate / load.consumers, 1),
            "seconds": round(seconds, 4),
            "sent": outcome.sent,
            "subscribers": load.consumers,
            "deliveries": deliveries,
            "lost_per_subscriber": lost,
            "duplicates_per_subscriber": dups,
            "size": load.size,
        },
    )


def _short(values: list[int]) -> str:
    return "0" if not any(values) else ",".join(str(v) for v in values)


def latency(opts: Options) -> Result:
    """One paced producer; latency percentiles after a warm-up second."""
    if opts.rate <= 0 or opts.duration <= opts.warmup:
        raise BenchError("latency needs --rate > 0 and --duration longer than --warmup")
    messages = round(opts.rate * opts.duration)  # --messages does not apply: time does
    warm = round(opts.rate * opts.warmup)
    load = replace(
        _load(opts, "queue", messages), rate=opts.rate, timed_from_seq=warm, quick_ack=True
    )
    outcome = run_load(load)
    counts = tally(merge(c.counts for c in outcome.consumers))
    samples = sorted(s for c in outcome.consumers for s in c.latency_ns)
    planned = sorted(s for c in outcome.consumers for s in c.schedule_latency_ns)
    if not samples:
        raise BenchError("no latency samples arrived after the warm-up")
    ms = {f"{k}_ms": round(percentile(samples, q) / 1e6, 3) for k, q in _PERCENTILES}
    ms["mean_ms"] = round(statistics.fmean(samples) / 1e6, 3)
    schedule_p99 = round(percentile(planned, 0.99) / 1e6, 3)
    producer = outcome.producers[0]
    note = "; ".join(_loss_notes(counts, load.messages) + _run_notes(outcome))
    summary = (
        f"p50 {ms['p50_ms']:.3f} ms, p90 {ms['p90_ms']:.3f}, p99 {ms['p99_ms']:.3f}, "
        f"p99.9 {ms['p99.9_ms']:.3f}, max {ms['max_ms']:.3f}  ({len(samples):,} samples at "
        f"{opts.rate:,.0f} msg/s after {opts.warmup:g} s warm-up; p99 from schedule "
        f"{schedule_p99:.3f} ms; {producer.late_sends} sends >1 ms late)"
    )
    if note:
        summary += "  " + note
    return Result(
        scenario="latency",
        ok=not note,
        summary=summary,
        numbers={
            **ms,
            "samples": len(samples),
            "rate": opts.rate,
            "sent": outcome.sent,
            "lost": counts.lost,
            "duplicates": counts.duplicates,
            "schedule_p99_ms": schedule_p99,
            "schedule_max_ms": round(planned[-1] / 1e6, 3),
            "producer_max_lag_ms": round(producer.max_lag_ns / 1e6, 3),
            "late_sends": producer.late_sends,
            "size": load.size,
        },
    )


_PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))


def idle(opts: Options) -> Result:
    """``connections`` idle connections; broker RSS and threads per connection."""
    if opts.pid is None:
        raise BenchError("idle needs --pid, the broker's process id, to read its memory")
    count = opts.connections
    limit = raise_open_file_limit()
    if count + 100 > limit:
        raise BenchError(f"{count} connections need more open files than the limit ({limit})")
    before, steady_before = settled_status(opts.pid, opts.settle)
    started = time.monotonic()
    socks = open_connections(opts.target, count, opts.parallel, opts.timeout)
    try:
        opened_in = time.monotonic() - started
        after, steady_after = settled_status(opts.pid, opts.settle)
    finally:
        close_all(socks)
    kib = (after.rss_kib - before.rss_kib) / count
    threads = (after.threads - before.threads) / count
    summary = (
        f"{kib:,.1f} KiB and {threads:.2f} threads per connection  ({count:,} connections "
        f"opened in {opened_in:.1f} s; RSS {before.rss_kib / 1024:,.0f} -> "
        f"{after.rss_kib / 1024:,.0f} MiB, threads {before.threads} -> {after.threads})"
    )
    if not (steady_before and steady_after):
        summary += f"  (broker still changing after {opts.settle:g} s: numbers are rough)"
    return Result(
        scenario="idle",
        ok=True,
        summary=summary,
        numbers={
            "kib_per_connection": round(kib, 2),
            "threads_per_connection": round(threads, 3),
            "connections": count,
            "open_seconds": round(opened_in, 3),
            "rss_before_kib": before.rss_kib,
            "rss_after_kib": after.rss_kib,
            "threads_before": before.threads,
            "threads_after": after.threads,
            "settled": steady_before and steady_after,
        },
    )


FILL_PRODUCERS = 4
FILL_MESSAGES = 200_000


def persistent16(opts: Options) -> Result:
    """16 producers with a RECEIPT per persistent send, 4 client-individual consumers."""
    total = opts.messages or 40_000
    load = replace(
        _load(opts, "queue", max(1, total // 16)),
        size=opts.size or 1024,
        producers=16,
        consumers=4,
        persistent=True,
        receipt_every=1,
        ack="client-individual",
    )
    return _throughput("persistent16", run_load(load))


def _fill_load(opts: Options) -> Load:
    if not opts.destination:
        raise BenchError("fill and drain need --destination /queue/NAME")
    total = opts.messages or FILL_MESSAGES
    return replace(
        _load(opts, "queue", max(1, total // FILL_PRODUCERS)),
        destination=opts.destination,
        size=opts.size or 1024,
        producers=FILL_PRODUCERS,
        persistent=True,
        receipt_every=100,
    )


def fill(opts: Options) -> Result:
    """Persistent backlog with no consumer; msg/s until the last receipt, and broker RSS."""
    load = replace(_fill_load(opts), consumers=0)
    outcome = run_load(load)
    seconds = outcome.seconds
    rate = outcome.sent / seconds
    numbers: dict[str, Number | list[int]] = {
        "msg_per_s": round(rate, 1),
        "seconds": round(seconds, 3),
        "sent": outcome.sent,
        "size": load.size,
    }
    summary = f"{rate:,.0f} msg/s  ({outcome.sent:,} x {load.size} B persistent in {seconds:.2f} s"
    if opts.pid is not None:
        status, _ = settled_status(opts.pid, 5.0)
        numbers["rss_mib"] = round(status.rss_kib / 1024, 1)
        summary += f"; broker RSS {status.rss_kib / 1024:,.0f} MiB"
    return Result(
        scenario="fill", ok=outcome.sent == load.total, summary=summary + ")", numbers=numbers
    )


def drain(opts: Options) -> Result:
    """Empty the queue ``fill`` left; time to the first message, then msg/s."""
    load = replace(_fill_load(opts), start_producers=False)
    outcome = run_load(load)
    result = _throughput("drain", outcome)
    first = outcome.first_arrival_seconds
    numbers = {**result.numbers, "first_message_s": round(first, 3)}
    return replace(
        result, summary=f"first message after {first:.3f} s; " + result.summary, numbers=numbers
    )


SHARDS = 10


def selectors(opts: Options) -> Result:
    """``SHARDS`` consumers with disjoint selectors on one queue, 100,000 x 256 B by default."""
    load = replace(
        _load(opts, "queue", opts.messages or 100_000),
        consumers=SHARDS,
        header_cycle=tuple(f"shard:{k}\n" for k in range(SHARDS)),
        consumer_headers=tuple((("selector", f"shard = '{k}'"),) for k in range(SHARDS)),
    )
    outcome = run_load(load)
    result = _throughput("selectors", outcome)
    # Message i (one producer: its seq) has shard i % SHARDS: only that consumer may have it.
    wrong = sum(
        1
        for c in outcome.consumers
        for i, count in enumerate(c.counts)
        if count and i % SHARDS != c.index
    )
    if wrong:
        note = f"  {wrong:,} messages reached a consumer whose selector does not match them"
        return replace(result, ok=False, summary=result.summary + note)
    return result


def priority(opts: Options) -> Result:
    """1P/1C queue with message priorities 0-9 mixed, 100,000 x 256 B by default."""
    rng = random.Random(4)  # a fixed cycle: runs compare like with like
    cycle = tuple(f"priority:{rng.randrange(10)}\n" for _ in range(100))
    load = replace(_load(opts, "queue", opts.messages or 100_000), header_cycle=cycle)
    return _throughput("priority", run_load(load))


SCENARIOS: dict[str, Callable[[Options], Result]] = {
    "queue": queue,
    "acked": acked,
    "redelivery": redelivery,
    "selectors": selectors,
    "priority": priority,
    "fanout": fanout,
    "latency": latency,
    "idle": idle,
    "persistent": persistent,
    "persistent16": persistent16,
    "fill": fill,
    "drain": drain,
}
MAIN_SCENARIOS = ("queue", "fanout", "latency", "idle")
