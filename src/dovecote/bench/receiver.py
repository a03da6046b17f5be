"""The consumer's hot path: split received bytes into frames and count every message.

``Receiver.feed`` takes what one ``recv`` returned and the time it arrived, and per MESSAGE
frame reads only the fixed-width ids at the start of the body (``frames.BODY_HEAD``): no
header dict, no decoded strings. It counts the message in its per-message counter array,
optionally records latency samples, and returns the ACK frames to send back (for
``client`` and ``client-individual`` subscriptions), batched into one bytes object. With
``nack_every`` N (client-individual only), the first delivery of every message whose sequence
is a multiple of N is NACKed instead, and not counted: only its redelivery counts.

Invariants: ``unique`` equals the number of non-zero counters; a MESSAGE whose body does not
carry an id of this run is counted in ``foreign`` and nowhere else; an ERROR frame raises
``BrokerError`` at once.
"""

from __future__ import annotations

from array import array

from .accounting import check_id_space, new_counts
from .frames import (
    BODY_HEAD_SIZE,
    BrokerError,
    ack_frame,
    command_of,
    describe_error,
    header_value,
    nack_frame,
    split_frames,
)

ACK_MODES = ("auto", "client", "client-individual")


class Receiver:
    """Counts the messages one subscription receives; see the module docstring."""

    __slots__ = (
        "ack_mode",
        "buf",
        "counts",
        "first_ns",
        "foreign",
        "last_ns",
        "latency_ns",
        "messages",
        "nack_every",
        "nacked",
        "per_producer",
        "producers",
        "receipts",
        "schedule_latency_ns",
        "timed_from_seq",
        "unique",
    )

    def __init__(
        self,
        producers: int,
        per_producer: int,
        ack_mode: str = "auto",
        timed_from_seq: int = -1,
        nack_every: int = 0,
    ) -> None:
        """``timed_from_seq`` >= 0 records latencies of messages with that sequence or later."""
        check_id_space(producers, per_producer)
        if ack_mode not in ACK_MODES:
            raise ValueError(f"ack mode must be one of {ACK_MODES}, not {ack_mode!r}")
        if nack_every and ack_mode != "client-individual":
            raise ValueError("nack_every needs ack mode client-individual")
        self.nack_every = nack_every
        self.nacked: set[int] = set()  # messages NACKed once (their redelivery counts)
        self.producers = producers
        self.per_producer = per_producer
        self.ack_mode = ack_mode
        self.timed_from_seq = timed_from_seq
        self.buf = bytearray()
        self.counts = new_counts(producers * per_producer)
        self.messages = 0  # MESSAGE frames, ours or not
        self.unique = 0
        self.foreign = 0
        self.first_ns = 0  # arrival of the first and the latest MESSAGE
        self.last_ns = 0
        self.receipts: list[bytes] = []
        self.latency_ns = array("q")  # arrival - sent stamp
        self.schedule_latency_ns = array("q")  # arrival - due stamp (coordinated omission)

    def feed(self, data: bytes, now_ns: int) -> bytes:
        """Absorb one read; return the ACK frames to send (empty for ``ack:auto``)."""
        buf = self.buf
        buf += data
        spans, pos = split_frames(buf)
        if not spans:
            return b""
        counts = self.counts
        per = self.per_producer
        producers = self.producers
        timed_from = self.timed_from_seq
        individual = self.ack_mode == "client-individual"
        cumulative = self.ack_mode == "client"
        acks: list[bytes] = []
        last_ack: bytes | None = None
        unique = self.unique
        messages = 0
        foreign = 0
        for span in spans:
            start, body, end = span
            if not buf.startswith(b"MESSAGE", start):
                self._other_frame(span)
                continue
            messages += 1
            try:
                producer = int(buf[body : body + 4])
                seq = int(buf[body + 5 : body + 15])
            except ValueError:
                foreign += 1
                continue
            if not (0 <= seq < per and 0 <= producer < producers and end - body >= 15):
                foreign += 1
                continue
            index = producer * per + seq
            nack_every = self.nack_every
            if nack_every and seq % nack_every == 0 and index not in self.nacked:
                self.nacked.add(index)
                ack = header_value(buf, span, b"ack")
                if ack is None:
                    raise BrokerError("a MESSAGE on a client-ack subscription has no ack header")
                acks.append(nack_frame(ack))
                continue
            seen = counts[index]
            counts[index] = seen + 1
            if not seen:
                unique += 1
            if timed_from >= 0 and seq >= timed_from and end - body >= BODY_HEAD_SIZE:
                self.latency_ns.append(now_ns - int(buf[body + 36 : body + 55]))
                self.schedule_latency_ns.append(now_ns - int(buf[body + 16 : body + 35]))
            if individual or cumulative:
                ack = header_value(buf, span, b"ack")
                if ack is None:
                    raise BrokerError("a MESSAGE on a client-ack subscription has no ack header")
                if individual:
                    acks.append(ack_frame(ack))
                else:
                    last_ack = ack
        del buf[:pos]
        if messages:
            if not self.messages:
                self.first_ns = now_ns
            self.last_ns = now_ns
            self.messages += messages
            self.unique = unique
            self.foreign += foreign
        if last_ack is not None:
            return ack_frame(last_ack)
        return b"".join(acks)

    def _other_frame(self, span: tuple[int, int, int]) -> None:
        command = command_of(self.buf, span)
        if command == b"RECEIPT":
            self.receipts.append(header_value(self.buf, span, b"receipt-id") or b"")
        elif command == b"ERROR":
            raise BrokerError(f"ERROR frame from broker: {describe_error(self.buf, span)}")
        else:
            raise BrokerError(f"unexpected {command.decode(errors='replace')} frame")
