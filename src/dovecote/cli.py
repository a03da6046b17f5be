"""The ``dovecote`` command: run a broker, send and receive from a shell, benchmark."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import sys
from pathlib import Path

from dovecote.config import DEFAULT_LISTEN, BrokerConfig
from dovecote.core.limits import DEFAULT_MEMORY_LIMIT
from dovecote.store.journal import SyncPolicy

log = logging.getLogger("dovecote")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["bench"]:
        from dovecote.bench import main as bench_main

        return bench_main(args[1:])
    parser = _parser()
    ns = parser.parse_args(args)
    if ns.command is None:
        parser.print_help()
        return 2
    handler = {"run": _run, "send": _send, "receive": _receive, "store": _store}[ns.command]
    return handler(ns)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dovecote", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a broker in the foreground")
    run.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML config file: broker settings and per-address policies "
        "(docs/configuration.md); flags given here override it",
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        help="where the broker keeps its state (default: ./data)",
    )
    run.add_argument(
        "--listen",
        action="append",
        metavar="URI",
        help=f"listener URI, repeatable (default: {DEFAULT_LISTEN})",
    )
    run.add_argument(
        "--store",
        choices=("journal", "memory"),
        help="journal: durable, in DATA_DIR (default); memory: nothing kept",
    )
    run.add_argument(
        "--sync",
        choices=[p.value for p in SyncPolicy],
        help="journal fsync policy (default: always; see docs/journal-format.md)",
    )
    run.add_argument(
        "--memory-limit",
        type=int,
        metavar="MIB",
        help="queued message data before producers are paused "
        f"(default: {DEFAULT_MEMORY_LIMIT // 2**20} MiB)",
    )
    run.add_argument("--log-level", default="INFO")
    for name, text in (("send", "send one message"), ("receive", "receive messages")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("destination", help="/queue/NAME or /topic/NAME")
        cmd.add_argument("--host", default="127.0.0.1")
        cmd.add_argument("--port", type=int, default=61613)
        if name == "send":
            cmd.add_argument("body")
            cmd.add_argument("--header", "-H", action="append", default=[], metavar="NAME:VALUE")
            cmd.add_argument("--persistent", action="store_true")
        else:
            cmd.add_argument("-n", type=int, default=1, help="how many messages (default 1)")
            cmd.add_argument(
                "--timeout",
                type=float,
                default=None,
                help="give up after this many seconds without a message",
            )
    store = sub.add_parser("store", help="inspect a journal")
    store.add_argument("action", choices=("check", "dump"))
    store.add_argument("directory", type=Path, help="the broker's data directory")
    sub.add_parser("bench", help="benchmarks (dovecote bench --help)")
    return parser


def _run(ns: argparse.Namespace) -> int:
    logging.basicConfig(
        level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = run_config(ns)
        config.listen_addresses()
    except ValueError as exc:
        print(f"dovecote: {exc}", file=sys.stderr)
        return 2
    tune_garbage_collector()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(_serve(config))
    except OSError as exc:
        print(f"dovecote: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def run_config(ns: argparse.Namespace) -> BrokerConfig:
    """The config file's settings (or the defaults), overridden by the flags given.

    Raises ValueError (ConfigError for the file) with a one-line message."""
    from dovecote.config_file import load_config

    base = load_config(ns.config) if ns.config is not None else BrokerConfig()
    changes: dict[str, object] = {}
    if ns.listen:
        changes["listen"] = tuple(ns.listen)
    if ns.data_dir is not None:
        changes["data_dir"] = ns.data_dir
    elif base.data_dir is None:
        changes["data_dir"] = Path("data")
    if ns.store is not None:
        changes["store"] = ns.store
    if ns.sync is not None:
        changes["journal"] = dataclasses.replace(base.journal, sync=SyncPolicy(ns.sync))
    if ns.memory_limit is not None:
        if ns.memory_limit < 1:
            raise ValueError("--memory-limit must be 1 MiB or more")
        changes["memory_limit"] = ns.memory_limit * 2**20
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def tune_garbage_collector() -> None:
    """Collect young objects less often and never rescan start-up objects.

    A broker holds many long-lived objects (queued messages and their headers) that form no
    reference cycles; with CPython's default thresholds the cyclic collector keeps walking all
    of them and costs a third of the hot path under load. This is process-wide policy, so
    ``dovecote run`` sets it; an application embedding a broker decides for itself.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


async def _serve(config: BrokerConfig) -> None:
    from dovecote.server import Broker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Broker(config) as broker:
        print(f"dovecote listening on {', '.join(broker.urls)}", flush=True)
        await stop.wait()
        log.info("shutting down")


def _store(ns: argparse.Namespace) -> int:
    from dovecote.store import inspect

    if ns.action == "dump":
        for line in inspect.dump(ns.directory):
            print(line)
        return 0
    result = inspect.check(ns.directory)
    for problem in result.problems:
        print(f"problem: {problem}")
    verdict = "ok" if result.is_ok else f"{len(result.problems)} problem(s)"
    print(f"{result.segments} segments, {result.records} records, {result.bytes} bytes: {verdict}")
    return 0 if result.is_ok else 1


def _send(ns: argparse.Namespace) -> int:
    from dovecote.client.stomp import StompClient, StompClientError

    headers = {}
    for item in ns.header:
        name, colon, value = item.partition(":")
        if not colon:
            print(f"dovecote: header {item!r} is not NAME:VALUE", file=sys.stderr)
            return 2
        headers[name] = value
    if ns.persistent:
        headers["persistent"] = "true"
    try:
        with StompClient(ns.host, ns.port) as client:
            client.send(ns.destination, ns.body.encode(), headers)
    except (OSError, StompClientError) as exc:
        print(f"dovecote: {exc}", file=sys.stderr)
        return 1
    return 0


def _receive(ns: argparse.Namespace) -> int:
    from dovecote.client.stomp import StompClient, StompClientError

    try:
        with StompClient(ns.host, ns.port) as client:
            # Prefetch only what we will print: the rest stays in the queue, not redelivered.
            prefetch = {"activemq.prefetchSize": str(ns.n)}
            client.subscribe(ns.destination, ack="client-individual", headers=prefetch)
            for _ in range(ns.n):
                frame = client.receive(timeout=ns.timeout)
                sys.stdout.buffer.write(frame.body + b"\n")
                sys.stdout.flush()
                client.ack(frame)
    except TimeoutError:
        print("dovecote: no message before the timeout", file=sys.stderr)
        return 1
    except (OSError, StompClientError) as exc:
        print(f"dovecote: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
