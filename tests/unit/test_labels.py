"""Metadata labels and languages: every source type's `metadata` may give a display label or
one per language (today's forms unchanged), bad shapes are refused with a clear line, and the
manifests (3.0 language maps, 2.1 @value/@language) and the object page show them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iiif_shim.base.schema import Reader
from iiif_shim.presentation.documents import Builder, Picture, Urls, thumb_size
from iiif_shim.presentation.labels import Texts
from iiif_shim.presentation.pages import object_page
from iiif_shim.presentation.records import RecordError, build_record
from iiif_shim.presentation.settings import PresentationSettings
from iiif_shim.presentation.sources.settings import SOURCE_SETTINGS
from iiif_shim.presentation.viewers import ViewerSettings
from tests.presentation_checks import check_v2, check_v3

URLS = Urls(site="https://example.org", iiif="https://example.org/iiif")
DATE = {"en": "Date", "fr": "Date", "de": "Datum"}
CSV = {"type": "csv", "path": "x.csv"}
JSON = {"type": "json", "url": "http://cat.example.org/{object}", "objects": ["a"]}
CDM = {"type": "contentdm", "url": "https://cdm.example.org", "collection": "p1"}


def _plain(labelled: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
    """(label, column/path/nickname) with label maps as plain dicts."""
    return [(label if isinstance(label, str) else dict(label), at) for label, at in labelled]


def _read(data: dict[str, Any]) -> tuple[Any, list[tuple[str, str]]]:
    reader = Reader(Path("/tmp"))
    settings = reader.read(SOURCE_SETTINGS[data["type"]], data, "s")
    return settings, reader.problems


def test_csv_metadata_takes_column_names_and_labelled_columns() -> None:
    metadata = [
        "creator",
        {"column": "extent", "label": "Dimensions"},
        {"column": "date", "label": DATE},
    ]
    settings, problems = _read(
        {**CSV, "columns": {"object": "o", "image": "i", "metadata": metadata}}
    )
    assert problems == []
    assert _plain(settings.columns.labelled()) == [
        ("creator", "creator"), ("Dimensions", "extent"), (DATE, "date"),
    ]  # fmt: skip
    assert settings.columns.wanted()[-3:] == ["creator", "extent", "date"]
    assert ("metadata[1]", "extent") in settings.columns.named()


def test_mapping_forms_keep_the_key_as_label_or_take_their_own() -> None:
    fields = {
        "images": "$.i[*]",
        "metadata": {"Creator": "$.c", "date": {"path": "$.d", "label": DATE}},
    }
    settings, problems = _read({**JSON, "fields": fields})
    assert problems == []
    assert _plain(settings.fields.labelled()) == [
        ("Creator", "$.c"), (DATE, "$.d"),
    ]  # fmt: skip
    nicks = {"metadata": {"Creator": "creato", "date": {"field": "date", "label": DATE}}}
    settings, problems = _read({**CDM, "fields": nicks})
    assert problems == []
    assert _plain(settings.fields.labelled()) == [
        ("Creator", "creato"), (DATE, "date"),
    ]  # fmt: skip


def _csv(*metadata: Any) -> dict[str, Any]:
    return {**CSV, "columns": {"object": "o", "image": "i", "metadata": list(metadata)}}


@pytest.mark.parametrize(
    ("data", "where", "says"),
    [
        (_csv("a", 3), "s.columns.metadata[1]", "must be text, not a number"),
        (_csv({"label": "X"}), "s.columns.metadata[0].column", "required"),
        (_csv({"column": "a", "lable": "X"}), "s.columns.metadata[0].lable",
         "did you mean 'label'"),
        (_csv({"column": "a", "label": {"english": "X"}}), "s.columns.metadata[0].label",
         "'english' is not a language tag"),
        (_csv({"column": "a", "label": {}}), "s.columns.metadata[0].label",
         "give at least one language"),
        (_csv({"column": "a", "label": {"en": " "}}), "s.columns.metadata[0].label",
         "the en label is empty"),
        (_csv({"column": "a", "label": ["X"]}), "s.columns.metadata[0].label",
         "must be text, not a list"),
        ({**JSON, "fields": {"images": "$.i", "metadata": {"d": {"path": "$[", "label": "D"}}}},
         "s.fields.metadata.d.path", ""),
        ({**JSON, "fields": {"images": "$.i", "metadata": {"d": {"label": "D"}}}},
         "s.fields.metadata.d.path", "required"),
        ({**CDM, "fields": {"metadata": {"d": {"field": "no such!", "label": "D"}}}},
         "s.fields.metadata.d.field", "CONTENTdm field nickname"),
        ({**CDM, "fields": {"metadata": {"d": {"field": "date", "label": {"de-": "D"}}}}},
         "s.fields.metadata.d.label", "not a language tag"),
    ],
)  # fmt: skip
def test_check_config_refuses_bad_label_shapes(data: dict[str, Any], where: str, says: str) -> None:
    _, problems = _read(data)
    assert [key for key, _ in problems] == [where], problems
    assert says in problems[0][1]


def _record(metadata: list[tuple[Any, Any]]) -> Any:
    return build_record("book", "scans", {"nav_date": "1887"}, [{"image": "p1"}], metadata)


TITLE = {"en": "Title", "de": "Titel"}
PICTURES = [Picture("p1", 1200, 1600, (1200, 1600), thumb_size(1200, 1600, 256))]
RECORD = _record(
    [
        ("Creator", "Someone"),
        ("Dimensions", "3 pages"),
        (DATE, "1887"),
        ("Title", {"label": TITLE, "value": {"en": "A book", "de": "Ein Buch"}}),
    ]
)


def test_a_3_0_manifest_has_labels_in_each_language() -> None:
    doc = Builder(PresentationSettings(language="en"), URLS, "S").manifest(RECORD, PICTURES)
    assert check_v3(doc) == []
    assert doc["metadata"] == [
        {"label": {"en": ["Creator"]}, "value": {"en": ["Someone"]}},
        {"label": {"en": ["Dimensions"]}, "value": {"en": ["3 pages"]}},
        {"label": {"en": ["Date"], "fr": ["Date"], "de": ["Datum"]}, "value": {"en": ["1887"]}},
        {"label": {"en": ["Title"], "de": ["Titel"]},
         "value": {"en": ["A book"], "de": ["Ein Buch"]}},
    ]  # fmt: skip
    assert doc["navDate"] == "1887-01-01T00:00:00Z"


def test_a_2_1_manifest_has_value_language_lists() -> None:
    doc = Builder(PresentationSettings(language="de"), URLS, "S").manifest_2(RECORD, PICTURES)
    assert check_v2(doc) == []
    assert doc["metadata"][0] == {"label": "Creator", "value": "Someone"}  # as before
    assert doc["metadata"][2] == {
        "label": [{"@value": "Date", "@language": "en"}, {"@value": "Date", "@language": "fr"},
                  {"@value": "Datum", "@language": "de"}],
        "value": "1887",
    }  # fmt: skip
    assert doc["metadata"][3]["value"] == [
        {"@value": "A book", "@language": "en"}, {"@value": "Ein Buch", "@language": "de"},
    ]  # fmt: skip
    assert doc["navDate"] == "1887-01-01T00:00:00Z"


def test_the_object_page_shows_the_configured_language_else_the_first() -> None:
    def page(language: str) -> str:
        builder = Builder(PresentationSettings(language=language), URLS, "S")
        return object_page(RECORD, PICTURES, builder, ViewerSettings(), "S")

    german = page("de")
    assert "<th>Datum</th><td>1887</td>" in german and "<th>Titel</th><td>Ein Buch</td>" in german
    assert "<th>Dimensions</th>" in german  # a plain label is in the configured language
    english = page("en")
    assert "<th>Date</th><td>1887</td>" in english and "<th>Title</th>" in english
    french = page("fr")  # no French title: the first given, marked with its language
    assert '<th><span lang="en">Title</span></th><td><span lang="en">A book</span></td>' in french
    assert "<th>Date</th><td>1887</td>" in french
    assert "1887-01-01" not in english  # the year as the catalogue gave it


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (("X", {"label": "Y", "value": "v", "note": "n"}), "takes `label` and `value`"),
        (("X", {"english": "v"}), "'english' is not a language tag"),
        (("X", {"en": ["a", "list"]}), "must be text, not list"),
        (("X", {"label": {}, "value": "v"}), "the label is empty"),
        (("X", {"label": None, "value": "v"}), "required, and empty"),
        (({"en": " "}, "v"), "required, and empty"),
    ],
)
def test_bad_metadata_entries_are_record_errors(entry: tuple[Any, Any], says: str) -> None:
    with pytest.raises(RecordError, match=says) as raised:
        _record([entry])
    assert raised.value.field.startswith("metadata")


def test_texts_keep_their_order_and_pick_a_language() -> None:
    texts = Texts((("fr", "Date"), ("de", "Datum")))
    assert texts.pick("de") == ("de", "Datum") and texts.pick("en") == ("fr", "Date")
    assert Texts.of("Date").pick("de") == (None, "Date") and str(texts) == "Date"
    assert texts.v3("en") == {"fr": ["Date"], "de": ["Datum"]}
    assert Texts((("none", "42"),)).v2("en") == [{"@value": "42"}]
