#!/usr/bin/env python3
"""The load generator's ceiling on this machine: a STOMP responder that stores nothing.

    python3 benchmarks/ceiling.py                    persistent16 against it, 3 runs
    python3 benchmarks/ceiling.py --scenario persistent --repeat 5

The responder does the least any broker must do for the scenario: it reads each frame,
answers a RECEIPT at once, forwards each SEND to the next subscriber round-robin as a MESSAGE
and reads (and forgets) the ACKs. No queue, no journal, no fsync, no redelivery. Whatever
rate the generator reaches against it bounds every Python broker measured with the same
generator on the same machine, because the generator's processes and the broker share the
cores (a responder in C would spend less on the same work). ``durability.py`` runs it after
both brokers; docs/benchmarks.md uses it to explain issue #3's persistent16 target.

It speaks only the subset ``dovecote bench`` uses (CONNECT, SUBSCRIBE, SEND, ACK, NACK,
DISCONNECT, every frame ending in NUL with no NUL in a body), one destination, and is not a
broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import REPO, Broker, run_bench


@dataclass
class Hub:
    """What the connections share: the subscribers, served round-robin."""

    subscribers: list[tuple[Responder, bytes]] = field(default_factory=list)
    turn: int = 0
    last_id: int = 0


class Responder(asyncio.Protocol):
    """One client connection of the responder."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass)

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.subscribers = [s for s in self.hub.subscribers if s[0] is not self]

    def push(self, data: bytes) -> None:
        """Queue ``data``; everything queued in one loop turn goes out in one write."""
        if not self.out:
            asyncio.get_running_loop().call_soon(self.flush)
        self.out.append(data)

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        frames = (self.buf + data).split(b"\0")
        self.buf = frames.pop()
        for frame in frames:
            self.frame(frame.lstrip(b"\r\n"))

    def frame(self, frame: bytes) -> None:
        head, _, body = frame.partition(b"\n\n")
        command, *lines = head.split(b"\n")
        headers = dict(line.split(b":", 1) for line in lines if b":" in line)
        receipt = headers.get(b"receipt")
        hub = self.hub
        if command == b"SEND" and hub.subscribers:
            target, subscription = hub.subscribers[hub.turn % len(hub.subscribers)]
            hub.turn += 1
            hub.last_id += 1
            ident = b"%d" % hub.last_id
            target.push(
                b"MESSAGE\ndestination:" + headers.get(b"destination", b"") + b"\nmessage-id:"
                + ident + b"\nsubscription:" + subscription + b"\nack:" + ident
                + b"\ncontent-length:%d\n\n" % len(body) + body + b"\0"
            )  # fmt: skip
        elif command in (b"CONNECT", b"STOMP"):
            self.push(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
        elif command == b"SUBSCRIBE":
            hub.subscribers.append((self, headers.get(b"id", b"0")))
        if receipt is not None:
            self.push(b"RECEIPT\nreceipt-id:" + receipt + b"\n\n\0")
        if command == b"DISCONNECT":
            self.flush()
            if self.transport is not None:
                self.transport.close()


def serve() -> None:
    """The responder's process: print the port, serve until standard input closes."""
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    hub = Hub()
    server = loop.run_until_complete(loop.create_server(lambda: Responder(hub), "127.0.0.1", 0))
    print(server.sockets[0].getsockname()[1], flush=True)

    def on_stdin() -> None:
        if not os.read(0, 4096):  # the parent went away
            loop.stop()

    loop.add_reader(0, on_stdin)
    loop.run_forever()


def measure(scenario: str = "persistent16", repeat: int = 3) -> list[float]:
    """``scenario``'s rate against the responder, ``repeat`` times after a warm-up."""
    child = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "python"), __file__, "--serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        broker = Broker("null", port, child.pid)
        json_path = Path(tempfile.gettempdir()) / f"dovecote-ceiling-{child.pid}.json"
        run_bench(broker, scenario, ["--messages", "20000"], json_path)  # warm-up
        rates = [
            float(str(run_bench(broker, scenario, [], json_path).get("msg_per_s", 0)))
            for _ in range(repeat)
        ]
        json_path.unlink(missing_ok=True)
        return rates
    finally:
        child.kill()
        child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="persistent16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:  # the responder's own process, so that it has a core like a broker
        serve()
        return 0
    rates = measure(args.scenario, args.repeat)
    print(f"{args.scenario} against a responder that stores nothing: median "
          f"{statistics.median(rates):,.0f} msg/s (runs: "
          + ", ".join(f"{r:,.0f}" for r in rates) + ")")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
