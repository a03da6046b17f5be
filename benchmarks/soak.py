#!/usr/bin/env python3
"""kill -9 soak: persistent load on a broker subprocess, SIGKILL at a random moment, restart on
the same data directory, drain, and account for every message.

    python benchmarks/soak.py --cycles 20
    python benchmarks/soak.py --cycles 5 --seed 1234 --segment-sizes 16384
    python benchmarks/soak.py --cycles 3 --data-dir /tmp/soak --keep

One cycle:

1. start the broker (``dovecote run``, or, for a small segment size, which the command line
   cannot set, an equivalent inline script) and read its ``dovecote listening on`` line;
2. 16 producers send persistent messages to ``/queue/soak``, each with a unique ``x-id`` and a
   receipt (a few in flight per connection), and two more send them in transactions of three
   (a receipt on the COMMIT); a consumer takes them with ``client-individual`` acks, acks most
   and leaves some unacknowledged, and every 20 messages sends a *fence* (a persistent SEND
   with a receipt, to a topic nobody subscribes to): its receipt means everything it had done
   before (its delivery records, its acks) is durable;
3. SIGKILL the broker at a random moment (``random.Random(seed)``; the seed is printed);
4. start it again on the same directory, drain ``/queue/soak`` up to a marker sent after the
   restart, acking each message, stop it cleanly, and run ``dovecote store check``.

A cycle passes when: no receipted message is missing (lost: neither acked before the kill nor
drained), every message delivered before the kill and not acked comes back, nothing arrives
that was never sent (or whose durable ack came before the kill), the drain has no duplicate,
a duplicate whose first delivery was fenced carries ``redelivered:true``, a committed
transaction is whole and an unconfirmed one all or nothing, and the check is ok. A duplicate
whose first delivery was not yet fenced may lack the flag: delivery records are written in
the background (as ActiveMQ Artemis does by default), so the last ones before a crash can be
lost; such duplicates are counted as ``unflagged``.

Prints one line per cycle; exits 1 if any cycle fails.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

QUEUE = "/queue/soak"
FENCE = "/topic/soak-fence"  # no subscriber: a persistent SEND there is a pure durability fence
KEEP = "/queue/soak-keep"  # messages that live through every cycle, never acknowledged
KEEPERS = 50
WINDOW = 4  # unreceipted SENDs in flight per producer
ACK_LAG = 5  # the consumer acks a delivery this many deliveries later
START_TIMEOUT = 30.0
IO_TIMEOUT = 15.0
LISTENING = re.compile(r"dovecote listening on stomp://127\.0\.0\.1:(\d+)")
RECOVERED = re.compile(r"journal recovered in ([0-9.]+) s")

# The broker with a chosen journal segment size (``dovecote run`` has no option for it).
INLINE_BROKER = """
import asyncio, logging, signal, sys
from pathlib import Path
import dovecote
from dovecote.store.journal import JournalConfig
logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
async def main():
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with dovecote.Broker(
        sys.argv[3],
        data_dir=Path(sys.argv[1]),
        listen=["stomp://127.0.0.1:0"],
        journal=JournalConfig(segment_size=int(sys.argv[2])),
    ) as broker:
        print(f"dovecote listening on {', '.join(broker.urls)}", flush=True)
        await stop.wait()
try:
    import uvloop
except ImportError:
    asyncio.run(main())
else:
    uvloop.run(main())
"""


# --- a broker subprocess ------------------------------------------------------------------------


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    started_in: float  # seconds from spawn to the listening line
    log: Path

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9
        finally:
            self._close()

    def recovery_seconds(self) -> float | None:
        """The broker's own "journal recovered in X s", from its log."""
        found = RECOVERED.findall(self.log.read_text(errors="replace"))
        return float(found[-1]) if found else None

    def _close(self) -> None:
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# The keepers are delivered (and returned unacknowledged) once per cycle: under the default
# redelivery policy (6, as ActiveMQ) they would be dead-lettered at the seventh cycle, which is
# the policy working, not the journal failing. Their queue redelivers without limit.
BROKER_CONFIG = f"""
[[policy]]
match = "{KEEP.removeprefix("/queue/")}"
max_redeliveries = -1
"""


def start_broker(data_dir: Path, segment_size: int | None, log: Path) -> BrokerProcess:
    """Start a broker on a free port; fail (after killing it) unless it starts listening."""
    config = data_dir.parent / f"{data_dir.name}-broker.toml"
    config.write_text(BROKER_CONFIG)
    if segment_size is None:
        command = [sys.executable, "-m", "dovecote", "run", "--data-dir", str(data_dir)]
        command += ["--listen", "stomp://127.0.0.1:0", "--config", str(config)]
    else:
        command = [sys.executable, "-c", INLINE_BROKER, str(data_dir), str(segment_size)]
        command.append(str(config))
    began = time.monotonic()
    with log.open("ab") as log_file:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert proc.stdout is not None
    line = b""
    deadline = began + START_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                chunk = os.read(proc.stdout.fileno(), 1)
                if not chunk:
                    break
                line += chunk
    match = LISTENING.search(line.decode(errors="replace"))
    if match is None:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the broker did not start: {line!r}\n{tail}")
    return BrokerProcess(proc, int(match.group(1)), time.monotonic() - began, log)


# --- STOMP over a raw socket --------------------------------------------------------------------


@dataclass
class Frame:
    command: str
    headers: dict[str, str]
    body: bytes


class Wire:
    """One STOMP 1.2 connection on a plain socket; ``read`` returns None once it is closed."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buffer = b""
        try:
            self.send(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
            frame = self.read()
        except BaseException:
            self.sock.close()
            raise
        if frame is None or frame.command != "CONNECTED":
            self.sock.close()
            raise OSError(f"no CONNECTED frame: {frame}")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = IO_TIMEOUT) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")
            frame = self._parse()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no frame within {timeout}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not data:
                return None
            self.buffer += data

    def _parse(self) -> Frame | None:
        head_end = self.buffer.find(b"\n\n")
        if head_end == -1:
            return None
        command, *lines = self.buffer[:head_end].decode().split("\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers.setdefault(name, value)
        start = head_end + 2
        if "content-length" in headers:
            end = start + int(headers["content-length"])
            if len(self.buffer) < end + 1:
                return None
        else:
            end = self.buffer.find(b"\0", start)
            if end == -1:
                return None
        body, self.buffer = self.buffer[start:end], self.buffer[end + 1 :]
        return Frame(command, headers, body)

    def close(self) -> None:
        self.sock.close()


def send_frame(destination: str, body: bytes, **headers: str) -> bytes:
    lines = [f"destination:{destination}"] + [f"{k}:{v}" for k, v in headers.items()]
    lines.append(f"content-length:{len(body)}")
    return ("SEND\n" + "\n".join(lines) + "\n\n").encode() + body + b"\0"


def body_of(message_id: str) -> bytes:
    """Each message's body is a function of its id, so a drained body can be checked."""
    size = 40 + (sum(message_id.encode()) * 7919) % 400
    return (f"{message_id}|".encode() + b"\x00\x01payload" * 60)[:size]


# --- what happened, from the clients' side ------------------------------------------------------


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: set[str] = field(default_factory=set)
    receipted: set[str] = field(default_factory=set)
    transactions: dict[str, list[str]] = field(default_factory=dict)
    committed: set[str] = field(default_factory=set)  # transactions whose COMMIT was receipted
    delivered: dict[str, bool] = field(default_factory=dict)  # before the kill: id -> redelivered
    acked: set[str] = field(default_factory=set)  # ACK sent before the kill
    fenced: set[str] = field(default_factory=set)  # delivery known durable
    acks_durable: set[str] = field(default_factory=set)  # ACK known durable
    errors: list[str] = field(default_factory=list)


def producer(port: int, name: str, rng: random.Random, ledger: Ledger) -> None:
    try:
        wire = Wire(port)
    except OSError as exc:  # the broker may already be dead
        with ledger.lock:
            ledger.errors.append(f"{name}: cannot connect: {exc}")
        return
    outstanding: deque[str] = deque()
    n = 0
    try:
        while True:
            while len(outstanding) < WINDOW:
                n += 1
                message_id = f"{name}-{n}"
                with ledger.lock:
                    ledger.sent.add(message_id)
                wire.send(
                    send_frame(
                        QUEUE,
                        body_of(message_id),
                        persistent="true",
                        receipt=message_id,
                        **{"x-id": message_id, "priority": str(rng.choice((4, 4, 4, 7)))},
                    )
                )
                outstanding.append(message_id)
            frame = wire.read()
            if frame is None:
                return
            if frame.command != "RECEIPT" or frame.headers.get("receipt-id") != outstanding[0]:
                with ledger.lock:
                    ledger.errors.append(f"{name}: expected RECEIPT {outstanding[0]}: {frame}")
                return
            with ledger.lock:
                ledger.receipted.add(outstanding.popleft())
    except OSError:
        return  # killed mid-send
    finally:
        wire.close()


def transactional_producer(port: int, name: str, ledger: Ledger) -> None:
    try:
        wire = Wire(port)
    except OSError:
        return
    try:
        for t in range(1, 100_000):
            tx = f"{name}-tx{t}"
            ids = [f"{tx}-{k}" for k in range(3)]
            with ledger.lock:
                ledger.sent.update(ids)
                ledger.transactions[tx] = ids
            frames = [f"BEGIN\ntransaction:{tx}\n\n\0".encode()]
            for message_id in ids:
                headers = {"persistent": "true", "transaction": tx, "x-id": message_id}
                frames.append(send_frame(QUEUE, body_of(message_id), **headers))
            frames.append(f"COMMIT\ntransaction:{tx}\nreceipt:{tx}\n\n\0".encode())
            wire.send(b"".join(frames))
            frame = wire.read()
            if frame is None:
                return
            if frame.command != "RECEIPT" or frame.headers.get("receipt-id") != tx:
                with ledger.lock:
                    ledger.errors.append(f"{name}: expected RECEIPT {tx}: {frame}")
                return
            with ledger.lock:
                ledger.committed.add(tx)
                ledger.receipted.update(ids)
    except OSError:
        return
    finally:
        wire.close()


def consumer(port: int, rng: random.Random, ledger: Ledger, subscribed: threading.Event) -> None:
    """Takes deliveries more slowly than the producers send (a backlog builds), acks each a few
    deliveries later, never acks about one in fifty, and fences every 20 deliveries."""
    try:
        wire = Wire(port)
        wire.send(
            b"SUBSCRIBE\nid:0\ndestination:" + QUEUE.encode() + b"\nack:client-individual\n"
            b"activemq.prefetchSize:1000\nreceipt:subscribed\n\n\0"
        )
    except OSError:
        subscribed.set()
        return
    fences: dict[str, tuple[list[str], list[str]]] = {}  # fence -> (delivered, acked) before it
    seen: list[str] = []
    acked: list[str] = []
    to_ack: deque[tuple[str, str]] = deque()  # (message id, ack id), oldest first
    fenced_seen = fenced_acked = 0
    try:
        while True:
            frame = wire.read()
            if frame is None:
                return
            if frame.command == "RECEIPT":
                receipt = frame.headers["receipt-id"]
                if receipt == "subscribed":
                    subscribed.set()
                else:
                    delivered, acks = fences.pop(receipt)
                    with ledger.lock:
                        ledger.fenced.update(delivered)
                        ledger.acks_durable.update(acks)
                continue
            if frame.command != "MESSAGE":
                with ledger.lock:
                    ledger.errors.append(f"consumer: unexpected {frame.command} {frame.headers}")
                return
            message_id = frame.headers["x-id"]
            with ledger.lock:
                if message_id in ledger.delivered:
                    ledger.errors.append(f"consumer: {message_id} delivered twice before the kill")
                ledger.delivered[message_id] = frame.headers.get("redelivered") == "true"
            seen.append(message_id)
            if len(seen) % 2 == 0:
                time.sleep(0.001)  # slower than the producers: a backlog builds up
            if rng.random() >= 0.02:
                to_ack.append((message_id, frame.headers["ack"]))
            while len(to_ack) > ACK_LAG:
                message_acked, ack_id = to_ack.popleft()
                with ledger.lock:
                    ledger.acked.add(message_acked)
                acked.append(message_acked)
                wire.send(f"ACK\nid:{ack_id}\n\n\0".encode())
            if len(seen) % 20 == 0:
                fence = f"fence-{len(seen)}"
                # Receipts come in order: fence k's also confirms fences before it, so each
                # fence holds only what came since the previous one.
                fences[fence] = (seen[fenced_seen:], acked[fenced_acked:])
                fenced_seen, fenced_acked = len(seen), len(acked)
                wire.send(send_frame(FENCE, b"", persistent="true", receipt=fence))
    except OSError:
        return
    finally:
        subscribed.set()
        wire.close()


# --- one cycle ----------------------------------------------------------------------------------


@dataclass
class CycleResult:
    cycle: int
    seed: int
    segment_size: int | None
    sent: int = 0
    receipted: int = 0
    drained: int = 0
    lost: int = 0
    duplicates: int = 0
    flagged: int = 0  # duplicates marked redelivered
    unflagged: int = 0  # duplicates whose first delivery was not fenced, unmarked (allowed)
    killed_after: float = 0.0
    started_in: float = 0.0
    recovery_seconds: float | None = None
    check: str = ""
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        segment = "default" if self.segment_size is None else str(self.segment_size)
        recovery = "?" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f}"
        verdict = "ok" if not self.problems else f"FAILED ({len(self.problems)} problems)"
        return (
            f"cycle {self.cycle} seed {self.seed} segment {segment}: killed after "
            f"{self.killed_after:.2f}s; sent {self.sent}, receipted {self.receipted}, "
            f"recovered {self.drained}, lost {self.lost}, duplicates {self.duplicates} "
            f"({self.flagged} redelivered, {self.unflagged} unfenced unflagged); recovery "
            f"{recovery}s (listening after {self.started_in:.2f}s); store check: {self.check}; "
            f"{verdict}"
        )


def _drain(port: int, marker: str) -> tuple[list[Frame], list[str]]:
    """Every message on the queue up to ``marker`` (sent after subscribing), each acked."""
    problems: list[str] = []
    wire = Wire(port)
    frames: list[Frame] = []
    try:
        wire.send(
            b"SUBSCRIBE\nid:0\ndestination:" + QUEUE.encode() + b"\nack:client-individual\n"
            b"receipt:drain\n\n\0"
        )
        frame = wire.read()
        if frame is None or frame.command != "RECEIPT":
            return frames, [f"drain: no RECEIPT for SUBSCRIBE: {frame}"]
        sender = Wire(port)
        try:
            sender.send(
                send_frame(QUEUE, b"marker", persistent="true", receipt="m", **{"x-id": marker})
            )
            receipt = sender.read()
            if receipt is None or receipt.command != "RECEIPT":
                problems.append(f"drain: no RECEIPT for the marker: {receipt}")
        finally:
            sender.close()
        while True:
            frame = wire.read()
            if frame is None or frame.command != "MESSAGE":
                problems.append(f"drain: expected a MESSAGE, got {frame}")
                break
            wire.send(f"ACK\nid:{frame.headers['ack']}\n\n\0".encode())
            if frame.headers.get("x-id") == marker:
                break
            frames.append(frame)
        wire.send(b"DISCONNECT\nreceipt:bye\n\n\0")
        bye = wire.read()
        if bye is None or bye.headers.get("receipt-id") != "bye":
            problems.append(f"drain: no RECEIPT for DISCONNECT: {bye}")
    finally:
        wire.close()
    return frames, problems


def _keepers_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}-keepers.txt"


def _send_keepers(port: int, cycle: int, data_dir: Path) -> None:
    """Once per data directory: messages that every later cycle checks, and never acks."""
    wire = Wire(port)
    try:
        ids = [f"keep-c{cycle}-{n}" for n in range(KEEPERS)]
        for message_id in ids:
            frame = send_frame(
                KEEP,
                body_of(message_id),
                persistent="true",
                receipt=message_id,
                **{"x-id": message_id},
            )
            wire.send(frame)
            receipt = wire.read()
            if receipt is None or receipt.headers.get("receipt-id") != message_id:
                raise RuntimeError(f"no RECEIPT for keeper {message_id}: {receipt}")
    finally:
        wire.close()
    _keepers_file(data_dir).write_text("0\n" + "\n".join(ids) + "\n")


def _check_keepers(port: int, data_dir: Path) -> list[str]:
    """Every keeper is there, unchanged, in order, and redelivered once seen by an earlier check;
    left unacknowledged again (DISCONNECT puts them back)."""
    path = _keepers_file(data_dir)
    checks, *ids = path.read_text().split()
    problems: list[str] = []
    wire = Wire(port)
    try:
        wire.send(
            b"SUBSCRIBE\nid:k\ndestination:" + KEEP.encode() + b"\nack:client-individual\n"
            b"receipt:keep\n\n\0"
        )
        frame = wire.read()
        if frame is None or frame.command != "RECEIPT":
            return [f"keepers: no RECEIPT for SUBSCRIBE: {frame}"]
        wire.send(send_frame(KEEP, b"end", **{"x-id": "keep-end"}))
        got: list[Frame] = []
        while True:
            frame = wire.read()
            if frame is None or frame.command != "MESSAGE":
                problems.append(f"keepers: expected a MESSAGE, got {frame}")
                break
            if frame.headers.get("x-id") == "keep-end":
                wire.send(f"ACK\nid:{frame.headers['ack']}\n\n\0".encode())
                break
            got.append(frame)
        got_ids = [frame.headers.get("x-id", "?") for frame in got]
        if got_ids != ids:
            problems.append(f"keepers: expected {len(ids)} in order, got {got_ids[:5]}...")
        for frame in got:
            message_id = frame.headers.get("x-id", "?")
            if frame.body != body_of(message_id):
                problems.append(f"keeper {message_id} came back with another body")
            redelivered = frame.headers.get("redelivered") == "true"
            if redelivered != (checks != "0"):
                problems.append(
                    f"keeper {message_id}: redelivered {redelivered} after {checks} checks"
                )
        wire.send(b"DISCONNECT\nreceipt:bye\n\n\0")
        bye = wire.read()
        if bye is None or bye.headers.get("receipt-id") != "bye":
            problems.append(f"keepers: no RECEIPT for DISCONNECT: {bye}")
    finally:
        wire.close()
    path.write_text(f"{int(checks) + 1}\n" + "\n".join(ids) + "\n")
    return problems


def _store_check(data_dir: Path) -> tuple[bool, str]:
    done = subprocess.run(
        [sys.executable, "-m", "dovecote", "store", "check", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    return done.returncode == 0, (lines[-1] if lines else done.stderr.strip())


def run_cycle(
    data_dir: Path,
    cycle: int,
    seed: int,
    segment_size: int | None,
    *,
    producers: int = 16,
    kill_window: tuple[float, float] = (0.4, 1.6),
) -> CycleResult:
    """One load / SIGKILL / restart / drain cycle on ``data_dir``; see the module docstring."""
    rng = random.Random(seed)
    result = CycleResult(cycle, seed, segment_size)
    log = data_dir.parent / f"{data_dir.name}-broker.log"
    ledger = Ledger()
    broker = start_broker(data_dir, segment_size, log)
    threads: list[threading.Thread] = []
    try:
        if not _keepers_file(data_dir).exists():
            _send_keepers(broker.port, cycle, data_dir)
        subscribed = threading.Event()
        threads.append(
            threading.Thread(
                target=consumer,
                args=(broker.port, random.Random(rng.random()), ledger, subscribed),
                daemon=True,
            )
        )
        threads[0].start()
        subscribed.wait(IO_TIMEOUT)
        for p in range(producers):
            rng_p = random.Random(rng.random())
            name = f"c{cycle}-p{p}"
            threads.append(
                threading.Thread(
                    target=producer, args=(broker.port, name, rng_p, ledger), daemon=True
                )
            )
        for t in range(2):
            name = f"c{cycle}-t{t}"
            threads.append(
                threading.Thread(
                    target=transactional_producer, args=(broker.port, name, ledger), daemon=True
                )
            )
        for thread in threads[1:]:
            thread.start()
        result.killed_after = rng.uniform(*kill_window)
        time.sleep(result.killed_after)
    finally:
        broker.kill()
        for thread in threads:
            thread.join(IO_TIMEOUT)
    if any(thread.is_alive() for thread in threads):
        result.problems.append("a client thread did not stop after the kill")
    broker = start_broker(data_dir, segment_size, log)
    try:
        result.started_in = broker.started_in
        result.recovery_seconds = broker.recovery_seconds()
        frames, drain_problems = _drain(broker.port, f"marker-{cycle}")
        result.problems += drain_problems
        result.problems += _check_keepers(broker.port, data_dir)
    finally:
        status = broker.stop()
    if status != 0:
        result.problems.append(f"the restarted broker exited with {status}")
    ok, result.check = _store_check(data_dir)
    if not ok:
        result.problems.append(f"store check: {result.check}")
    _account(ledger, frames, result)
    return result


def _account(ledger: Ledger, frames: list[Frame], result: CycleResult) -> None:
    problems = result.problems
    problems += ledger.errors
    drained: dict[str, Frame] = {}
    for frame in frames:
        message_id = frame.headers.get("x-id", "?")
        if message_id in drained:
            problems.append(f"{message_id} drained twice")
        drained[message_id] = frame
        if message_id not in ledger.sent:
            problems.append(f"{message_id} was never sent (invented, or from an earlier cycle)")
        elif frame.body != body_of(message_id):
            problems.append(f"{message_id} came back with another body")
        if message_id in ledger.acks_durable:
            problems.append(f"{message_id} came back after its ack was durable")
    result.sent, result.receipted, result.drained = (
        len(ledger.sent),
        len(ledger.receipted),
        len(drained),
    )
    lost = sorted(ledger.receipted - drained.keys() - ledger.acked)
    result.lost = len(lost)
    if lost:
        problems.append(f"lost {len(lost)} receipted messages: {lost[:10]}")
    durable = ledger.receipted | ledger.fenced
    unacked = sorted(
        m for m in ledger.delivered if m not in ledger.acked and m in durable and m not in drained
    )
    if unacked:
        problems.append(f"delivered, not acked, and gone: {unacked[:10]}")
    for message_id in sorted(ledger.delivered.keys() & drained.keys()):
        result.duplicates += 1
        if drained[message_id].headers.get("redelivered") == "true":
            result.flagged += 1
        elif message_id in ledger.fenced:
            problems.append(f"{message_id} was delivered (durably) before, but not redelivered")
        else:
            result.unflagged += 1
    for tx, ids in ledger.transactions.items():
        here = [m in drained or m in ledger.acked for m in ids]
        if tx in ledger.committed and not all(here):
            problems.append(f"committed transaction {tx} is missing messages")
        seen_before = any(m in ledger.delivered for m in ids)
        if not seen_before and any(here) and not all(here):
            problems.append(f"transaction {tx} came back in part: {here}")


@contextmanager
def _data_directory(path: str | None, keep: bool) -> Iterator[Path]:
    if path is not None:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        yield directory / "data"
        return
    base = Path(tempfile.mkdtemp(prefix="dovecote-soak-"))
    try:
        yield base / "data"
    finally:
        if keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument(
        "--seed", type=int, default=None, help="first cycle's seed (default: random)"
    )
    parser.add_argument(
        "--segment-sizes",
        default="default,65536,16384",
        help="journal segment sizes to cycle through, comma separated ('default': 32 MiB "
        "via 'dovecote run'; others via an inline script)",
    )
    parser.add_argument("--producers", type=int, default=16)
    parser.add_argument("--data-dir", default=None, help="keep the journal here (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ns = parser.parse_args(argv)
    sizes = [None if s == "default" else int(s) for s in ns.segment_sizes.split(",")]
    first_seed = ns.seed if ns.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"soak: {ns.cycles} cycles, first seed {first_seed}", flush=True)
    failed = 0
    with _data_directory(ns.data_dir, ns.keep) as data_dir:
        for cycle in range(1, ns.cycles + 1):
            size = sizes[(cycle - 1) % len(sizes)]
            result = run_cycle(
                data_dir, cycle, first_seed + cycle - 1, size, producers=ns.producers
            )
            print(result.line(), flush=True)
            for problem in result.problems[:20]:
                print(f"    {problem}", flush=True)
            failed += bool(result.problems)
    print(f"soak: {ns.cycles - failed} of {ns.cycles} cycles ok", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
