"""A blocking STOMP 1.2 client session for the set-up and tear-down steps of a benchmark.

CONNECT and wait for CONNECTED, wait for a RECEIPT, DISCONNECT politely. The hot loops of
producers and consumers write to ``Session.sock`` directly and feed what they read to a
``Receiver``; this module only makes sure each wait has a deadline and that an ERROR frame
becomes a ``BrokerError`` carrying the broker's own words.

Invariants: the socket has TCP_NODELAY set and a timeout, so no call here blocks forever;
bytes read past the frame a caller waited for stay in ``Session.buf`` for the next reader.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from .frames import (
    BenchError,
    BrokerError,
    command_of,
    connect_frame,
    describe_error,
    disconnect_frame,
    header_value,
    split_frames,
)

RECV_SIZE = 1 << 18


@dataclass(frozen=True, slots=True)
class Target:
    """The broker under test and how to log in to it."""

    host: str
    port: int
    vhost: str = "localhost"
    user: str | None = None
    password: str | None = None


def open_socket(target: Target, timeout: float) -> socket.socket:
    """A connected TCP socket with TCP_NODELAY (small frames must not wait for Nagle)."""
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as exc:
        raise BenchError(f"cannot connect to {target.host}:{target.port}: {exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Session:
    """One STOMP connection: its socket and the bytes read but not yet consumed."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    @classmethod
    def open(cls, target: Target, timeout: float) -> Session:
        """Connect and log in; raises ``BrokerError`` if the broker answers with ERROR."""
        session = cls(open_socket(target, timeout))
        try:
            session.sock.sendall(connect_frame(target.vhost, target.user, target.password))
            session.expect(b"CONNECTED", None, timeout)
        except BaseException:
            session.sock.close()
            raise
        return session

    def expect(self, command: bytes, receipt: str | None, timeout: float) -> None:
        """Read until a ``command`` frame (with ``receipt-id: receipt`` if given) arrives.

        Frames before it must be RECEIPTs for earlier requests; anything else is an error,
        an ERROR frame above all.
        """
        deadline = time.monotonic() + timeout
        want_id = receipt.encode() if receipt is not None else None
        while True:
            spans, pos = split_frames(self.buf)
            for span in spans:
                found = command_of(self.buf, span)
                if found == b"ERROR":
                    raise BrokerError(f"ERROR frame from broker: {describe_error(self.buf, span)}")
                if found == command and (
                    want_id is None or header_value(self.buf, span, b"receipt-id") == want_id
                ):
                    del self.buf[: span[2] + 1]
                    return
                if found != b"RECEIPT":
                    raise BrokerError(
                        f"unexpected {found.decode(errors='replace')} frame "
                        f"while waiting for {command.decode()}"
                    )
            del self.buf[:pos]
            self._read(deadline, f"{command.decode()} {receipt or ''}".strip())

    def poll_errors(self) -> None:
        """Without blocking, read what the broker sent; raise if it holds an ERROR frame."""
        # A socket with a timeout polls before reading, so MSG_DONTWAIT alone would wait.
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise BenchError("the broker closed the connection")
        self.buf += data
        spans, _ = split_frames(self.buf)
        for span in spans:
            if command_of(self.buf, span) == b"ERROR":
                raise BrokerError(f"ERROR frame from broker: {describe_error(self.buf, span)}")

    def disconnect(self, timeout: float) -> None:
        """DISCONNECT, wait for its RECEIPT (so nothing we sent is dropped), then close."""
        try:
            self.sock.sendall(disconnect_frame("bye"))
            self.expect(b"RECEIPT", "bye", timeout)
        finally:
            self.sock.close()

    def _read(self, deadline: float, waiting_for: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"timed out waiting for {waiting_for} from the broker")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(RECV_SIZE)
        except TimeoutError:
            raise BenchError(f"timed out waiting for {waiting_for} from the broker") from None
        if not data:
            raise BenchError(f"the broker closed the connection while we waited for {waiting_for}")
        self.buf += data
