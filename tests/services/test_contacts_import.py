"""CSV import: streaming, upserts, rejected rows with their line numbers."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, delete, func, select, text

from app import create_app
from app.extensions import db
from app.models import Contact, ContactList, ImportJob, ListMember, Transaction
from app.services import contacts
from app.services.contacts import ImportFileError, RowError, import_csv


def _csv(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode("utf-8"))


def _contact(address: str) -> Contact:
    found = contacts.find_contact(address)
    assert found is not None, address
    return found


def _count(model: type) -> int:
    return int(db.session.execute(select(func.count()).select_from(model)).scalar_one())


def _members(list_name: str) -> set[str]:
    stmt = (
        select(Contact.email_key)
        .join(ListMember, ListMember.contact_id == Contact.id)
        .join(ContactList, ContactList.id == ListMember.list_id)
        .where(ContactList.name == list_name)
    )
    return set(db.session.execute(stmt).scalars())


def test_import_creates_contacts_with_name_fields_and_list(app: Flask) -> None:
    result = import_csv(
        _csv(
            "Email,Name,City,Plan\n"
            "ada@example.org,Ada Lovelace,London,gold\n"
            "Grace@Example.org,Grace Hopper,,silver\n"
        ),
        list_name="Customers",
    )

    assert (result.created, result.updated, result.rejected) == (2, 0, 0)
    ada = _contact("ada@example.org")
    assert ada.name == "Ada Lovelace"
    assert ada.fields == {"City": "London", "Plan": "gold"}
    assert ada.valid and ada.invalid_reason == ""
    grace = _contact("grace@example.org")
    assert grace.email_key == "grace@example.org"
    assert grace.fields == {"Plan": "silver"}  # the empty City cell is not stored
    assert _members("Customers") == {"ada@example.org", "grace@example.org"}


def test_reimport_updates_without_duplicates_and_keeps_known_values(app: Flask) -> None:
    import_csv(_csv("email,name,city\nada@example.org,Ada,London\n"), list_name="A")
    result = import_csv(
        _csv("email,name,city,plan\nADA@example.org,,Paris,gold\nbob@example.org,Bob,,\n"),
        list_name="A",
    )

    assert (result.created, result.updated, result.rejected) == (1, 1, 0)
    assert _count(Contact) == 2
    ada = _contact("ada@example.org")
    assert ada.email == "ADA@example.org"  # the latest spelling is shown
    assert ada.name == "Ada"  # an empty cell does not erase the name
    assert ada.fields == {"city": "Paris", "plan": "gold"}
    assert contacts.list_member_count(contacts.get_list_by_name("A").id) == 2  # type: ignore[union-attr]


def test_same_address_twice_in_one_file_first_row_wins(app: Flask) -> None:
    result = import_csv(
        _csv("email,name\nada@example.org,First\nother@example.org,X\nAda@example.org,Second\n"),
        list_name=None,
    )

    assert (result.created, result.updated, result.rejected) == (2, 0, 1)
    assert result.errors == [RowError(4, "duplicate of line 2 (Ada@example.org)")]
    assert _count(Contact) == 2
    assert _contact("ada@example.org").name == "First"


def test_same_address_in_different_chunks_first_row_wins(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contacts, "CHUNK_SIZE", 2)
    result = import_csv(
        _csv(
            "email,name\na@example.org,First\nb@example.org,B\nc@example.org,C\n"
            "A@example.org,Last\nbad,X\nd@example.org,D\n"
        ),
        list_name=None,
    )

    assert (result.created, result.updated, result.rejected) == (4, 0, 2)
    # The repeat is found when its chunk is written, after line 6's problem: errors stay in
    # line order all the same.
    assert [(e.line, e.reason[:22]) for e in result.errors] == [
        (5, "duplicate of line 2 (A"), (6, "invalid email address "),
    ]
    assert _contact("a@example.org").name == "First"


def test_bad_rows_are_reported_with_their_physical_line_and_good_rows_import(app: Flask) -> None:
    text = (
        "email,name,last_transaction,note\n"  # line 1
        "ok1@example.org,One,2024-01-02,plain\n"  # line 2
        'ok2@example.org,Two,,"a note\nspanning\nthree lines"\n'  # lines 3-5
        "not-an-address,Bad,,x\n"  # line 6
        ",No address,,x\n"  # line 7
        "\n"  # line 8: blank, skipped
        "ok3@example.org,Three,yesterday,x\n"  # line 9: bad date
        "ok4@example.org,Four\n"  # line 10: too few columns
        '"multi@example.org","Multi\nLine",2024-05-01,"x,y",extra\n'  # lines 11-12: too many
        "ok5@example.org,Five,2024-03-04T10:00:00+02:00,last\n"  # line 13
    )
    result = import_csv(_csv(text), list_name=None)

    assert (result.created, result.updated, result.rejected) == (3, 0, 5)
    lines = [e.line for e in result.errors]
    assert lines == [6, 7, 9, 10, 11]
    reasons = {e.line: e.reason for e in result.errors}
    assert "invalid email address" in reasons[6]
    assert reasons[7] == "missing email address"
    assert "yesterday" in reasons[9] and "ISO date" in reasons[9]
    assert reasons[10] == "expected 4 columns, found 2"
    assert reasons[11] == "expected 4 columns, found 5"
    assert _contact("ok2@example.org").fields == {"note": "a note\nspanning\nthree lines"}
    assert _contact("ok5@example.org").last_transaction_at == datetime(2024, 3, 4, 8, tzinfo=UTC)
    assert contacts.find_contact("ok3@example.org") is None


def test_semicolon_file_with_bom_and_crlf(app: Flask) -> None:
    data = "\ufeffE-Mail;Name;Company\r\nada@example.org;Ada;Analytical, Ltd\r\n".encode()
    result = import_csv(io.BytesIO(data), list_name=None)

    assert (result.created, result.rejected) == (1, 0)
    ada = _contact("ada@example.org")
    assert ada.name == "Ada"
    assert ada.fields == {"Company": "Analytical, Ltd"}


def test_text_stream_with_bom_and_email_address_header(app: Flask) -> None:
    result = import_csv(
        io.StringIO("\ufeffEmail Address,name\nada@example.org,Ada\n"), list_name=None
    )
    assert result.created == 1
    assert _contact("ada@example.org").name == "Ada"


def test_per_row_list_column_and_file_list(app: Flask) -> None:
    import_csv(
        _csv("email,list\na@example.org,Gold\nb@example.org,Silver\nc@example.org,\n"),
        list_name="Everyone",
    )

    assert _members("Gold") == {"a@example.org"}
    assert _members("Silver") == {"b@example.org"}
    assert _members("Everyone") == {"a@example.org", "b@example.org", "c@example.org"}
    # Importing again adds no duplicate membership (ON CONFLICT DO NOTHING).
    import_csv(_csv("email,list\na@example.org,Gold\n"), list_name="Everyone")
    assert _count(ListMember) == 5
    assert contacts.find_contact("a@example.org").fields == {}  # type: ignore[union-attr]


def test_last_transaction_parsing_and_never_moving_back(app: Flask) -> None:
    import_csv(
        _csv(
            "email,last_transaction_date\n"
            "date@example.org,2024-06-01\n"
            "naive@example.org,2024-06-01T12:30:00\n"
            "zulu@example.org,2024-06-01T12:30:00Z\n"
            "none@example.org,\n"
        ),
        list_name=None,
    )
    assert _contact("date@example.org").last_transaction_at == datetime(2024, 6, 1, tzinfo=UTC)
    assert _contact("naive@example.org").last_transaction_at == datetime(
        2024, 6, 1, 12, 30, tzinfo=UTC
    )
    assert _contact("zulu@example.org").last_transaction_at == datetime(
        2024, 6, 1, 12, 30, tzinfo=UTC
    )
    assert _contact("none@example.org").last_transaction_at is None

    import_csv(
        _csv("email,last_transaction\ndate@example.org,2020-01-01\nnone@example.org,2023-02-03\n"),
        list_name=None,
    )
    db.session.expire_all()
    assert _contact("date@example.org").last_transaction_at == datetime(2024, 6, 1, tzinfo=UTC)
    assert _contact("none@example.org").last_transaction_at == datetime(2023, 2, 3, tzinfo=UTC)

    import_csv(_csv("email,last_transaction\ndate@example.org,2025-01-01\n"), list_name=None)
    db.session.expire_all()
    assert _contact("date@example.org").last_transaction_at == datetime(2025, 1, 1, tzinfo=UTC)


def test_csv_transactions_are_recorded_once(app: Flask) -> None:
    text = "email,last_transaction\nada@example.org,2024-06-01\n"
    import_csv(_csv(text), list_name=None)
    import_csv(_csv(text), list_name=None)

    ada = _contact("ada@example.org")
    history = contacts.contact_transactions(ada.id)
    assert [(t.occurred_at, t.source) for t in history] == [
        (datetime(2024, 6, 1, tzinfo=UTC), "csv")
    ]


def test_reimport_keeps_do_not_email_and_invalid_flags(app: Flask) -> None:
    import_csv(_csv("email\nada@example.org\n"), list_name=None)
    ada = _contact("ada@example.org")
    contacts.set_do_not_email(ada, "hard bounce")
    ada.valid = False
    ada.invalid_reason = "hard bounce"
    db.session.commit()

    import_csv(_csv("email,name\nada@example.org,Ada\n"), list_name=None)
    db.session.expire_all()
    ada = _contact("ada@example.org")
    assert ada.name == "Ada"
    assert ada.do_not_email and ada.do_not_email_reason == "hard bounce"
    assert not ada.valid and ada.invalid_reason == "hard bounce"


def test_missing_email_column_fails_the_whole_file(app: Flask) -> None:
    job = contacts.create_import_job("people.csv")
    with pytest.raises(ImportFileError) as caught:
        import_csv(_csv("name,city\nAda,London\n"), list_name="L", import_job=job)
    db.session.commit()  # as the import job does

    assert caught.value.line == 1
    assert "no email column" in str(caught.value)
    db.session.expire_all()
    stored = db.session.get(ImportJob, job.id)
    assert stored is not None and stored.status == "failed"
    assert stored.errors[0]["line"] == 1
    assert _count(Contact) == 0


def test_a_header_that_is_not_utf8_fails_the_file(app: Flask) -> None:
    with pytest.raises(ImportFileError, match="not UTF-8") as caught:
        import_csv(io.BytesIO("émail,name\nada@example.org,Zo\n".encode("latin-1")),
                   list_name=None)
    assert caught.value.line == 1


def test_utf16_file_is_refused_by_its_header(app: Flask) -> None:
    with pytest.raises(ImportFileError, match="NUL byte") as caught:
        import_csv(io.BytesIO("email\nada@example.org\n".encode("utf-16-le")), list_name=None)
    assert caught.value.line == 1


def test_import_job_counters_and_capped_errors(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contacts, "MAX_STORED_ERRORS", 3)
    monkeypatch.setattr(contacts, "CHUNK_SIZE", 2)
    rows = "".join(f"good{i}@example.org\nbad{i}\n" for i in range(5))
    job = contacts.create_import_job("mixed.csv")
    result = import_csv(_csv("email\n" + rows), list_name=None, import_job=job)
    db.session.commit()  # as the import job does

    assert (result.created, result.rejected) == (5, 5)
    assert [e.line for e in result.errors] == [3, 5, 7]  # only the first three are kept
    assert all(isinstance(e, RowError) and "invalid email" in e.reason for e in result.errors)
    db.session.expire_all()
    stored = db.session.get(ImportJob, job.id)
    assert stored is not None
    assert (stored.status, stored.created, stored.updated, stored.rejected) == ("done", 5, 0, 5)
    assert [e["line"] for e in stored.errors] == [3, 5, 7]
    assert stored.finished_at is not None


def test_hundred_thousand_rows_import(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,last_transaction,list,segment\n")
        for i in range(100_000):
            # Every 10,000th row is broken, to see rejections counted at scale.
            address = f"user{i}@example.org" if i % 10_000 else f"broken{i}"
            out.write(f"{address},User {i},2024-01-{1 + i % 28:02d},L{i % 3},s{i % 7}\n")

    with path.open("rb") as stream:  # its speed is bench/import_contacts.py's business
        result = import_csv(stream, list_name="Big")

    assert (result.created, result.updated, result.rejected) == (99_990, 0, 10)
    assert [e.line for e in result.errors] == [2 + i * 10_000 for i in range(10)]
    assert _count(Contact) == 99_990
    assert contacts.list_member_count(contacts.get_list_by_name("Big").id) == 99_990  # type: ignore[union-attr]
    counts = {lst.name: n for lst, n in contacts.lists_with_counts()}
    assert counts["L1"] + counts["L2"] + counts["L0"] == 99_990
    assert _contact("user99999@example.org").fields == {"segment": f"s{99_999 % 7}"}


def _soon() -> str:
    """A date-time half a day ahead: within the clock-skew allowance."""
    return (datetime.now(UTC) + timedelta(hours=12)).isoformat(timespec="seconds")


# (file bytes, created, rejected, [(line, words in the reason)]) -- rows after a bad one import.
STRICT_CASES = {
    "unterminated quote mid-file, closed by nothing": (
        b'email,name\n'  # 1
        b'a@example.org,A\n'  # 2
        b'b@example.org,"Bob\n'  # 3: the quote is never closed
        b'c@example.org,C\n'  # 4
        b'd@example.org,D\n',  # 5
        3, 1, [(3, "unterminated quote: a quoted field is not closed before the end of the file")],
    ),
    "unterminated quote closed by a later row's quote": (
        b'email,name,note\n'  # 1
        b'a@example.org,"Ann,x\n'  # 2: reads on into line 3, where a quote is followed by B
        b'b@example.org,"Bob",y\n'  # 3
        b'c@example.org,Cy,z\n',  # 4
        2, 1, [(2, "broken quoting")],
    ),
    "quote followed by text": (
        b'email,name\n'
        b'a@example.org,"Ann"ie\n'  # 2
        b'b@example.org,Bob\n',
        1, 1, [(2, "broken quoting")],
    ),
    "NUL byte": (
        b'email,name\n'
        b'a@example.org,A\n'
        b'b@example.org,B\x00ob\n'  # 3
        b'c@example.org,C\n',
        2, 1, [(3, "the line holds a NUL byte (at position 16 of the line)")],
    ),
    "NUL byte inside a quoted field": (
        b'email,note\n'
        b'a@example.org,"one\n'  # 2
        b'tw\x00o"\n'  # 3
        b'c@example.org,C\n',  # 4
        1, 2, [(2, "line 3, inside this row's quoted field, holds a NUL byte"),
               (3, "the line holds a NUL byte")],
    ),
    "invalid UTF-8 on line 3": (
        b'email,name\n'
        b'a@example.org,A\n'
        b'b@example.org,Zo\xe9\n'  # 3: Latin-1
        b'c@example.org,Zo\xc3\xab\n',  # 4: UTF-8
        2, 1, [(3, "the line is not UTF-8 text (byte 0xe9 at position 17 of the line)")],
    ),
    "duplicates: the first row wins": (
        b'email,name\n'
        b'a@example.org,A\n'
        b'b@example.org,B\n'
        b'A@EXAMPLE.org,A2\n'  # 4
        b'a@example.org,A3\n',  # 5
        2, 2, [(4, "duplicate of line 2 (A@example.org)"), (5, "duplicate of line 2")],
    ),
    "future transaction date": (
        b'email,last_transaction\n'
        b'a@example.org,2024-01-01\n'
        b'b@example.org,2030-01-01\n'  # 3
        + f"c@example.org,{_soon()}\n".encode(),  # within the skew allowance
        2, 1, [(3, "last_transaction '2030-01-01' is in the future")],
    ),
    "embedded newlines in a quoted field": (
        b'email,name,note\n'
        b'a@example.org,A,"one\n'  # 2-4
        b'two\n'
        b'three"\n'
        b'bad,B,x\n'  # 5
        b'b@example.org,B,x\n',
        2, 1, [(5, "invalid email address")],
    ),
    "BOM and CRLF": (
        b'\xef\xbb\xbfemail,name\r\n'
        b'a@example.org,A\r\n'
        b'bad,B\r\n'  # 3
        b'c@example.org,"C\r\nD"\r\n'  # 4-5
        b'd@example.org,D\r\n',  # 6
        3, 1, [(3, "invalid email address")],
    ),
    "CR line ends": (
        b'email,name\ra@example.org,A\rb@example.org\rc@example.org,C\r',
        2, 1, [(3, "expected 2 columns, found 1")],
    ),
}


@pytest.mark.parametrize("case", list(STRICT_CASES), ids=list(STRICT_CASES))
def test_strict_import_rejects_by_line_and_loses_nothing(app: Flask, case: str) -> None:
    _check_strict_case(case)


def _check_strict_case(case: str) -> None:
    data, created, rejected, errors = STRICT_CASES[case]
    result = import_csv(io.BytesIO(data), list_name="Strict")

    assert (result.created, result.updated, result.rejected) == (created, 0, rejected)
    assert [e.line for e in result.errors] == [line for line, _ in errors]
    for error, (_, words) in zip(result.errors, errors, strict=True):
        assert words in error.reason, (error.reason, words)
    assert _count(Contact) == created
    assert contacts.list_member_count(contacts.get_list_by_name("Strict").id) == created  # type: ignore[union-attr]


def test_strict_cases_keep_the_right_values(app: Flask) -> None:
    import_csv(io.BytesIO(STRICT_CASES["invalid UTF-8 on line 3"][0]), list_name=None)
    assert _contact("c@example.org").name == "Zoë"
    assert contacts.find_contact("b@example.org") is None
    import_csv(io.BytesIO(STRICT_CASES["embedded newlines in a quoted field"][0]), list_name=None)
    assert _contact("a@example.org").fields == {"note": "one\ntwo\nthree"}
    import_csv(io.BytesIO(STRICT_CASES["BOM and CRLF"][0]), list_name=None)
    assert _contact("c@example.org").name == "C\r\nD"
    import_csv(io.BytesIO(STRICT_CASES["duplicates: the first row wins"][0]), list_name=None)
    assert _contact("a@example.org").name == "A"


def test_unterminated_quote_gives_up_after_max_record_lines(app: Flask) -> None:
    rows = "".join(f"u{i}@example.org,U{i}\n" for i in range(150))
    text = 'email,name\na@example.org,A\nb@example.org,"Bob\n' + rows  # quote opened on line 3
    result = import_csv(_csv(text), list_name=None)

    assert (result.created, result.rejected) == (151, 1)
    assert result.errors == [RowError(3, "unterminated quote: a quoted field is not closed within"
                                         " 100 lines (the lines after this one are read as rows"
                                         " of their own)")]
    assert _contact("u149@example.org").name == "U149"


def test_text_stream_with_nul_and_an_overlong_line(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contacts, "MAX_LINE_CHARS", 50)
    text = ("email,name\na@example.org,A\x00\nb@example.org," + "B" * 120 + "\n"
            "c@example.org,C\n")
    result = import_csv(io.StringIO(text), list_name=None)

    assert (result.created, result.rejected) == (1, 2)
    assert [(e.line, e.reason) for e in result.errors] == [
        (2, "the line holds a NUL byte (at position 16 of the line)"),
        (3, "the line is longer than 50 characters"),
    ]


def test_a_field_over_the_csv_limit_is_one_rejected_row(app: Flask) -> None:
    text = 'email,note\na@example.org,"' + "x" * 200_000 + '"\nb@example.org,ok\n'
    result = import_csv(_csv(text), list_name=None)

    assert (result.created, result.rejected) == (1, 1)
    assert result.errors[0].line == 2
    assert "longer than 131,072 characters" in result.errors[0].reason


@pytest.fixture
def pg_app(tmp_path: Path) -> Iterator[Flask]:
    """An app on a fresh database of the throwaway PostgreSQL cluster (scripts/test starts it)."""
    base = os.environ.get("SENDBOARD_TEST_PG_URL")
    if not base:
        pytest.skip("SENDBOARD_TEST_PG_URL is not set (scripts/test starts a PostgreSQL cluster)")
    name = f"sb_contacts_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    app = create_app(
        {
            "TESTING": True,
            "INSTANCE_DIR": str(tmp_path),
            "SQLALCHEMY_DATABASE_URI": base.rsplit("/", 1)[0] + f"/{name}",
            "SQLALCHEMY_ENGINE_OPTIONS": {},
        }
    )
    try:
        with app.app_context():
            db.create_all()
            yield app
            db.session.remove()
            db.engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_import_upserts_on_postgresql(pg_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contacts, "CHUNK_SIZE", 2)
    first = import_csv(
        _csv(
            "email,name,city,last_transaction,list\n"
            "ada@example.org,Ada,London,2024-06-01,Gold\n"
            "bob@example.org,Bob,,,\n"
            "ADA@example.org,,Paris,2024-01-01,Gold\n"  # next chunk: a repeat, rejected
            "bad,X,,,\n"
        ),
        list_name="All",
    )
    assert (first.created, first.updated, first.rejected) == (2, 0, 2)
    assert [e.line for e in first.errors] == [4, 5]  # line 4 repeats line 2's address
    second = import_csv(
        _csv("email;plan;city;last_transaction\nada@example.org;gold;Paris;2025-02-03\n"),
        list_name="All",
    )
    assert (second.created, second.updated) == (0, 1)

    db.session.expire_all()
    ada = _contact("ada@example.org")
    assert ada.name == "Ada"
    assert ada.fields == {"city": "Paris", "plan": "gold"}
    assert ada.last_transaction_at == datetime(2025, 2, 3, tzinfo=UTC)
    assert _members("All") == {"ada@example.org", "bob@example.org"}
    assert _members("Gold") == {"ada@example.org"}
    assert _count(Contact) == 2
    contacts.record_transaction("bob@example.org", datetime(2026, 1, 1, tzinfo=UTC))
    assert _contact("bob@example.org").last_transaction_at == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.postgres
def test_strict_cases_on_postgresql(pg_app: Flask) -> None:
    """The same files on PostgreSQL: a NUL byte never reaches the database (which refuses it)."""
    for case in STRICT_CASES:
        _check_strict_case(case)
        for model in (Transaction, ListMember, Contact):
            db.session.execute(delete(model))
        db.session.commit()
