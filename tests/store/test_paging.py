"""Past the paging level, persistent bodies leave memory and come back intact at dispatch;
a recovered backlog larger than the budget starts paged."""

from __future__ import annotations

import gc
import socket
from pathlib import Path

from dovecote.core.limits import ENTRY_OVERHEAD
from dovecote.core.message import NO_PROPERTIES
from dovecote.pytest_plugin import BrokerThread
from dovecote.server import FREEZE_AT, RECOVERY_BODY_BUDGET

N = 400
BODY = 4096
READ_SIZE = 256 * 1024  # what one data_received may carry (asyncio and uvloop)


def _body(n: int) -> bytes:
    return (b"%08d" % n) * (BODY // 8)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
    _read_until(sock, b"\0")
    return sock


def _read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, "broker closed the connection"
        data += chunk
    return data


def _fill(port: int, count: int = N) -> None:
    sock = _connect(port)
    frames = b"".join(
        b"SEND\ndestination:/queue/paged\npersistent:true\ncontent-length:%d\n\n%s\0"
        % (BODY, _body(n))
        for n in range(count)
    )
    sock.sendall(frames + b"SEND\ndestination:/queue/other\nreceipt:done\n\nx\0")
    _read_until(sock, b"receipt-id:done")
    sock.close()


def _drain(port: int, count: int = N) -> list[bytes]:
    sock = _connect(port)
    sock.sendall(b"SUBSCRIBE\nid:1\ndestination:/queue/paged\nack:auto\n\n\0")
    bodies: list[bytes] = []
    data = b""
    while len(bodies) < count:
        data = _read_until(sock, b"\0", data)
        while b"\0" in data:
            head, _, rest = data.partition(b"\n\n")
            length = int(head.split(b"content-length:")[1].split(b"\n")[0])
            if len(rest) < length + 1:
                break
            bodies.append(rest[:length])
            data = rest[length + 1 :].lstrip(b"\n")
    sock.close()
    return bodies


def test_bodies_page_out_and_back_in(tmp_path: Path) -> None:
    limit = 1024 * 1024  # paging starts at 512 KiB: ~125 of the 400 bodies fit
    thread = BrokerThread(data_dir=tmp_path, memory_limit=limit).start()
    try:
        _fill(thread.port)
        assert thread.broker is not None
        budget = thread.broker.router.budget
        # Never past the limit, plus what the paused producer's last socket read (256 KiB at
        # most) still held, though more was taken in: the rest was paged out (bodies still
        # being written stay until the next page-out).
        most = budget.limit + READ_SIZE + BODY + ENTRY_OVERHEAD
        assert budget.used <= most
        queue = thread.broker.router.queue("paged")
        assert queue is not None
        paged = sum(1 for message in queue.browse() if not message.body)
        assert paged >= (N * (BODY + ENTRY_OVERHEAD) - most) // BODY > 0
        assert _drain(thread.port) == [_body(n) for n in range(N)]
    finally:
        thread.stop()


def test_a_backlog_shares_its_empty_properties_and_its_timestamps(tmp_path: Path) -> None:
    """Per-message memory: a message sent with no header of its own holds the one shared
    empty mapping, and messages accepted in the same millisecond one timestamp object."""
    thread = BrokerThread(data_dir=tmp_path).start()
    try:
        _fill(thread.port)
        assert thread.broker is not None
        queue = thread.broker.router.queue("paged")
        assert queue is not None
        messages = list(queue.browse())
        assert len(messages) == N
        assert all(message.properties is NO_PROPERTIES for message in messages)
        assert len({id(m.timestamp) for m in messages}) == len({m.timestamp for m in messages})
    finally:
        thread.stop()


def test_recovered_backlog_over_budget_starts_paged(tmp_path: Path) -> None:
    thread = BrokerThread(data_dir=tmp_path).start()
    try:
        _fill(thread.port)
    finally:
        thread.stop()
    thread = BrokerThread(data_dir=tmp_path, memory_limit=1024 * 1024).start()
    try:
        assert thread.broker is not None
        budget = thread.broker.router.budget
        # Bodies are kept up to the paging level; each entry also costs its overhead.
        assert budget.used <= budget.page_at + (N + 1) * ENTRY_OVERHEAD
        assert budget.used >= (N + 1) * ENTRY_OVERHEAD + budget.page_at - 8 * BODY
        assert _drain(thread.port) == [_body(n) for n in range(N)]
    finally:
        thread.stop()


def test_a_big_backlog_restarts_with_16_mib_of_bodies_and_frozen(tmp_path: Path) -> None:
    """Whatever the memory limit, recovery keeps only RECOVERY_BODY_BUDGET of bodies (the
    oldest) and reads the rest back at dispatch; past FREEZE_AT messages the recovered objects
    are frozen out of the collector."""
    count = FREEZE_AT
    assert count * BODY > 2 * RECOVERY_BODY_BUDGET
    thread = BrokerThread(data_dir=tmp_path).start()
    try:
        _fill(thread.port, count)
    finally:
        thread.stop()
    frozen = gc.get_freeze_count()
    thread = BrokerThread(data_dir=tmp_path).start()
    try:
        assert gc.get_freeze_count() > frozen
        assert thread.broker is not None
        budget = thread.broker.router.budget
        assert budget.page_at > RECOVERY_BODY_BUDGET  # the default limit: the cap applies
        bodies = budget.used - (count + 1) * ENTRY_OVERHEAD
        # The recovery budget counts whole records: a body's headers (under 128 B here) too.
        assert bodies >= RECOVERY_BODY_BUDGET * BODY // (BODY + 128) - BODY
        assert bodies <= RECOVERY_BODY_BUDGET
        assert _drain(thread.port, count) == [_body(n) for n in range(count)]
    finally:
        thread.stop()
        gc.unfreeze()
