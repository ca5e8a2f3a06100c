"""Contacts pages: table, contact page, lists, upload with a real RQ worker, CLI."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker

from app.extensions import db
from app.models import EmailType, ImportJob
from app.services import contacts


def _seed(text: str, list_name: str | None = None) -> None:
    contacts.import_csv(io.BytesIO(text.encode()), list_name=list_name)


def _upload(client: FlaskClient, text: str, list_name: str = "") -> str:
    response = client.post(
        "/contacts/upload",
        data={"file": (io.BytesIO(text.encode()), "people.csv"), "list_name": list_name},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302, response.data
    location = response.headers["Location"]
    assert re.fullmatch(r"/contacts/imports/\d+", location), location
    return location


def _uploads(app: Flask) -> list[Path]:
    folder = Path(app.config["INSTANCE_DIR"]) / "uploads"
    return list(folder.iterdir()) if folder.exists() else []


def test_contacts_pages_require_login(client: FlaskClient) -> None:
    for path in (
        "/contacts",
        "/contacts/1",
        "/contacts/upload",
        "/contacts/lists",
        "/contacts/imports/1",
        "/contacts/imports/1/progress",
    ):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path


def test_empty_state_then_table_with_badges_search_and_pages(app: Flask, auth, client) -> None:  # type: ignore[no-untyped-def]
    auth.login()
    page = client.get("/contacts").get_data(as_text=True)
    assert "No contacts yet." in page

    _seed(
        "email,name,last_transaction\n"
        + "".join(
            f"p{i:02d}@example.org,Person {i},{datetime.now(UTC).date()}\n" for i in range(55)
        )
        + "old@example.org,Old,2001-01-01\n"
    )
    dne = contacts.find_contact("p03@example.org")
    assert dne is not None
    contacts.set_do_not_email(dne, "asked")

    page = client.get("/contacts").get_data(as_text=True)
    assert page.count('href="/contacts/') >= 50
    assert "old@example.org" in page and "inactive" in page
    next_link = re.search(r'href="(/contacts\?after=\d+)"', page)
    assert next_link, "a next-page link"
    second = client.get(next_link.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert "p03@example.org" in second and "do not email" in second
    assert "old@example.org" not in second

    found = client.get("/contacts?q=person+4").get_data(as_text=True)
    assert "p04@example.org" in found and "p05@example.org" not in found
    flagged = client.get("/contacts?flag=do_not_email").get_data(as_text=True)
    assert "p03@example.org" in flagged and "p04@example.org" not in flagged
    none = client.get("/contacts?q=nobody").get_data(as_text=True)
    assert "No contact matches this search." in none


def test_contact_page_actions(app: Flask, auth, client) -> None:  # type: ignore[no-untyped-def]
    auth.login()
    _seed(
        "email,name,city,last_transaction\nada@example.org,Ada,London,2001-01-01\n",
        list_name="Customers",
    )
    ada = contacts.find_contact("ada@example.org")
    assert ada is not None
    news = EmailType(name="Newsletter")
    db.session.add(news)
    db.session.commit()
    url = f"/contacts/{ada.id}"

    page = client.get(url).get_data(as_text=True)
    for expected in ("Ada", "London", "Customers", "inactive", "Newsletter", "Email history"):
        assert expected in page, expected
    assert client.get("/contacts/999999").status_code == 404

    recent = (datetime.now(UTC) - timedelta(days=2)).replace(second=0, microsecond=0)
    response = client.post(
        f"{url}/transactions",
        data={"occurred_at": f"{recent:%Y-%m-%dT%H:%M}", "reference": "order 7", "amount": "12.50"},
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert contacts.get_contact(ada.id).last_transaction_at == recent  # type: ignore[union-attr]
    page = client.get(url).get_data(as_text=True)
    assert "order 7" in page and "can be emailed" in page

    client.post(f"{url}/do-not-email", data={"reason": "asked by phone"})
    db.session.expire_all()
    assert contacts.get_contact(ada.id).do_not_email  # type: ignore[union-attr]
    assert "asked by phone" in client.get(url).get_data(as_text=True)
    client.post(f"{url}/allow-email")
    db.session.expire_all()
    assert not contacts.get_contact(ada.id).do_not_email  # type: ignore[union-attr]

    client.post(f"{url}/types/{news.id}", data={"action": "opt_out"})
    assert contacts.type_opt_outs(ada.id) == {news.id}
    client.post(f"{url}/types/{news.id}", data={"action": "opt_in"})
    assert contacts.type_opt_outs(ada.id) == set()


def test_lists_page_creates_and_counts(app: Flask, auth, client) -> None:  # type: ignore[no-untyped-def]
    auth.login()
    assert "No lists yet" in client.get("/contacts/lists").get_data(as_text=True)
    response = client.post("/contacts/lists", data={"name": "VIP", "description": "best"})
    assert response.status_code == 302
    _seed("email\na@example.org\nb@example.org\n", list_name="VIP")
    page = client.get("/contacts/lists").get_data(as_text=True)
    assert re.search(r"VIP</a>.*?<td class=\"num\">2</td>", page, re.S)
    again = client.post("/contacts/lists", data={"name": "VIP"})
    assert again.status_code == 200 and "exists already" in again.get_data(as_text=True)


def test_upload_runs_on_a_real_rq_worker(app: Flask, auth, client, redis_conn) -> None:  # type: ignore[no-untyped-def]
    auth.login()
    location = _upload(
        client,
        'email,name,note\nada@example.org,Ada,"two\nlines"\nbroken,X,y\nbob@example.org,Bob,z\n',
        list_name="Uploaded",
    )
    import_id = int(location.rsplit("/", 1)[1])
    queue = Queue("default", connection=redis_conn)
    assert queue.count == 1  # enqueued, not run in the web process
    assert len(_uploads(app)) == 1
    running = client.get(f"{location}/progress")
    assert running.status_code == 200
    assert 'hx-trigger="every 2s"' in running.get_data(as_text=True)

    SimpleWorker([queue], connection=redis_conn).work(burst=True)

    db.session.expire_all()
    job = db.session.get(ImportJob, import_id)
    assert job is not None
    assert (job.status, job.created, job.updated, job.rejected) == ("done", 2, 0, 1)
    assert job.errors[0]["line"] == 4
    assert _uploads(app) == []  # the upload is deleted when the import ends
    assert contacts.find_contact("ada@example.org").fields == {"note": "two\nlines"}  # type: ignore[union-attr]
    assert contacts.list_member_count(contacts.get_list_by_name("Uploaded").id) == 2  # type: ignore[union-attr]

    done = client.get(f"{location}/progress")
    assert done.status_code == 286  # htmx stops polling
    body = done.get_data(as_text=True)
    assert "hx-trigger" not in body and "done" in body
    assert re.search(r'<td class="num">4</td><td>invalid email address', body)
    page = client.get(location).get_data(as_text=True)
    assert "people.csv" in page and "invalid email address" in page


def test_upload_without_redis_imports_inline(
    app: Flask,
    auth,
    client,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    auth.login()
    location = _upload(client, "email\nada@example.org\n")
    db.session.expire_all()
    job = db.session.get(ImportJob, int(location.rsplit("/", 1)[1]))
    assert job is not None and (job.status, job.created) == ("done", 1)
    assert _uploads(app) == []


def test_upload_without_a_file_shows_the_form_again(app: Flask, auth, client) -> None:  # type: ignore[no-untyped-def]
    auth.login()
    response = client.post(
        "/contacts/upload", data={"list_name": "x"}, content_type="multipart/form-data"
    )
    assert response.status_code == 200
    assert "Choose a CSV file." in response.get_data(as_text=True)


def test_cli_import_record_transaction_and_create_list(app: Flask, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-list", "Newsletter"])
    assert result.exit_code == 0 and "created list Newsletter" in result.output

    path = tmp_path / "people.csv"
    path.write_text("email;name\nada@example.org;Ada\nnope;X\n", encoding="utf-8")
    result = runner.invoke(args=["import-contacts", str(path), "--list", "Newsletter"])
    assert result.exit_code == 0, result.output
    assert "created 1, updated 0, rejected 1" in result.output
    assert re.search(r"^line 3: invalid email address 'nope'", result.output, re.M)
    assert contacts.list_member_count(contacts.get_list_by_name("Newsletter").id) == 1  # type: ignore[union-attr]

    result = runner.invoke(
        args=["record-transaction", "ada@example.org", "--at", "2025-05-06", "--reference", "R1"]
    )
    assert result.exit_code == 0, result.output
    ada = contacts.find_contact("ada@example.org")
    assert ada is not None and ada.last_transaction_at == datetime(2025, 5, 6, tzinfo=UTC)
    assert contacts.contact_transactions(ada.id)[0].source == "cli"

    assert runner.invoke(args=["record-transaction", "who@example.org"]).exit_code != 0
    assert (
        runner.invoke(args=["record-transaction", "ada@example.org", "--at", "soon"]).exit_code != 0
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("name\nAda\n", encoding="utf-8")
    result = runner.invoke(args=["import-contacts", str(bad)])
    assert result.exit_code != 0 and "no email column" in result.output
