"""Object records: every source's fields end in one checked, frozen record."""

from __future__ import annotations

import pytest

from iiif_shim.presentation.labels import Texts
from iiif_shim.presentation.records import (
    MAX_TEXT,
    RangeRecord,
    RecordError,
    build_record,
    check_name,
    nav_date,
    rights,
)


def _canvases(*images: str, ranges: tuple[str | None, ...] = ()) -> list[dict[str, object]]:
    return [
        {"image": image, "range": ranges[i] if i < len(ranges) else None}
        for i, image in enumerate(images)
    ]


def test_a_record_keeps_order_and_groups_consecutive_ranges() -> None:
    record = build_record(
        "book",
        "scans",
        {"label": "A book", "behavior": "paged", "viewing_direction": "right-to-left"},
        _canvases("a", "b", "c", "d", ranges=("Cover", "Text", "Text", "Cover")),
        [("Creator", "Someone"), ("Empty", "  "), ("Year", 1887)],
    )
    assert [c.image for c in record.canvases] == ["a", "b", "c", "d"]
    assert record.ranges == (
        RangeRecord("Cover", 0, 0),
        RangeRecord("Text", 1, 2),
        RangeRecord("Cover", 3, 3),
    )
    assert record.metadata == (  # blanks dropped
        (Texts.of("Creator"), Texts.of("Someone")),
        (Texts.of("Year"), Texts.of("1887")),
    )
    assert record.behavior == ("paged",) and record.viewing_direction == "right-to-left"


def test_the_label_falls_back_to_the_name() -> None:
    assert build_record("Brief an Händel", "s", {}, _canvases("x")).label == "Brief an Händel"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("1887", "1887-01-01T00:00:00Z"),
        ("1887-05", "1887-05-01T00:00:00Z"),
        ("1887-05-17", "1887-05-17T00:00:00Z"),
        ("2001-02-03T04:05:06+02:00", "2001-02-03T02:05:06Z"),
        ("2001-02-03T04:05:06Z", "2001-02-03T04:05:06Z"),
    ],
)
def test_nav_dates_become_utc_date_times(given: str, expected: str) -> None:
    when = nav_date(given)
    assert when is not None and when.nav == expected


@pytest.mark.parametrize(
    ("fields", "canvases", "field"),
    [
        ({"rights": "https://creativecommons.org/licenses/by/4.0/"}, ["a"], "rights"),
        ({"rights": "all rights reserved"}, ["a"], "rights"),
        # a valid prefix followed by what no URI holds
        ({"rights": 'http://creativecommons.org/licenses/by/4.0/"onmouseover='}, ["a"], "rights"),
        ({"rights": "http://rightsstatements.org/vocab/InC/1.0/<b>"}, ["a"], "rights"),
        ({"rights": "http://creativecommons.org/licenses/by/4.0/%zz"}, ["a"], "rights"),
        ({"behavior": "paged continuous"}, ["a"], "behavior"),
        ({"behavior": "facing-pages"}, ["a"], "behavior"),  # a canvas behavior
        ({"viewing_direction": "sideways"}, ["a"], "viewing_direction"),
        ({"see_also": "javascript:alert(1)"}, ["a"], "see_also"),
        ({"label": "x" * (MAX_TEXT + 1)}, ["a"], "label"),
        ({"label": {"en": "nested"}}, ["a"], "label"),
        ({}, [], "image"),
        ({}, [""], "image (canvas 1)"),
    ],
)
def test_fields_that_cannot_be_used_name_themselves(
    fields: dict[str, object], canvases: list[str], field: str
) -> None:
    with pytest.raises(RecordError) as err:
        build_record("obj", "src", fields, _canvases(*canvases))
    assert err.value.field == field


@pytest.mark.parametrize("name", ["", " padded", "tab\there", "nul\x00", "x" * 300])
def test_object_names_are_bounded_and_printable(name: str) -> None:
    assert check_name(name) is not None


@pytest.mark.parametrize("name", ["book", "a/b", "Brief an Händel", "ark:/13030/xt12t3"])
def test_object_names_may_hold_slashes_and_unicode(name: str) -> None:
    assert check_name(name) is None


@pytest.mark.parametrize(
    "uri",
    [
        "http://creativecommons.org/licenses/by-nc-sa/4.0/",
        "http://creativecommons.org/publicdomain/zero/1.0/",
        "http://rightsstatements.org/vocab/NoC-US/1.0/",
        "http://rightsstatements.org/vocab/InC/1.0/?language=en",
    ],
)
def test_rights_uris_in_use_are_kept(uri: str) -> None:
    assert rights(uri) == uri


@pytest.mark.parametrize("strict", [True, False])
def test_a_date_that_is_not_a_date_is_shown_as_written_without_nav_date(strict: bool) -> None:
    record = build_record("obj", "src", {"nav_date": "19th century"}, _canvases("a"), strict=strict)
    assert record.nav_date is None
    assert [(str(k), str(v)) for k, v in record.metadata] == [("Date", "19th century")]
    assert record.metadata[0][0] == Texts((("en", "Date"),))  # the label is English
    (note,) = record.skipped
    assert note.note and note.field == "nav_date" and "shown as metadata Date" in note.message
    shown = build_record("obj", "src", {"nav_date": "c. 1890"}, _canvases("a"),
                         [("Date", "c. 1890")], strict=strict)  # fmt: skip
    assert len(shown.metadata) == 1  # a column shown already is not shown twice


def test_rights_that_are_not_a_uri_are_shown_as_english_metadata_rights() -> None:
    record = build_record("obj", "src", {"rights": "All rights reserved"}, _canvases("a"),
                          strict=False)  # fmt: skip
    assert record.rights is None
    assert record.metadata == ((Texts((("en", "Rights"),)), Texts.of("All rights reserved")),)
    assert "shown as metadata Rights" in record.skipped[0].message
