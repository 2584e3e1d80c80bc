"""Dates as catalogues write them: read once, kept at the precision given.

A catalogue's date is a year (``1887``), a year and month (``1887-05``), a day
(``1887-05-17``) or a date-time (``1887-05-17T10:30:00+01:00``; without a zone, UTC).
:func:`read_date` keeps both what people are shown (:attr:`CatalogueDate.shown`: the year as a
year, the month as a month, the day as a day, a date-time as written: never a precision the
catalogue did not give) and what a manifest's ``navDate`` needs (:attr:`CatalogueDate.nav`: an
xsd:dateTime in UTC, the first instant of the year, month or day). Anything else (``19th
century``, ``c. 1890``) is not a date: :class:`NotADate`, for the caller to decide.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass

_YEAR_RE = re.compile(r"\d{1,4}")
_MONTH_RE = re.compile(r"(\d{4})-(\d{2})")
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*")


class NotADate(ValueError):
    """A text that is not a year, a year and month, a day or a date-time (ISO 8601)."""


class Precision(enum.Enum):
    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    TIME = "date-time"


@dataclass(frozen=True)
class CatalogueDate:
    """A date at the precision its catalogue gave: ``shown`` to people, ``nav`` to viewers."""

    shown: str  # 1887, 1887-05, 1887-05-17, or the date-time as written
    nav: str  # xsd:dateTime in UTC, e.g. 1887-01-01T00:00:00Z
    precision: Precision

    def __str__(self) -> str:
        return self.shown


def read_date(value: str) -> CatalogueDate:
    """The date ``value`` (surrounding spaces ignored) says, or :class:`NotADate`."""
    v = value.strip()
    try:
        if _YEAR_RE.fullmatch(v):
            year = int(v)
            if year < 1:
                raise ValueError
            return CatalogueDate(v, f"{year:04d}-01-01T00:00:00Z", Precision.YEAR)
        if m := _MONTH_RE.fullmatch(v):
            when = dt.datetime(int(m[1]), int(m[2]), 1, tzinfo=dt.UTC)
            return CatalogueDate(v, _nav(when), Precision.MONTH)
        if _DAY_RE.fullmatch(v):
            return CatalogueDate(v, _nav(dt.datetime.fromisoformat(v)), Precision.DAY)
        if _TIME_RE.fullmatch(v):
            when = dt.datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
            return CatalogueDate(v, _nav(when), Precision.TIME)
    except (ValueError, OverflowError):
        pass
    raise NotADate(f"{v[:40]!r} is not a year, a date or a date-time (ISO 8601)")


def _nav(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    # isoformat writes every year with 4 digits (strftime's %Y may not)
    utc = when.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None)
    return f"{utc.isoformat()}Z"
