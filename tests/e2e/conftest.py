"""Browser end-to-end tests for the Lightbox portal: Playwright driving Debian's Chromium.

No browser is ever downloaded (never `playwright install`): the tests launch the system
Chromium (`chromium` on PATH, else /usr/bin/chromium), headless, with --no-sandbox.

    cargo build --bin lightbox
    pip install -r tests/e2e/requirements.txt
    python -m pytest -q tests/e2e

Fixtures
  server        a started Lightbox with a fresh data directory (one per test module). Attributes:
                url, admin_email, admin_password, token (admin bearer), base (/dicom-web root);
                server.stow(paths) stores DICOM files with the admin token;
                server.api(method, path, json=None, token=None) calls /api (path after /api),
                returns the requests.Response.
  browser       the Playwright Browser (one per session).
  page_factory  page_factory(width=1280, height=900) -> a Page in a new context. A width under
                600 gives a phone context (is_mobile, has_touch, device scale 2). Each page has
                `page.lightbox_errors` (uncaught errors and console errors) and
                `page.lightbox_dialogs` (messages of any dialog, dismissed at once).
  shot          shot(page, name): full-page screenshot to target/e2e-artifacts/{name}.png.
  sign_in       sign_in(page, server_url, email, password): signs in through the UI and waits
                until the sign-in page is gone.
Helpers (import from conftest): make_ct_series(dir, ...), a11y_problems(page),
track_assets(page).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "target" / "e2e-artifacts"
PHONE = {"width": 390, "height": 844}
DEFAULT_TIMEOUT_MS = 10_000


def _load_python_conftest():
    """tests/python/conftest.py under another module name (a second `conftest` would clash)."""
    path = REPO_ROOT / "tests" / "python" / "conftest.py"
    spec = importlib.util.spec_from_file_location("lightbox_python_conftest", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


_py = _load_python_conftest()


class E2EServer:
    """A running Lightbox plus setup helpers over HTTP (the admin's bearer token)."""

    def __init__(self, inner):
        self.inner = inner
        self.url = inner.url
        self.base = inner.url + "/dicom-web"
        self.admin_email = _py.ADMIN_EMAIL
        self.admin_password = _py.ADMIN_PASSWORD
        self.token = inner.token
        self.data_dir = inner.data_dir

    def api(self, method: str, path: str, json=None, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return requests.request(method, f"{self.url}/api{path}", json=json, headers=headers,
                                timeout=30)

    def stow(self, paths) -> dict:
        """STOW-RS the files (one multipart request) with the admin token; returns the response
        JSON. Fails the test unless the store accepted every file."""
        boundary = "lightbox-e2e-boundary"
        body = bytearray()
        for p in paths:
            body += (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
            body += Path(p).read_bytes()
            body += b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        r = requests.post(
            f"{self.base}/studies", data=bytes(body), timeout=60,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/dicom+json",
                     "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
        assert r.status_code == 200, f"STOW failed: {r.status_code} {r.text[:500]}"
        return r.json()

    def register(self, email: str, password: str) -> str:
        """Create a patient account over the API; returns its bearer token."""
        r = requests.post(f"{self.url}/api/auth/register", json={"email": email, "password": password},
                          timeout=30)
        assert r.status_code in (200, 201), f"register: {r.status_code} {r.text}"
        r = self._post_waiting_out_throttle("/api/auth/login", {"email": email, "password": password})
        assert r.status_code == 200, f"login: {r.status_code} {r.text}"
        return r.json()["token"]

    def _post_waiting_out_throttle(self, path: str, body: dict) -> requests.Response:
        """POST; on 429 (every test of a module signs in from 127.0.0.1, and the per-address
        bucket refills at one attempt per 2 s) sleep the Retry-After the server sent and try
        again, a few times. The throttle itself is asserted in test_auth.py."""
        for _ in range(8):
            r = requests.post(f"{self.url}{path}", json=body, timeout=30)
            if r.status_code != 429:
                return r
            time.sleep(float(r.headers.get("Retry-After", "2")) + 0.1)
        return r


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    inner = _py.start_server(tmp / "data", tmp / "logs")
    try:
        yield E2EServer(inner)
    finally:
        _py.stop_server(inner)


def chromium_path() -> str:
    return shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    exe = chromium_path()
    if not os.path.exists(exe):
        pytest.fail(f"Chromium not found ({exe}): apt-get install chromium", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"], headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page_factory(browser):
    contexts = []

    def make(width: int = 1280, height: int = 900, **context_args):
        phone = width < 600
        opts = dict(viewport={"width": width, "height": height}, accept_downloads=True)
        if phone:
            opts.update(is_mobile=True, has_touch=True, device_scale_factor=2)
        opts.update(context_args)
        ctx = browser.new_context(**opts)
        ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(ctx)
        page = ctx.new_page()
        page.lightbox_errors = []
        page.lightbox_dialogs = []
        page.on("pageerror", lambda e: page.lightbox_errors.append(f"pageerror: {e}"))

        def on_console(m):
            # The shell's GET /api/me answers 401 before sign-in: expected, not an error.
            if m.type != "error" or (m.location or {}).get("url", "").endswith("/api/me"):
                return
            page.lightbox_errors.append(f"console.{m.type}: {m.text} ({(m.location or {}).get('url', '')})")
        page.on("console", on_console)

        def on_dialog(d):
            page.lightbox_dialogs.append(d.message)
            d.dismiss()
        page.on("dialog", on_dialog)
        return page

    yield make
    for c in contexts:
        try:
            c.close()
        except Exception:
            pass


@pytest.fixture(scope="session")
def shot():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str):
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path
    return take


def _sign_in(page, server_url: str, email: str, password: str):
    page.goto(f"{server_url}/#/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    # Every test of a module signs in from 127.0.0.1: when the per-address bucket is empty the
    # page says "Too many attempts" (asserted in test_auth.py); wait as the page asks and retry.
    for _ in range(8):
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_function(
            "() => (location.hash && !location.hash.startsWith('#/signin'))"
            " || !!document.querySelector('[role=alert]:not([hidden])')")
        alert = page.locator("[role=alert]:not([hidden])")
        if page.evaluate("() => location.hash.startsWith('#/signin')") and alert.count():
            text = alert.first.inner_text()
            assert text.startswith("Too many attempts"), f"sign-in refused: {text}"
            page.wait_for_timeout(2100)
            # The browser logs the 429 as a failed resource: expected here, not a page error.
            errors = getattr(page, "lightbox_errors", None)
            if errors is not None:
                errors[:] = [e for e in errors if not ("429" in e and "/api/auth/login" in e)]
            continue
        break
    page.wait_for_function("() => location.hash && !location.hash.startsWith('#/signin')")
    page.wait_for_selector("nav >> text=Sign out")


@pytest.fixture(scope="session")
def sign_in():
    return _sign_in


# ---------------------------------------------------------------------------
# Shared helpers

def make_ct_series(out_dir: Path, slices: int = 12, size: int = 64, patient_name: str = "Test^Patient",
                   patient_id: str = "E2E-1", description: str = "CT chest", study_date: str = "20240315",
                   modality: str = "CT", study_uid: str | None = None) -> dict:
    """A small CT series written with pydicom (uncompressed, 16-bit signed, HU via rescale).
    Each slice has a different pattern, so consecutive rendered images differ. Returns
    {study, series, sops: [...], paths: [...]}."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out_dir.mkdir(parents=True, exist_ok=True)
    study = study_uid or generate_uid()
    series = generate_uid()
    sops, paths = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(slices):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19800101"
        ds.StudyDate = study_date
        ds.StudyTime = "101500"
        ds.StudyDescription = description
        ds.SeriesDescription = f"{description} axial"
        ds.AccessionNumber = "ACC-E2E"
        ds.Modality = modality
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, float(i * 5)]
        ds.SliceThickness = 5
        ds.Rows = size
        ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        # A disc whose radius grows with the slice, soft tissue (~40 HU) in air, bone rim.
        r = np.hypot(yy - size / 2, xx - size / 2)
        radius = size * (0.2 + 0.2 * i / max(slices - 1, 1))
        hu = np.full((size, size), -1000, dtype=np.int32)
        hu[r < radius] = 40 + ((xx[r < radius] * 7 + i * 13) % 120) - 60
        hu[(r >= radius) & (r < radius + 3)] = 900
        hu[:, : size // 8] = -600  # a lung-ish band
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
        path = out_dir / f"ct{i + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        sops.append(sop)
        paths.append(path)
    return {"study": study, "series": series, "sops": sops, "paths": paths}


A11Y_SCRIPT = r"""
() => {
  const problems = [];
  const name = (el) => (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') && [...el.getAttribute('aria-labelledby').split(/\s+/)].map(i => document.getElementById(i)?.textContent || '').join(' ') || el.textContent || el.getAttribute('title') || el.value || '').trim();
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || !visible(el)) continue;
    const labelled = (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)) || el.closest('label') || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!labelled) problems.push(`input without a label: ${el.outerHTML.slice(0, 120)}`);
  }
  for (const el of document.querySelectorAll('img')) {
    if (!el.hasAttribute('alt')) problems.push(`img without alt: ${el.outerHTML.slice(0, 120)}`);
  }
  for (const el of document.querySelectorAll('button, a[href], [role=button]')) {
    if (!visible(el)) continue;
    let n = name(el);
    if (!n) for (const img of el.querySelectorAll('img[alt]')) n += img.alt;
    if (!n.trim()) problems.push(`control without a name: ${el.outerHTML.slice(0, 120)}`);
  }
  const hs = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].filter(visible).map(x => +x.tagName[1]);
  if (hs.filter(x => x === 1).length !== 1) problems.push(`expected exactly one h1, found ${hs.filter(x => x === 1).length}`);
  for (let i = 1; i < hs.length; i++) if (hs[i] > hs[i - 1] + 1) problems.push(`heading level skips from h${hs[i - 1]} to h${hs[i]}`);
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  const dup = ids.filter((x, i) => ids.indexOf(x) !== i);
  if (dup.length) problems.push(`duplicate ids: ${[...new Set(dup)].join(', ')}`);
  for (const el of document.querySelectorAll('[tabindex]')) {
    if (+el.getAttribute('tabindex') > 0) problems.push(`positive tabindex: ${el.outerHTML.slice(0, 80)}`);
  }
  if (document.querySelector('[style]') && [...document.querySelectorAll('[style]')].some(e => e.getAttribute('style').includes('javascript:'))) problems.push('javascript in a style attribute');
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.getAttributeNames()) if (a.startsWith('on')) problems.push(`inline handler ${a} on ${el.tagName}`);
  }
  return problems;
}
"""


def a11y_problems(page) -> list[str]:
    """A small axe-like check of the current page: labels on inputs, alt on images, names on
    buttons and links, one h1 and no skipped heading levels, unique ids, no positive tabindex,
    no inline event-handler attributes."""
    return page.evaluate(A11Y_SCRIPT)


class AssetTracker:
    """Records the /assets .js and .css responses of a page; sizes() gives {path: bytes}."""

    def __init__(self, page):
        self.responses = []
        page.on("response", self._on)

    def _on(self, resp):
        path = "/" + resp.url.split("://", 1)[-1].split("/", 1)[-1].split("?")[0]
        if path.startswith("/assets/") and path.endswith((".js", ".css")):
            self.responses.append((path, resp))

    def sizes(self) -> dict[str, int]:
        out = {}
        for path, resp in self.responses:
            if resp.status == 200:
                out[path] = len(resp.body())
        return out

    def total(self) -> int:
        return sum(self.sizes().values())


def track_assets(page) -> AssetTracker:
    """Call before page.goto: every /assets .js/.css the page loads is counted (the 200 KB
    budget is asserted over tracker.total())."""
    return AssetTracker(page)
