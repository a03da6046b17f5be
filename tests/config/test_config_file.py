"""The TOML config file: the documented example loads, every kind of mistake is refused with a
one-line message naming the file and the key, and ``dovecote run`` exits 2 without a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dovecote.cli import _parser, main, run_config
from dovecote.config_file import ConfigError, load_config
from dovecote.core.policy import DEFAULT_POLICY
from dovecote.server import Broker
from dovecote.store.journal import SyncPolicy

REPO = Path(__file__).resolve().parents[2]


def documented_example() -> str:
    text = (REPO / "docs" / "configuration.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    return blocks[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dovecote.toml"
    path.write_text(text)
    return path


def test_the_documented_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, documented_example()))
    assert config.listen == ("stomp://127.0.0.1:61613",)
    assert config.data_dir == tmp_path / "data"
    assert config.journal.sync is SyncPolicy.ALWAYS
    assert config.memory_limit == 1024 * 2**20
    policies = config.policies
    assert policies.default == DEFAULT_POLICY
    orders = policies.policy_for("orders.eu")
    assert orders.max_redeliveries == 3
    assert orders.dead_letter_target("orders.eu") == "DLQ.orders.eu"
    assert orders.redelivery_delay(3) == 4000
    assert policies.policy_for("orders.audit").dead_letter_target("orders.audit") is None
    assert policies.policy_for("orders.audit").max_redeliveries == 6  # entries do not merge
    assert policies.policy_for("prices.eu").last_value_key == "symbol"
    assert policies.policy_for("jobs").max_messages == 100_000
    assert policies.policy_for("other") is policies.default


def test_policy_defaults_are_the_base_of_every_entry(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[policy_defaults]\nmax_redeliveries = 2\n[[policy]]\nmatch = "a"\nexpired = "drop"\n',
        )
    )
    assert config.policies.policy_for("a").max_redeliveries == 2
    assert config.policies.policy_for("a").expired == "drop"
    assert config.policies.policy_for("b").max_redeliveries == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown keys
        ("[brokers]\n", "unknown key 'brokers'"),
        ('[broker]\nlisen = ["stomp://127.0.0.1:0"]\n', "broker: unknown key 'lisen'"),
        ("[policy_defaults]\nmax_redelivery = 1\n", "policy_defaults: unknown key"),
        ('[[policy]]\nmatch = "a"\nttl = 5\n', "policy #1: unknown key 'ttl'"),
        # wrong types
        ('[broker]\nmemory_limit_mib = "256"\n', "broker: memory_limit_mib must be an integer"),
        ("[broker]\nsegment_size_mib = 0\n", "broker: segment_size_mib must be from 1 to 4095"),
        ('[broker]\nlisten = "stomp://127.0.0.1:0"\n', "broker: listen must be a list"),
        ("[broker]\nlisten = [1]\n", "listen must be a non-empty list of URIs"),
        ('[[policy]]\nmatch = "a"\nmax_redeliveries = "3"\n', "must be an integer, not '3'"),
        ('[[policy]]\nmatch = "a"\nmax_messages = true\n', "max_messages must be an integer"),
        ('[[policy]]\nmatch = "a"\nuse_exponential_backoff = 1\n', "must be true or false"),
        ('[[policy]]\nmatch = "a"\nlast_value_key = 7\n', "last_value_key must be a string"),
        ("broker = 3\n", "'broker' must be a table"),
        ("policy = 3\n", "'policy' must be an array of tables"),
        ("policy = [3]\n", "policy #1 must be a table"),
        # bad values
        ("[[policy]]\nmax_redeliveries = 1\n", "policy #1: 'match' (an address pattern) is"),
        ('[[policy]]\nmatch = "a.>.b"\n', "match 'a.>.b' is not a valid pattern"),
        ('[[policy]]\nmatch = "a"\nmax_redeliveries = -2\n', "max_redeliveries must be -1"),
        ('[[policy]]\nmatch = "a"\noverflow = "block"\n', "overflow must be one of"),
        ('[[policy]]\nmatch = "a"\ndead_letter_strategy = "x"\n', "dead_letter_strategy must"),
        ("[policy_defaults]\nbackoff_multiplier = 0.5\n", "backoff_multiplier must be 1"),
        ('[broker]\nstore = "disk"\n', "store must be 'journal' or 'memory'"),
        ('[broker]\nsync = "sometimes"\n', "sync must be one of always, interval, never"),
        ("[broker]\nmemory_limit_mib = 0\n", "memory_limit_mib must be 1 or more"),
        ('[broker]\nlisten = ["amqp://127.0.0.1:0"]\n', "broker: listen:"),
        # not TOML at all
        ("[broker\n", "not valid TOML"),
    ],
)
def test_mistakes_are_refused_naming_file_and_key(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope.toml: No such file"):
        load_config(tmp_path / "nope.toml")


def test_run_exits_2_with_one_line_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[[policy]]\nmatch = "a"\nmax_redeliveries = "3"\n')
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"dovecote: {path}: policy #1: max_redeliveries must be an integer, not '3'\n"


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[broker]\nlisten = ["stomp://127.0.0.1:1"]\ndata_dir = "d"\nsync = "never"\n'
        "memory_limit_mib = 8\nsegment_size_mib = 4\n",
    )
    ns = _parser().parse_args(["run", "--config", str(path)])
    config = run_config(ns)
    assert (config.listen, config.data_dir, config.journal.sync, config.memory_limit) == (
        ("stomp://127.0.0.1:1",),
        tmp_path / "d",
        SyncPolicy.NEVER,
        8 * 2**20,
    )
    ns = _parser().parse_args(
        [
            "run", "--config", str(path), "--listen", "stomp://127.0.0.1:2", "--data-dir", "x",
            "--sync", "always", "--memory-limit", "16", "--store", "memory",
        ]
    )  # fmt: skip
    config = run_config(ns)
    assert (config.listen, config.data_dir, config.journal.sync, config.memory_limit) == (
        ("stomp://127.0.0.1:2",),
        Path("x"),
        SyncPolicy.ALWAYS,
        16 * 2**20,
    )
    assert config.store == "memory"
    assert config.journal.segment_size == 4 * 2**20  # --sync changes the sync policy only
    assert config.policies.policy_for("x") == DEFAULT_POLICY


def test_without_a_file_the_defaults_hold() -> None:
    config = run_config(_parser().parse_args(["run"]))
    assert config.data_dir == Path("data")
    assert config.journal.sync is SyncPolicy.ALWAYS


def test_embedded_broker_takes_a_config_path(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[broker]\nstore = "memory"\n[[policy]]\nmatch = "q"\nmax_messages = 1\n'
    )
    broker = Broker(path, listen=["stomp://127.0.0.1:0"])
    assert broker.router.policies.policy_for("q").max_messages == 1
    with pytest.raises(ConfigError):
        Broker(tmp_path / "missing.toml")
