"""A test double's mixin: the first ack of a scheduled record fails (an I/O error the
scheduler does not expect). Mix it in before the store it wraps:
``class FailingAckStore(FailFirstScheduledAck, MemoryStore)``."""

from __future__ import annotations

from dovecote.core.scheduler import SCHEDULE_QUEUE


class FailFirstScheduledAck:
    failures = 1  # scheduled acks still to fail (each instance counts its own)

    def record_ack(self, queue: str, seq: int) -> None:
        if queue == SCHEDULE_QUEUE and self.failures:
            self.failures -= 1
            raise RuntimeError("boom")
        super().record_ack(queue, seq)  # type: ignore[misc]
