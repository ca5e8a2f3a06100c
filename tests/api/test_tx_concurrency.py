"""Two requests with one idempotency key at the same moment: one message, both answers name it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import func, select

from app.extensions import db
from app.models import Mailing, Recipient
from tests.api.conftest import add_contact


def test_concurrent_twins_store_one_message(app, redis_conn, make_token):
    headers = make_token(["tx:send"])[1]
    anna = add_contact("anna@example.org", last_transaction_at=datetime.now(UTC))
    body = {"to": {"contact_id": anna.id}, "subject": "Receipt", "text": "Thanks",
            "from_address": "shop@shop.example", "idempotency_key": "order-9"}
    barrier = threading.Barrier(4)
    answers: list[tuple[int, int]] = []

    def call() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post("/api/v1/tx", json=body, headers=headers)
        answers.append((response.status_code, response.get_json()["id"]))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    db.session.expire_all()
    assert sorted(code for code, _ in answers) == [200, 200, 200, 202]
    assert len({mailing_id for _, mailing_id in answers}) == 1
    assert db.session.execute(select(func.count()).select_from(Mailing)).scalar_one() == 1
    assert db.session.execute(select(func.count()).select_from(Recipient)).scalar_one() == 1
    assert redis_conn.llen("rq:queue:transactional") == 1
