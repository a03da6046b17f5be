"""The ``selectors`` and ``priority`` benchmark scenarios, small, against ``dovecote run``."""

from __future__ import annotations

from dovecote.bench.scenarios import SCENARIOS, Options
from dovecote.bench.session import Target


def test_selectors_scenario_delivers_each_message_once_to_its_shard(broker_process):
    opts = Options(Target("127.0.0.1", broker_process.port), messages=500, timeout=20.0)
    result = SCENARIOS["selectors"](opts)
    assert result.ok, result.summary
    assert result.numbers["received"] == 500
    assert result.numbers["consumers"] == 10


def test_priority_scenario_is_exact(broker_process):
    opts = Options(Target("127.0.0.1", broker_process.port), messages=500, timeout=20.0)
    result = SCENARIOS["priority"](opts)
    assert result.ok, result.summary
    assert result.numbers["lost"] == result.numbers["duplicates"] == 0
