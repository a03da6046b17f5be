"""Broker configuration: one validated dataclass, built from the CLI, a config file
(:mod:`dovecote.config_file`) or by embedding code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dovecote.core.limits import DEFAULT_MEMORY_LIMIT
from dovecote.core.policy import PolicyMap
from dovecote.core.router import DEFAULT_EXPIRY_CHECK_MS
from dovecote.protocols.stomp import FrameLimits
from dovecote.store.journal import JournalConfig
from dovecote.transport.connection import ConnectionLimits
from dovecote.transport.listener import ListenAddress

DEFAULT_LISTEN = "stomp://127.0.0.1:61613"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything a broker is built from. ``listen`` holds ActiveMQ-style URIs."""

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    data_dir: Path | None = None
    # "journal" (durable, in data_dir; the default when data_dir is set) or "memory".
    store: str = "journal"
    journal: JournalConfig = field(default_factory=JournalConfig)
    name: str = "dovecote"
    frame_limits: FrameLimits = field(default_factory=FrameLimits)
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # Bytes of queued messages past which producers are paused (back-pressure).
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    max_connections: int = 10_000
    max_subscriptions_per_connection: int = 1000
    max_transactions_per_connection: int = 100
    shutdown_timeout: float = 5.0
    # Per-address policies (redelivery, dead letters, expiry, bounds, last value): see
    # dovecote.core.policy and docs/configuration.md; usually loaded by config_file.load_config.
    policies: PolicyMap = field(default_factory=PolicyMap)
    # How often the reaper looks for expired messages in queues (only while some can expire).
    expiry_check_ms: int = DEFAULT_EXPIRY_CHECK_MS
    # Duplicate-detection ids remembered per address (Artemis's id-cache-size default).
    duplicate_cache_size: int = 20_000
    # Advisory messages on ActiveMQ.Advisory.* topics (built only for subscribers).
    advisories: bool = True

    @property
    def uses_journal(self) -> bool:
        return self.store == "journal" and self.data_dir is not None

    def listen_addresses(self) -> list[ListenAddress]:
        """Parse every ``listen`` URI; raises ValueError naming the bad one."""
        if not self.listen:
            raise ValueError("at least one listener is needed")
        return [ListenAddress.parse(uri) for uri in self.listen]
