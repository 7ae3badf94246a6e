"""Patient pages of the portal in Chromium: deliver → sign up → claim → My studies → study page
→ viewer (wheel, keys, slider, window presets and drag) → ZIP download → access history; another
patient sees nothing; a PatientName with HTML renders as text; phone width; accessibility and
page-weight checks. Screenshots of every page (desktop and phone) go to target/e2e-artifacts/.
"""

from __future__ import annotations

import io
import re
import zipfile

import pydicom
import pytest
import requests

from conftest import REPO_ROOT, a11y_problems, make_ct_series, track_assets

XSS = "<img src=x onerror=alert(1)>"
PASSWORD = "Plum-Orchard-Lantern-77"
BUDGET_BYTES = 200 * 1024
SLICES = 12


@pytest.fixture(scope="module")
def ct(server, tmp_path_factory):
    """A 12-slice CT (64×64) whose PatientName and SeriesDescription are an HTML payload."""
    s = make_ct_series(tmp_path_factory.mktemp("ct"), slices=SLICES, size=64, patient_name=XSS,
                       patient_id="XSS-1", description="CT chest")
    server.stow(s["paths"])
    return s


def deliver_api(server, study: str, email: str) -> str:
    r = server.api("POST", f"/studies/{study}/grants", json={"email": email})
    assert r.status_code == 201, r.text
    return r.json()["claim_code"]


def staff_ui_delivers(server) -> bool:
    """The staff pages served by this binary have the deliver flow (the staff engineer's
    staff.js shows the code in [data-testid=claim-code])."""
    r = requests.get(f"{server.url}/assets/js/staff.js", timeout=10)
    return r.status_code == 200 and "claim-code" in r.text


def deliver_ui(page, server, study: str, email: str) -> str:
    """Staff delivers the study on its staff page and reads the claim code shown once."""
    page.goto(f"{server.url}/#/staff/study/{study}")
    page.get_by_label(re.compile(r"patient.*email", re.I)).fill(email)
    page.get_by_role("button", name=re.compile(r"claim code|deliver", re.I)).first.click()
    code = page.locator("[data-testid=claim-code]")
    code.wait_for()
    return code.inner_text().strip()


def sign_up(page, url: str, email: str, password: str):
    page.goto(f"{url}/#/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Repeat the password").fill(password)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_function("() => location.hash === '#/studies'")


def image_loaded(locator) -> bool:
    return locator.evaluate("img => img.complete && img.naturalWidth > 0")


def wait_image(page, selector: str):
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }",
        arg=selector)


def stage_img(page):
    return page.locator("[data-testid=viewer-stage] img.frame")


def wait_counter(page, text: str):
    page.wait_for_function(
        "t => document.querySelector('[data-testid=viewer-counter]')?.textContent === t", arg=text)


def wait_shown(page, sop: str):
    """Until the viewer shows (loaded) the image of this SOP Instance UID."""
    page.wait_for_function(
        "s => { const i = document.querySelector('[data-testid=viewer-stage] img.frame');"
        " return i && i.src.includes(s) && i.complete && i.naturalWidth > 0; }", arg=sop)


def check_page(page, name: str):
    problems = a11y_problems(page)
    assert not problems, f"{name}: accessibility problems: {problems}"
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: page is {overflow}px wider than the viewport"


def no_xss(page):
    assert page.lightbox_dialogs == [], f"a dialog fired: {page.lightbox_dialogs}"
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"], img[src$=\"/x\"]').length") == 0


def test_patient_journey(server, ct, page_factory, sign_in, shot, tmp_path):
    email = "pat.one@example.org"

    # Staff signs in through the UI and delivers the study (the staff UI when it has the flow).
    staff = page_factory()
    sign_in(staff, server.url, server.admin_email, server.admin_password)
    if staff_ui_delivers(server):
        code = deliver_ui(staff, server, ct["study"], email)
    else:
        code = deliver_api(server, ct["study"], email)
    assert re.fullmatch(r"[0-9A-Z]{5}(-[0-9A-Z]{1,5})+", code), code

    # The patient signs up in the UI: an empty "My studies" pointing to "Claim a study".
    page = page_factory()
    assets = track_assets(page)
    sign_up(page, server.url, email, PASSWORD)
    page.get_by_text("You have no studies here yet.").wait_for()
    check_page(page, "my studies (empty)")
    shot(page, "patient-studies-empty-desktop")

    # Claim: a wrong code is refused clearly; the right one (lower case, spaces) works.
    page.get_by_role("link", name="Claim a study").first.click()
    page.wait_for_function("() => location.hash === '#/claim'")
    page.get_by_label("Claim code").fill("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-F")
    page.get_by_role("button", name="Claim").click()
    err = page.get_by_role("alert")
    err.filter(has_text="This code does not work").wait_for()
    check_page(page, "claim (refused)")
    shot(page, "patient-claim-refused-desktop")
    page.get_by_label("Claim code").fill(code.lower().replace("-", " "))
    page.get_by_role("button", name="Claim").click()
    page.get_by_role("heading", name="The study is yours").wait_for()
    assert page.locator(".claimed [data-study]").count() == 1
    check_page(page, "claim (done)")
    shot(page, "patient-claim-desktop")

    # My studies: one card with its thumbnail, date, modality, description, counts, origin.
    page.get_by_role("navigation").get_by_role("link", name="My studies").click()
    page.wait_for_function("() => location.hash === '#/studies'")
    card = page.locator(f"ul[aria-label=Studies] .study-card[data-study='{ct['study']}']")
    card.wait_for()
    assert page.locator("ul[aria-label=Studies] .study-card").count() == 1
    wait_image(page, f"ul[aria-label=Studies] .study-card[data-study='{ct['study']}'] img")
    assert image_loaded(card.locator("img"))
    text = card.inner_text()
    for want in ("CT chest", "CT", "2024", "1 series · 12 images", "Delivered by the hospital"):
        assert want in text, f"{want!r} not on the card: {text!r}"
    assert card.locator(".patient-name").text_content() == XSS  # the name, literally
    no_xss(page)
    check_page(page, "my studies")
    shot(page, "patient-studies-desktop")

    # Study page: header, series strip with its thumbnail, viewer on the first image.
    card.get_by_role("link", name="CT chest").click()
    page.get_by_role("heading", level=1, name="CT chest").wait_for()
    facts = page.locator("dl.facts").inner_text()
    assert XSS in facts and "XSS-1" in facts, facts
    series_btn = page.locator(f".series-strip button[data-series='{ct['series']}']")
    assert series_btn.get_attribute("aria-pressed") == "true"
    wait_image(page, ".series-strip img")
    wait_counter(page, f"1 / {SLICES}")
    wait_shown(page, ct["sops"][0])
    no_xss(page)
    check_page(page, "study")

    # Prefetch: the next images are requested before they are shown (with no input from the
    # user). A resource entry appears when its response has ended, so wait for them.
    page.wait_for_function(
        "sops => { const names = performance.getEntriesByType('resource').map(e => e.name);"
        " return sops.every(s => names.some(u => u.includes(s) && u.includes('/rendered'))); }",
        arg=ct["sops"][1:6])
    assert page.evaluate("() => document.querySelector('[data-testid=viewer-counter]').textContent") \
        == f"1 / {SLICES}", "still on the first image"

    # Keyboard: the stage follows the series strip in the tab order, with a visible focus ring.
    stage = page.locator("[data-testid=viewer-stage]")
    series_btn.focus()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement?.dataset.testid") == "viewer-stage"
    ring = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert ring not in ("none", ""), ring
    assert "image 1 of 12" in (stage.get_attribute("aria-label") or "")

    # Move: wheel, keys, slider, buttons.
    stage.hover()
    page.mouse.wheel(0, 100)
    wait_counter(page, f"2 / {SLICES}")
    page.mouse.wheel(0, 300)
    wait_counter(page, f"5 / {SLICES}")
    stage.focus()
    page.keyboard.press("End")
    wait_counter(page, f"{SLICES} / {SLICES}")
    wait_shown(page, ct["sops"][-1])
    page.keyboard.press("ArrowDown")  # stays on the last
    wait_counter(page, f"{SLICES} / {SLICES}")
    page.keyboard.press("Home")
    wait_counter(page, f"1 / {SLICES}")
    page.keyboard.press("ArrowRight")
    wait_counter(page, f"2 / {SLICES}")
    page.keyboard.press("PageDown")
    wait_counter(page, f"3 / {SLICES}")
    page.keyboard.press("ArrowUp")
    wait_counter(page, f"2 / {SLICES}")
    page.get_by_label("Image", exact=True).fill("7")
    wait_counter(page, f"7 / {SLICES}")
    page.get_by_role("button", name="Next image").click()
    wait_counter(page, f"8 / {SLICES}")
    stage.hover()
    for _ in range(10):
        page.mouse.wheel(0, 100)
    wait_counter(page, f"{SLICES} / {SLICES}")  # scrolled to the last image
    wait_shown(page, ct["sops"][-1])
    shot(page, "patient-study-desktop")

    # Window: a preset puts ?window= on the image and changes it.
    before = stage.screenshot()
    assert "window=" not in stage_img(page).get_attribute("src")
    page.get_by_role("button", name="Lung").click()
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=viewer-stage] img.frame');"
        " return i && /window=-600%2C1500/.test(i.src) && i.complete && i.naturalWidth > 0; }")
    assert page.get_by_role("button", name="Lung").get_attribute("aria-pressed") == "true"
    assert "W 1500 · L -600" in page.locator("[data-testid=viewer-wl]").inner_text()
    lung = stage.screenshot()
    assert lung != before, "the lung window did not change the image"

    # Drag: right widens, down raises the level; one debounced request with the new window.
    box = stage.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(cx - 8 * i, cy + 6 * i)
    page.mouse.up()
    wl = page.locator("[data-testid=viewer-wl]").inner_text()
    m = re.search(r"W (\d+) · L (-?\d+)", wl)
    assert m and int(m.group(1)) < 1500 and int(m.group(2)) > -600, wl
    want = f"window={m.group(2)}%2C{m.group(1)}"
    page.wait_for_function(
        "w => { const i = document.querySelector('[data-testid=viewer-stage] img.frame');"
        " return i && i.src.includes(w) && i.complete && i.naturalWidth > 0; }", arg=want)
    assert page.get_by_role("button", name="Lung").get_attribute("aria-pressed") == "false"
    assert stage.screenshot() != lung, "dragging did not change the image"
    shot(page, "patient-viewer-window-desktop")
    page.get_by_role("button", name="Default").click()
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=viewer-stage] img.frame');"
        " return i && !i.src.includes('window=') && i.complete && i.naturalWidth > 0; }")

    # Zoom and pan: buttons, keys, double click, drag mode "Pan"; the image grows on screen and
    # moves with the drag, and never leaves the stage.
    def img_box():
        """The picture's own rectangle on screen (the <img> box is the stage's; object-fit:
        contain letterboxes the picture inside it)."""
        return page.evaluate(
            "() => { const i = document.querySelector('[data-testid=viewer-stage] img.frame');"
            " const r = i.getBoundingClientRect();"
            " const k = Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight);"
            " const w = i.naturalWidth * k, h = i.naturalHeight * k;"
            " return [r.x + (r.width - w) / 2, r.y + (r.height - h) / 2, w, h]; }")
    fit = img_box()
    zoom_text = page.locator("[data-testid=viewer-zoom]")
    assert zoom_text.inner_text() == "100%"
    assert page.get_by_role("button", name="Zoom out").is_disabled()
    page.get_by_role("button", name="Zoom in").click()
    page.get_by_role("button", name="Zoom in").click()
    assert zoom_text.inner_text() == "225%"
    assert stage.get_attribute("data-zoom") == "2.25"
    zoomed = img_box()
    assert abs(zoomed[2] - 2.25 * fit[2]) < 2 and abs(zoomed[3] - 2.25 * fit[3]) < 2, (fit, zoomed)
    page.get_by_role("button", name="Pan", exact=True).click()
    box = stage.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(cx + 10 * i, cy + 5 * i)
    page.mouse.up()
    moved = img_box()
    assert abs(moved[0] - zoomed[0] - 100) < 2 and abs(moved[1] - zoomed[1] - 50) < 2, (zoomed, moved)
    # A huge drag stops at the image's edge: the stage stays covered.
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 3000, cy + 3000, steps=5)
    page.mouse.up()
    edge = img_box()
    # The picture's left and top edges have come to the stage's, no further (2.25 × the fitted
    # picture is larger than the stage both ways here).
    assert abs(edge[0] - box["x"]) < 1.5 and abs(edge[1] - box["y"]) < 1.5, (box, edge)
    assert "Zoom 225%" in stage.inner_text()
    shot(page, "patient-viewer-zoom-desktop")
    stage.focus()
    page.keyboard.press("0")
    assert stage.get_attribute("data-zoom") == "1" and zoom_text.inner_text() == "100%"
    assert abs(img_box()[0] - fit[0]) < 1, "fit puts the image back"
    page.keyboard.press("+")
    assert stage.get_attribute("data-zoom") == "1.5"
    page.keyboard.press("-")
    assert stage.get_attribute("data-zoom") == "1"
    stage.dblclick()
    assert stage.get_attribute("data-zoom") == "2"
    stage.dblclick()
    assert stage.get_attribute("data-zoom") == "1"
    page.get_by_role("button", name="Window", exact=True).click()

    # Download (ZIP): every entry is a DICOM file of this study.
    with page.expect_download() as dl_info:
        page.get_by_role("link", name="Download (ZIP)").click()
    dl = dl_info.value
    assert dl.suggested_filename.endswith(".zip")
    zpath = tmp_path / "study.zip"
    dl.save_as(zpath)
    with zipfile.ZipFile(zpath) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        sops = set()
        for n in names:
            data = z.read(n)
            if n.upper().endswith("DICOMDIR"):
                continue
            assert data[128:132] == b"DICM", f"{n} is not a DICOM Part 10 file"
            ds = pydicom.dcmread(io.BytesIO(data))
            assert ds.StudyInstanceUID == ct["study"]
            sops.add(ds.SOPInstanceUID)
    assert sops == set(ct["sops"])

    # Access history: who (role/organisation) and when. The download's record is written
    # asynchronously (the audit writer batches): refresh until it is there.
    page.get_by_role("button", name="Show who accessed this study").click()
    hist = page.locator(".history")
    day = page.locator(".history .history-day").first
    day.wait_for()
    for _ in range(20):
        if "Downloaded (ZIP)" in hist.inner_text():
            break
        page.wait_for_timeout(250)
        page.get_by_role("button", name="Refresh the access history").click()
        day.wait_for()
    htext = hist.inner_text()
    for want in ("Hospital administrator", "Gave access", "You", "Claimed it with a code", "Viewed images",
                 "Downloaded (ZIP)"):
        assert want in htext, f"{want!r} not in the access history:\n{htext}"
    assert server.admin_email not in htext
    check_page(page, "study + history")
    shot(page, "patient-study-history-desktop")

    # Sign out.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_function("() => location.hash === '#/signin'")

    no_xss(page)
    errors = [e for e in page.lightbox_errors if "404" not in e or "/api/grants/claim" not in e]
    assert errors == [], errors  # only the refused wrong code
    total = assets.total()
    assert 0 < total <= BUDGET_BYTES, f"{total} bytes of JS+CSS: {assets.sizes()}"


@pytest.fixture(scope="module")
def claimed(server, ct):
    """A second patient who claimed the study over the API (for the phone and refusal tests)."""
    email = "pat.two@example.org"
    token = server.register(email, PASSWORD)
    code = deliver_api(server, ct["study"], email)
    r = requests.post(f"{server.url}/api/grants/claim", json={"code": code},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return {"email": email, "password": PASSWORD}


def test_phone(server, ct, claimed, page_factory, sign_in, shot):
    page = page_factory(390, 844)
    assets = track_assets(page)
    page.goto(f"{server.url}/#/signin")
    page.get_by_role("heading", level=1, name="Sign in").wait_for()
    check_page(page, "sign in (phone)")
    shot(page, "patient-signin-phone")
    page.goto(f"{server.url}/#/signup")
    page.get_by_label("Repeat the password").wait_for()
    shot(page, "patient-signup-phone")
    sign_in(page, server.url, claimed["email"], claimed["password"])
    card = page.locator(f".study-card[data-study='{ct['study']}']")
    card.wait_for()
    wait_image(page, ".study-card img")
    check_page(page, "my studies (phone)")
    shot(page, "patient-studies-phone")

    page.goto(f"{server.url}/#/claim")
    page.get_by_label("Claim code").wait_for()
    check_page(page, "claim (phone)")
    shot(page, "patient-claim-phone")

    page.goto(f"{server.url}/#/study/{ct['study']}")
    wait_counter(page, f"1 / {SLICES}")
    wait_image(page, "[data-testid=viewer-stage] img.frame")
    stage = page.locator("[data-testid=viewer-stage]")
    box = stage.bounding_box()
    assert box["width"] <= 390 and box["width"] >= 340, box  # fits the phone's width
    # The image fills the stage width (fitted, not 64 px).
    iw = page.evaluate("() => document.querySelector('[data-testid=viewer-stage] img.frame').getBoundingClientRect().width")
    assert iw >= 300, iw

    # Swipe through the images ("Image" drag mode; touch pointer events on the stage).
    page.get_by_role("button", name="Image", exact=True).click()
    stage.scroll_into_view_if_needed()
    box = stage.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    swipe(page, cx + 120, cy, cx - 120, cy)
    page.wait_for_function(
        "() => +document.querySelector('[data-testid=viewer-counter]').textContent.split(' / ')[0] > 5")
    wait_image(page, "[data-testid=viewer-stage] img.frame")
    # Two fingers spreading apart zoom in; the image under them grows.
    before = page.evaluate("() => document.querySelector('[data-testid=viewer-stage] img.frame')"
                           ".getBoundingClientRect().width")
    pinch(page, cx, cy, 30, 120)
    z = float(stage.get_attribute("data-zoom"))
    assert 3.0 < z <= 4.5, z  # 240 px apart from 60: 4×, give or take the first move
    after = page.evaluate("() => document.querySelector('[data-testid=viewer-stage] img.frame')"
                          ".getBoundingClientRect().width")
    assert after > 2.5 * before, (before, after)
    page.get_by_role("button", name="Fit the image to the screen").click()
    assert stage.get_attribute("data-zoom") == "1"
    check_page(page, "study (phone)")
    shot(page, "patient-study-phone")
    page.get_by_role("button", name="Show who accessed this study").click()
    page.locator(".history .history-day").first.wait_for()
    shot(page, "patient-study-history-phone")
    no_xss(page)
    assert page.lightbox_errors == [], page.lightbox_errors
    assert assets.total() <= BUDGET_BYTES


def pinch(page, cx, cy, r0, r1, steps=12):
    """A two-finger pinch about (cx, cy), the fingers going from r0 to r1 px off the centre
    horizontally, as real touch input (Chrome DevTools Protocol)."""
    cdp = page.context.new_cdp_session(page)

    def points(r):
        return [{"x": cx - r, "y": cy, "id": 1}, {"x": cx + r, "y": cy, "id": 2}]
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points(r0)})
    for i in range(1, steps + 1):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": points(r0 + (r1 - r0) * i / steps)})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def swipe(page, x0, y0, x1, y1, steps=12):
    """A one-finger swipe as real touch input (Chrome DevTools Protocol: Playwright itself only
    taps); the stage sees touch pointer events."""
    cdp = page.context.new_cdp_session(page)
    point = lambda x, y: [{"x": x, "y": y, "id": 1}]  # noqa: E731
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": point(x0, y0)})
    for i in range(1, steps + 1):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": point(
            x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def test_other_patient_sees_nothing(server, ct, claimed, page_factory, sign_in, shot):
    email = "stranger@example.org"
    server.register(email, PASSWORD)
    page = page_factory()
    sign_in(page, server.url, email, PASSWORD)
    page.get_by_text("You have no studies here yet.").wait_for()
    assert page.locator(".study-card").count() == 0
    page.goto(f"{server.url}/#/study/{ct['study']}")
    page.get_by_role("heading", level=1, name="Study not found").wait_for()
    assert XSS not in page.inner_text("body")
    check_page(page, "study not found")
    shot(page, "patient-study-not-found-desktop")
    # The page's own requests (cookie, same origin) are refused too.
    statuses = page.evaluate("""async (uid) => {
      const urls = [`/dicom-web/studies/${uid}/thumbnail`, `/dicom-web/studies/${uid}/series`,
                    `/dicom-web/studies/${uid}?accept=application/zip`, `/api/studies/${uid}/access-history`];
      return Promise.all(urls.map(async (u) => (await fetch(u)).status));
    }""", ct["study"])
    assert statuses == [404, 404, 404, 404], statuses
    phone = page_factory(390, 844)
    sign_in(phone, server.url, email, PASSWORD)
    phone.goto(f"{server.url}/#/study/{ct['study']}")
    phone.get_by_role("heading", level=1, name="Study not found").wait_for()
    shot(phone, "patient-study-not-found-phone")
    phone.goto(f"{server.url}/#/studies")
    phone.get_by_text("You have no studies here yet.").wait_for()
    shot(phone, "patient-studies-empty-phone")


def test_portal_headers_and_no_inline_script(server):
    r = requests.get(f"{server.url}/", timeout=10)
    assert r.status_code == 200
    csp = r.headers["Content-Security-Policy"]
    for part in ("default-src 'self'", "img-src 'self' blob: data:", "object-src 'none'", "frame-ancestors 'none'"):
        assert part in csp
    html = r.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script in index.html"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler in index.html"
    for name in ("patient.js", "viewer.js"):
        js = requests.get(f"{server.url}/assets/js/{name}", timeout=10)
        assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
        assert "innerHTML" not in js.text and "insertAdjacentHTML" not in js.text
        assert "localStorage" not in js.text


def test_zoom_asks_for_more_pixels_of_a_large_image(server, page_factory, sign_in, tmp_path):
    """On a phone a 1536-px image is first rendered at a viewport the size of the stage; zoomed
    in, the viewer asks for the image at its native size (sharper), once the gesture settles."""
    big = make_ct_series(tmp_path / "big", slices=2, size=1536, patient_name="Big^Image",
                         patient_id="BIG-1", description="CT large")
    server.stow(big["paths"])
    page = page_factory(390, 844)
    sign_in(page, server.url, server.admin_email, server.admin_password)
    page.goto(f"{server.url}/#/study/{big['study']}")  # staff: "Open in the viewer"
    wait_shown(page, big["sops"][0])
    src = stage_img(page).get_attribute("src")
    m = re.search(r"viewport=(\d+)%2C\1", src)
    assert m and int(m.group(1)) < 1536, f"a stage-sized viewport first: {src}"
    natural = page.evaluate("() => document.querySelector('[data-testid=viewer-stage] img.frame').naturalWidth")
    assert natural == int(m.group(1)), natural
    page.get_by_role("button", name="Zoom in").click()
    page.get_by_role("button", name="Zoom in").click()
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=viewer-stage] img.frame');"
        " return i && !i.src.includes('viewport=') && i.complete && i.naturalWidth === 1536; }")
    assert page.locator("[data-testid=viewer-stage]").get_attribute("data-zoom") == "2.25"
    # Moving on keeps the native size (no step back to the smaller viewport).
    page.get_by_role("button", name="Next image").click()
    wait_shown(page, big["sops"][1])
    assert "viewport=" not in stage_img(page).get_attribute("src")
    assert page.lightbox_errors == [], page.lightbox_errors


@pytest.mark.skipif(not __import__("os").environ.get("LIGHTBOX_DOCS_SCREENSHOTS"),
                    reason="set LIGHTBOX_DOCS_SCREENSHOTS=1 to refresh docs/screenshots/")
def test_readme_screenshots(server, page_factory, sign_in, tmp_path):
    """The README's two pictures: "My studies" and the viewer (desktop, small PNGs), of a
    patient with two delivered studies."""
    out = REPO_ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    email = "jane.doe@example.org"
    token = server.register(email, PASSWORD)
    ct2 = make_ct_series(tmp_path / "a", slices=40, size=192, patient_name="Doe^Jane", patient_id="P-1001",
                         description="CT chest with contrast", study_date="20250611")
    mr = make_ct_series(tmp_path / "b", slices=8, size=128, patient_name="Doe^Jane", patient_id="P-1001",
                        description="MR knee", study_date="20240302", modality="MR")
    for s in (ct2, mr):
        server.stow(s["paths"])
        code = deliver_api(server, s["study"], email)
        r = requests.post(f"{server.url}/api/grants/claim", json={"code": code},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
    page = page_factory(1100, 640)
    sign_in(page, server.url, email, PASSWORD)
    page.wait_for_function("() => [...document.querySelectorAll('.study-card img')].length === 2 &&"
                           " [...document.querySelectorAll('.study-card img')].every(i => i.complete && i.naturalWidth)")
    page.screenshot(path=str(out / "my-studies.png"))
    page.goto(f"{server.url}/#/study/{ct2['study']}")
    wait_shown(page, ct2["sops"][0])
    page.get_by_role("button", name="Lung").click()
    page.locator("[data-testid=viewer-stage]").focus()
    page.keyboard.press("End")
    page.keyboard.press("PageUp")
    wait_shown(page, ct2["sops"][-5])
    page.evaluate("() => document.activeElement.blur()")
    page.locator(".viewer").screenshot(path=str(out / "viewer.png"))
    for name in ("my-studies.png", "viewer.png"):
        assert (out / name).stat().st_size < 300 * 1024


def test_facility_sees_shared_study(server, ct, page_factory, sign_in, shot):
    """A facility account (first sign-in: new password) sees the shared study as "Shared with
    us" and opens it in the viewer; the claim page is not in its navigation."""
    r = server.api("POST", "/facilities", json={"email": "radiology@clinic.example",
                                                "organisation": "Clinic <b>Nord</b>", "expires_in_days": 14})
    assert r.status_code == 201, r.text
    fac = r.json()
    r = server.api("POST", f"/studies/{ct['study']}/grants", json={"account_id": fac["user"]["id"]})
    assert r.status_code == 201, r.text
    page = page_factory()
    sign_in(page, server.url, "radiology@clinic.example", fac["temporary_password"])
    page.wait_for_function("() => location.hash === '#/password'")
    page.get_by_label("Current password").fill(fac["temporary_password"])
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat the new password").fill(PASSWORD)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_function("() => location.hash === '#/studies'")
    card = page.locator(f"ul[aria-label=Studies] .study-card[data-study='{ct['study']}']")
    card.wait_for()
    assert "Shared with us" in card.inner_text()
    assert page.get_by_role("navigation").get_by_role("link", name="Claim a study").count() == 0
    check_page(page, "my studies (facility)")
    shot(page, "facility-studies-desktop")
    card.get_by_role("link", name="CT chest").click()
    wait_shown(page, ct["sops"][0])
    page.get_by_role("button", name="Show who accessed this study").click()
    page.locator(".history .history-day").first.wait_for()
    assert page.lightbox_errors == [], page.lightbox_errors
    no_xss(page)
