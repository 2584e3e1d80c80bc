"""search/words.py: the one folding of text (diacritics, case, ligatures, the Latin letters
NFKD leaves whole), the terms of a text, and how ``q`` is understood (phrases, prefixes, AND,
limits); whatever ``q`` is, the answer is a Query or a BadQuery (400), nothing else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iiif_shim.model.text import Query
from iiif_shim.search.words import (
    MAX_QUERY,
    MAX_TERMS,
    BadQuery,
    fold,
    parse_query,
    terms,
    word_terms,
)

QUICK = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# every code point, surrogates and controls included (a URL's bad UTF-8 decoded leniently)
any_text = st.text(st.characters(codec=None, categories=None), max_size=80)
# text a query is made of: quotes, stars, spaces and punctuation often
query_text = st.text(
    st.one_of(
        st.sampled_from(list("\"* -'():^~+|&\\\x00\t\nNEARORAND")),
        st.characters(codec=None, categories=None),
    ),
    max_size=120,
)


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Zürich", "zurich"),
        ("ZÜRICH", "zurich"),
        ("Zu\u0308rich", "zurich"),  # decomposed ü, as some OCR writes it
        ("Straße", "strasse"),
        ("STRASSE", "strasse"),
        ("ẞ", "ss"),
        ("ﬁnd", "find"),  # ligature
        ("Øresund", "oresund"),
        ("Łódź", "lodz"),
        ("Đorđe", "dorde"),
        ("Ħamrun", "hamrun"),
        ("I\u0131\u0130", "iii"),  # I, dotless i, dotted I
        ("Æsop Œuvre", "aesop oeuvre"),
        ("Þórður", "thordur"),
        ("Ça, élève, ñandú", "ca, eleve, nandu"),
        ("\uff21\uff11", "a1"),  # full width A1
        ("x²", "x2"),
        ("Ωμέγα", "ωμεγα"),
        ("Ёлка", "елка"),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_terms_are_the_folded_runs_of_letters_and_digits() -> None:
    assert terms("Zürich, 1848!") == ["zurich", "1848"]
    assert terms("self-made l'eau snake_case") == ["self", "made", "l", "eau", "snake", "case"]
    assert terms("the the") == ["the", "the"]
    assert terms("  ,;- ") == []
    # the vowel signs of Devanagari belong to the word (Python's \w does not count them)
    assert terms("हिन्दी भाषा") == ["हिनदी", "भाषा"]


@QUICK
@given(any_text)
def test_folding_is_done_once(text: str) -> None:
    assert fold(fold(text)) == fold(text)
    assert terms(fold(text)) == terms(text)
    for term in terms(text):
        assert terms(term) == [term]


@QUICK
@given(st.lists(any_text, max_size=8))
def test_terms_of_words_in_one_pass_are_those_of_each_word(texts: list[str]) -> None:
    assert word_terms(texts) == [(n, term) for n, text in enumerate(texts) for term in terms(text)]


@QUICK
@given(query_text)
def test_no_query_raises_anything_but_bad_query(q: str) -> None:
    try:
        query = parse_query(q)
    except BadQuery as error:
        assert error.status == 400
        assert error.public_text().startswith("q: ")
        return
    assert isinstance(query, Query)
    every = [*query.words, *query.prefixes, *(t for phrase in query.phrases for t in phrase)]
    assert len(every) <= MAX_TERMS
    for term in every:
        assert terms(term) == [term]  # folded terms only: no syntax reaches an engine
    assert all(len(phrase) > 1 for phrase in query.phrases)
    assert query.empty == (not q.strip())


@pytest.mark.parametrize(
    ("q", "words", "phrases", "prefixes"),
    [
        ("Zürich", ["zurich"], [], []),
        ("zurich Bern", ["zurich", "bern"], [], []),
        ('"old town" zurich', ["zurich"], [("old", "town")], []),
        ("Zür*", [], [], ["zur"]),
        ("zur**", [], [], ["zur"]),
        ("self-made", [], [("self", "made")], []),
        ("self-ma*", ["self"], [], ["ma"]),
        ('"old town', [], [("old", "town")], []),  # unbalanced: the rest is the phrase
        ('a "b c" d "e', ["a", "d", "e"], [("b", "c")], []),
        ('"one"', ["one"], [], []),
        ("zurich ZURICH Zürich", ["zurich"], [], []),
        ('"NEAR(', ["near"], [], []),
        ("'; DROP TABLE pages; --", ["drop", "table", "pages"], [], []),
        ("foo-*", ["foo"], [], []),
        ("a*b", [], [("a", "b")], []),
        ("title:zurich OR bern^2", ["or"], [("title", "zurich"), ("bern", "2")], []),
    ],
)
def test_parse_query(
    q: str, words: list[str], phrases: list[tuple[str, ...]], prefixes: list[str]
) -> None:
    query = parse_query(q)
    assert (list(query.words), list(query.phrases), list(query.prefixes)) == (
        words,
        phrases,
        prefixes,
    )


def test_an_empty_query_is_no_restriction() -> None:
    assert parse_query("") == Query()
    assert parse_query("  \t ").empty


def test_limits() -> None:
    assert parse_query("a " * (MAX_QUERY // 2)).words == ("a",)  # repeated words count once
    with pytest.raises(BadQuery, match=f"longer than {MAX_QUERY} characters"):
        parse_query("a" * (MAX_QUERY + 1))
    many = " ".join(f"w{i}" for i in range(MAX_TERMS))
    assert len(parse_query(many).words) == MAX_TERMS
    with pytest.raises(BadQuery, match=f"more than {MAX_TERMS} search terms"):
        parse_query(many + " one-more")
    with pytest.raises(BadQuery, match="no letter or digit"):
        parse_query('* "" -')
