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

A topic subscription's selector belongs to its queue: a message it does not match is not
enqueued. A durable subscription's selector is recorded with it in the store and restored at
start-up. Subscribing again with a different selector (or topic) replaces the durable
subscription, as in JMS. A recorded selector this build cannot compile leaves the restored
subscription's selector unknown: it adopts the selector its consumer next subscribes with and
drops the messages, enqueued meanwhile, that the selector does not match.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from dovecote.core.errors import Conflict, InvalidRequest, NotFound, StoreUnavailable
from dovecote.core.limits import MemoryBudget
from dovecote.core.matching import TopicTrie, is_valid_pattern, is_wildcard
from dovecote.core.message import Message, RoutingType
from dovecote.core.ports import Clock, Store
from dovecote.core.queue import Consumer, Queue
from dovecote.core.selector import Selector, SelectorError, compile_selector

_TOPIC_CACHE_LIMIT = 10_000


class Router:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        node_id: str = "dovecote",
        budget: MemoryBudget | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.budget = budget or MemoryBudget()
        self._queues: dict[str, Queue] = {}  # anycast queues and temporary queues
        self._durable_subscriptions: dict[str, Queue] = {}
        self._subscriptions: TopicTrie[Queue] = TopicTrie()
        self._topic_cache: dict[str, tuple[Queue, ...]] = {}
        self._owned: dict[object, set[str]] = {}
        self._client_ids: dict[str, object] = {}
        self._selector_unknown: set[str] = set()  # restored durable subscriptions
        self._ids = itertools.count(1)
        self._id_prefix = f"ID:{node_id}-"

    # --- messages -----------------------------------------------------------------------------

    def new_message_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def send(self, message: Message) -> int:
        """Route ``message`` to its queue(s); returns how many queues took it.

        Raises StoreUnavailable for a persistent message while the store cannot write.
        """
        if message.persistent and not self.store.is_available():
            self.check_routable(message)  # raises StoreUnavailable
        if message.routing is RoutingType.ANYCAST:
            self.get_or_create_queue(message.address).add(message)
            return 1
        queues = self._topic_cache.get(message.address)
        if queues is None:
            queues = self._match_topic(message.address)
        for queue in queues:
            queue.add(message)
        return len(queues)

    def check_routable(self, message: Message) -> None:
        """Raise what :meth:`send` would raise for ``message``, without sending it."""
        if message.persistent and not self.store.is_available():
            raise StoreUnavailable(
                "the broker cannot write its journal (disk full or I/O error); "
                "persistent messages are refused until it recovers"
            )
        if not message.address or is_wildcard(message.address):
            raise InvalidRequest(f"cannot send to a wildcard address {message.address!r}")

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
        queues = tuple(sorted(self._subscriptions.match(address), key=lambda q: q.name))
        if len(self._topic_cache) >= _TOPIC_CACHE_LIMIT:
            self._topic_cache.clear()
        self._topic_cache[address] = queues
        return queues

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
        if not name or is_wildcard(name):
            raise InvalidRequest(f"invalid queue name {name!r}")
        queue = self._new_queue(
            name, address=name, durable=temporary_owner is None, temporary_owner=temporary_owner
        )
        self._queues[name] = queue
        if temporary_owner is not None:
            self._owned.setdefault(temporary_owner, set()).add(name)
        else:
            self.store.record_queue(name, name, None)
        return queue

    def delete_queue(self, name: str) -> None:
        queue = self._queues.pop(name, None)
        if queue is None:
            raise NotFound(f"no queue {name!r}")
        if queue.temporary_owner is not None:
            self._owned.get(queue.temporary_owner, set()).discard(name)
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
        )

    def _close_queue(self, queue: Queue) -> None:
        for consumer in queue.consumers:
            queue.remove_consumer(consumer)
        queue.purge()
        if queue.durable:
            self.store.forget_queue(queue.name)

    # --- consumers ----------------------------------------------------------------------------

    def consume_queue(self, name: str, consumer: Consumer, *, owner: object | None = None) -> Queue:
        """Attach ``consumer`` to anycast queue ``name`` (created on first use)."""
        queue = self.get_or_create_queue(name, temporary_owner=owner)
        queue.add_consumer(consumer)
        return queue

    def subscribe_topic(
        self,
        pattern: str,
        consumer: Consumer,
        *,
        durable_name: str | None = None,
    ) -> Queue:
        """Attach ``consumer`` to a new subscription of ``pattern`` (or its durable one).

        The consumer's selector becomes the subscription's: it decides what is enqueued (the
        consumer itself then filters nothing more).
        """
        if not is_valid_pattern(pattern):
            raise InvalidRequest(f"invalid topic pattern {pattern!r}")
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


def _selector_text(selector: Selector | None) -> str | None:
    return None if selector is None else selector.text
