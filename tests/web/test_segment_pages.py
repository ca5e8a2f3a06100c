"""Segment pages: create with a live count, edit, list them beside lists, use one as an audience."""

from __future__ import annotations

import io
import re

from app.extensions import db
from app.models import ContactList
from app.services import contacts


def _seed() -> None:
    contacts.import_csv(io.BytesIO(
        b"email,name,city\nann@example.org,Ann,Lyon\nbob@example.org,Bob,Lyon\n"
        b"cy@shop.test,Cy,Paris\n"), list_name=None)


def _rows(**first) -> dict:
    """The form's fields with the first condition row filled and the others left at '-'."""
    data = {"conditions-0-subject": "", "conditions-0-op": "equals",
            "conditions-0-key": "", "conditions-0-value": "", "conditions-0-list_id": ""}
    data.update({f"conditions-0-{k}": v for k, v in first.items()})
    for i in range(1, 5):
        data[f"conditions-{i}-subject"] = ""
    return data


def test_create_a_segment_with_a_live_count_and_see_it_among_the_lists(auth, client):
    auth.login()
    _seed()
    page = client.get("/contacts/segments/new")
    assert page.status_code == 200 and page.data.count(b'aria-label="Condition ') == 25
    rule = _rows(subject="field", key="city", op="equals", value="lyon")
    count = client.post("/contacts/segments/count", data={"match": "all", **rule})
    assert b'data-testid="segment-matching">2<' in count.data
    bad = client.post("/contacts/segments/count", data={"match": "all", **_rows(subject="field",
                                                                                 op="equals")})
    assert b"condition 1: name the custom field" in bad.data
    saved = client.post("/contacts/segments/new",
                        data={"name": "Lyon <b>", "description": "", "match": "all", **rule})
    assert saved.status_code == 302 and saved.headers["Location"] == "/contacts/lists"
    lists = client.get("/contacts/lists").data.decode()
    assert "Lyon &lt;b&gt;" in lists and "Lyon <b>" not in lists
    assert "Rule: field &#39;city&#39; is &#39;lyon&#39;" in lists
    segment = db.session.query(ContactList).filter_by(name="Lyon <b>").one()
    row = re.search(r">Lyon &lt;b&gt;</a>.*?</tr>", lists, re.S).group(0)
    assert ">2</td>" in row
    people = client.get(f"/contacts?list={segment.id}").data.decode()
    assert "ann@example.org" in people and "cy@shop.test" not in people


def test_a_refused_rule_keeps_what_was_typed(auth, client):
    auth.login()
    response = client.post("/contacts/segments/new", data={
        "name": "Recent", "match": "all",
        **_rows(subject="last_transaction", op="within_days", value="0")})
    assert response.status_code == 200
    text = response.data.decode()
    assert "condition 1: the number of days must be between 1 and 36,500" in text
    assert 'value="Recent"' in text
    assert db.session.query(ContactList).count() == 0


def test_edit_a_segment_and_only_a_segment(auth, client):
    auth.login()
    _seed()
    client.post("/contacts/segments/new", data={"name": "Shop", "match": "all",
                                                **_rows(subject="email", op="ends_with",
                                                        value="@shop.test")})
    segment = db.session.query(ContactList).filter_by(name="Shop").one()
    form = client.get(f"/contacts/segments/{segment.id}").data.decode()
    assert 'value="@shop.test"' in form and '<option selected value="ends_with">' in form
    changed = client.post(f"/contacts/segments/{segment.id}", data={
        "name": "Example", "match": "any",
        **_rows(subject="email", op="ends_with", value="@example.org")})
    assert changed.status_code == 302
    db.session.refresh(segment)
    assert segment.name == "Example" and segment.rule["match"] == "any"
    plain = contacts.create_list("Plain")
    assert client.get(f"/contacts/segments/{plain.id}").status_code == 404
    assert client.get("/contacts/segments/999").status_code == 404


def test_the_mailing_editor_counts_a_segment_audience(auth, client):
    auth.login()
    _seed()
    client.post("/contacts/segments/new", data={"name": "Lyon", "match": "all",
                                                **_rows(subject="field", key="city",
                                                        op="equals", value="Lyon")})
    segment = db.session.query(ContactList).filter_by(name="Lyon").one()
    contacts.set_do_not_email(contacts.find_contact("bob@example.org"), "asked")
    editor = client.get("/mailings/new").data.decode()
    assert "Lyon (2)" in editor
    count = client.post("/mailings/audience-count", data={"lists": str(segment.id)})
    text = count.data.decode()
    assert 'data-testid="eligible">1<' in text and "of 2 in the lists" in text
