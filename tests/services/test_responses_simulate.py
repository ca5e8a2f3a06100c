"""`sendboard simulate` posts over real HTTP to the authenticated webhook and the events land."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from app.domain.responses import Response
from app.extensions import db
from app.models import Mailing, Recipient, ResponseEvent
from app.responses.cli import plan
from app.services import totals


@pytest.fixture
def server(app):
    app.config.update(GENERIC_WEBHOOK_SECRET="sim-secret",
                      SENDBOARD_WEBHOOK_BASIC_USER="u", SENDBOARD_WEBHOOK_BASIC_PASSWORD="p")
    srv = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    thread.join()


def sent_mailing(n: int) -> int:
    mailing = Mailing(name="Sim", status="sent")
    db.session.add(mailing)
    db.session.flush()
    now = datetime.now(UTC)
    db.session.add_all(Recipient(mailing_id=mailing.id, address=f"s{i}@example.org",
                                 response=Response.SENT.value, handed_off_at=now,
                                 message_id=f"s{i}.x@sendboard.local") for i in range(n))
    totals.bump(mailing.id, {"response:sent": n})
    db.session.commit()
    return mailing.id


@pytest.mark.parametrize("fmt", ["generic", "sendgrid"])
def test_simulate_posts_through_the_webhook(app, server, fmt):
    mailing_id = sent_mailing(200)
    result = app.test_cli_runner().invoke(args=[
        "simulate", str(mailing_id), "--speed", "1e9", "--url", server, "--seed", "3",
        "--format", fmt])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    stored = db.session.scalar(select(func.count()).select_from(ResponseEvent))
    assert stored == len(plan(list(range(200)), random.Random(3)))
    c = totals.get(mailing_id)
    assert c.get("response:sent", 0) == 0  # every recipient got an outcome
    assert c["delivered_unique"] > 150 and c["opens"] > 20


def test_simulate_refuses_without_a_secret(app, server):
    app.config["GENERIC_WEBHOOK_SECRET"] = ""
    mailing_id = sent_mailing(3)
    result = app.test_cli_runner().invoke(args=["simulate", str(mailing_id), "--url", server])
    assert result.exit_code != 0 and "GENERIC_WEBHOOK_SECRET" in result.output


def test_plan_is_realistic():
    events = plan(list(range(10_000)), random.Random(1))
    firsts = [k for _, _, k in events if k in ("delivered", "soft_bounce", "hard_bounce",
                                                "blocked")]
    assert len(firsts) == 10_000
    assert 0.93 < firsts.count("delivered") / 10_000 < 0.97
    assert [t for t, _, _ in events] == sorted(t for t, _, _ in events)
