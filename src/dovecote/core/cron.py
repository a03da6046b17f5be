"""Standard five-field cron expressions (``AMQ_SCHEDULED_CRON``), evaluated in UTC.

``minute hour day-of-month month day-of-week``; each field is ``*``, a number, a range
``a-b``, a step ``*/n`` or ``a-b/n``, or a comma-separated list of those. Day of week is 0-7
(0 and 7 are Sunday). Month and day names are not accepted. As in Vixie cron (and ActiveMQ's
``CronParser``), when both day fields are restricted a day matching either one fires.

Invariant: :meth:`CronExpression.next_after` returns the first whole minute strictly after the
given time that matches, or raises ``InvalidRequest`` if none exists within eight years
(``0 0 30 2 *``: February 30th never comes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dovecote.core.errors import InvalidRequest

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12))
_MINUTE_MS = 60_000
_SEARCH_DAYS = 8 * 366


@dataclass(frozen=True, slots=True)
class CronExpression:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def is_day(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0
        in_days = moment.day in self.days
        in_weekdays = weekday in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, epoch_ms: int) -> int:
        """The first matching minute strictly after ``epoch_ms`` (epoch milliseconds)."""
        start = (epoch_ms // _MINUTE_MS + 1) * _MINUTE_MS
        moment = datetime.fromtimestamp(start / 1000, tz=UTC)
        last_day = moment + timedelta(days=_SEARCH_DAYS)
        while moment < last_day:
            if moment.month not in self.months or not self.is_day(moment):
                moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if moment.hour not in self.hours:
                moment = (moment + timedelta(hours=1)).replace(minute=0)
                continue
            if moment.minute not in self.minutes:
                moment += timedelta(minutes=1)
                continue
            return int(moment.timestamp()) * 1000
        raise InvalidRequest(f"cron expression {self.text!r} never fires")


def parse_cron(text: str) -> CronExpression:
    """Parse a five-field cron expression; InvalidRequest names what is wrong."""
    fields = text.split()
    if len(fields) != 5:
        raise InvalidRequest(
            f"cron expression {text[:100]!r} must have 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    minutes, hours, days, months = (
        _parse_field(field, name, low, high, text)
        for field, (name, low, high) in zip(fields, _FIELDS, strict=False)
    )
    weekdays = _parse_field(fields[4], "day of week", 0, 7, text)
    if 7 in weekdays:
        weekdays = (weekdays - {7}) | {0}
    expression = CronExpression(
        text,
        minutes,
        hours,
        days,
        months,
        weekdays,
        days_restricted=fields[2] != "*",
        weekdays_restricted=fields[4] != "*",
    )
    expression.next_after(0)  # refuse expressions that can never fire (Feb 30th)
    return expression


def _parse_field(field: str, name: str, low: int, high: int, text: str) -> frozenset[int]:
    chosen: set[int] = set()
    for part in field.split(","):
        chosen |= _parse_part(part, name, low, high, text)
    return frozenset(chosen)


def _parse_part(part: str, name: str, low: int, high: int, text: str) -> set[int]:
    def bad(why: str) -> InvalidRequest:
        return InvalidRequest(f"cron expression {text[:100]!r}: {name} {part[:20]!r} {why}")

    span, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise bad("has a bad step")
        step = int(step_text)
    if span == "*":
        first, last = low, high
    else:
        start, dash, end = span.partition("-")
        if not start.isdigit() or (dash and not end.isdigit()):
            raise bad("is not a number, range or *")
        first = int(start)
        last = int(end) if dash else (high if slash else first)
    if not (low <= first <= high and low <= last <= high) or first > last:
        raise bad(f"is outside {low}-{high}")
    return set(range(first, last + 1, step))
