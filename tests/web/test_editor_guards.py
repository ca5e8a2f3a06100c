"""The mailing editor's guards: sender addresses judged by form alone (the demo's .local address
saves), errors that name their field where the form is, no sending without an unsubscribe link,
warnings for unknown merge fields, the one-off history's rendered subject, and transaction dates
no further than a day ahead."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.domain.lifecycle import Status
from app.extensions import db
from app.models import Contact, Mailing, Transaction, User
from app.services import mailings
from app.services.mailings import MailingError
from tests.factories import make_audience, make_mailing, responses_of, run_worker

HTML_OK = '<p>Hi {{ name }}</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>'
TEXT_OK = "Hi {{ name }}\nUnsubscribe: {{ unsubscribe_url }}\n"


def _editor_data(mailing: Mailing, **changes: str) -> dict[str, object]:
    data: dict[str, object] = {
        "name": mailing.name, "subject": mailing.subject, "from_name": mailing.from_name,
        "from_address": mailing.from_address, "reply_to": mailing.reply_to,
        "html_body": mailing.html_body, "text_body": mailing.text_body,
        "email_type_id": str(mailing.email_type_id or 0), "owner_id": str(mailing.owner_id or 0),
        "lists": [str(i) for i in mailings.list_ids(mailing)], "prevent_duplicates": "y",
    }
    data.update(changes)
    return data


# ------------------------------------------------------------------ sender address


def test_the_demo_mailing_saves_and_sends_as_seeded(app, client, redis_conn,
                                                    smtp):  # noqa: F811
    from app.runtime.demo import DEMO_EMAIL, DEMO_MAILING, seed_demo

    login = seed_demo()
    response = client.post("/login", data={"email": DEMO_EMAIL, "password": login.password})
    assert response.status_code == 302
    mailing = db.session.execute(select(Mailing).where(Mailing.name == DEMO_MAILING)).scalar_one()
    assert mailing.from_address == "shop@sendboard.local"

    page = client.get(f"/mailings/{mailing.id}/edit").get_data(as_text=True)
    assert "Warning:" not in page  # the seeded bodies carry the unsubscribe link
    saved = client.post(f"/mailings/{mailing.id}/edit", data=_editor_data(mailing))
    assert saved.status_code == 302, saved.get_data(as_text=True)

    # A new mailing starts from the signed-in user's address: demo@sendboard.local saves too.
    new = client.get("/mailings/new").get_data(as_text=True)
    assert 'value="demo@sendboard.local"' in new
    created = client.post("/mailings/new", data={
        "name": "Second", "subject": "Hi", "from_address": DEMO_EMAIL, "email_type_id": "0",
        "html_body": HTML_OK, "text_body": TEXT_OK})
    assert created.status_code == 302
    assert db.session.execute(
        select(Mailing.from_address).where(Mailing.name == "Second")).scalar_one() == DEMO_EMAIL

    db.session.expire_all()
    mailing = db.session.get(Mailing, mailing.id)
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    sent = responses_of(mailing)["sent"]
    assert sent > 0 and len(smtp.by_recipient()) == sent


@pytest.mark.parametrize("address", ["news@sendboard.local", "a@shop.test", "b@mail.internal",
                                     "c@example.com", "anna@bücher.de"])
def test_sender_addresses_are_judged_by_form_alone(app, auth, client, address):
    auth.login()
    response = client.post("/mailings/new", data={
        "name": "N", "subject": "S", "from_address": address, "reply_to": address,
        "email_type_id": "0", "html_body": HTML_OK, "text_body": TEXT_OK})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert db.session.execute(select(Mailing.from_address)).scalar_one() == address


def test_a_bad_address_is_named_beside_its_field_and_in_the_summary(app, auth, client):
    auth.login()
    response = client.post("/mailings/new", data={
        "name": "N", "subject": "S", "from_address": "news@", "reply_to": "no at sign",
        "email_type_id": "0", "html_body": HTML_OK, "text_body": TEXT_OK})
    assert response.status_code == 200
    page = html.unescape(response.get_data(as_text=True))
    assert "Not saved: 2 fields to correct (From address, Reply-to)." in page
    beside = re.search(r'id="f-from"[^>]*>\s*<p class="error" id="err-from_address">([^<]*)</p>',
                       page)
    assert beside is not None
    assert beside.group(1) == "From address: news@ is not an email address: the domain is missing."
    assert '<p class="error" id="err-reply_to">Reply-to: no at sign is not an email address' in page
    assert db.session.execute(select(func.count(Mailing.id))).scalar_one() == 0


def test_one_off_errors_show_beside_the_form_with_what_was_typed(app, auth, client):
    auth.login()
    make_audience(1)
    response = client.post("/mailings/one-off/1", data={
        "from_address": "me@", "subject": "Your order", "text_body": "Typed with care"})
    assert response.status_code == 422
    page = html.unescape(response.get_data(as_text=True))
    form = page[page.index('id="one-off"'):]
    assert form.startswith('id="one-off" open>')
    assert ("Email not sent: From address: me@ is not an email address: the domain is missing."
            in form)
    assert page.index("one-off-errors") > page.index('id="history"')  # not at the page's top
    assert "Typed with care" in form and 'value="Your order"' in form
    assert db.session.execute(select(Mailing)).first() is None


def test_one_off_from_a_local_domain_is_sent(app, auth, client, redis_conn,
                                             smtp):  # noqa: F811
    auth.login()
    make_audience(1)
    response = client.post("/mailings/one-off/1", data={
        "from_address": "demo@sendboard.local", "subject": "Hi", "text_body": "Hello"})
    assert response.status_code == 302
    run_worker(redis_conn)
    [message] = smtp.handler.messages
    assert b"From: demo@sendboard.local" in message.data


# ------------------------------------------------------------------ unsubscribe link


@pytest.mark.parametrize(("html_body", "text_body", "lacking"), [
    ("<p>Hi</p>", TEXT_OK, "The HTML body needs an unsubscribe link"),
    (HTML_OK, "Hi", "The text part needs an unsubscribe link"),
    ("<p>Hi</p>", "Hi", "The HTML body and the text part need an unsubscribe link"),
    ("", "Hi {# {{ unsubscribe_url }} #}", "The text part needs an unsubscribe link"),
])
def test_no_send_or_schedule_without_an_unsubscribe_link(app, html_body, text_body, lacking):
    mailing = make_mailing([make_audience(2)], html_body=html_body, text_body=text_body)
    with pytest.raises(MailingError) as refused:
        mailings.send_now(mailing)
    assert str(refused.value).startswith(lacking)
    assert "{{ unsubscribe_url }}" in str(refused.value)
    assert '<a href="{{ unsubscribe_url }}">Unsubscribe</a>' in str(refused.value)
    with pytest.raises(MailingError, match="unsubscribe link"):
        mailings.schedule(mailing, datetime.now() + timedelta(days=2), "UTC")
    db.session.refresh(mailing)
    assert mailing.status == Status.DRAFT.value and mailing.send_at is None


@pytest.mark.parametrize(("html_body", "text_body"), [
    (HTML_OK, TEXT_OK),
    ("", TEXT_OK),  # an empty part is not sent, so it needs no link
    ('<a href="{{ preferences_url }}">Your preferences</a>', "Manage: {{ preferences_url }}"),
    ("{% if name %}{{ unsubscribe_url }}{% endif %}", "{{ unsubscribe_url | upper }}"),
])
def test_either_link_in_every_part_lets_it_send(app, html_body, text_body):
    mailing = make_mailing([make_audience(2)], html_body=html_body, text_body=text_body)
    mailings.send_now(mailing)
    assert mailing.status == Status.PREPARING.value


def test_send_now_button_refuses_with_how_to_add_the_link(app, auth, client):
    auth.login()
    mailing = make_mailing([make_audience(2)], text_body="No link here")
    response = client.post(f"/mailings/{mailing.id}/send-now", follow_redirects=True)
    page = html.unescape(response.get_data(as_text=True))
    assert "The text part needs an unsubscribe link before the mailing can be sent." in page
    assert "Add {{ unsubscribe_url }} to it" in page
    db.session.refresh(mailing)
    assert mailing.status == Status.DRAFT.value


def test_editor_warns_about_a_missing_link_on_save_and_in_the_preview(app, auth, client):
    auth.login()
    mailing = make_mailing([make_audience(2)])
    response = client.post(f"/mailings/{mailing.id}/edit",
                           data=_editor_data(mailing, html_body="<p>Hi {{ name }}</p>"),
                           follow_redirects=True)
    page = html.unescape(response.get_data(as_text=True))
    assert "Mailing saved." in page  # a warning, not an error: the draft is kept
    assert ("Warning: The HTML body has no unsubscribe link, so the mailing cannot be sent or"
            " scheduled.") in page
    preview = html.unescape(client.get(f"/mailings/{mailing.id}/preview").get_data(as_text=True))
    assert "Warning: The HTML body has no unsubscribe link" in preview
    fixed = client.post(f"/mailings/{mailing.id}/edit",
                        data=_editor_data(mailing, html_body=HTML_OK), follow_redirects=True)
    assert "Warning" not in fixed.get_data(as_text=True)


# ------------------------------------------------------------------ merge fields


def test_unknown_merge_fields_are_warnings_with_the_fields_that_exist(app, auth, client):
    auth.login()
    lst = make_audience(2)
    contact = db.session.get(Contact, 1)
    contact.fields = {"city": "Lyon", "plan": "gold"}
    db.session.commit()
    mailing = make_mailing([lst], subject="{{ first_name }}, news",
                           html_body=HTML_OK.replace("Hi", "Hi {{ city }} {{ first_name }}"),
                           text_body=TEXT_OK + "{% set shop = 'S' %}{{ shop }} {{ zip }}")
    page = html.unescape(client.get(f"/mailings/{mailing.id}/edit").get_data(as_text=True))
    warning = ("Warning: Unknown merge fields {{ first_name }}, {{ zip }}: no contact has them,"
               " so they render as blank. Fields that exist: name, email, unsubscribe_url,"
               " preferences_url, city, plan.")
    assert warning in page
    preview = html.unescape(client.get(f"/mailings/{mailing.id}/preview").get_data(as_text=True))
    assert warning in preview and "Subject:</strong> , news" in preview

    # A warning does not stop saving or sending.
    saved = client.post(f"/mailings/{mailing.id}/edit", data=_editor_data(mailing),
                        follow_redirects=True)
    assert "Mailing saved." in saved.get_data(as_text=True)
    assert warning in html.unescape(saved.get_data(as_text=True))
    db.session.expire_all()
    mailings.send_now(db.session.get(Mailing, mailing.id))


def test_no_warning_for_known_fields(app, auth, client):
    auth.login()
    lst = make_audience(1)
    db.session.get(Contact, 1).fields = {"city": "Lyon"}
    db.session.commit()
    mailing = make_mailing([lst], subject="{{ name }} {{ email }}",
                           html_body=HTML_OK + "{{ city }} {{ fields.city }}"
                           "{% for i in range(2) %}{{ i }}{% endfor %}",
                           text_body=TEXT_OK + "{{ preferences_url }}")
    page = client.get(f"/mailings/{mailing.id}/edit").get_data(as_text=True)
    assert "Warning" not in page


def test_template_variables_from_the_syntax_tree():
    from app.services.rendering import (
        bodies_without_unsubscribe,
        has_unsubscribe_link,
        template_variables,
        unknown_variables,
    )

    source = ("{% set x = 1 %}{{ x }}{{ name }}{# {{ a }} #}{% for i in range(3) %}{{ i }}"
              "{{ first_name }}{% endfor %}{{ fields.city }}{% macro m(y) %}{{ y }}{% endmacro %}")
    assert template_variables(source) == {"name", "first_name", "fields"}
    assert not has_unsubscribe_link("unsubscribe_url {# {{ unsubscribe_url }} #}")
    assert has_unsubscribe_link("{{ preferences_url }}")
    assert bodies_without_unsubscribe("<p>x</p>", "") == ["HTML body"]
    assert bodies_without_unsubscribe("", "  ") == ["HTML body", "text part"]
    assert unknown_variables(["{{ a }}{{ name }}", "{{ b }}{% if %}"], {"b"}) == ["a"]


# ------------------------------------------------------------------ one-off history


def test_one_off_history_shows_the_subject_as_received(app, auth, client, redis_conn,
                                                       smtp):  # noqa: F811
    auth.login()
    make_audience(1)
    response = client.post("/mailings/one-off/1", data={
        "from_address": "staff@example.org", "subject": "About your order, {{ name }}",
        "text_body": "Hello {{ name }}"})
    assert response.status_code == 302
    run_worker(redis_conn)
    mailing = db.session.execute(select(Mailing)).scalar_one()
    assert mailing.subject == "About your order, {{ name }}"  # the template is kept for rebuilds
    page = client.get("/contacts/1").get_data(as_text=True)
    history = page[page.index('id="history"'):page.index('id="one-off"')]
    assert "One-off to user0@example.org: About your order, User 0" in history
    assert "{{ name }}" not in history
    [message] = smtp.handler.messages
    assert b"Subject: About your order, User 0" in message.data


def test_one_off_that_cannot_render_for_the_contact_is_refused(app, auth, client):
    auth.login()
    make_audience(1)
    response = client.post("/mailings/one-off/1", data={
        "from_address": "staff@example.org", "subject": "{{ name + 1 }}", "text_body": "Hi"})
    assert response.status_code == 422
    assert "Email not sent: The message cannot be used: render failed" in response.get_data(
        as_text=True)
    assert db.session.execute(select(Mailing)).first() is None


# ------------------------------------------------------------------ transaction dates


def test_domain_rule_allows_a_day_ahead_not_more():
    from app.domain.transactions import future_date_problem

    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert future_date_problem(now + timedelta(hours=23), now) is None
    assert future_date_problem(now - timedelta(days=900), now) is None
    assert future_date_problem(datetime(2026, 3, 2, 12, 0), now) is None  # naive is UTC
    assert future_date_problem(now + timedelta(days=1, minutes=1), now) == (
        "2026-03-02 12:01 UTC is in the future; a transaction may be dated at most one day"
        " ahead (until 2026-03-02 12:00 UTC)")


def test_staff_form_refuses_a_future_date_and_saves_nothing(app, auth, client):
    auth.login()
    make_audience(1)
    before = db.session.get(Contact, 1).last_transaction_at
    response = client.post("/contacts/1/transactions", data={
        "occurred_at": "2030-01-02T03:04", "reference": "order 7"}, follow_redirects=True)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert ("Transaction not recorded: When (UTC): 2030-01-02 03:04 UTC is in the future; a"
            " transaction may be dated at most one day ahead") in page
    assert db.session.execute(select(func.count(Transaction.id))).scalar_one() == 0
    db.session.expire_all()
    assert db.session.get(Contact, 1).last_transaction_at == before

    soon = datetime.now(UTC) + timedelta(hours=2)
    ok = client.post("/contacts/1/transactions", data={"occurred_at": f"{soon:%Y-%m-%dT%H:%M}"})
    assert ok.status_code == 302
    assert db.session.execute(select(func.count(Transaction.id))).scalar_one() == 1


def test_service_and_cli_refuse_a_future_date(app):
    from app.services import contacts

    make_audience(1)
    with pytest.raises(contacts.ContactError, match="is in the future"):
        contacts.record_transaction("user0@example.org", datetime(2030, 1, 1, tzinfo=UTC))
    result = app.test_cli_runner().invoke(
        args=["record-transaction", "user0@example.org", "--at", "2030-05-06"])
    assert result.exit_code != 0
    assert "2030-05-06 00:00 UTC is in the future" in result.output
    assert db.session.execute(select(func.count(Transaction.id))).scalar_one() == 0
    assert db.session.execute(select(func.count(User.id))).scalar_one() == 0
