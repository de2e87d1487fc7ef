"""Working days and deadlines against the 2025–2026 official calendars."""

from __future__ import annotations

import datetime as dt

import pytest

from factory.calendar import DEFAULT_TIMEZONE, WorkingCalendar

D = dt.date


@pytest.fixture(scope="module")
def calendar() -> WorkingCalendar:
    """The calendar with the built-in override table."""
    return WorkingCalendar()


def at(*parts: int) -> dt.datetime:
    """A moment in Hà Nội time."""
    return dt.datetime(*parts, tzinfo=DEFAULT_TIMEZONE)


def test_tet_2026_is_five_days_off_between_two_weekends(calendar: WorkingCalendar) -> None:
    """Tết Bính Ngọ: Monday 16 to Friday 20 February 2026 off; Friday 13 and Monday 23 worked."""
    assert [calendar.is_working_day(D(2026, 2, d)) for d in range(13, 24)] == [
        True, False, False, False, False, False, False, False, False, False, True]


def test_national_day_2026_with_its_adjacent_day_and_swap(calendar: WorkingCalendar) -> None:
    """2/9 falls on Wednesday: 1/9 adjacent, 31/8 swapped for Saturday 22/8, which is worked."""
    assert not calendar.is_working_day(D(2026, 9, 2))
    assert not calendar.is_working_day(D(2026, 9, 1))
    assert not calendar.is_working_day(D(2026, 8, 31))
    assert calendar.is_working_day(D(2026, 8, 22))  # a Saturday
    assert calendar.is_working_day(D(2026, 9, 3))


def test_the_2026_new_year_swap_the_package_misses(calendar: WorkingCalendar) -> None:
    """Friday 2 January 2026 off, Saturday 10 January worked; bare package says otherwise."""
    assert not calendar.is_working_day(D(2026, 1, 1))
    assert not calendar.is_working_day(D(2026, 1, 2))
    assert calendar.is_working_day(D(2026, 1, 10))
    bare = WorkingCalendar(extra_holidays=(), extra_workdays=())
    assert bare.is_working_day(D(2026, 1, 2)) and not bare.is_working_day(D(2026, 1, 10))


def test_make_up_saturdays_from_the_package_are_worked(calendar: WorkingCalendar) -> None:
    """Saturday 26 April 2025 was worked so that Friday 2 May 2025 could be off."""
    assert calendar.is_working_day(D(2025, 4, 26))
    assert not calendar.is_working_day(D(2025, 5, 2))
    assert not calendar.is_working_day(D(2025, 4, 19))  # an ordinary Saturday


def test_cultural_day_2026_is_not_a_holiday_by_default(calendar: WorkingCalendar) -> None:
    """24/11 is only a proposal: worked unless configuration removes the override."""
    assert calendar.is_working_day(D(2026, 11, 24))
    assert not WorkingCalendar(extra_workdays=()).is_working_day(D(2026, 11, 24))


def test_received_after_hours_on_the_friday_before_tet(calendar: WorkingCalendar) -> None:
    """18:00 Friday 13/2 counts as received Monday 23/2; 3 working days end Thursday 26/2."""
    assert calendar.receipt_day(at(2026, 2, 13, 18)) == D(2026, 2, 23)
    assert calendar.deadline(at(2026, 2, 13, 18), 3) == D(2026, 2, 26)


def test_received_in_office_hours_on_the_friday_before_tet(calendar: WorkingCalendar) -> None:
    """10:00 Friday 13/2: Tết skipped, the deadline is Wednesday 25/2."""
    assert calendar.deadline(at(2026, 2, 13, 10), 3) == D(2026, 2, 25)


def test_received_on_the_monday_after_tet(calendar: WorkingCalendar) -> None:
    """10:00 Monday 23/2: that day does not count, the deadline is Thursday 26/2."""
    assert calendar.deadline(at(2026, 2, 23, 10), 3) == D(2026, 2, 26)


def test_office_close_is_the_first_late_minute_and_timezones_convert(calendar: WorkingCalendar) -> None:
    """17:00 sharp is after hours; 10:30 UTC is 17:30 in Hà Nội; naive times are local."""
    assert calendar.receipt_day(at(2026, 2, 23, 16, 59)) == D(2026, 2, 23)
    assert calendar.receipt_day(at(2026, 2, 23, 17, 0)) == D(2026, 2, 24)
    assert calendar.receipt_day(dt.datetime(2026, 2, 23, 10, 30, tzinfo=dt.UTC)) == D(2026, 2, 24)
    assert calendar.receipt_day(dt.datetime(2026, 2, 23, 18)) == D(2026, 2, 24)


def test_publication_deadline_of_one_working_day_skips_the_weekend(calendar: WorkingCalendar) -> None:
    """Activation asked Friday 10:00: published by Monday."""
    assert calendar.deadline(at(2026, 3, 6, 10), 1) == D(2026, 3, 9)


def test_add_working_days_zero_lands_on_a_working_day(calendar: WorkingCalendar) -> None:
    """Zero days from a holiday is the next working day; negative counts are refused."""
    assert calendar.add_working_days(D(2026, 2, 17), 0) == D(2026, 2, 23)
    assert calendar.add_working_days(D(2026, 2, 12), 0) == D(2026, 2, 12)
    with pytest.raises(ValueError):
        calendar.add_working_days(D(2026, 2, 12), -1)


def test_a_date_both_holiday_and_workday_is_a_configuration_error() -> None:
    """Contradictory overrides fail at construction, naming the date."""
    with pytest.raises(ValueError, match="2026-05-04"):
        WorkingCalendar(extra_holidays=[D(2026, 5, 4)], extra_workdays=[D(2026, 5, 4)])


def test_the_package_names_the_2026_tet_days() -> None:
    """The holidays package itself lists 16–20 February 2026 as Tết."""
    tet = {d for d, name in WorkingCalendar().package_holidays(2026).items() if "Lunar New Year" in name}
    assert tet == {D(2026, 2, d) for d in range(16, 21)}
