#!/usr/bin/env bash
# Run Lightbox on the embedded default store (./lightbox-data), building it first.
# Installs the build tools (C/C++ compiler, cmake for the JPEG-LS codec) and the Rust toolchain
# if they are missing. Extra arguments go to `lightbox serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for pkg in curl ca-certificates build-essential cmake; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
exec cargo run --release --locked --bin lightbox -- serve "$@"
