#!/usr/bin/env bash
# Messages per second through mta-in -> LMTP -> store, with the LDAP directory.
#
#   scripts/bench-mta-in.sh [--count-4k N] [--count-64k N] [--no-uncached] [--keep]
#
# Builds msgd with --release, then scripts/bench_mta_in.py starts a private
# slapd (tests/ldap), one store and one mta-in on free loopback ports, sends
# with Postfix's smtp-source (10 concurrent sessions; 4 KiB and 64 KiB
# messages), waits until every message is in the store (IMAP STATUS) and
# prints msgs/s and LDAP searches per message (from slapd's stats log).
# Bounded: BENCH_TIMEOUT seconds per scenario (default 300). Loopback only.
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

cargo build --release --quiet
export MSGD_BIN="${MSGD_BIN:-$root/target/release/msgd}"
exec python3 scripts/bench_mta_in.py "$@"
