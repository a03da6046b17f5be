"""The shared part of STOMP MESSAGE frames, encoded once per message (not per subscriber).

Extracted from :mod:`dovecote.adapters.stomp` (the session) so that each stays short.
"""

from __future__ import annotations

from dovecote.adapters.stomp_mapping import destination_from_core
from dovecote.core.message import Message, RoutingType
from dovecote.protocols.stomp.frames import escape

_CACHE_LIMIT = 4096  # entries in the per-destination cache (cleared, not grown, past it)


class MessageEncoder:
    """Encodes the part of a MESSAGE frame shared by every subscriber of one message.

    It remembers the last message it encoded, so a topic fan-out encodes headers and body
    once, not once per subscription. One encoder serves every session of a broker.
    """

    __slots__ = ("_destinations", "_last", "_last_tail", "_last_version")

    def __init__(self) -> None:
        self._last: Message | None = None
        self._last_version = ""
        self._last_tail = b""
        self._destinations: dict[tuple[str, bool, str, str], str] = {}

    def _destination_line(self, message: Message, version: str, connection_id: str) -> str:
        # (Enums hash in Python code; a bool keeps this lookup in C.)
        key = (message.address, message.routing is RoutingType.ANYCAST, version, connection_id)
        line = self._destinations.get(key)
        if line is None:
            if len(self._destinations) >= _CACHE_LIMIT:
                self._destinations.clear()
            destination = destination_from_core(message.routing, message.address, connection_id)
            line = self._destinations[key] = f"destination:{escape(destination, version)}\n"
        return line

    def tail(
        self, message: Message, version: str, connection_id: str = "", *, cache: bool = True
    ) -> bytes:
        if cache and message is self._last and version == self._last_version:
            return self._last_tail
        lines = [
            f"message-id:{escape(message.message_id, version)}\n"
            f"{self._destination_line(message, version, connection_id)}"
            f"expires:{message.expires}\npriority:{message.priority}\n"
            f"timestamp:{message.timestamp}\n"
        ]
        if message.persistent:
            lines.append("persistent:true\n")
        for name, value in message.properties.items():
            lines.append(f"{escape(name, version)}:{escape(value, version)}\n")
        lines.append(f"content-length:{len(message.body)}\n\n")
        tail = b"".join(("".join(lines).encode(), message.body, b"\0"))
        if cache:
            self._last, self._last_version, self._last_tail = message, version, tail
        return tail
