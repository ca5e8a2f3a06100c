"""The mailings API's A/B subject test and send window: set on create and by PATCH with the
dashboard's rules and storage, read back, refused with the field named, refused once the mailing
is locked or without the scope, and each variant's figures equal to the mailing page's."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from sqlalchemy import func, select

from app.domain.lifecycle import Status
from app.extensions import db
from app.models import AuditEntry, Mailing, MailingVariant, Recipient
from app.services import ab_tests, windows
from tests.factories import HTML, TEXT, make_audience, record_event, run_worker

ALL = ["mailings:read", "mailings:write", "mailings:send"]
DRAFT = {"name": "Autumn", "subject": "Hi {{ name }}", "from_name": "Shop",
         "from_address": "news@shop.example", "html": HTML, "text": TEXT}
AB = {"variants": [{"subject": "Autumn {{ name }}", "from_name": "Anna at Shop"},
                   {"subject": "Last days"}, {"subject": "  Only this week  "}],
      "share": 30, "metric": "click", "wait_minutes": 90}
WINDOW = {"start": "8:00", "end": "20:30", "days": ["Mon", "wed", "Fri"], "local_delivery": True}
# The same setup as the editor's form posts it.
FORM = {"ab": "on", "ab_share": "30", "ab_wait_minutes": "90", "ab_metric": "click",
        "variant_subject_0": "Autumn {{ name }}", "variant_from_0": "Anna at Shop",
        "variant_subject_1": "Last days", "variant_subject_2": "  Only this week  ",
        "window": "on", "window_start": "08:00", "window_end": "20:30",
        "window_day": ["0", "2", "4"], "local_delivery": "on"}


def stored(mailing_id: int) -> tuple:
    db.session.expire_all()
    m = db.session.get(Mailing, mailing_id)
    variants = [(v.position, v.subject, v.from_name) for v in ab_tests.variants_of(m.id)]
    return (m.ab_share, m.ab_wait_minutes, m.ab_metric, m.window_start_minute,
            m.window_end_minute, m.window_days, m.local_delivery, variants)


def count(model) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def test_create_with_a_test_and_window_stores_what_the_dashboard_stores(app, auth, client,
                                                                      make_token):
    headers = make_token(ALL)[1]
    created = client.post("/api/v1/mailings", json={**DRAFT, "ab_test": AB, "send_window": WINDOW},
                          headers=headers)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    ab, win = body["ab_test"], body["send_window"]
    assert (ab["share"], ab["metric"], ab["wait_minutes"]) == (30, "click", 90)
    assert [(v["letter"], v["subject"], v["from_name"], v["winner"], v["figures"])
            for v in ab["variants"]] == [
        ("A", "Autumn {{ name }}", "Anna at Shop", False, None),
        ("B", "Last days", "", False, None), ("C", "Only this week", "", False, None)]
    assert ab["winner_variant_id"] is None and ab["decided_by"] == "" and ab["held"] == 0
    assert win == {"start": "08:00", "end": "20:30", "days": ["Mon", "Wed", "Fri"],
                   "zone": "UTC", "description": "08:00-20:30, Mon, Wed, Fri",
                   "local_delivery": True}

    # The editor's form, posted for a second mailing, stores exactly the same.
    auth.login()
    other = client.post("/api/v1/mailings", json=DRAFT, headers=headers).get_json()
    assert other["ab_test"] is None and other["send_window"] is None
    saved = client.post(f"/mailings/{other['id']}/ab-window", data=FORM)
    assert saved.status_code == 302
    assert stored(body["id"]) == stored(other["id"]) == (
        30, 90, "click", 8 * 60, 20 * 60 + 30, 1 | 4 | 16, True,
        [(0, "Autumn {{ name }}", "Anna at Shop"), (1, "Last days", ""), (2, "Only this week", "")])

    # Read back, one and in the list, the same as the dashboard's copy reads.
    one = client.get(f"/api/v1/mailings/{body['id']}", headers=headers).get_json()
    theirs = client.get(f"/api/v1/mailings/{other['id']}", headers=headers).get_json()
    assert one["send_window"] == theirs["send_window"] == win
    strip = lambda a: {**a, "variants": [{k: v for k, v in x.items() if k != "id"}  # noqa: E731
                                         for x in a["variants"]]}
    assert strip(one["ab_test"]) == strip(theirs["ab_test"]) == strip(ab)
    listed = {m["id"]: m for m in client.get("/api/v1/mailings", headers=headers).get_json()["data"]}
    assert listed[body["id"]]["send_window"] == win
    assert strip(listed[body["id"]]["ab_test"]) == {**strip(ab), "held": None}
    actions = db.session.execute(select(AuditEntry.action).where(
        AuditEntry.target_id == str(body["id"]), AuditEntry.action.like("mailing.%"))
        .order_by(AuditEntry.id)).scalars().all()
    assert actions == ["mailing.create", "mailing.ab_window"]

    # Local delivery alone, without a window.
    alone = client.post("/api/v1/mailings", json={**DRAFT, "send_window": {"local_delivery": True}},
                        headers=headers).get_json()
    assert alone["send_window"] == {"start": None, "end": None, "days": [], "zone": "UTC",
                                    "description": "", "local_delivery": True}
    assert stored(alone["id"])[3:7] == (None, None, 127, True)


def _service_refusal(form: dict) -> str:
    """The message the editor's services give for the same setup."""
    mailing = Mailing(name="probe", status=Status.DRAFT.value)
    db.session.add(mailing)
    db.session.flush()
    try:
        ab_tests.save_setup(mailing, form)
        windows.save_setup(mailing, form)
    except (ab_tests.AbSetupError, windows.WindowSetupError) as exc:
        return str(exc)
    finally:
        db.session.rollback()
    raise AssertionError(f"the service took {form}")


def _form_ab(share="30", wait="90", metric="open", subjects=("A", "B")) -> dict:
    form = {"ab": "on", "ab_share": share, "ab_wait_minutes": wait, "ab_metric": metric}
    form.update({f"variant_subject_{n}": s for n, s in enumerate(subjects)})
    return form


def _form_win(start="08:00", end="20:00", days=("0",)) -> dict:
    return {"window": "on", "window_start": start, "window_end": end, "window_day": list(days)}


AB2 = {"variants": [{"subject": "A"}, {"subject": "B"}], "share": 30, "wait_minutes": 90}
W = {"start": "08:00", "end": "20:00", "days": ["Mon"]}

# (ab_test, send_window, the field named, the editor's refusal of the same setup or None)
BAD = [
    ({**AB2, "variants": [{"subject": "A"}]}, None, "ab_test.variants", _form_ab(subjects=("A",))),
    ({**AB2, "variants": [{"subject": s} for s in "ABCDE"]}, None, "ab_test.variants", None),
    ({**AB2, "share": 0}, None, "ab_test.share", _form_ab(share="0")),
    ({**AB2, "share": 101}, None, "ab_test.share", _form_ab(share="101")),
    ({**AB2, "share": "many"}, None, "ab_test.share", None),
    ({**AB2, "share": True}, None, "ab_test.share", None),
    ({**AB2, "wait_minutes": 1.5}, None, "ab_test.wait_minutes", None),
    ({**AB2, "wait_minutes": 30 * 24 * 60 + 1}, None, "ab_test.wait_minutes",
     _form_ab(wait=str(30 * 24 * 60 + 1))),
    ({**AB2, "wait_minutes": -1}, None, "ab_test.wait_minutes", None),
    ({**AB2, "metric": "reply"}, None, "ab_test.metric", _form_ab(metric="reply")),
    ({**AB2, "variants": [{"subject": "A"}, {"subject": "  "}]}, None,
     "ab_test.variants.1.subject", None),
    ({**AB2, "variants": [{"subject": "A"}, {"subject": "B {{ name"}]}, None,
     "ab_test.variants.1.subject", None),
    ({**AB2, "variants": [{"subject": "A", "colour": "red"}, {"subject": "B"}]}, None,
     "ab_test.variants.0.colour", None),
    ({"variants": AB2["variants"], "share": 30}, None, "ab_test.wait_minutes", None),
    ("yes", None, "ab_test", None),
    (None, {**W, "start": "25:00"}, "send_window.start", _form_win(start="25:00")),
    (None, {**W, "start": "24:00"}, "send_window.start", _form_win(start="24:00")),
    (None, {**W, "end": "24:01"}, "send_window.end", _form_win(end="24:01")),
    (None, {**W, "end": "noon"}, "send_window.end", _form_win(end="noon")),
    (None, {**W, "days": []}, "send_window.days", _form_win(days=())),
    (None, {**W, "days": ["Funday"]}, "send_window.days", None),
    (None, {**W, "end": "08:00"}, "send_window", _form_win(end="08:00")),
    (None, {"start": "08:00"}, "send_window", None),
    (None, {**W, "local_delivery": "sometimes"}, "send_window.local_delivery", None),
]


@pytest.mark.parametrize(("ab_test", "send_window", "field", "form"), BAD)
def test_bad_setups_are_refused_with_the_field_named(app, client, make_token, ab_test,
                                                     send_window, field, form):
    headers = make_token(ALL)[1]
    body = dict(DRAFT)
    if ab_test is not None:
        body["ab_test"] = ab_test
    if send_window is not None:
        body["send_window"] = send_window
    response = client.post("/api/v1/mailings", json=body, headers=headers)
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert [e["field"] for e in problem["errors"]] == [field], problem
    if form is not None:  # the dashboard's own words for the same setup
        assert problem["errors"][0]["detail"] == _service_refusal(form)
    assert count(Mailing) == count(MailingVariant) == count(AuditEntry) == 0

    # The same setup by PATCH on a draft is refused too, and leaves the draft as it was.
    draft = client.post("/api/v1/mailings", json={**DRAFT, "ab_test": AB, "send_window": WINDOW},
                        headers=headers).get_json()
    before = stored(draft["id"])
    patch = {k: v for k, v in body.items() if k in ("ab_test", "send_window")}
    response = client.patch(f"/api/v1/mailings/{draft['id']}", json=patch, headers=headers)
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == [field]
    assert stored(draft["id"]) == before


def test_patch_changes_an_editable_mailing_and_is_refused_once_locked(app, client, make_token,
                                                                     redis_conn):
    headers = make_token(ALL)[1]
    audience = make_audience(3)
    mid = client.post("/api/v1/mailings", json={**DRAFT, "list_ids": [audience.id],
                                               "ab_test": AB, "send_window": WINDOW},
                      headers=headers).get_json()["id"]
    # Only the test given changes; the window stays.
    new_ab = {"variants": [{"subject": "One"}, {"subject": "Two", "from_name": "Team"}],
              "share": 50, "wait_minutes": 0}
    response = client.patch(f"/api/v1/mailings/{mid}", json={"ab_test": new_ab}, headers=headers)
    assert response.status_code == 200, response.get_json()
    assert stored(mid) == (50, 0, "open", 480, 1230, 21, True,
                           [(0, "One", ""), (1, "Two", "Team")])
    assert [v["letter"] for v in response.get_json()["ab_test"]["variants"]] == ["A", "B"]
    # null removes; the test stays.
    response = client.patch(f"/api/v1/mailings/{mid}", json={"send_window": None}, headers=headers)
    assert response.status_code == 200 and response.get_json()["send_window"] is None
    assert stored(mid)[3:7] == (None, None, 127, False)
    assert client.patch(f"/api/v1/mailings/{mid}", json={}, headers=headers).status_code == 200
    assert stored(mid)[:3] == (50, 0, "open")
    response = client.patch(f"/api/v1/mailings/{mid}", json={"ab_test": None}, headers=headers)
    assert response.get_json()["ab_test"] is None and stored(mid)[0] == 0 and stored(mid)[7] == []
    assert client.patch(f"/api/v1/mailings/{mid}", json={"ab_test": AB},
                        headers=headers).status_code == 200
    assert client.patch("/api/v1/mailings/999", json={}, headers=headers).status_code == 404
    assert client.patch(f"/api/v1/mailings/{mid}", data="x", headers=headers).status_code == 415

    # Scheduled inside the 5 minutes before its time: locked, as on the dashboard.
    mailing = db.session.get(Mailing, mid)
    mailing.status, mailing.send_at = Status.SCHEDULED.value, datetime.now(UTC) + timedelta(minutes=3)
    db.session.commit()
    before = stored(mid)
    audits = count(AuditEntry)
    refused = client.patch(f"/api/v1/mailings/{mid}", json={"ab_test": new_ab, "send_window": W},
                           headers=headers)
    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["detail"].startswith("This mailing can no longer be edited")
    assert stored(mid) == before and count(AuditEntry) == audits
    # Scheduled further ahead: editable again.
    mailing = db.session.get(Mailing, mid)
    mailing.send_at = datetime.now(UTC) + timedelta(hours=3)
    db.session.commit()
    assert client.patch(f"/api/v1/mailings/{mid}", json={"send_window": W},
                        headers=headers).status_code == 200
    mailing = db.session.get(Mailing, mid)
    mailing.status, mailing.send_at = Status.DRAFT.value, None
    db.session.commit()

    # Sending: locked.
    assert client.post(f"/api/v1/mailings/{mid}/send", headers=headers).status_code == 200
    before = stored(mid)
    refused = client.patch(f"/api/v1/mailings/{mid}", json={"send_window": None}, headers=headers)
    assert refused.status_code == 409 and stored(mid) == before


def test_tokens_without_the_write_scope_change_nothing(app, client, make_token):
    writer = make_token(["mailings:write", "mailings:read"], name="writer")[1]
    reader = make_token(["mailings:read"], name="reader")[1]
    sender = make_token(["mailings:send", "contacts:write"], name="sender")[1]
    mid = client.post("/api/v1/mailings", json={**DRAFT, "ab_test": AB}, headers=writer
                      ).get_json()["id"]
    before, mailings = stored(mid), count(Mailing)
    for headers, status in ((reader, 403), (sender, 403), ({}, 401),
                            ({"Authorization": "Bearer nope"}, 401)):
        response = client.patch(f"/api/v1/mailings/{mid}", json={"ab_test": None}, headers=headers)
        assert response.status_code == status
        assert response.mimetype == "application/problem+json"
        if status == 403:
            assert response.get_json()["scope"] == "mailings:write"
        response = client.post("/api/v1/mailings", json={**DRAFT, "send_window": W}, headers=headers)
        assert response.status_code == status
    assert stored(mid) == before and count(Mailing) == mailings
    # The reader sees the setup.
    read = client.get(f"/api/v1/mailings/{mid}", headers=reader).get_json()
    assert [v["subject"] for v in read["ab_test"]["variants"]] == [
        "Autumn {{ name }}", "Last days", "Only this week"]


def _ab_rows(page: str) -> dict[str, list[str]]:
    """Each variant's row of the mailing page: recipients, sent, human opens, open rate, clicks,
    click rate."""
    [table] = re.findall(r'<table class="table" id="ab-figures">(.*?)</table>', page, re.S)
    return {letter: re.findall(r'<td class="num">([\d,.%]+)</td>', cells)
            for letter, cells in re.findall(r'<tr id="ab-row-(\w)"[^>]*>(.*?)</tr>', table, re.S)}


def test_variant_figures_equal_the_mailing_pages(app, auth, client, make_token, redis_conn, smtp):
    headers = make_token(ALL)[1]
    audience = make_audience(24)
    ab = {"variants": [{"subject": "A {{ name }}"}, {"subject": "B"}, {"subject": "C"}],
          "share": 50, "metric": "open", "wait_minutes": 600}
    mid = client.post("/api/v1/mailings", json={**DRAFT, "list_ids": [audience.id], "ab_test": ab},
                      headers=headers).get_json()["id"]
    assert client.post(f"/api/v1/mailings/{mid}/send", headers=headers).status_code == 200
    run_worker(redis_conn)
    tested = db.session.execute(select(Recipient).where(
        Recipient.mailing_id == mid, Recipient.variant_id.is_not(None))
        .order_by(Recipient.id)).scalars().all()
    assert len(tested) == 12
    now = datetime.now(UTC)
    for n, row in enumerate(tested):
        if n % 2 == 0:
            record_event(row.id, kind="open", source="generic", occurred_at=now)
        if n % 3 == 0:
            record_event(row.id, kind="open", source="generic", occurred_at=now, machine=True)
        if n % 5 == 0:
            record_event(row.id, kind="click", source="generic", occurred_at=now)

    auth.login()
    body = client.get(f"/api/v1/mailings/{mid}", headers=headers).get_json()["ab_test"]
    page = client.get(f"/mailings/{mid}").get_data(as_text=True)
    rows = _ab_rows(page)
    assert set(rows) == {"A", "B", "C"}
    service = {r.letter: r for r in ab_tests.figures(db.session.get(Mailing, mid))}
    for variant in body["variants"]:
        f = variant["figures"]
        shown = rows[variant["letter"]]
        assert [int(shown[i].replace(",", "")) for i in (0, 1, 2, 4)] == [
            f["recipients"], f["sent"], f["people_opened"], f["people_clicked"]]
        assert [shown[3], shown[5]] == [f["open_rate_text"], f["click_rate_text"]]
        assert f["open_rate"] == (f["people_opened"] / f["sent"] if f["sent"] else 0)
        assert f["machine_only_openers"] == service[variant["letter"]].machine_opened
    assert sum(v["figures"]["recipients"] for v in body["variants"]) == 12
    assert sum(v["figures"]["people_opened"] for v in body["variants"]) == 6
    held = int(re.search(r'<span id="ab-held">([\d,]+) held', page).group(1).replace(",", ""))
    assert body["held"] == held == 12 and body["winner_variant_id"] is None

    # Staff pick B on the page: the API names the winner.
    b = next(v for v in body["variants"] if v["letter"] == "B")
    picked = client.post(f"/mailings/{mid}/ab-winner", data={"variant_id": str(b["id"])})
    assert picked.status_code == 302
    after = client.get(f"/api/v1/mailings/{mid}", headers=headers).get_json()["ab_test"]
    assert (after["winner_variant_id"], after["winner_letter"], after["decided_by"]) == (
        b["id"], "B", "staff")
    assert [v["winner"] for v in after["variants"]] == [False, True, False]
    # Locked now: the test cannot be changed.
    refused = client.patch(f"/api/v1/mailings/{mid}", json={"ab_test": None}, headers=headers)
    assert refused.status_code == 409


def test_openapi_declares_the_setup(client):
    document = client.get("/api/v1/openapi.json").get_json()
    validate(document)
    schemas = document["components"]["schemas"]
    assert {"AbTestIn", "AbVariantIn", "SendWindowIn", "AbTestOut", "AbVariantOut",
            "AbVariantFigures", "SendWindowOut", "MailingPatch"} <= set(schemas)
    assert set(schemas["AbTestIn"]["required"]) == {"variants", "share", "wait_minutes"}
    assert schemas["AbTestIn"]["properties"]["metric"]["enum"] == ["open", "click"]
    assert "ab_test" in schemas["MailingIn"]["properties"]
    assert "send_window" in schemas["MailingIn"]["properties"]
    patch = document["paths"]["/api/v1/mailings/{mailing_id}"]["patch"]
    assert patch["security"] == [{"bearer": ["mailings:write"]}]
    assert patch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MailingPatch"}
    assert {"200", "401", "403", "404", "409", "422"} <= set(patch["responses"])


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                  st.sampled_from(["08:00", "24:00", "23:59", "0:0", "Mon", "sun", "open", "click",
                                   "{{ name", "a\x00b", " ", "X" * 600]))
_KEYS = st.sampled_from(["variants", "subject", "from_name", "share", "metric", "wait_minutes",
                         "start", "end", "days", "local_delivery", "other"])
_JSON = st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=5)
                     | st.dictionaries(_KEYS, inner, max_size=5), max_leaves=20)


def test_any_setup_is_stored_or_refused_with_a_field_never_a_500(app, client, make_token):
    headers = make_token(ALL)[1]
    mid = client.post("/api/v1/mailings", json=DRAFT, headers=headers).get_json()["id"]

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(ab=_JSON, window=_JSON, patch=st.booleans())
    def run(ab, window, patch) -> None:
        body = {"ab_test": ab, "send_window": window}
        response = (client.patch(f"/api/v1/mailings/{mid}", json=body, headers=headers) if patch
                    else client.post("/api/v1/mailings", json={**DRAFT, **body}, headers=headers))
        assert response.status_code in (200, 201, 422), response.get_data(as_text=True)
        if response.status_code == 422:
            errors = response.get_json()["errors"]
            assert errors and all(e["field"].startswith(("ab_test", "send_window"))
                                  for e in errors), errors

    run()
