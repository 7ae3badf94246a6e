"""Sign-up, sign-in and password change in the browser: every refusal is shown in words the user
can act on (wrong credentials, a weak password, too many attempts), and the good paths work."""

from __future__ import annotations

import re

from conftest import a11y_problems

PASSWORD = "Quiet-Harbour-Lantern-62"


def _alert(page) -> str:
    box = page.locator("[role=alert]:not([hidden])").first
    box.wait_for(state="visible", timeout=10_000)
    return box.inner_text()


def test_sign_up_refusals_then_success(server, page_factory, shot):
    page = page_factory()
    page.goto(f"{server.url}/#/signup")
    page.get_by_label("Email").fill("weak.password@example.org")
    page.get_by_label("Password", exact=True).fill("password")
    page.get_by_label("Repeat the password").fill("password")
    page.get_by_role("button", name="Create account").click()
    text = _alert(page)
    assert "too common" in text or "at least" in text, text
    shot(page, "auth-signup-weak-desktop")
    assert page.url.endswith("#/signup"), "still on the sign-up page"

    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat the password").fill(PASSWORD + "x")
    page.get_by_role("button", name="Create account").click()
    assert "differ" in _alert(page)

    page.get_by_label("Repeat the password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_function("() => location.hash === '#/studies'")
    page.wait_for_selector("nav >> text=Sign out")
    assert a11y_problems(page) == []


def test_change_password(server, page_factory, sign_in):
    email = "changes.password@example.org"
    server.register(email, PASSWORD)
    page = page_factory(390, 844, is_mobile=True, has_touch=True)
    sign_in(page, server.url, email, PASSWORD)
    page.goto(f"{server.url}/#/password")
    page.get_by_label("Current password").fill("Wrong-Current-Pass-9")
    page.get_by_label("New password", exact=True).fill("Brisk-Meadow-Falcon-27")
    page.get_by_label("Repeat the new password").fill("Brisk-Meadow-Falcon-27")
    page.get_by_role("button", name="Change password").click()
    assert _alert(page), "a wrong current password is refused with a message"
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("password")
    page.get_by_label("Repeat the new password").fill("password")
    page.get_by_role("button", name="Change password").click()
    assert "too common" in _alert(page)
    page.get_by_label("New password", exact=True).fill("Brisk-Meadow-Falcon-27")
    page.get_by_label("Repeat the new password").fill("Brisk-Meadow-Falcon-27")
    page.get_by_role("button", name="Change password").click()
    page.wait_for_function("() => location.hash === '#/studies'")
    # The new password signs in; the old one does not.
    r = server.api("POST", "/auth/login", json={"email": email, "password": "Brisk-Meadow-Falcon-27"})
    assert r.status_code == 200, r.text
    r = server.api("POST", "/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code in (401, 429), r.text


def test_a_page_still_loading_never_replaces_the_next_one(server, page_factory, sign_in):
    """Leave "My studies" while its list is still loading (the API answer held back 1.5 s) for
    the password page: when the list arrives it must not be drawn over the password page."""
    email = "quick.clicker@example.org"
    server.register(email, PASSWORD)
    page = page_factory()
    # In the page: the study list's API answers arrive 1.5 s late.
    page.add_init_script(
        "const f = window.fetch; window.fetch = (u, o) => String(u).includes('/api/studies')"
        " ? new Promise((r) => setTimeout(r, 1500)).then(() => f(u, o)) : f(u, o);")
    sign_in(page, server.url, email, PASSWORD)  # lands on My studies, still loading
    assert page.evaluate("() => location.hash") == "#/studies"
    page.goto(f"{server.url}/#/password")
    page.get_by_label("Repeat the new password").wait_for()
    page.wait_for_timeout(2500)  # the held-back list has arrived by now
    assert page.get_by_label("Repeat the new password").is_visible()
    assert page.get_by_role("heading", level=1).inner_text() == "Change password"
    assert page.title().startswith("Change password"), page.title()
    assert page.lightbox_errors == [], page.lightbox_errors


# Last in this module: it leaves the address throttled for the module's server.
def test_wrong_credentials_then_throttled(server, page_factory, shot):
    email = "throttle.me@example.org"
    server.register(email, PASSWORD)
    page = page_factory()
    page.goto(f"{server.url}/#/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill("Not-The-Password-1")
    # The module's earlier sign-ins may still count against this address: wait them out.
    text = ""
    for _ in range(10):
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_function(
            "() => { const b = document.querySelector('button[type=submit]'); return b && !b.disabled; }"
        )
        text = _alert(page)
        if not text.startswith("Too many attempts"):
            break
        page.wait_for_timeout(2100)
    assert text == "Wrong email or password.", text
    shot(page, "auth-signin-wrong-desktop")
    # Failed sign-ins back off per account: soon the server answers 429 and the page says so.
    seen = ""
    for _ in range(8):
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_function(
            "() => { const b = document.querySelector('button[type=submit]'); return b && !b.disabled; }"
        )
        seen = _alert(page)
        if seen.startswith("Too many attempts"):
            break
    assert seen.startswith("Too many attempts"), seen
    assert re.search(r"\d", seen), f"the message says how long to wait: {seen}"
    shot(page, "auth-signin-throttled-desktop")
