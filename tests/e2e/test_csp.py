"""The Content-Security-Policy breaks nothing: pages with htmx polls, Plotly charts and confirm
prompts run without a single policy violation, and the confirm prompts still guard their forms."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from app.domain.lifecycle import Status

WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e =>
    window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sourceFile || '')));
"""


def _sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill("admin@example.org")
    page.get_by_label("Password").fill("browser-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="Mailings")).to_be_visible()


def test_pages_run_under_the_policy_without_violations(deployment, page: Page) -> None:
    from app.extensions import db
    from app.services import mailings
    from tests.factories import make_audience, make_mailing

    deployment.worker.terminate()
    deployment.worker.wait(timeout=10)
    with deployment.app.app_context():
        audience = make_audience(6)
        sending = make_mailing([audience])
        sending.status = Status.PREPARING.value
        db.session.commit()
        mailings.prepare(sending.id)
        draft = mailings.create(owner_id=sending.owner_id, name="Draft", subject="Hi",
                                from_address="news@shop.example", html_body="<p>Hi</p>",
                                text_body="Hi", list_ids=[audience.id])
        ids = (sending.id, draft.id)
        db.session.remove()

    page.set_default_timeout(15_000)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.add_init_script(WATCH)
    _sign_in(page, deployment.url)
    base = deployment.url
    for path in ("/home", "/mailings", "/contacts", "/contacts/lists", "/settings", "/users",
                 "/audit", f"/mailings/{ids[1]}/edit", f"/mailings/{ids[1]}/preview"):
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.__csp") == [], path

    # A live mailing page: htmx polls and draws Plotly charts.
    page.goto(f"{base}/mailings/{ids[0]}")
    expect(page.locator("#delivery-chart .main-svg").first).to_be_attached()
    with page.expect_response(lambda r: r.url.endswith("/_live")):
        pass
    page.wait_for_timeout(300)
    assert page.evaluate("window.__csp") == []
    assert [m for m in console if "Content Security Policy" in m] == []

    # The confirm prompt (static/js/confirm.js) guards Delete: dismissed, nothing happens.
    page.goto(f"{base}/mailings/{ids[1]}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_timeout(300)
    expect(page).to_have_url(f"{base}/mailings/{ids[1]}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"{base}/mailings")
    assert page.evaluate("window.__csp") == []
