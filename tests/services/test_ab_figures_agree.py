"""An A/B test's figures on the mailing page add up to the mailing's own: before the winner is
decided, the variants' sent, human openers and human clickers sum to the mailing's figures (an
open or click by a machine makes nobody an opener or clicker), and their recipients plus those
held for the winner are the mailing's eligible audience."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select

from app.extensions import db
from app.models import Contact, Recipient
from app.services import ab_tests, mailings
from tests.factories import figures_of, make_audience, make_mailing, record_event, run_worker


def _ab_rows(page: str) -> dict[str, list[int]]:
    [table] = re.findall(r'<table class="table" id="ab-figures">(.*?)</table>', page, re.S)
    out = {}
    for letter, cells in re.findall(r'<tr id="ab-row-(\w)"[^>]*>(.*?)</tr>', table, re.S):
        numbers = re.findall(r'<td class="num">([\d,.%]+)</td>', cells)
        # recipients, sent, human opens, open rate, clicks, click rate
        out[letter] = [int(numbers[i].replace(",", "")) for i in (0, 1, 2, 4)]
    return out


def test_variant_figures_add_up_to_the_mailings(app, auth, client, redis_conn, smtp):
    auth.login()
    lst = make_audience(30)
    for n in (0, 1):  # not eligible: in no variant and not held
        db.session.execute(select(Contact).where(Contact.email == f"user{n}@example.org")
                           ).scalar_one().do_not_email = True
    db.session.commit()
    mailing = make_mailing([lst])
    form = {"ab": "on", "ab_share": "40", "ab_wait_minutes": "600", "ab_metric": "open",
            "variant_subject_0": "Autumn {{ name }}", "variant_subject_1": "Last days"}
    ab_tests.save_setup(mailing, form)
    db.session.commit()
    mailings.send_now(mailing)
    run_worker(redis_conn)

    tested = db.session.execute(select(Recipient).where(
        Recipient.mailing_id == mailing.id, Recipient.variant_id.is_not(None))
        .order_by(Recipient.id)).scalars().all()
    now = datetime.now(UTC)
    for n, row in enumerate(tested):
        if n % 3 == 0:
            record_event(row.id, kind="open", source="generic", occurred_at=now)
        if n % 4 == 0:
            record_event(row.id, kind="open", source="generic", occurred_at=now, machine=True)
        if n % 5 == 0:
            record_event(row.id, kind="click", source="generic", occurred_at=now)
        if n == 7:
            record_event(row.id, kind="hard_bounce", source="generic", occurred_at=now)

    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    variants = _ab_rows(page)
    own = figures_of(page)
    held = int(re.search(r'<span id="ab-held">([\d,]+) held', page).group(1).replace(",", ""))
    assert set(variants) == {"A", "B"}
    recipients, sent, opened, clicked = (sum(v[i] for v in variants.values()) for i in range(4))
    assert recipients == sent == len(tested) > 0
    assert sent == own["sent"]
    assert opened == own["openers_human"] > 0
    assert clicked == own["clickers_human"] > 0
    assert recipients + held == 28  # the eligible audience: 30 less the 2 not to be emailed
    assert own["not_sent"] == 2
    # Each variant's figures are its own rows.
    for letter, (v_recipients, v_sent, v_opened, v_clicked) in variants.items():
        variant = next(v for v in ab_tests.variants_of(mailing.id)
                       if "AB"[v.position] == letter)
        rows = [r for r in tested if r.variant_id == variant.id]
        for r in rows:
            db.session.refresh(r)
        assert v_recipients == len(rows)
        assert v_sent == sum(r.handed_off_at is not None for r in rows)
        assert v_opened == sum(r.opens > r.machine_opens for r in rows)
        assert v_clicked == sum(r.clicks > r.machine_clicks for r in rows)
    # A machine's open (a privacy proxy) makes nobody an opener: the winner is read from people.
    machine_only = [r for n, r in enumerate(tested) if n % 4 == 0 and n % 3 != 0]
    assert machine_only and all(r.opens == r.machine_opens > 0 for r in machine_only)
    by_id = {f.variant.id: f for f in ab_tests.figures(mailing)}
    assert sum(f.machine_opened for f in by_id.values()) == len(machine_only)
