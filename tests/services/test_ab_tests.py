"""A/B tests of subjects and from-names, end to end on a real worker, Redis and SMTP server:
every eligible recipient in exactly one variant or the held remainder, stable through a crash,
the winner by human opens, the remainder sent with it; never anyone not eligible."""

from __future__ import annotations

import email
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header

import pytest
from sqlalchemy import func, select, update

from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import AuditEntry, Contact, EmailType, Mailing, MailingVariant, Recipient, TypeOptOut
from app.services import ab_tests, mailings, windows
from tests.factories import make_audience, make_mailing, run_worker


def set_up_test(mailing: Mailing, share: int = 50, variants: int = 2, wait: int = 60,
                metric: str = "open") -> list[MailingVariant]:
    form = {"ab": "on", "ab_share": str(share), "ab_wait_minutes": str(wait), "ab_metric": metric}
    subjects = ["Autumn sale {{ name }}", "Last days, {{ name }}", "Open me", "Hello"]
    for n in range(variants):
        form[f"variant_subject_{n}"] = subjects[n]
        form[f"variant_from_{n}"] = f"Shop {'ABCD'[n]}"
    ab_tests.save_setup(mailing, form)
    db.session.commit()
    return ab_tests.variants_of(mailing.id)


def by_contact(mailing_id: int) -> dict[int, tuple[int | None, str]]:
    db.session.expire_all()
    return {r.contact_id: (r.variant_id, r.response) for r in db.session.execute(
        select(Recipient).where(Recipient.mailing_id == mailing_id)).scalars()}


def subject_and_from(raw: bytes) -> tuple[str, str]:
    msg = email.message_from_bytes(raw)
    return str(make_header(decode_header(msg["Subject"]))), msg["From"]


def test_preparing_puts_every_eligible_recipient_in_one_variant_or_the_held_remainder(app):
    audience = make_audience(103)
    mailing = make_mailing([audience])
    variants = set_up_test(mailing, share=30, variants=3)
    mailing.status = Status.PREPARING.value
    db.session.commit()
    counts = mailings.prepare(mailing.id)
    assert counts == {Response.PLANNED.value: 103}
    rows = by_contact(mailing.id)
    per_variant = Counter(v for v, _ in rows.values())
    # 30% of 103 is 30.9: 30 test, split 10/10/10; the other 73 held for the winner.
    assert per_variant == Counter({variants[0].id: 10, variants[1].id: 10, variants[2].id: 10,
                                   None: 73})
    held = db.session.execute(select(func.count()).select_from(Recipient).where(
        Recipient.mailing_id == mailing.id, Recipient.release_at == windows.HELD)).scalar_one()
    assert held == 73 and ab_tests.held(mailing.id) == 73


def test_the_split_is_the_same_after_a_crash_in_preparation_and_stays_through_sending(
        app, redis_conn, smtp, monkeypatch):  # noqa: F811
    mailing = make_mailing([make_audience(60)])
    set_up_test(mailing, share=40)
    mailing.status = Status.PREPARING.value
    db.session.commit()

    # A crash right after the split, inside the preparation's transaction: nothing is kept.
    def crash(*_args, **_kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(windows, "assign", crash)
    with pytest.raises(RuntimeError):
        mailings.prepare(mailing.id)
    db.session.rollback()
    assert db.session.execute(select(func.count()).select_from(Recipient)).scalar_one() == 0
    monkeypatch.undo()
    db.session.refresh(mailing)
    assert mailing.status == Status.PREPARING.value

    mailings.prepare(mailing.id)
    first = by_contact(mailing.id)
    # The same audience splits the same way, whatever the recipient ids.
    recipients = db.session.execute(select(Recipient.id, Recipient.contact_id)
                                    .where(Recipient.mailing_id == mailing.id)).all()
    assert len(recipients) == 60
    assert mailings.prepare(mailing.id) is None  # a second preparation changes nothing
    from jobs.enqueue import kick_sending

    kick_sending()
    run_worker(redis_conn)  # the test group is sent; the rest is held
    after = by_contact(mailing.id)
    assert {c: v for c, (v, _) in after.items()} == {c: v for c, (v, _) in first.items()}
    sent = Counter(resp for _, resp in after.values())
    assert sent == Counter({"sent": 24, "planned": 36})
    db.session.refresh(mailing)
    assert mailing.status == Status.SENDING.value  # the held remainder keeps it sending


def test_variants_get_their_subject_and_from_name_and_the_human_winner_goes_to_the_rest(
        app, redis_conn, smtp):  # noqa: F811
    mailing = make_mailing([make_audience(40)])
    a, b = set_up_test(mailing, share=50, wait=60)
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    rows = db.session.execute(select(Recipient).where(Recipient.mailing_id == mailing.id,
                                                      Recipient.variant_id.is_not(None))
                              ).scalars().all()
    assert len(rows) == 20
    by_address = {m.rcpt[0]: m for m in smtp.handler.messages}
    for r in rows:
        subject, sender = subject_and_from(by_address[r.address].data)
        name = r.merge_data["name"]
        if r.variant_id == a.id:
            assert (subject, sender) == (f"Autumn sale {name}", "Shop A <news@shop.example>")
        else:
            assert (subject, sender) == (f"Last days, {name}", "Shop B <news@shop.example>")

    # A is opened a lot, but by machines (privacy proxies); B by three people.
    a_ids = [r.id for r in rows if r.variant_id == a.id]
    b_ids = [r.id for r in rows if r.variant_id == b.id]
    db.session.execute(update(Recipient).where(Recipient.id.in_(a_ids))
                       .values(machine_opens=3, response=Response.OPENED.value))
    db.session.execute(update(Recipient).where(Recipient.id.in_(b_ids[:3]))
                       .values(opens=1, response=Response.OPENED.value))
    db.session.commit()
    assert [r.winner for r in ab_tests.figures(mailing)] == [False, False]
    figures = {r.letter: r for r in ab_tests.figures(mailing)}
    assert (figures["A"].sent, figures["A"].opened, figures["A"].machine_opened) == (10, 0, 10)
    assert (figures["B"].opened, figures["B"].open_rate) == (3, "30.0%")

    # Before the wait is over nothing is decided.
    due = ab_tests.due_at(mailing)
    assert due is not None
    last = max(r.handed_off_at for r in rows)
    # The wait counts from the last test message (sent in the second sending started).
    assert due == max(last, mailing.started_at) + timedelta(minutes=60)
    assert ab_tests.decide_due(now=due - timedelta(seconds=1)) == []
    # An hour passes.
    for r in rows:
        r.handed_off_at -= timedelta(minutes=61)
    mailing.started_at -= timedelta(minutes=61)
    db.session.commit()
    assert ab_tests.decide_due() == [mailing.id]
    db.session.refresh(mailing)
    assert (mailing.ab_winner_id, mailing.ab_decided_by) == (b.id, "auto")
    assert ab_tests.decide_due() == []  # decided once

    from jobs.enqueue import kick_sending

    kick_sending()
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    received = Counter(m.rcpt[0] for m in smtp.handler.messages)
    assert len(received) == 40 and set(received.values()) == {1}  # everyone exactly once
    rest = db.session.execute(select(Recipient).where(Recipient.mailing_id == mailing.id,
                                                      Recipient.id.not_in(a_ids + b_ids))
                              ).scalars().all()
    assert len(rest) == 20 and {r.variant_id for r in rest} == {b.id}
    by_address = {m.rcpt[0]: m for m in smtp.handler.messages}
    for r in rest:
        subject, sender = subject_and_from(by_address[r.address].data)
        assert subject == f"Last days, {r.merge_data['name']}" and sender.startswith("Shop B")
    # The test figures leave the remainder out.
    figures = {r.letter: r for r in ab_tests.figures(mailing)}
    assert figures["B"].sent == 10 and figures["B"].winner


def test_staff_pick_the_winner_early_audited_and_the_page_shows_each_variant(
        app, auth, client, redis_conn, smtp):  # noqa: F811
    auth.login()
    mailing = make_mailing([make_audience(20)])
    a, b = set_up_test(mailing, share=50, wait=600)
    mailings.send_now(mailing)
    run_worker(redis_conn)
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert 'id="ab-figures"' in page and "Autumn sale {{ name }}" in page
    assert "10 held for the winner" in page
    assert page.count("Pick ") >= 2
    # Not one of its variants: refused, nothing decided.
    response = client.post(f"/mailings/{mailing.id}/ab-winner", data={"variant_id": "999999"})
    assert response.status_code == 302
    db.session.refresh(mailing)
    assert mailing.ab_winner_id is None
    response = client.post(f"/mailings/{mailing.id}/ab-winner", data={"variant_id": str(a.id)})
    assert response.status_code == 302
    db.session.refresh(mailing)
    assert (mailing.ab_winner_id, mailing.ab_decided_by) == (a.id, "staff")
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "mailing.ab_winner")
                               ).scalar_one()
    assert "variant A" in entry.detail
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert "Winner: variant A" in page and "picked by staff" in page
    # Picking again changes nothing.
    client.post(f"/mailings/{mailing.id}/ab-winner", data={"variant_id": str(b.id)})
    db.session.refresh(mailing)
    assert mailing.ab_winner_id == a.id


def test_a_test_never_reaches_contacts_who_may_not_be_mailed(app, redis_conn, smtp):  # noqa: F811
    newsletter = EmailType(name="Newsletter")
    db.session.add(newsletter)
    audience = make_audience(30)
    db.session.commit()
    contacts = db.session.execute(select(Contact).order_by(Contact.id)).scalars().all()
    contacts[0].do_not_email = True
    contacts[1].valid = False
    contacts[2].last_transaction_at = datetime.now(UTC) - timedelta(days=3000)
    contacts[2].created_at = datetime.now(UTC) - timedelta(days=3000)
    db.session.add(TypeOptOut(contact_id=contacts[3].id, email_type_id=newsletter.id))
    db.session.commit()
    barred = {c.email for c in contacts[:4]}
    mailing = make_mailing([audience], email_type_id=newsletter.id)
    set_up_test(mailing, share=100, variants=4)
    mailings.send_now(mailing)
    run_worker(redis_conn)
    rows = by_contact(mailing.id)
    assert sum(1 for v, _ in rows.values() if v is not None) == 26  # the 26 eligible, 100% test
    for c in contacts[:4]:
        assert rows[c.id][0] is None and rows[c.id][1] != "sent"
    received = {m.rcpt[0] for m in smtp.handler.messages}
    assert not received & barred and len(received) == 26


def test_setup_refusals_leave_the_mailing_unchanged(app):
    mailing = make_mailing([make_audience(2)])
    for form, message in [
        ({"ab": "on", "ab_share": "20", "ab_wait_minutes": "60", "ab_metric": "open",
          "variant_subject_0": "Only one"}, "2 to 4 variants"),
        ({"ab": "on", "ab_share": "abc", "ab_wait_minutes": "60", "ab_metric": "open",
          "variant_subject_0": "A", "variant_subject_1": "B"}, "whole number"),
        ({"ab": "on", "ab_share": "20", "ab_wait_minutes": "60", "ab_metric": "open",
          "variant_subject_0": "A {{ name", "variant_subject_1": "B"}, "Variant A subject"),
        ({"variant_from_1": "Shop"}, "from-name but no subject"),
    ]:
        with pytest.raises(ab_tests.AbSetupError, match=message):
            ab_tests.save_setup(mailing, form)
        db.session.rollback()
    assert mailing.ab_share == 0 and ab_tests.variants_of(mailing.id) == []


def test_a_copy_keeps_the_variants_and_the_window_but_not_the_winner(app):
    mailing = make_mailing([make_audience(2)])
    a, b = set_up_test(mailing, share=30, wait=45, metric="click")
    windows.save_setup(mailing, {"window": "on", "window_start": "09:00", "window_end": "17:00",
                                 "window_day": ["0", "2"], "local_delivery": "on"})
    mailing.ab_winner_id, mailing.ab_decided_by = b.id, "staff"
    db.session.commit()
    clone = mailings.copy(mailing, owner_id=None)
    db.session.commit()
    copied = ab_tests.variants_of(clone.id)
    assert [(v.position, v.subject, v.from_name) for v in copied] == [
        (0, a.subject, "Shop A"), (1, b.subject, "Shop B")]
    assert {v.id for v in copied}.isdisjoint({a.id, b.id})
    assert (clone.ab_share, clone.ab_wait_minutes, clone.ab_metric) == (30, 45, "click")
    assert (clone.window_start_minute, clone.window_end_minute, clone.window_days) == (540, 1020, 5)
    assert clone.local_delivery is True and clone.ab_winner_id is None


def test_a_worker_crash_during_the_test_keeps_every_assignment(app, redis_conn, smtp):
    from app.services import sending
    from app.services.ledger import Ledger, handing_off_entry, sent_entry
    from jobs.enqueue import kick_sending
    from jobs.sending import prepare_mailing

    mailing = make_mailing([make_audience(20)])
    set_up_test(mailing, share=50)
    mailings.send_now(mailing)
    prepare_mailing(mailing.id)
    before = by_contact(mailing.id)
    claim = sending.claim_batch(redis_conn, worker="dead")
    assert claim is not None
    claimed = db.session.execute(select(Recipient).where(Recipient.batch_id == claim.batch_id)
                                 .order_by(Recipient.id)).scalars().all()
    assert len(claimed) == 10 and all(r.variant_id is not None for r in claimed)  # none held
    first = claimed[0]
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    Ledger(redis_conn, claim.batch_id).append(handing_off_entry(first.id),
                                              sent_entry(first.id, at, "<m0@shop.example>"))
    redis_conn.delete(f"sb:alive:{claim.batch_id}")  # the worker died
    assert sending.settle_abandoned(redis_conn) == 1
    db.session.expire_all()
    settled = db.session.get(Recipient, first.id)
    assert settled.response == "sent" and settled.merge_data["variant"] == settled.variant_id
    kick_sending()
    run_worker(redis_conn)
    after = by_contact(mailing.id)
    assert {c: v for c, (v, _) in after.items()} == {c: v for c, (v, _) in before.items()}
    assert Counter(r for _, r in after.values()) == Counter({"sent": 10, "planned": 10})
    assert len(smtp.handler.messages) == 9  # the one recorded by the dead worker is not resent
