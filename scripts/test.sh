#!/usr/bin/env bash
# The whole test suite, installing what the tests need on a Debian machine.
# Usage: scripts/test.sh        (as root, or as a user with sudo for the apt step)
# Steps: Debian packages (dcmtk, gdcm tools, python3-venv) -> Rust toolchain if missing ->
# Python test deps (venv) -> fmt + clippy -> cargo test -> Python interoperability tests ->
# browser end-to-end tests of the portal (Playwright driving Debian's Chromium; no browser download).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

apt_install dcmtk libgdcm-tools python3 python3-venv python3-pip curl ca-certificates build-essential cmake chromium

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    say "installing the Rust toolchain (rustup)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

say "Python test dependencies"
PY=python3
if [ -z "${LIGHTBOX_NO_VENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
fi
$PY -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt

say "format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

say "Rust tests (unit + integration against the real server)"
cargo test --locked --all-targets

say "Python interoperability tests (dicomweb-client, pydicom corpus)"
cargo build --locked --bin lightbox
LIGHTBOX_BIN="$PWD/target/debug/lightbox" $PY -m pytest -q tests/python

say "Browser end-to-end tests of the portal (Playwright + Debian's Chromium, headless)"
# Playwright drives the system Chromium (apt package above): never `playwright install`.
$PY -m pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt
LIGHTBOX_BIN="$PWD/target/debug/lightbox" $PY -m pytest -q tests/e2e
echo "screenshots: target/e2e-artifacts/"
