"""Lists and segments through the API."""

from __future__ import annotations

from sqlalchemy import func, select

from app.extensions import db
from app.models import ContactList, ListMember
from tests.api.conftest import add_contact, table_counts


def test_lists_members_add_remove(client, headers):
    a = add_contact("a@example.org")
    add_contact("b@example.org")
    friends = ContactList(name="Friends")
    vip = ContactList(name="VIP", rule={"match": "all", "conditions": [
        {"subject": "email", "op": "contains", "value": "a@"}]})
    db.session.add_all([friends, vip])
    db.session.commit()

    added = client.post(f"/api/v1/lists/{friends.id}/members",
                        json={"contact_ids": [a.id, 123456], "emails": ["B@example.org", "zz@example.org"]},
                        headers=headers).get_json()
    assert (added["changed"], added["members"]) == (2, 2)
    assert added["not_found"] == ["123456", "zz@example.org"]
    again = client.post(f"/api/v1/lists/{friends.id}/members", json={"contact_ids": [a.id]},
                        headers=headers).get_json()
    assert again["changed"] == 0

    page = client.get("/api/v1/lists", headers=headers).get_json()
    assert [(x["name"], x["kind"]) for x in page["data"]] == [("Friends", "list"), ("VIP", "segment")]
    assert page["data"][0]["members"] == 2
    members = client.get(f"/api/v1/lists/{friends.id}/members", headers=headers).get_json()
    assert [m["email"] for m in members["data"]] == ["a@example.org", "b@example.org"]
    only = client.get(f"/api/v1/contacts?list_id={friends.id}&limit=1", headers=headers).get_json()
    assert len(only["data"]) == 1 and only["next_cursor"]

    removed = client.open(f"/api/v1/lists/{friends.id}/members", method="DELETE",
                          json={"emails": ["a@example.org"]}, headers=headers).get_json()
    assert (removed["changed"], removed["members"]) == (1, 1)
    assert db.session.execute(select(func.count()).select_from(ListMember)).scalar_one() == 1

    before = table_counts()
    refused = client.post(f"/api/v1/lists/{vip.id}/members", json={"contact_ids": [a.id]}, headers=headers)
    assert refused.status_code == 409
    assert table_counts() == before
    kinds = client.get("/api/v1/lists?kind=segment", headers=headers).get_json()
    assert [x["name"] for x in kinds["data"]] == ["VIP"]
    assert client.get("/api/v1/lists/999", headers=headers).status_code == 404
