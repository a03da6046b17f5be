"""SIGKILL under load, then restart on the same directory: no receipted message lost, every
delivered-but-unacknowledged one back, duplicates only where at-least-once allows them and
flagged ``redelivered``, transactions whole, and ``dovecote store check`` ok afterwards.

The cycle itself is benchmarks/soak.py (``python benchmarks/soak.py --cycles 20`` runs it as
a soak test); here three cycles run on one data directory, each with a fixed seed (printed, and
named in any failure) for the moment of the kill: the first through ``dovecote run`` with the
default 32 MiB segments, the others with 64 KiB and 16 KiB segments so that the kill can land
while segments rotate, are deleted or are evacuated.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dovecote_soak", REPO / "benchmarks" / "soak.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


soak = _load_soak()

CYCLES = [(1, 20240611, None), (2, 20240612, 65536), (3, 20240613, 16384)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kill9") / "data"


@pytest.mark.slow
@pytest.mark.parametrize(("cycle", "seed", "segment_size"), CYCLES)
def test_sigkill_under_load_loses_nothing_confirmed(
    data_dir: Path, cycle: int, seed: int, segment_size: int | None
) -> None:
    result = soak.run_cycle(data_dir, cycle, seed, segment_size)
    print(result.line())
    assert result.problems == [], f"seed {seed}: {result.line()}"
    # The cycle did what it is for: load was confirmed, the kill left work in flight.
    assert result.receipted > 200
    assert result.sent > result.receipted
    assert result.drained > 0
    assert result.duplicates > 0
    assert result.lost == 0
    assert result.duplicates == result.flagged + result.unflagged
