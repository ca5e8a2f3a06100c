"""Cursor pagination: ``?limit=&cursor=`` in, ``{"data": [...], "next_cursor": ...}`` out.

The cursor is opaque to callers: the last row's key, signed with the app's secret, so a page
never skips or repeats a row when rows are added meanwhile (keyset order, ascending ids) and a
forged or cut cursor is a 422 naming ``cursor``. ``next_cursor`` is null on the last page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select

from app.api.problems import invalid
from app.extensions import db

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
SALT = "sendboard.api.cursor"

T = TypeVar("T")


class PageQuery(BaseModel):
    """The query string of a list endpoint."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Rows per page")
    cursor: str | None = Field(None, max_length=500,
                               description="`next_cursor` of the previous page; absent for the first")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def encode_cursor(key: int, scope: str = "") -> str:
    return str(_serializer().dumps([scope, key]))


def decode_cursor(cursor: str, scope: str = "") -> int:
    """The key after which the page starts; 422 (field ``cursor``) for anything not ours."""
    try:
        value = _serializer().loads(cursor)
    except (BadData, UnicodeError, ValueError):
        raise invalid("cursor", "is not a cursor this API gave out") from None
    if (not isinstance(value, list) or len(value) != 2 or value[0] != scope
            or not isinstance(value[1], int) or isinstance(value[1], bool)):
        raise invalid("cursor", "is not a cursor for this list")
    return value[1]


def paginate(stmt: Select[Any], key: Any, query: PageQuery,
             serialize: Callable[[Any], Any], *, scope: str = "",
             prepare: Callable[[Sequence[Any]], None] | None = None) -> dict[str, Any]:
    """One page of `stmt`'s rows in ascending `key` (an integer, unique column).

    `scope` names the list (e.g. "contacts" or "list:3") so a cursor of one list is refused by
    another. `prepare` sees the page's rows before they are serialised (to load related data
    for the page in one query)."""
    if query.cursor:
        stmt = stmt.where(key > decode_cursor(query.cursor, scope))
    rows = list(db.session.execute(stmt.order_by(key).limit(query.limit + 1)).scalars())
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    if prepare is not None:
        prepare(rows)
    next_cursor = None
    if more and rows:
        last = rows[-1]
        last_key = getattr(last, key.key) if hasattr(key, "key") and not isinstance(last, int) else last
        next_cursor = encode_cursor(int(last_key), scope)
    return {"data": [serialize(row) for row in rows], "next_cursor": next_cursor}
