"""Rendered and thumbnail resources (PS3.18 8.3.5, 10.4.1.1.3-4) against an independent reference.

The reference is pydicom (decoding only: `Dataset.pixel_array`, `apply_color_lut`) plus this
file's own numpy implementation of the PS3.3 C.11 grayscale pipeline:

  stored value (masked to Bits Stored, sign-extended)          C.7.6.3.1
  -> Modality LUT: Pixel Value Transformation functional group, Modality LUT Sequence, or
     Rescale Slope/Intercept                                     C.11.1, C.7.6.16.2.9
  -> VOI: `window` parameter, else Frame VOI LUT functional group, else the first
     Window Center/Width with VOI LUT Function (LINEAR / LINEAR_EXACT / SIGMOID), else the
     VOI LUT Sequence, else min/max of the frame excluding Pixel Padding   C.11.2.1.2
  -> MONOCHROME1 inverted (255 - y)                              C.7.6.3.1.2
PALETTE COLOR goes through pydicom's apply_color_lut (16-bit entries scaled to 8 bits here);
RGB/YBR come from pydicom's decoders, converted to RGB by pydicom.

Sections (the work order's numbering):
 1. every image of pydicom's test corpus and of tests/fixtures, PNG vs reference
    (a summary table of what was compared, skipped and why is printed at the end);
 2. generated fixtures for kinds the corpus lacks;
 3. parameters (viewport, window, quality, formats, accept, multipart, representative
    instance, thumbnails);
 4. refusals (400/401/404/406/413);
 5. video and encapsulated PDF;
 6. thumbnail and ETag invalidation when an instance is replaced.

Run: LIGHTBOX_BIN=$PWD/target/debug/lightbox .venv/bin/python -m pytest -q tests/python/test_rendered.py
"""

from __future__ import annotations

import io
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, convert_color_space
from pydicom.uid import ExplicitVRLittleEndian

from conftest import FIXTURES_DIR, start_server, stop_server

TIMEOUT = 120
PYDICOM_TEST_FILES = Path(pydicom.__file__).resolve().parent / "data" / "test_files"
ROOT = "1.2.826.0.1.3680043.10.1435.77"   # UIDs of the fixtures generated here

SC = "1.2.840.10008.5.1.4.1.1.7"
CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
MPEG2_MPML = "1.2.840.10008.1.2.4.100"

# ---------------------------------------------------------------------------
# summary of the reference comparisons (printed at the end of the run)

RESULTS: dict[str, dict] = {}


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if not RESULTS:
            return
        tr = terminalreporter
        tr.section("Lightbox rendered: reference comparisons (PNG vs pydicom+numpy, PS3.3 C.11)")
        tr.write_line(f"{'file':48} {'status':>6} {'mean':>6} {'max':>4}  verdict")
        counts: dict[str, int] = {}
        for name in sorted(RESULTS):
            r = RESULTS[name]
            mean = "-" if r.get("mean") is None else f"{r['mean']:.3f}"
            mx = "-" if r.get("max") is None else str(r["max"])
            tr.write_line(f"{name[:48]:48} {r.get('status', '-')!s:>6} {mean:>6} {mx:>4}  "
                          f"{r.get('verdict', '')}")
            key = r.get("verdict", "").split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        tr.write_line("")
        tr.write_line("summary: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


@pytest.fixture(scope="module", autouse=True)
def _summary_plugin(request):
    plugin = _Summary()
    pm = request.config.pluginmanager
    if not pm.has_plugin("lightbox-rendered-summary"):
        pm.register(plugin, "lightbox-rendered-summary")
    yield


# ---------------------------------------------------------------------------
# HTTP helpers

BOUNDARY = "lightbox-rendered-5e1f0c3b7a2d4c68"


def stow(server, datas: list[bytes]) -> requests.Response:
    b = BOUNDARY.encode()
    out = bytearray()
    for d in datas:
        out += b"--" + b + b"\r\nContent-Type: application/dicom\r\n\r\n" + d + b"\r\n"
    out += b"--" + b + b"--\r\n"
    return requests.post(
        f"{server.base}/studies", data=bytes(out), timeout=TIMEOUT,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                 "Accept": "application/dicom+json", **server.auth_headers})


def stow_ok(server, datas: list[bytes]):
    r = stow(server, datas)
    assert r.status_code == 200, f"STOW failed: {r.status_code} {r.text[:800]}"
    body = r.json()
    assert "00081198" not in body or not body["00081198"].get("Value"), f"STOW failures: {body}"
    return r


def get(server, path: str, query: str = "", accept: str | None = None, auth: bool = True,
        headers: dict | None = None, token: str | None = None) -> requests.Response:
    """GET {base}{path}?{query}; the query is sent as written (commas unescaped)."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    elif auth:
        h.update(server.auth_headers)
    if accept is not None:
        h["Accept"] = accept
    url = server.base + path + (("?" + query) if query else "")
    return requests.get(url, headers=h, timeout=TIMEOUT)


def inst_path(ds) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def decode_image(resp: requests.Response, fmt: str = "PNG") -> np.ndarray:
    img = Image.open(io.BytesIO(resp.content))
    assert img.format == fmt, f"expected {fmt}, got {img.format}"
    if fmt == "GIF" and img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    assert img.mode in ("L", "RGB"), f"unexpected image mode {img.mode} (8 bits per channel)"
    return np.asarray(img)


def parse_multipart(resp: requests.Response) -> list[tuple[dict, bytes]]:
    ctype = resp.headers.get("Content-Type", "")
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    assert m, f"no boundary in {ctype!r}"
    delim = b"--" + m.group(1).encode()
    body = resp.content
    assert body.startswith(delim) or b"\r\n" + delim in body, "multipart body without a delimiter"
    parts = []
    for seg in body.split(delim)[1:]:
        if seg.startswith(b"--"):
            break
        if seg.startswith(b"\r\n"):
            seg = seg[2:]
        head, sep, data = seg.partition(b"\r\n\r\n")
        assert sep, "part without a header/body separator"
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        parts.append((headers, data))
    return parts


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# the independent reference (PS3.3 C.11)

def _seq_first(obj, keyword):
    if keyword in obj and obj[keyword].value:
        return obj[keyword].value[0]
    return None


def _fg_item(ds, frame: int, keyword: str):
    """The functional group item for frame (1-based): per-frame first, then shared (C.7.6.16)."""
    groups = []
    pf = ds.get("PerFrameFunctionalGroupsSequence")
    if pf is not None and len(pf) >= frame:
        groups.append(pf[frame - 1])
    sh = ds.get("SharedFunctionalGroupsSequence")
    if sh:
        groups.append(sh[0])
    for g in groups:
        item = _seq_first(g, keyword)
        if item is not None:
            return item
    return None


def _lut(item, signed_input: bool):
    """(first mapped value, entries, bits) of a LUT item (C.11.1.1, C.11.2.1.1)."""
    desc = [int(v) for v in item.LUTDescriptor]
    n = desc[0] or 65536
    first = desc[1]
    if signed_input and first > 32767:
        first -= 65536
    bits = desc[2]
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):
        data = np.frombuffer(raw, "<u2")[:n].astype(np.float64)
    else:
        data = np.asarray(raw if isinstance(raw, (list, pydicom.multival.MultiValue)) else [raw],
                          dtype=np.float64)[:n]
    return first, data, bits


def _apply_lut(x: np.ndarray, first: int, data: np.ndarray) -> np.ndarray:
    idx = np.clip(np.floor(x).astype(np.int64) - first, 0, len(data) - 1)
    return data[idx]


def _first(v) -> float:
    return float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)


def _function(obj) -> str:
    f = str(obj.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    return f if f in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else "LINEAR"


def voi_window(x: np.ndarray, c: float, w: float, function: str) -> np.ndarray:
    """C.11.2.1.2 with ymin=0, ymax=255."""
    ymin, ymax = 0.0, 255.0
    x = x.astype(np.float64)
    if function == "LINEAR":                                   # C.11.2.1.2.1
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * (ymax - ymin) + ymin if w > 1 else np.full_like(x, ymax)
        y = np.where(x <= c - 0.5 - (w - 1) / 2, ymin, y)
        y = np.where(x > c - 0.5 + (w - 1) / 2, ymax, y)
        return y
    if function == "LINEAR_EXACT":                             # C.11.2.1.3.2
        y = ((x - c) / w + 0.5) * (ymax - ymin) + ymin
        y = np.where(x <= c - w / 2, ymin, y)
        y = np.where(x > c + w / 2, ymax, y)
        return y
    if function == "SIGMOID":                                  # C.11.2.1.3.1
        return (ymax - ymin) / (1 + np.exp(-4 * (x - c) / w)) + ymin
    raise ValueError(function)


def stored_values(ds, arr: np.ndarray) -> np.ndarray:
    """Mask to Bits Stored and sign-extend (C.7.6.3.1.1: bits above High Bit may hold overlays)."""
    bs = int(ds.BitsStored)
    v = arr.astype(np.int64) & ((1 << bs) - 1)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        v = np.where(v >= (1 << (bs - 1)), v - (1 << bs), v)
    return v


def modality(ds, frame: int, v: np.ndarray) -> tuple[np.ndarray, bool]:
    """Modality LUT stage; also says whether its output may be negative (signed VOI LUT input)."""
    pvt = _fg_item(ds, frame, "PixelValueTransformationSequence")
    if pvt is not None and ("RescaleSlope" in pvt or "RescaleIntercept" in pvt):
        s, i = float(pvt.get("RescaleSlope", 1) or 1), float(pvt.get("RescaleIntercept", 0) or 0)
        return v * s + i, i < 0
    item = _seq_first(ds, "ModalityLUTSequence")
    if item is not None:
        first, data, _ = _lut(item, int(ds.get("PixelRepresentation", 0)) == 1)
        return _apply_lut(v, first, data), False
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        s = float(ds.get("RescaleSlope", 1) or 1)
        i = float(ds.get("RescaleIntercept", 0) or 0)
        return v * s + i, i < 0
    return v.astype(np.float64), False


def _padding(ds):
    if "PixelPaddingValue" not in ds:
        return None
    a = int(ds.PixelPaddingValue)
    b = int(ds.get("PixelPaddingRangeLimit", a))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        bs = int(ds.BitsStored)
        fix = lambda x: x - (1 << bs) if (1 << (bs - 1)) <= x < (1 << bs) else x  # noqa: E731
        a, b = fix(a), fix(b)
    return min(a, b), max(a, b)


def gray_reference(ds, arr: np.ndarray, frame: int = 1, window=None) -> np.ndarray:
    """8-bit gray rendering of one grayscale frame; window = (center, width[, function])."""
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    v = stored_values(ds, arr)
    m, may_be_negative = modality(ds, frame, v)
    if window is not None:
        c, w = float(window[0]), float(window[1])
        if len(window) > 2:
            fn = window[2].upper().replace("-", "_")
        else:
            fv = _fg_item(ds, frame, "FrameVOILUTSequence")
            fn = _function(fv) if fv is not None and "VOILUTFunction" in fv else _function(ds)
        y = voi_window(m, c, w, fn)
    else:
        fv = _fg_item(ds, frame, "FrameVOILUTSequence")
        voi_item = _seq_first(ds, "VOILUTSequence")
        if fv is not None and "WindowCenter" in fv and "WindowWidth" in fv:
            y = voi_window(m, _first(fv.WindowCenter), _first(fv.WindowWidth), _function(fv))
        elif "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowWidth is not None:
            y = voi_window(m, _first(ds.WindowCenter), _first(ds.WindowWidth), _function(ds))
        elif voi_item is not None:
            first, data, bits = _lut(voi_item, signed or may_be_negative)
            y = _apply_lut(m, first, data) / ((1 << bits) - 1) * 255.0
        else:
            pad = _padding(ds)
            keep = np.ones(v.shape, bool) if pad is None else ~((v >= pad[0]) & (v <= pad[1]))
            if keep.any():
                lo, hi = float(m[keep].min()), float(m[keep].max())
            else:
                lo = hi = 0.0
            if hi > lo:
                y = np.clip((m - lo) / (hi - lo) * 255.0, 0, 255)
            else:
                y = np.where(m >= hi, 255.0, 0.0)
    y = np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        y = 255 - y
    return y


def frame_array(ds, frame: int = 1) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = ds.pixel_array
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    return arr[frame - 1] if nf > 1 else arr


def reference(ds, frame: int = 1, window=None, pixels_from=None) -> np.ndarray:
    """The 8-bit rendering of `frame` (1-based). `pixels_from`: a dataset with the same pixel
    values in a transfer syntax pydicom can decode, or the frame's array itself."""
    if isinstance(pixels_from, np.ndarray):
        arr = pixels_from
    else:
        arr = frame_array(pixels_from if pixels_from is not None else ds, frame)
    pi = str(ds.PhotometricInterpretation).strip()
    if pi in ("MONOCHROME1", "MONOCHROME2"):
        return gray_reference(ds, arr, frame, window)
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(stored_values(ds, arr), ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if bits > 8:
            return np.clip(np.floor(rgb.astype(np.float64) * 255 / 65535 + 0.5), 0, 255).astype(np.uint8)
        return rgb.astype(np.uint8)
    # RGB / YBR: pydicom's pixel_array converts YBR_FULL(_422) to RGB (as_rgb)
    bs = int(ds.BitsStored)
    a = arr.astype(np.int64)
    if bs > 8:
        a = a >> (bs - 8)
    return np.clip(a, 0, 255).astype(np.uint8)


def compare(actual: np.ndarray, expected: np.ndarray, what: str, *, mean_tol: float = 2.0,
            max_tol: int | None = None, record: str | None = None) -> tuple[float, int]:
    assert actual.shape == expected.shape, (
        f"{what}: rendered shape {actual.shape} != reference {expected.shape}")
    d = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
    mean, mx = float(d.mean()), int(d.max())
    if record:
        RESULTS.setdefault(record, {}).update(mean=mean, max=mx)
    msg = (f"{what}: mean |diff| {mean:.3f} (tol {mean_tol}), max {mx}"
           + (f" (tol {max_tol})" if max_tol is not None else "")
           + f"; worst pixel at {np.unravel_index(int(d.argmax()), d.shape)}: "
             f"rendered {actual.flat[int(d.argmax())]}, reference {expected.flat[int(d.argmax())]}")
    assert mean <= mean_tol, msg
    if max_tol is not None:
        assert mx <= max_tol, msg
    return mean, mx


def render_png(server, ds, frame: int | None = None, query: str = "") -> np.ndarray:
    path = inst_path(ds) + (f"/frames/{frame}" if frame else "") + "/rendered"
    r = get(server, path, query, accept="image/png")
    assert r.status_code == 200, f"GET {path}?{query}: {r.status_code} {r.text[:500]}"
    assert r.headers["Content-Type"].startswith("image/png"), r.headers["Content-Type"]
    return decode_image(r)


# ---------------------------------------------------------------------------
# servers

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rendered")
    server = start_server(tmp / "data", tmp / "logs")
    try:
        yield server
    finally:
        stop_server(server)


# ---------------------------------------------------------------------------
# 1. pydicom corpus and committed fixtures

LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
         "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203"}

# Lossless siblings: same pixel values in a syntax pydicom decodes without extra plugins.
CORPUS_SIBLINGS = {
    "MR_small_jpeg_ls_lossless.dcm": "MR_small.dcm",
    "SC_rgb_jpeg_gdcm.dcm": "SC_rgb_rle.dcm",
}
# Fixtures pydicom cannot decode without extra plugins: their source pixels, recomputed with
# the formulas of tests/fixtures/make_fixtures.py (the encodings are lossless).
FIXTURE_SOURCE = {"ct_jpeg_lossless.dcm", "ct_jpegls.dcm"}


def fixture_source_pixels(ds) -> np.ndarray:
    import sys
    sys.path.insert(0, str(FIXTURES_DIR.parent))
    try:
        import make_fixtures
    finally:
        sys.path.pop(0)
    return make_fixtures.ct_stored_int16(int(ds.Rows), int(ds.InstanceNumber))


# Deliberately broken files of the corpus (pydicom's test_files/README.txt says why).
KNOWN_BROKEN = {
    "JPEG2000-embedded-sequence-delimiter.dcm":
        "JPEG 2000 codestream deliberately corrupted (4 bytes replaced by a Sequence Delimiter)",
}

# Corpus files expected to fail (strict xfail). Empty: every corpus image renders right.
CORPUS_XFAIL: dict[str, str] = {}


def _external_decode(path: Path, tmp: Path):
    """gdcmconv --raw (when installed) as a second independent decoder; None otherwise."""
    import shutil
    import subprocess
    exe = shutil.which("gdcmconv")
    if not exe:
        return None
    out = tmp / (path.stem + "_raw.dcm")
    r = subprocess.run([exe, "--raw", str(path), str(out)], capture_output=True, timeout=60)
    if r.returncode != 0 or not out.exists():
        return None
    try:
        d = pydicom.dcmread(out)
        frame_array(d, 1)
        return d
    except Exception:  # noqa: BLE001
        return None


def _corpus_files():
    out = []
    for p in sorted(PYDICOM_TEST_FILES.glob("*.dcm")):
        reason = CORPUS_XFAIL.get(p.name)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(p, id=p.name, marks=marks))
    return out


def classify(path: Path):
    """(kind, ds, why): kind is image | nonimage | jpeg12 | unreadable | broken | nodecoder."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001
        return "unreadable", None, f"pydicom cannot read it: {type(e).__name__}"
    if "PixelData" not in ds:
        return "nonimage", ds, "no Pixel Data"
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts == "1.2.840.10008.1.2.4.51" and int(ds.get("BitsStored", 8)) > 8:
        return "jpeg12", ds, "JPEG Extended 12-bit"
    try:
        frame_array(ds, 1)
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        if "plugin" in msg or "Unable to decompress" in msg:
            return "nodecoder", ds, "pydicom has no decoder here: " + msg.splitlines()[0][:90]
        return "broken", ds, f"deliberately broken ({type(e).__name__}: {msg.splitlines()[0][:70]})"
    return "image", ds, ""


def fixed_for_stow(ds):
    ds = pydicom.dcmread(io.BytesIO(to_bytes_as_is(ds)))
    n = next(_counter)
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = f"{ROOT}.8{n}"
    if "SeriesInstanceUID" not in ds:
        ds.SeriesInstanceUID = f"{ds.StudyInstanceUID}.1"
    if "PatientID" not in ds:
        ds.PatientID = "LBX-RENDER-CORPUS"
    return ds


def to_bytes_as_is(ds) -> bytes:
    ts = ds.file_meta.TransferSyntaxUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=ts.is_implicit_VR,
               little_endian=ts.is_little_endian)
    return buf.getvalue()


def _check_reference(server, ds, name: str, ts: str, pixels_from=None):
    """Instance /rendered (representative frame) and the last frame against the reference."""
    strict = ts not in LOSSY and str(ds.PhotometricInterpretation).strip() not in (
        "YBR_FULL", "YBR_FULL_422")
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    rep = int(ds.get("RepresentativeFrameNumber", 1) or 1)
    rep = rep if 1 <= rep <= nf else 1
    got = render_png(server, ds)
    exp = reference(ds, rep, pixels_from=pixels_from)
    assert got.ndim == exp.ndim, (
        f"{name}: rendered has {1 if got.ndim == 2 else got.shape[2]} channel(s), "
        f"reference {1 if exp.ndim == 2 else exp.shape[2]}")
    compare(got, exp, f"{name} frame {rep}", max_tol=1 if strict else None, record=name)
    if nf > 1:
        got = render_png(server, ds, frame=nf)
        compare(got, reference(ds, nf, pixels_from=pixels_from), f"{name} frame {nf}",
                max_tol=1 if strict else None)


def _corpus_expectation(kind: str) -> int | None:
    return {"image": 200, "nodecoder": 200, "nonimage": 406, "jpeg12": 200}.get(kind)


@pytest.mark.parametrize("path", _corpus_files())
def test_corpus_reference(corpus_server, path, tmp_path):
    try:
        _corpus_case(corpus_server, path, tmp_path)
    except AssertionError as e:
        rec = RESULTS.setdefault("pydicom/" + path.name, {})
        if not rec.get("verdict", "").startswith("FAIL"):
            rec["verdict"] = "FAIL: " + str(e).splitlines()[0][:90]
        raise


def _corpus_case(corpus_server, path, tmp_path):
    name = "pydicom/" + path.name
    kind, ds, why = classify(path)
    if path.name in KNOWN_BROKEN:
        kind, why = "broken", KNOWN_BROKEN[path.name]
    rec = RESULTS.setdefault(name, {"kind": kind})
    if kind == "unreadable":
        rec["verdict"] = f"SKIP: {why}"
        pytest.skip(why)
    r = stow(corpus_server, [path.read_bytes()])
    patched = ""
    if r.status_code != 200 and "PixelData" in ds:
        # Files refused for their header only (no Study/Series UID, VR encoding not matching the
        # transfer syntax): rewritten by pydicom, pixel data untouched, and stored again.
        try:
            ds = fixed_for_stow(ds)
            r = stow(corpus_server, [to_bytes_as_is(ds)])
            patched = " (header rewritten by pydicom for STOW)"
        except (AttributeError, TypeError, ValueError) as e:
            rec["verdict"] = f"SKIP: STOW refused it ({r.status_code}); pydicom cannot rewrite it"
            pytest.skip(f"STOW refused it and pydicom cannot rewrite it: {e}")
    if r.status_code != 200:
        why = ""
        try:
            why = r.json()["00081198"]["Value"][0]["00000902"]["Value"][0]
        except Exception:  # noqa: BLE001
            pass
        rec["verdict"] = f"SKIP: STOW refused it ({r.status_code} {why})"
        pytest.skip(f"STOW refused it: {r.status_code} {r.text[:200]}")
    url = inst_path(ds) + "/rendered"
    resp = get(corpus_server, url, accept="image/png")
    rec["status"] = resp.status_code
    assert resp.status_code != 500, f"{name}: 500 {resp.text[:300]}"
    expected = _corpus_expectation(kind)
    if kind == "broken":
        rec["verdict"] = f"SKIP: {why}; server said {resp.status_code}"
        assert resp.status_code in (200, 404, 406), resp.text[:300]
        pytest.skip(f"{why}; server answered {resp.status_code}")
    assert resp.status_code == expected, (
        f"{name} ({kind}{': ' + why if why else ''}): expected {expected}, got "
        f"{resp.status_code} {resp.text[:300]}")
    if expected == 406:
        msg = resp.json().get("message", "")
        assert msg, "406 without a message"
        rec["verdict"] = f"OK: 406 as expected ({kind})"
        return
    ts = str(ds.file_meta.TransferSyntaxUID)
    sibling = CORPUS_SIBLINGS.get(path.name)
    pixels_from = pydicom.dcmread(PYDICOM_TEST_FILES / sibling) if sibling else None
    if kind == "jpeg12" and not sibling:
        # pydicom has no 12-bit JPEG decoder: GDCM's (IJG 12-bit) is the independent reference.
        pixels_from = _external_decode(path, tmp_path)
        assert pixels_from is not None, "gdcmconv --raw is needed as the 12-bit JPEG reference"
        sibling = "gdcmconv --raw"
    if kind == "nodecoder" and not sibling:
        pixels_from = _external_decode(path, tmp_path)
        if pixels_from is None:
            img = decode_image(resp)
            assert img.shape[:2] == (int(ds.Rows), int(ds.Columns))
            rec["verdict"] = f"SKIP: rendered {img.shape}, {why}"
            pytest.skip(why)
        sibling = "gdcmconv --raw"
    try:
        _check_reference(corpus_server, ds, name, ts, pixels_from)
    except AssertionError:
        RESULTS[name]["verdict"] = "FAIL"
        raise
    RESULTS[name]["verdict"] = "OK" + (f" (pixels of {sibling})" if sibling else "") + patched


def test_corpus_406_set_is_exactly_the_non_images():
    """The files answered 406 are exactly the non-image ones; the 12-bit JPEG files render."""
    got = {n for n, r in RESULTS.items() if n.startswith("pydicom/") and r.get("status") == 406
           and r.get("kind") != "broken"}
    expected = {n for n, r in RESULTS.items() if n.startswith("pydicom/") and "status" in r
                and r.get("kind") == "nonimage"}
    if not expected and not got:
        pytest.skip("corpus tests did not run")
    assert got == expected, f"unexpected 406: {sorted(got - expected)}; missing 406: {sorted(expected - got)}"
    twelve = {n: r for n, r in RESULTS.items() if r.get("kind") == "jpeg12"}
    assert twelve, "no 12-bit JPEG file in the corpus run"
    for n, r in twelve.items():
        assert r.get("status") == 200 and r.get("verdict", "").startswith("OK"), (n, r)


FIXTURE_IMAGES = [
    "ct_implicit.dcm", "ct_explicit.dcm", "ct_bigendian.dcm", "ct_deflate.dcm",
    "ct_jpeg_baseline.dcm", "ct_jpeg_lossless.dcm", "ct_jpegls.dcm", "ct_j2k.dcm", "ct_rle.dcm",
    "mf_native.dcm", "mf_rle_bot.dcm", "mf_rle_nobot.dcm", "mf_jpeg_nobot.dcm", "mf_jpeg_bot.dcm",
    "mf_jpeg_fragmented.dcm", "rgb_explicit.dcm", "rgb_jpeg.dcm", "preamble_garbage.dcm",
    "private_sop.dcm",
]


@pytest.mark.parametrize("name", FIXTURE_IMAGES)
def test_fixture_reference(srv, name):
    path = FIXTURES_DIR / name
    ds = pydicom.dcmread(path)
    stow_ok(srv, [path.read_bytes()])
    source = name in FIXTURE_SOURCE
    key = "fixtures/" + name
    RESULTS[key] = {"status": 200}
    try:
        _check_reference(srv, ds, key, str(ds.file_meta.TransferSyntaxUID),
                         fixture_source_pixels(ds) if source else None)
    except AssertionError:
        RESULTS[key]["verdict"] = "FAIL"
        raise
    RESULTS[key]["verdict"] = "OK" + (" (source pixels of make_fixtures.py)" if source else "")


# ---------------------------------------------------------------------------
# 2. generated fixtures

_counter = iter(range(1, 10**6))


def new_ds(*, pixels: np.ndarray, pi: str = "MONOCHROME2", bits_allocated: int = 8,
           bits_stored: int | None = None, signed: bool = False, frames: int | None = None,
           sop_class: str = SC, study: str | None = None, series: str | None = None,
           sop: str | None = None, series_number: int = 1, instance_number: int = 1,
           patient_id: str = "LBX-RENDER-0001", raw: bytes | None = None, **attrs) -> Dataset:
    """A Part-10 ready dataset (Explicit VR LE) with native pixel data."""
    n = next(_counter)
    study = study or f"{ROOT}.{n}"
    series = series or f"{study}.1"
    sop = sop or f"{series}.{n}"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = patient_id
    ds.PatientName = "RENDER^TEST"
    ds.Modality = "OT"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    shape = pixels.shape
    if frames:
        ds.NumberOfFrames = frames
        shape = shape[1:]
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    spp = 3 if len(shape) == 3 or pi in ("RGB", "YBR_FULL", "YBR_FULL_422") else 1
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = pi
    if spp == 3:
        ds.PlanarConfiguration = attrs.pop("PlanarConfiguration", 0)
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    if raw is None:
        dt = {8: "u1", 16: "<u2", 32: "<u4"}[bits_allocated]
        if signed:
            dt = dt.replace("u", "i")
        raw = pixels.astype(dt).tobytes()
    if len(raw) % 2:
        raw += b"\0"
    ds.PixelData = raw
    ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    return ds


def _ramp(rows, cols, lo, hi):
    y, x = np.mgrid[0:rows, 0:cols]
    t = (x + y * cols) / (rows * cols - 1)
    return np.round(lo + t * (hi - lo)).astype(np.int64)


def gen_monochrome1():
    return new_ds(pixels=_ramp(32, 48, 0, 4095), pi="MONOCHROME1", bits_allocated=16,
                  bits_stored=12, WindowCenter=1500, WindowWidth=2000)


def _palette(ds, bits: int, n_desc: int, red, green, blue, segmented=False):
    for colour, data in zip(("Red", "Green", "Blue"), (red, green, blue)):
        tag = {"Red": 0x00281101, "Green": 0x00281102, "Blue": 0x00281103}[colour]
        ds.add_new(tag, "US", [n_desc, 0, bits])
        arr = np.asarray(data, dtype="<u2").tobytes()
        if segmented:
            stag = {"Red": 0x00281221, "Green": 0x00281222, "Blue": 0x00281223}[colour]
            ds.add_new(stag, "OW", arr)
        else:
            dtag = {"Red": 0x00281201, "Green": 0x00281202, "Blue": 0x00281203}[colour]
            ds.add_new(dtag, "OW", arr)
    return ds


def gen_palette16():
    ds = new_ds(pixels=_ramp(32, 64, 0, 255), pi="PALETTE COLOR")
    i = np.arange(256)
    return _palette(ds, 16, 256, i * 257, (255 - i) * 257, ((i * 7) % 256) * 256 + 128)


def gen_palette_segmented():
    ds = new_ds(pixels=_ramp(32, 64, 0, 255), pi="PALETTE COLOR")
    # discrete (0, n, values...), linear (1, n, y1): C.7.9.2
    red = [0, 2, 0, 1000, 1, 254, 65535]                      # 2 + 254 = 256 entries
    green = [0, 1, 65535, 1, 127, 0, 1, 128, 40000]           # 1 + 127 + 128
    blue = [0, 4, 10, 20, 30, 40, 1, 100, 30000, 0, 2, 5, 6, 1, 150, 60000]  # 4+100+2+150
    return _palette(ds, 16, 256, red, green, blue, segmented=True)


def gen_palette_65536():
    px = _ramp(64, 64, 0, 65535)
    ds = new_ds(pixels=px, pi="PALETTE COLOR", bits_allocated=16)
    i = np.arange(65536)
    return _palette(ds, 16, 0, i, 65535 - i, (i * 7) % 65536)


def gen_enhanced_ct():
    """2 frames; rescale in the shared groups; a different window per frame."""
    frames = np.stack([_ramp(32, 32, 0, 4000), _ramp(32, 32, 4000, 0)])
    ds = new_ds(pixels=frames, frames=2, bits_allocated=16, bits_stored=16, sop_class=ENHANCED_CT)
    ds.Modality = "CT"
    shared = Dataset()
    pvt = Dataset()
    pvt.RescaleIntercept = -1024
    pvt.RescaleSlope = 1
    pvt.RescaleType = "HU"
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    per = []
    for c, w, fn in ((40, 400, None), (500, 3000, "SIGMOID")):
        item = Dataset()
        voi = Dataset()
        voi.WindowCenter = c
        voi.WindowWidth = w
        if fn:
            voi.VOILUTFunction = fn
        item.FrameVOILUTSequence = [voi]
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = per
    return ds


def gen_modality_lut_seq():
    ds = new_ds(pixels=_ramp(32, 64, 0, 4095), bits_allocated=16, bits_stored=12,
                WindowCenter=20000, WindowWidth=30000)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])
    item.ModalityLUTType = "OD"
    item.add_new(0x00283006, "OW", ((np.arange(4096) ** 2) // 256).astype("<u2").tobytes())
    ds.ModalityLUTSequence = [item]
    return ds


def gen_voi_lut_seq():
    ds = new_ds(pixels=_ramp(32, 64, 0, 4095), bits_allocated=16, bits_stored=12)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 10])
    item.add_new(0x00283006, "OW", np.round(np.sqrt(np.arange(4096) / 4095) * 1023).astype("<u2").tobytes())
    ds.VOILUTSequence = [item]
    return ds


def gen_sigmoid():
    return new_ds(pixels=_ramp(32, 64, 0, 4095), bits_allocated=16, bits_stored=12,
                  WindowCenter=2048, WindowWidth=1000, VOILUTFunction="SIGMOID")


def gen_linear_exact():
    # a narrow window: LINEAR and LINEAR_EXACT differ by several levels in the ramp
    return new_ds(pixels=_ramp(16, 64, 0, 255), WindowCenter=100, WindowWidth=20,
                  VOILUTFunction="LINEAR_EXACT")


def gen_32bit():
    return new_ds(pixels=_ramp(32, 32, -1_000_000, 3_000_000), bits_allocated=32, signed=True,
                  RescaleSlope=0.001, RescaleIntercept=5)


def gen_32bit_window():
    return new_ds(pixels=_ramp(32, 32, 0, 4_000_000_000), bits_allocated=32,
                  WindowCenter=1_000_000_000, WindowWidth=1_500_000_000)


def gen_padding():
    px = _ramp(32, 32, -1000, 1000)
    px[:6, :6] = -2000
    px[-6:, -6:] = -2000
    return new_ds(pixels=px, bits_allocated=16, signed=True, PixelPaddingValue=-2000)


def gen_padding_range():
    px = _ramp(32, 32, -1000, 1000)
    px[:6, :] = -2900
    px[-6:, :] = -2500
    ds = new_ds(pixels=px, bits_allocated=16, signed=True, PixelPaddingValue=-3000)
    ds.add_new(0x00280121, "SS", -2400)   # Pixel Padding Range Limit
    ds.add_new(0x00280120, "SS", -3000)
    return ds


def _garbage(shape, seed=7):
    return np.random.default_rng(seed).integers(0, 16, size=shape) << 12


def gen_12bit_overlay_unsigned():
    px = _ramp(32, 64, 0, 4095)
    raw = (px | _garbage(px.shape)).astype("<u2").tobytes()
    return new_ds(pixels=px, bits_allocated=16, bits_stored=12, raw=raw,
                  WindowCenter=2048, WindowWidth=4096)


def gen_12bit_overlay_signed():
    px = _ramp(32, 64, -2048, 2047)
    raw = ((px & 0xFFF) | _garbage(px.shape, 11)).astype("<u2").tobytes()
    return new_ds(pixels=px, bits_allocated=16, bits_stored=12, signed=True, raw=raw,
                  WindowCenter=0, WindowWidth=4096)


def _rgb_pattern(rows=32, cols=48):
    y, x = np.mgrid[0:rows, 0:cols]
    return np.stack([x * 255 // (cols - 1), y * 255 // (rows - 1),
                     (x + y) * 255 // (rows + cols - 2)], axis=-1).astype(np.uint8)


def gen_ybr_full_planar():
    rgb = _rgb_pattern()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    raw = np.ascontiguousarray(ybr.transpose(2, 0, 1)).tobytes()
    return new_ds(pixels=rgb, pi="YBR_FULL", raw=raw, PlanarConfiguration=1)


def gen_rgb_planar():
    rgb = _rgb_pattern()
    return new_ds(pixels=rgb, pi="RGB", raw=np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes(),
                  PlanarConfiguration=1)


def gen_multiframe_representative():
    frames = np.stack([np.clip(_ramp(24, 40, 0, 200) + 15 * k * (k % 2 * 2 - 1), 0, 255)
                       for k in range(4)])
    frames[2, :, :20] = 255 - frames[2, :, :20]
    return new_ds(pixels=frames, frames=4, RepresentativeFrameNumber=3,
                  WindowCenter=128, WindowWidth=256)


GENERATED = {
    "monochrome1": gen_monochrome1,
    "palette_16bit": gen_palette16,
    "palette_segmented": gen_palette_segmented,
    "palette_65536_entries": gen_palette_65536,
    "enhanced_ct_functional_groups": gen_enhanced_ct,
    "modality_lut_sequence": gen_modality_lut_seq,
    "voi_lut_sequence": gen_voi_lut_seq,
    "voi_function_sigmoid": gen_sigmoid,
    "voi_function_linear_exact": gen_linear_exact,
    "bits32_signed_rescale_minmax": gen_32bit,
    "bits32_unsigned_window": gen_32bit_window,
    "padding_excluded_from_minmax": gen_padding,
    "padding_range_excluded_from_minmax": gen_padding_range,
    "bits12_overlay_garbage_unsigned": gen_12bit_overlay_unsigned,
    "bits12_overlay_garbage_signed": gen_12bit_overlay_signed,
    "ybr_full_native_planar": gen_ybr_full_planar,
    "rgb_native_planar": gen_rgb_planar,
    "multiframe_representative_frame": gen_multiframe_representative,
}


@pytest.mark.parametrize("kind", list(GENERATED))
def test_generated_reference(srv, kind):
    ds = GENERATED[kind]()
    stow_ok(srv, [to_bytes(ds)])
    ds = pydicom.dcmread(io.BytesIO(to_bytes(ds)))   # exactly what the server holds
    key = "generated/" + kind
    RESULTS[key] = {"status": 200}
    try:
        _check_reference(srv, ds, key, ExplicitVRLittleEndian)
        nf = int(ds.get("NumberOfFrames", 1) or 1)
        for f in range(1, nf + 1):
            compare(render_png(srv, ds, frame=f), reference(ds, f), f"{kind} frame {f}", max_tol=1)
        if kind == "enhanced_ct_functional_groups":
            f1, f2 = reference(ds, 1), reference(ds, 2)
            assert np.abs(f1.astype(int) - f2.astype(int)).mean() > 20, "reference frames alike"
            assert not np.array_equal(render_png(srv, ds, frame=1), render_png(srv, ds, frame=2))
        if kind == "multiframe_representative_frame":
            single = render_png(srv, ds)
            compare(single, reference(ds, 3), "single-part = Representative Frame Number 3", max_tol=1)
            assert np.abs(single.astype(int) - reference(ds, 1).astype(int)).mean() > 5
        if kind.startswith("padding"):
            # the test can fail: including the padding in min/max would look different
            v = stored_values(ds, frame_array(ds))
            naive = np.clip(np.floor((v - v.min()) / (v.max() - v.min()) * 255 + 0.5), 0, 255)
            assert np.abs(naive - reference(ds).astype(int)).mean() > 5
        if kind == "voi_function_linear_exact":
            lin = voi_window(frame_array(ds).astype(float), 100, 20, "LINEAR")
            assert np.abs(np.floor(lin + 0.5) - reference(ds)).max() >= 5
        if kind == "ybr_full_native_planar":
            compare(render_png(srv, ds), _rgb_pattern(), "YBR_FULL planar vs the original RGB",
                    max_tol=3)
    except AssertionError:
        RESULTS[key]["verdict"] = "FAIL"
        raise
    RESULTS[key]["verdict"] = "OK"


# ---------------------------------------------------------------------------
# 3. parameters

def _smooth(rows=40, cols=80):
    y, x = np.mgrid[0:rows, 0:cols]
    return np.clip(np.round(128 + 90 * np.sin(x / 9.0) * np.cos(y / 7.0)), 0, 255).astype(np.int64)


@pytest.fixture(scope="module")
def wide(srv):
    """40 rows × 80 columns, 8-bit, window 128/256 (identity)."""
    ds = new_ds(pixels=_smooth(), WindowCenter=128, WindowWidth=256)
    stow_ok(srv, [to_bytes(ds)])
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


@pytest.fixture(scope="module")
def ramp16(srv):
    """32 × 128, 16-bit 0..4095 ramp along x, VOI LUT Function SIGMOID in the dataset."""
    y, x = np.mgrid[0:32, 0:128]
    ds = new_ds(pixels=x * 32 + y, bits_allocated=16, bits_stored=12, WindowCenter=1000,
                WindowWidth=500, VOILUTFunction="SIGMOID")
    stow_ok(srv, [to_bytes(ds)])
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def _resized(ref: np.ndarray, w: int, h: int) -> np.ndarray:
    img = Image.fromarray(ref)
    return np.asarray(img.resize((w, h), Image.Resampling.LANCZOS if w < ref.shape[1]
                                 else Image.Resampling.BILINEAR))


@pytest.mark.parametrize("vp,size", [
    ("40,40", (40, 20)), ("40,", (40, 20)), (",10", (20, 10)), ("160,160", (160, 80)),
    ("20,100", (20, 10)), ("1000,30", (60, 30)),
])
def test_viewport_scales_to_fit_keeping_aspect(srv, wide, vp, size):
    got = render_png(srv, wide, query=f"viewport={vp}")
    w, h = size
    assert (got.shape[1], got.shape[0]) == size, f"viewport={vp}: got {got.shape[1]}x{got.shape[0]}"
    compare(got, _resized(reference(wide), w, h), f"viewport={vp} vs Pillow-resized reference",
            mean_tol=3.0)


def test_viewport_region_crop_at_native_scale_is_exact(srv, wide):
    ref = reference(wide)
    got = render_png(srv, wide, query="viewport=30,12,5,7,30,12")
    compare(got, ref[7:19, 5:35], "crop 5,7 30x12 at scale 1", max_tol=1)


def test_viewport_elided_region_runs_to_the_edge(srv, wide):
    ref = reference(wide)
    got = render_png(srv, wide, query="viewport=60,30,20,10,,")
    compare(got, ref[10:, 20:], "region from 20,10 to the edge (60x30)", max_tol=1)


@pytest.mark.parametrize("sw,sh,flip", [("-30", "12", "h"), ("30", "-12", "v"), ("-30", "-12", "hv")])
def test_viewport_negative_sizes_flip(srv, wide, sw, sh, flip):
    ref = reference(wide)[7:19, 5:35]
    if "h" in flip:
        ref = ref[:, ::-1]
    if "v" in flip:
        ref = ref[::-1, :]
    got = render_png(srv, wide, query=f"viewport=30,12,5,7,{sw},{sh}")
    compare(got, ref, f"flip {flip}", max_tol=1)


def test_viewport_region_scaled(srv, wide):
    ref = reference(wide)[4:36, 8:72]        # 64 x 32 region
    got = render_png(srv, wide, query="viewport=32,32,8,4,64,32")
    assert got.shape == (16, 32)
    compare(got, _resized(ref, 32, 16), "region 8,4 64x32 scaled into 32x32", mean_tol=3.0)


@pytest.mark.parametrize("fn", ["linear", "linear-exact", "sigmoid"])
def test_window_parameter_each_function(srv, ramp16, fn):
    got = render_png(srv, ramp16, query=f"window=2048,1000,{fn}")
    exp = reference(ramp16, window=(2048, 1000, fn))
    compare(got, exp, f"window=2048,1000,{fn}", max_tol=1)
    # the functions really differ on this image, so a wrong one fails
    other = "linear" if fn == "sigmoid" else "sigmoid"
    assert np.abs(reference(ramp16, window=(2048, 1000, other)).astype(int) - exp).max() > 5


def test_window_two_values_use_dataset_function(srv, ramp16):
    got = render_png(srv, ramp16, query="window=2048,1000")
    compare(got, reference(ramp16, window=(2048, 1000, "SIGMOID")),
            "window=2048,1000 with VOILUTFunction SIGMOID in the dataset", max_tol=1)


def test_dataset_window_without_parameter(srv, ramp16):
    compare(render_png(srv, ramp16), reference(ramp16), "dataset window 1000/500 SIGMOID", max_tol=1)


def test_quality_and_jpeg_fidelity(srv, wide):
    path = inst_path(wide) + "/rendered"
    lo = get(srv, path, "quality=10", accept="image/jpeg")
    hi = get(srv, path, "quality=95", accept="image/jpeg")
    default = get(srv, path)
    for r in (lo, hi, default):
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("image/jpeg")
    assert len(lo.content) < len(hi.content), (len(lo.content), len(hi.content))
    png = render_png(srv, wide)
    compare(decode_image(hi, "JPEG"), png, "JPEG q=95 vs PNG", mean_tol=2.0)
    compare(decode_image(default, "JPEG"), png, "default JPEG vs PNG", mean_tol=2.0)
    assert np.abs(decode_image(lo, "JPEG").astype(int) - png).mean() > \
        np.abs(decode_image(hi, "JPEG").astype(int) - png).mean()


def test_gif_output_matches_gray(srv, wide):
    r = get(srv, inst_path(wide) + "/rendered", accept="image/gif")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("image/gif")
    gray = decode_image(r, "GIF")
    png = render_png(srv, wide)
    assert gray.ndim == 2, "a grayscale rendering should decode as gray"
    compare(gray, png, "GIF vs PNG", mean_tol=1.0, max_tol=2)


def test_gif_colour(srv):
    ds = gen_rgb_planar()
    stow_ok(srv, [to_bytes(ds)])
    r = get(srv, inst_path(ds) + "/rendered", accept="image/gif")
    assert r.status_code == 200
    compare(decode_image(r, "GIF"), _rgb_pattern(), "colour GIF (quantised) vs RGB", mean_tol=12.0,
            max_tol=64)


@pytest.mark.parametrize("accept,ctype", [
    ("image/png", "image/png"), ("image/gif", "image/gif"), ("image/jpeg", "image/jpeg"),
    ("image/*", "image/jpeg"), ("*/*", "image/jpeg"),
])
def test_accept_query_parameter(srv, wide, accept, ctype):
    r = get(srv, inst_path(wide) + "/rendered", "accept=" + requests.utils.quote(accept, safe=""),
            accept="application/json")
    assert r.status_code == 200, f"accept={accept}: {r.status_code} {r.text[:300]}"
    assert r.headers["Content-Type"].split(";")[0] == ctype


@pytest.fixture(scope="module")
def study(srv):
    """Study with (by SeriesNumber) series 1 = an SR only, series 2 = three images whose UIDs
    sort against their InstanceNumber, series 3 = two images; series UIDs sort against their
    numbers too. Returns (study uid, {series number: [datasets in InstanceNumber order]})."""
    st = f"{ROOT}.900"
    out = {}
    files = []
    # series UIDs chosen so that UID order != SeriesNumber order
    for number, se_uid, count in ((3, f"{st}.1", 2), (2, f"{st}.2", 3)):
        dss = []
        for k in range(count):
            inst_no = count - k      # UIDs ascending, InstanceNumbers descending
            px = np.clip(_smooth(24, 32) + 30 * number + 20 * inst_no, 0, 255)
            ds = new_ds(pixels=px, study=st, series=se_uid, sop=f"{se_uid}.{k + 1}",
                        series_number=number, instance_number=inst_no,
                        WindowCenter=128, WindowWidth=256)
            dss.append(ds)
            files.append(to_bytes(ds))
        out[number] = sorted(dss, key=lambda d: int(d.InstanceNumber))
    sr = new_ds(pixels=np.zeros((2, 2)), study=st, series=f"{st}.3", sop=f"{st}.3.1",
                series_number=1, sop_class=BASIC_TEXT_SR)
    del sr.PixelData
    for k in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
              "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(sr, k)
    sr.Modality = "SR"
    files.append(to_bytes(sr))
    out[1] = [sr]
    stow_ok(srv, files)
    return st, out


def test_multipart_study_series_order_and_headers(srv, study):
    st, by = study
    r = get(srv, f"/studies/{st}/rendered", accept='multipart/related; type="image/png"')
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith("multipart/related")
    assert 'type="image/png"' in r.headers["Content-Type"].replace("'", '"')
    parts = parse_multipart(r)
    expected = by[2] + by[3]      # SR skipped; series by SeriesNumber, instances by InstanceNumber
    assert len(parts) == len(expected), f"{len(parts)} parts, expected {len(expected)}"
    for (h, data), ds in zip(parts, expected):
        assert h.get("content-type") == "image/png", h
        assert h.get("content-location", "").endswith(inst_path(ds) + "/rendered"), \
            f"part order/location: {h.get('content-location')} expected {inst_path(ds)}/rendered"
        img = np.asarray(Image.open(io.BytesIO(data)))
        compare(img, reference(ds), f"part {ds.SOPInstanceUID}", max_tol=1)
    se = by[2][0].SeriesInstanceUID
    r = get(srv, f"/studies/{st}/series/{se}/rendered", accept='multipart/related; type="image/jpeg"')
    assert r.status_code == 200
    parts = parse_multipart(r)
    assert [h["content-location"].split("/instances/")[1].split("/")[0] for h, _ in parts] == \
        [d.SOPInstanceUID for d in by[2]]
    assert all(h["content-type"] == "image/jpeg" for h, _ in parts)


def test_multipart_instance_frames(srv):
    ds = gen_multiframe_representative()
    stow_ok(srv, [to_bytes(ds)])
    ds = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
    r = get(srv, inst_path(ds) + "/rendered", accept='multipart/related; type="image/png"')
    assert r.status_code == 200, r.text[:300]
    parts = parse_multipart(r)
    assert len(parts) == 4
    for n, (h, data) in enumerate(parts, start=1):
        assert h["content-location"].endswith(f"{inst_path(ds)}/frames/{n}/rendered"), h
        compare(np.asarray(Image.open(io.BytesIO(data))), reference(ds, n), f"frame part {n}", max_tol=1)
    r = get(srv, inst_path(ds) + "/frames/4,2/rendered", accept='multipart/related; type="image/png"')
    assert r.status_code == 200, r.text[:300]
    parts = parse_multipart(r)
    assert [h["content-location"].split("/frames/")[1].split("/")[0] for h, _ in parts] == ["4", "2"]
    compare(np.asarray(Image.open(io.BytesIO(parts[0][1]))), reference(ds, 4), "listed frame 4", max_tol=1)
    # several frames as a single image: refused
    r = get(srv, inst_path(ds) + "/frames/1,2/rendered", accept="image/png")
    assert r.status_code == 406, r.status_code


def test_single_part_study_and_series_is_the_representative_instance(srv, study):
    st, by = study
    rep = by[2][len(by[2]) // 2]          # first image series by SeriesNumber, middle instance
    own = get(srv, inst_path(rep) + "/rendered", accept="image/png")
    r = get(srv, f"/studies/{st}/rendered", accept="image/png")
    assert r.status_code == 200, r.text[:300]
    assert r.content == own.content, "study rendering is not the representative instance's"
    assert r.headers.get("Content-Location", "").endswith(inst_path(rep) + "/rendered")
    r = get(srv, f"/studies/{st}/series/{by[3][0].SeriesInstanceUID}/rendered", accept="image/png")
    rep3 = by[3][len(by[3]) // 2]
    assert r.content == get(srv, inst_path(rep3) + "/rendered", accept="image/png").content


def test_thumbnails_at_each_level(srv, study, wide):
    st, by = study
    ds = by[2][1]
    for path in (f"/studies/{st}", f"/studies/{st}/series/{ds.SeriesInstanceUID}",
                 inst_path(ds), inst_path(ds) + "/frames/1"):
        r = get(srv, path + "/thumbnail")
        assert r.status_code == 200, f"{path}/thumbnail: {r.status_code} {r.text[:300]}"
        assert r.headers["Content-Type"].startswith("image/jpeg")
        img = decode_image(r, "JPEG")
        assert max(img.shape[:2]) == 128 and img.shape[:2] == (96, 128), f"{path}: {img.shape}"
    r = get(srv, inst_path(wide) + "/thumbnail", accept="image/png")
    img = decode_image(r)
    assert img.shape == (64, 128)
    compare(img, _resized(reference(wide), 128, 64), "thumbnail vs resized reference", mean_tol=3.0)
    r = get(srv, inst_path(wide) + "/thumbnail", "viewport=64,64", accept="image/png")
    assert decode_image(r).shape == (32, 64)
    r = get(srv, f"/studies/{st}/thumbnail", accept="image/png")
    rep = by[2][1]
    thumb_rep = get(srv, inst_path(rep) + "/thumbnail", accept="image/png")
    assert r.content == thumb_rep.content, "study thumbnail is not the representative instance's"


def test_thumbnail_refuses_rendering_parameters(srv, wide):
    for q, name in (("window=40,400", "window"), ("viewport=64,64,0,0,10,10", "viewport"),
                    ("annotation=patient", "annotation")):
        r = get(srv, inst_path(wide) + "/thumbnail", q)
        assert r.status_code == 400, f"thumbnail?{q}: {r.status_code}"
        assert name in r.text, r.text


def test_annotation_is_ignored_with_warning(srv, wide):
    r = get(srv, inst_path(wide) + "/rendered", "annotation=patient,technique", accept="image/png")
    assert r.status_code == 200, r.text
    assert r.headers.get("Warning", "").startswith("299 "), r.headers.get("Warning")
    assert np.array_equal(decode_image(r), render_png(srv, wide))


def test_quality_on_lossless_type_warns_and_iccprofile(srv, wide):
    r = get(srv, inst_path(wide) + "/rendered", "quality=50", accept="image/png")
    assert r.status_code == 200
    assert r.headers.get("Warning", "").startswith("299 "), r.headers.get("Warning")
    assert np.array_equal(decode_image(r), render_png(srv, wide))
    for kind in ("rendered", "thumbnail"):
        assert get(srv, inst_path(wide) + f"/{kind}", "iccprofile=no").status_code == 200
        r = get(srv, inst_path(wide) + f"/{kind}", "iccprofile=srgb")
        assert r.status_code == 400 and "iccprofile" in r.text


def test_etag_and_if_none_match(srv, wide):
    path = inst_path(wide) + "/rendered"
    r = get(srv, path, accept="image/png")
    tag = r.headers.get("ETag")
    assert tag, "no ETag"
    r2 = get(srv, path, accept="image/png", headers={"If-None-Match": tag})
    assert r2.status_code == 304 and not r2.content
    r3 = get(srv, path, "window=10,20", accept="image/png", headers={"If-None-Match": tag})
    assert r3.status_code == 200, "another window must not match the ETag"
    assert r3.headers.get("ETag") != tag


# ---------------------------------------------------------------------------
# 4. refusals

@pytest.mark.parametrize("query,name", [
    ("viewport=0,10", "viewport"), ("viewport=abc,10", "viewport"), ("viewport=10", "viewport"),
    ("viewport=10,10,1,2,3", "viewport"), ("viewport=10,10,-1,0,5,5", "viewport"),
    ("viewport=10,10,0,0,0,5", "viewport"), ("viewport=10,10,500,0,5,5", "viewport"),
    ("viewport=20000,10", "viewport"),
    ("window=40", "window"), ("window=40,0", "window"), ("window=40,400,cubic", "window"),
    ("window=x,400", "window"), ("window=40,400,linear,1", "window"),
    ("quality=0", "quality"), ("quality=101", "quality"), ("quality=abc", "quality"),
    ("annotation=%3Cb%3E", "annotation"), ("annotation=patient,bogus", "annotation"),
    ("foo=1", "foo"), ("viewport=10,10&viewport=20,20", "viewport"),
])
def test_bad_parameter_is_400_naming_it(srv, wide, query, name):
    r = get(srv, inst_path(wide) + "/rendered", query, accept="image/png")
    assert r.status_code == 400, f"?{query}: {r.status_code} {r.text[:200]}"
    assert name in r.json().get("message", ""), f"?{query}: message {r.text!r} does not name {name}"


def test_unknown_resources_are_404(srv, wide):
    st, se, sop = wide.StudyInstanceUID, wide.SeriesInstanceUID, wide.SOPInstanceUID
    for path in (f"/studies/{ROOT}.404/rendered", f"/studies/{st}/series/{ROOT}.404/rendered",
                 f"/studies/{st}/series/{se}/instances/{ROOT}.404/rendered",
                 f"/studies/{st}/series/{se}/instances/{sop}/frames/2/rendered",
                 f"/studies/{st}/series/{se}/instances/{sop}/frames/2/thumbnail",
                 f"/studies/{ROOT}.404/thumbnail"):
        r = get(srv, path, accept="image/png")
        assert r.status_code == 404, f"{path}: {r.status_code} {r.text[:200]}"


def test_not_acceptable(srv, study, wide):
    st, by = study
    sr = by[1][0]
    r = get(srv, inst_path(sr) + "/rendered")
    assert r.status_code == 406, r.status_code
    assert r.json().get("message"), "406 without a JSON message"
    r = get(srv, inst_path(sr) + "/thumbnail")
    assert r.status_code == 406, r.status_code
    r = get(srv, f"/studies/{st}/series/{sr.SeriesInstanceUID}/rendered")
    assert r.status_code == 406, "a series holding only an SR has nothing to render"
    for accept in ("application/json", "image/jp2", "text/html", "video/mpeg"):
        r = get(srv, inst_path(wide) + "/rendered", accept=accept)
        assert r.status_code == 406, f"Accept {accept}: {r.status_code}"


def test_unauthenticated_is_401(srv, wide):
    r = get(srv, inst_path(wide) + "/rendered", auth=False)
    assert r.status_code == 401, r.status_code
    r = get(srv, inst_path(wide) + "/thumbnail", auth=False)
    assert r.status_code == 401, r.status_code


def test_patient_who_does_not_own_the_study_gets_404(srv, wide):
    email, pw = "render-patient@example.org", "Quiet-Lantern-Orbit-913"
    r = requests.post(f"{srv.url}/api/auth/register", json={"email": email, "password": pw},
                      timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    r = requests.post(f"{srv.url}/api/auth/login", json={"email": email, "password": pw}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    for path in (inst_path(wide) + "/rendered", inst_path(wide) + "/thumbnail",
                 f"/studies/{wide.StudyInstanceUID}/rendered"):
        r = get(srv, path, token=token)
        assert r.status_code == 404, f"{path}: {r.status_code}"


def test_decoded_size_cap_is_413(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_RENDER_MAX_DECODED_BYTES", "4000")
    server = start_server(tmp_path / "data", tmp_path / "logs")
    try:
        small = new_ds(pixels=_ramp(40, 40, 0, 255))                       # 1600 bytes
        big = new_ds(pixels=_ramp(64, 64, 0, 4095), bits_allocated=16)     # 8192 bytes
        stow_ok(server, [to_bytes(small), to_bytes(big)])
        assert get(server, inst_path(small) + "/rendered").status_code == 200
        for suffix in ("/rendered", "/thumbnail", "/frames/1/rendered"):
            r = get(server, inst_path(big) + suffix)
            assert r.status_code == 413, f"{suffix}: {r.status_code} {r.text[:200]}"
            assert "limit" in r.json().get("message", ""), r.text
    finally:
        stop_server(server)


# ---------------------------------------------------------------------------
# 5. video and encapsulated documents

def _video(fragment: bytes) -> Dataset:
    ds = new_ds(pixels=np.zeros((16, 16, 3), np.uint8), pi="YBR_PARTIAL_420",
                sop_class=VIDEO_ENDOSCOPIC, frames=None)
    ds.NumberOfFrames = 1
    ds.FrameTime = 40
    ds.file_meta.TransferSyntaxUID = MPEG2_MPML
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.Modality = "ES"
    return ds


def test_video_is_sent_as_stored_or_406(srv):
    fragment = bytes(range(256)) * 3 + b"\x00\x00\x01\xb3MPEG2-arbitrary"
    if len(fragment) % 2:
        fragment += b"\0"
    ds = _video(fragment)
    stow_ok(srv, [to_bytes(ds)])
    path = inst_path(ds) + "/rendered"
    r = get(srv, path, accept="video/mpeg")
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].split(";")[0] == "video/mpeg"
    assert r.content == fragment
    for accept in ("image/jpeg", "video/mp4", "image/*"):
        r = get(srv, path, accept=accept)
        assert r.status_code == 406, f"Accept {accept}: {r.status_code}"
        assert r.json().get("message")
    r = get(srv, path, accept=None)        # no Accept = */*: the stream is acceptable
    assert r.status_code == 200 and r.content == fragment
    r = get(srv, path, "accept=video/mpeg")
    assert r.status_code == 200 and r.content == fragment
    for suffix in ("/thumbnail", "/frames/1/rendered"):
        r = get(srv, inst_path(ds) + suffix)
        assert r.status_code == 406, f"{suffix}: {r.status_code}"


PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
       b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
       b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 72 72]>>endobj\n"
       b"trailer<</Root 1 0 R>>\n%%EOF")


def _document(content: bytes, mime: str) -> Dataset:
    n = next(_counter)
    st = f"{ROOT}.{n}"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    ds.file_meta.MediaStorageSOPInstanceUID = f"{st}.1.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = f"{st}.1.1"
    ds.StudyInstanceUID = st
    ds.SeriesInstanceUID = f"{st}.1"
    ds.PatientID = "LBX-RENDER-0001"
    ds.Modality = "DOC"
    ds.MIMETypeOfEncapsulatedDocument = mime
    ds.EncapsulatedDocument = content + (b"\0" if len(content) % 2 else b"")
    return ds


def test_pdf_is_served_sandboxed(srv):
    ds = _document(PDF, "application/pdf")
    stow_ok(srv, [to_bytes(ds)])
    path = inst_path(ds) + "/rendered"
    r = get(srv, path, accept="application/pdf")
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].split(";")[0] == "application/pdf"
    assert r.content == PDF, "document bytes differ (the even-length NUL pad must go)"
    assert r.headers.get("Content-Security-Policy", "").strip() == "sandbox"
    assert r.headers.get("X-Content-Type-Options", "").lower() == "nosniff"
    r = get(srv, path, accept="image/jpeg")
    assert r.status_code == 406, r.status_code
    r = get(srv, path, accept="text/html")
    assert r.status_code == 406, r.status_code


def test_document_with_html_mime_type_is_never_html(srv):
    html = b"<html><script>alert(document.cookie)</script></html>"
    ds = _document(html, "text/html")
    stow_ok(srv, [to_bytes(ds)])
    path = inst_path(ds) + "/rendered"
    for accept in ("text/html", "application/pdf", "*/*", None):
        r = get(srv, path, accept=accept)
        assert r.status_code != 500
        assert not r.headers.get("Content-Type", "").startswith("text/html"), accept
        assert r.status_code == 406, f"Accept {accept}: {r.status_code}"
        assert b"<script>" not in r.content


# ---------------------------------------------------------------------------
# 6. cache invalidation

def test_replace_invalidates_thumbnail_and_etag(srv):
    first = new_ds(pixels=_smooth(32, 64), WindowCenter=128, WindowWidth=256)
    stow_ok(srv, [to_bytes(first)])
    for path in (inst_path(first), f"/studies/{first.StudyInstanceUID}"):
        r1 = get(srv, path + "/thumbnail", accept="image/png")
        assert r1.status_code == 200
        again = get(srv, path + "/thumbnail", accept="image/png")   # served from the cache
        assert again.content == r1.content and again.headers["ETag"] == r1.headers["ETag"]
    thumb_files = list(srv.data_dir.rglob("*thumbnail*")) + list(srv.data_dir.rglob("*.png"))
    before = get(srv, inst_path(first) + "/thumbnail", accept="image/png")
    before_study = get(srv, f"/studies/{first.StudyInstanceUID}/thumbnail", accept="image/png")
    # same UIDs, inverted pixels
    second = new_ds(pixels=255 - _smooth(32, 64), study=first.StudyInstanceUID,
                    series=first.SeriesInstanceUID, sop=first.SOPInstanceUID,
                    WindowCenter=128, WindowWidth=256)
    stow_ok(srv, [to_bytes(second)])
    after = get(srv, inst_path(first) + "/thumbnail", accept="image/png")
    after_study = get(srv, f"/studies/{first.StudyInstanceUID}/thumbnail", accept="image/png")
    assert after.status_code == 200
    assert after.headers["ETag"] != before.headers["ETag"], "ETag unchanged after replace"
    assert after_study.headers["ETag"] != before_study.headers["ETag"]
    a, b = decode_image(after), decode_image(before)
    assert np.abs(a.astype(int) + b.astype(int) - 255).mean() < 4, "new thumbnail is not the new pixels"
    assert np.array_equal(decode_image(after_study), a)
    # the old ETag no longer gives 304
    r = get(srv, inst_path(first) + "/thumbnail", accept="image/png",
            headers={"If-None-Match": before.headers["ETag"]})
    assert r.status_code == 200
    assert thumb_files is not None


# ---------------------------------------------------------------------------
# Decoded WADO-RS frames share the rendering's decoder path: the cases the codecs get wrong
# (RGB JPEG without a colour transform, 32-bit RLE, 32-bit big endian) come out right there too.

@pytest.mark.parametrize("name", ["SC_jpeg_no_color_transform.dcm", "rtdose_rle_1frame.dcm",
                                  "rtdose_expb_1frame.dcm"])
def test_decoded_frames_match_pydicom(srv, name):
    path = PYDICOM_TEST_FILES / name
    ds = pydicom.dcmread(path)
    stow_ok(srv, [path.read_bytes()])
    r = get(srv, inst_path(ds) + "/frames/1", accept="application/octet-stream")
    assert r.status_code == 200, f"{name}: {r.status_code} {r.text[:300]}"
    assert r.headers["Content-Type"].startswith("application/octet-stream"), r.headers
    expected = frame_array(ds, 1)
    dtype = expected.dtype.newbyteorder("<")
    got = np.frombuffer(r.content, dtype=dtype).reshape(expected.shape)
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    # Lossy JPEG: two decoders may differ by an IDCT rounding; lossless: exact.
    tol = 2.0 if ds.file_meta.TransferSyntaxUID in LOSSY else 0.0
    assert diff.mean() <= tol, f"{name}: mean |diff| {diff.mean():.3f}, max {diff.max()}"


# ---------------------------------------------------------------------------
# 12-bit JPEG (JPEG Extended, process 4): our own decoder (server/render/jpeg12.rs), checked
# against two independent 12-bit decoders: GDCM (gdcmconv --raw) for pydicom's files and DCMTK
# (dcmdjpeg) for files DCMTK's dcmcjpeg made from generated 12-bit pixels.

def _dcmtk(tool: str, *args) -> None:
    import shutil
    import subprocess
    exe = shutil.which(tool)
    assert exe, f"{tool} is needed (Debian package dcmtk; scripts/test.sh installs it)"
    r = subprocess.run([exe, *map(str, args)], capture_output=True, timeout=120)
    assert r.returncode == 0, f"{tool} {args}: {r.stderr.decode(errors='replace')[:400]}"


def _samples(server, ds, frame: int, like: np.ndarray) -> np.ndarray:
    """WADO-RS frame decoded to native samples (application/octet-stream)."""
    r = get(server, inst_path(ds) + f"/frames/{frame}", accept="application/octet-stream")
    assert r.status_code == 200, f"frame {frame}: {r.status_code} {r.text[:300]}"
    return np.frombuffer(r.content, dtype="<u2").reshape(like.shape)


def _retrieved_native(server, ds) -> Dataset:
    """The instance retrieved as Explicit VR Little Endian (decoded by the server)."""
    r = get(server, inst_path(ds), accept='multipart/related; type="application/dicom"; '
            'transfer-syntax=1.2.840.10008.1.2.1')
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    (_, body), = parse_multipart(r)
    out = pydicom.dcmread(io.BytesIO(body))
    assert str(out.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.1"
    assert out.get("LossyImageCompression") == "01"
    return out


def _close_12bit(got: np.ndarray, exp: np.ndarray, what: str, max_tol: int = 2,
                 mean_tol: float = 0.05):
    """Two correct 12-bit DCT decoders differ at most by IDCT rounding (T.81 A.3.3)."""
    d = np.abs(got.astype(np.int32) - exp.astype(np.int32))
    assert d.max() <= max_tol and d.mean() <= mean_tol, (
        f"{what}: max |diff| {d.max()}, mean {d.mean():.4f}; worst at "
        f"{np.unravel_index(int(d.argmax()), d.shape)}")


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG-lossy.dcm"])
def test_12bit_jpeg_samples_match_gdcm(srv, name, tmp_path):
    path = PYDICOM_TEST_FILES / name
    ref = _external_decode(path, tmp_path)
    assert ref is not None, "gdcmconv --raw is needed as the 12-bit JPEG reference"
    ds = pydicom.dcmread(path)
    r = stow(srv, [path.read_bytes()])
    if r.status_code != 200:
        ds = fixed_for_stow(ds)
        stow_ok(srv, [to_bytes_as_is(ds)])
    exp = frame_array(ref, 1)
    assert int(exp.max()) > 255, "a 12-bit image uses more than 8 bits"
    _close_12bit(_samples(srv, ds, 1, exp), exp, f"{name} decoded frame")
    _close_12bit(frame_array(_retrieved_native(srv, ds), 1), exp, f"{name} retrieved as native")


def _dcmcjpeg_12bit(tmp_path: Path, ds: Dataset, *opts) -> Dataset:
    src, jpg = tmp_path / "native.dcm", tmp_path / "jpeg12.dcm"
    ds.save_as(src, enforce_file_format=True)
    _dcmtk("dcmcjpeg", "+ee", "+bt", "+q", "92", "+un", *opts, src, jpg)
    out = pydicom.dcmread(jpg)
    assert str(out.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.51"
    return out


def _dcmdjpeg(tmp_path: Path, path: Path) -> Dataset:
    raw = tmp_path / "dcmdjpeg.dcm"
    _dcmtk("dcmdjpeg", path, raw)
    return pydicom.dcmread(raw)


def test_12bit_jpeg_multiframe_monochrome_matches_dcmtk(srv, tmp_path):
    rng = np.random.default_rng(12)
    frames = []
    for k in range(3):
        y, x = np.mgrid[0:72, 0:90]
        img = 300 + 12 * x + 20 * y + 400 * k + rng.integers(0, 40, (72, 90))
        img[20:40, 30:50] = 4000 - 300 * k  # a sharp edge
        frames.append(np.clip(img, 0, 4095))
    px = np.stack(frames).astype(np.uint16)
    ds = new_ds(pixels=px, frames=3, bits_allocated=16, bits_stored=12, WindowCenter=2048,
                WindowWidth=4096)
    jpg = _dcmcjpeg_12bit(tmp_path, ds)
    stow_ok(srv, [(tmp_path / "jpeg12.dcm").read_bytes()])
    ref = _dcmdjpeg(tmp_path, tmp_path / "jpeg12.dcm")
    for f in (1, 2, 3):
        exp = frame_array(ref, f)
        _close_12bit(_samples(srv, jpg, f, exp), exp, f"frame {f}")
        # And the rendering (DICOM window) against the numpy C.11 reference of DCMTK's pixels.
        compare(render_png(srv, jpg, frame=f), reference(jpg, f, pixels_from=ref),
                f"rendered frame {f}", max_tol=1)
    nat = _retrieved_native(srv, jpg)
    assert int(nat.NumberOfFrames) == 3
    for f in (1, 3):
        _close_12bit(frame_array(nat, f), frame_array(ref, f), f"retrieved native frame {f}")


def test_12bit_jpeg_colour_ybr_matches_dcmtk(srv, tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([40 * x + 100, 60 * y + 200, 3000 - 30 * x - 20 * y], axis=-1)
    ds = new_ds(pixels=np.clip(rgb, 0, 4095).astype(np.uint16), pi="RGB", bits_allocated=16,
                bits_stored=12)
    jpg = _dcmcjpeg_12bit(tmp_path, ds, "+s4")  # YBR_FULL, 4:4:4
    assert jpg.PhotometricInterpretation == "YBR_FULL"
    stow_ok(srv, [(tmp_path / "jpeg12.dcm").read_bytes()])
    ref = _dcmdjpeg(tmp_path, tmp_path / "jpeg12.dcm")  # converted to RGB by DCMTK
    assert ref.PhotometricInterpretation == "RGB"
    exp = frame_array(ref, 1)
    # Our decoder converts YBR to RGB like the 8-bit JPEG decoder: RGB samples, interleaved.
    _close_12bit(_samples(srv, jpg, 1, exp), exp, "colour decoded frame", max_tol=3,
                 mean_tol=0.5)
    nat = _retrieved_native(srv, jpg)
    assert nat.PhotometricInterpretation == "RGB"
    _close_12bit(frame_array(nat, 1), exp, "colour retrieved native", max_tol=3, mean_tol=0.5)


def test_12bit_jpeg_that_cannot_be_decoded_is_refused_with_a_message(srv, tmp_path):
    """A 12-bit JPEG whose frame header is broken (precision 7): 406 with the decoder's reason
    on /rendered, and on a decoded frame; the server stays up and the stored file is intact."""
    px = np.clip(_ramp(32, 40, 0, 4095), 0, 4095).astype(np.uint16)
    jpg = _dcmcjpeg_12bit(tmp_path, new_ds(pixels=px, bits_allocated=16, bits_stored=12))
    from pydicom.encaps import generate_frames
    frag = bytearray(next(generate_frames(jpg.PixelData, number_of_frames=1)))
    sof = frag.find(b"\xff\xc1")
    assert sof > 0, "an extended (SOF1) frame header"
    frag[sof + 4] = 7  # sample precision
    jpg.PixelData = encapsulate([bytes(frag)])
    raw = to_bytes_as_is(jpg)
    stow_ok(srv, [raw])
    r = get(srv, inst_path(jpg) + "/rendered", accept="image/jpeg")
    assert r.status_code == 406, r.status_code
    assert "12-bit JPEG" in r.json()["message"] and "precision 7" in r.json()["message"], r.text
    r = get(srv, inst_path(jpg) + "/frames/1", accept="application/octet-stream")
    assert r.status_code == 406, (r.status_code, r.text[:300])
    assert "precision 7" in r.json()["message"], r.text
    # As stored: byte for byte what was sent; the server still answers.
    r = get(srv, inst_path(jpg), accept='multipart/related; type="application/dicom"; transfer-syntax=*')
    assert r.status_code == 200
    (_, body), = parse_multipart(r)
    assert pydicom.dcmread(io.BytesIO(body)).PixelData == jpg.PixelData
