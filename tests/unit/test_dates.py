"""Catalogue dates: read once, shown at the precision the catalogue gave, navDate a valid
xsd:dateTime in UTC; anything else is not a date."""

from __future__ import annotations

import re

import pytest

from iiif_shim.presentation.dates import NotADate, Precision, read_date

XSD = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


@pytest.mark.parametrize(
    ("given", "shown", "nav", "precision"),
    [
        ("1887", "1887", "1887-01-01T00:00:00Z", Precision.YEAR),
        (" 1887 ", "1887", "1887-01-01T00:00:00Z", Precision.YEAR),
        ("887", "887", "0887-01-01T00:00:00Z", Precision.YEAR),
        ("0887", "0887", "0887-01-01T00:00:00Z", Precision.YEAR),
        ("1887-05", "1887-05", "1887-05-01T00:00:00Z", Precision.MONTH),
        ("0950-12", "0950-12", "0950-12-01T00:00:00Z", Precision.MONTH),
        ("1887-05-17", "1887-05-17", "1887-05-17T00:00:00Z", Precision.DAY),
        ("1887-05-17T10:30", "1887-05-17T10:30", "1887-05-17T10:30:00Z", Precision.TIME),
        (
            "2001-02-03T04:05:06+02:00",
            "2001-02-03T04:05:06+02:00",
            "2001-02-03T02:05:06Z",
            Precision.TIME,
        ),
        ("2001-02-03T04:05:06Z", "2001-02-03T04:05:06Z", "2001-02-03T04:05:06Z", Precision.TIME),
        ("2001-02-03 04:05:06.789Z", "2001-02-03 04:05:06.789Z", "2001-02-03T04:05:06Z",
         Precision.TIME),
    ],
)  # fmt: skip
def test_a_date_is_shown_as_given_and_navigates_as_utc(
    given: str, shown: str, nav: str, precision: Precision
) -> None:
    when = read_date(given)
    assert (when.shown, when.nav, when.precision) == (shown, nav, precision)
    assert str(when) == shown
    assert XSD.fullmatch(when.nav)


@pytest.mark.parametrize(
    "given",
    [
        "19th century",
        "c. 1890",
        "1887?",
        "1887/05",
        "1887-13",
        "1887-02-30",
        "1887-5",
        "0",
        "-50",
        "18870",
        "",
        "0001-01-01T00:30:00+01:00",  # before the year 1 in UTC
        "1887-05-17T25:00",
        "1887-05-17Tnoon",
    ],
)
def test_anything_else_is_not_a_date(given: str) -> None:
    with pytest.raises(NotADate, match="is not a year, a date or a date-time"):
        read_date(given)
