"""A stand-in for the ``os`` module inside dovecote.store.journal (see conftest.py)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any


class JournalOs:
    """Delegates to ``os``; counts and optionally replaces the calls the journal makes."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.instead: dict[str, Callable[..., Any]] = {}
        self.paths: dict[int, str] = {}  # fd -> path, for the fds the journal opened
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            self.counts[name] += 1
        replacement = self.instead.get(name)
        if replacement is not None:
            return replacement(*args)
        return getattr(os, name)(*args)

    def count(self, name: str) -> int:
        with self._lock:
            return self.counts[name]

    def write(self, fd: int, data: Any) -> int:
        return int(self._call("write", fd, data))

    def fdatasync(self, fd: int) -> None:
        self._call("fdatasync", fd)

    def fsync(self, fd: int) -> None:
        self._call("fsync", fd)

    def ftruncate(self, fd: int, size: int) -> None:
        self._call("ftruncate", fd, size)

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        fd = os.open(path, flags, mode)
        with self._lock:
            self.counts["open"] += 1
            self.paths[fd] = os.fspath(path)
        return fd
