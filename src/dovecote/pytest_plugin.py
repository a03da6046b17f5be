"""pytest fixtures that give a test a running Dovecote broker (ActiveMQ's ``vm://`` for Python).

Installed with the package as a pytest plugin::

    def test_orders(dovecote_broker):          # a broker in a thread, on a free port
        client = stomp.Connection([(dovecote_broker.host, dovecote_broker.port)])

``dovecote_broker`` runs the broker in its own thread with its own event loop, so blocking
clients (stomp.py, paho-mqtt) can talk to it from the test body. Each test gets a fresh
broker; it is stopped, with its connections closed, when the test ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from dovecote.server import Broker


class BrokerThread:
    """A broker on a free loopback port, running in a background thread."""

    def __init__(self, data_dir: Path | None = None, **overrides: Any) -> None:
        self._overrides = {"listen": ["stomp://127.0.0.1:0"], "data_dir": data_dir, **overrides}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="dovecote-broker", daemon=True
        )
        self.broker: Broker | None = None

    def start(self) -> BrokerThread:
        self._thread.start()
        self.broker = self.call(self._start())
        return self

    async def _start(self) -> Broker:
        broker = Broker(**self._overrides)
        await broker.start()
        return broker

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the broker's loop and wait for its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def stop(self) -> None:
        if self.broker is not None:
            self.call(self.broker.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def host(self) -> str:
        assert self.broker is not None
        return self.broker.host

    @property
    def port(self) -> int:
        assert self.broker is not None
        return self.broker.port

    @property
    def url(self) -> str:
        assert self.broker is not None
        return self.broker.url


@pytest.fixture
def dovecote_broker(tmp_path: Path) -> Iterator[BrokerThread]:
    """A fresh running broker for one test; ``.host``, ``.port``, ``.url``, ``.broker``."""
    thread = BrokerThread(data_dir=tmp_path / "dovecote-data").start()
    try:
        yield thread
    finally:
        thread.stop()
