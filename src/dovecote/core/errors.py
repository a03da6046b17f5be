"""Errors the core raises; each adapter maps ``code`` to its protocol's error in one table."""

from __future__ import annotations

from enum import Enum


class ErrorCode(Enum):
    NOT_FOUND = "not-found"
    INVALID = "invalid"
    CONFLICT = "conflict"
    RESOURCE_LIMIT = "resource-limit"
    UNAVAILABLE = "unavailable"


class CoreError(Exception):
    """A request the core refuses. ``message`` is safe to show the peer."""

    code = ErrorCode.INVALID

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CoreError):
    code = ErrorCode.NOT_FOUND


class InvalidRequest(CoreError):
    code = ErrorCode.INVALID


class Conflict(CoreError):
    code = ErrorCode.CONFLICT


class ResourceLimitExceeded(CoreError):
    code = ErrorCode.RESOURCE_LIMIT


class StoreUnavailable(CoreError):
    code = ErrorCode.UNAVAILABLE
