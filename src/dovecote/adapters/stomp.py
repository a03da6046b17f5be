"""STOMP sessions: one per connection, translating frames to core calls and deliveries back.

SEND headers the broker acts on (``destination``, ``persistent``, ``priority``, ``expires``,
``reply-to``, ``transaction``, ``receipt``, ``AMQ_SCHEDULED_*``, ``_AMQ_DUPL_ID``) are listed
in :mod:`dovecote.adapters.stomp_send`; every other header passes through unchanged. A SEND
``destination`` may be composite (comma-separated; see stomp_mapping). An accepted SEND makes
the connection a producer of its destination(s) until it closes (``stomp_send.Producing``).

SUBSCRIBE headers (``ack``, ``activemq.prefetchSize``, ``selector``, ``activemq.exclusive``,
``activemq.priority``, ``browser``, ``activemq.subscriptionName``) are read by
:mod:`dovecote.adapters.stomp_subscribe`. A browser subscription gets the queue's current
messages (no ``ack`` header: nothing is consumed) and then a MESSAGE with ``browser:end``,
empty ``destination`` and ``message-id``, and an empty body (ActiveMQ 5.6's form). SEND's
``JMSXGroupID``/``JMSXGroupSeq`` pass through and drive message groups in the core. A
SUBSCRIBE ``destination`` may be composite too: one consumer per destination under one id
(with ``ack:client``, an ACK settles the other parts' earlier deliveries as well:
``stomp_composite.DeliveryOrder``). MESSAGE frames carry ``message-id``,
``destination``, ``subscription``, ``ack`` (1.2, unless auto), ``redelivered``,
``persistent``, ``priority``, ``expires``, ``timestamp`` and the sender's headers; a redelivery
also carries ``JMSXDeliveryCount``, the first message of a group its consumer gets since the
group became its own ``JMSXGroupFirstForConsumer:true``, a dead letter ``original-destination``,
``dlqDeliveryFailureCause`` and ``JMSXDeliveryCount`` (docs/stomp.md). A SEND to a full
``reject-new`` queue gets an ERROR (with the ``receipt-id`` if it asked for a receipt).

Any error is answered with an ERROR frame whose ``message`` header says what went wrong
(never Python's exception text), and the connection is closed, as STOMP 1.2 "ERROR" requires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from dovecote.adapters.stomp_composite import CompositeSubscriptions
from dovecote.adapters.stomp_encoding import MessageEncoder as MessageEncoder  # re-exported
from dovecote.adapters.stomp_encoding import QueueBrowser, Subscription
from dovecote.adapters.stomp_link import Link, LinkedSession
from dovecote.adapters.stomp_mapping import (
    TEMP_PREFIX,
    CoreDestination,
    destination_to_core,
    destinations_to_core,
    reply_to_from_client,
)
from dovecote.adapters.stomp_send import NOT_PASSED_THROUGH, Producing, expires_of, priority_of
from dovecote.adapters.stomp_subscribe import SubscribeOptions, subscribe_options
from dovecote.core import advisory
from dovecote.core.errors import CoreError, ErrorCode, InvalidRequest, NotFound
from dovecote.core.message import (
    NO_PROPERTIES,
    Message,
    QueueEntry,
    RoutingType,
    destination_uri,
)
from dovecote.core.queue import Consumer, consumer_queue
from dovecote.core.router import Router
from dovecote.core.schedule_management import is_management_destination
from dovecote.core.tx import MAX_TRANSACTION_OPERATIONS, Transaction
from dovecote.protocols._errors import ProtocolError
from dovecote.protocols.stomp import (
    NEED_DATA,
    Command,
    Frame,
    FrameLimits,
    State,
    UnsupportedVersion,
)
from dovecote.protocols.stomp.connection import (
    SUPPORTED_VERSIONS,
    negotiate_version,
    parse_heart_beat,
)
from dovecote.protocols.stomp.frames import encode_frame

log = logging.getLogger(__name__)

SERVER_NAME = "dovecote/0.1.0"
MIN_HEART_BEAT_MS = 100  # we never promise to send, or ask to receive, more often than this
_CACHE_LIMIT = 4096  # entries in the per-destination caches (cleared, not grown, past it)

# One table from core error codes to the ERROR frame's summary, used by ``_fail``.
_CORE_ERROR_SUMMARY = {
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.INVALID: "Invalid request",
    ErrorCode.CONFLICT: "Conflict",
    ErrorCode.RESOURCE_LIMIT: "Resource limit exceeded",
    ErrorCode.UNAVAILABLE: "Service unavailable",
}


class StompSession(CompositeSubscriptions, LinkedSession):
    """The STOMP side of one connection: the frame handlers (receipts, heart-beats and
    throttling are in :class:`~dovecote.adapters.stomp_link.LinkedSession`, composite
    subscriptions in :class:`~dovecote.adapters.stomp_composite.CompositeSubscriptions`)."""

    __slots__ = (
        "_browsing",
        "_by_number",
        "_client_id",
        "_composites",
        "_connected",
        "_destinations",
        "_encoder",
        "_max_subscriptions",
        "_max_transactions",
        "_next_number",
        "_producing",
        "_subscriptions",
        "_transactions",
    )

    def __init__(
        self,
        link: Link,
        router: Router,
        encoder: MessageEncoder,
        *,
        limits: FrameLimits | None = None,
        max_subscriptions: int = 1000,
        max_transactions: int = 100,
    ) -> None:
        super().__init__(link, router, limits)
        self._encoder = encoder
        # By id; a composite subscription's parts by "<id>\0<k>" (a NUL: no client's id).
        self._subscriptions: dict[str, Subscription] = {}
        self._composites: dict[str, int] = {}  # composite subscription id -> its parts
        self._by_number: dict[int, Subscription] = {}
        self._next_number = 1
        self._transactions: dict[str, Transaction] = {}
        self._destinations: dict[str, CoreDestination] = {}
        self._max_subscriptions = max_subscriptions
        self._max_transactions = max_transactions
        self._client_id: str | None = None
        self._browsing: dict[str, QueueBrowser] = {}  # browser subscriptions still sending
        self._connected = False
        self._producing = Producing(router.producers, link.connection_id)

    # --- transport callbacks ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        stomp = self._stomp
        frame: Frame | None = None
        try:
            stomp.receive_data(data)
            while not self._closed:
                frame = None  # an error in decoding belongs to no frame already handled
                event = stomp.next_event()
                if event is NEED_DATA:
                    return
                assert isinstance(event, Frame)
                frame = event
                _HANDLERS[frame.command](self, frame)
        except (ProtocolError, CoreError) as exc:
            self._fail(exc, frame)

    def connection_lost(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True
        for tx in self._transactions.values():
            tx.abort()
        self._transactions.clear()
        for sub in self._subscriptions.values():
            if sub.consumer is not None:
                self._router.unsubscribe(sub.consumer)
        self._subscriptions.clear()
        self._composites.clear()
        self._by_number.clear()
        self._browsing.clear()
        self._producing.close()
        self._router.delete_owned(self._link.connection_id)
        if self._client_id is not None:
            self._router.release_client_id(self._client_id, self)
        if self._connected:
            self._router.advise(advisory.CONNECTION, self._advisory_fields("close"))

    def _advisory_fields(self, event: str) -> dict[str, str]:
        return {
            "event": event,
            "connectionId": self._link.connection_id,
            "clientId": self._client_id or "",
        }

    def pause_writing(self) -> None:
        self._paused = True
        for sub in self._subscriptions.values():
            if sub.consumer is not None:
                sub.consumer.paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for browser in list(self._browsing.values()):
            self._pump(browser)
        for sub in list(self._subscriptions.values()):
            consumer = sub.consumer
            if sub.started and consumer is not None and consumer.queue is not None:
                consumer.queue.resume(consumer)

    # --- core callback ------------------------------------------------------------------------

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        sub = consumer.key
        assert isinstance(sub, Subscription)
        version = self._stomp.version
        head = sub.prefix
        if not consumer.auto_ack and version == "1.2":
            head += b"ack:%d-%d\n" % (sub.number, entry.seq)
        if entry.delivery_count > 1:
            head += b"redelivered:true\nJMSXDeliveryCount:%d\n" % entry.delivery_count
        if entry.group_first:
            head += b"JMSXGroupFirstForConsumer:true\n"
        if sub.order is not None:
            sub.order.delivered(sub.number, entry.seq)
        message = entry.message
        if message.address.startswith(TEMP_PREFIX):
            # Temp destinations read differently for their creator: no shared encoding.
            tail = self._encoder.tail(message, version, self._link.connection_id, cache=False)
        else:
            tail = self._encoder.tail(message, version)
        self._link.write(head + tail)

    # --- frame handlers -----------------------------------------------------------------------

    def _on_connect(self, frame: Frame) -> None:
        headers = frame.headers
        version = negotiate_version(headers.get("accept-version"))
        client_id = headers.get("client-id") or None
        if client_id is not None:
            self._router.claim_client_id(client_id, self)
            self._client_id = client_id
        cx, cy = parse_heart_beat(headers.get("heart-beat"))
        # We send as often as the client wants and want what it offers, within a floor.
        ours = (max(cy, MIN_HEART_BEAT_MS) if cy else 0, max(cx, MIN_HEART_BEAT_MS) if cx else 0)
        reply = {"server": SERVER_NAME, "session": self._link.connection_id}
        if version != "1.0":
            reply = {"version": version, "heart-beat": f"{ours[0]},{ours[1]}", **reply}
        self._link.write(self._stomp.send(Frame(Command.CONNECTED, reply)))
        self._start_heart_beats()
        self._connected = True
        self._router.advise(advisory.CONNECTION, self._advisory_fields("open"))

    def _on_send(self, frame: Frame) -> None:
        headers = frame.headers
        router = self._router
        text = headers["destination"]
        destinations = (
            destinations_to_core(text, self._link.connection_id)
            if "," in text
            else [self._core_destination(text)]
        )
        passed = {k: v for k, v in headers.items() if k not in NOT_PASSED_THROUGH}
        reply_to = passed.get("reply-to")
        if reply_to is not None:
            passed["reply-to"] = reply_to_from_client(reply_to, self._link.connection_id)
        properties = passed or NO_PROPERTIES
        persistent = headers.get("persistent", "false").lower() == "true"
        message_id = router.new_message_id()
        priority, expires = priority_of(headers.get("priority")), expires_of(headers.get("expires"))
        messages = []
        management = False
        for destination in destinations:
            if destination.temporary or destination.remote_temporary:
                self._check_temporary(destination, text)
            message_properties = properties
            if is_management_destination(destination.routing, destination.address):
                management = True
                message_properties = self._management_properties(properties, headers)
            messages.append(
                Message(
                    message_id,
                    destination.address,
                    destination.routing,
                    frame.body,
                    message_properties,
                    persistent,
                    priority,
                    expires,
                    router.now_ms(),
                )
            )
        tx_id = headers.get("transaction")
        if tx_id is not None:
            for message in messages:
                router.check_routable(message)
            tx = self._transaction(tx_id)
            for message in messages:
                tx.add_send(message)
        elif len(messages) == 1:
            router.send(messages[0])
        else:
            router.send_all(messages)  # a composite destination: all or none
        if text not in self._producing.seen:  # (all a repeated SEND costs: see Producing)
            self._producing.add(text, destinations, self._advisory_fields("add"))
        if tx_id is not None:
            self._receipt(frame)
            return
        if persistent or management:  # (a REMOVE is acked in the journal: durable first)
            self._receipt_when_durable(frame)
        else:
            self._receipt(frame)
        if router.budget.is_exhausted() and not self._subscriptions and not self._throttled:
            self._throttle()

    def _management_properties(
        self, properties: Mapping[str, str], headers: Mapping[str, str]
    ) -> Mapping[str, str]:
        """A scheduler management SEND's properties, its ``reply-to`` header in the core's
        form (``queue://<address>``, ``topic://<address>``; see core.schedule_management)."""
        reply_to = headers.get("reply-to")
        if reply_to is None:
            return properties
        connection_id = self._link.connection_id
        destination = destination_to_core(reply_to, connection_id)
        if destination.temporary or destination.remote_temporary:
            self._check_temporary(destination, reply_to)
        return {**properties, "reply-to": destination_uri(destination.routing, destination.address)}

    def _check_temporary(self, destination: CoreDestination, text: str) -> None:
        """A temp queue is created by its owner's first use; another's must still exist
        (called for temporary destinations only)."""
        router = self._router
        if destination.routing is RoutingType.ANYCAST and router.queue(destination.address) is None:
            if destination.remote_temporary:
                # ActiveMQ: "Cannot publish to a deleted Destination".
                raise NotFound(f"temporary destination {text[:200]!r} is gone")
            if destination.temporary:
                owner = self._link.connection_id
                router.get_or_create_queue(destination.address, temporary_owner=owner)

    def _on_subscribe(self, frame: Frame) -> None:
        headers = frame.headers
        destination_text = headers["destination"]
        sub_id = headers.get("id", destination_text)  # STOMP 1.0 allows no id
        if sub_id in self._subscriptions or sub_id in self._composites:
            raise InvalidRequest(f"subscription id {sub_id!r} is already in use on this connection")
        options = subscribe_options(headers)
        if "," in destination_text:
            self._subscribe_composite(frame, sub_id, destination_text, options)
            return
        if len(self._subscriptions) >= self._max_subscriptions:
            raise InvalidRequest(f"more than {self._max_subscriptions} subscriptions")
        destination = self._core_destination(destination_text)
        sub = Subscription(sub_id, self._next_number, destination_text, self._stomp.version)
        if options.browser:
            self._subscribe_browser(frame, sub, destination, options)
            return
        if options.durable and destination.routing is RoutingType.MULTICAST:
            if not self._client_id:
                raise InvalidRequest("a durable subscription needs a client-id on CONNECT")
            sub.durable_name = f"{self._client_id}.{options.durable}"
        self._attach(sub_id, sub, destination, options)
        self._receipt(frame, then=lambda: self._start(sub))

    def _attach(
        self, key: str, sub: Subscription, destination: CoreDestination, options: SubscribeOptions
    ) -> None:
        """Register ``sub`` under ``key`` and attach its consumer (paused until started)."""
        consumer = Consumer(
            sub,
            self,
            ack_mode=options.ack_mode,
            prefetch=options.prefetch,
            selector=options.selector,
            priority=options.priority,
            exclusive=options.exclusive,
        )
        # Attached paused: the RECEIPT goes out before the first MESSAGE (as ActiveMQ does).
        consumer.paused = True
        sub.consumer = consumer
        # Registered before it is attached: attaching dispatches at once, and a full outbound
        # buffer must be able to pause this consumer in the middle of that.
        self._next_number += 1
        self._subscriptions[key] = sub
        self._by_number[sub.number] = sub
        info = self._advisory_fields("add")  # (the router sets the event)
        info["consumerId"] = f"{sub.id}@{self._link.connection_id}"
        try:
            if destination.routing is RoutingType.ANYCAST:
                owner = self._link.connection_id if destination.temporary else None
                self._router.consume_queue(destination.address, consumer, owner=owner, info=info)
            else:
                self._router.subscribe_topic(
                    destination.address, consumer, durable_name=sub.durable_name, info=info
                )
        except CoreError:
            del self._subscriptions[key]
            del self._by_number[sub.number]
            raise

    def _detach(self, key: str) -> Subscription | None:
        sub = self._subscriptions.pop(key, None)
        if sub is not None:
            del self._by_number[sub.number]
            if sub.consumer is not None:
                self._router.unsubscribe(sub.consumer)
        return sub

    def _start(self, sub: Subscription) -> None:
        sub.started = True
        consumer = sub.consumer
        if not self._paused and consumer is not None and consumer.queue is not None:
            consumer.queue.resume(consumer)

    def _subscribe_browser(
        self,
        frame: Frame,
        sub: Subscription,
        destination: CoreDestination,
        options: SubscribeOptions,
    ) -> None:
        if destination.routing is not RoutingType.ANYCAST:
            raise InvalidRequest("browser:true needs a queue destination")
        browser = QueueBrowser(
            sub, self._router.queue(destination.address), options.selector, self._encoder
        )
        self._next_number += 1
        self._subscriptions[sub.id] = sub
        self._by_number[sub.number] = sub

        def start() -> None:
            self._browsing[sub.id] = browser
            self._pump(browser)

        self._receipt(frame, then=start)

    def _pump(self, browser: QueueBrowser) -> None:
        """Send a browser's next pages while the connection can take them."""
        sub = browser.subscription
        try:
            while not self._closed and not self._paused:
                if self._subscriptions.get(sub.id) is not sub:
                    break  # unsubscribed meanwhile
                data, done = browser.next_page(self._stomp.version, self._link.connection_id)
                self._link.write(data)
                if done:
                    break
            else:
                return  # paused: resume_writing pumps again
        except CoreError as exc:
            self._browsing.pop(sub.id, None)
            self._fail(exc, None)
            return
        self._browsing.pop(sub.id, None)

    def _on_unsubscribe(self, frame: Frame) -> None:
        headers = frame.headers
        sub_id = headers.get("id") or headers.get("destination", "")
        if not self._unsubscribe_composite(sub_id) and self._detach(sub_id) is None:
            raise NotFound(f"no subscription {sub_id[:100]!r} on this connection")
        self._browsing.pop(sub_id, None)
        durable = headers.get("activemq.subscriptionName") or headers.get(
            "durable-subscription-name"
        )
        if durable and self._client_id:
            # ActiveMQ: UNSUBSCRIBE naming the subscription removes the durable subscription.
            self._router.delete_durable_subscription(f"{self._client_id}.{durable}")
        self._receipt(frame)

    def _on_ack(self, frame: Frame) -> None:
        self._settle(frame, ack=True)

    def _on_nack(self, frame: Frame) -> None:
        self._settle(frame, ack=False)

    def _settle(self, frame: Frame, *, ack: bool) -> None:
        consumer, seq = self._find_delivery(frame.headers)
        settle = self._settled_with(consumer, seq)
        tx_id = frame.headers.get("transaction")
        for consumer, seq in settle:
            if tx_id is not None:
                self._transaction(tx_id).add_ack(consumer, seq, ack=ack)
            elif ack:
                consumer_queue(consumer).ack(consumer, seq)
            else:
                consumer_queue(consumer).nack(consumer, seq)
        self._receipt(frame)

    def _on_begin(self, frame: Frame) -> None:
        tx_id = frame.headers["transaction"]
        if tx_id in self._transactions:
            raise InvalidRequest(f"transaction {tx_id[:100]!r} is already open")
        if len(self._transactions) >= self._max_transactions:
            raise InvalidRequest(f"more than {self._max_transactions} open transactions")
        self._transactions[tx_id] = Transaction(tx_id)
        self._receipt(frame)

    def _on_commit(self, frame: Frame) -> None:
        tx = self._transactions.pop(frame.headers["transaction"], None)
        if tx is None:
            raise NotFound(f"no open transaction {frame.headers['transaction'][:100]!r}")
        tx.commit(self._router)
        self._receipt_when_durable(frame)

    def _on_abort(self, frame: Frame) -> None:
        tx = self._transactions.pop(frame.headers["transaction"], None)
        if tx is None:
            raise NotFound(f"no open transaction {frame.headers['transaction'][:100]!r}")
        tx.abort()
        self._receipt(frame)

    def _on_disconnect(self, frame: Frame) -> None:
        # Whatever was sent before DISCONNECT is confirmed before its receipt goes out.
        receipt = frame.headers.get("receipt")
        if receipt is None:
            self._close("client disconnected")
            return

        def confirm() -> None:
            if not self._closed:
                self._link.write(self._stomp.send(Frame(Command.RECEIPT, {"receipt-id": receipt})))
                self._close("client disconnected")

        self._router.call_when_durable(confirm)

    # --- helpers ------------------------------------------------------------------------------

    def _find_delivery(self, headers: Mapping[str, str]) -> tuple[Consumer, int]:
        """The (consumer, seq) an ACK or NACK names: ``id`` (1.2) or ``message-id`` (1.0/1.1)."""
        ack_id = headers.get("id")
        if ack_id is not None and self._stomp.version == "1.2":
            number, dash, seq_text = ack_id.partition("-")
            sub = self._by_number.get(int(number)) if number.isdigit() else None
            if sub is not None and dash and seq_text.isdigit() and sub.consumer is not None:
                seq = int(seq_text)
                if seq in sub.consumer.in_flight:
                    return sub.consumer, seq
            raise NotFound(f"ACK/NACK of unknown id {ack_id[:100]!r}")
        message_id = headers.get("message-id") or ack_id or ""
        sub_id = headers.get("subscription")
        if sub_id is None:
            candidates = list(self._subscriptions.values())
        elif sub_id in self._composites:
            candidates = self._composite_parts(sub_id)
        else:
            candidates = [self._subscriptions[sub_id]] if sub_id in self._subscriptions else []
        for sub in candidates:
            if sub.consumer is not None:
                found = sub.consumer.find_in_flight(message_id)
                if found is not None:
                    return sub.consumer, found
        raise NotFound(f"ACK/NACK of unknown message-id {message_id[:100]!r}")

    def _core_destination(self, destination: str) -> CoreDestination:
        core = self._destinations.get(destination)
        if core is None:
            core = destination_to_core(destination, self._link.connection_id)
            if len(self._destinations) >= _CACHE_LIMIT:
                self._destinations.clear()
            self._destinations[destination] = core
        return core

    def _transaction(self, tx_id: str) -> Transaction:
        tx = self._transactions.get(tx_id)
        if tx is None:
            raise NotFound(f"no open transaction {tx_id[:100]!r}")
        if tx.size >= MAX_TRANSACTION_OPERATIONS:
            raise InvalidRequest(
                f"transaction {tx_id[:100]!r} exceeds {MAX_TRANSACTION_OPERATIONS} operations"
            )
        return tx

    def _fail(self, exc: ProtocolError | CoreError, frame: Frame | None) -> None:
        """Answer with an ERROR frame naming what went wrong, then close the connection."""
        summary = _CORE_ERROR_SUMMARY[exc.code] if isinstance(exc, CoreError) else "Protocol error"
        detail = exc.message
        headers = {"message": f"{summary}: {detail}", "content-type": "text/plain"}
        if isinstance(exc, UnsupportedVersion):
            headers["version"] = ",".join(SUPPORTED_VERSIONS)
        if frame is not None and "receipt" in frame.headers:
            headers["receipt-id"] = frame.headers["receipt"]
        if self._stomp.state is not State.ERROR:
            self._link.write(self._stomp.send(Frame(Command.ERROR, headers, detail.encode())))
        else:
            # The decoder already failed and the state machine is in ERROR: encode directly.
            error = Frame(Command.ERROR, headers, detail.encode())
            self._link.write(encode_frame(error, self._stomp.version))
        log.info("closing %s: %s", self._link.connection_id, headers["message"])
        self._close(headers["message"])


# Frame handlers by command: one table for every session (not bound methods per session).
_HANDLERS: dict[Command, Callable[[StompSession, Frame], None]] = {
    Command.CONNECT: StompSession._on_connect,
    Command.STOMP: StompSession._on_connect,
    Command.SEND: StompSession._on_send,
    Command.SUBSCRIBE: StompSession._on_subscribe,
    Command.UNSUBSCRIBE: StompSession._on_unsubscribe,
    Command.ACK: StompSession._on_ack,
    Command.NACK: StompSession._on_nack,
    Command.BEGIN: StompSession._on_begin,
    Command.COMMIT: StompSession._on_commit,
    Command.ABORT: StompSession._on_abort,
    Command.DISCONNECT: StompSession._on_disconnect,
}
