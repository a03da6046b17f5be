"""Dovecote: a message broker that does what Apache ActiveMQ does, embeddable from Python.

``dovecote.Broker`` runs a broker inside the current event loop (what ActiveMQ's ``vm://``
gives Java users); ``dovecote run`` runs one from the shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dovecote.server import Broker

__all__ = ["Broker"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use, so `dovecote.bench` workers and the CLI's client commands do not
    # load the whole broker.
    if name == "Broker":
        from dovecote.server import Broker

        return Broker
    raise AttributeError(f"module 'dovecote' has no attribute {name!r}")
