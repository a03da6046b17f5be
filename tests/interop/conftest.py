"""A real ``dovecote run`` subprocess and stomp.py clients talking to it.

- ``broker_process``: one broker subprocess for the whole session (``--listen
  stomp://127.0.0.1:0``; the port is read from its ``dovecote listening on ...`` line).
- ``start_broker_process(data_dir=None)``: a broker subprocess of the test's own (killed at
  teardown if still running).
- ``stomp_peer(...)``: a connected stomp.py client plus the :class:`Inbox` that records what it
  receives; disconnected at teardown.
- ``unique``: a fresh name prefix, so tests sharing the session broker never share a queue.

Every wait has a deadline (``TIMEOUT``).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stomp_peers import BrokerProcess, Peer, launch_broker


@pytest.fixture(scope="session")
def broker_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("interop-broker")
    broker = launch_broker(base / "data", base / "broker.log")
    yield broker
    assert broker.stop() == 0


@pytest.fixture
def start_broker_process(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def start(data_dir: Path | None = None) -> BrokerProcess:
        data_dir = data_dir or tmp_path / f"data{len(started)}"
        broker = launch_broker(data_dir, tmp_path / f"log{len(started)}")
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop(signal.SIGKILL)  # no-op signal if the test already stopped it


@pytest.fixture
def stomp_peer(broker_process: BrokerProcess) -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def connect(version: str = "1.2", *, port: int | None = None, **kwargs: Any) -> Peer:
        peer = Peer(broker_process.port if port is None else port, version, **kwargs)
        peers.append(peer)
        return peer

    yield connect
    for peer in peers:
        peer.close()


@pytest.fixture
def unique() -> str:
    return f"it{uuid.uuid4().hex[:10]}"
