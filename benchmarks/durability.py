#!/usr/bin/env python3
"""Durable-storage benchmarks, Dovecote side by side with ActiveMQ 5.17 + KahaDB.

    python3 benchmarks/durability.py                  both brokers, 3 runs of persistent16
    python3 benchmarks/durability.py --only dovecote  one side alone
    python3 benchmarks/durability.py --fill 1000000   a bigger backlog (RSS with 1M x 1 KiB)

For each broker, on a fresh data directory: a discarded warm-up, ``persistent16`` (16
producers with a receipt per persistent send, 4 client-individual consumers, 40k x 1 KiB)
``--repeat`` times; then ``fill`` (200k x 1 KiB persistent, 4 producers, a receipt every 100,
no consumer) with the broker's RSS once full; then the broker is stopped and started again on
the same directory, and ``drain`` empties the backlog: time from the start command to the
first message delivered, and the drain rate. Both fsync: KahaDB by default, Dovecote with
``--sync always``. When both brokers run, persistent16 is also run against ``ceiling.py``'s
responder that stores nothing (what the load generator reaches on this machine when the
broker does no work; ``--no-ceiling`` skips it). Prints a Markdown table. Uses
``side_by_side.py``'s helpers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ceiling
from side_by_side import (
    REPO,
    START_TIMEOUT,
    Broker,
    Record,
    SideBySideError,
    _wait_gone,
    free_ports,
    is_running,
    run_bench,
    wait_for_port,
)


@dataclass(slots=True)
class Running:
    """A broker we can stop and start again on the same directory."""

    name: str
    workdir: Path
    port: int
    pid: int = 0
    process: subprocess.Popen[bytes] | None = None
    extra_ports: list[int] = field(default_factory=list)


def start(broker: Running, peers: Path) -> float:
    """Start (or restart) ``broker``; returns seconds until its STOMP port accepted."""
    began = time.monotonic()
    if broker.name == "ActiveMQ":
        ports = [str(broker.port), *(str(p) for p in broker.extra_ports)]
        done = subprocess.run(
            ["sh", str(peers / "activemq.sh"), "start", str(broker.workdir), *ports],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SideBySideError(f"activemq.sh start failed: {done.stderr.strip()}")
        broker.pid = int(done.stdout.split()[-1])
    else:
        command = [
            str(REPO / ".venv" / "bin" / "python"), "-m", "dovecote", "run",
            "--listen", f"stomp://127.0.0.1:{broker.port}",
            "--data-dir", str(broker.workdir / "data"), "--sync", "always",
        ]  # fmt: skip
        log = open(broker.workdir / "broker.log", "ab")  # noqa: SIM115 (owned by the child)
        broker.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        broker.pid = broker.process.pid
        process = broker.process
        wait_for_port(broker.port, START_TIMEOUT, lambda: process.poll() is None)
    return time.monotonic() - began


def stop(broker: Running, peers: Path) -> None:
    if broker.name == "ActiveMQ":
        subprocess.run(
            ["sh", str(peers / "activemq.sh"), "stop", str(broker.workdir)], timeout=60, check=False
        )
        _wait_gone(broker.pid, "ActiveMQ")
    elif broker.process is not None and broker.process.poll() is None:
        broker.process.terminate()
        broker.process.wait(timeout=30)
    while is_running(broker.pid):
        time.sleep(0.1)


def bench(broker: Running, scenario: str, args: Sequence[str], json_path: Path) -> Record:
    record = run_bench(Broker(broker.name, broker.port, broker.pid), scenario, args, json_path)
    if "error" in record:  # (the bench printed its own line for a run that went through)
        print(f"  {broker.name:9} {scenario:13} {record['error']}", flush=True)
    return record


def measure(name: str, args: argparse.Namespace, peers: Path) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix=f"dovecote-durability-{name.lower()}-"))
    port, *extra = free_ports(3)
    broker = Running(name, workdir, port, extra_ports=extra)
    json_path = workdir / "result.json"
    out: dict[str, float] = {}
    try:
        start(broker, peers)
        bench(broker, "persistent16", ["--messages", "20000"], json_path)  # warm-up
        rates = [
            float(bench(broker, "persistent16", [], json_path).get("msg_per_s", 0))
            for _ in range(args.repeat)
        ]
        out["persistent16"] = statistics.median(rates)
        destination = f"/queue/backlog.{os.getpid()}"
        fill = bench(
            broker, "fill", ["--destination", destination, "--messages", str(args.fill)], json_path
        )
        out["fill"] = float(fill.get("msg_per_s", 0))
        out["fill_rss"] = float(fill.get("rss_mib", 0))
        stop(broker, peers)
        listening = start(broker, peers)
        drain = bench(
            broker, "drain",
            ["--destination", destination, "--messages", str(args.fill), "--timeout", "120"],
            json_path,
        )  # fmt: skip
        out["restart_first"] = listening + float(drain.get("first_message_s", 0))
        out["drain"] = float(drain.get("msg_per_s", 0))
        out["drain_lost"] = float(drain.get("lost", -1))
    finally:
        stop(broker, peers)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


ROWS = (
    ("persistent16", "persistent, 16 producers with receipts, 4 consumers, msg/s", True),
    ("fill", "fill 1 KiB persistent, 4 producers, receipt every 100, msg/s", True),
    ("fill_rss", "broker RSS with that backlog, MiB", False),
    ("restart_first", "restart with that backlog: seconds to first message", False),
    ("drain", "then drain rate, msg/s", True),
    ("drain_lost", "messages lost across the restart", False),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("activemq", "dovecote"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fill", type=int, default=200_000)
    parser.add_argument("--peers", type=Path, default=REPO.parent / "shared" / "peers")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceiling run")
    args = parser.parse_args(argv)
    names = [n for n in ("ActiveMQ", "Dovecote") if args.only in (None, n.lower())]
    results = {name: measure(name, args, args.peers) for name in names}
    ceiling_rate = 0.0
    if len(names) == 2 and not args.no_ceiling:
        ceiling_rate = statistics.median(ceiling.measure("persistent16", args.repeat))
    print(
        f"\n| scenario ({args.fill:,} messages backlog) | "
        + " | ".join(names)
        + (" | ratio |" if len(names) == 2 else " |")
    )
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")
    for key, label, higher in ROWS:
        cells = [f"{results[n].get(key, float('nan')):,.2f}".rstrip("0").rstrip(".") for n in names]
        ratio = ""
        if len(names) == 2:
            a, d = results["ActiveMQ"].get(key, 0), results["Dovecote"].get(key, 0)
            if a and d:
                ratio = f" {d / a:.2f}x |" if higher else f" {a / d:.2f}x better |"
            else:
                ratio = " - |"
        print(f"| {label} | " + " | ".join(cells) + " |" + ratio)
    if ceiling_rate:
        activemq = results["ActiveMQ"].get("persistent16", 0)
        times = f"{ceiling_rate / activemq:.2f}x ActiveMQ" if activemq else "-"
        print(
            f"\npersistent16 against a responder that stores nothing (the generator's ceiling "
            f"here): {ceiling_rate:,.0f} msg/s = {times}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
