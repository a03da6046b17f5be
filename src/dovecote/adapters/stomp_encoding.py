"""How MESSAGE frames are built: per-subscription prefixes, the shared per-message tail, and
queue browsers (``browser:true``) that page through a queue without consuming it.

A browser reads ``BROWSE_PAGE`` messages at a time with :meth:`Queue.browse_page` (paged-out
bodies read back), so a large queue is never copied whole into memory; the session sends one
page per call while its connection is writable. The end is ActiveMQ's: a MESSAGE with
``browser:end``, empty ``destination`` and ``message-id`` headers and an empty body.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from dovecote.adapters.stomp_mapping import destination_from_core, properties_from_core
from dovecote.core.message import Message, RoutingType
from dovecote.core.policy import ORIGINAL_DESTINATION
from dovecote.core.queue import Consumer, Queue
from dovecote.core.selector import Selector
from dovecote.protocols.stomp import speedups
from dovecote.protocols.stomp.frames import escape

if TYPE_CHECKING:
    from dovecote.adapters.stomp_composite import DeliveryOrder

_CACHE_LIMIT = 4096  # entries in the destination-line cache (cleared, not grown, past it)
TAIL_CACHE_BYTES = 4 * 1024 * 1024  # encoded tails kept for fan-out (at least the last one)
BROWSE_PAGE = 256  # messages a browser reads from its queue at a time
BROWSER_END = b"destination:\nmessage-id:\nbrowser:end\ncontent-length:0\n\n\0"


class Subscription:
    """One SUBSCRIBE: its consumer and the pre-encoded start of its MESSAGE frames."""

    __slots__ = (
        "consumer",
        "destination",
        "durable_name",
        "id",
        "number",
        "order",
        "prefix",
        "started",
    )

    def __init__(self, sub_id: str, number: int, destination: str, version: str) -> None:
        self.id = sub_id
        self.number = number
        self.destination = destination
        self.durable_name: str | None = None
        self.prefix = f"MESSAGE\nsubscription:{escape(sub_id, version)}\n".encode()
        self.consumer: Consumer | None = None
        self.started = False  # its RECEIPT is out: dispatch may begin
        # A part of a composite ack:client subscription: the delivery order of all its parts.
        self.order: DeliveryOrder | None = None


class MessageEncoder:
    """Encodes the part of a MESSAGE frame shared by every subscriber of one message.

    It remembers the last tail, and the tails of topic messages it encoded lately
    (``TAIL_CACHE_BYTES`` of them, oldest forgotten first), so a topic fan-out encodes headers
    and body once, not once per subscription, even when a backed-up subscriber is sent its
    backlog in one go after the others (the last tail alone was then of no use). A queue's
    message goes to one consumer: caching it would only cost. An entry keeps its message, so
    that an id is never taken for a later message's. One encoder serves every session of a
    broker. The tail is built by the C accelerator when it is built
    (:mod:`dovecote.protocols.stomp.speedups`), byte for byte as the Python code here builds it.
    """

    __slots__ = (
        "_cached_bytes",
        "_destinations",
        "_encode",
        "_last",
        "_last_tail",
        "_last_version",
        "_tails",
    )

    def __init__(self) -> None:
        self._encode = speedups.encode_tail
        self._last: Message | None = None
        self._last_version = ""
        self._last_tail = b""
        # id(message) -> (message, version, tail), oldest first
        self._tails: OrderedDict[int, tuple[Message, str, bytes]] = OrderedDict()
        self._cached_bytes = 0
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
        if cache:
            if message is self._last and version == self._last_version:
                return self._last_tail
            if message.routing is RoutingType.MULTICAST:
                hit = self._tails.get(id(message))
                if hit is not None and hit[0] is message and hit[1] == version:
                    return hit[2]
        properties = message.properties
        encode = self._encode
        if (
            encode is not None
            and type(properties) is dict
            and ORIGINAL_DESTINATION not in properties
        ):
            tail = encode(
                message.message_id,
                self._destination_line(message, version, connection_id),
                message.expires,
                message.priority,
                message.timestamp,
                message.persistent,
                properties,
                message.body,
                speedups.ESCAPE_MODES[version],
            )
        else:
            tail = self._encode_tail(message, version, connection_id)
        if cache:
            self._last, self._last_version, self._last_tail = message, version, tail
            if message.routing is RoutingType.MULTICAST:
                self._remember(message, version, tail)
        return tail

    def _encode_tail(self, message: Message, version: str, connection_id: str) -> bytes:
        """The tail in Python: the reference (and what runs without the C accelerator)."""
        lines = [
            f"message-id:{escape(message.message_id, version)}\n"
            f"{self._destination_line(message, version, connection_id)}"
            f"expires:{message.expires}\npriority:{message.priority}\n"
            f"timestamp:{message.timestamp}\n"
        ]
        if message.persistent:
            lines.append("persistent:true\n")
        properties = message.properties
        if ORIGINAL_DESTINATION in properties:  # (a dead letter: rare)
            properties = properties_from_core(properties)
        for name, value in properties.items():
            lines.append(f"{escape(name, version)}:{escape(value, version)}\n")
        lines.append(f"content-length:{len(message.body)}\n\n")
        return b"".join(("".join(lines).encode(), message.body, b"\0"))

    def _remember(self, message: Message, version: str, tail: bytes) -> None:
        tails = self._tails
        gone = tails.pop(id(message), None)
        if gone is not None:
            self._cached_bytes -= len(gone[2])
        while tails and self._cached_bytes + len(tail) > TAIL_CACHE_BYTES:
            self._cached_bytes -= len(tails.popitem(last=False)[1][2])
        tails[id(message)] = (message, version, tail)
        self._cached_bytes += len(tail)


class QueueBrowser:
    """One ``browser:true`` subscription: its position in the queue's dispatch order."""

    __slots__ = ("_encoder", "_offset", "_queue", "_selector", "subscription")

    def __init__(
        self,
        subscription: Subscription,
        queue: Queue | None,
        selector: Selector | None,
        encoder: MessageEncoder,
    ) -> None:
        self.subscription = subscription
        self._queue = queue  # None: no such queue yet, so nothing to browse
        self._selector = selector
        self._encoder = encoder
        self._offset = 0

    def next_page(self, version: str, connection_id: str) -> tuple[bytes, bool]:
        """The next page of MESSAGE frames, and True once the end frame is among them.
        Raises StoreUnavailable if a paged-out body cannot be read back."""
        queue = self._queue
        page = [] if queue is None else queue.browse_page(self._offset, BROWSE_PAGE)
        self._offset += len(page)
        prefix = self.subscription.prefix
        selector = self._selector
        frames = [
            prefix + self._encoder.tail(message, version, connection_id, cache=False)
            for message in page
            if selector is None or selector.matches(message)
        ]
        done = len(page) < BROWSE_PAGE
        if done:
            frames.append(prefix + BROWSER_END)
        return b"".join(frames), done
