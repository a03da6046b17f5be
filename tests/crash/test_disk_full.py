"""A disk that refuses writes for real, not through a stand-in for ``os``: the broker
subprocess's file-size limit (RLIMIT_FSIZE, lowered and raised again from outside with
``prlimit``) makes the kernel refuse its journal writes past a size (EFBIG; the journal treats
every write error as it treats ENOSPC). stomp.py clients throughout.

While writes fail the broker stops confirming, refuses new persistent sends with a clear
ERROR and keeps serving consumers; when writes succeed again it confirms the stuck message
and new ones; after a kill -9 everything it confirmed is there, and ``dovecote store check``
passes. (tests/store/test_broker_durability.py covers the same in process, with injected
ENOSPC, frame by frame.)
"""

from __future__ import annotations

import functools
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stomp_peers import TIMEOUT, Peer, launch_broker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit"),
]

QUEUE = "/queue/orders"
BODY = "x" * 4096
LIMIT = 256 * 1024  # bytes a segment file may reach while the "disk" is full
REFUSED = (
    "Service unavailable: the broker cannot write its journal (disk full or I/O error); "
    "persistent messages are refused until it recovers"
)


def _numbers(frames: list[Any]) -> list[int]:
    return [int(frame.body.split(":", 1)[0]) for frame in frames]


def _outcome(peer: Peer, receipt: str, log: Path) -> str | None:
    """ "confirmed" once the RECEIPT is in; "failed" once the broker has logged a failed
    journal write (it then holds the RECEIPT until writes succeed); None meanwhile."""
    if receipt in peer.inbox.receipts:
        return "confirmed"
    if "journal write failed" in log.read_text(errors="replace"):
        return "failed"
    return None


def test_refused_writes_stop_confirming_then_resume_and_lose_nothing_confirmed(
    tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    data = tmp_path / "data"
    broker = launch_broker(data, tmp_path / "first.log")
    pid = broker.proc.pid
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    confirmed: list[int] = []
    try:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (LIMIT, hard))
        producer = Peer(broker.port)
        stuck = -1
        for n in range(2 * LIMIT // len(BODY)):
            receipt = f"m{n}"
            headers = {"persistent": "true", "receipt": receipt}
            producer.conn.send(QUEUE, f"{n}:{BODY}", headers=headers)
            outcome = wait_for(functools.partial(_outcome, producer, receipt, broker.log))
            if outcome == "failed" and not producer.inbox.receipt_within(receipt, 0.2):
                stuck = n
                break
            confirmed.append(n)
        assert stuck > 0, "the broker confirmed every message past the size limit"
        assert confirmed == list(range(stuck))

        refused = Peer(broker.port)
        refused.conn.send(QUEUE, "refused", headers={"persistent": "true", "receipt": "r"})
        refused.inbox.wait_disconnected()
        (error,) = refused.inbox.errors
        assert error.headers["message"] == REFUSED
        assert error.headers["receipt-id"] == "r"

        consumer = Peer(broker.port)  # consumers are served meanwhile
        consumer.subscribe(QUEUE, "c", ack="client-individual")
        assert _numbers(consumer.inbox.wait_messages(stuck)) == confirmed
        plain = Peer(broker.port)  # and non-persistent messages, confirmed at once
        plain.send("/queue/plain", "not persistent")

        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))  # space is back
        producer.inbox.wait_receipt(f"m{stuck}", timeout=TIMEOUT)
        confirmed.append(stuck)
        producer.send(QUEUE, f"{stuck + 1}:after", persistent="true")
        confirmed.append(stuck + 1)
    finally:
        broker.stop(signal.SIGKILL)

    broker = launch_broker(data, tmp_path / "second.log")
    try:
        reader = Peer(broker.port)
        reader.subscribe(QUEUE, "r", ack="auto")
        got = _numbers(reader.inbox.wait_messages(len(confirmed)))
        assert sorted(set(got)) == confirmed
        reader.close()
    finally:
        broker.stop()
    check = subprocess.run(
        [sys.executable, "-m", "dovecote", "store", "check", str(data)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
