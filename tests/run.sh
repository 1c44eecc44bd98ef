#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need,
# then checks formatting and lints and runs every unit, property and
# integration test (the integration tests start real etcd and strata
# processes on 127.0.0.1 and stop them by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one target directory outside the clone so repeated runs stay fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

tests/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test --all-targets"
cargo test --all-targets
