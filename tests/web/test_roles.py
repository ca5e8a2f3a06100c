"""Roles on the screens: every route that changes something refuses a Viewer, every settings,
users and audit route refuses an Editor, readers can read, and the menu shows only what a role
may use. Styled error pages."""

from __future__ import annotations

import pytest
from flask import Flask

from app.extensions import db
from app.models import Mailing
from app.services import mailings

READ_METHODS = {"GET", "HEAD", "OPTIONS"}
# Routes for people who are not signed in: tracking, unsubscribe, webhooks, sign-in itself; and
# the API, which answers bearer tokens only (a staff session is not a credential there).
PUBLIC_BLUEPRINTS = {"tracking", "webhooks", "api"}
PUBLIC_ENDPOINTS = {"static", "auth.login", "auth.logout", "index"}
ADMIN_BLUEPRINT_PREFIXES = ("settings.", "api_tokens.", "integrations.", "auth.users", "auth.edit_user",
                            "auth.reset_password", "auth.set_active", "auth.audit_log")


def _staff_rules(app: Flask):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint.split(".")[0] in PUBLIC_BLUEPRINTS:
            continue
        yield rule


def _url(app: Flask, rule) -> str:
    values = {name: ("1" if "int" not in type(rule._converters[name]).__name__.lower() else 1)
              for name in rule.arguments}
    with app.test_request_context():
        return app.url_map.bind("localhost").build(rule.endpoint, values)


def _writes(app: Flask) -> list[tuple[str, str, str]]:
    found = []
    for rule in _staff_rules(app):
        for method in sorted((rule.methods or set()) - READ_METHODS):
            found.append((rule.endpoint, method, _url(app, rule)))
    return found


def test_the_walk_finds_the_routes_that_change_things(app: Flask) -> None:
    endpoints = {endpoint for endpoint, _, _ in _writes(app)}
    assert {"mailings.send_now", "mailings.cancel", "contacts.upload", "settings.save",
            "auth.users", "auth.set_active", "mailings.one_off"} <= endpoints
    assert len(endpoints) >= 30


def test_every_route_that_changes_something_refuses_a_viewer(app, auth, client) -> None:
    auth.login("viewer@example.org", role="viewer")
    refused = {}
    for endpoint, method, url in _writes(app):
        response = client.open(url, method=method)
        refused[(endpoint, method)] = response.status_code
    assert {key: code for key, code in refused.items() if code != 403} == {}
    page = client.post("/mailings/1/send-now").get_data(as_text=True)
    assert "Viewers can read but not change anything; ask an admin." in page


def test_a_staff_session_is_not_an_api_credential(app, auth, client) -> None:
    auth.login("admin@example.org", role="admin")
    writes = [(endpoint, method, url) for rule in app.url_map.iter_rules()
              if rule.endpoint.startswith("api.")
              for endpoint, method, url in [(rule.endpoint, m, _url(app, rule))
                                            for m in sorted((rule.methods or set()) - READ_METHODS)]]
    assert len(writes) >= 10
    codes = {(endpoint, method): client.open(url, method=method, json={}).status_code
             for endpoint, method, url in writes}
    assert {key: code for key, code in codes.items() if code != 401} == {}
    assert db.session.scalar(db.select(db.func.count()).select_from(Mailing)) == 0


def test_every_settings_users_and_audit_route_refuses_an_editor(app, auth, client) -> None:
    auth.login("editor@example.org", role="editor")
    codes = {}
    for rule in _staff_rules(app):
        if not rule.endpoint.startswith(ADMIN_BLUEPRINT_PREFIXES):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            codes[(rule.endpoint, method)] = client.open(_url(app, rule), method=method).status_code
    assert len(codes) >= 14
    assert {key: code for key, code in codes.items() if code != 403} == {}
    page = client.get("/settings").get_data(as_text=True)
    assert "settings, users and the audit log are for admins" in page


def _draft() -> Mailing:
    return mailings.create(owner_id=None, name="Spring news", subject="Hi",
                           from_address="news@example.org", html_body="<p>Hi</p>",
                           text_body="Hi")


def test_a_viewer_reads_every_page_without_arguments_and_the_mailing_pages(app, auth,
                                                                           client) -> None:
    auth.login("viewer@example.org", role="viewer")
    mailing = _draft()
    gets = {}
    for rule in _staff_rules(app):
        if rule.arguments or "GET" not in (rule.methods or set()):
            continue
        view = app.view_functions[rule.endpoint]
        action = getattr(view, "required_action", "read")
        if action not in ("read", "export") and not rule.endpoint.endswith(("lists",)):
            continue
        gets[rule.endpoint] = client.get(_url(app, rule)).status_code
    assert gets and {e: c for e, c in gets.items() if c not in (200, 286)} == {}
    assert {"main.home", "mailings.index", "contacts.index", "contacts.lists"} <= set(gets)
    for path in (f"/mailings/{mailing.id}", f"/mailings/{mailing.id}/audience",
                 f"/mailings/{mailing.id}/audience.csv"):
        assert client.get(path).status_code == 200, path
    # The forms for changes are hidden, not just refused.
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert "/send-now" not in page and "/delete" not in page and "Add a step" not in page
    assert client.get("/mailings/new").status_code == 403


def test_the_menu_shows_only_what_a_role_may_use(auth, client) -> None:
    def menu(page: str) -> str:
        return page.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]

    auth.login("viewer@example.org", role="viewer")
    nav = menu(client.get("/home").get_data(as_text=True))
    assert "Mailings" in nav and "Settings" not in nav and "Users" not in nav
    assert "Audit log" not in nav
    auth.logout()
    auth.login("editor@example.org", role="editor")
    nav = menu(client.get("/home").get_data(as_text=True))
    assert "Mailings" in nav and "Settings" not in nav and "Users" not in nav
    auth.logout()
    auth.login("admin@example.org", role="admin")
    nav = menu(client.get("/home").get_data(as_text=True))
    assert "Settings" in nav and "Users" in nav and "Audit log" in nav


@pytest.mark.parametrize(("role", "offered"), [("viewer", False), ("editor", True)])
def test_the_empty_mailings_page_offers_a_first_mailing_only_to_who_may_write_one(
        auth, client, role: str, offered: bool) -> None:
    auth.login(f"{role}@example.org", role=role)
    page = client.get("/mailings").get_data(as_text=True)
    assert "No drafts or finished mailings yet." in page
    assert ("Write your first mailing" in page) is offered
    assert ('href="/mailings/new"' in page) is offered


def test_an_editor_sees_the_mailing_actions(auth, client) -> None:
    auth.login("editor@example.org", role="editor")
    mailing = _draft()
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert f"/mailings/{mailing.id}/delete" in page and "Add a step" in page


def test_styled_not_found_page(auth, client) -> None:
    auth.login()
    response = client.get("/mailings/999999")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert 'data-status="404"' in page and "There is nothing at this address" in page
    assert "Werkzeug" not in page


def test_the_500_page_rolls_the_session_back(app, auth, client) -> None:
    @app.route("/_boom_test", methods=["POST"])
    def boom():
        db.session.add(Mailing(name="half written", status="draft"))
        db.session.flush()
        raise RuntimeError("boom")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    auth.login()
    response = client.post("/_boom_test")
    assert response.status_code == 500
    assert 'data-status="500"' in response.get_data(as_text=True)
    assert db.session.query(Mailing).filter_by(name="half written").count() == 0


def test_the_owner_is_settable_until_sending_then_locked(app, auth, client) -> None:
    from app.services.users import create_user

    other = create_user(email="other@example.org", password="correct horse", role="editor")
    create_user(email="reader@example.org", password="correct horse", role="viewer")
    auth.login("editor@example.org", role="editor")
    mailing = _draft()
    form = client.get(f"/mailings/{mailing.id}/edit").get_data(as_text=True)
    assert 'id="f-owner"' in form and "other@example.org" in form
    assert "reader@example.org" not in form  # a viewer cannot answer for a mailing
    data = {"name": "Spring news", "subject": "Hi", "from_address": "news@example.org",
            "html_body": "<p>Hi</p>", "text_body": "Hi", "owner_id": str(other.id),
            "email_type_id": "0", "prevent_duplicates": "y"}
    response = client.post(f"/mailings/{mailing.id}/edit", data=data)
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(Mailing, mailing.id).owner_id == other.id
    m = db.session.get(Mailing, mailing.id)
    m.status = "sending"
    db.session.commit()
    data["owner_id"] = "0"
    response = client.post(f"/mailings/{mailing.id}/edit", data=data)
    db.session.expire_all()
    assert db.session.get(Mailing, mailing.id).owner_id == other.id


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_a_forbidden_page_is_styled_and_says_why(auth, client, role) -> None:
    auth.login(f"{role}@example.org", role=role)
    response = client.get("/users")
    assert response.status_code == 403
    page = response.get_data(as_text=True)
    assert 'data-status="403"' in page and "ask an admin" in page.lower()
    assert "<title>Not allowed" in page


def test_a_viewer_sees_no_forms_for_changes_on_contact_and_list_pages(auth, client) -> None:
    from app.models import Contact

    contact = Contact(email="bob@example.org", email_key="bob@example.org")
    db.session.add(contact)
    db.session.commit()
    auth.login("viewer@example.org", role="viewer")
    page = client.get(f"/contacts/{contact.id}").get_data(as_text=True)
    assert 'method="post"' not in page.split("</header>", 1)[1]
    assert "The contact may be emailed." in page
    assert "New mailing" not in client.get("/mailings").get_data(as_text=True)
    lists = client.get("/contacts/lists").get_data(as_text=True)
    assert "Create a list" not in lists and "New segment" not in lists
    assert "Import a CSV file" not in client.get("/contacts").get_data(as_text=True)
    auth.logout()
    auth.login("editor@example.org", role="editor")
    page = client.get(f"/contacts/{contact.id}").get_data(as_text=True)
    assert f"/contacts/{contact.id}/do-not-email" in page and "one-off" in page


def test_an_edit_without_the_owner_field_keeps_the_owner(app, auth, client) -> None:
    from app.services.users import create_user, set_active

    gone = create_user(email="gone@example.org", password="correct horse", role="editor")
    auth.login("editor@example.org", role="editor")
    mailing = _draft()
    mailing.owner_id = gone.id
    db.session.commit()
    set_active(gone, False)
    # A deactivated owner is still shown as the owner, not silently dropped.
    assert f'<option selected value="{gone.id}">gone@example.org</option>' in client.get(
        f"/mailings/{mailing.id}/edit").get_data(as_text=True)
    data = {"name": "Spring news 2", "subject": "Hi", "from_address": "news@example.org",
            "html_body": "<p>Hi</p>", "text_body": "Hi", "email_type_id": "0"}
    assert client.post(f"/mailings/{mailing.id}/edit", data=data).status_code == 302
    db.session.expire_all()
    saved = db.session.get(Mailing, mailing.id)
    assert (saved.name, saved.owner_id) == ("Spring news 2", gone.id)


def test_a_viewer_reads_a_segment_without_the_means_to_save_it(auth, client) -> None:
    from app.domain.segments import parse
    from app.services import segments as segment_service

    segment = segment_service.create_segment(
        "Everyone at example", parse({"match": "all", "conditions": [
            {"subject": "email", "op": "contains", "value": "example", "key": None}]}))
    auth.login("viewer@example.org", role="viewer")
    response = client.get(f"/contacts/segments/{segment.id}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Everyone at example" in page
    assert "Save segment" not in page and "hx-post" not in page
    assert client.post(f"/contacts/segments/{segment.id}", data={"name": "x"}).status_code == 403
