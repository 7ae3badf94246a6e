"""Shared fixtures for the Lightbox Python interoperability tests.

The `lightbox` fixture starts the real server binary:

    $LIGHTBOX_BIN serve --listen 127.0.0.1:0 --data <tmpdir>

(default binary: <repo>/target/debug/lightbox), waits for the stdout line
`Lightbox listening on http://127.0.0.1:PORT`, and at teardown sends SIGTERM and
asserts a clean exit (status 0).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "dicom"

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
READY_MARKER = "listening on http://"


def lightbox_bin() -> Path:
    env = os.environ.get("LIGHTBOX_BIN")
    p = Path(env) if env else REPO_ROOT / "target" / "debug" / "lightbox"
    if not p.is_absolute():
        p = (REPO_ROOT / p).resolve()
    return p


@dataclass
class LightboxServer:
    proc: subprocess.Popen
    url: str            # http://127.0.0.1:PORT
    data_dir: Path
    stdout_lines: list = field(default_factory=list)
    _stderr_path: Path | None = None
    token: str = ""     # bearer token of the bootstrap admin

    @property
    def auth_headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def base(self) -> str:
        """DICOMweb root, e.g. http://127.0.0.1:PORT/dicom-web"""
        return self.url + "/dicom-web"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    def stored_files(self) -> list[Path]:
        return sorted(self.objects_dir.rglob("*.dcm")) if self.objects_dir.exists() else []

    def stderr_text(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace") if self._stderr_path else ""
        except OSError:
            return ""


def _parse_url(line: str) -> str:
    idx = line.index(READY_MARKER)
    start = idx + len("listening on ")
    rest = line[start:]
    return rest.split()[0].rstrip("/")


def start_server(data_dir: Path, log_dir: Path) -> LightboxServer:
    binary = lightbox_bin()
    if not binary.is_file():
        pytest.fail(
            f"Lightbox binary not found at {binary}. Build it with `cargo build` "
            f"or set LIGHTBOX_BIN.", pytrace=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = log_dir / "lightbox.stderr.log"
    stderr_f = open(stderr_path, "wb")  # a file, not a pipe: cannot fill up and block the server
    cmd = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data", str(data_dir)]
    env = dict(os.environ, LIGHTBOX_ADMIN_EMAIL=ADMIN_EMAIL, LIGHTBOX_ADMIN_PASSWORD=ADMIN_PASSWORD,
               LIGHTBOX_LOG="warn")
    env.pop("LIGHTBOX_CONFIG", None)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=stderr_f, cwd=str(log_dir), env=env)
    stderr_f.close()

    # Read stdout on a thread so the start timeout is honoured even if the
    # server prints nothing, and so stdout keeps being drained afterwards.
    lines: "queue.Queue[str | None]" = queue.Queue()
    seen: list[str] = []

    def pump():
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            seen.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="lightbox-stdout", daemon=True).start()

    server = LightboxServer(proc=proc, url="", data_dir=data_dir, stdout_lines=seen,
                            _stderr_path=stderr_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill(proc)
            pytest.fail(
                f"Lightbox did not print '{READY_MARKER}' within {START_TIMEOUT_S:.0f}s.\n"
                f"command: {' '.join(cmd)}\nstdout:\n" + "\n".join(seen) +
                f"\nstderr:\n{server.stderr_text()}", pytrace=False)
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:  # EOF: the process exited (or closed stdout) before binding
            try:
                rc = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill(proc)
                rc = "still running, stdout closed"
            pytest.fail(
                f"Lightbox exited before it was listening (exit status {rc}).\n"
                f"command: {' '.join(cmd)}\nstdout:\n" + "\n".join(seen) +
                f"\nstderr:\n{server.stderr_text()}", pytrace=False)
        if READY_MARKER in line:
            server.url = _parse_url(line)
            server.token = _login(server.url)
            return server


ADMIN_EMAIL = "admin@test.example"
ADMIN_PASSWORD = "Correct-Horse-Battery-42"


def _login(url: str) -> str:
    """Sign in as the bootstrap admin; returns the bearer token (STOW needs one)."""
    import requests
    # A 429 for the address (every test signs in from 127.0.0.1) is waited out, a few times.
    for _ in range(8):
        r = requests.post(f"{url}/api/auth/login", timeout=30,
                          json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        if r.status_code != 429:
            break
        time.sleep(float(r.headers.get("Retry-After", "2")) + 0.1)
    assert r.status_code == 200, f"admin sign-in failed: {r.status_code} {r.text}"
    return r.json()["token"]


def _kill(proc: subprocess.Popen):
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def stop_server(server: LightboxServer):
    proc = server.proc
    if proc.poll() is not None:
        rc = proc.returncode
        pytest.fail(f"Lightbox died during the test (exit status {rc}).\n"
                    f"stderr:\n{server.stderr_text()}", pytrace=False)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill(proc)
        pytest.fail(f"Lightbox did not exit within {STOP_TIMEOUT_S:.0f}s of SIGTERM.\n"
                    f"stderr:\n{server.stderr_text()}", pytrace=False)
    assert rc == 0, (f"Lightbox exited with status {rc} after SIGTERM (expected 0).\n"
                     f"stderr:\n{server.stderr_text()}")


@pytest.fixture
def lightbox(tmp_path):
    """A fresh Lightbox server with an empty data directory (per test)."""
    server = start_server(tmp_path / "data", tmp_path / "logs")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory):
    """One server for the whole pydicom corpus (starting one per file costs minutes).
    Files that share a SOP Instance UID replace each other, which the store allows."""
    tmp = tmp_path_factory.mktemp("corpus")
    server = start_server(tmp / "data", tmp / "logs")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES_DIR.is_dir():
        pytest.fail(f"{FIXTURES_DIR} missing: run `bash tests/fixtures/make_fixtures.sh`",
                    pytrace=False)
    return FIXTURES_DIR


# ---------------------------------------------------------------------------
# Plain-text summary of the pydicom corpus run (filled by test_stow_interop.py)

PYDICOM_CORPUS_RESULTS: dict[str, dict] = {}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not PYDICOM_CORPUS_RESULTS:
        return
    tr = terminalreporter
    tr.section("Lightbox STOW-RS: pydicom test_files corpus")
    tr.write_line(f"{'file':58} {'status':>6} {'reason':>8} {'pydicom-valid':>13}  verdict")
    counts: dict[str, int] = {}
    for name in sorted(PYDICOM_CORPUS_RESULTS):
        r = PYDICOM_CORPUS_RESULTS[name]
        code = "-" if r.get("code") is None else f"0x{r['code']:04X}"
        tr.write_line(f"{name:58} {r.get('status', '-')!s:>6} {code:>8} "
                      f"{'yes' if r.get('valid') else 'no':>13}  {r.get('verdict', '')}")
        key = f"{r.get('status', '-')}/{code}"
        counts[key] = counts.get(key, 0) + 1
    tr.write_line("")
    tr.write_line(f"summary: {len(PYDICOM_CORPUS_RESULTS)} files; " +
                  ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    bad = [n for n, r in PYDICOM_CORPUS_RESULTS.items() if r.get("verdict", "").startswith("FAIL")]
    tr.write_line(f"summary: {len(bad)} failing" + (": " + ", ".join(sorted(bad)) if bad else ""))
