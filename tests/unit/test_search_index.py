"""The search index engines: one set of tests, each run on SQLite (a file of the test's own)
and on PostgreSQL (a database of the test's own on the session's real server), so both keep
and answer exactly the same; then what only one of them has (a second process on the SQLite
file, a PostgreSQL that stops and starts again), and where ``open_index`` puts the index."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iiif_shim.model.text import Line, PageText, Query, TextFormat, Word
from iiif_shim.search import engine, words
from iiif_shim.search.index import (
    Index,
    IndexedObject,
    IndexUnavailable,
    Namespaced,
    ObjectHead,
    StoredPage,
    open_index,
    sqlite_path,
)
from iiif_shim.search.postgres import PostgresIndex
from iiif_shim.search.settings import SearchSettings
from iiif_shim.search.sqlite import SCHEMA, SqliteIndex
from tests.postgres import Postgres, new_database
from tests.support import ROOT

ENGINES = ["sqlite", "postgres"]


@pytest.fixture(params=ENGINES)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Index]:
    made: Index
    if request.param == "sqlite":
        made = SqliteIndex(tmp_path / "index.sqlite")
    else:
        made = PostgresIndex(new_database(request.getfixturevalue("postgres_dsn")))
    yield made
    made.close()


def page(*lines: str, boxed: bool = True, fmt: TextFormat = TextFormat.ALTO) -> PageText:
    """A page of these lines: each word 10 px high on its line, 8 px a character wide."""
    made = []
    for row, text in enumerate(lines):
        x, ws = 0, []
        for word in text.split():
            box = (x, row * 12, 8 * len(word), 10) if boxed else None
            ws.append(Word(word, box))
            x += 8 * len(word) + 8
        made.append(Line(tuple(ws)))
    if not boxed:
        return PageText(tuple(made), TextFormat.PLAIN, 1000, 800)
    return PageText(tuple(made), fmt, 1000, 800)


def stored(canvas: int, *lines: str, stamp: str = "s1") -> StoredPage:
    return StoredPage(canvas, stamp, page(*lines))


def q(text: str) -> Query:
    return words.parse_query(text)


BOOK = [
    stored(0, "The river Zürich flows", "into the old town"),
    stored(1, "An old map of the town", "drawn by a river pilot"),
    stored(2, "Nothing here but a list", "of numbers 1848 and 1849"),
    stored(3, "self-made men of Zurich", "ZÜRICH again, straße Æsop"),
]


# --- keeping ---------------------------------------------------------------------------------


def test_store_state_touch_drop(index: Index) -> None:
    assert index.state("book") is None
    index.store("book", "sig-1", BOOK, checked=1000.5)
    assert index.state("book") == IndexedObject(
        "sig-1", 1000.5, {0: "s1", 1: "s1", 2: "s1", 3: "s1"}
    )
    index.touch("book", 2000.25)
    assert index.state("book") == IndexedObject(
        "sig-1", 2000.25, {0: "s1", 1: "s1", 2: "s1", 3: "s1"}
    )
    index.store("empty", "sig-0", [], checked=5.0)  # kept, with no pages
    assert index.state("empty") == IndexedObject("sig-0", 5.0, {})
    assert index.objects() == ["book", "empty"]
    assert index.size() > 0
    index.drop("book")
    assert index.state("book") is None
    assert index.matching("book", q("river")) == []
    assert index.pages("book", [0, 1]) == []
    assert index.terms("book", "", 1, 100) == []
    assert index.objects() == ["empty"]
    index.drop("never")  # nothing to forget: no error
    index.touch("never", 1.0)
    assert index.state("never") is None


def test_pages_round_trip_exactly(index: Index) -> None:
    floats = PageText(
        (Line((Word("Zürich", (1.5, 2.25, 30.125, 9.0)), Word("ﬁn", (40, 2, 10, 9)))),),
        TextFormat.HOCR,
        1234.5,
        987.0,
    )
    plain = page("plain text, no boxes", "second line", boxed=False)
    odd = PageText((Line(()), Line((Word("a\ud800b"),))), TextFormat.PLAIN, None, None)
    kept = [
        StoredPage(0, "a", floats),
        StoredPage(5, "b", plain),
        StoredPage(7, "c", odd),
        *BOOK[1:3],
    ]
    index.store("book", "sig", kept)
    back = index.pages("book", [7, 0, 5, 1, 2, 99])
    assert back == sorted(kept, key=lambda p: p.canvas)
    assert [type(c) for c in back[0].page.lines[0].words[1].box or ()] == [int] * 4
    assert index.pages("book", []) == []
    assert index.pages("other", [0]) == []


def test_head_and_packed_pages_with_a_generation_that_changes_with_them(index: Index) -> None:
    assert index.head("book") is None
    assert index.packed("book") == (0, [])
    index.store("book", "sig-1", BOOK, checked=10.0)
    head = index.head("book")
    assert head is not None and (head.signature, head.checked) == ("sig-1", 10.0)
    generation, pages = index.packed("book")
    assert generation == head.generation > 0
    assert [(p.canvas, p.stamp) for p in pages] == [(0, "s1"), (1, "s1"), (2, "s1"), (3, "s1")]
    assert [engine.unpack(p.body) for p in pages] == [p.page for p in BOOK]
    assert [p.canvas for p in index.packed("book", [3, 1, 9])[1]] == [1, 3]
    assert index.packed("book", []) == (0, [])
    index.touch("book", 20.0)  # looked at, nothing changed: the same generation
    assert index.head("book") == ObjectHead("sig-1", 20.0, head.generation)
    index.store("book", "sig-1", [stored(1, "changed")], checked=30.0)
    changed = index.head("book")
    assert changed is not None and changed.generation not in (0, head.generation)
    assert index.packed("book", [1])[0] == changed.generation
    index.store("book", "sig-1", [], removed=[2])
    removed = index.head("book")
    assert removed is not None and removed.generation not in (head.generation, changed.generation)
    index.drop("book")
    assert index.head("book") is None
    index.store("book", "sig-1", BOOK)  # made again: never a generation it had
    again = index.head("book")
    assert again is not None
    assert again.generation not in (head.generation, changed.generation, removed.generation)


# --- matching --------------------------------------------------------------------------------


def test_words_are_all_required(index: Index) -> None:
    index.store("book", "sig", BOOK)
    assert index.matching("book", q("river")) == [0, 1]
    assert index.matching("book", q("river town")) == [0, 1]
    assert index.matching("book", q("river map")) == [1]
    assert index.matching("book", q("river 1848")) == []
    assert index.matching("book", q("1849")) == [2]


def test_phrases_adjacent_in_order_across_lines(index: Index) -> None:
    index.store("book", "sig", BOOK)
    assert index.matching("book", q('"old town"')) == [0]
    assert index.matching("book", q('"town old"')) == []
    assert index.matching("book", q('"old map" town')) == [1]
    assert index.matching("book", q('"the old"')) == [0]  # "into the old town"
    assert index.matching("book", q('"flows into"')) == [0]  # over the line break
    assert index.matching("book", q('"town drawn"')) == [1]
    assert index.matching("book", q('"self made"')) == [3]
    assert index.matching("book", q("self-made")) == [3]  # one word, two terms: a phrase
    assert index.matching("book", q('"made self"')) == []


def test_prefixes(index: Index) -> None:
    index.store("book", "sig", BOOK)
    assert index.matching("book", q("riv*")) == [0, 1]
    assert index.matching("book", q("r*")) == [0, 1]
    assert index.matching("book", q("184*")) == [2]
    assert index.matching("book", q("zur* old")) == [0]
    assert index.matching("book", q("zurichs*")) == []
    assert index.matching("book", q("stras*")) == [3]


def test_diacritics_and_case_are_folded(index: Index) -> None:
    index.store("book", "sig", BOOK)
    for query in ("zurich", "ZURICH", "Zürich", "zürich", "ZÜRICH", "ZüR*"):
        assert index.matching("book", q(query)) == [0, 3], query
    assert index.matching("book", q("STRASSE")) == [3]
    assert index.matching("book", q("aesop")) == [3]


def test_each_term_is_one_token_whatever_its_script(index: Index) -> None:
    """A term as ``words.terms`` makes it is looked up whole: a Devanagari word keeps its
    vowel signs (marks, which a tokenizer of its own could take for separators), a CJK run is
    one term."""
    index.store("book", "sig", [stored(0, "हिन्दी 中文字 Ελληνικά"), stored(1, "ह न")])
    assert index.matching("book", q("हिन्दी")) == [0]
    assert index.matching("book", q("ह")) == [1]
    assert index.matching("book", q("हि*")) == [0]
    assert index.matching("book", q('"ह न"')) == [1]
    assert index.matching("book", q("中文字")) == [0]
    assert index.matching("book", q("中*")) == [0]
    assert index.matching("book", q("中")) == []
    assert index.matching("book", q("ΕΛΛΗΝΙΚΆ")) == [0]
    assert index.terms("book", "ह", 1, 10) == [("ह", 1), ("हिन्दी", 1)]  # as written


def test_empty_query_gives_every_canvas_with_text(index: Index) -> None:
    index.store("book", "sig", [*BOOK, StoredPage(9, "x", PageText((), TextFormat.ALTO, 10, 10))])
    assert index.matching("book", Query()) == [0, 1, 2, 3]


def test_only_the_asked_objects_canvases(index: Index) -> None:
    index.store("book", "sig", BOOK)
    index.store("other", "sig", [stored(0, "river of the other"), stored(6, "river again")])
    index.store("book-2", "sig", [stored(2, "river")])
    assert index.matching("book", q("river")) == [0, 1]
    assert index.matching("other", q("river")) == [0, 6]
    assert index.matching("book-2", q("river")) == [2]
    assert index.matching("nothing", q("river")) == []
    assert index.pages("other", [0, 1, 2, 6]) == [
        stored(0, "river of the other"),
        stored(6, "river again"),
    ]


def test_a_phrase_on_a_page_of_many_terms(index: Index) -> None:
    """PostgreSQL keeps 256 positions of a term and none past 16,383: a phrase there must
    still be found (the page is kept without positions and looked at)."""
    many_the = " ".join(["the cat"] * 300) + " the end"
    long_page = " ".join(f"w{n}" for n in range(17_000)) + " last words"
    index.store("big", "sig", [stored(0, many_the), stored(1, long_page), stored(2, "the end")])
    assert index.matching("big", q('"the end"')) == [0, 2]
    assert index.matching("big", q('"last words"')) == [1]
    assert index.matching("big", q('"w16999 last"')) == [1]
    # PostgreSQL looks for a phrase as all its words on a page kept without positions: the
    # hit finder looks for the phrase itself there (an engine may name more pages, never fewer)
    assert 2 not in index.matching("big", q('"end the"'))


def test_a_very_long_term_is_found(index: Index) -> None:
    word = "x" * 300 + "y"
    index.store("book", "sig", [stored(0, f"a {word} b"), stored(1, "x" * 300 + "z")])
    assert index.matching("book", q(word)) == [0, 1]  # cut to 255 characters: may match more
    assert index.matching("book", q(f'"a {word} b"')) == [0]
    assert index.terms("book", "xxx", 1, 10) == [("x" * engine.MAX_TERM, 2)]


HOSTILE = [
    'a"b',
    'NEAR("a" "b")',
    "near(",
    "'; DROP TABLE pages; --",
    "'; DROP TABLE iiif_search_pages; --",
    "*",
    "a*b",
    "a\x00b",
    "\x00",
    "",
    " ",
    "a b",
    "a & b",
    "a:*",
    "a <-> b",
    "!a",
    "\\",
    "'",
    "Zürich",  # not folded
    "x" * 10_000,
    "a\ud800",
]


@pytest.mark.parametrize("term", HOSTILE, ids=range(len(HOSTILE)))
def test_query_terms_that_are_no_terms_break_nothing(index: Index, term: str) -> None:
    """Terms reach an engine already folded (``words.parse_query``); one that is not a term
    at all (what only a bug could send) matches no page and breaks nothing."""
    index.store("book", "sig", [*BOOK, stored(4, "near and or not drop table pages a b x")])
    for query in (
        Query(words=(term,)),
        Query(phrases=(("near", term),)),
        Query(prefixes=(term,)) if term else Query(prefixes=("zzz",)),
        Query(words=("river",), phrases=((term, "a"),)),
    ):
        assert index.matching("book", query) == []
    index.terms("book", term, 1, 10)  # no error
    assert index.matching("book", q("river")) == [0, 1]
    assert index.objects() == ["book"]


def test_terms_that_are_keywords_of_the_engines(index: Index) -> None:
    index.store("book", "sig", [stored(0, "near and or not"), stored(1, "and not")])
    assert index.matching("book", Query(words=("near",))) == [0]
    assert index.matching("book", Query(words=("and", "not"))) == [0, 1]
    assert index.matching("book", Query(phrases=(("or", "not"),))) == [0]
    assert index.matching("book", Query(phrases=(("and", "not"),))) == [1]
    assert index.matching("book", Query(prefixes=("no",))) == [0, 1]


# --- terms (autocomplete) --------------------------------------------------------------------


def test_terms_by_prefix_with_counts(index: Index) -> None:
    index.store(
        "book",
        "sig",
        [
            stored(0, "river rivers River riverside rival", "Rivière"),
            stored(1, "river rivet rivets road", "rivet"),
        ],
    )
    index.store("other", "sig", [stored(0, "river river river riveted")])
    assert index.terms("book", "riv", 1, 100) == [
        ("rival", 1),
        ("river", 3),  # River is river
        ("rivers", 1),
        ("riverside", 1),
        ("rivet", 2),
        ("rivets", 1),
        ("Rivière", 1),  # riviere, as written
    ]
    assert index.terms("book", "riv", 2, 100) == [("river", 3), ("rivet", 2)]
    assert index.terms("book", "riv", 1, 2) == [("rival", 1), ("river", 3)]
    assert index.terms("book", "river", 1, 100) == [("river", 3), ("rivers", 1), ("riverside", 1)]
    assert index.terms("book", "", 1, 3) == [("rival", 1), ("river", 3), ("rivers", 1)]
    assert index.terms("book", "x", 1, 10) == []
    assert index.terms("book", "riv", 1, 0) == []
    assert index.terms("other", "riv", 1, 10) == [("river", 3), ("riveted", 1)]


def test_terms_as_written_most_often(index: Index) -> None:
    """Autocomplete offers each term as the object writes it most often (a tie: the term
    itself, then code point order); replacing and dropping pages takes their forms away."""
    index.store(
        "book",
        "sig",
        [
            stored(0, "Zürich, ZÜRICH (Zürich) zurich", "L'Eau Straße", stamp="a"),
            stored(1, "STRASSE strasse Straße. Æsop ½ self-Made", stamp="a"),
        ],
    )
    index.store("other", "sig", [stored(0, "ZURICH ZURICH Zürich")])
    assert index.terms("book", "zu", 1, 10) == [("Zürich", 4)]
    # ½ is 1 and 2 (no form); strasse and STRASSE once each, Straße twice
    assert index.terms("book", "", 1, 10) == [
        ("1", 1), ("2", 1), ("Æsop", 1), ("Eau", 1), ("L", 1), ("Made", 1), ("self", 1),
        ("Straße", 4), ("Zürich", 4),
    ]  # fmt: skip
    index.store("book", "sig", [stored(2, "Strasse STRASSE", stamp="a")])
    assert index.terms("book", "str", 1, 10) == [("STRASSE", 6)]  # 2 each: code point order
    assert index.terms("other", "z", 1, 10) == [("ZURICH", 3)]
    index.store("book", "sig", [stored(0, "zurich ZÜRICH zurich", stamp="b")], removed=[1, 2])
    assert index.terms("book", "", 1, 10) == [("zurich", 3)]
    index.store("book", "sig", [stored(0, "ZÜRICH", stamp="c")])
    assert index.terms("book", "zu", 1, 10) == [("ZÜRICH", 1)]
    index.drop("book")
    index.store("book", "sig", [stored(0, "zurich", stamp="d")])
    assert index.terms("book", "zu", 1, 10) == [("zurich", 1)]
    assert index.terms("other", "z", 1, 10) == [("ZURICH", 3)]


def test_terms_in_code_point_order(index: Index) -> None:
    index.store("book", "sig", [stored(0, "ab aZ a1 a\u00e9\u0301 a\u4e2d a\U0001f600x ab")])
    found = index.terms("book", "a", 1, 10)
    assert found == [  # the order of the terms (ae, az), each as written
        ("a", 1), ("a1", 1), ("ab", 2), ("a\u00e9\u0301", 1), ("aZ", 1), ("a\u4e2d", 1),
    ]  # fmt: skip


# --- replacing -------------------------------------------------------------------------------


def test_replacing_some_pages_keeps_the_others(index: Index) -> None:
    index.store("book", "sig-1", BOOK, checked=1.0)
    index.store(
        "book",
        "sig-2",
        [stored(1, "A new map of the harbour", stamp="s2")],
        removed=[2],
        checked=2.0,
    )
    assert index.state("book") == IndexedObject("sig-2", 2.0, {0: "s1", 1: "s2", 3: "s1"})
    assert index.matching("book", q("map")) == [1]
    assert index.matching("book", q("harbour")) == [1]
    assert index.matching("book", q("pilot")) == []  # the old page 1
    assert index.matching("book", q("1848")) == []  # removed
    assert index.matching("book", q("river")) == [0]
    assert index.pages("book", [0, 1, 2, 3]) == [
        BOOK[0],
        stored(1, "A new map of the harbour", stamp="s2"),
        BOOK[3],
    ]
    assert index.terms("book", "riv", 1, 10) == [("river", 1)]
    assert index.terms("book", "h", 1, 10) == [("harbour", 1)]  # "here" was on page 2
    assert index.terms("book", "18", 1, 10) == []
    assert index.terms("book", "th", 1, 10) == [("the", 3)]
    index.store("book", "sig-3", [], removed=[0, 1, 3, 42])
    assert index.state("book") == IndexedObject("sig-3", index.state("book").checked, {})  # type: ignore[union-attr]
    assert index.terms("book", "", 1, 100) == []
    assert index.matching("book", Query()) == []


def test_storing_the_same_pages_again_changes_nothing(index: Index) -> None:
    index.store("book", "sig", BOOK)
    before = index.terms("book", "", 1, 1000)
    index.store("book", "sig", BOOK)
    index.store("book", "sig", [BOOK[1], BOOK[1]])  # a canvas given twice: kept once
    assert index.terms("book", "", 1, 1000) == before
    assert index.pages("book", [0, 1, 2, 3]) == BOOK


# --- the same answers as a model of the contract ---------------------------------------------

VOCABULARY = ["a", "ab", "abc", "b", "ba", "c", "cab", "é", "Ab"]


def _model(pages: Sequence[StoredPage], query: Query) -> list[int]:
    found = []
    for kept in pages:
        terms = engine.page_terms(kept.page)
        if not kept.page.lines:
            continue
        ok = all(w in terms for w in query.words)
        ok = ok and all(
            any(tuple(terms[i : i + len(p)]) == p for i in range(len(terms))) for p in query.phrases
        )
        ok = ok and all(any(t.startswith(p) for t in terms) for p in query.prefixes)
        if ok:
            found.append(kept.canvas)
    return found


_lines = st.lists(st.lists(st.sampled_from(VOCABULARY), max_size=6).map(" ".join), max_size=3)
_terms = st.sampled_from([words.fold(v) for v in VOCABULARY])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(_lines, min_size=1, max_size=5),
    st.lists(_terms, max_size=2),
    st.lists(st.lists(_terms, min_size=2, max_size=3).map(tuple), max_size=2),
    st.lists(st.sampled_from(["a", "b", "c", "ab", "e"]), max_size=2),
)
def test_matching_is_the_contract(
    index: Index,
    texts: list[list[str]],
    ws: list[str],
    phrases: list[tuple[str, ...]],
    prefixes: list[str],
) -> None:
    pages = [stored(n, *lines) for n, lines in enumerate(texts)]
    index.store("model", "sig", pages, removed=range(5))
    query = Query(tuple(ws), tuple(phrases), tuple(prefixes))
    assert index.matching("model", query) == _model(pages, query)


# --- concurrency -----------------------------------------------------------------------------


def test_readers_while_a_writer_stores(index: Index) -> None:
    """8 threads: one stores the whole object again and again, with every page saying
    ``alpha`` or every page saying ``beta``; seven read meanwhile and always see one or the
    other, whole."""
    canvases = list(range(20))

    def version(word: str, n: int) -> list[StoredPage]:
        return [stored(c, f"{word} page {c}", f"round {n}", stamp=f"{word}{n}") for c in canvases]

    index.store("book", "alpha", version("alpha", 0))
    index.store("still", "sig", BOOK)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for n in range(1, 30):
                word = "beta" if n % 2 else "alpha"
                index.store("book", word, version(word, n))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            reads = 0
            while not done.is_set() or reads < 5:
                reads += 1
                alpha, beta = index.matching("book", q("alpha")), index.matching("book", q("beta"))
                assert alpha in ([], canvases) and beta in ([], canvases)
                seen = index.state("book")
                assert seen is not None and seen.signature in ("alpha", "beta")
                assert len({s[:4] for s in seen.stamps.values()}) == 1  # one version, whole
                counts = dict(index.terms("book", "", 1, 100))
                assert counts.get("page") == 20
                assert counts.get("alpha", 0) in (0, 20) and counts.get("beta", 0) in (0, 20)
                kept = index.pages("book", canvases)
                assert len({p.stamp[:4] for p in kept}) == 1 and len(kept) == 20
                assert index.matching("still", q("river")) == [0, 1]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(7)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert index.state("book").signature == "beta"  # type: ignore[union-attr]


_OTHER_PROCESS = """
import sys
from iiif_shim.model.text import Line, PageText, TextFormat, Word
from iiif_shim.search.index import StoredPage
from iiif_shim.search.sqlite import SqliteIndex

index = SqliteIndex(__import__("pathlib").Path(sys.argv[1]))
for n in range(40):
    text = PageText((Line((Word("elsewhere"), Word(f"n{n}"))),), TextFormat.PLAIN, 10, 10)
    index.store("theirs", f"v{n}", [StoredPage(c, f"s{n}", text) for c in range(10)])
print(index.state("theirs").signature)
"""


def test_a_second_process_writes_the_same_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    index = SqliteIndex(path)
    index.store("mine", "v0", BOOK)
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    for n in range(40):
        index.store("mine", f"v{n}", [stored(c, f"here {n}", stamp=f"s{n}") for c in range(10)])
        assert index.matching("mine", q("here")) == list(range(10))
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    assert out.strip() == "v39"
    assert index.objects() == ["mine", "theirs"]
    assert index.matching("theirs", q("elsewhere n39")) == list(range(10))
    assert index.terms("theirs", "n", 1, 100) == [("n39", 10)]
    assert index.state("mine").signature == "v39"  # type: ignore[union-attr]
    index.close()


def test_the_sqlite_full_text_index_holds_only_the_kept_pages(tmp_path: Path) -> None:
    """The full-text table keeps no copy of the terms: a page replaced or dropped is taken
    out with the terms it was indexed with, else its terms would stay in the index for ever
    (found by no query, as no page has that row any more, but taking room)."""
    path = tmp_path / "index.sqlite"
    index = SqliteIndex(path)
    index.store("book", "sig", BOOK)
    index.store("other", "sig", [stored(0, "pilot of the other"), stored(1, "gone soon")])
    index.store("book", "sig", [stored(1, "A new map", stamp="s2")], removed=[2])
    index.store("other", "sig", [], removed=[1])
    index.store("dropped", "sig", [stored(0, "never seen again")])
    index.drop("dropped")
    kept = [*index.pages("book", range(10)), *index.pages("other", range(10))]
    expected: dict[str, int] = {}
    for each in kept:
        for term in set(engine.page_terms(each.page)):
            expected[term] = expected.get(term, 0) + 1
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, page_terms, col)")
        found = dict(conn.execute("SELECT term, doc FROM temp.v WHERE col = 'terms'").fetchall())
        conn.execute("INSERT INTO page_terms (page_terms) VALUES ('integrity-check')")
    conn.close()
    assert found == expected
    index.close()


# --- failures --------------------------------------------------------------------------------


def test_a_stopped_postgres_is_unavailable_then_back() -> None:
    server = Postgres()
    index = PostgresIndex(server.dsn())
    try:
        index.store("book", "sig", BOOK)
        server.stop()
        for call in (lambda: index.matching("book", q("river")), lambda: index.state("book")):
            with pytest.raises(IndexUnavailable) as failed:
                call()
            said = f"{failed.value.public_text()} {failed.value.detail} {failed.value!r}"
            assert server.password not in said
            assert "PostgreSQL" in failed.value.public_text()
            assert f"127.0.0.1:{server.port}" in (failed.value.detail or "")
            assert failed.value.status == 503
        server.start()
        assert index.matching("book", q("river")) == [0, 1]
        assert index.state("book") is not None
        # a restart while the connections are idle: the first call after it is answered too
        server.stop()
        server.start()
        assert index.matching("book", q("river")) == [0, 1]
    finally:
        index.close()
        server.remove()


def test_a_postgres_that_never_answered(tmp_path: Path) -> None:
    from tests.support import free_port

    index = PostgresIndex(f"postgresql://shim:sekrit-pw@127.0.0.1:{free_port()}/x", timeout=2)
    with pytest.raises(IndexUnavailable) as failed:
        index.objects()
    assert "sekrit-pw" not in f"{failed.value.public_text()} {failed.value.detail}"
    index.close()


def _set_aside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if ".damaged-" in p.name)


def test_a_file_that_is_no_database_is_set_aside_and_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "index.sqlite"
    garbage = b"this is not an SQLite file at all" * 100
    path.write_bytes(garbage)
    index = SqliteIndex(path)
    with caplog.at_level(logging.WARNING, "iiif_shim"):
        assert index.objects() == []
    [aside] = _set_aside(path)
    assert (tmp_path / aside).read_bytes() == garbage
    assert any("damaged" in r.getMessage() and aside in r.getMessage() for r in caplog.records), (
        caplog.text
    )
    index.store("book", "sig", BOOK)
    assert index.matching("book", q("river")) == [0, 1]
    index.close()


def test_a_damaged_sqlite_file_is_set_aside_and_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file cut short (a disk full, a copy interrupted): SQLite says "database disk image is
    malformed" when it reads what is missing. The file is set aside with its WAL, logged, and
    a new one made: the call that found it answers from the new one, as every call after it;
    nothing is set aside again."""
    path = tmp_path / "index.sqlite"
    index = SqliteIndex(path)
    many = [stored(n, f"river page {n} word{n} of the book", "more text here") for n in range(800)]
    index.store("book", "sig", many)
    index.store("other", "sig", BOOK)
    index.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)
    again = SqliteIndex(path)
    with caplog.at_level(logging.WARNING, "iiif_shim"):
        found = again.matching("book", q("river"))  # reads pages that are not there
        assert found == [] or found == list(range(800))
        for _ in range(3):
            again.store("other", "sig", BOOK)
            again.packed("other")
            assert again.matching("other", q("river")) == [0, 1]
    assert len(_set_aside(path)) == 1, _set_aside(path)
    assert any("set aside" in r.getMessage() for r in caplog.records), caplog.text
    again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    conn.close()


def test_a_file_that_cannot_be_opened_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.mkdir()  # a folder where the file goes: "unable to open", nothing is damaged
    with pytest.raises(IndexUnavailable) as failed:
        SqliteIndex(path).objects()
    assert failed.value.status == 503
    assert str(path) in (failed.value.detail or "")
    assert path.is_dir() and _set_aside(path) == []


def test_the_sqlite_files_are_its_owners_alone(tmp_path: Path) -> None:
    """The index holds the text of restricted objects too: the folder made for it, the file,
    its WAL and shared memory are made for their owner alone, whatever the umask."""
    folder = tmp_path / "made" / "index"
    old = os.umask(0o022)
    try:
        index = open_index(SearchSettings(folder=folder), "x")
        index.store("book", "sig", BOOK)
        modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
        index.close()
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert modes == {"index.sqlite": 0o600, "index.sqlite-wal": 0o600, "index.sqlite-shm": 0o600}


def test_a_closed_index_is_unavailable(index: Index) -> None:
    index.store("book", "sig", BOOK)
    index.close()
    with pytest.raises(IndexUnavailable):
        index.objects()


def test_object_names_an_index_cannot_hold(index: Index) -> None:
    for name in ("a\x00b", "a\ud800"):
        assert index.state(name) is None
        assert index.matching(name, q("river")) == []
        assert index.pages(name, [0]) == []
        assert index.terms(name, "a", 1, 10) == []
        with pytest.raises(ValueError):
            index.store(name, "sig", BOOK)


# --- schema versions -------------------------------------------------------------------------


def test_an_sqlite_file_of_another_schema_is_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "index.sqlite"
    index = SqliteIndex(path)
    index.store("book", "sig", BOOK)
    index.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA + 1}")
    conn.close()
    with caplog.at_level(logging.WARNING, "iiif_shim"):
        again = SqliteIndex(path)
        assert again.objects() == []
    assert any(
        "made again" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records
    )
    again.store("book", "sig", BOOK)
    assert again.matching("book", q("river")) == [0, 1]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    again.close()


def test_a_postgres_database_of_another_schema_is_made_again(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    dsn = new_database(postgres_dsn)
    index = PostgresIndex(dsn)
    index.store("book", "sig", BOOK)
    index.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE iiif_search_schema SET version = version + 1")
    with caplog.at_level(logging.WARNING, "iiif_shim"):
        again = PostgresIndex(dsn)
        assert again.objects() == []
    assert any("made again" in r.getMessage() for r in caplog.records)
    again.store("book", "sig", BOOK)
    assert again.matching("book", q("river")) == [0, 1]
    again.close()


# --- open_index ------------------------------------------------------------------------------


def test_open_index_in_the_folder_given(tmp_path: Path) -> None:
    folder = tmp_path / "made" / "here"
    index = open_index(SearchSettings(folder=folder), "/etc/iiif-shim/config.yaml")
    assert isinstance(index, Namespaced) and isinstance(index.index, SqliteIndex)
    assert index.index.path == folder / "index.sqlite"
    index.store("book", "sig", BOOK)
    assert (folder / "index.sqlite").is_file()
    index.close()


def test_open_index_by_default_in_the_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    origin = "/etc/iiif-shim/config.yaml"
    name = hashlib.sha256(origin.encode()).hexdigest()[:12] + ".sqlite"
    expected = tmp_path / ".cache" / "iiif-shim" / "search" / name
    assert sqlite_path(SearchSettings(), origin) == expected
    index = open_index(SearchSettings(), origin)
    assert isinstance(index, Namespaced) and isinstance(index.index, SqliteIndex)
    assert index.index.path == expected
    assert expected.parent.is_dir()
    other = open_index(SearchSettings(), "embedded default")
    assert isinstance(other, Namespaced) and isinstance(other.index, SqliteIndex)
    assert other.index.path != expected
    index.close()
    other.close()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sqlite_path(SearchSettings(), origin).parent == tmp_path / "xdg" / "iiif-shim" / "search"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as XDG says
    assert sqlite_path(SearchSettings(), origin) == expected


def test_open_index_where_no_folder_can_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(IndexUnavailable):
        open_index(SearchSettings(folder=tmp_path / "file" / "below"), "x")


def test_open_index_on_postgres(postgres_dsn: str) -> None:
    dsn = new_database(postgres_dsn)
    index = open_index(SearchSettings(postgres=dsn), "x")
    assert isinstance(index, Namespaced) and isinstance(index.index, PostgresIndex)
    index.store("book", "sig", BOOK)
    assert index.matching("book", q("zurich")) == [0, 3]
    index.close()


def test_open_index_on_postgres_without_psycopg() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None  # as if the postgres extra were not installed\n"
        "from iiif_shim.search.index import open_index\n"
        "from iiif_shim.search.settings import SearchSettings\n"
        "try:\n"
        "    open_index(SearchSettings(postgres='postgresql://u:p@db/x'), 'x')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert "pip install 'iiif-shim[postgres]'" in done.stdout
