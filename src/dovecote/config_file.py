"""The broker's config file (TOML, read with the standard library's ``tomllib``).

One format, validated whole before the broker starts: an unknown key, a value of the wrong
type or a value out of range raises :class:`ConfigError` naming the file and the key, and
nothing starts. docs/configuration.md documents every key with a complete example.

Tables: ``[broker]`` (the settings ``dovecote run`` also takes as flags; flags win),
``[policy_defaults]`` (overrides the built-in ActiveMQ defaults for every address) and any
number of ``[[policy]]`` entries, each with a ``match`` pattern; an entry starts from the
defaults, and the most specific matching entry applies (see :mod:`dovecote.core.policy`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from dovecote.config import BrokerConfig
from dovecote.core.matching import is_valid_pattern
from dovecote.core.policy import AddressPolicy, PolicyEntry, PolicyMap
from dovecote.store.journal import JournalConfig, SyncPolicy


class ConfigError(ValueError):
    """A config file the broker refuses; the message names the file and the key."""


_POLICY_TYPES: dict[str, tuple[type, ...]] = {
    "max_redeliveries": (int,),
    "initial_redelivery_delay_ms": (int,),
    "redelivery_delay_ms": (int,),
    "use_exponential_backoff": (bool,),
    "backoff_multiplier": (int, float),
    "max_redelivery_delay_ms": (int,),
    "dead_letter_strategy": (str,),
    "dead_letter_queue": (str,),
    "dead_letter_prefix": (str,),
    "default_ttl_ms": (int,),
    "expired": (str,),
    "max_messages": (int,),
    "overflow": (str,),
    "last_value_key": (str,),
}
assert set(_POLICY_TYPES) == {f.name for f in dataclasses.fields(AddressPolicy)}

_BROKER_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "listen": (list,),
    "data_dir": (str,),
    "store": (str,),
    "sync": (str,),
    "memory_limit_mib": (int,),
    "segment_size_mib": (int,),
    "expiry_check_ms": (int,),
    "max_connections": (int,),
    "max_subscriptions_per_connection": (int,),
    "max_transactions_per_connection": (int,),
}

_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list",
}


def load_config(path: str | os.PathLike[str]) -> BrokerConfig:
    """Read and validate ``path``; raises ConfigError with a one-line message."""
    file = Path(path)
    try:
        with file.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not valid TOML: not UTF-8 text") from None
    return parse_config(data, file)


def parse_config(data: dict[str, Any], file: Path) -> BrokerConfig:
    _check_keys(data, {"broker", "policy_defaults", "policy"}, file, "")
    broker = _table(data, "broker", file)
    defaults_table = _table(data, "policy_defaults", file)
    default = _policy(defaults_table, AddressPolicy(), file, "policy_defaults")
    entries = []
    raw_entries = data.get("policy", [])
    if not isinstance(raw_entries, list):
        raise ConfigError(f"{file}: 'policy' must be an array of tables ([[policy]])")
    for i, raw in enumerate(raw_entries, 1):
        where = f"policy #{i}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: {where} must be a table")
        pattern = raw.get("match")
        if not isinstance(pattern, str):
            raise ConfigError(f"{file}: {where}: 'match' (an address pattern) is required")
        if not is_valid_pattern(pattern):
            raise ConfigError(f"{file}: {where}: match {pattern!r} is not a valid pattern")
        fields = {k: v for k, v in raw.items() if k != "match"}
        entries.append(PolicyEntry(pattern, _policy(fields, default, file, where)))
    return _broker_config(broker, file, PolicyMap(default, tuple(entries)))


def _table(data: dict[str, Any], name: str, file: Path) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: '{name}' must be a table ([{name}])")
    return table


def _check_keys(table: dict[str, Any], known: Collection[str], file: Path, where: str) -> None:
    for key in table:
        if key not in known:
            place = f"{where}: " if where else ""
            raise ConfigError(f"{file}: {place}unknown key {key!r}")


def _check_type(value: object, types: tuple[type, ...], file: Path, key: str) -> None:
    # (In Python a bool is an int: ``max_messages = true`` must still be refused.)
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        raise ConfigError(f"{file}: {key} must be {wanted}, not {value!r}")


def _policy(fields: dict[str, Any], base: AddressPolicy, file: Path, where: str) -> AddressPolicy:
    _check_keys(fields, _POLICY_TYPES, file, where)
    for key, value in fields.items():
        _check_type(value, _POLICY_TYPES[key], file, f"{where}: {key}")
    try:
        return dataclasses.replace(base, **fields)
    except ValueError as exc:
        raise ConfigError(f"{file}: {where}: {exc}") from None


def _broker_config(broker: dict[str, Any], file: Path, policies: PolicyMap) -> BrokerConfig:
    _check_keys(broker, _BROKER_TYPES, file, "broker")
    for key, value in broker.items():
        _check_type(value, _BROKER_TYPES[key], file, f"broker: {key}")
    changes: dict[str, Any] = {"policies": policies}
    if "listen" in broker:
        listen = broker["listen"]
        if not listen or not all(isinstance(uri, str) for uri in listen):
            raise ConfigError(f"{file}: broker: listen must be a non-empty list of URIs")
        changes["listen"] = tuple(listen)
    if "data_dir" in broker:
        # Relative to the config file's directory, so the file means the same from anywhere.
        changes["data_dir"] = file.parent / broker["data_dir"]
    if "store" in broker:
        if broker["store"] not in ("journal", "memory"):
            raise ConfigError(f"{file}: broker: store must be 'journal' or 'memory'")
        changes["store"] = broker["store"]
    journal: dict[str, Any] = {}
    if "sync" in broker:
        try:
            journal["sync"] = SyncPolicy(broker["sync"])
        except ValueError:
            choices = ", ".join(p.value for p in SyncPolicy)
            raise ConfigError(f"{file}: broker: sync must be one of {choices}") from None
    if "segment_size_mib" in broker:
        size = broker["segment_size_mib"]
        if not 1 <= size < 4096:
            raise ConfigError(f"{file}: broker: segment_size_mib must be from 1 to 4095")
        journal["segment_size"] = size * 2**20
    if journal:
        changes["journal"] = JournalConfig(**journal)
    for key in (
        "memory_limit_mib",
        "expiry_check_ms",
        "max_connections",
        "max_subscriptions_per_connection",
        "max_transactions_per_connection",
    ):
        if key in broker and broker[key] < 1:
            raise ConfigError(f"{file}: broker: {key} must be 1 or more")
    if "memory_limit_mib" in broker:
        changes["memory_limit"] = broker["memory_limit_mib"] * 2**20
    for key in (
        "name",
        "expiry_check_ms",
        "max_connections",
        "max_subscriptions_per_connection",
        "max_transactions_per_connection",
    ):
        if key in broker:
            changes[key] = broker[key]
    config = BrokerConfig(**changes)
    try:
        config.listen_addresses()
    except ValueError as exc:
        raise ConfigError(f"{file}: broker: listen: {exc}") from None
    return config
