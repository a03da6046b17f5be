"""Fixtures shared by the end-to-end tests (wire/, transport/, interop/).

- ``wait_for(predicate, timeout=5)``: poll until ``predicate()`` is truthy; fail at the deadline.
- ``make_broker(**overrides)``: a broker on ``stomp://127.0.0.1:0`` in a background thread
  (``BrokerThread``; overrides are ``BrokerConfig`` fields), stopped when the test ends.
- ``raw_stomp(port)``: a raw STOMP socket (:class:`RawStomp`), closed when the test ends.

Every wait here has a deadline: a broker that stops answering fails the test, it never hangs it.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dovecote.pytest_plugin import BrokerThread

# The package's pytest plugin is disabled in addopts (-p no:dovecote) and loaded here, after
# pytest-cov has started, so that coverage measures the modules it imports.
pytest_plugins = ["dovecote.pytest_plugin"]

TIMEOUT = 5.0  # seconds: the longest any single step of a test may take

# Headers whose values vary from run to run; transcripts compare them as ``*``.
_VARYING = re.compile(rb"^(message-id|timestamp|session):[^\n]*$", re.MULTILINE)


def normalise(frame: bytes) -> bytes:
    """Replace the values of message-id, timestamp and session (header block only) with ``*``."""
    head, sep, body = frame.partition(b"\n\n")
    return _VARYING.sub(rb"\1:*", head) + sep + body


def poll(predicate: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.005) -> Any:
    """Return ``predicate()``'s first truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


class RawStomp:
    """A plain TCP socket speaking STOMP by hand: exact bytes out, exact frames in."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect(), so the advertised TCP window is small too.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((host, port))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, version: str = "1.2", extra: bytes = b"") -> bytes:
        """CONNECT (``accept-version`` unless ``version`` is 1.0) and return the CONNECTED frame."""
        accept = b"" if version == "1.0" else b"accept-version:%s\n" % version.encode()
        self.send(b"CONNECT\n" + accept + b"host:localhost\n" + extra + b"\n\0")
        frame = self.read_frame()
        assert frame.startswith(b"CONNECTED\n"), frame
        return frame

    def fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False on EOF. Fails the test at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"nothing more from the broker within the deadline; have {self.buffer!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            pytest.fail(f"nothing more from the broker within the deadline; have {self.buffer!r}")
        self.buffer += data
        return bool(data)

    def read_frame(self, timeout: float = TIMEOUT, *, skip_eols: bool = True) -> bytes:
        """The next whole frame, exactly as sent (NUL included); heart-beat EOLs are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            if skip_eols:
                self.buffer = self.buffer.lstrip(b"\r\n")
            end = _frame_end(self.buffer)
            if end is not None:
                frame, self.buffer = self.buffer[:end], self.buffer[end:]
                return frame
            if not self.fill(deadline):
                pytest.fail(f"the broker closed the connection; have {self.buffer!r}")

    def expect(self, expected: bytes, timeout: float = TIMEOUT) -> bytes:
        """Read one frame, compare it (varying values normalised) to ``expected``; return it."""
        frame = self.read_frame(timeout)
        assert normalise(frame) == expected
        return frame

    def read_until_closed(self, timeout: float = TIMEOUT) -> bytes:
        """Everything the broker sends until it closes the connection (which it must, in time)."""
        deadline = time.monotonic() + timeout
        try:
            while self.fill(deadline):
                pass
        except ConnectionResetError:
            pass
        data, self.buffer = self.buffer, b""
        return data

    def is_open(self) -> bool:
        """False once the broker has closed or reset the connection (unread data is kept)."""
        self.sock.setblocking(False)
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.setblocking(True)

    def available(self) -> bytes:
        """What the broker has sent that can be read now, without waiting; fails if it closed."""
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return b""
        finally:
            self.sock.setblocking(True)
        if not data:
            pytest.fail("the broker closed the connection")
        return data

    def abort(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), as a crashed client would."""
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def _frame_end(buffer: bytes) -> int | None:
    """Length of the first complete frame in ``buffer`` (which starts at a command), or None."""
    head_end = buffer.find(b"\n\n")
    if head_end == -1:
        return None
    match = re.search(rb"^content-length:(\d+)$", buffer[:head_end], re.MULTILINE)
    if match is None:
        nul = buffer.find(b"\0", head_end + 2)
        return None if nul == -1 else nul + 1
    end = head_end + 2 + int(match.group(1)) + 1
    return end if len(buffer) >= end else None


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    return poll


@pytest.fixture
def make_broker() -> Iterator[Callable[..., BrokerThread]]:
    brokers: list[BrokerThread] = []

    def start(**overrides: Any) -> BrokerThread:
        broker = BrokerThread(**overrides).start()
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(make_broker: Callable[..., BrokerThread]) -> BrokerThread:
    return make_broker()


@pytest.fixture
def raw_stomp() -> Iterator[Callable[..., RawStomp]]:
    sockets: list[RawStomp] = []

    def open_socket(port: int, **kwargs: Any) -> RawStomp:
        client = RawStomp(port, **kwargs)
        sockets.append(client)
        return client

    yield open_socket
    for client in sockets:
        client.close()
