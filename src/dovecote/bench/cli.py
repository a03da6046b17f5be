"""Command line of the load generator: ``dovecote bench SCENARIO... [options]``.

Parses the options into a ``scenarios.Options``, runs each scenario named (``all`` means
queue, fanout, latency and idle) against the broker at ``--host``/``--port``, prints one line
per result and, with ``--json FILE``, appends one JSON object per result to FILE.

Exit status: 0 when every scenario ran and every message arrived exactly once, 1 otherwise,
2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Sequence

from .frames import BODY_HEAD_SIZE, BenchError
from .scenarios import MAIN_SCENARIOS, SCENARIOS, Options, Result
from .session import Target


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``prog`` is what ``dovecote bench`` shows in usage)."""
    parser = argparse.ArgumentParser(
        prog="dovecote bench",
        description="Load generator for any STOMP 1.2 broker.",
        epilog=(
            "Scenarios: "
            + ", ".join(SCENARIOS)
            + "; 'all' = "
            + ", ".join(MAIN_SCENARIOS)
            + ". idle measures the broker's memory growth, so it reads truest on a freshly"
            " started broker (benchmarks/side_by_side.py starts one for it)."
        ),
    )
    parser.add_argument("scenarios", nargs="+", choices=[*SCENARIOS, "all"], metavar="SCENARIO")
    broker = parser.add_argument_group("broker")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=61613)
    broker.add_argument("--vhost", default="localhost", help="STOMP host header")
    broker.add_argument("--user")
    broker.add_argument("--password")
    broker.add_argument("--pid", type=int, help="broker process id (idle reads its memory)")
    broker.add_argument("--label", default="broker", help="broker name in the output")
    load = parser.add_argument_group("load")
    load.add_argument(
        "--messages",
        type=int,
        help="messages per producer (default: queue 100,000, fanout and persistent 20,000)",
    )
    load.add_argument(
        "--size", type=int, help="body bytes (default 256; persistent16, fill, drain: 1024)"
    )
    load.add_argument(
        "--destination", help="fill/drain: the queue to fill and later drain (/queue/NAME)"
    )
    load.add_argument("--subscribers", type=int, default=10, help="fanout subscribers")
    load.add_argument("--rate", type=float, default=2000.0, help="latency: msg/s")
    load.add_argument("--duration", type=float, default=10.0, help="latency: seconds")
    load.add_argument("--warmup", type=float, default=1.0, help="latency: seconds dropped")
    load.add_argument("--connections", type=int, default=5000, help="idle: connections")
    load.add_argument("--parallel", type=int, default=200, help="idle: handshakes in flight")
    load.add_argument(
        "--settle", type=float, default=60.0, help="idle: longest wait for the broker to settle"
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument("--timeout", type=float, default=30.0, help="any single wait, seconds")
    limits.add_argument(
        "--idle-timeout", type=float, default=15.0, help="give up after this long without news"
    )
    parser.add_argument("--json", metavar="FILE", help="append results as JSON lines")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    """The scenario options named on the command line."""
    return Options(
        target=Target(args.host, args.port, args.vhost, args.user, args.password),
        messages=args.messages,
        size=args.size,
        destination=args.destination,
        subscribers=args.subscribers,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        parallel=args.parallel,
        settle=args.settle,
        pid=args.pid,
        timeout=args.timeout,
        idle_timeout=args.idle_timeout,
    )


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse numbers no run can use, before any process starts."""
    at_least = {
        "--messages": (args.messages, 1),
        "--size": (args.size, BODY_HEAD_SIZE),
        "--subscribers": (args.subscribers, 1),
        "--connections": (args.connections, 1),
        "--parallel": (args.parallel, 1),
    }
    for flag, (value, low) in at_least.items():
        if value is not None and value < low:
            parser.error(f"{flag} must be at least {low}")
    for flag, seconds in (("--timeout", args.timeout), ("--idle-timeout", args.idle_timeout)):
        if seconds <= 0:
            parser.error(f"{flag} must be positive")


def run(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios named in ``argv``; see the module docstring for the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    opts = options_from(args)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so the runner ends the worker processes it started.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    names: list[str] = []
    for name in args.scenarios:
        for expanded in MAIN_SCENARIOS if name == "all" else (name,):
            if expanded not in names:
                names.append(expanded)
    all_ok = True
    for name in names:
        if name == "idle" and opts.pid is None and "all" in args.scenarios:
            print(f"{args.label:<10} idle       skipped: needs --pid of the broker", flush=True)
            continue
        try:
            result = SCENARIOS[name](opts)
        except BenchError as exc:
            all_ok = False
            print(f"{args.label:<10} {name:<10} FAILED: {exc}", flush=True)
            _append_json(
                args.json,
                {
                    "scenario": name,
                    "label": args.label,
                    "ok": False,
                    "error": str(exc),
                    "time": time.time(),
                },
            )
            continue
        all_ok = all_ok and result.ok
        status = "" if result.ok else "NOT OK: "
        print(f"{args.label:<10} {name:<10} {status}{result.summary}", flush=True)
        _append_json(args.json, _record(result, args.label))
    return 0 if all_ok else 1


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _record(result: Result, label: str) -> dict[str, object]:
    return {
        "scenario": result.scenario,
        "label": label,
        "ok": result.ok,
        "time": time.time(),
        **result.numbers,
    }


def _append_json(path: str | None, record: dict[str, object]) -> None:
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
