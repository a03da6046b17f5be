"""Dovecote's load generator: drives any STOMP 1.2 broker and counts every message.

``main(["queue", "--port", "61613"])`` runs a scenario and returns the exit status; see
``cli`` for the options and ``scenarios`` for what each scenario measures. Producers and
consumers run in their own processes on raw sockets, so the tool is not the bottleneck.

Invariant: this package imports only the standard library and its own modules (relative
imports), never the rest of ``dovecote``: it must measure any broker, and it can run as a
top-level package (``PYTHONPATH=src/dovecote python -m bench``) without loading the broker.
"""

from __future__ import annotations

from .cli import run


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark command line ``argv`` (default: ``sys.argv[1:]``); return the status."""
    return run(argv)


__all__ = ["main"]
