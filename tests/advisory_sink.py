"""A consumer sink for advisory messages, shared by the producer-advisory tests (core and
STOMP adapter): what arrived, and each advisory as (topic, event, producerCount)."""

from __future__ import annotations

import json

from dovecote.core.message import Message, QueueEntry
from dovecote.core.queue import Consumer


class AdvisorySink:
    """``strip``: a prefix taken off each topic in :meth:`events` (for shorter assertions)."""

    def __init__(self, strip: str = "") -> None:
        self.strip = strip
        self.got: list[Message] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.got.append(entry.message)

    def events(self) -> list[tuple[str, str, int]]:
        """(topic, event, producerCount) of each advisory received, in order."""
        found = []
        for message in self.got:
            body = json.loads(message.body)
            topic = message.address.removeprefix(self.strip)
            found.append((topic, body["event"], body["producerCount"]))
        return found
