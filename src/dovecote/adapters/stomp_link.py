"""A STOMP session's hold on its connection: what it owes the connection apart from frames.

:class:`LinkedSession` is the base class of :class:`dovecote.adapters.stomp.StompSession`. It
keeps the state every frame handler shares with the connection and does the work that outlives
one frame:

- RECEIPTs in frame order (STOMP 1.2 "RECEIPT"): while one of this connection's durable
  receipts is outstanding (``_durable_waiting``), later receipts queue behind it.
- Closing with a named reason; after ``_closed`` nothing more is written.
- Heart-beats (STOMP 1.1 "Heart-beating"): one timer at half the shorter interval sends a
  newline when due and closes a client that has gone quiet.
- Throttling a producer while the memory budget is exhausted (reading paused, resumed when
  memory comes back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from dovecote.core.router import Router
from dovecote.protocols.stomp import Command, Frame, FrameLimits, Role, State, StompConnection

THROTTLE_RETRY = 0.05  # seconds between paging attempts while a producer is paused


class Link(Protocol):
    """What a session needs from its connection (implemented by the transport)."""

    connection_id: str
    last_received: float
    last_sent: float

    def write(self, data: bytes) -> None: ...

    def close(self, reason: str) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer: ...


class _Timer(Protocol):
    def cancel(self) -> None: ...


class LinkedSession:
    """The connection-facing half of a STOMP session (see the module docstring)."""

    __slots__ = (
        "_closed",
        "_durable_waiting",
        "_link",
        "_paused",
        "_router",
        "_stomp",
        "_throttled",
        "_timer",
    )

    def __init__(self, link: Link, router: Router, limits: FrameLimits | None) -> None:
        self._link = link
        self._router = router
        self._stomp = StompConnection(Role.SERVER, limits)
        self._timer: _Timer | None = None
        self._paused = False
        self._throttled = False
        self._durable_waiting = 0  # durable receipts asked for and not yet sent
        self._closed = False

    @property
    def version(self) -> str:
        return self._stomp.version

    def _throttle(self) -> None:
        """Stop reading this producer until queued messages fall back under the budget.

        Memory comes back when consumers settle messages, or when bodies written to the
        journal meanwhile can be paged out: the latter is retried every THROTTLE_RETRY seconds
        (nothing else would trigger it while no producer is being read). A connection that also
        consumes is never paused: it could not send the acks that would free the memory.
        """
        self._throttled = True
        self._link.pause_reading()
        budget = self._router.budget

        def resume() -> None:
            if self._throttled:
                self._throttled = False
                if not self._closed:
                    self._link.resume_reading()

        def retry() -> None:
            if not self._throttled or self._closed:
                return
            self._router.relieve_memory()
            if budget.is_exhausted():
                self._link.call_later(THROTTLE_RETRY, retry)
            else:
                resume()

        budget.call_when_available(resume)
        self._link.call_later(THROTTLE_RETRY, retry)

    def _receipt(self, frame: Frame, then: Callable[[], None] | None = None) -> None:
        """Send the frame's RECEIPT (if asked for), then call ``then``.

        A client sees its receipts in the order of its frames (as ActiveMQ sends them): while
        one of this connection's durable receipts is outstanding, later ones queue behind it.
        Other connections' journal writes never delay it.
        """
        if self._durable_waiting:
            self._receipt_when_durable(frame, then)
            return
        receipt = frame.headers.get("receipt")
        if receipt is not None:
            self._link.write(self._stomp.send(Frame(Command.RECEIPT, {"receipt-id": receipt})))
        if then is not None:
            then()

    def _receipt_when_durable(self, frame: Frame, then: Callable[[], None] | None = None) -> None:
        """Send the frame's RECEIPT (if asked for) once everything before it is durable,
        then call ``then``."""
        receipt = frame.headers.get("receipt")
        if receipt is None:
            if then is not None:
                then()
            return

        def confirm() -> None:
            self._durable_waiting -= 1
            if self._closed or self._stomp.state is not State.OPEN:
                return
            self._link.write(self._stomp.send(Frame(Command.RECEIPT, {"receipt-id": receipt})))
            if then is not None:
                then()

        self._durable_waiting += 1
        self._router.call_when_durable(confirm)

    def _close(self, reason: str) -> None:
        self._closed = True
        self._link.close(reason)

    def _start_heart_beats(self) -> None:
        intervals = [
            ms for ms in (self._stomp.send_heartbeat_ms, self._stomp.receive_heartbeat_ms) if ms
        ]
        if intervals:
            self._timer = self._link.call_later(min(intervals) / 2000, self._on_heart_beat_timer)

    def _on_heart_beat_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        link, stomp = self._link, self._stomp
        now = link.now()
        dead_after = stomp.receive_deadline(link.last_received)
        if dead_after is not None and now > dead_after:
            self._close("heart-beat timeout: nothing received from the client")
            return
        send_by = stomp.send_deadline(link.last_sent)
        if send_by is not None and now >= send_by - stomp.send_heartbeat_ms / 2000:
            link.write(b"\n")
        self._start_heart_beats()
