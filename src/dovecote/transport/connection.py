"""One accepted connection: bytes in to its session, coalesced bytes out, bounded buffers.

Invariants:
- Writes made during one loop turn go out as one ``transport.write`` at the end of the turn.
- Outbound bytes (queued for this turn plus the transport's buffer) are bounded: past
  ``high_water`` the session is told to stop producing (``pause_writing``), and once they fall
  below ``low_water`` it is told to go on (``resume_writing``). Past ``max_outbound`` (a peer
  that does not read at all) the connection is aborted with reason ``slow-consumer``.
- Every close has a named reason, kept for the admin API and logs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

log = logging.getLogger(__name__)

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    high_water: int = 1024 * 1024  # outbound bytes that pause dispatch to this connection
    low_water: int = 256 * 1024  # ... and that resume it
    max_outbound: int = 64 * 1024 * 1024  # outbound bytes that close the connection


class Session(Protocol):
    """The protocol side of a connection (an adapter's per-connection object)."""

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Connection(asyncio.Protocol):
    """asyncio Protocol glue between a socket and a :class:`Session`."""

    __slots__ = (
        "_closing",
        "_flush_handle",
        "_limits",
        "_loop",
        "_on_close",
        "_out",
        "_out_bytes",
        "_session",
        "_session_factory",
        "_session_paused",
        "_transport",
        "_transport_paused",
        "bytes_in",
        "bytes_out",
        "close_reason",
        "connection_id",
        "last_received",
        "last_sent",
        "listener_name",
        "peer",
    )

    def __init__(
        self,
        session_factory: Callable[[Connection], Session],
        limits: ConnectionLimits,
        on_close: Callable[[Connection], None],
        listener_name: str,
    ) -> None:
        self.connection_id = f"c{next(_ids)}"
        self.listener_name = listener_name
        self.peer = "?"
        self.close_reason: str | None = None
        self.last_received = 0.0
        self.last_sent = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self._session_factory = session_factory
        self._session: Session | None = None
        self._limits = limits
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._transport_paused = False
        self._session_paused = False
        self._closing = False

    def __repr__(self) -> str:
        return f"<Connection {self.connection_id} {self.peer}>"

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        self._transport.set_write_buffer_limits(
            high=self._limits.high_water, low=self._limits.low_water
        )
        self.last_received = self.last_sent = self._loop.time()
        self._session = self._session_factory(self)

    def data_received(self, data: bytes) -> None:
        if self._closing or self._session is None:
            return
        self.last_received = self._loop.time()
        self.bytes_in += len(data)
        self._session.data_received(data)

    def eof_received(self) -> bool:
        self.close("peer closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_reason is None:
            self.close_reason = (
                "connection reset" if exc is not None else "peer closed the connection"
            )
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._out.clear()
        self._closing = True
        session, self._session = self._session, None
        if session is not None:
            session.connection_lost()
        self._on_close(self)

    def pause_writing(self) -> None:
        self._transport_paused = True
        self._update_session_pause()

    def resume_writing(self) -> None:
        self._transport_paused = False
        self._update_session_pause()

    # --- what sessions call -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data``; it goes out with everything else written in this loop turn."""
        if self._closing:
            return
        self._out.append(data)
        self._out_bytes += len(data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)
        if self._out_bytes > self._limits.high_water and not self._session_paused:
            self._update_session_pause()

    def close(self, reason: str) -> None:
        """Flush what is queued, then close. The first reason given is the one kept."""
        if self._closing:
            return
        if self.close_reason is None:
            self.close_reason = reason
        self._flush()
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self, reason: str) -> None:
        """Close at once, dropping anything not yet sent."""
        if self.close_reason is None:
            self.close_reason = reason
        self._closing = True
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()

    def pause_reading(self) -> None:
        """Stop reading from the peer (back-pressure on a producer)."""
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def now(self) -> float:
        return self._loop.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self._loop.call_later(delay, callback)

    @property
    def is_closing(self) -> bool:
        return self._closing

    @property
    def outbound_bytes(self) -> int:
        buffered = self._transport.get_write_buffer_size() if self._transport else 0
        return self._out_bytes + buffered

    # --- internals ----------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._out or self._transport is None:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        self._out_bytes = 0
        self.bytes_out += len(data)
        self.last_sent = self._loop.time()
        self._transport.write(data)
        if self._transport.get_write_buffer_size() > self._limits.max_outbound:
            log.warning("closing %s: peer does not read (slow consumer)", self.connection_id)
            self.abort("slow-consumer: outbound buffer limit exceeded")
            return
        if self._session_paused:
            self._update_session_pause()

    def _update_session_pause(self) -> None:
        should_pause = self._transport_paused or self._out_bytes > self._limits.high_water
        if should_pause == self._session_paused or self._session is None:
            return
        self._session_paused = should_pause
        if should_pause:
            self._session.pause_writing()
        else:
            self._session.resume_writing()
