"""The router: owns every queue and subscription and routes each sent message.

Names (protocol-neutral, ActiveMQ style):
- An anycast address ``orders`` has one queue, also called ``orders``, created on first use.
- A multicast address (topic) has no queue of its own: each subscription is a queue bound
  with a pattern (``prices.*``, ``prices.>``) in a :class:`TopicTrie`. A durable subscription
  is a durable queue named ``<client-id>.<subscription-name>`` that outlives its consumer; a
  non-durable one is a temporary queue deleted when its consumer leaves.
- A temporary queue belongs to an owner (a connection) and is deleted with it.

Sending to a topic nobody subscribes to drops the message, as topics do. Routing a topic
address walks the trie once and caches the answer until subscriptions change.

Policies (:mod:`dovecote.core.policy`): each queue gets the policy of its address when it is
created. The router applies a policy's default TTL and refuses a send to a full
``reject-new`` queue (before anything is routed: a topic send is refused whole); its
:class:`~dovecote.core.router_policy.DeadLetters` moves dead letters to their dead-letter
queue (message added there and removed from its queue in one atomic store group), and its
:class:`~dovecote.core.router_policy.ExpiryReaper` runs on :attr:`Router.timers` every
``expiry_check_ms`` while some queue holds a message that can expire.
A topic subscription's selector belongs to its queue: a message it does not match is not
enqueued. A durable subscription's selector is recorded with it in the store and restored at
start-up. Subscribing again with a different selector (or topic) replaces the durable
subscription, as in JMS. A recorded selector this build cannot compile leaves the restored
subscription's selector unknown: it adopts the selector its consumer next subscribes with and
drops the messages, enqueued meanwhile, that the selector does not match.

Also routed here (issue #4):
- Virtual topics (:mod:`dovecote.core.virtual_topics`): a queue named
  ``Consumer.<name>.VirtualTopic.<rest>`` is also bound to topic ``VirtualTopic.<rest>``.
- Scheduled delivery (:mod:`dovecote.core.scheduler`, its one timer on
  :attr:`Router.timers`) and duplicate detection (:mod:`dovecote.core.dedup`), both keyed
  on message properties. A message to the topic ``ActiveMQ.Scheduler.Management`` is an
  order to the scheduler (:mod:`dovecote.core.schedule_management`), never routed.
- Composite sends (:meth:`Router.send_all`): one message to several addresses, atomically.
- Advisory messages (:mod:`dovecote.core.advisory`) through :meth:`Router.advise`; the
  producers behind the Producer advisories in :attr:`Router.producers`
  (:mod:`dovecote.core.producers`), which protocol adapters tell who sends where.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence

from dovecote.core import advisory
from dovecote.core.dedup import DEFAULT_CACHE_SIZE, DuplicateCache, cache_key, duplicate_id_of
from dovecote.core.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    StoreUnavailable,
)
from dovecote.core.limits import MemoryBudget
from dovecote.core.matching import TopicTrie, is_valid_pattern, is_wildcard
from dovecote.core.message import Message, RoutingType
from dovecote.core.policy import PolicyMap
from dovecote.core.ports import Clock, Store
from dovecote.core.producers import Producers
from dovecote.core.queue import Consumer, Queue
from dovecote.core.router_policy import (
    DeadLetters,
    ExpiryReaper,
    full_queue_error,
    with_default_ttl,
)
from dovecote.core.schedule_management import is_management, manage
from dovecote.core.scheduler import (
    DEFAULT_HOLD_LIMIT,
    SCHEDULE_PROPERTIES,
    Scheduler,
    schedule_of,
)
from dovecote.core.selector import Selector, SelectorError, compile_selector
from dovecote.core.timers import Timers
from dovecote.core.virtual_topics import VIRTUAL_TOPIC_PREFIX as VIRTUAL_TOPIC_PREFIX
from dovecote.core.virtual_topics import virtual_topic_of as virtual_topic_of

DEFAULT_EXPIRY_CHECK_MS = 1000

_TOPIC_CACHE_LIMIT = 10_000
_RESERVED_PREFIX = "$dovecote."  # internal queues; clients may not use these names
# Properties that make a send more than routing: scheduling or duplicate detection.
_SPECIAL_PROPERTIES = SCHEDULE_PROPERTIES | {"_AMQ_DUPL_ID", "dovecote-dedup-id"}


class Router:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        node_id: str = "dovecote",
        budget: MemoryBudget | None = None,
        policies: PolicyMap | None = None,
        expiry_check_ms: int = DEFAULT_EXPIRY_CHECK_MS,
        duplicate_cache_size: int = DEFAULT_CACHE_SIZE,
        schedule_hold_limit: int = DEFAULT_HOLD_LIMIT,
        advisories: bool = True,
    ) -> None:
        self.store = store
        self.clock = clock
        self.budget = budget or MemoryBudget()
        self.policies = policies or PolicyMap()
        self.timers = Timers(clock)
        self.expiry_check_ms = max(1, expiry_check_ms)
        self.reaper = ExpiryReaper(self.timers, self.expiry_check_ms)
        self.dead_letters = DeadLetters(
            store,
            now_ms=clock.now_ms,
            queue=self.get_or_create_queue,
            atomic=self._atomic,
            advise=self.advise,
        )
        self._atomic_depth = 0
        self._queues: dict[str, Queue] = {}  # anycast queues and temporary queues
        self._durable_subscriptions: dict[str, Queue] = {}
        self._subscriptions: TopicTrie[Queue] = TopicTrie()
        self._topic_cache: dict[str, tuple[Queue, ...]] = {}
        self._owned: dict[object, set[str]] = {}
        self._client_ids: dict[str, object] = {}
        self._selector_unknown: set[str] = set()  # restored durable subscriptions
        self._ids = itertools.count(1)
        self._id_prefix = f"ID:{node_id}-"
        self._virtual: TopicTrie[Queue] = TopicTrie()  # virtual topic -> its consumer queues
        self._consumer_info: dict[Consumer, tuple[RoutingType, str, Mapping[str, str]]] = {}
        self.advisories = advisories
        self.producers = Producers(self.advise)  # who sends where (Producer advisories)
        self.dedup = DuplicateCache(store, duplicate_cache_size)
        self.scheduler = Scheduler(
            store,
            timers=self.timers,
            route=self._fire,
            now_ms=clock.now_ms,
            new_id=self.new_message_id,
            budget=self.budget,
            atomic=self._atomic,
            hold_limit=schedule_hold_limit,
        )

    # --- messages -----------------------------------------------------------------------------

    def new_message_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def send(self, message: Message, *, bounded: bool = True) -> int:
        """Route ``message`` to its queue(s); returns how many queues took it.

        Raises StoreUnavailable for a persistent message while the store cannot write, and
        ResourceLimitExceeded when a queue it goes to is full with overflow ``reject-new``
        (unless ``bounded`` is False: a committing transaction or a composite send was checked
        beforehand).
        """
        if message.persistent and not self.store.is_available():
            self.check_routable(message)  # raises StoreUnavailable
        if message.routing is RoutingType.MULTICAST and is_management(message):
            # ActiveMQ.Scheduler.Management: an order to the scheduler, never routed.
            route = self._route_unbounded
            return manage(self.scheduler, message, route=route, new_id=self.new_message_id)
        properties = message.properties
        if properties and not _SPECIAL_PROPERTIES.isdisjoint(properties):
            return self._send_special(message, bounded)
        return self._route(message, bounded)

    def send_all(self, messages: Sequence[Message]) -> int:
        """Send each message (a composite destination): persistent ones all or none."""
        for message in messages:
            self.check_routable(message)
        self.begin_atomic()
        try:
            # Checked above: two copies into one queue (a virtual topic's consumer queue, say)
            # must not be refused half-way, with the first already in (as a commit).
            return sum(self.send(message, bounded=False) for message in messages)
        finally:
            self.end_atomic()

    def _send_special(self, message: Message, bounded: bool) -> int:
        """Send a message that asks for scheduling and/or duplicate detection."""
        schedule = schedule_of(message.properties)  # InvalidRequest for bad values
        duplicate_id = duplicate_id_of(message.properties)
        if duplicate_id is None:
            if schedule is None:
                return self._route(message, bounded)
            if bounded:  # (unbounded: the caller checked it, as a committing transaction does)
                self.check_routable(message)
            self.scheduler.schedule(message, schedule, temporary=self._is_temporary_queue(message))
            return 1
        key = cache_key(message)
        if self.dedup.is_duplicate(key, duplicate_id):
            return 0
        if bounded:
            self.check_routable(message)
        persistent = message.persistent  # (only then is there a group worth writing)
        if persistent:
            self.begin_atomic()
        try:
            if schedule is None:
                count = self._route(message, bounded)
            else:
                self.scheduler.schedule(
                    message, schedule, temporary=self._is_temporary_queue(message)
                )
                count = 1
            self.dedup.remember(key, duplicate_id, persistent=persistent)
        finally:
            if persistent:
                self.end_atomic()
        return count

    def begin_atomic(self) -> None:
        """Store records until the matching :meth:`end_atomic` survive a crash all or none.

        Nests: only the outermost pair makes a store group."""
        if self._atomic_depth == 0:
            self.store.begin_atomic()
        self._atomic_depth += 1

    def end_atomic(self) -> None:
        self._atomic_depth -= 1
        if self._atomic_depth == 0:
            self.store.end_atomic()

    def _atomic(self, begin: bool) -> None:
        if begin:
            self.begin_atomic()
        else:
            self.end_atomic()

    def _fire(self, message: Message, temporary: bool) -> int:
        """Route a scheduled message that is due (accepted when scheduled: never refused).
        One scheduled to a temporary queue that has gone since is dropped: a temporary
        queue's messages go with it (routing would create a plain queue of that name)."""
        if temporary:
            queue = self._queues.get(message.address)
            if queue is None or queue.temporary_owner is None:
                return 0
        return self._route(message, bounded=False)

    def _is_temporary_queue(self, message: Message) -> bool:
        if message.routing is not RoutingType.ANYCAST:
            return False
        queue = self._queues.get(message.address)
        return queue is not None and queue.temporary_owner is not None

    def _route(self, message: Message, bounded: bool = True) -> int:
        """Hand ``message`` to its queue(s) now; returns how many took it."""
        if message.routing is RoutingType.ANYCAST:
            queue = self.get_or_create_queue(message.address)
            if bounded and queue.bounded and queue.is_rejecting():
                raise full_queue_error(queue)
            policy = queue.policy
            if policy is not None and policy.default_ttl_ms and not message.expires:
                message = with_default_ttl(message, policy.default_ttl_ms, self.clock.now_ms())
            queue.add(message)
            return 1
        queues = self._topic_cache.get(message.address)
        if queues is None:
            queues = self._match_topic(message.address)
        if bounded:
            for queue in queues:
                if queue.bounded and queue.is_rejecting() and _would_take(queue, message):
                    raise full_queue_error(queue)
        ttl = self.policies.policy_for(message.address).default_ttl_ms
        if ttl and not message.expires and queues:
            message = with_default_ttl(message, ttl, self.clock.now_ms())
        for queue in queues:
            queue.add(message)
        return len(queues)

    def _route_unbounded(self, message: Message) -> int:
        return self._route(message, bounded=False)

    def check_routable(self, message: Message) -> None:
        """Raise what :meth:`send` would raise for ``message``, without sending it."""
        if message.persistent and not self.store.is_available():
            raise StoreUnavailable(
                "the broker cannot write its journal (disk full or I/O error); "
                "persistent messages are refused until it recovers"
            )
        if not message.address or is_wildcard(message.address):
            raise InvalidRequest(f"cannot send to a wildcard address {message.address!r}")
        if message.address.startswith(_RESERVED_PREFIX):
            raise InvalidRequest(f"address {message.address[:100]!r} is reserved")
        properties = message.properties
        if properties and not SCHEDULE_PROPERTIES.isdisjoint(properties):
            schedule_of(properties)  # raises InvalidRequest for a bad schedule
        if message.routing is RoutingType.ANYCAST:
            queue = self._queues.get(message.address)
            queues: tuple[Queue, ...] = () if queue is None else (queue,)
        else:
            cached = self._topic_cache.get(message.address)
            queues = self._match_topic(message.address) if cached is None else cached
        for queue in queues:
            if queue.bounded and queue.is_rejecting() and _would_take(queue, message):
                raise full_queue_error(queue)

    def relieve_memory(self) -> None:
        """Page out queues (bodies already in the store) while over the paging level."""
        for queue in self.queues():
            if not self.budget.is_paging():
                return
            queue.page_out()

    def call_when_durable(self, callback: Callable[[], None]) -> None:
        self.store.call_when_durable(callback)

    def _match_topic(self, address: str) -> tuple[Queue, ...]:
        if is_wildcard(address):
            raise InvalidRequest(f"cannot send to a wildcard address {address!r}")
        matched = self._subscriptions.match(address)
        if address.startswith(VIRTUAL_TOPIC_PREFIX):
            matched |= self._virtual.match(address)
        queues = tuple(sorted(matched, key=lambda q: q.name))
        if len(self._topic_cache) >= _TOPIC_CACHE_LIMIT:
            self._topic_cache.clear()
        self._topic_cache[address] = queues
        return queues

    # --- advisories ---------------------------------------------------------------------------

    def advise(
        self,
        kind: str,
        fields: Mapping[str, object] | Callable[[], Mapping[str, object]],
        *,
        routing: RoutingType | None = None,
        address: str = "",
    ) -> bool:
        """Publish an advisory (``advisory.CONNECTION``, ``CONSUMER``, ``PRODUCER``, ``EXPIRED``,
        ``DEAD_LETTERED`` ...) about ``address``; True if anyone subscribed to it.

        Costs one cached trie lookup when nobody listens: the message is built only then (and
        ``fields``, if given as a function, called only then).
        """
        if not self.advisories:
            return False
        topic = advisory.advisory_topic(kind, routing, address)
        if topic is None:
            return False
        queues = self._topic_cache.get(topic)
        if queues is None:
            queues = self._match_topic(topic)
        if not queues:
            return False
        if callable(fields):
            fields = fields()
        message = advisory.advisory_message(
            self.new_message_id(), topic, kind, fields, self.clock.now_ms()
        )
        for queue in queues:
            queue.add(message)
        return True

    def _advise_consumer(self, consumer: Consumer, event: str, queue: Queue) -> None:
        found = self._consumer_info.get(consumer)
        if found is None:
            return
        routing, address, info = found
        count = len(queue.consumers)
        fields = {**info, "event": event, "destination": address, "consumerCount": count}
        self.advise(advisory.CONSUMER, fields, routing=routing, address=address)

    # --- clients ------------------------------------------------------------------------------

    def claim_client_id(self, client_id: str, owner: object) -> None:
        """One connection per client id at a time, as in JMS (durable subscriptions hang on it)."""
        holder = self._client_ids.get(client_id)
        if holder is not None and holder is not owner:
            raise Conflict(f"client-id {client_id[:100]!r} is already connected")
        self._client_ids[client_id] = owner

    def release_client_id(self, client_id: str, owner: object) -> None:
        if self._client_ids.get(client_id) is owner:
            del self._client_ids[client_id]

    # --- queues -------------------------------------------------------------------------------

    def queue(self, name: str) -> Queue | None:
        return self._queues.get(name) or self._durable_subscriptions.get(name)

    def queues(self) -> Iterator[Queue]:
        yield from self._queues.values()
        yield from self._durable_subscriptions.values()

    def get_or_create_queue(self, name: str, *, temporary_owner: object | None = None) -> Queue:
        queue = self._queues.get(name)
        if queue is not None:
            return queue
        if not name or is_wildcard(name) or name.startswith(_RESERVED_PREFIX):
            raise InvalidRequest(f"invalid queue name {name[:100]!r}")
        queue = self._new_queue(
            name, address=name, durable=temporary_owner is None, temporary_owner=temporary_owner
        )
        self._queues[name] = queue
        if temporary_owner is not None:
            self._owned.setdefault(temporary_owner, set()).add(name)
        else:
            self.store.record_queue(name, name, None)
            self._bind_virtual(queue)
        return queue

    def _bind_virtual(self, queue: Queue) -> None:
        topic = virtual_topic_of(queue.name)
        if topic is not None:
            self._virtual.add(topic, queue)
            self._topic_cache.clear()

    def delete_queue(self, name: str) -> None:
        queue = self._queues.pop(name, None)
        if queue is None:
            raise NotFound(f"no queue {name!r}")
        if queue.temporary_owner is not None:
            self._owned.get(queue.temporary_owner, set()).discard(name)
        topic = virtual_topic_of(name)
        if topic is not None and self._virtual.remove(topic, queue):
            self._topic_cache.clear()
        self._close_queue(queue)

    def delete_owned(self, owner: object) -> None:
        """Delete the temporary queues ``owner`` created (its connection closed)."""
        for name in self._owned.pop(owner, ()):
            queue = self._queues.get(name)
            if queue is not None and queue.temporary_owner is owner:
                del self._queues[name]
                self._close_queue(queue)

    def _new_queue(
        self,
        name: str,
        *,
        address: str,
        durable: bool,
        filter_: str | None = None,
        selector: Selector | None = None,
        temporary_owner: object | None = None,
    ) -> Queue:
        return Queue(
            name,
            address=address,
            durable=durable,
            store=self.store,
            now_ms=self.clock.now_ms,
            budget=self.budget,
            filter_=filter_,
            selector=selector,
            temporary_owner=temporary_owner,
            policy=self.policies.policy_for(address),
            timers=self.timers,
            dead_letter=self.dead_letters.move,
            on_expiring=self.reaper.watch,
        )

    def _close_queue(self, queue: Queue) -> None:
        for consumer in queue.consumers:
            queue.remove_consumer(consumer)
            self._forget_consumer(consumer, queue)  # (its unsubscribe finds it detached)
        queue.purge()
        if queue.durable:
            self.store.forget_queue(queue.name)

    # --- consumers ----------------------------------------------------------------------------

    def consume_queue(
        self,
        name: str,
        consumer: Consumer,
        *,
        owner: object | None = None,
        info: Mapping[str, str] | None = None,
    ) -> Queue:
        """Attach ``consumer`` to anycast queue ``name`` (created on first use).

        ``info`` (connection and consumer ids) goes into the consumer advisories."""
        queue = self.get_or_create_queue(name, temporary_owner=owner)
        queue.add_consumer(consumer)
        if info is not None:
            self._consumer_info[consumer] = (RoutingType.ANYCAST, name, info)
            self._advise_consumer(consumer, "add", queue)
        return queue

    def subscribe_topic(
        self,
        pattern: str,
        consumer: Consumer,
        *,
        durable_name: str | None = None,
        info: Mapping[str, str] | None = None,
    ) -> Queue:
        """Attach ``consumer`` to a new subscription of ``pattern`` (or its durable one).

        The consumer's selector becomes the subscription's: it decides what is enqueued (the
        consumer itself then filters nothing more).
        """
        queue = self._subscribe_topic(pattern, consumer, durable_name)
        if info is not None:
            self._consumer_info[consumer] = (RoutingType.MULTICAST, pattern, info)
            self._advise_consumer(consumer, "add", queue)
        return queue

    def _subscribe_topic(self, pattern: str, consumer: Consumer, durable_name: str | None) -> Queue:
        if not is_valid_pattern(pattern):
            raise InvalidRequest(f"invalid topic pattern {pattern!r}")
        if durable_name is not None and durable_name.startswith(_RESERVED_PREFIX):
            raise InvalidRequest(f"durable subscription name {durable_name[:100]!r} is reserved")
        selector, consumer.selector = consumer.selector, None
        if durable_name is None:
            queue = self._new_queue(
                f"subscription:{id(consumer):x}",
                address=pattern,
                durable=False,
                filter_=pattern,
                selector=selector,
                temporary_owner=consumer,
            )
            self._bind(queue)
        else:
            queue = self._durable_subscription(durable_name, pattern, selector)
            if queue.consumers:
                consumer.selector = selector
                raise Conflict(f"durable subscription {durable_name!r} already has a consumer")
        queue.add_consumer(consumer)
        return queue

    def _durable_subscription(self, name: str, pattern: str, selector: Selector | None) -> Queue:
        queue = self._durable_subscriptions.get(name)
        if queue is not None and queue.filter == pattern:
            if name in self._selector_unknown:
                self._selector_unknown.discard(name)
                queue.selector = selector
                queue.drop_unselected()
                return queue
            if _selector_text(queue.selector) == _selector_text(selector):
                return queue
        if queue is not None:
            # Same name, new topic or selector: the old subscription is replaced (as in JMS).
            self.delete_durable_subscription(name)
        queue = self._new_queue(
            name, address=pattern, durable=True, filter_=pattern, selector=selector
        )
        self._durable_subscriptions[name] = queue
        if selector is None:
            self.store.record_queue(name, pattern, pattern)
        else:
            self.store.record_queue(name, pattern, pattern, selector.text)
        self._bind(queue)
        return queue

    def restore_durable_subscription(
        self, name: str, pattern: str, selector_text: str | None = None
    ) -> Queue:
        """Recreate a durable subscription found in the store (start-up; not re-recorded)."""
        selector = None
        if selector_text is not None:
            try:
                selector = compile_selector(selector_text)
            except SelectorError:
                self._selector_unknown.add(name)  # see the module docstring
        queue = self._new_queue(
            name, address=pattern, durable=True, filter_=pattern, selector=selector
        )
        self._durable_subscriptions[name] = queue
        self._bind(queue)
        return queue

    def restore_queue(self, name: str) -> Queue:
        """Recreate a durable anycast queue found in the store (start-up; not re-recorded)."""
        queue = self._new_queue(name, address=name, durable=True)
        self._queues[name] = queue
        self._bind_virtual(queue)
        return queue

    def delete_durable_subscription(self, name: str) -> None:
        queue = self._durable_subscriptions.get(name)
        if queue is None:
            raise NotFound(f"no durable subscription {name!r}")
        if queue.consumers:
            raise Conflict(f"durable subscription {name!r} has an active consumer")
        del self._durable_subscriptions[name]
        self._selector_unknown.discard(name)
        self._unbind(queue)
        self._close_queue(queue)

    def unsubscribe(self, consumer: Consumer) -> None:
        """Detach ``consumer``; a non-durable subscription queue goes with it."""
        queue = consumer.queue
        if queue is None:
            return
        queue.remove_consumer(consumer)
        if queue.filter is not None and not queue.durable:
            self._unbind(queue)
            queue.purge()
        self._forget_consumer(consumer, queue)

    def _forget_consumer(self, consumer: Consumer, queue: Queue) -> None:
        """``consumer`` left ``queue``: the consumer advisory, and its advisory info goes."""
        if self._consumer_info:
            self._advise_consumer(consumer, "remove", queue)
            self._consumer_info.pop(consumer, None)

    def _bind(self, queue: Queue) -> None:
        assert queue.filter is not None
        self._subscriptions.add(queue.filter, queue)
        self._topic_cache.clear()

    def _unbind(self, queue: Queue) -> None:
        assert queue.filter is not None
        self._subscriptions.remove(queue.filter, queue)
        self._topic_cache.clear()

    def durable_subscriptions(self) -> Iterator[Queue]:
        yield from self._durable_subscriptions.values()


def _would_take(queue: Queue, message: Message) -> bool:
    """True unless ``queue`` is a topic subscription whose selector leaves ``message`` out (a
    full subscription refuses only what it would enqueue)."""
    selector = queue.selector
    return selector is None or selector.matches(message)


def _selector_text(selector: Selector | None) -> str | None:
    return None if selector is None else selector.text
