#!/usr/bin/env bash
# Runs Warren's whole test suite on a fresh Debian bookworm machine (as root):
# installs system packages, checks formatting and lints, builds, builds (or reuses) the guest
# image, runs the Rust unit and integration tests (which boot real VMs), then runs the
# compatibility suites of the official e2b Python and JavaScript SDKs against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

step() { printf '\n==> %s (%s)\n' "$1" "$(date +%T)"; }

step "installing system packages"
scripts/install-deps.sh

command -v cargo >/dev/null || { echo "cargo is required (Rust 1.85 or newer)" >&2; exit 1; }

step "checking formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "building"
cargo build --workspace --all-targets --quiet
export WARREN_AGENT_BIN="$repo/target/debug/warren-agent"

step "building the guest image (cached by its inputs)"
target/debug/warren image build

step "running the Rust tests (unit tests, then tests that boot real VMs)"
# --test-threads=2: the VM tests share 2 cores; more parallel VMs only slow each other down.
cargo test --workspace --no-fail-fast -- --test-threads=2

step "running the e2b SDK compatibility suites"
scripts/compat-setup.sh
# Snapshot files included (fork, pause/resume, create/list/delete through the SDKs).
WARREN_COMPAT_SNAPSHOTS=1 scripts/with-server.sh scripts/run-compat.sh

step "all tests passed"
