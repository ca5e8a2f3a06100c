from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.runtime.capture import MaildirWriter

HTML_MESSAGE = (
    "From: Shop <shop@example.com>\r\n"
    "To: ana@example.org\r\n"
    "Subject: Spring offers\r\n"
    "Message-ID: <m1@sendboard.test>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello Ana, plain text part\r\n"
    "--b1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    '<p>Hello <b>Ana</b></p><script>alert("x")</script><img src=x onerror=alert(1)>\r\n'
    "--b1--\r\n"
).encode("ascii")


def _fill(app: Flask, count: int, box: str = "capture") -> list[str]:
    writer = MaildirWriter(Path(app.config["INSTANCE_DIR"]) / box)
    names = []
    for i in range(count):
        raw = HTML_MESSAGE.replace(b"Spring offers", f"Offer {i:03d}".encode())
        names.append(writer.store(raw, "bounce@bounces.test", [f"user{i}@example.org"]).file)
    writer.close()
    return names


@pytest.mark.parametrize("path", ["/captured", "/captured/x", "/captured/x/raw"])
def test_pages_need_a_login(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_empty_inbox_says_so(auth, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    auth.login()
    response = client.get("/captured")
    assert response.status_code == 200
    assert b"No mail captured yet" in response.data
    assert b"Captured mail" in response.data  # in the navigation too


def test_inbox_lists_newest_first_and_pages(app: Flask, auth, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    _fill(app, 120)
    auth.login()
    first = client.get("/captured").get_data(as_text=True)
    assert "120 messages" in first
    assert first.count("<tr>") == 1 + 50  # header row + one page
    assert first.index("Offer 119") < first.index("Offer 118")
    assert "Page 1 of 3" in first and 'rel="next"' in first
    last = client.get("/captured?page=3").get_data(as_text=True)
    assert last.count("<tr>") == 1 + 20 and "Offer 000" in last
    assert client.get("/captured?page=99").status_code == 200
    found = client.get("/captured?q=user7@").get_data(as_text=True)
    assert "1 message" in found and "Offer 007" in found


def test_message_page_shows_parts_without_running_the_html(app: Flask, auth, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    [name] = _fill(app, 1)
    auth.login()
    page = client.get(f"/captured/{name}").get_data(as_text=True)
    assert "Offer 000" in page
    assert "Hello Ana, plain text part" in page
    assert "Message-ID" in page and "&lt;m1@sendboard.test&gt;" in page
    assert 'sandbox=""' in page
    # The HTML is only ever an escaped attribute or escaped source, never live markup.
    assert "<script>" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;" in page
    assert "user0@example.org" in page  # the envelope


def test_raw_download_is_byte_for_byte_and_not_html(app: Flask, auth, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    [name] = _fill(app, 1)
    auth.login()
    response = client.get(f"/captured/{name}/raw")
    assert response.status_code == 200
    assert response.data == HTML_MESSAGE.replace(b"Spring offers", b"Offer 000")
    assert response.mimetype == "text/plain"
    assert "attachment" in response.headers["Content-Disposition"]


def test_unknown_or_sneaky_names_are_404(app: Flask, auth, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    _fill(app, 1)
    auth.login()
    assert client.get("/captured/nope").status_code == 404
    assert client.get("/captured/..%2Findex.jsonl").status_code == 404
    assert client.get("/captured/.hidden/raw").status_code == 404


def test_bounce_box_is_listed_separately(app: Flask, auth, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    [name] = _fill(app, 1, box="bounces")
    auth.login()
    assert b"No mail captured yet" in client.get("/captured").data
    bounces = client.get("/captured?box=bounces").get_data(as_text=True)
    assert "Offer 000" in bounces
    assert client.get(f"/captured/{name}?box=bounces").status_code == 200
    assert client.get(f"/captured/{name}").status_code == 404
