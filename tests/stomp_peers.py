"""Helpers for tests that talk to a broker: a ``dovecote run`` subprocess and stomp.py peers
(imported by tests/interop/conftest.py and by tests that start brokers of their own; tests/
is on ``sys.path`` through tests/conftest.py).

Every wait has a deadline (``TIMEOUT``).
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stomp

TIMEOUT = 5.0
LISTENING = re.compile(r"dovecote listening on stomp://127\.0\.0\.1:(\d+)\n")


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the broker and wait for it to exit; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:  # pragma: no cover - only if it hangs
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def launch_broker(data_dir: Path, log: Path, *args: str) -> BrokerProcess:
    """Start ``python -m dovecote run [args]`` on a free port and wait for its listening line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dovecote",
                "run",
                "--listen",
                "stomp://127.0.0.1:0",
                "--data-dir",
                str(data_dir),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=env,
        )
    assert proc.stdout is not None
    line = b""
    deadline = time.monotonic() + 20
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if selector.select(timeout=deadline - time.monotonic()):
                chunk = os.read(proc.stdout.fileno(), 1)
                if not chunk:
                    break
                line += chunk
    match = LISTENING.fullmatch(line.decode(errors="replace"))
    if match is None:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        pytest.fail(f"broker did not start: {line!r}; log: {log.read_text(errors='replace')}")
    return BrokerProcess(proc, int(match.group(1)), log)


class Inbox(stomp.ConnectionListener):
    """Records frames stomp.py hands to its listener; waits on them with a deadline."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.receipts: list[str] = []
        self.errors: list[Any] = []
        self.disconnected = False
        self._cond = threading.Condition()

    def on_message(self, frame: Any) -> None:
        with self._cond:
            self.messages.append(frame)
            self._cond.notify_all()

    def on_receipt(self, frame: Any) -> None:
        with self._cond:
            self.receipts.append(frame.headers["receipt-id"])
            self._cond.notify_all()

    def on_error(self, frame: Any) -> None:
        with self._cond:
            self.errors.append(frame)
            self._cond.notify_all()

    def on_disconnected(self) -> None:
        with self._cond:
            self.disconnected = True
            self._cond.notify_all()

    def _wait(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                pytest.fail(f"{what} within {timeout}s (have {len(self.messages)} messages)")

    def wait_messages(self, count: int, timeout: float = TIMEOUT) -> list[Any]:
        """The first ``count`` messages, once they have arrived."""
        self._wait(lambda: len(self.messages) >= count, f"no {count} messages", timeout)
        return self.messages[:count]

    def wait_receipt(self, receipt: str, timeout: float = TIMEOUT) -> None:
        self._wait(lambda: receipt in self.receipts, f"no receipt {receipt!r}", timeout)

    def receipt_within(self, receipt: str, timeout: float) -> bool:
        """True once the receipt has arrived; False if ``timeout`` passes first."""
        with self._cond:
            return self._cond.wait_for(lambda: receipt in self.receipts, timeout)

    def wait_disconnected(self, timeout: float = TIMEOUT) -> None:
        self._wait(lambda: self.disconnected, "not disconnected", timeout)

    def bodies(self) -> list[Any]:
        with self._cond:
            return [frame.body for frame in self.messages]


class Peer:
    """One stomp.py connection and its inbox."""

    def __init__(
        self,
        port: int,
        version: str = "1.2",
        *,
        client_id: str | None = None,
        auto_decode: bool = True,
    ) -> None:
        connection_class = {"1.1": stomp.Connection11, "1.2": stomp.Connection12}[version]
        self.conn = connection_class(
            [("127.0.0.1", port)], auto_decode=auto_decode, reconnect_attempts_max=1
        )
        self.inbox = Inbox()
        self.conn.set_listener("inbox", self.inbox)
        headers = {"client-id": client_id} if client_id else {}
        self.conn.connect(wait=True, headers=headers)
        self._receipts = 0

    def receipt(self) -> str:
        self._receipts += 1
        return f"r{self._receipts}"

    def send(self, destination: str, body: Any, **headers: Any) -> None:
        """Send and wait until the broker confirms it with a RECEIPT."""
        receipt = self.receipt()
        self.conn.send(destination, body, headers={**headers, "receipt": receipt})
        self.inbox.wait_receipt(receipt)

    def subscribe(self, destination: str, sub_id: str, ack: str = "auto", **headers: Any) -> None:
        """Subscribe and wait until the broker confirms the subscription."""
        receipt = self.receipt()
        self.conn.subscribe(destination, sub_id, ack=ack, headers={**headers, "receipt": receipt})
        self.inbox.wait_receipt(receipt)

    def close(self) -> None:
        """DISCONNECT and wait for the broker to confirm and close."""
        if self.conn.is_connected():
            self.conn.disconnect()
            self.inbox.wait_disconnected()
        self.conn.transport.disconnect_socket()
