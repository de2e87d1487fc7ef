"""Working days and deadlines (DOMAIN.md "Working days", DESIGN.md §6).

A working day is Monday–Friday, not a Vietnamese public holiday, or a make-up Saturday.
Holidays, substitute days and the government's swap days come from the ``holidays``
package (country ``VN``, which also exposes make-up Saturdays as ``weekend_workdays``);
an override table corrects what the package gets wrong or does not know yet. Pure
computation: the clock is whatever the caller passes in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from zoneinfo import ZoneInfo

import holidays

# Overrides to the package (holidays 0.109), replaceable from configuration.
# Dates off although the package has them as working days:
DEFAULT_EXTRA_HOLIDAYS: frozenset[dt.date] = frozenset({
    dt.date(2026, 1, 2),  # New Year swap: Friday off, made up on Saturday 2026-01-10
})
# Dates worked although the package has them as weekends or holidays:
DEFAULT_EXTRA_WORKDAYS: frozenset[dt.date] = frozenset({
    dt.date(2026, 1, 10),  # make-up Saturday for the 2026-01-02 swap
    dt.date(2026, 11, 24),  # the package lists Vietnam Cultural Day from 2026; still a proposal
})
DEFAULT_OFFICE_CLOSE = dt.time(17, 0)
DEFAULT_TIMEZONE = ZoneInfo("Asia/Ho_Chi_Minh")


class WorkingCalendar:
    """Vietnamese public-sector working days, with an override table.

    ``extra_holidays`` are days off the package does not know; ``extra_workdays`` are
    days worked whatever the package says (make-up Saturdays, holidays that are not).
    A date may not be in both. ``office_close`` and ``timezone`` decide when a dossier
    received late counts as received on the next working day.
    """

    def __init__(
        self,
        extra_holidays: Collection[dt.date] = DEFAULT_EXTRA_HOLIDAYS,
        extra_workdays: Collection[dt.date] = DEFAULT_EXTRA_WORKDAYS,
        office_close: dt.time = DEFAULT_OFFICE_CLOSE,
        timezone: dt.tzinfo = DEFAULT_TIMEZONE,
    ) -> None:
        self.extra_holidays = frozenset(extra_holidays)
        self.extra_workdays = frozenset(extra_workdays)
        if clash := self.extra_holidays & self.extra_workdays:
            raise ValueError("dates both extra holiday and extra workday: " + ", ".join(map(str, sorted(clash))))
        self.office_close = office_close
        self.timezone = timezone
        # Per year: (holidays, make-up Saturdays) from the package; filled on first use.
        self._years: dict[int, tuple[frozenset[dt.date], frozenset[dt.date]]] = {}

    def _year(self, year: int) -> tuple[frozenset[dt.date], frozenset[dt.date]]:
        if year not in self._years:
            # Neighbouring years too: a swap may put the make-up Saturday in the year
            # before its holiday (2015's 2 January was made up on 2014-12-27).
            years = range(max(year - 1, dt.MINYEAR), min(year + 1, dt.MAXYEAR) + 1)
            table = holidays.country_holidays("VN", years=years)
            days_off = frozenset(d for d in table if d.year == year)
            make_up = frozenset(d for d in table.weekend_workdays if d.year == year)
            self._years[year] = (days_off, make_up)
        return self._years[year]

    def package_holidays(self, year: int) -> dict[dt.date, str]:
        """The package's holidays of ``year`` with their names, before overrides."""
        return {d: n for d, n in holidays.country_holidays("VN", years=year).items() if d.year == year}

    def is_working_day(self, day: dt.date) -> bool:
        """True when public offices work on ``day``."""
        if day in self.extra_workdays:
            return True
        if day in self.extra_holidays:
            return False
        days_off, make_up = self._year(day.year)
        if day in make_up:
            return True
        return day.weekday() < 5 and day not in days_off

    def next_working_day(self, day: dt.date) -> dt.date:
        """The first working day strictly after ``day``."""
        day += dt.timedelta(days=1)
        while not self.is_working_day(day):
            day += dt.timedelta(days=1)
        return day

    def add_working_days(self, start: dt.date, n: int) -> dt.date:
        """The ``n``-th working day after ``start``; ``start`` itself does not count.

        ``n == 0`` gives ``start`` if it is a working day, else the next one, so a
        deadline never lands on a day off.
        """
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        if n == 0:
            return start if self.is_working_day(start) else self.next_working_day(start)
        day = start
        for _ in range(n):
            day = self.next_working_day(day)
        return day

    def receipt_day(self, received: dt.datetime) -> dt.date:
        """The working day a dossier counts as received on.

        Received on a day off, or at or after office close, it counts as received on
        the next working day. A naive ``received`` is read in the calendar's timezone.
        """
        local = received.astimezone(self.timezone) if received.tzinfo else received
        day = local.date()
        if not self.is_working_day(day) or local.time() >= self.office_close:
            return self.next_working_day(day)
        return day

    def deadline(self, received: dt.datetime, working_days: int) -> dt.date:
        """The last day to finish: ``working_days`` after the day of receipt, which
        does not count (Circular 185/2019: 3 working days to ready, 1 to publish)."""
        return self.add_working_days(self.receipt_day(received), working_days)
