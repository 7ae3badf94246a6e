"""QIDO-RS interoperability tests against the real Lightbox binary.

1. dicomweb-client (unmodified) against a server holding the committed fixtures
   (tests/fixtures/dicom, stored with DICOMwebClient.store_instances): study, series and
   instance searches, PN wildcard and fuzzy matching, limit/offset, includefield and
   get_remaining. Every expected UID set is computed from the fixture files with pydicom.
2. The pydicom corpus (data/test_files, plus data/charset_files for the character sets):
   every file is POSTed to one server; for every instance the server accepted, the QIDO
   instance result must exist and its study-level PatientID, StudyDate, AccessionNumber and
   PatientName (Alphabetic group) must agree with what pydicom reads from the files of that
   study (the index keeps the study attributes of the latest instance stored for a study).
3. Raw HTTP: the multipart/related; type="application/dicom+xml" output must parse with
   xml.etree part by part and hold the same StudyInstanceUIDs as the JSON output.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import unicodedata
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from conftest import FIXTURES_DIR, start_server, stop_server
from test_stow_interop import (CORPUS, VALID_FIXTURES, multipart_body, parse_response,
                               referenced_uids)

TIMEOUT = 60
# Some refused corpus files (UN_sequence.dcm, SC_rgb_jpeg.dcm) take the debug build tens of
# seconds each; a STOW-RS request may take this long before the run gives up on it.
STOW_TIMEOUT = 300

# DICOM JSON keys (8-hex uppercase tags)
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"
STUDY_DATE = "00080020"
ACCESSION = "00080050"

XML_MEDIA = 'multipart/related; type="application/dicom+xml"'
CHARSET_FILES = Path(pydicom.__file__).resolve().parent / "data" / "charset_files"


# ---------------------------------------------------------------------------
# helpers

def client_for(server):
    from dicomweb_client.api import DICOMwebClient
    return DICOMwebClient(url=server.base, headers=server.auth_headers)


def json_values(result: dict, tag: str) -> list:
    elem = result.get(tag) or {}
    return list(elem.get("Value") or [])


def json_str(result: dict, tag: str) -> str | None:
    values = json_values(result, tag)
    return None if not values else values[0]


def uids(results: list[dict], tag: str) -> list[str]:
    out = []
    for r in results:
        v = json_str(r, tag)
        assert isinstance(v, str) and v, f"result without {tag}: {r}"
        out.append(v)
    return out


def parsed(results: list[dict]) -> list[Dataset]:
    """Every result must be DICOM JSON that pydicom (what dicomweb-client hands out) can load."""
    out = []
    for r in results:
        try:
            out.append(Dataset.from_json(r))
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"Dataset.from_json failed ({type(e).__name__}: {e}) on {r}")
    return out


def fold(s: str) -> str:
    """Case- and accent-insensitive form (what the server's PN matching promises)."""
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if not unicodedata.combining(c)).casefold()


def pn_groups(pn) -> list[str]:
    return [g for g in PersonName(str(pn)).components] if pn is not None else []


def pn_wildcard_match(pattern: str, pn) -> bool:
    """PS3.4 C.2.2.2.4 wildcard matching of a PN value, case/accent-insensitive, any group;
    trailing empty components ignored."""
    pat = fold(pattern)
    for g in pn_groups(pn):
        if fnmatch.fnmatchcase(fold(g.rstrip(" ^")), pat.rstrip("^")):
            return True
    return False


def pn_fuzzy_match(query: str, pn) -> bool:
    """Documented fuzzymatching: every word of the query (split at spaces and '^') is a
    prefix of some name component of some group, case- and accent-insensitively."""
    words = [w for w in re.split(r"[\s^]+", fold(query)) if w]
    comps = [fold(c) for g in pn_groups(pn) for c in g.split("^") if c]
    return bool(words) and all(any(c.startswith(w) for c in comps) for w in words)


# ---------------------------------------------------------------------------
# 1. dicomweb-client against the committed fixtures

class Fixtures:
    """What pydicom reads from the committed (valid) fixtures."""

    def __init__(self):
        self.ds = {name: pydicom.dcmread(FIXTURES_DIR / name, stop_before_pixels=True)
                   for name in VALID_FIXTURES}
        self.studies: dict[str, list[Dataset]] = defaultdict(list)
        self.series: dict[tuple[str, str], list[Dataset]] = defaultdict(list)
        for d in self.ds.values():
            self.studies[str(d.StudyInstanceUID)].append(d)
            self.series[(str(d.StudyInstanceUID), str(d.SeriesInstanceUID))].append(d)

    def study_value(self, study: str, keyword: str):
        """The study-level value of `keyword`; the fixtures agree within a study."""
        values = {str(d.get(keyword, "")) for d in self.studies[study]}
        assert len(values) == 1, f"fixtures disagree on {keyword} in study {study}: {values}"
        return self.studies[study][0].get(keyword)

    def studies_where(self, pred) -> set[str]:
        return {s for s in self.studies if pred(self.study_value(s, "PatientName"))}

    def study_order(self) -> list[str]:
        """Documented default order: StudyDate desc, StudyTime desc (no date last), UID asc."""
        def key(s):
            date = str(self.study_value(s, "StudyDate") or "")
            time = str(self.study_value(s, "StudyTime") or "")
            def inv(v: str) -> str:  # descending order via the nines' complement
                return "".join(chr(ord("9") - ord(c) + ord("0")) if c.isdigit() else c
                               for c in v)
            return (date == "", inv(date.ljust(8, "0")), inv(time.ljust(13, "0")), s)
        return sorted(self.studies, key=key)


@pytest.fixture(scope="module")
def fx() -> Fixtures:
    if not FIXTURES_DIR.is_dir():
        pytest.fail(f"{FIXTURES_DIR} missing: run `bash tests/fixtures/make_fixtures.sh`",
                    pytrace=False)
    return Fixtures()


@pytest.fixture(scope="module")
def fixtures_server(tmp_path_factory, fx):
    """One server holding every valid committed fixture, stored with dicomweb-client."""
    tmp = tmp_path_factory.mktemp("qido-fixtures")
    server = start_server(tmp / "data", tmp / "logs")
    try:
        datasets = [pydicom.dcmread(FIXTURES_DIR / name) for name in VALID_FIXTURES]
        result = client_for(server).store_instances(datasets=datasets)
        expected = {str(d.SOPInstanceUID) for d in datasets}
        assert set(referenced_uids(result)) == expected, (
            f"store_instances did not store every fixture: {result}")
        yield server
    finally:
        stop_server(server)


def test_search_for_studies_all(fixtures_server, fx):
    results = client_for(fixtures_server).search_for_studies()
    got = uids(results, STUDY_UID)
    assert sorted(got) == sorted(fx.studies), f"studies: {got}"
    assert got == fx.study_order(), "studies not in the documented default order"
    for ds in parsed(results):
        study = str(ds.StudyInstanceUID)
        assert str(ds.get("PatientID", "")) == str(fx.study_value(study, "PatientID"))
        assert int(ds.NumberOfStudyRelatedInstances) == len(fx.studies[study])
        assert int(ds.NumberOfStudyRelatedSeries) == len(
            {k for k in fx.series if k[0] == study})
        assert str(ds.RetrieveURL).endswith("/dicom-web/studies/" + study)


def test_search_for_studies_patient_name_wildcard(fixtures_server, fx):
    expected = fx.studies_where(lambda pn: pn_wildcard_match("LIGHTBOX*", pn))
    assert expected and expected != set(fx.studies), "fixtures no longer exercise this query"
    results = client_for(fixtures_server).search_for_studies(
        search_filters={"PatientName": "LIGHTBOX*"})
    assert sorted(uids(results, STUDY_UID)) == sorted(expected)
    for ds in parsed(results):
        assert str(ds.PatientName).upper().startswith("LIGHTBOX")


@pytest.mark.parametrize("query", ["lightbox*", "*phantom", "YAMADA^TAROU", "山田*", "LIGHTBOX^C?*"])
def test_search_for_studies_patient_name_other_patterns(fixtures_server, fx, query):
    expected = fx.studies_where(lambda pn: pn_wildcard_match(query, pn))
    assert expected, f"fixtures no longer exercise {query!r}"
    results = client_for(fixtures_server).search_for_studies(
        search_filters={"PatientName": query})
    assert sorted(uids(results, STUDY_UID)) == sorted(expected), f"PatientName={query}"
    parsed(results)


def test_search_for_series_of_study(fixtures_server, fx):
    # the study with the most series
    study = max(fx.studies, key=lambda s: (len({k for k in fx.series if k[0] == s}), s))
    expected = sorted({se for st, se in fx.series if st == study})
    assert len(expected) >= 2, "fixtures no longer have a study with several series"
    results = client_for(fixtures_server).search_for_series(study_instance_uid=study)
    assert sorted(uids(results, SERIES_UID)) == expected
    for ds in parsed(results):
        key = (study, str(ds.SeriesInstanceUID))
        assert int(ds.NumberOfSeriesRelatedInstances) == len(fx.series[key])
        assert str(ds.Modality) == str(fx.series[key][0].Modality)


def test_search_for_all_series(fixtures_server, fx):
    results = client_for(fixtures_server).search_for_series()
    assert sorted(uids(results, SERIES_UID)) == sorted(se for _, se in fx.series)
    for ds in parsed(results):
        assert (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)) in fx.series


def test_search_for_instances_of_series(fixtures_server, fx):
    study, series = max(fx.series, key=lambda k: (len(fx.series[k]), k))
    expected = sorted(str(d.SOPInstanceUID) for d in fx.series[(study, series)])
    assert len(expected) >= 2
    results = client_for(fixtures_server).search_for_instances(
        study_instance_uid=study, series_instance_uid=series)
    assert sorted(uids(results, SOP_UID)) == expected
    by_uid = {str(d.SOPInstanceUID): d for d in fx.series[(study, series)]}
    for ds in parsed(results):
        src = by_uid[str(ds.SOPInstanceUID)]
        assert str(ds.SOPClassUID) == str(src.SOPClassUID)
        assert int(ds.Rows) == int(src.Rows) and int(ds.Columns) == int(src.Columns)


def test_search_for_all_instances(fixtures_server, fx):
    results = client_for(fixtures_server).search_for_instances()
    assert sorted(uids(results, SOP_UID)) == sorted(str(d.SOPInstanceUID)
                                                     for d in fx.ds.values())
    parsed(results)


# Queries for fuzzymatching=true; the expected studies come from the documented rule
# (every word a prefix of some component), evaluated on the fixture files.
FUZZY_QUERIES = ["tar", "Yam tar", "light ct", "LIGHTB", "山", "たろ"]
FUZZY_NO_MATCH = ["arou", "ightbox", "phantomx"]


@pytest.mark.parametrize("query", FUZZY_QUERIES)
def test_search_for_studies_fuzzymatching(fixtures_server, fx, query):
    expected = fx.studies_where(lambda pn: pn_fuzzy_match(query, pn))
    assert expected, f"fixtures no longer exercise fuzzy {query!r}"
    results = client_for(fixtures_server).search_for_studies(
        fuzzymatching=True, search_filters={"PatientName": query})
    assert sorted(uids(results, STUDY_UID)) == sorted(expected), f"fuzzy PatientName={query}"
    parsed(results)


@pytest.mark.parametrize("query", FUZZY_NO_MATCH)
def test_search_for_studies_fuzzymatching_no_match(fixtures_server, fx, query):
    assert not fx.studies_where(lambda pn: pn_fuzzy_match(query, pn))
    results = client_for(fixtures_server).search_for_studies(
        fuzzymatching=True, search_filters={"PatientName": query})
    assert results == [], f"fuzzy PatientName={query} matched {uids(results, STUDY_UID)}"


def test_search_for_studies_limit_offset(fixtures_server, fx, caplog):
    client = client_for(fixtures_server)
    order = fx.study_order()
    n = len(order)
    assert n >= 4, "fixtures no longer have enough studies to page"
    pages = []
    for offset in range(0, n + 2, 2):
        with caplog.at_level(logging.WARNING, logger="dicomweb_client"):
            caplog.clear()
            page = client.search_for_studies(limit=2, offset=offset)
        got = uids(page, STUDY_UID)
        assert got == order[offset:offset + 2], f"limit=2 offset={offset}"
        pages.extend(got)
        remaining = max(0, n - offset - 2)
        warns = [r.getMessage() for r in caplog.records if "additional results" in r.getMessage()]
        if remaining:
            assert warns and f"There are {remaining} additional results" in warns[-1], (
                f"limit=2 offset={offset}: expected a Warning with {remaining} additional "
                f"results, dicomweb-client logged {warns}")
        else:
            assert not warns, f"limit=2 offset={offset}: unexpected Warning {warns}"
    assert pages == order
    assert client.search_for_studies(limit=1, offset=n) == []
    assert uids(client.search_for_studies(offset=n - 1), STUDY_UID) == order[-1:]


def test_search_for_studies_get_remaining(fixtures_server, fx):
    client = client_for(fixtures_server)
    results = client.search_for_studies(limit=2, get_remaining=True)
    assert uids(results, STUDY_UID) == fx.study_order()
    parsed(results)


def test_search_for_instances_get_remaining(fixtures_server, fx):
    client = client_for(fixtures_server)
    results = client.search_for_instances(limit=3, get_remaining=True)
    got = uids(results, SOP_UID)
    assert len(got) == len(set(got)), "duplicates across pages"
    assert sorted(got) == sorted(str(d.SOPInstanceUID) for d in fx.ds.values())


def test_search_for_studies_includefield(fixtures_server, fx):
    results = client_for(fixtures_server).search_for_studies(
        fields=["StudyDescription", "00080080"])  # InstitutionName by tag
    assert sorted(uids(results, STUDY_UID)) == sorted(fx.studies)
    for ds in parsed(results):
        study = str(ds.StudyInstanceUID)
        for kw in ("StudyDescription", "InstitutionName"):
            want = {str(d.get(kw)) for d in fx.studies[study] if d.get(kw)}
            if want:
                assert kw in ds, f"includefield {kw} missing from study {study}"
                assert str(ds[kw].value) in want, f"{kw} of {study}: {ds[kw].value!r} != {want}"


def test_search_for_instances_includefield(fixtures_server, fx):
    study, series = max(fx.series, key=lambda k: (len(fx.series[k]), k))
    results = client_for(fixtures_server).search_for_instances(
        study_instance_uid=study, series_instance_uid=series,
        fields=["ImageType", "SliceThickness", "00280030"])  # PixelSpacing by tag
    by_uid = {str(d.SOPInstanceUID): d for d in fx.series[(study, series)]}
    assert sorted(uids(results, SOP_UID)) == sorted(by_uid)
    for ds in parsed(results):
        src = by_uid[str(ds.SOPInstanceUID)]
        for kw in ("ImageType", "SliceThickness", "PixelSpacing"):
            if src.get(kw) is None:
                continue
            assert kw in ds, f"includefield {kw} missing from {ds.SOPInstanceUID}"
            want, got = src[kw].value, ds[kw].value
            want = list(want) if isinstance(want, MultiValue) else [want]
            got = list(got) if isinstance(got, MultiValue) else [got]
            if kw == "ImageType":
                assert [str(v) for v in got] == [str(v) for v in want], kw
            else:
                assert [float(v) for v in got] == pytest.approx([float(v) for v in want]), kw


# ---------------------------------------------------------------------------
# 2. the pydicom corpus

STUDY_KEYWORDS = {"PatientID": PATIENT_ID, "StudyDate": STUDY_DATE,
                  "AccessionNumber": ACCESSION, "PatientName": PATIENT_NAME}
DECODE_WARNING = re.compile(r"charac|encod|decod|codec", re.I)


def _norm(v) -> str:
    return ("" if v is None else str(v)).rstrip(" \0").rstrip("^").rstrip(" ")


def _norm_values(values) -> tuple[str, ...]:
    vals = [_norm(v) for v in values]
    while vals and vals[-1] == "":
        vals.pop()
    return tuple(vals)


def pydicom_study_values(ds: Dataset) -> dict[str, tuple[str, ...]]:
    """Normalised study attributes as pydicom decodes them; attributes whose decoding
    warned (unknown/incorrect character set, undecodable bytes) are left out."""
    out = {}
    for kw in STUDY_KEYWORDS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                elem = ds[kw] if kw in ds else None
                value = None if elem is None else elem.value
                vals = [] if value in (None, "") else (
                    list(value) if isinstance(value, MultiValue) else [value])
                if kw == "PatientName":
                    vals = [PersonName(v).components[0] if isinstance(v, PersonName)
                            else str(v).split("=")[0] for v in vals]
                else:
                    vals = [str(v) for v in vals]
            except Exception:  # noqa: BLE001 - pydicom cannot decode it: skip
                continue
        if any(DECODE_WARNING.search(str(w.message)) for w in caught):
            continue
        if any("\ufffd" in v for v in vals):
            continue
        out[kw] = _norm_values(vals)
    return out


def qido_study_values(result: dict) -> dict[str, tuple[str, ...]]:
    out = {}
    for kw, tag in STUDY_KEYWORDS.items():
        vals = json_values(result, tag)
        if kw == "PatientName":
            vals = [(v or {}).get("Alphabetic", "") if isinstance(v, dict) else v for v in vals]
        out[kw] = _norm_values(vals)
    return out


def _corpus_files() -> list[tuple[str, Path]]:
    files = list(CORPUS)
    if CHARSET_FILES.is_dir():
        files += [("charset_files/" + p.name, p) for p in sorted(CHARSET_FILES.glob("*.dcm"))]
    return files


class StoredCorpus:
    def __init__(self, server):
        self.server = server
        self.stored: dict[str, str] = {}            # rel -> SOP Instance UID (from STOW)
        self.last_file: dict[str, str] = {}         # SOP Instance UID -> rel of the last store
        self.datasets: dict[str, Dataset] = {}      # rel -> pydicom dataset (if readable)
        self.unreadable: list[str] = []


def _read(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001
        return None


@pytest.fixture(scope="module")
def stored_corpus(corpus_server) -> StoredCorpus:
    """POST every corpus file on its own to the (module-scoped) corpus server and keep what
    was stored according to the STOW-RS responses.

    Files are posted concurrently to keep the run short (a couple of refused files take the
    debug build many seconds each), but files that share a SOP Instance UID (as pydicom reads
    it) are posted one after the other in corpus order, so the last one stored is known."""
    sc = StoredCorpus(corpus_server)
    groups: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for rel, path in _corpus_files():
        ds = _read(path)
        if ds is not None:
            sc.datasets[rel] = ds
        sop = str(ds.get("SOPInstanceUID", "") or "") if ds is not None else ""
        groups[sop or "file:" + rel].append((rel, path))

    def post_group(items):
        out = []
        for rel, path in items:
            body, ctype = multipart_body([path.read_bytes()])
            resp = requests.post(f"{corpus_server.base}/studies", data=body,
                                 timeout=STOW_TIMEOUT,
                                 headers={"Content-Type": ctype,
                                          "Accept": "application/dicom+json",
                                          **corpus_server.auth_headers})
            refs = {}
            if resp.status_code in (200, 202):
                refs = referenced_uids(parse_response(resp))
            out.append((rel, list(refs)))
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        for done in pool.map(post_group, groups.values()):
            for rel, refs in done:
                if len(refs) == 1:
                    sc.stored[rel] = refs[0]
                    sc.last_file[refs[0]] = rel
    sc.unreadable = sorted(rel for rel in sc.stored if rel not in sc.datasets)
    assert sc.stored, "the server stored no corpus file at all"
    return sc


def test_corpus_instances_have_study_attributes_from_pydicom(stored_corpus):
    sc = stored_corpus
    # Study UID (as pydicom reads it) -> attribute -> every value seen in that study's files
    per_study: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    files_of_study: dict[str, list[str]] = defaultdict(list)
    for rel in sc.stored:
        ds = sc.datasets.get(rel)
        study = ds.get("StudyInstanceUID") if ds is not None else None
        if not study:
            continue
        files_of_study[str(study)].append(rel)
        for kw, v in pydicom_study_values(ds).items():
            per_study[str(study)][kw].add(v)

    session = requests.Session()
    session.headers.update({"Accept": "application/dicom+json", **sc.server.auth_headers})
    problems: list[str] = []
    compared = 0
    for uid, rel in sorted(sc.last_file.items(), key=lambda kv: kv[1]):
        url = f"{sc.server.base}/instances?SOPInstanceUID={quote(uid)}"
        resp = session.get(url, timeout=TIMEOUT)
        if resp.status_code != 200:
            problems.append(f"{rel}: GET {url} -> {resp.status_code} {resp.text[:300]}")
            continue
        results = resp.json()
        if len(results) != 1:
            problems.append(f"{rel}: GET {url} -> {len(results)} results, expected 1")
            continue
        result = results[0]
        try:
            Dataset.from_json(result)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{rel}: result not loadable by pydicom: {type(e).__name__}: {e}")
        if json_str(result, SOP_UID) != uid:
            problems.append(f"{rel}: result SOPInstanceUID {json_str(result, SOP_UID)} != {uid}")
        ds = sc.datasets.get(rel)
        if ds is None:
            continue
        study = str(ds.get("StudyInstanceUID") or "")
        got_study = json_str(result, STUDY_UID)
        if study and got_study != study:
            problems.append(f"{rel}: StudyInstanceUID {got_study!r}, pydicom reads {study!r}")
            continue
        got = qido_study_values(result)
        for kw, seen in per_study[study].items():
            compared += 1
            if got[kw] not in seen:
                problems.append(
                    f"{rel}: {kw} = {got[kw]!r} (QIDO) but pydicom reads "
                    f"{' or '.join(repr(v) for v in sorted(seen))} "
                    f"from {', '.join(sorted(files_of_study[study]))}")
    assert compared, "no attribute compared"
    assert not problems, (f"{len(problems)} problem(s) over {len(sc.last_file)} stored "
                          f"instances:\n" + "\n".join(problems))


def test_corpus_known_valid_files_were_stored(stored_corpus):
    """Guard against the comparison above silently covering nothing."""
    from test_stow_interop import KNOWN_VALID
    names = {Path(rel).name for rel in stored_corpus.stored}
    missing = [n for n in KNOWN_VALID
               if n not in names and any(p.name == n for _, p in CORPUS)]
    assert not missing, f"known-valid corpus files not stored: {missing}"
    charset = [rel for rel in stored_corpus.stored if rel.startswith("charset_files/")]
    if CHARSET_FILES.is_dir():
        assert charset, "no pydicom charset file was stored"


# ---------------------------------------------------------------------------
# 3. XML output over raw HTTP

def split_multipart(body: bytes, content_type: str) -> list[tuple[dict, bytes]]:
    """Strict multipart splitter (RFC 2046): returns (headers, payload) for each part."""
    m = re.search(r'boundary="?([^";]+)"?', content_type, re.I)
    assert m, f"no boundary in Content-Type {content_type!r}"
    delim = b"--" + m.group(1).encode()
    assert body.startswith(delim) or (b"\r\n" + delim) in body, "no opening delimiter"
    # drop the preamble, then split on CRLF--boundary
    start = 0 if body.startswith(delim) else body.index(b"\r\n" + delim) + 2
    body = body[start + len(delim):]
    parts = []
    while True:
        if body.startswith(b"--"):
            break  # close delimiter
        assert body.startswith(b"\r\n"), f"delimiter not followed by CRLF: {body[:40]!r}"
        end = body.find(b"\r\n" + delim)
        assert end >= 0, "unterminated part (no closing delimiter)"
        part, body = body[2:end], body[end + 2 + len(delim):]
        head, sep, payload = part.partition(b"\r\n\r\n")
        if not sep:  # part without headers
            head, payload = b"", part[2:] if part.startswith(b"\r\n") else part
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        parts.append((headers, payload))
    return parts


def _local(tag: str) -> str:
    return tag.split("}")[-1]


def xml_study_uids(server, path: str, problems: list[str]) -> list[str | None]:
    """StudyInstanceUID of every part of the XML response (None: no Value)."""
    url = f"{server.base}{path}"
    resp = requests.get(url, timeout=TIMEOUT, headers={"Accept": XML_MEDIA, **server.auth_headers})
    ctype = resp.headers.get("Content-Type", "")
    if resp.status_code != 200 or not ctype.lower().startswith("multipart/related") \
            or "application/dicom+xml" not in ctype:
        problems.append(f"GET {url} Accept: {XML_MEDIA} -> {resp.status_code} "
                        f"Content-Type {ctype!r}: {resp.text[:500]}")
        return []
    out: list[str | None] = []
    for i, (headers, payload) in enumerate(split_multipart(resp.content, ctype)):
        pct = headers.get("content-type", "")
        if pct.split(";")[0].strip().lower() != "application/dicom+xml":
            problems.append(f"GET {url} (xml) part {i}: Content-Type {pct!r}")
        try:
            root = ElementTree.fromstring(payload)
        except ElementTree.ParseError as e:
            problems.append(f"GET {url} (xml) part {i} is not well-formed XML ({e}): "
                            f"{payload[:1000]!r}")
            out.append(None)
            continue
        if _local(root.tag) != "NativeDicomModel":
            problems.append(f"GET {url} (xml) part {i}: root element {root.tag}")
        attrs = [a for a in root if _local(a.tag) == "DicomAttribute"
                 and a.get("tag", "").upper() == STUDY_UID]
        values = [v.text for a in attrs for v in a if _local(v.tag) == "Value"]
        if len(values) != 1 or not (values[0] or "").strip():
            problems.append(f"GET {url} (xml) part {i}: StudyInstanceUID has no single Value: "
                            + (ElementTree.tostring(attrs[0], encoding="unicode")
                               if attrs else "attribute absent"))
            out.append(None)
        else:
            out.append(values[0].strip())
    return out


def json_study_uids(server, path: str, problems: list[str]) -> list[str | None]:
    url = f"{server.base}{path}"
    resp = requests.get(url, timeout=TIMEOUT,
                        headers={"Accept": "application/dicom+json", **server.auth_headers})
    if resp.status_code != 200:
        problems.append(f"GET {url} (json) -> {resp.status_code}: {resp.text[:500]}")
        return []
    out: list[str | None] = []
    for i, r in enumerate(resp.json()):
        v = json_str(r, STUDY_UID)
        if not isinstance(v, str) or not v:
            problems.append(f"GET {url} (json) result {i}: StudyInstanceUID has no Value: "
                            f"{r.get(STUDY_UID)}")
            v = None
        out.append(v)
    return out


def xml_vs_json_problems(server, path: str) -> list[str]:
    problems: list[str] = []
    want = json_study_uids(server, path, problems)
    if not want:
        problems.append(f"{path}: no JSON results")
    got = xml_study_uids(server, path, problems)
    if got != want:
        problems.append(f"{path}: XML StudyInstanceUIDs {got} differ from JSON {want}")
    return problems


@pytest.mark.parametrize("path", ["/studies", "/studies?PatientName=LIGHTBOX*",
                                  "/studies?limit=2&offset=1", "/series", "/instances"])
def test_xml_output_matches_json_fixtures(fixtures_server, path):
    problems = xml_vs_json_problems(fixtures_server, path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", ["/studies", "/instances"])
def test_xml_output_matches_json_corpus(stored_corpus, path):
    """Same check on the corpus server: non-ASCII names (charset files) and odd files must
    still give well-formed XML with the same studies as JSON."""
    problems = xml_vs_json_problems(stored_corpus.server, path)
    assert not problems, "\n".join(problems)
