#!/usr/bin/env bash
# The project's one test command: dependencies, debug build, unit tests, integration tests.
#   scripts/test.sh [extra pytest args...]
# MSGD_BIN overrides the binary the integration tests run (default target/debug/msgd).
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"

bash scripts/install-test-deps.sh

cargo build
# The Apache-2.0-only build without Sieve (docs/licensing.md) must keep
# building. `build`, not `check`: it reuses the dependencies `cargo build`
# just compiled (a `check` compiles all of them again, in check mode).
cargo build --no-default-features --lib
cargo test

export MSGD_BIN="${MSGD_BIN:-$root/target/debug/msgd}"
case "$MSGD_BIN" in
    /*) ;;
    *) MSGD_BIN="$root/$MSGD_BIN" ;;
esac
if [ ! -x "$MSGD_BIN" ]; then
    echo "test.sh: $MSGD_BIN is not an executable" >&2
    exit 1
fi

# --durations: the slowest tests in the log, to keep the suite short.
python3 -m pytest -q --durations=25 tests/integration "$@"
