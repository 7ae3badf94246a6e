#!/usr/bin/env bash
# Side-by-side benchmark of Lightbox against Orthanc + DICOMweb plugin, one command.
#
#   benches/compare.sh                  # full run (3 rounds, ~10-15 min on 2 cores)
#   COMPARE_QUICK=1 benches/compare.sh  # development run (~2-3 min)
#
# Installs Debian's orthanc, orthanc-dicomweb and orthanc-gdcm when missing (as root; otherwise it
# prints the apt command and stops), builds the release server, and runs the load program
# (benches/compare.rs), which starts Orthanc and Lightbox itself as child processes on loopback
# with fresh data directories. Whatever happens (error, Ctrl-C, SIGTERM), the trap stops the
# processes the run started, by PID, and removes the run's data directory.
# Results: target/bench-results/compare.md and compare.json. Settings: see benches/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
APT_PACKAGES=(orthanc orthanc-dicomweb orthanc-gdcm)

have_peer() {
    command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || return 1
    dpkg-query -W -f='${Status}' orthanc-dicomweb 2>/dev/null | grep -q 'install ok installed'
}

if ! have_peer; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "compare: Orthanc and its DICOMweb plugin are missing. Install them, then run this again:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y ${APT_PACKAGES[*]}" >&2
        exit 1
    fi
    echo "compare: installing ${APT_PACKAGES[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${APT_PACKAGES[@]}"
    # The package may start Orthanc as a system service; the bench runs its own instance, so
    # stop and disable the service (tolerating machines without systemd or without the service).
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now orthanc >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        service orthanc stop >/dev/null 2>&1 || true
    fi
fi

if [ -z "${ORTHANC_DICOMWEB_PLUGIN:-}" ]; then
    ORTHANC_DICOMWEB_PLUGIN=$(dpkg -L orthanc-dicomweb 2>/dev/null | grep -m1 '/libOrthancDicomWeb\.so$' || true)
    [ -n "$ORTHANC_DICOMWEB_PLUGIN" ] && export ORTHANC_DICOMWEB_PLUGIN
fi
if [ -z "${ORTHANC_GDCM_PLUGIN:-}" ]; then
    ORTHANC_GDCM_PLUGIN=$(dpkg -L orthanc-gdcm 2>/dev/null | grep -m1 '/libOrthancGdcm\.so$' || true)
    [ -n "$ORTHANC_GDCM_PLUGIN" ] && export ORTHANC_GDCM_PLUGIN
fi

if pgrep -x Orthanc >/dev/null 2>&1; then
    echo "compare: note: an Orthanc process not started by this run is running (PIDs $(pgrep -x Orthanc | tr '\n' ' ')); it does not conflict (own port and storage) but shares the CPU" >&2
fi

echo "compare: cargo build --release"
cargo build --release --bin lightbox

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$TARGET_DIR/bench-results"
PID_FILE=$(mktemp "$TARGET_DIR/bench-results/compare-pids.XXXXXX")
export COMPARE_PID_FILE=$PID_FILE
BENCH_PID=

# Is PID alive and running the program we expect (guards against PID reuse)?
is_ours() {
    local pid=$1 want=$2 comm
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    case "$comm" in $want) return 0 ;; *) return 1 ;; esac
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    local pids=() dir=
    if [ -s "$PID_FILE" ]; then
        while read -r role pid; do
            case "$role" in
                bench) is_ours "$pid" 'compare-*' && pids+=("$pid") ;;
                orthanc) is_ours "$pid" 'Orthanc' && pids+=("$pid") ;;
                lightbox) is_ours "$pid" 'lightbox' && pids+=("$pid") ;;
                dir) dir=$pid ;;
            esac
        done <"$PID_FILE"
    fi
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        pids+=("$BENCH_PID")
    fi
    if [ ${#pids[@]} -gt 0 ]; then
        echo "compare: stopping PIDs ${pids[*]}" >&2
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 1 300); do
            local alive=0
            for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
            [ $alive -eq 0 ] && break
            sleep 0.1
        done
        for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    fi
    case "$dir" in
        */compare-[0-9]*) rm -rf -- "$dir" ;;
    esac
    rm -f -- "$PID_FILE"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

echo "compare: cargo bench --bench compare"
# In the background so that a signal to this script runs the trap at once.
cargo bench --bench compare -- "$@" &
BENCH_PID=$!
wait "$BENCH_PID"
BENCH_PID=

echo
echo "compare: table: $TARGET_DIR/bench-results/compare.md"
echo "compare: JSON:  $TARGET_DIR/bench-results/compare.json"
