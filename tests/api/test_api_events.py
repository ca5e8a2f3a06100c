"""GET /api/v1/events: every response event after the cursor, each exactly once, in id order,
also while events keep arriving and when an id is missing for a while."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.extensions import db
from app.models import Recipient, ResponseEvent
from app.services import mailings
from tests.factories import make_audience, make_mailing
from tests.factories import record_event as apply_event
from tests.factories import run_every_queue as run_worker


def sent_recipients(redis_conn, n: int = 4) -> list[int]:
    mailing = make_mailing([make_audience(n)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    return list(db.session.execute(select(Recipient.id).where(
        Recipient.mailing_id == mailing.id).order_by(Recipient.id)).scalars())


def poll(client, headers, cursor: str | None, **params) -> dict:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    url = f"/api/v1/events?{query}" + (f"&cursor={cursor}" if cursor else "")
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def drain(client, headers, cursor: str | None, **params) -> tuple[list[dict], str]:
    got: list[dict] = []
    for _ in range(200):
        page = poll(client, headers, cursor, **params)
        got.extend(page["data"])
        assert page["next_cursor"]  # always given, also on the last page
        cursor = page["next_cursor"]
        if not page["more"]:
            return got, cursor
    raise AssertionError("never drained")


def test_each_event_exactly_once_while_events_keep_coming(app, client, redis_conn, smtp,  # noqa: F811
                                                          make_token):
    headers = make_token(["events:read"])[1]
    rids = sent_recipients(redis_conn)
    seen: list[dict] = []
    cursor = None
    kinds = ["delivered", "open", "click", "open", "unsubscribed", "open"]
    now = datetime.now(UTC)
    for round_ in range(5):
        for n, rid in enumerate(rids):
            apply_event(rid, kind=kinds[(round_ + n) % len(kinds)], source="tracking",
                        occurred_at=now + timedelta(seconds=round_))
        got, cursor = drain(client, headers, cursor, limit=3)
        seen.extend(got)
        again, cursor = drain(client, headers, cursor, limit=3)
        assert again == []  # nothing new: the same cursor comes back, nothing repeats
    ids = [e["id"] for e in seen]
    in_db = list(db.session.execute(select(ResponseEvent.id).order_by(ResponseEvent.id)).scalars())
    assert ids == in_db and len(ids) == len(set(ids)) and len(ids) >= 20
    first = seen[0]
    event = db.session.get(ResponseEvent, first["id"])
    assert (first["kind"], first["recipient_id"], first["mailing_id"]) == (
        event.kind, event.recipient_id, event.mailing_id)
    assert first["email"] == db.session.get(Recipient, event.recipient_id).address
    assert first["occurred_at"].endswith("Z") or first["occurred_at"].endswith("+00:00")


def test_a_missing_id_holds_the_cursor_until_it_is_old(app, client, redis_conn, smtp,  # noqa: F811
                                                       make_token):
    headers = make_token(["events:read"])[1]
    rid = sent_recipients(redis_conn, 1)[0]
    apply_event(rid, kind="delivered", source="generic", occurred_at=datetime.now(UTC))
    top = db.session.execute(select(ResponseEvent.id).order_by(ResponseEvent.id.desc())
                             ).scalars().first()
    mailing_id = db.session.get(Recipient, rid).mailing_id

    def add(event_id: int, received: datetime) -> None:
        db.session.add(ResponseEvent(id=event_id, recipient_id=rid, mailing_id=mailing_id,
                                     kind="open", source="tracking", occurred_at=received,
                                     received_at=received, applied=False))
        db.session.commit()

    # The id after `top` is not visible yet (its transaction still running, say); top + 2 is.
    add(top + 2, datetime.now(UTC))
    got, cursor = drain(client, headers, None)
    assert [e["id"] for e in got][-1] == top
    add(top + 1, datetime.now(UTC))  # it commits: both come, in order, once
    got, cursor = drain(client, headers, cursor)
    assert [e["id"] for e in got] == [top + 1, top + 2]
    # A gap that stays (a rolled-back insert) is passed once the event after it is old.
    add(top + 4, datetime.now(UTC) - timedelta(minutes=1))
    got, cursor = drain(client, headers, cursor)
    assert [e["id"] for e in got] == [top + 4]


def test_filter_by_mailing_scope_and_bad_cursors(app, client, redis_conn, smtp,  # noqa: F811
                                                 make_token):
    headers = make_token(["events:read"])[1]
    rid = sent_recipients(redis_conn, 2)[0]
    apply_event(rid, kind="delivered", source="generic", occurred_at=datetime.now(UTC))
    mailing_id = db.session.get(Recipient, rid).mailing_id
    got, cursor = drain(client, headers, None, mailing_id=mailing_id)
    assert got and {e["mailing_id"] for e in got} == {mailing_id}
    assert drain(client, headers, None, mailing_id=mailing_id + 1)[0] == []
    # A cursor of the filtered list is refused by the unfiltered one, and a forged one too.
    for bad in (cursor, "forged"):
        response = client.get(f"/api/v1/events?cursor={bad}", headers=headers)
        assert response.status_code == 422
        assert response.get_json()["errors"][0]["field"] == "cursor"
    for scopes in (["mailings:read"], ["tx:send", "contacts:read"]):
        wrong = make_token(scopes, name="-".join(scopes))[1]
        response = client.get("/api/v1/events", headers=wrong)
        assert response.status_code == 403 and response.get_json()["scope"] == "events:read"
    assert client.get("/api/v1/events").status_code == 401
