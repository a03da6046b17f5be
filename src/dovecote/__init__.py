"""Dovecote: a message broker that does what Apache ActiveMQ does, embeddable from Python.

``dovecote.Broker`` runs a broker inside the current event loop (what ActiveMQ's ``vm://``
gives Java users); ``dovecote run`` runs one from the shell.
"""

from dovecote.server import Broker

__all__ = ["Broker"]
__version__ = "0.1.0"
