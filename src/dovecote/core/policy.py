"""Per-address policies: redelivery and dead letters, expiry, bounded and last-value queues.

A :class:`PolicyMap` holds one default :class:`AddressPolicy` and entries keyed by ActiveMQ
wildcard patterns (``.`` separates words, ``*`` matches one word, ``>`` the rest). The policy
of an address is the **most specific** matching entry's, whole (entries do not merge with each
other; each one starts from the defaults): an exact name beats any pattern, then the pattern
with more literal words, then ``*`` beats ``>``; a tie goes to the entry listed first.

Redelivery follows ActiveMQ's ``RedeliveryPolicy`` (defaults included): a message may be
delivered ``1 + max_redeliveries`` times; the first redelivery waits
``initial_redelivery_delay_ms``, later ones ``redelivery_delay_ms`` or, with exponential
back-off, the previous delay times ``backoff_multiplier``, capped at
``max_redelivery_delay_ms`` (-1: no cap). ``max_redeliveries = -1`` redelivers forever.

Invariant: an AddressPolicy is immutable and validated on construction (ValueError naming the
field), so the core never meets a nonsensical value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dovecote.core.matching import ANY_TAIL, ANY_WORD, SEPARATOR, is_valid_pattern, is_wildcard

SHARED_DLQ = "ActiveMQ.DLQ"
DLQ_PREFIX = "DLQ."

# Message properties set on a dead-lettered message (ActiveMQ's names; protocol-neutral: every
# adapter passes properties through, the STOMP one also maps ORIGINAL_DESTINATION to
# ``original-destination:/queue/<name>`` as ActiveMQ's STOMP does).
ORIGINAL_DESTINATION = "originalDestination"  # "queue://orders" or "topic://prices.eu"
FAILURE_CAUSE = "dlqDeliveryFailureCause"
DELIVERY_COUNT = "JMSXDeliveryCount"
ORIGINAL_EXPIRATION = "originalExpiration"

_POLICY_CACHE_LIMIT = 10_000


class DeadLetterStrategy:
    SHARED = "shared"  # every queue's dead letters go to ``dead_letter_queue`` (ActiveMQ.DLQ)
    INDIVIDUAL = "individual"  # to ``<dead_letter_prefix><queue>`` (DLQ.orders)
    DISCARD = "discard"  # dropped
    ALL = frozenset({SHARED, INDIVIDUAL, DISCARD})


class ExpiredAction:
    DEAD_LETTER = "dead-letter"  # to the dead-letter queue, as ActiveMQ's processExpired=true
    DROP = "drop"
    ALL = frozenset({DEAD_LETTER, DROP})


class Overflow:
    REJECT_NEW = "reject-new"  # the send is refused (ActiveMQ's sendFailIfNoSpace)
    DROP_OLDEST = "drop-oldest"  # the oldest waiting message is dropped to make room
    ALL = frozenset({REJECT_NEW, DROP_OLDEST})


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    max_redeliveries: int = 6
    initial_redelivery_delay_ms: int = 1000
    redelivery_delay_ms: int = 1000
    use_exponential_backoff: bool = False
    backoff_multiplier: float = 5.0
    max_redelivery_delay_ms: int = -1
    dead_letter_strategy: str = DeadLetterStrategy.SHARED
    dead_letter_queue: str = SHARED_DLQ
    dead_letter_prefix: str = DLQ_PREFIX
    default_ttl_ms: int = 0  # 0: messages without ``expires`` never expire
    expired: str = ExpiredAction.DEAD_LETTER
    max_messages: int = 0  # waiting messages (ready or held for redelivery); 0: unbounded
    overflow: str = Overflow.REJECT_NEW
    last_value_key: str | None = None  # a header: a new message replaces the waiting one

    def __post_init__(self) -> None:
        for name in (
            "initial_redelivery_delay_ms",
            "redelivery_delay_ms",
            "default_ttl_ms",
            "max_messages",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more")
        if self.max_redeliveries < -1:
            raise ValueError("max_redeliveries must be -1 (unlimited) or more")
        if self.max_redelivery_delay_ms < -1:
            raise ValueError("max_redelivery_delay_ms must be -1 (no cap) or more")
        if self.backoff_multiplier < 1:
            raise ValueError("backoff_multiplier must be 1 or more")
        for name, allowed in (
            ("dead_letter_strategy", DeadLetterStrategy.ALL),
            ("expired", ExpiredAction.ALL),
            ("overflow", Overflow.ALL),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(sorted(allowed))}")
        if not _is_queue_name(self.dead_letter_queue):
            raise ValueError(
                "dead_letter_queue must be a queue name (no wildcards, no empty words)"
            )
        if not self.dead_letter_prefix or not _is_queue_name(self.dead_letter_prefix + "q"):
            raise ValueError("dead_letter_prefix must be a non-empty queue name prefix")
        if self.last_value_key == "":
            raise ValueError("last_value_key must be a header name")

    def redelivery_delay(self, redelivery: int) -> int:
        """Milliseconds to hold a message back before redelivery number ``redelivery`` (1+)."""
        if redelivery <= 1:
            return self.initial_redelivery_delay_ms
        initial = self.initial_redelivery_delay_ms
        if not self.use_exponential_backoff or self.backoff_multiplier == 1 or not initial:
            # ActiveMQ: with no previous delay to multiply, redeliveryDelay applies.
            return self.redelivery_delay_ms
        cap = self.max_redelivery_delay_ms
        delay = initial * self.backoff_multiplier ** min(redelivery - 1, 256)
        if cap != -1 and delay > cap:
            return cap  # (ActiveMQ 5 returns max(cap, redeliveryDelay): a cap is a cap here)
        return int(delay)

    def is_exhausted(self, delivery_count: int) -> bool:
        """True when a message delivered ``delivery_count`` times may not be redelivered."""
        return self.max_redeliveries != -1 and delivery_count > self.max_redeliveries

    def dead_letter_target(self, queue: str, *, subscription: bool = False) -> str | None:
        """The queue dead letters of ``queue`` go to, or None when they are dropped.

        A dead-letter queue never dead-letters into itself (ActiveMQ drops those too). A
        non-durable topic subscription has no stable name: individual strategy uses the shared
        queue for it.
        """
        strategy = self.dead_letter_strategy
        if strategy == DeadLetterStrategy.DISCARD:
            return None
        if strategy == DeadLetterStrategy.INDIVIDUAL and not subscription:
            target = self.dead_letter_prefix + queue
        else:
            target = self.dead_letter_queue
        return None if target == queue else target


def _is_queue_name(name: str) -> bool:
    return is_valid_pattern(name) and not is_wildcard(name)


DEFAULT_POLICY = AddressPolicy()


def pattern_matches(pattern: str, name: str) -> bool:
    """True when the ActiveMQ ``pattern`` matches ``name`` (whose words are taken literally)."""
    words = pattern.split(SEPARATOR)
    parts = name.split(SEPARATOR)
    for i, word in enumerate(words):
        if word == ANY_TAIL:
            return len(parts) > i
        if i >= len(parts) or (word != ANY_WORD and word != parts[i]):
            return False
    return len(parts) == len(words)


def _specificity(pattern: str) -> tuple[int, int, int]:
    words = pattern.split(SEPARATOR)
    literal = sum(1 for w in words if w not in (ANY_WORD, ANY_TAIL))
    return (int(literal == len(words)), literal, int(ANY_TAIL not in words))


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    pattern: str
    policy: AddressPolicy


@dataclass(slots=True)
class PolicyMap:
    default: AddressPolicy = DEFAULT_POLICY
    entries: tuple[PolicyEntry, ...] = ()
    _cache: dict[str, AddressPolicy] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            if not is_valid_pattern(entry.pattern):
                raise ValueError(f"invalid address pattern {entry.pattern!r}")

    def policy_for(self, address: str) -> AddressPolicy:
        """The most specific matching entry's policy (cached per address)."""
        policy = self._cache.get(address)
        if policy is None:
            policy = self.default
            best: tuple[int, int, int] | None = None
            for entry in self.entries:
                if pattern_matches(entry.pattern, address):
                    rank = _specificity(entry.pattern)
                    if best is None or rank > best:
                        best, policy = rank, entry.policy
            if len(self._cache) >= _POLICY_CACHE_LIMIT:
                self._cache.clear()
            self._cache[address] = policy
        return policy
