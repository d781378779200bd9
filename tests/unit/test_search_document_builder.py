"""The search documents mailbridge builds itself (`mailbridge.store.search_document`): what
it accepts and the literal it writes.  That the literals equal the server's own documents
is held by tests/integration/test_search_document.py against Postgres."""

from __future__ import annotations

import time

import pytest

from mailbridge.store.search_document import MAX_REPEATS, MAX_TEXT, MAX_TOKEN, MAX_TOKENS, document_literal


def test_tokens_take_positions_in_the_functions_order():
    literal = document_literal("Re: Q3 report", "Bob Jones", "bob.jones@corp.example.org", ("al@x.io",), ())
    assert literal == (
        "'re':1 'q3':2 'report':3 'bob':4 'jones':5 'bob.jones@corp.example.org':6 'al@x.io':7 "
        "'bob.jones':8 'corp.example.org':9 'al':10 'x.io':11 'bob':12 'jones':13 'corp':14 'example':15 "
        "'org':16 'al':17 'x':18 'io':19")


def test_nothing_to_index_is_an_empty_document():
    assert document_literal(None, None, None, (), ()) == ""
    assert document_literal("", "", None, (), ()) == ""
    assert document_literal("!!! ???", None, None, (), ()) == ""


@pytest.mark.parametrize("subject", [
    "Re: Meeting at 3pm.", "Build #73076 still failing", "a - b", "end.", "trailing-",
    "tab\tseparated", "Erin O'Neil", "[team] (draft) {x} `y` |z| ^ 100% $5 *=", "e5 5e 12e 0x1f",
])
def test_plain_punctuation_is_accepted(subject):
    assert document_literal(subject, None, None, (), ()) is not None


@pytest.mark.parametrize("subject", [
    "e.g. this", "v1.2.3", "3.14", "foo-bar", "report-2", "-5", "a.b", "x/y", "a&amp;b", "<b>x</b>",
    "~home", "C++", "snake_case", "mail me@x.org", "1e5", "10E3x", "Café", "naïve", "a\x00b", "a\nb",
    "a..b", "a --b", "trailing-.",
])
def test_what_the_parser_reads_otherwise_is_left_to_postgres(subject):
    # a host, a file, a number, a hyphenated word, a tag, an entity, non-ASCII, a line break,
    # or a '-'/'.' not followed by a blank or the end: the server builds that document
    assert document_literal(subject, None, None, (), ()) is None


@pytest.mark.parametrize("address", [
    "bob@example.org", "bob.jones@corp.example.org", "user1@mail2.example-corp.io", "ab.cd.ef@x-1y.z9.com",
])
def test_plain_addresses_are_accepted(address):
    assert document_literal(None, None, address, (), ()) is not None


@pytest.mark.parametrize("address", [
    "Bob@example.org", "bob+tag@example.org", "bob_jones@example.org", "bob-jones@example.org",
    "b.jones@example.org", "bob.jones2@example.org", "1bob@example.org", "bob@example.c", "bob@1example.org",
    "bob@example.o2", "bob@-example.org", "bob@example", "bob", "bob@@example.org", "bøb@example.org",
    "bob@example.org ", "bob@exam ple.org",
])
def test_other_addresses_are_left_to_postgres(address):
    assert document_literal(None, None, None, (address,), ()) is None
    assert document_literal("fine", None, "ok@example.org", (), (address,)) is None


def test_limits_leave_big_documents_to_postgres():
    assert document_literal("x" * MAX_TOKEN, None, None, (), ()) is not None
    assert document_literal("x" * (MAX_TOKEN + 1), None, None, (), ()) is None
    words = " ".join(f"w{i}" for i in range(MAX_TOKENS))
    assert document_literal(words, None, None, (), ()) is not None
    assert document_literal(words + " one", None, None, (), ()) is None
    assert document_literal(" ".join(["same"] * MAX_REPEATS), None, None, (), ()) is not None
    assert document_literal(" ".join(["same"] * (MAX_REPEATS + 1)), None, None, (), ()) is None
    assert document_literal("a " * (MAX_TEXT // 2) + "!", None, None, (), ()) is None


def test_hostile_input_is_refused_in_linear_time():
    started = time.perf_counter()
    assert document_literal("a." * 100_000 + "-", "-" * 100_000 + "x", None, (), ()) is None
    assert document_literal(None, None, "a" * 50_000 + "@" + "b." * 50_000 + "c", (), ()) is None
    many = tuple("ab.cd@" + "e-" * 500 + "f.gh" for _ in range(2_000))
    assert document_literal(None, None, None, many + ("bad",), ()) is None
    assert document_literal("1" * 100_000 + "e", None, None, (), ()) is None
    assert time.perf_counter() - started < 2.0
