#!/bin/sh
# Runs the in-crate fuzz targets (src/fuzz/) for longer than `cargo test`.
#
#   scripts/fuzz.sh                      list the targets
#   scripts/fuzz.sh TARGET [N|Ns] [SEED] one target: N random cases, or Ns seconds
#   scripts/fuzz.sh all [N|Ns] [SEED]    every target in turn
#
# Defaults: 100000 cases, seed = hash of the target name (what cargo test
# uses). Release build by default; MSGD_FUZZ_PROFILE=debug for a debug one
# (slower, but also catches integer overflow). A failing input is saved as
# tests/fuzz-corpus/TARGET/crash-HASH and replayed by `cargo test` from then
# on; an input that aborts the process (stack overflow) is left in
# target/fuzz/TARGET.current.
set -eu
cd "$(dirname "$0")/.."

targets() {
    sed -n 's/^ *\([a-z0-9_]*\) => [a-z0-9_]*::[A-Z0-9_]*,$/\1/p' src/fuzz/mod.rs
}

if [ $# -eq 0 ]; then
    echo "usage: $0 TARGET|all [CASES|SECONDSs] [SEED]"
    echo "targets:"
    targets | sed 's/^/  /'
    exit 0
fi

target=$1
amount=${2:-100000}
seed=${3:-}

profile_flag=--release
if [ "${MSGD_FUZZ_PROFILE:-release}" = debug ]; then
    profile_flag=
fi

case $amount in
*s) export MSGD_FUZZ_SECS="${amount%s}" ;;
*) export MSGD_FUZZ_ITERS="$amount" ;;
esac
if [ -n "$seed" ]; then
    export MSGD_FUZZ_SEED="$seed"
fi
export MSGD_FUZZ_VERBOSE=1

if [ "$target" = all ]; then
    set -- $(targets)
else
    if ! targets | grep -qx "$target"; then
        echo "$0: unknown target '$target' (run without arguments for the list)" >&2
        exit 2
    fi
    set -- "$target"
fi

status=0
for t in "$@"; do
    echo "== fuzz $t (${MSGD_FUZZ_ITERS:+$MSGD_FUZZ_ITERS cases}${MSGD_FUZZ_SECS:+$MSGD_FUZZ_SECS s}, seed ${MSGD_FUZZ_SEED:-default})"
    # shellcheck disable=SC2086
    if ! cargo test $profile_flag --lib "fuzz::$t" -- --exact --nocapture; then
        status=1
        echo "== fuzz $t FAILED: see the saved input above" >&2
    fi
done
exit $status
