"""A mailing's totals as named counters, so a dashboard poll costs O(1) at any audience size.

Counters change in the caller's transaction, next to the recipient rows they count: totals can never
drift from the responses. Names: ``response:<value>`` counts recipients currently in that response;
the rest (``handed_off``, ``opens``, ``clicks``, ``opened_unique``, ...) only grow. The names, and
which counters make up each figure a page shows, are defined in app.domain.figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.domain import figures
from app.domain.responses import Response
from app.extensions import db
from app.models import MailingCounter


def response_key(response: Response | str) -> str:
    return figures.response_counter(response)


def _upsert(dialect: str) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(MailingCounter.__table__)
    return stmt.on_conflict_do_update(
        index_elements=["mailing_id", "name"],
        set_={"value": stmt.table.c.value + stmt.excluded.value},
    )


_UPSERTS = {name: _upsert(name) for name in ("sqlite", "postgresql")}


def bump(mailing_id: int, deltas: Mapping[str, int]) -> None:
    """Add each delta to its counter (creating it at 0), in the current transaction.

    One statement of fixed text run for every counter (executemany), so it is compiled once, not
    once per set of names.
    """
    rows = [{"mailing_id": mailing_id, "name": k, "value": v} for k, v in deltas.items() if v]
    if rows:
        db.session.execute(_UPSERTS[db.engine.dialect.name], rows)


def move(mailing_id: int, old: Response | str | None, new: Response | str, count: int = 1) -> None:
    """Record that `count` recipients went from response `old` to `new`."""
    deltas: dict[str, int] = {response_key(new): count}
    if old is not None:
        key = response_key(old)
        deltas[key] = deltas.get(key, 0) - count
    bump(mailing_id, deltas)


def get(mailing_id: int) -> dict[str, int]:
    """Every counter of the mailing; a missing counter reads as 0 via dict.get."""
    rows = db.session.execute(
        select(MailingCounter.name, MailingCounter.value).where(
            MailingCounter.mailing_id == mailing_id
        )
    )
    return {name: int(value) for name, value in rows}


def responses(counters: Mapping[str, int]) -> dict[Response, int]:
    """The recipients per current response, from a counters dict."""
    return {r: counters.get(response_key(r), 0) for r in Response}
