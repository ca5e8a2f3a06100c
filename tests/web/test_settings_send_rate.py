"""Settings page: each provider's sending rate as the rate module sees it — configured, current
after a slow-down reply, and when the server asked to slow down."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime

from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import Provider
from app.providers import rate
from app.services import settings, totals
from tests.factories import build_reported as build


def _cell(page: str, testid: str) -> list[str]:
    """The words of a provider's send-rate cell."""
    found = re.search(rf'data-testid="{testid}">(.*?)</span>(?=</td>|</p>)', page, re.S)
    assert found, f"{testid} not on the page"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).split()


def _shown_rate(page: str, testid: str) -> str:
    words = _cell(page, testid)
    return words[0].rstrip(",")


def _providers() -> tuple[Provider, Provider]:
    relay = Provider(name="Relay", host="smtp.example.org", port=587, rate_per_second=40,
                     is_default=True)
    spare = Provider(name="Spare", host="smtp2.example.org", port=25, rate_per_second=0)
    db.session.add_all([relay, spare])
    db.session.commit()
    return relay, spare


def test_the_shown_rate_is_the_rate_modules_after_a_slow_down(app, auth, client, redis_conn):
    settings.set("rate_per_second", "15")
    relay, spare = _providers()
    _, key, limit = rate.provider_settings()  # the key the workers count the default under
    assert limit == 40.0
    # The server asked to slow down 12 s ago: halved to 20, then two steps of 2 back up.
    cut_at = time.time() - 12
    assert rate.slow_down(redis_conn, key, limit, now=cut_at) == 20.0
    auth.login("admin@example.org", role="admin")
    page = client.get("/settings").get_data(as_text=True)

    expected = rate.current_rate(redis_conn, key, limit)
    assert 20.0 < expected < 40.0
    assert _shown_rate(page, f"send-rate-{relay.id}") == f"{expected:,.1f}"
    words = " ".join(_cell(page, f"send-rate-{relay.id}"))
    at = datetime.fromtimestamp(rate.read_cut(redis_conn, key).at, UTC)
    assert f"slow-down reply at {at:%Y-%m-%d %H:%M:%S} UTC" in words
    assert "growing back to 40.0" in words
    # The other provider was never slowed down: its rate is the global setting it falls back to.
    assert _shown_rate(page, f"send-rate-{spare.id}") == "15.0"
    assert "slow-down" not in " ".join(_cell(page, f"send-rate-{spare.id}"))


def test_a_recovered_rate_shows_the_configured_one_and_no_slow_down(app, auth, client,
                                                                    redis_conn):
    relay, _ = _providers()
    _, key, limit = rate.provider_settings()
    steps = rate.RECOVER_STEPS * rate.RECOVER_EVERY
    rate.slow_down(redis_conn, key, limit, now=time.time() - steps - 1)
    auth.login("admin@example.org", role="admin")
    page = client.get("/settings").get_data(as_text=True)
    assert _shown_rate(page, f"send-rate-{relay.id}") == "40.0"
    assert "slow-down" not in " ".join(_cell(page, f"send-rate-{relay.id}"))
    assert rate.read_cut(redis_conn, key) is None


def test_without_a_provider_the_environments_server_rate_is_shown(app, auth, client,
                                                                  redis_conn):
    settings.set("rate_per_second", "0")
    _, key, limit = rate.provider_settings()
    assert limit == 0.0
    auth.login("admin@example.org", role="admin")
    page = client.get("/settings").get_data(as_text=True)
    assert _cell(page, "send-rate-env") == ["no", "limit"]
    now = time.time()
    redis_conn.set(f"sb:rate:{key}:{int(now) - 1}", 30)  # 30 went out in the last second
    floor = rate.slow_down(redis_conn, key, limit, now=now)
    page = client.get("/settings").get_data(as_text=True)
    assert floor == 15.0
    assert _shown_rate(page, "send-rate-env") == f"{rate.current_rate(redis_conn, key, 0):,.1f}"
    assert "growing back to no limit" in " ".join(_cell(page, "send-rate-env"))


def test_an_unreachable_redis_shows_the_rate_as_unknown(app, auth, client, monkeypatch):
    _providers()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    auth.login("admin@example.org", role="admin")
    response = client.get("/settings")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert page.count("unknown (Redis unreachable)") == 2


def test_the_mailing_page_shows_the_same_rate_while_sending(app, auth, client, redis_conn):
    _providers()
    mailing = build([Response.SENT] * 2 + [Response.PLANNED] * 3, status=Status.SENDING,
                    name="Spring")
    totals.bump(mailing.id, {"recipients": 5, "eligible": 5})
    db.session.commit()
    auth.login()
    live = client.get(f"/mailings/{mailing.id}/_live").get_data(as_text=True)
    assert 'data-testid="slowed-to"' not in live  # at the configured rate: nothing to say
    _, key, limit = rate.provider_settings()
    rate.slow_down(redis_conn, key, limit, now=time.time() - 7)  # halved to 20, one step back
    live = client.get(f"/mailings/{mailing.id}/_live").get_data(as_text=True)
    shown = re.search(r'data-testid="slowed-to">([\d,.]+) messages/s', live)
    assert shown and shown.group(1) == f"{rate.current_rate(redis_conn, key, limit):,.1f}"
    assert shown.group(1) == "22.0"
