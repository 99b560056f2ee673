#!/usr/bin/env bash
# Messages per second through mta-in -> LMTP -> store, with the LDAP directory,
# side by side with Postfix -> LMTP -> the same kind of store.
#
#   scripts/bench-mta-in.sh [--count-4k N] [--count-64k N] [--no-uncached]
#                           [--no-postfix] [--keep]
#
# Builds msgd with --release (unless MSGD_BIN names a binary: then it is used
# as is, e.g. a debug build for a tiny trial run), then
# scripts/bench_mta_in.py starts a private slapd (tests/ldap), one store and
# one mta-in on free loopback ports, sends with Postfix's smtp-source (10
# concurrent sessions; 4 KiB and 64 KiB messages), waits until every message
# is in the store (IMAP STATUS) and prints msgs/s and LDAP searches per
# message (from slapd's stats log). Then the same scenario against a private
# Postfix instance (own config/queue in a temp dir, relaying by LMTP to a
# fresh store) and the ratios msgd/Postfix; --no-postfix skips that side.
# The Postfix side needs root. Bounded: BENCH_TIMEOUT seconds per scenario
# (default 300); everything started is stopped on exit. Loopback only.
# Needs: slapd, ldap-utils, postfix (smtp-source): scripts/install-test-deps.sh
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"

for tool in smtp-source slapd; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "bench-mta-in: $tool is missing; install it with scripts/install-test-deps.sh" >&2
        exit 1
    fi
done

if [ -z "${MSGD_BIN:-}" ]; then
    cargo build --release --quiet
    MSGD_BIN="$root/target/release/msgd"
fi
[ -x "$MSGD_BIN" ] || { echo "bench-mta-in: $MSGD_BIN is not an executable" >&2; exit 1; }
export MSGD_BIN
exec python3 scripts/bench_mta_in.py "$@"
