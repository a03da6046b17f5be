"""The composition root: builds the core, store, adapters and listeners, and owns their lifecycle.

``Broker`` is both what ``dovecote run`` runs and what Python code embeds::

    async with dovecote.Broker(listen=["stomp://127.0.0.1:0"]) as broker:
        print(broker.url)          # stomp://127.0.0.1:<free port>

``config`` may also be the path of a TOML config file (see docs/configuration.md).

All of the core's time-driven work (delayed redeliveries, the expiry reaper, scheduled
delivery) is on the router's ``Timers``, which run on the event loop through
:class:`LoopWakeup`: one loop timer, for the earliest deadline.

Shutdown order: stop the core's timers, stop accepting, close connections with a deadline,
then close the store.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from dovecote.adapters.stomp import StompSession
from dovecote.adapters.stomp_encoding import MessageEncoder
from dovecote.config import BrokerConfig
from dovecote.config_file import load_config
from dovecote.core.limits import MemoryBudget
from dovecote.core.message import QueueEntry
from dovecote.core.ports import Clock, Store
from dovecote.core.router import Router
from dovecote.core.scheduler import SCHEDULE_QUEUE
from dovecote.core.timers import Timers
from dovecote.store.journal import Journal
from dovecote.store.memory import MemoryStore
from dovecote.store.record import QueueKind
from dovecote.store.recovery import RecoveredQueue, RecoveredState
from dovecote.transport.connection import Connection
from dovecote.transport.listener import Listener

log = logging.getLogger(__name__)


class SystemClock:
    """The core's Clock port on the real wall clock.

    Answers the same int object while the millisecond stays the same: every message keeps its
    timestamp, and a backlog's messages, accepted many to a millisecond, then share one int
    instead of holding 32 B each.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def now_ms(self) -> int:
        now = time.time_ns() // 1_000_000
        if now == self._last:
            return self._last
        self._last = now
        return now


# At start-up the journal keeps at most this many body bytes in memory; the rest stay on disk
# and are read back when dispatched (as KahaDB does): time to the first message and RSS then
# hardly depend on the size of the backlog.
RECOVERY_BODY_BUDGET = 16 * 1024 * 1024
FREEZE_AT = 10_000  # recovered messages from which the collector leaves them alone


class LoopWakeup:
    """The core's Wakeup port on an asyncio loop: one loop timer, for the earliest deadline.

    Each firing calls ``Timers.run_due`` once, then sets the loop timer again for what is left
    (even if a callback raised; the loop's exception handler reports it). A timer that a
    callback set due at once is left by that run and runs on a later loop turn
    (``call_later(0)`` runs after the callbacks already ready, I/O polled in between): this is
    how the scheduler fires a large backlog in slices without stalling the connections.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timers: Timers, clock: Clock) -> None:
        self._loop = loop
        self._timers = timers
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self._due: int | None = None

    @property
    def is_armed(self) -> bool:
        return self._handle is not None

    def wake_at(self, due_ms: int) -> None:
        if self._due is not None and self._due <= due_ms:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._due = due_ms
        delay = max(0.0, (due_ms - self._clock.now_ms()) / 1000)
        self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = self._due = None
        try:
            self._timers.run_due()
        finally:
            due = self._timers.next_due()
            if due is not None:
                self.wake_at(due)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._due = None


class Broker:
    """A running Dovecote broker inside the current asyncio event loop."""

    def __init__(
        self,
        config: BrokerConfig | str | os.PathLike[str] | None = None,
        *,
        listen: Iterable[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> None:
        if config is None:
            config = BrokerConfig()
        elif not isinstance(config, BrokerConfig):
            config = load_config(config)  # raises ConfigError (a ValueError)
        changes: dict[str, Any] = dict(overrides)
        if listen is not None:
            changes["listen"] = tuple(listen)
        if data_dir is not None:
            changes["data_dir"] = Path(data_dir)
        if changes:
            fields = {f: getattr(config, f) for f in config.__dataclass_fields__}
            config = BrokerConfig(**{**fields, **changes})
        if config.store not in ("journal", "memory"):
            raise ValueError(f"unknown store {config.store!r}: use 'journal' or 'memory'")
        self.config = config
        self.journal: Journal | None = None
        self.store: Store
        if config.uses_journal:
            assert config.data_dir is not None
            self.journal = Journal(config.data_dir / "journal", config.journal)
            self.store = self.journal
        else:
            self.store = MemoryStore()
        self.clock = SystemClock()
        self.router = Router(
            self.store,
            self.clock,
            node_id=f"{config.name}-{os.getpid()}",
            budget=MemoryBudget(config.memory_limit),
            policies=config.policies,
            expiry_check_ms=config.expiry_check_ms,
            duplicate_cache_size=config.duplicate_cache_size,
            advisories=config.advisories,
        )
        self._wakeup: LoopWakeup | None = None
        self._encoder = MessageEncoder()
        self.listeners: list[Listener] = [
            Listener(
                address,
                self._new_stomp_session,
                limits=config.connection_limits,
                max_connections=config.max_connections,
            )
            for address in config.listen_addresses()
        ]
        self._started = False

    def _new_stomp_session(self, connection: Connection) -> StompSession:
        return StompSession(
            connection,
            self.router,
            self._encoder,
            limits=self.config.frame_limits,
            max_subscriptions=self.config.max_subscriptions_per_connection,
            max_transactions=self.config.max_transactions_per_connection,
        )

    @property
    def urls(self) -> list[str]:
        """The listeners' URIs with their actual ports (port 0 resolved)."""
        return [listener.url for listener in self.listeners]

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def port(self) -> int:
        return self.listeners[0].port

    @property
    def host(self) -> str:
        return self.listeners[0].address.host

    @property
    def connection_count(self) -> int:
        return sum(len(listener.connections) for listener in self.listeners)

    async def start(self) -> None:
        if self._started:
            return
        raise_open_file_limit()
        if self.config.data_dir is not None:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        if self.journal is not None:
            began = time.monotonic()
            # Recovery makes a few objects per message and frees none: the cyclic collector
            # would scan the growing heap again and again (a fifth of a 200k-message start).
            collecting = gc.isenabled()
            gc.disable()
            try:
                budget = min(RECOVERY_BODY_BUDGET, self.router.budget.page_at)
                state = self.journal.open(loop, body_budget=budget)
                restore(self.router, state)
                messages = sum(len(q.messages) for q in state.queues.values())
                if messages >= FREEZE_AT:
                    # Out of every later collection too (gc.freeze): a backlog has no cycles,
                    # and its messages are still freed when acked (reference counting).
                    gc.freeze()
            finally:
                if collecting:
                    gc.enable()
            log.info(
                "journal recovered in %.2f s: %d queues, %d messages, %d records in %d segments",
                time.monotonic() - began,
                len(state.queues),
                messages,
                state.report.records,
                state.report.segments,
            )
        started: list[Listener] = []
        try:
            for listener in self.listeners:
                await listener.start()
                started.append(listener)
        except BaseException:
            for listener in started:
                await listener.close()
            if self.journal is not None:
                await self.journal.close()  # its writer thread would outlive the broker
            raise
        self._started = True
        # The core's timers run from now on; those set before (restored schedules, expiring
        # recovered messages) are armed at once.
        self._wakeup = LoopWakeup(loop, self.router.timers, self.clock)
        self.router.timers.set_wakeup(self._wakeup)
        log.info("broker %s started: %s", self.config.name, ", ".join(self.urls))

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        # Time-driven work stops first: nothing is fired into connections being closed.
        self.router.timers.set_wakeup(None)
        if self._wakeup is not None:
            self._wakeup.close()
        for listener in self.listeners:
            listener.stop_accepting()
        for listener in self.listeners:
            await listener.close(timeout=self.config.shutdown_timeout)
        if self.journal is not None:
            await self.journal.close()
        log.info("broker %s stopped", self.config.name)

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def restore(router: Router, state: RecoveredState) -> None:
    """Put recovered queues, durable subscriptions and their messages, scheduled messages and
    duplicate-detection ids back in the router."""
    for recovered in state.queues.values():
        if recovered.name == SCHEDULE_QUEUE and recovered.kind is QueueKind.QUEUE:
            for seq in sorted(recovered.messages):
                item = recovered.messages[seq]
                router.scheduler.restore(seq, item.message, paged=item.paged)
            continue
        if recovered.kind is QueueKind.DURABLE_SUBSCRIPTION and recovered.filter is not None:
            queue = router.restore_durable_subscription(
                recovered.name, recovered.filter, recovered.selector
            )
        else:
            queue = router.restore_queue(recovered.name)
        holds = {seq: m.hold_until for seq, m in recovered.messages.items() if m.hold_until}
        queue.restore(_entries(recovered), holds)

    for address, ids in state.duplicate_ids.items():
        router.dedup.restore(address, ((found.seq, dup_id) for dup_id, found in ids.items()))


def _entries(recovered: RecoveredQueue) -> Iterator[QueueEntry]:
    """A recovered queue's messages as queue entries, in seq order."""
    messages = recovered.messages
    for seq in sorted(messages):
        item = messages[seq]
        entry = QueueEntry(item.message, seq, item.delivery_count)
        entry.paged = item.paged
        yield entry


def raise_open_file_limit() -> None:
    """Let the broker hold as many sockets as the hard limit allows (each connection is one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit above %d", soft)
