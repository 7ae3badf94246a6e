"""Browser end-to-end tests of the staff and admin pages (portal/assets/js/staff.js, admin.js).

One server for the module. A staff account (a patient promoted by the admin over the API) uses
the UI to search, deliver (claim code + printable hand-out), share with a facility, revoke,
manage facility accounts and their API tokens and browse the audit trail; the admin uses the
UI to change roles, reset passwords and turn self sign-up off and on. Every page is
screenshotted at desktop and phone width (target/e2e-artifacts/staff-*.png), checked with the
small axe-like script of conftest and its JS+CSS summed against the 200 KB budget.
"""

from __future__ import annotations

import re
import time

import pytest
import requests
from playwright.sync_api import expect

from conftest import ARTIFACTS, a11y_problems, make_ct_series, track_assets

STAFF_EMAIL = "staff.e2e@hospital.example"
STAFF_PASSWORD = "Staff-Lightbox-e2e-7"
PATIENT_PASSWORD = "Patient-Lightbox-e2e-9"
ALICE = "Staffsearch^Alice"
# "=" separates the PN component groups, so the markup here has none.
XSS_NAME = "<script>alert(1)</script>^<i>Bobby</i>"
BUDGET = 200 * 1024
FILLER_STUDIES = 21  # more than one page (20) of search results


# ---------------------------------------------------------------------------------------------
# Setup


@pytest.fixture(scope="module")
def world(server, tmp_path_factory):
    """The studies (Alice's CT with 4 slices, an MR with an XSS patient name, filler studies)
    and a staff account."""
    tmp = tmp_path_factory.mktemp("staff")
    alice = make_ct_series(tmp / "alice", slices=4, size=48, patient_name=ALICE, patient_id="STF-ALICE",
                           description="CT chest staff", study_date="20240315")
    xss = make_ct_series(tmp / "xss", slices=1, size=32, patient_name=XSS_NAME, patient_id="STF-XSS",
                         description="<b>MR</b> head", study_date="20230704", modality="MR")
    paths = alice["paths"] + xss["paths"]
    for i in range(FILLER_STUDIES):
        f = make_ct_series(tmp / f"fill{i}", slices=1, size=16, patient_name=f"Filler^Number{i:02d}",
                           patient_id=f"STF-F{i:02d}", description="filler", study_date=f"2019{(i % 12) + 1:02d}10",
                           modality="CR")
        paths += f["paths"]
    server.stow(paths)

    staff_id = register_only(server, STAFF_EMAIL)
    r = server.api("PATCH", f"/users/{staff_id}", json={"role": "staff"})
    assert r.status_code == 200, r.text
    return {"alice": alice, "xss": xss, "staff_id": staff_id}


# Sign-ins and sign-ups share a per-address bucket on the server (10, then one every 2 s): the
# tests spend few. A signed-in session is reused through Playwright's storage state.

def register_only(server, email: str) -> str:
    """Create a patient account (one throttled call); returns its id."""
    body = {"email": email, "password": STAFF_PASSWORD if email == STAFF_EMAIL else PATIENT_PASSWORD}
    r = requests.post(f"{server.url}/api/auth/register", json=body, timeout=30)
    if r.status_code == 429:  # the address's bucket is empty on a very fast run: wait once
        time.sleep(float(r.headers.get("Retry-After", "2")))
        r = requests.post(f"{server.url}/api/auth/register", json=body, timeout=30)
    assert r.status_code == 201, f"register: {r.status_code} {r.text}"
    return next(u["id"] for u in server.api("GET", "/users").json() if u["email"] == email)


@pytest.fixture(scope="module")
def staff_state(server, world, browser, sign_in):
    """The staff member signs in through the UI once; later pages reuse the session."""
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, server.url, STAFF_EMAIL, STAFF_PASSWORD)
    expect(page).to_have_url(f"{server.url}/#/staff/search")
    state = ctx.storage_state()
    ctx.close()
    return state


def qido(server, token, **params):
    return requests.get(f"{server.base}/studies", params=params, timeout=30,
                        headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"})


def uids(resp) -> list[str]:
    return [s["0020000D"]["Value"][0] for s in resp.json()]


# WCAG 2 contrast of every visible text in <main> against its effective background (the first
# ancestor with an opaque background): 4.5:1, or 3:1 for large text (24px, or 18.66px bold).
CONTRAST_SCRIPT = r"""
() => {
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const bg = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    if (!(el.offsetWidth || el.offsetHeight) || el.closest('[disabled], option')) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden' || +cs.opacity === 0) continue;
    const [a, b] = [lum(rgb(cs.color).slice(0, 3)), lum(bg(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(cs.fontSize), bold = +cs.fontWeight >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) out.push(`${ratio.toFixed(2)} < ${need}: "${n.textContent.trim().slice(0, 40)}" (${el.tagName}.${el.className})`);
  }
  return out;
}
"""


def check_page(page, label: str):
    """No a11y problem (conftest's checks plus text contrast), no script error, no dialog (an
    XSS would open one). Chromium logs every 4xx answer as a console error; the expected
    refusals (401 before sign-in, 403) are not counted."""
    problems = a11y_problems(page) + page.evaluate(CONTRAST_SCRIPT)
    assert problems == [], f"{label}: {problems}"
    errors = [e for e in page.lightbox_errors
              if not re.search(r"Failed to load resource: the server responded with a status of 40[134]", e)]
    assert errors == [], f"{label}: {errors}"
    assert page.lightbox_dialogs == [], f"{label}: {page.lightbox_dialogs}"


def phone_shots(page_factory, shot, server, state, pages: list[tuple[str, str, str]]):
    """Each (hash, selector to wait for, name): a phone-width screenshot and the same checks."""
    ph = page_factory(390, 844, storage_state=state)
    for hash_, selector, name in pages:
        ph.goto(f"{server.url}/{hash_}")
        ph.wait_for_selector(selector)
        ph.wait_for_load_state("networkidle")
        width = ph.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name}: the page is {width}px wide on a 390px phone"
        shot(ph, f"{name}-phone")
        check_page(ph, f"{name} (phone)")


def idle(page, selector: str):
    """Wait until a search started by the last click has answered (the list is aria-busy while
    it runs; the click itself sets it, so it cannot be missed)."""
    expect(page.locator(selector)).not_to_have_attribute("aria-busy", "true")


def images_loaded(page, selector: str) -> list[bool]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.complete && e.naturalWidth > 0)")


# ---------------------------------------------------------------------------------------------
# Tests


def test_search_deliver_handout_revoke(server, world, staff_state, page_factory, shot):
    alice = world["alice"]["study"]
    page = page_factory(storage_state=staff_state)
    assets = track_assets(page)
    page.goto(f"{server.url}/")
    expect(page).to_have_url(f"{server.url}/#/staff/search")  # the staff start page

    # Newest studies first without any filter, 20 a page, then "Show more".
    status = page.get_by_test_id("search-status")
    expect(status).to_contain_text("20 studies shown; more are available")
    assert page.locator(".sr-item").count() == 20
    page.get_by_role("button", name="Show more studies").click()
    idle(page, ".sr-list")
    expect(status).to_contain_text(f"{FILLER_STUDIES + 2} studies shown.")
    expect(page.get_by_role("button", name="Show more studies")).to_be_hidden()
    # The XSS name renders literally, as text.
    xss_row = page.locator(f'.sr-item[data-study="{world["xss"]["study"]}"]')
    expect(xss_row.locator(".sr-name")).to_have_text("<script>alert(1)</script>, <i>Bobby</i>")
    expect(xss_row.locator(".sr-desc")).to_have_text("<b>MR</b> head")
    assert page.locator("main script, main i, main b").count() == 0

    # Keyboard: Tab moves from field to field in reading order, with a visible focus ring.
    page.get_by_label("Patient name").focus()
    order = []
    for _ in range(20):  # a date input takes one Tab per part (month, day, year)
        page.keyboard.press("Tab")
        here = page.evaluate("""() => { const e = document.activeElement, s = getComputedStyle(e);
            return [e.labels?.[0]?.textContent || e.textContent, s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2]; }""")
        if not order or order[-1] != here:
            order.append(here)
        if here[0] == "Search":
            break
    assert order == [["Patient ID", True], ["Date from", True], ["Date to", True], ["Modality", True], ["Search", True]], order
    # Search by a part of the name, keyboard only: type, Enter.
    page.get_by_label("Patient name").fill("staffsea al")
    page.get_by_label("Patient name").press("Enter")
    idle(page, ".sr-list")
    expect(status).to_have_text("1 study shown.")
    row = page.locator(".sr-item")
    expect(row.locator(".sr-name")).to_have_text("Staffsearch, Alice")
    expect(row).to_contain_text("STF-ALICE")
    expect(row).to_contain_text("CT chest staff")
    expect(row.locator(".sr-meta")).to_contain_text("ID STF-ALICE")
    expect(row.locator(".sr-meta")).to_contain_text("CT · 1 series · 4 images")
    page.wait_for_function("() => { const i = document.querySelector('.sr-item img'); return i && i.complete && i.naturalWidth > 0; }")
    assert "name=staffsea" in page.url  # the filters are in the address (Back returns to them)
    # Modality and date range narrow the search.
    page.get_by_label("Modality").select_option("MR")
    page.get_by_role("button", name="Search", exact=True).click()
    idle(page, ".sr-list")
    expect(status).to_have_text("No study matches.")
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Date from").fill("2024-03-01")
    page.get_by_label("Date to").fill("2024-03-31")
    page.get_by_label("Modality").select_option("CT")
    page.get_by_role("button", name="Search", exact=True).click()
    idle(page, ".sr-list")
    expect(status).to_have_text("1 study shown.")
    page.get_by_label("Date from").fill("2024-04-01")
    page.get_by_label("Date to").fill("2024-03-01")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("form[role=search] .error")).to_contain_text("after")
    page.get_by_label("Date from").fill("")
    page.get_by_label("Date to").fill("")
    page.get_by_label("Patient ID").fill("STF-ALICE")
    page.get_by_label("Modality").select_option("")
    page.get_by_role("button", name="Search", exact=True).click()
    idle(page, ".sr-list")
    expect(status).to_have_text("1 study shown.")
    shot(page, "staff-search-desktop")
    check_page(page, "search")
    sizes = assets.sizes()  # every module of the portal is loaded by now (one page load)
    assert {"/assets/js/staff.js", "/assets/js/admin.js", "/assets/app.css"} <= set(sizes), sizes
    assert assets.total() < BUDGET, sizes

    # Keyboard: Tab reaches the result link, Enter opens the study.
    page.locator(".sr-name").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.url}/#/staff/study/{alice}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Staffsearch, Alice")
    page.wait_for_selector(".series-item img")
    page.wait_for_function("() => [...document.querySelectorAll('.series-item img')].every(i => i.complete && i.naturalWidth > 0)")
    expect(page.get_by_test_id("no-grants")).to_be_visible()
    zip_link = page.get_by_role("link", name="Download (ZIP)")
    assert zip_link.get_attribute("href") == f"/dicom-web/studies/{alice}?accept=application%2Fzip"

    # Deliver by email: the claim code is shown once with a printable hand-out.
    page.get_by_label("Patient’s email address").fill("alice.patient@example.org")
    page.get_by_role("button", name="Create claim code").click()
    code_el = page.get_by_test_id("claim-code")
    expect(code_el).to_be_visible()
    code = code_el.inner_text().strip()
    assert len(code.replace("-", "")) == 26, code
    handout = page.get_by_test_id("handout")
    expect(handout).to_contain_text("Staffsearch, Alice")
    expect(handout).to_contain_text("CT chest staff")
    expect(handout).to_contain_text("Claim a study")
    expect(handout).to_contain_text("alice.patient@example.org")
    expect(page.get_by_test_id("portal-url")).to_have_text(f"{server.url}/")
    expect(page.locator("tr[data-kind=patient]")).to_contain_text("Waiting for the patient to claim")
    # Print: window.print is called, and in print media only the hand-out shows.
    page.evaluate("() => { window.__printed = 0; window.print = () => { window.__printed++; }; }")
    print_btn = page.get_by_role("button", name="Print hand-out")
    expect(print_btn).to_be_focused()
    print_btn.click()
    assert page.evaluate("window.__printed") == 1
    shot(page, "staff-study-desktop")
    check_page(page, "study")
    page.emulate_media(media="print")
    expect(handout).to_be_visible()
    for hidden in ["h1", "#study-series", "#share-title", "#grants-title", ".handout-tools", "header.top"]:
        expect(page.locator(hidden).first).to_be_hidden()
    shot(page, "staff-handout-print")
    page.pdf(path=str(ARTIFACTS / "staff-handout.pdf"), format="A4")
    page.emulate_media(media="screen")

    # The patient claims with the code from the page; the grant shows as claimed.
    ptoken = server.register("alice.patient@example.org", PATIENT_PASSWORD)
    r = requests.post(f"{server.url}/api/grants/claim", json={"code": code}, timeout=30,
                      headers={"Authorization": f"Bearer {ptoken}"})
    assert r.status_code == 200, r.text
    assert uids(qido(server, ptoken)) == [alice]
    page.reload()
    expect(page.locator("tr[data-kind=patient]")).to_contain_text("Claimed")
    expect(page.get_by_test_id("claim-code")).to_have_count(0)  # never shown again

    # Revoke with confirmation: Cancel first keeps it, then Yes revokes it.
    page.get_by_role("button", name="Revoke access of alice.patient@example.org").click()
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("button", name="Revoke access of alice.patient@example.org")).to_be_focused()
    page.get_by_role("button", name="Revoke access of alice.patient@example.org").click()
    page.get_by_role("button", name="Yes, revoke").click()
    expect(page.locator("tr[data-kind=patient]")).to_contain_text("Revoked")
    expect(page.get_by_role("button", name="Revoke access of alice.patient@example.org")).to_have_count(0)
    assert uids(qido(server, ptoken)) == []

    phone_shots(page_factory, shot, server, staff_state, [
        ("#/staff/search", ".sr-item img", "staff-search"),
        (f"#/staff/study/{alice}", ".series-item img", "staff-study"),
    ])


def test_facility_and_token_lifecycle(server, world, staff_state, page_factory, shot):
    alice = world["alice"]["study"]
    page = page_factory(storage_state=staff_state)
    page.goto(f"{server.url}/#/staff/search")
    page.get_by_role("link", name="Facilities").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Facility accounts")
    expect(page.get_by_text("No facility account yet.")).to_be_visible()

    # Create a facility account: the temporary password is shown once.
    new = page.locator("form", has=page.get_by_role("heading", name="New facility account"))
    new.get_by_label("Email").fill("pacs@clinic.example")
    new.get_by_label("Organisation").fill("Clinic <North> & Co")
    new.get_by_label("Valid for (days)").fill("10")
    new.get_by_role("button", name="Create facility account").click()
    password = page.get_by_test_id("facility-password").inner_text().strip()
    assert len(password) >= 12
    card = page.locator('li.facility[data-email="pacs@clinic.example"]')
    expect(card.locator("h3")).to_have_text("Clinic <North> & Co")
    expect(card).to_contain_text("expires in 10 days")
    facility_id = card.get_attribute("data-facility")
    # The temporary password works (and must be changed).
    r = requests.post(f"{server.url}/api/auth/login", json={"email": "pacs@clinic.example", "password": password}, timeout=30)
    assert r.status_code == 200 and r.json()["user"]["must_change_password"] is True

    # Extend by 30 days.
    card.get_by_label("Days to add for Clinic <North> & Co").fill("30")
    card.get_by_role("button", name="Extend").click()
    expect(card).to_contain_text("expires in 40 days")

    # An API token, created in the UI and read from the page.
    card.locator("summary", has_text="API tokens").click()
    expect(card.get_by_text("No API token.")).to_be_visible()
    card.get_by_label("Token label").fill("PACS gateway")
    card.get_by_role("button", name="Create token").click()
    token = card.get_by_test_id("api-token").inner_text().strip()
    assert token.startswith("lbx_"), token
    expect(card.locator("tr[data-token]")).to_have_count(1)
    expect(card.locator("tr[data-token]")).to_contain_text("never")
    shot(page, "staff-facilities-desktop")
    check_page(page, "facilities")

    # The token works against /dicom-web; the facility sees nothing yet.
    r = qido(server, token)
    assert r.status_code == 200 and r.json() == []

    # Share Alice's study with the facility in the UI: the token sees it at once.
    page.goto(f"{server.url}/#/staff/study/{alice}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Staffsearch, Alice")
    page.get_by_label("Facility", exact=True).select_option(facility_id)
    page.get_by_role("button", name="Share", exact=True).click()
    row = page.locator("tr[data-kind=facility]")
    expect(row).to_contain_text("Clinic <North> & Co (pacs@clinic.example)")
    expect(row).to_contain_text("Active")
    r = qido(server, token)
    assert r.status_code == 200 and uids(r) == [alice]
    r = requests.get(f"{server.base}/studies/{alice}/thumbnail", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/jpeg")

    # The token list shows its last use; revoking it in the UI stops it (401).
    page.goto(f"{server.url}/#/staff/facilities")
    expect(page.get_by_role("heading", level=1)).to_have_text("Facility accounts")
    card = page.locator(f'li.facility[data-facility="{facility_id}"]')
    card.locator("summary", has_text="API tokens").click()
    expect(card.locator("tr[data-token]")).not_to_contain_text("never")
    card.get_by_role("button", name="Revoke token PACS gateway").click()
    card.get_by_role("button", name="Yes, revoke").click()
    expect(card.get_by_text("No API token.")).to_be_visible()
    r = qido(server, token)
    assert r.status_code == 401, r.status_code

    # A second token, then disabling the account kills it too.
    card.get_by_label("Token label").fill("second")
    card.get_by_role("button", name="Create token").click()
    token2 = card.get_by_test_id("api-token").inner_text().strip()
    assert qido(server, token2).status_code == 200
    card.get_by_role("button", name="Disable Clinic <North> & Co").click()
    card.get_by_role("button", name="Yes, disable").click()
    expect(card).to_contain_text("Disabled")
    expect(card.get_by_role("button", name="Extend")).to_have_count(0)
    assert qido(server, token2).status_code == 401

    # A staff member's own token (at most 90 days).
    page.locator("summary", has_text="Tokens for your own").click()
    own = page.locator("details.card")
    own.get_by_label("Token label").fill("my script")
    own.get_by_label("Valid for (days)").fill("91")
    own.get_by_role("button", name="Create token").click()  # the browser refuses: max 90
    assert own.get_by_label("Valid for (days)").evaluate("el => el.validity.rangeOverflow")
    expect(own.get_by_test_id("api-token")).to_have_count(0)
    own.get_by_label("Valid for (days)").fill("7")
    own.get_by_role("button", name="Create token").click()
    mine = own.get_by_test_id("api-token").inner_text().strip()
    assert qido(server, mine).status_code == 200
    check_page(page, "facilities after changes")

    phone_shots(page_factory, shot, server, staff_state, [
        ("#/staff/facilities", "li.facility", "staff-facilities"),
    ])


def test_audit_browse_and_filter(server, world, staff_state, page_factory, shot):
    alice = world["alice"]["study"]
    page = page_factory(storage_state=staff_state)
    assets = track_assets(page)
    page.goto(f"{server.url}/#/staff/search")
    page.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit trail")
    status = page.get_by_test_id("audit-status")
    expect(status).to_contain_text("50 entries shown")
    rows = page.locator(".audit-table tbody tr")
    assert rows.count() == 50
    # Paging: older entries continue below without repeats.
    page.get_by_role("button", name="Older entries").click()
    idle(page, ".audit-results")
    expect(status).not_to_contain_text("50 entries shown")
    seqs = [int(s) for s in page.eval_on_selector_all(".audit-table tbody tr", "els => els.map(e => e.dataset.seq)")]
    assert len(seqs) > 50 and seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    shot(page, "staff-audit-desktop")
    check_page(page, "audit")

    # Filter by event: sign-ins only.
    page.get_by_label("Event").select_option("110114")
    page.get_by_role("button", name="Show entries").click()
    idle(page, ".audit-results")
    page.wait_for_function("() => [...document.querySelectorAll('.audit-table tbody tr')].every(r => r.dataset.event === '110114')")
    assert rows.count() >= 1
    expect(rows.first).to_contain_text("login")
    # Accounts are shown by their email (staff see who signed in, not an id).
    expect(rows.locator("td[data-label=Account] button", has_text=STAFF_EMAIL)).not_to_have_count(0)
    # Filter by study: the grants and claims of Alice's study from the first test.
    page.get_by_label("Event").select_option("110113")
    page.get_by_label("Study UID").fill(alice)
    page.get_by_role("button", name="Show entries").click()
    idle(page, ".audit-results")
    expect(rows.filter(has_text="claim")).not_to_have_count(0)
    expect(rows.filter(has_text="revoke-grant")).not_to_have_count(0)
    for r in page.eval_on_selector_all(".audit-table tbody tr", "els => els.map(e => e.textContent)"):
        assert alice in r
    assert "study=" in page.url and "event=110113" in page.url
    # Filter by account: click an account in the table.
    page.get_by_label("Event").select_option("")
    page.get_by_label("Study UID").fill("")
    page.get_by_role("button", name="Show entries").click()
    idle(page, ".audit-results")
    first_user = page.eval_on_selector(".audit-table tbody tr td[data-label=Account] button", "b => b.dataset.user")
    page.locator(".audit-table tbody tr td[data-label=Account] button").first.click()
    expect(page.get_by_label("Account id")).to_have_value(first_user)
    page.wait_for_function("u => [...document.querySelectorAll('.audit-table tbody td[data-label=Account] button')].every(b => b.dataset.user === u)", arg=first_user)
    # A time window in the future matches nothing.
    page.get_by_label("Account id").fill("")
    page.get_by_label("From").fill("2099-01-01T00:00")
    page.get_by_role("button", name="Show entries").click()
    idle(page, ".audit-results")
    expect(status).to_have_text("No entry matches.")
    assert assets.total() < BUDGET

    phone_shots(page_factory, shot, server, staff_state, [
        ("#/staff/audit", ".audit-table tbody tr", "staff-audit"),
    ])


def test_admin_users_and_settings(server, world, page_factory, sign_in, shot):
    # Two patients to manage.
    register_only(server, "carol@example.org")
    register_only(server, "dave@example.org")
    page = page_factory()
    assets = track_assets(page)
    sign_in(page, server.url, server.admin_email, server.admin_password)
    page.get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Users")
    carol = page.locator('tr[data-email="carol@example.org"]')
    expect(carol).to_contain_text("Active")
    # Own row: no self-demotion.
    expect(page.locator(f'tr[data-email="{server.admin_email}"] select')).to_be_disabled()
    shot(page, "admin-users-desktop")
    check_page(page, "users")
    assert assets.total() < BUDGET

    # Filter.
    page.get_by_label("Find a user").fill("carol")
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_label("Find a user").fill("")
    page.get_by_label("Role", exact=True).select_option("staff")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_have_attribute("data-email", STAFF_EMAIL)
    page.get_by_label("Role", exact=True).select_option("")

    # Role change: carol becomes staff (the server agrees).
    carol.get_by_label("Role of carol@example.org", exact=True).select_option("staff")
    carol.get_by_role("button", name="Save the role of carol@example.org").click()
    expect(page.locator("#toast")).to_contain_text("carol@example.org is now staff")
    users = {u["email"]: u for u in server.api("GET", "/users").json()}
    assert users["carol@example.org"]["role"] == "staff"
    expect(page.locator('tr[data-email="carol@example.org"] select')).to_have_value("staff")

    # Password reset: the temporary password (read from the page) signs in, must be changed.
    dave = page.locator('tr[data-email="dave@example.org"]')
    dave.get_by_role("button", name="Reset the password of dave@example.org").click()
    page.get_by_role("button", name="Yes, reset").click()
    temp = page.get_by_test_id("temp-password").inner_text().strip()
    assert len(temp) >= 12
    expect(page.locator('tr[data-email="dave@example.org"]')).to_contain_text("must change password")
    d = page_factory()
    d.goto(f"{server.url}/#/signin")
    d.get_by_label("Email").fill("dave@example.org")
    d.get_by_label("Password", exact=True).fill(temp)
    d.get_by_role("button", name="Sign in", exact=True).click()
    expect(d).to_have_url(f"{server.url}/#/password")
    admin_state = page.context.storage_state()

    # Disable and enable again.
    dave = page.locator('tr[data-email="dave@example.org"]')
    dave.get_by_role("button", name="Disable dave@example.org").click()
    page.get_by_role("button", name="Yes, disable").click()
    expect(page.locator('tr[data-email="dave@example.org"]')).to_contain_text("Disabled")
    page.get_by_role("button", name="Enable dave@example.org").click()
    expect(page.locator('tr[data-email="dave@example.org"]')).not_to_contain_text("Disabled")

    # Settings: self sign-up off → registration refused (API and sign-up page); on again → works.
    page.get_by_role("link", name="Settings").click()
    state = page.get_by_test_id("signup-state")
    expect(state).to_contain_text("on")
    box = page.get_by_label("Allow self sign-up")
    expect(box).to_be_checked()
    shot(page, "admin-settings-desktop")
    check_page(page, "settings")
    box.uncheck()
    page.get_by_role("button", name="Save").click()
    expect(state).to_contain_text("Self sign-up is off")
    e = page_factory()
    e.goto(f"{server.url}/#/signup")
    e.get_by_label("Email").fill("erin@example.org")
    e.get_by_label("Password", exact=True).fill(PATIENT_PASSWORD)
    e.get_by_label("Repeat the password").fill(PATIENT_PASSWORD)
    with e.expect_response(lambda r: r.url.endswith("/api/auth/register")) as reg:
        e.get_by_role("button", name="Create account").click()
    assert reg.value.status == 403
    expect(e.locator("form .error")).to_contain_text("sign-up is turned off")
    page.reload()
    expect(page.get_by_label("Allow self sign-up")).not_to_be_checked()
    page.get_by_label("Allow self sign-up").check()
    page.get_by_role("button", name="Save").click()
    expect(state).to_contain_text("Self sign-up is on")
    assert server.api("GET", "/settings").json() == {"self_signup": True}
    register_only(server, "erin@example.org")

    phone_shots(page_factory, shot, server, admin_state, [
        ("#/admin/users", "tbody tr", "admin-users"),
        ("#/admin/settings", "#set-signup", "admin-settings"),
    ])


def test_non_staff_get_no_data(server, world, staff_state, page_factory, sign_in, shot):
    alice = world["alice"]["study"]
    register_only(server, "mallory@example.org")
    page = page_factory()
    refused = []
    page.on("response", lambda r: refused.append((r.status, r.url)) if "/api/" in r.url and r.status in (403, 404) else None)
    sign_in(page, server.url, "mallory@example.org", PATIENT_PASSWORD)
    nav = page.locator("nav")
    for text in ["Studies", "Facilities", "Audit", "Users", "Settings"]:
        expect(nav.get_by_role("link", name=text, exact=True)).to_have_count(0)

    page.goto(f"{server.url}/#/staff/search")
    expect(page.get_by_test_id("refused")).to_contain_text("Only image-library staff")
    expect(page.locator(".sr-item")).to_have_count(0)
    page.goto(f"{server.url}/#/staff/study/{alice}")
    expect(page.get_by_test_id("refused")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("Staffsearch")
    for hash_, title in [("#/staff/facilities", "Facility accounts"), ("#/staff/audit", "Audit trail"),
                         ("#/admin/users", "Users"), ("#/admin/settings", "Settings")]:
        page.goto(f"{server.url}/{hash_}")
        msg = page.get_by_test_id("refused")
        expect(msg).to_be_visible()
        expect(msg).to_have_attribute("data-status", "403")
        expect(page.get_by_role("heading", level=1)).to_have_text(title)
        expect(page.locator("main table, main li.facility")).to_have_count(0)
    shot(page, "staff-refused-desktop")
    check_page(page, "refused")
    statuses = {u.split("/api", 1)[1]: s for s, u in refused}
    assert statuses.get("/facilities") == 403 and statuses.get("/users") == 403 and statuses.get("/settings") == 403
    assert any(k.startswith("/audit") and s == 403 for k, s in statuses.items())

    # A staff account is refused the admin pages by the server too.
    st = page_factory(storage_state=staff_state)
    st.goto(f"{server.url}/")
    expect(st.get_by_role("heading", level=1)).to_have_text("Search studies")
    expect(st.locator("nav").get_by_role("link", name="Users")).to_have_count(0)
    st.goto(f"{server.url}/#/admin/users")
    expect(st.get_by_test_id("refused")).to_have_attribute("data-status", "403")
    st.goto(f"{server.url}/#/admin/settings")
    expect(st.get_by_test_id("refused")).to_have_attribute("data-status", "403")
