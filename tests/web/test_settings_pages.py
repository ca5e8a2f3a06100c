"""Settings page: admins only, validated settings, SMTP providers, email types, secret names."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

import dkim
import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import EmailType, Provider, Setting
from app.services import settings

VALID = {"batch_size": "750", "rate_per_second": "12.5", "inactivity_days": "365",
         "bounce_rate_limit": "0.08", "complaint_rate_limit": "0.002",
         "threshold_min_sample": "100", "monthly_quota": "0", "defer_max_hours": "24",
         "outage_minutes": "5", "conversion_days": "7"}
PATHS = ["/settings", "/settings/providers/1"]


@pytest.mark.parametrize("path", PATHS)
def test_staff_get_403_and_anonymous_go_to_login(auth, client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    auth.login()
    assert client.get(path).status_code == 403
    for post in ("/settings", "/settings/providers", "/settings/email-types",
                 "/settings/providers/1/default"):
        assert client.post(post, data=VALID).status_code == 403


def test_admin_saves_valid_settings(app, auth, client):
    app.config["GENERIC_WEBHOOK_SECRET"] = "do-not-show-this"
    app.config["MAILGUN_WEBHOOK_SIGNING_KEY"] = ""
    auth.login("admin@example.org", role="admin")
    page = client.get("/settings").get_data(as_text=True)
    assert "Batch size" in page and 'href="/users"' in page
    assert "do-not-show-this" not in page
    assert re.search(r"GENERIC_WEBHOOK_SECRET</code></td><td><span class=\"badge sent\">set", page)
    assert re.search(r"MAILGUN_WEBHOOK_SIGNING_KEY</code></td><td><span class=\"badge\">not set", page)
    response = client.post("/settings", data=VALID)
    assert response.status_code == 302
    assert settings.get("batch_size") == 750 and settings.get("rate_per_second") == 12.5


BAD_VALUES = ["inf", "-inf", "nan", "1e400", str(2**31), str(2**63), "-1", "", "abc", "Infinity"]
RANGES = {key: f"{spec.label}: {{}} is not allowed; enter {spec.bound.describe()}."
          for key, spec in settings.SPECS.items()}


@pytest.mark.parametrize("key", sorted(VALID))
@pytest.mark.parametrize("value", BAD_VALUES)
def test_bad_values_are_refused_on_the_form_and_nothing_is_stored(app, auth, client, key, value):
    auth.login("admin@example.org", role="admin")
    settings.set("batch_size", "321")
    response = client.post("/settings", data={**VALID, key: value})
    assert response.status_code == 422
    body = html.unescape(response.get_data(as_text=True))
    shown = f'"{value}"' if value else "an empty value"
    assert RANGES[key].format(shown) in body
    assert f'aria-invalid="true" aria-describedby="e-{key}"' in body and f'value="{value}"' in body
    assert body.count('aria-invalid="true"') == 1  # only the bad field is marked
    db.session.expire_all()
    assert [s.key for s in db.session.execute(select(Setting)).scalars()] == ["batch_size"]
    assert settings.get("batch_size") == 321


@pytest.mark.parametrize("key,value,message", [
    ("batch_size", "20001", "Batch size: \"20001\" is not allowed; enter a whole number from 1 to 20,000."),
    ("batch_size", "0", "enter a whole number from 1 to 20,000"),
    ("batch_size", "1.5", "Batch size: \"1.5\" is not allowed"),
    ("bounce_rate_limit", "2", "Interrupt at bounce rate: \"2\" is not allowed; enter a number from 0 to 1."),
    ("rate_per_second", "10001", "enter a number from 0 to 10,000"),
    ("threshold_min_sample", "1000001", "enter a whole number from 1 to 1,000,000"),
    ("monthly_quota", "1000000001", "enter a whole number from 0 to 1,000,000,000"),
    ("inactivity_days", "36501", "enter a whole number from 0 to 36,500"),
    ("conversion_days", "91", "Conversion window: days after a click a transaction counts: "
                              "\"91\" is not allowed; enter a whole number from 1 to 90."),
    ("conversion_days", "0", "enter a whole number from 1 to 90"),
    ("conversion_days", "two weeks", "\"two weeks\" is not allowed; enter a whole number from 1 to 90"),
])
def test_values_just_outside_the_range_are_refused(app, auth, client, key, value, message):
    auth.login("admin@example.org", role="admin")
    response = client.post("/settings", data={**VALID, key: value})
    assert response.status_code == 422
    assert message in html.unescape(response.get_data(as_text=True))
    assert db.session.execute(select(Setting)).first() is None


def test_edges_of_every_range_are_accepted_and_spaces_ignored(app, auth, client):
    auth.login("admin@example.org", role="admin")
    edges = {"batch_size": " 20000 ", "rate_per_second": "10000", "inactivity_days": "36500",
             "bounce_rate_limit": "1", "complaint_rate_limit": "0", "threshold_min_sample": "1000000",
             "monthly_quota": "1000000000", "defer_max_hours": "720", "outage_minutes": "1440",
             "conversion_days": "90"}
    assert client.post("/settings", data=edges).status_code == 302
    assert settings.all_values() == {"batch_size": 20_000, "rate_per_second": 10_000.0,
                                     "inactivity_days": 36_500, "bounce_rate_limit": 1.0,
                                     "complaint_rate_limit": 0.0, "threshold_min_sample": 1_000_000,
                                     "monthly_quota": 1_000_000_000, "defer_max_hours": 720.0,
                                     "outage_minutes": 1440.0, "conversion_days": 90}


def test_the_form_states_each_range(app, auth, client):
    auth.login("admin@example.org", role="admin")
    page = client.get("/settings").get_data(as_text=True)
    assert 'name="batch_size" value="500"' in page and 'min="1" max="20000"' in page
    for spec in settings.SPECS.values():
        assert spec.bound.describe() in page


def test_providers_add_edit_and_default(app, auth, client):
    auth.login("admin@example.org", role="admin")
    base = {"kind": "smtp", "port": "587", "security": "starttls", "rate_per_second": "0"}
    client.post("/settings/providers", data={**base, "name": "Relay A", "host": "a.example",
                                             "username": "u", "password": "secret-a",
                                             "is_default": "y"})
    client.post("/settings/providers", data={**base, "name": "Relay B", "host": "b.example"})
    a, b = db.session.execute(select(Provider).order_by(Provider.name)).scalars()
    assert a.is_default and not b.is_default and a.password == "secret-a"
    page = client.get("/settings").get_data(as_text=True)
    assert "secret-a" not in page and "a.example:587" in page
    dup = client.post("/settings/providers", data={**base, "name": "Relay A", "host": "x"})
    assert dup.status_code == 422 and "exists already" in dup.get_data(as_text=True)
    bad = client.post("/settings/providers", data={**base, "name": "C", "host": "c", "port": "70000"})
    assert bad.status_code == 422

    client.post(f"/settings/providers/{b.id}/default")
    db.session.refresh(a)
    db.session.refresh(b)
    assert b.is_default and not a.is_default
    edit = client.get(f"/settings/providers/{a.id}").get_data(as_text=True)
    assert "secret-a" not in edit
    client.post(f"/settings/providers/{a.id}", data={**base, "name": "Relay A", "host": "a2.example",
                                                    "password": ""})
    db.session.refresh(a)
    assert a.host == "a2.example" and a.password == "secret-a"  # blank keeps the password


def test_email_types(app, auth, client):
    auth.login("admin@example.org", role="admin")
    assert client.post("/settings/email-types", data={"name": "Offers"}).status_code == 302
    again = client.post("/settings/email-types", data={"name": "Offers"})
    assert again.status_code == 422 and "exists already" in again.get_data(as_text=True)
    assert [t.name for t in db.session.execute(select(EmailType)).scalars()] == ["Offers"]
    assert "Offers" in client.get("/settings").get_data(as_text=True)


PROVIDER = {"kind": "smtp", "name": "Relay", "host": "relay.example", "port": "587",
            "security": "starttls", "rate_per_second": "5"}


@pytest.mark.parametrize("field,value,message", [
    ("port", "0", "Port: \"0\" is not allowed; enter a whole number from 1 to 65,535."),
    ("port", "", "This field is required."),
    ("port", "65536", 'Port: "65536" is not allowed; enter a whole number from 1 to 65,535.'),
    ("port", str(2**31), "enter a whole number from 1 to 65,535"),
    ("port", str(2**63), "enter a whole number from 1 to 65,535"),
    ("port", "-1", "enter a whole number from 1 to 65,535"),
    ("port", "inf", "Not a valid integer value."),
    ("port", "abc", "Not a valid integer value."),
    ("rate_per_second", "inf", 'Messages per second: "inf" is not allowed; enter a number from 0 to 10,000.'),
    ("rate_per_second", "-inf", "enter a number from 0 to 10,000"),
    ("rate_per_second", "nan", "enter a number from 0 to 10,000"),
    ("rate_per_second", "1e400", "enter a number from 0 to 10,000"),
    ("rate_per_second", str(2**31), "enter a number from 0 to 10,000"),
    ("rate_per_second", "-1", "enter a number from 0 to 10,000"),
    ("rate_per_second", "abc", "Not a valid float value."),
])
def test_provider_numbers_are_bounded_on_add_and_edit(app, auth, client, field, value, message):
    auth.login("admin@example.org", role="admin")
    added = client.post("/settings/providers", data={**PROVIDER, field: value})
    assert added.status_code == 422 and message in html.unescape(added.get_data(as_text=True))
    assert db.session.execute(select(Provider)).first() is None

    assert client.post("/settings/providers", data=PROVIDER).status_code == 302
    provider = db.session.execute(select(Provider)).scalar_one()
    edited = client.post(f"/settings/providers/{provider.id}", data={**PROVIDER, field: value})
    assert edited.status_code == 422 and message in html.unescape(edited.get_data(as_text=True))
    db.session.expire_all()
    provider = db.session.execute(select(Provider)).scalar_one()
    assert (provider.port, provider.rate_per_second) == (587, 5.0)


def test_provider_rate_edges_and_spaces(app, auth, client):
    auth.login("admin@example.org", role="admin")
    response = client.post("/settings/providers",
                           data={**PROVIDER, "port": " 65535 ", "rate_per_second": "10000"})
    assert response.status_code == 302
    provider = db.session.execute(select(Provider)).scalar_one()
    assert (provider.port, provider.rate_per_second) == (65_535, 10_000.0)


# DKIM keys -----------------------------------------------------------------------------------

def _rsa_pem(bits: int = 2048) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _private_lines(pem: str) -> list[str]:
    """Lines of a private key's PEM that hold private numbers (the modulus is public)."""
    from cryptography.hazmat.primitives import serialization

    from app.services.dkim import load_private_key

    public = load_private_key(pem).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    public_b64 = "".join(public.splitlines()[1:-1])
    lines = [line for line in pem.splitlines()
             if line and not line.startswith("-----") and line not in public_b64]
    assert len(lines) >= 8
    return lines


@pytest.mark.parametrize("method,path", [
    ("post", "/settings/dkim/generate"), ("post", "/settings/dkim/upload"),
    ("post", "/settings/dkim/1/delete"),
])
def test_dkim_pages_are_for_admins_only(app, auth, client, method, path):
    from app.models import DkimKey

    data = {"domain": "shop.example", "selector": "sb1", "private_key": _rsa_pem(1024)}
    response = getattr(client, method)(path, data=data)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    auth.login()
    assert getattr(client, method)(path, data=data).status_code == 403
    assert db.session.execute(select(DkimKey)).first() is None


def test_generate_shows_the_record_and_never_the_private_key(app, auth, client):
    from app.models import DkimKey
    from app.services import dkim as dkim_service

    auth.login("admin@example.org", role="admin")
    page = client.get("/settings").get_data(as_text=True)
    assert 'id="dkim"' in page and "No DKIM key yet" in page
    assert re.search(r'name="selector"[^>]*value="sb\d{6}"', page)
    response = client.post("/settings/dkim/generate", data={"domain": "Shop.Example", "selector": "sb1"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/settings#dkim")
    key = db.session.execute(select(DkimKey)).scalar_one()
    record = dkim_service.record_for(key)
    page = client.get("/settings").get_data(as_text=True)
    assert "sb1._domainkey.shop.example" in page and record.value in page
    assert "DKIM key for shop.example generated. Publish the TXT record sb1._domainkey.shop.example" in page
    assert "PRIVATE KEY" not in page
    assert not any(line in page for line in _private_lines(key.private_key_pem))

    # The record exactly as displayed verifies a signed message (what a receiver's DNS would give).
    shown_name = re.search(r'class="dkim-name">([^<]+)<', page).group(1)
    shown_value = html.unescape(re.search(r'class="dkim-value"[^>]*>([^<]+)<', page).group(1))
    message = (b"From: news@shop.example\r\nTo: a@example.org\r\nSubject: Hi\r\n"
               b"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <m@shop.example>\r\n\r\nHello\r\n")
    signed = dkim_service.signer_for("shop.example")(message, datetime(2026, 11, 30, 12, tzinfo=UTC))
    answers = {f"{shown_name}.": shown_value.encode()}
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: answers.get(name.decode()))


def test_upload_a_valid_key(app, auth, client):
    from app.models import DkimKey

    auth.login("admin@example.org", role="admin")
    pem = _rsa_pem(2048)
    response = client.post("/settings/dkim/upload",
                           data={"domain": "shop.example", "selector": "old", "private_key": pem})
    assert response.status_code == 302
    key = db.session.execute(select(DkimKey)).scalar_one()
    assert (key.domain, key.selector, key.bits, key.origin) == ("shop.example", "old", 2048, "uploaded")
    page = client.get("/settings").get_data(as_text=True)
    assert "old._domainkey.shop.example" in page and f"v=DKIM1; k=rsa; p={key.public_key}" in page
    assert not any(line in page for line in _private_lines(pem))


def test_upload_a_key_as_a_file(app, auth, client):
    import io

    from app.models import DkimKey

    auth.login("admin@example.org", role="admin")
    pem = _rsa_pem(1024)
    response = client.post("/settings/dkim/upload", content_type="multipart/form-data",
                           data={"domain": "shop.example", "selector": "f1", "private_key": "",
                                 "key_file": (io.BytesIO(pem.encode()), "dkim.pem")})
    assert response.status_code == 302
    assert db.session.execute(select(DkimKey.bits)).scalar_one() == 1024


@pytest.mark.parametrize("data,message", [
    ({"private_key": "not a key"}, "DKIM key not saved: This is not a PEM private key"),
    ({"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
     "the PEM text is damaged or incomplete"),
    ({"private_key": ""}, "Paste or upload the private key"),
    ({"domain": "localhost"}, "is not a valid domain name"),
    ({"selector": "bad selector"}, "is not a valid selector"),
    ({"domain": "x" * 400}, "Field cannot be longer than 300 characters."),
])
def test_upload_refuses_bad_input_with_a_clear_error(app, auth, client, data, message):
    from app.models import DkimKey

    auth.login("admin@example.org", role="admin")
    base = {"domain": "shop.example", "selector": "sb1", "private_key": "-"}
    response = client.post("/settings/dkim/upload", data={**base, **data})
    assert response.status_code == 422
    body = html.unescape(response.get_data(as_text=True))
    assert message in body and 'id="dkim-error"' in body
    assert db.session.execute(select(DkimKey)).first() is None


def test_a_refused_upload_does_not_echo_the_key(app, auth, client):
    auth.login("admin@example.org", role="admin")
    pem = _rsa_pem(1024)
    response = client.post("/settings/dkim/upload",
                           data={"domain": "not valid", "selector": "sb1", "private_key": pem})
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert "not a valid domain name" in html.unescape(body)
    assert not any(line in body for line in _private_lines(pem))


def test_generate_refuses_a_second_key_for_a_domain(app, auth, client):
    auth.login("admin@example.org", role="admin")
    assert client.post("/settings/dkim/generate",
                       data={"domain": "shop.example", "selector": "a"}).status_code == 302
    again = client.post("/settings/dkim/generate", data={"domain": "shop.example", "selector": "b"})
    assert again.status_code == 422
    assert "shop.example has a DKIM key already; delete it first" in again.get_data(as_text=True)


def test_delete_a_key(app, auth, client):
    from app.models import DkimKey

    auth.login("admin@example.org", role="admin")
    client.post("/settings/dkim/generate", data={"domain": "shop.example", "selector": "a"},
                follow_redirects=True)
    key_id = db.session.execute(select(DkimKey.id)).scalar_one()
    response = client.post(f"/settings/dkim/{key_id}/delete")
    assert response.status_code == 302
    assert db.session.execute(select(DkimKey)).first() is None
    page = client.get("/settings").get_data(as_text=True)
    assert "DKIM key for shop.example deleted" in page and "a._domainkey.shop.example" not in page
    assert client.post(f"/settings/dkim/{key_id}/delete").status_code == 404
