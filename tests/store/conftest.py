"""Fixtures for the journal tests.

- ``journal_os``: a :class:`JournalOs` standing in for the ``os`` module *inside
  dovecote.store.journal and dovecote.store.writer only* (monkeypatched there and undone
  after the test; nothing else sees it). It counts calls, and a test can run its own
  function instead of any call (``journal_os.instead["write"] = ...``) to slow the writer
  down, make it fail (disk full), or look at the files between two steps.
"""

from __future__ import annotations

import pytest
from journal_os import JournalOs

import dovecote.store.journal as journal_module
import dovecote.store.writer as writer_module


@pytest.fixture
def journal_os(monkeypatch: pytest.MonkeyPatch) -> JournalOs:
    proxy = JournalOs()
    monkeypatch.setattr(journal_module, "os", proxy)
    monkeypatch.setattr(writer_module, "os", proxy)
    return proxy
