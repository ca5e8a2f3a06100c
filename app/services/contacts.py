"""Contacts: CSV import, transactions, do-not-email flags, type opt-outs and lists.

The import streams its file: rows are parsed one at a time and written in chunks with set-based
upserts keyed on `email_key`, so a million-row file costs the same memory as a thousand-row one and
re-importing a file updates contacts instead of duplicating them. The SQL is portable between
SQLite and PostgreSQL (both support INSERT ... ON CONFLICT and RETURNING).

Nothing here commits but the import's chunks: the caller (a view, a command, a job) commits once
its call returned (docs/ARCHITECTURE.md, Layering).
"""

from __future__ import annotations

import bisect
import csv
import io
import sqlite3
import typing
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, NoReturn

from sqlalchemy import and_, case, cast, delete, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from app.domain.eligibility import address_key, address_problem, normalize_address
from app.domain.segments import SegmentError
from app.domain.transactions import future_date_problem, latest_transaction_time
from app.domain.windows import is_zone
from app.extensions import db
from app.models import (
    Contact,
    ContactList,
    EmailType,
    ImportJob,
    ListMember,
    Transaction,
    TypeOptOut,
    utcnow,
)
from app.services import conversions, suppressions

CHUNK_SIZE = 1_000
# A quoted field may hold line breaks, but one row may span at most this many physical lines: a
# quote that is never closed costs one rejected row, not the rest of the file.
MAX_RECORD_LINES = 100
MAX_LINE_CHARS = 1_000_000
# Enough to show someone what is wrong with their file; the counters still count every rejection.
MAX_STORED_ERRORS = 1_000

EMAIL_HEADERS = {"email", "e-mail", "email address", "e-mail address", "email_address", "mail"}
NAME_HEADERS = {"name", "full name", "full_name"}
TRANSACTION_HEADERS = {
    "last_transaction",
    "last_transaction_date",
    "last transaction",
    "last transaction date",
}
LIST_HEADERS = {"list", "list name", "list_name"}
ZONE_HEADERS = {"time_zone", "time zone", "timezone"}  # IANA name, for delivery at local time
SEARCH_FLAGS = ("do_not_email", "invalid", "inactive")


class ContactError(ValueError):
    """A contact operation was refused; the message says why, in the user's words."""


class ImportFileError(ContactError):
    """The file as a whole cannot be imported (no email column, not UTF-8, broken quoting)."""

    def __init__(self, message: str, *, line: int) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class RowError:
    """A rejected row: the physical line where its record starts, and why."""

    line: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason}


@dataclass
class ImportResult:
    """What an import did. `errors` holds at most MAX_STORED_ERRORS rows; `rejected` counts all."""

    created: int = 0
    updated: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.created + self.updated + self.rejected

    def reject(self, line: int, reason: str) -> None:
        """Count a rejected row; `errors` keeps the MAX_STORED_ERRORS first ones by line (a
        repeated address is found when its chunk is written, after later lines' problems)."""
        self.rejected += 1
        error = RowError(line, reason)
        if len(self.errors) >= MAX_STORED_ERRORS:
            if line >= self.errors[-1].line:
                return
            self.errors.pop()
        bisect.insort(self.errors, error, key=lambda e: e.line)


@dataclass
class _Row:
    """One valid CSV row, ready to upsert."""

    email: str
    key: str
    name: str
    fields: dict[str, str]
    last_transaction: datetime | None
    lists: set[str]
    line: int  # where the row starts in the file
    time_zone: str = ""  # blank: keep the known one (or the organisation's zone)


@dataclass(frozen=True)
class _Columns:
    email: int
    name: int | None
    last_transaction: int | None
    list: int | None
    extra: tuple[tuple[int, str], ...]
    count: int
    time_zone: int | None = None


# --------------------------------------------------------------------------------------------
# CSV import
# --------------------------------------------------------------------------------------------


def import_csv(
    stream: IO[bytes] | IO[str],
    *,
    list_name: str | None,
    source: str = "csv",
    import_job: ImportJob | None = None,
) -> ImportResult:
    """Import contacts from a CSV file object (binary or text), streaming it in chunks.

    Columns: `email` (required; also "e-mail", "email address"), `name`, `last_transaction`
    (ISO date or datetime; also "last_transaction_date"), `list` (a per-row list name),
    `time_zone` (an IANA zone such as Europe/Berlin, for delivery at local time); any other
    column is kept in the contact's `fields`. The delimiter (comma or semicolon) is taken from the
    header line. Rows are rejected, with the physical line number where they start, for a missing
    or invalid address, a bad or future date, the wrong number of columns, broken quoting, a NUL
    byte, text that is not UTF-8, or an address an earlier row of the file already has (the
    first row wins: "duplicate of line N"); every other row imports. See `_records` for how
    reading goes on after a row whose quoting is broken: no later row is ever lost.

    Contacts are identified by their lower-cased address, so a re-import updates them. Empty
    cells never erase what is already known; `last_transaction_at` only ever moves forward.
    Every row with every contact is added to `list_name` (created if missing). Each chunk is
    committed and, when given, `import_job`'s counters are updated, so progress is visible while
    the import runs. Only the header line can fail the whole file (ImportFileError). The import
    job's final state (done, or failed with the reason) is left for the caller to commit.
    """
    result = ImportResult()
    lists = _ListCache()
    file_list = list_name.strip() if list_name and list_name.strip() else None
    latest = latest_transaction_time(datetime.now(UTC))
    seen = _SeenAddresses()
    try:
        lines = _PhysicalLines(stream)
        first = lines.read()
        if first is None or (isinstance(first[1], str) and not first[1].strip()):
            raise ImportFileError("the file is empty: expected a header line", line=1)
        if isinstance(first[1], _BadLine):
            raise ImportFileError(f"the header line {first[1].reason}", line=1)
        header_line = first[1]
        delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
        records = _records(lines, delimiter, first)
        _, header, problem = next(records)
        if problem is not None:
            raise ImportFileError(f"the header line cannot be read: {problem}", line=1)
        columns = _columns(header)
        if file_list:
            if lists.is_segment(file_list):
                raise ImportFileError(f"{file_list!r} is a segment: its contacts follow its rule."
                                      " Import into a list instead", line=1)
            lists.id_for(file_list)  # the list exists afterwards even if every row is rejected

        chunk: dict[str, _Row] = {}
        for line, record, problem in records:
            if problem is not None:
                result.reject(line, problem)
                continue
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line
            row = _parse_row(record, columns, line, result, latest)
            if row is None:
                continue
            segment = next((name for name in sorted(row.lists) if lists.is_segment(name)), None)
            if segment is not None:
                result.reject(line, f"{segment!r} is a segment (its contacts follow its rule);"
                                    " name a list")
                continue
            if file_list:
                row.lists.add(file_list)
            earlier = chunk.get(row.key)
            if earlier is not None:
                result.reject(line, f"duplicate of line {earlier.line} ({row.email})")
                continue
            chunk[row.key] = row
            if len(chunk) >= CHUNK_SIZE:
                _write_chunk(_first_rows(chunk, seen, result), lists, source, result, import_job)
                chunk = {}
        _write_chunk(_first_rows(chunk, seen, result), lists, source, result, import_job)
    except ImportFileError as exc:
        _fail(import_job, result, exc)
    finally:
        seen.close()

    if import_job is not None:
        import_job.status = "done"
        import_job.finished_at = utcnow()
        _store_progress(import_job, result)
    return result


@dataclass(frozen=True)
class _BadLine:
    """A physical line that cannot be read as text: why."""

    reason: str


_Line = tuple[int, "str | _BadLine"]  # (physical line number, its text or why it is unreadable)


class _PhysicalLines:
    """The physical lines of a file, numbered from 1, read one at a time.

    Bytes are decoded line by line, so a line that is not UTF-8 is reported as that line (the
    rest of the file still reads) and memory does not grow with the file. Lines end at LF, CRLF
    or CR; the ending is kept, as the csv module wants it. A line holding a NUL byte, or longer
    than MAX_LINE_CHARS, is unreadable too. A BOM at the very start is dropped.
    """

    def __init__(self, stream: IO[bytes] | IO[str]) -> None:
        self._decode = not isinstance(stream, io.TextIOBase)
        if self._decode:
            # Latin-1 maps every byte to one character, so this only splits lines (UTF-8
            # never has a CR or LF byte inside a character); each line is decoded on its own.
            self._text: IO[str] = io.TextIOWrapper(typing.cast(IO[bytes], stream),
                                                   encoding="latin-1", newline="")
        else:
            self._text = typing.cast(IO[str], stream)
        self.number = 0

    def read(self) -> _Line | None:
        text = self._text.readline(MAX_LINE_CHARS)
        if not text:
            return None
        self.number += 1
        if len(text) >= MAX_LINE_CHARS and not text.endswith(("\n", "\r")):
            while (more := self._text.readline(MAX_LINE_CHARS)) and not more.endswith(
                ("\n", "\r")
            ):
                pass
            return self.number, _BadLine(f"is longer than {MAX_LINE_CHARS:,} characters")
        if self._decode:
            raw = text.encode("latin-1")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return self.number, _BadLine(
                    f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at position {exc.start + 1}"
                    " of the line): save the file as CSV UTF-8"
                )
        if self.number == 1:
            text = text.removeprefix("\ufeff")
        if "\x00" in text:
            return self.number, _BadLine(
                f"holds a NUL byte (at position {text.index(chr(0)) + 1} of the line)"
            )
        return self.number, text


class _RecordTooLong(Exception):
    """A record asked for more than MAX_RECORD_LINES lines: its quote is never closed."""


class _UnreadableLine(Exception):
    """The record reached a line that cannot be read."""

    def __init__(self, line: int, bad: _BadLine) -> None:
        super().__init__(bad.reason)
        self.line = line
        self.bad = bad


class _LineFeed:
    """What csv.reader reads: physical lines, first the ones given back for another reading.

    `taken` holds the lines handed out for the record being read, so a record that cannot be
    read can give back all of them but its first.
    """

    def __init__(self, lines: _PhysicalLines, first: _Line) -> None:
        self._lines = lines
        self.pending: deque[_Line] = deque([first])
        self.taken: list[_Line] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if len(self.taken) >= MAX_RECORD_LINES:
            raise _RecordTooLong
        item = self.pending.popleft() if self.pending else self._lines.read()
        if item is None:
            raise StopIteration
        self.taken.append(item)
        number, text = item
        if isinstance(text, _BadLine):
            raise _UnreadableLine(number, text)
        return text


def _records(
    lines: _PhysicalLines, delimiter: str, first: _Line
) -> Iterator[tuple[int, list[str], str | None]]:
    """(line where the record starts, its cells, why it cannot be read or None), header first.

    Quoting is strict. A quoted field may hold line breaks, but a record may span at most
    MAX_RECORD_LINES physical lines. A record that cannot be read (its quote is not closed within
    that many lines or before the end of the file, a closing quote is followed by something other
    than a delimiter, a field is too long, or one of its lines is not UTF-8 or holds a NUL byte)
    is reported on the line where it starts, and reading starts again on the next physical line:
    the lines it took are read again as rows of their own, so each of them is imported or
    reported, never swallowed.
    """
    feed = _LineFeed(lines, first)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    while True:
        feed.taken = []
        try:
            record = next(reader)
        except StopIteration:
            return
        except (csv.Error, _RecordTooLong, _UnreadableLine) as exc:
            taken = feed.taken
            start = taken[0][0]
            feed.pending.extendleft(reversed(taken[1:]))
            reader = csv.reader(feed, delimiter=delimiter, strict=True)
            yield start, [], _record_problem(exc, start)
            continue
        yield feed.taken[0][0], record, None


def _record_problem(exc: Exception, start: int) -> str:
    if isinstance(exc, _UnreadableLine):
        if exc.line == start:
            return f"the line {exc.bad.reason}"
        return f"line {exc.line}, inside this row's quoted field, {exc.bad.reason}"
    if isinstance(exc, _RecordTooLong):
        return (f"unterminated quote: a quoted field is not closed within {MAX_RECORD_LINES}"
                " lines (the lines after this one are read as rows of their own)")
    message = str(exc)
    if message == "unexpected end of data":
        return "unterminated quote: a quoted field is not closed before the end of the file"
    if message.startswith("field larger than field limit"):
        return f"a field is longer than {csv.field_size_limit():,} characters"
    return f"broken quoting ({message}): a quoted field must end with a quote right before" \
           " the delimiter or the end of the line"


class _SeenAddresses:
    """The addresses already imported by this file and the line of each, for spotting repeats.

    Kept in a private temporary SQLite database (on disk beyond a small page cache), so a
    million-row file does not hold a million addresses in memory.
    """

    def __init__(self) -> None:
        self._db = sqlite3.connect("")
        self._db.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER NOT NULL)"
                         " WITHOUT ROWID")

    def add(self, rows: list[_Row]) -> dict[str, int]:
        """Record the rows' addresses; returns the first line of those already recorded."""
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO seen (key, line) VALUES (?, ?)",
                             ((r.key, r.line) for r in rows))
        if self._db.total_changes - before == len(rows):
            return {}  # all new: the usual case costs one statement
        found: dict[str, int] = {}
        for at in range(0, len(rows), 500):
            part = [r.key for r in rows[at:at + 500]]
            marks = ",".join("?" * len(part))
            found.update(self._db.execute(
                f"SELECT key, line FROM seen WHERE key IN ({marks})", part))  # noqa: S608
        return {r.key: found[r.key] for r in rows if found[r.key] != r.line}

    def close(self) -> None:
        self._db.close()


def _first_rows(chunk: dict[str, _Row], seen: _SeenAddresses,
                result: ImportResult) -> list[_Row]:
    """The chunk's rows whose address no earlier chunk had; the others are rejected."""
    rows = list(chunk.values())
    earlier = seen.add(rows)
    if not earlier:
        return rows
    for row in rows:
        if row.key in earlier:
            result.reject(row.line, f"duplicate of line {earlier[row.key]} ({row.email})")
    return [row for row in rows if row.key not in earlier]


def _fail(import_job: ImportJob | None, result: ImportResult, exc: ImportFileError) -> NoReturn:
    """Record a whole-file failure on the import job (chunks already written stay), then raise;
    the caller commits the failure. Only the header fails a file, before any chunk is written."""
    if import_job is not None:
        if len(result.errors) < MAX_STORED_ERRORS:
            result.errors.append(RowError(exc.line, str(exc)))
        import_job.status = "failed"
        import_job.finished_at = utcnow()
        _store_progress(import_job, result)
    raise exc


def _columns(header: list[str]) -> _Columns:
    names = [h.strip() for h in header]
    lowered = [n.lower() for n in names]

    def find(options: set[str]) -> int | None:
        for i, name in enumerate(lowered):
            if name in options:
                return i
        return None

    email = find(EMAIL_HEADERS)
    if email is None:
        raise ImportFileError(
            "no email column (expected a header named email, e-mail or email address)", line=1
        )
    known = {email, find(NAME_HEADERS), find(TRANSACTION_HEADERS), find(LIST_HEADERS),
             find(ZONE_HEADERS)}
    extra = tuple(
        (i, name or f"column {i + 1}") for i, name in enumerate(names) if i not in known
    )
    return _Columns(
        email=email,
        name=find(NAME_HEADERS),
        last_transaction=find(TRANSACTION_HEADERS),
        list=find(LIST_HEADERS),
        extra=extra,
        count=len(names),
        time_zone=find(ZONE_HEADERS),
    )


def _parse_row(
    record: list[str], columns: _Columns, line: int, result: ImportResult, latest: datetime
) -> _Row | None:
    if len(record) != columns.count:
        result.reject(line, f"expected {columns.count} columns, found {len(record)}")
        return None
    raw_email = record[columns.email].strip()
    if not raw_email:
        result.reject(line, "missing email address")
        return None
    problem = address_problem(raw_email)
    if problem:
        result.reject(line, f"invalid email address {raw_email!r}: {problem}")
        return None
    last_transaction = None
    if columns.last_transaction is not None:
        raw_date = record[columns.last_transaction].strip()
        if raw_date:
            try:
                last_transaction = parse_when(raw_date)
            except ValueError:
                result.reject(
                    line, f"last_transaction {raw_date!r} is not an ISO date (YYYY-MM-DD)"
                )
                return None
            if last_transaction > latest:
                result.reject(line, f"last_transaction {raw_date!r} is in the future")
                return None
    email = normalize_address(raw_email)
    name = record[columns.name].strip() if columns.name is not None else ""
    lists = set()
    if columns.list is not None and record[columns.list].strip():
        lists.add(record[columns.list].strip())
    # Empty cells are left out so that a re-import with a blank cell keeps the known value.
    fields = {name_: record[i].strip() for i, name_ in columns.extra if record[i].strip()}
    zone = record[columns.time_zone].strip() if columns.time_zone is not None else ""
    if zone and not is_zone(zone):
        result.reject(line, f"time_zone {zone[:64]!r} is not a time zone (e.g. Europe/Berlin)")
        return None
    return _Row(email, address_key(email), name[:200], fields, last_transaction, lists, line,
                zone)


def parse_when(raw: str) -> datetime:
    """An ISO date or datetime as an aware UTC datetime; a date or naive time is taken as UTC."""
    raw = raw.strip()
    if len(raw) == 10:
        day = date.fromisoformat(raw)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    when = datetime.fromisoformat(raw)
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


class _ListCache:
    """List ids by name, creating lists on first use (safe against a concurrent creator)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._segments: dict[str, bool] = {}

    def is_segment(self, name: str) -> bool:
        """True if `name` is a segment: its contacts follow its rule, nobody is added to it."""
        if name not in self._segments:
            rule = db.session.execute(
                select(ContactList.rule).where(ContactList.name == name[:200])
            ).first()
            self._segments[name] = rule is not None and rule[0] is not None
        return self._segments[name]

    def id_for(self, name: str) -> int:
        if name not in self._ids:
            stmt = _insert(ContactList).values(
                name=name[:200], description="", created_at=utcnow()
            )
            db.session.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
            self._ids[name] = db.session.execute(
                select(ContactList.id).where(ContactList.name == name[:200])
            ).scalar_one()
        return self._ids[name]


def _insert(model: Any) -> Any:
    """The dialect's INSERT on the model's table, which knows ON CONFLICT.

    Core on the table rather than the ORM entity: executed with a list of parameter sets it is
    one cached statement sent in batches ("insertmanyvalues"), not a statement compiled per chunk.
    The bulk inserts ask for RETURNING even where the rows are not needed: that is what makes
    SQLAlchemy batch them into multi-row VALUES on psycopg 3 too (instead of a round trip per row).
    """
    table = model.__table__
    if db.session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _write_chunk(
    rows: Iterable[_Row],
    lists: _ListCache,
    source: str,
    result: ImportResult,
    import_job: ImportJob | None,
) -> None:
    """Upsert one chunk of contacts, their memberships and transactions, and commit.

    The import commits chunk by chunk (the one place in this module that commits): a large file
    keeps the session's memory flat, and the import page shows the rows written so far."""
    rows = list(rows)
    erased = suppressions.erased_keys(r.key for r in rows)  # erased addresses never come back
    for row in (r for r in rows if r.key in erased):
        result.reject(row.line, f"{row.email} was erased and cannot be imported again")
    rows = [r for r in rows if r.key not in erased]
    if rows:
        keys = [r.key for r in rows]
        existing = set(
            db.session.execute(select(Contact.email_key).where(Contact.email_key.in_(keys)))
            .scalars()
            .all()
        )
        result.updated += len(existing)
        result.created += len(rows) - len(existing)
        ids = _upsert_contacts(rows)
        # An address that hard-bounced or complained before it was a contact comes in as a
        # do-not-email contact (app.services.suppressions).
        suppressions.carry_to_new_contacts({k: i for k, i in ids.items() if k not in existing})
        _add_memberships(rows, ids, lists)
        _add_csv_transactions(rows, ids, source)
    if import_job is not None:
        _store_progress(import_job, result)
    db.session.commit()


def _upsert_contacts(rows: list[_Row]) -> dict[str, int]:
    now = utcnow()
    values = [
        {
            "email": r.email,
            "email_key": r.key,
            "name": r.name,
            "fields": r.fields,
            "do_not_email": False,
            "do_not_email_reason": "",
            "valid": True,
            "invalid_reason": "",
            "soft_bounce_mailings": 0,
            "last_transaction_at": r.last_transaction,
            "time_zone": r.time_zone,
            "created_at": now,
            "updated_at": now,
        }
        for r in rows
    ]
    stmt = _insert(Contact)
    new = stmt.excluded
    table = Contact.__table__
    newer_transaction = and_(
        new.last_transaction_at.is_not(None),
        or_(
            table.c.last_transaction_at.is_(None),
            new.last_transaction_at > table.c.last_transaction_at,
        ),
    )
    # valid / invalid_reason and do-not-email are left alone on update: a hard bounce or an
    # unsubscribe must survive a re-import of an old file.
    stmt = stmt.on_conflict_do_update(
        index_elements=["email_key"],
        set_={
            "email": new.email,
            "name": case((new.name != "", new.name), else_=table.c.name),
            "fields": _merged_fields(table.c.fields, new.fields),
            "time_zone": case((new.time_zone != "", new.time_zone), else_=table.c.time_zone),
            "last_transaction_at": case(
                (newer_transaction, new.last_transaction_at), else_=table.c.last_transaction_at
            ),
            "updated_at": now,
        },
    ).returning(table.c.id, table.c.email_key)
    return {key: id_ for id_, key in db.session.execute(stmt, values).all()}


def _merged_fields(current: Any, incoming: Any) -> ColumnElement[Any]:
    """SQL for `current` with `incoming`'s keys laid over it (a JSON object merge)."""
    if db.session.get_bind().dialect.name == "postgresql":
        # The column is json, which has no merge operator; jsonb's || does it.
        merged = func.coalesce(cast(current, JSONB), cast(literal("{}"), JSONB)).op("||")(
            cast(incoming, JSONB)
        )
        return cast(merged, Contact.__table__.c.fields.type)
    return func.json_patch(func.coalesce(current, "{}"), incoming)


def _add_memberships(rows: list[_Row], ids: dict[str, int], lists: _ListCache) -> None:
    pairs = {(lists.id_for(name), ids[r.key]) for r in rows for name in r.lists}
    if not pairs:
        return
    now = utcnow()
    values = [{"list_id": lid, "contact_id": cid, "added_at": now} for lid, cid in sorted(pairs)]
    stmt = _insert(ListMember).on_conflict_do_nothing()
    db.session.execute(stmt.returning(stmt.table.c.contact_id), values).all()


def _add_csv_transactions(rows: list[_Row], ids: dict[str, int], source: str) -> None:
    """A transaction per row that carries a date, unless that contact already has it."""
    wanted = {(ids[r.key], r.last_transaction) for r in rows if r.last_transaction is not None}
    if not wanted:
        return
    contact_ids = {cid for cid, _ in wanted}
    known = set(
        db.session.execute(
            select(Transaction.contact_id, Transaction.occurred_at).where(
                Transaction.contact_id.in_(contact_ids)
            )
        ).all()
    )
    values = [
        {
            "contact_id": cid,
            "occurred_at": when,
            "reference": "",
            "amount": "",
            "source": source[:20],
        }
        for cid, when in sorted(wanted - {(c, w) for c, w in known})
    ]
    if values:
        stmt = _insert(Transaction)
        db.session.execute(stmt.returning(stmt.table.c.id), values).all()


def _store_progress(import_job: ImportJob, result: ImportResult) -> None:
    import_job.created = result.created
    import_job.updated = result.updated
    import_job.rejected = result.rejected
    # A new list object, so the JSON column is seen as changed.
    import_job.errors = [e.as_dict() for e in result.errors]


# --------------------------------------------------------------------------------------------
# Import jobs
# --------------------------------------------------------------------------------------------


def create_import_job(filename: str, user_id: int | None = None) -> ImportJob:
    """A running import, shown on the import status page while the worker fills it in."""
    job = ImportJob(filename=filename[:255], status="running", errors=[], user_id=user_id)
    db.session.add(job)
    db.session.flush()
    return job


def get_import_job(import_id: int) -> ImportJob | None:
    return db.session.get(ImportJob, import_id)


def fail_import_job(import_job: ImportJob, reason: str) -> None:
    """Mark an import failed for a reason outside the file (a crash, a missing upload)."""
    import_job.status = "failed"
    import_job.finished_at = utcnow()
    import_job.errors = [*(import_job.errors or [])[: MAX_STORED_ERRORS - 1],
                         {"line": 0, "reason": reason}]


# --------------------------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------------------------


def record_transaction(
    email_or_contact_id: str | int,
    occurred_at: datetime,
    *,
    reference: str = "",
    amount: str = "",
    source: str = "api",
) -> Transaction:
    """Record a transaction and move the contact's last transaction forward if it is newer.

    A newer transaction lifts the inactivity suppression at once. `occurred_at` without a time
    zone is taken as UTC. Raises ContactError when no contact has that id or address, or when
    the date is more than a day ahead (app.domain.transactions, the rule CSV imports follow).
    """
    contact = (
        get_contact(email_or_contact_id)
        if isinstance(email_or_contact_id, int)
        else find_contact(email_or_contact_id)
    )
    if contact is None:
        raise ContactError(f"no contact {email_or_contact_id!r}")
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    problem = future_date_problem(occurred_at, datetime.now(UTC))
    if problem:
        raise ContactError(problem)
    transaction = Transaction(
        contact_id=contact.id,
        occurred_at=occurred_at,
        reference=reference[:200],
        amount=amount[:40],
        source=source[:20],
    )
    db.session.add(transaction)
    # One conditional UPDATE, so a concurrent older transaction cannot move the date back.
    db.session.execute(
        update(Contact)
        .where(
            Contact.id == contact.id,
            or_(Contact.last_transaction_at.is_(None), Contact.last_transaction_at < occurred_at),
        )
        .values(last_transaction_at=occurred_at, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    conversions.attribute(transaction)  # credited to the mailing clicked last before it, if any
    db.session.refresh(contact)
    return transaction


def contact_transactions(contact_id: int, limit: int = 50) -> list[Transaction]:
    """The contact's newest transactions first."""
    stmt = (
        select(Transaction)
        .where(Transaction.contact_id == contact_id)
        .order_by(Transaction.occurred_at.desc(), Transaction.id.desc())
        .limit(limit)
    )
    return list(db.session.execute(stmt).scalars())


# --------------------------------------------------------------------------------------------
# Contacts
# --------------------------------------------------------------------------------------------


def get_contact(contact_id: int) -> Contact | None:
    return db.session.get(Contact, contact_id)


def find_contact(address: str) -> Contact | None:
    """The contact with this address, case-insensitively."""
    key = address_key(normalize_address(address))
    return db.session.execute(select(Contact).where(Contact.email_key == key)).scalar_one_or_none()


def inactive_before(inactivity_days: int, now: datetime | None = None) -> datetime | None:
    """Contacts whose last transaction is older than this are inactive; None: never inactive."""
    if inactivity_days <= 0:
        return None
    return (now or utcnow()) - timedelta(days=inactivity_days)


def is_inactive(contact: Contact, inactivity_days: int, now: datetime | None = None) -> bool:
    """No transaction within the inactivity period, counting from when the contact was added if
    it has none (the same rule the audience applies when a mailing is prepared)."""
    cutoff = inactive_before(inactivity_days, now)
    if cutoff is None:
        return False
    return (contact.last_transaction_at or contact.created_at) < cutoff


def like_escape(text: str) -> str:
    """`text` for a LIKE pattern with escape "\\": its %, _ and \\ match only themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_contacts(
    q: str = "",
    flag: str | None = None,
    after_id: int | None = None,
    limit: int = 50,
    *,
    inactivity_days: int = 0,
    list_id: int | None = None,
) -> tuple[list[Contact], int | None]:
    """One page of contacts, newest first, and the cursor for the next page (None at the end).

    `q` matches part of the address or the name, case-insensitively. `flag` narrows to
    "do_not_email", "invalid" or "inactive" (see is_inactive; 0 days: nobody). Keyset
    pagination: pass the returned cursor as `after_id` to get the next (older) page, so a page
    costs the same at any depth.
    """
    stmt = select(Contact)
    q = q.strip()
    if q:
        pattern = f"%{like_escape(q.lower())}%"
        stmt = stmt.where(
            or_(
                Contact.email_key.like(pattern, escape="\\"),
                func.lower(Contact.name).like(pattern, escape="\\"),
            )
        )
    if flag == "do_not_email":
        stmt = stmt.where(Contact.do_not_email.is_(True))
    elif flag == "invalid":
        stmt = stmt.where(Contact.valid.is_(False))
    elif flag == "inactive":
        cutoff = inactive_before(inactivity_days)
        if cutoff is None:
            return [], None
        last = func.coalesce(Contact.last_transaction_at, Contact.created_at)
        stmt = stmt.where(last < cutoff)
    elif flag:
        raise ContactError(f"unknown filter {flag!r}")
    if list_id is not None:
        chosen = db.session.get(ContactList, list_id)
        if chosen is not None and chosen.rule is not None:
            from app.services import segments

            try:
                stmt = stmt.where(segments.condition_sql(segments.rule_of(chosen)))
            except SegmentError as exc:
                raise ContactError(f"segment {chosen.name!r} cannot be used: {exc}") from exc
        else:
            stmt = stmt.where(
                Contact.id.in_(select(ListMember.contact_id).where(ListMember.list_id == list_id))
            )
    if after_id is not None:
        stmt = stmt.where(Contact.id < after_id)
    limit = max(1, min(limit, 500))
    page = list(db.session.execute(stmt.order_by(Contact.id.desc()).limit(limit + 1)).scalars())
    if len(page) > limit:
        return page[:limit], page[limit - 1].id
    return page, None


def set_do_not_email(contact: Contact, reason: str) -> None:
    """Mark the contact do-not-email: no mailing will be sent to it until cleared."""
    contact.do_not_email = True
    contact.do_not_email_reason = (reason.strip() or "set by staff")[:100]


def clear_do_not_email(contact: Contact) -> None:
    """Allow mailings to the contact again (its address validity is unchanged)."""
    contact.do_not_email = False
    contact.do_not_email_reason = ""


def opt_out_type(contact_id: int, email_type_id: int) -> None:
    """The contact leaves one email type; doing it twice is harmless."""
    stmt = _insert(TypeOptOut).values(
        contact_id=contact_id, email_type_id=email_type_id, created_at=utcnow()
    )
    db.session.execute(stmt.on_conflict_do_nothing())


def opt_in_type(contact_id: int, email_type_id: int) -> None:
    """The contact receives an email type again."""
    db.session.execute(
        delete(TypeOptOut).where(
            TypeOptOut.contact_id == contact_id, TypeOptOut.email_type_id == email_type_id
        )
    )


def type_opt_outs(contact_id: int) -> set[int]:
    """Ids of the email types the contact has left."""
    stmt = select(TypeOptOut.email_type_id).where(TypeOptOut.contact_id == contact_id)
    return set(db.session.execute(stmt).scalars())


def email_types() -> list[EmailType]:
    return list(db.session.execute(select(EmailType).order_by(EmailType.name)).scalars())


def contact_lists(contact_id: int) -> list[ContactList]:
    stmt = (
        select(ContactList)
        .join(ListMember, ListMember.list_id == ContactList.id)
        .where(ListMember.contact_id == contact_id)
        .order_by(ContactList.name)
    )
    return list(db.session.execute(stmt).scalars())


# --------------------------------------------------------------------------------------------
# Lists
# --------------------------------------------------------------------------------------------


def checked_list_name(name: str, what: str = "list",
                      current: ContactList | None = None) -> str:
    """A list's or segment's name, stripped; ContactError when empty, too long or taken (lists
    and segments share one set of names). `current` is the one being renamed."""
    name = name.strip()
    if not name:
        raise ContactError(f"a {what} needs a name")
    if len(name) > 200:
        raise ContactError(f"a {what} name has at most 200 characters")
    existing = get_list_by_name(name)
    if existing is not None and existing is not current:
        taken = "list" if existing.rule is None else "segment"
        raise ContactError(f"a {taken} named {name!r} exists already")
    return name


def create_list(name: str, description: str = "") -> ContactList:
    """Create an empty list; names are unique."""
    name = checked_list_name(name)
    contact_list = ContactList(name=name, description=description.strip())
    db.session.add(contact_list)
    db.session.flush()
    return contact_list


def get_list(list_id: int) -> ContactList | None:
    return db.session.get(ContactList, list_id)


def get_list_by_name(name: str) -> ContactList | None:
    stmt = select(ContactList).where(ContactList.name == name.strip())
    return db.session.execute(stmt).scalar_one_or_none()


def lists_with_counts() -> list[tuple[ContactList, int]]:
    """Every list with its number of members, and every segment with the number of contacts its
    rule picks now, by name."""
    from app.services import segments

    stmt = (
        select(ContactList, func.count(ListMember.contact_id))
        .outerjoin(ListMember, ListMember.list_id == ContactList.id)
        .group_by(ContactList.id)
        .order_by(ContactList.name)
    )
    rows = [(row[0], int(row[1])) for row in db.session.execute(stmt).all()]
    live = segments.counts(lst for lst, _ in rows if lst.rule is not None)
    return [(lst, live.get(lst.id, n)) for lst, n in rows]


def list_member_count(list_id: int) -> int:
    stmt = select(func.count()).select_from(ListMember).where(ListMember.list_id == list_id)
    return int(db.session.execute(stmt).scalar_one())


def add_to_list(list_id: int, contact_ids: Iterable[int]) -> None:
    """Add contacts to a list; members already in it are left as they are."""
    chosen = db.session.get(ContactList, list_id)
    if chosen is not None and chosen.rule is not None:
        raise ContactError(f"{chosen.name!r} is a segment: its contacts follow its rule")
    values = [
        {"list_id": list_id, "contact_id": cid, "added_at": utcnow()} for cid in set(contact_ids)
    ]
    if values:
        db.session.execute(_insert(ListMember).on_conflict_do_nothing(), values)
