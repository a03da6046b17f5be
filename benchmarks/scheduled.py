#!/usr/bin/env python3
"""Scheduled-delivery benchmark: schedule many messages, measure firing lateness and broker RSS.

    python benchmarks/scheduled.py --messages 100000
    python benchmarks/scheduled.py --messages 1000000 --lead 90 --window 60
    python benchmarks/scheduled.py --port 61613 --pid 1234 --messages 10000   # a running broker

1. Start ``dovecote run`` on a free port with a fresh data directory (unless ``--port``).
2. A consumer subscribes (``ack:auto``) to ``/queue/<queue>``.
3. ``--producers`` connections send ``--messages`` persistent messages (``--body`` bytes), each
   with ``AMQ_SCHEDULED_DELAY`` chosen so that its due time is ``start + lead + k * window /
   messages`` (due times spread evenly over ``window`` seconds, ``lead`` seconds after the
   start), and its due time in an ``x-due`` header. Every 500th SEND asks for a receipt, to
   keep the producers within the broker's pace.
4. Lateness of each delivery, measured at the consumer (wall clock, same machine): *firing
   lateness* against the broker's own due time (the ``timestamp`` it stamped on the SEND plus
   ``AMQ_SCHEDULED_DELAY``), and *end-to-end lateness* against ``x-due``, the time the
   producer meant (which also counts the producer's batching and the broker's intake queue).
   Broker RSS (``/proc/<pid>/status`` VmRSS) is sampled every 0.5 s.

Prints: time to schedule, messages still being sent after their due time, both latenesses
(p50/p99/p99.9/max and how many were over 100 ms), RSS at start / once all were scheduled /
peak, and the number received. Standard library only.

Measured on the development VM (2 cores, quiet; 1,000,000 persistent 100-byte messages to one
queue, 4 producers, one auto-ack consumer, sync always; docs/benchmarks.md):

=================================  ==========  ===========================  ============
due times                          fires/s     firing p50/p99/p99.9/max     over 100 ms
=================================  ==========  ===========================  ============
spread over 180 s (lead 45 s)      5,600       1 / 13 / 43 / 96 ms          0
spread over 60 s (lead 60 s)       16,700      1 / 31 / 97 / 118 ms         726
=================================  ==========  ===========================  ============

Memory is about 290 bytes per scheduled message (its heap entry, the journal's record location
and the job-id index); bodies and properties stay on disk until they fire (RSS 316 MiB once
scheduled).
"""

from __future__ import annotations

import argparse
import bisect
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LISTENING = re.compile(rb"dovecote listening on stomp://127\.0\.0\.1:(\d+)\n")


def start_broker(data_dir: Path, memory_limit: str | None) -> tuple[subprocess.Popen[bytes], int]:
    command = [sys.executable, "-m", "dovecote", "run", "--listen", "stomp://127.0.0.1:0"]
    command += ["--data-dir", str(data_dir)]
    if memory_limit:
        command += ["--memory-limit", memory_limit]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = b""
    deadline = time.monotonic() + 30
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    match = LISTENING.fullmatch(line)
    if match is None:
        proc.kill()
        raise SystemExit(f"broker did not start: {line!r}")
    return proc, int(match.group(1))


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
    data = b""
    while b"\0" not in data:
        data += sock.recv(4096)
    if not data.startswith(b"CONNECTED"):
        raise SystemExit(f"not connected: {data[:200]!r}")
    return sock


class Consumer(threading.Thread):
    """Reads MESSAGE frames; records arrival minus x-due for each."""

    def __init__(self, port: int, queue: str, expected: int) -> None:
        super().__init__(daemon=True)
        self.sock = connect(port)
        self.sock.sendall(
            f"SUBSCRIBE\nid:1\ndestination:/queue/{queue}\nack:auto\nreceipt:sub\n\n\0".encode()
        )
        self.expected = expected
        self.lateness: list[int] = []  # arrival - x-due (the due time the producer meant)
        self.firing_lateness: list[int] = []  # arrival - (broker's timestamp + delay)
        self.received = 0
        self.done = threading.Event()

    def run(self) -> None:
        buffer = b""
        sock = self.sock
        while self.received < self.expected:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            now = time.time_ns() // 1_000_000
            buffer += chunk
            pos = 0  # (an offset, not slicing: a slice per frame would copy the rest each time)
            while True:
                while buffer.startswith(b"\n", pos):
                    pos += 1
                head_end = buffer.find(b"\n\n", pos)
                if head_end < 0:
                    break
                start = buffer.find(b"content-length:", pos, head_end)
                if start < 0:  # RECEIPT or heart-beat
                    end = buffer.find(b"\0", head_end)
                    if end < 0:
                        break
                    pos = end + 1
                    continue
                length = int(buffer[start + 15 : buffer.find(b"\n", start)])
                end = head_end + 2 + length
                if len(buffer) < end + 1:
                    break
                due = _header_int(buffer, b"x-due", pos, head_end)
                if due is not None:
                    self.lateness.append(now - due)
                    self.received += 1
                    # The broker's own due time: when it accepted the SEND plus the delay.
                    accepted = _header_int(buffer, b"timestamp", pos, head_end)
                    delay = _header_int(buffer, b"AMQ_SCHEDULED_DELAY", pos, head_end)
                    if accepted is not None and delay is not None:
                        self.firing_lateness.append(now - (accepted + delay))
                pos = end + 1
            buffer = buffer[pos:]
        self.done.set()


def _header_int(buffer: bytes, name: bytes, start: int, end: int) -> int | None:
    at = buffer.find(b"\n" + name + b":", start, end)
    if at < 0:
        return None
    at += len(name) + 2
    return int(buffer[at : buffer.find(b"\n", at)])


def produce(port: int, queue: str, dues: list[int], body: bytes, late: list[int]) -> None:
    sock = connect(port)
    pending = b""
    receipts = 0
    for n, due in enumerate(dues):
        delay = due - time.time_ns() // 1_000_000
        if delay <= 0:
            late[0] += 1
            delay = 0
        receipt = b""
        if n % 500 == 499:
            receipts += 1
            receipt = b"receipt:%d\n" % receipts
        pending += (
            b"SEND\ndestination:/queue/%s\npersistent:true\nAMQ_SCHEDULED_DELAY:%d\n"
            b"x-due:%d\n%scontent-length:%d\n\n%s\0"
            % (queue.encode(), delay, due, receipt, len(body), body)
        )
        if receipt:
            sock.sendall(pending)
            pending = b""
            data = b""
            while b"receipt-id:%d\n" % receipts not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit("producer connection closed")
                data += chunk
    sock.sendall(pending + b"DISCONNECT\nreceipt:bye\n\n\0")
    data = b""
    while b"receipt-id:bye" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()


def percentile(values: list[int], fraction: float) -> int:
    return values[min(len(values) - 1, int(fraction * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--body", type=int, default=100, help="body bytes")
    parser.add_argument("--lead", type=float, default=30.0, help="seconds to the first due time")
    parser.add_argument("--window", type=float, default=20.0, help="seconds due times span")
    parser.add_argument("--port", type=int, help="use a running broker on this port")
    parser.add_argument("--pid", type=int, help="its pid (for RSS)")
    parser.add_argument("--memory-limit", help="MiB, passed to dovecote run")
    parser.add_argument("--queue", default="scheduled.bench")
    args = parser.parse_args()

    proc = None
    if args.port is None:
        tmp = tempfile.mkdtemp(prefix="dovecote-scheduled-")
        proc, port = start_broker(Path(tmp) / "data", args.memory_limit)
        pid = proc.pid
        print(f"broker pid {pid} on port {port}, data in {tmp}")
    else:
        port, pid = args.port, args.pid or 0
    rss = {"start": rss_kib(pid), "peak": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            rss["peak"] = max(rss["peak"], rss_kib(pid))
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    try:
        consumer = Consumer(port, args.queue, args.messages)
        consumer.start()
        start = time.time_ns() // 1_000_000
        first_due = start + int(args.lead * 1000)
        step = args.window * 1000 / max(1, args.messages)
        dues = [first_due + int(k * step) for k in range(args.messages)]
        late = [0]
        threads = [
            threading.Thread(
                target=produce,
                args=(port, args.queue, dues[i :: args.producers], b"x" * args.body, late),
            )
            for i in range(args.producers)
        ]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        scheduled_in = time.monotonic() - began
        rss["scheduled"] = rss_kib(pid)
        last_due = dues[-1] / 1000
        consumer.done.wait(max(0.0, last_due - time.time()) + 120)
        sampling.set()
        lateness = sorted(consumer.lateness)
        print(
            f"scheduled {args.messages:,} persistent messages ({args.body} B) in "
            f"{scheduled_in:.1f} s ({args.messages / scheduled_in:,.0f}/s); "
            f"sent after their due time: {late[0]:,}"
        )
        print(f"received {consumer.received:,} of {args.messages:,}")
        for label, values in (
            ("firing lateness (vs the broker's due time)", sorted(consumer.firing_lateness)),
            ("end-to-end lateness (vs the producer's x-due)", lateness),
        ):
            if values:
                over = len(values) - bisect.bisect_right(values, 100)
                print(
                    f"{label} ms: p50 {percentile(values, 0.5)}  p99 {percentile(values, 0.99)}"
                    f"  p99.9 {percentile(values, 0.999)}  max {values[-1]}  min {values[0]}"
                    f"  (over 100 ms: {over:,})"
                )
        print(
            f"broker RSS MiB: start {rss['start'] / 1024:.0f}, all scheduled "
            f"{rss['scheduled'] / 1024:.0f}, peak {rss['peak'] / 1024:.0f}"
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
