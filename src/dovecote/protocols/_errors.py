"""Protocol errors that carry what the peer should be told.

``message`` is written for the peer (it never contains Python exception text);
``code`` is the protocol's own error code where it has one (MQTT reason codes, AMQP
conditions) and a short name otherwise.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: the peer broke the protocol, or we would break it by sending."""

    def __init__(self, message: str, *, code: str = "protocol-error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol does not allow in the current state."""


class FrameTooLarge(RemoteProtocolError):
    """A frame, header block or body exceeded a configured limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="frame-too-large")
