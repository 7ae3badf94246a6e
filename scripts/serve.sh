#!/usr/bin/env bash
# Run Lightbox on the embedded default store (./lightbox-data), building it first.
# Installs the Rust toolchain if it is missing. Extra arguments go to `lightbox serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    command -v curl >/dev/null 2>&1 || { [ "$(id -u)" -eq 0 ] && apt-get update -qq && apt-get install -y -qq curl ca-certificates build-essential || sudo apt-get install -y -qq curl ca-certificates build-essential; }
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
exec cargo run --release --locked --bin lightbox -- serve "$@"
