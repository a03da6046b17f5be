"""A small blocking STOMP client on Dovecote's own codec (the CLI's send and receive use it).

It is deliberately simple: one socket, one thread, frames in order. Applications with real
needs should use stomp.py or any STOMP 1.2 client; this one exists so the CLI and tests need
no third-party client.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Mapping
from types import TracebackType

from dovecote.protocols._errors import ProtocolError
from dovecote.protocols.stomp import NEED_DATA, Command, Frame, Role, State, StompConnection


class StompClientError(Exception):
    """The broker answered with an ERROR frame (its ``message`` header is the text)."""


class StompClient:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 61613,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._stomp = StompConnection(Role.CLIENT)
        self._receipts = itertools.count(1)
        self._pending: list[Frame] = []
        connect = {"accept-version": "1.2", "host": host, "heart-beat": "0,0", **(headers or {})}
        self._send(Frame(Command.CONNECT, connect))
        frame = self._next_frame()
        if frame.command is not Command.CONNECTED:
            raise StompClientError(frame.headers.get("message", "connection refused"))

    def __enter__(self) -> StompClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(
        self,
        destination: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        receipt: bool = True,
    ) -> None:
        """Send a message; with ``receipt`` wait until the broker confirms it."""
        frame_headers = {"destination": destination, **(headers or {})}
        self._request(Frame(Command.SEND, frame_headers, body), receipt=receipt)

    def subscribe(
        self,
        destination: str,
        sub_id: str = "0",
        *,
        ack: str = "auto",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        frame_headers = {"destination": destination, "id": sub_id, "ack": ack, **(headers or {})}
        self._request(Frame(Command.SUBSCRIBE, frame_headers), receipt=True)

    def ack(self, message: Frame) -> None:
        self._send(Frame(Command.ACK, {"id": message.headers["ack"]}))

    def receive(self, timeout: float | None = None) -> Frame:
        """The next MESSAGE; raises TimeoutError if none arrives in time."""
        if self._pending:
            return self._pending.pop(0)
        self._sock.settimeout(timeout)
        frame = self._next_frame()
        if frame.command is not Command.MESSAGE:
            raise StompClientError(f"unexpected {frame.command} frame")
        return frame

    def close(self) -> None:
        try:
            if self._stomp.state is State.OPEN:
                self._request(Frame(Command.DISCONNECT), receipt=True)
        except (OSError, StompClientError, ProtocolError):
            pass  # closing anyway: the broker may already have closed after an ERROR
        finally:
            self._sock.close()

    def _request(self, frame: Frame, *, receipt: bool) -> None:
        if not receipt:
            self._send(frame)
            return
        receipt_id = f"r{next(self._receipts)}"
        self._send(Frame(frame.command, {**frame.headers, "receipt": receipt_id}, frame.body))
        while True:
            reply = self._next_frame()
            if reply.command is Command.RECEIPT and reply.headers.get("receipt-id") == receipt_id:
                return
            if reply.command is Command.MESSAGE:
                self._pending.append(reply)

    def _send(self, frame: Frame) -> None:
        self._sock.sendall(self._stomp.send(frame))

    def _next_frame(self) -> Frame:
        while True:
            event = self._stomp.next_event() if self._stomp.buffered else NEED_DATA
            if isinstance(event, Frame):
                if event.command is Command.ERROR:
                    raise StompClientError(event.headers.get("message", "error"))
                return event
            data = self._sock.recv(65536)
            if not data:
                raise StompClientError("the broker closed the connection")
            self._stomp.receive_data(data)
