#!/usr/bin/env bash
# mta-in acceptance rate with the mail checks on vs off, in the same run
# (issue 16): SPF/DKIM/ARC/DMARC ([hygiene], dnsmasq records on loopback)
# and the content filter (a private rspamd) against neither.
#
#   scripts/bench-hygiene.sh [--count N] [--sessions M] [--size BYTES] [--keep]
#
# Builds msgd with --release (unless MSGD_BIN names a binary: then it is used
# as is, e.g. a debug build for a tiny trial run), then
# scripts/bench_hygiene.py starts slapd, a store, an mta-in (fresh for each
# side), dnsmasq and rspamd on free loopback ports, sends N messages over M
# sessions with Postfix's smtp-source and prints msgs/s for both sides and
# the ratio. Bounded: BENCH_TIMEOUT seconds per side (default 300).
# Needs: slapd, postfix (smtp-source), dnsmasq, rspamd: scripts/install-test-deps.sh
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"

for tool in smtp-source slapd dnsmasq rspamd; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "bench-hygiene: $tool is missing; install it with scripts/install-test-deps.sh" >&2
        exit 1
    fi
done

if [ -z "${MSGD_BIN:-}" ]; then
    cargo build --release --quiet
    MSGD_BIN="$root/target/release/msgd"
fi
[ -x "$MSGD_BIN" ] || { echo "bench-hygiene: $MSGD_BIN is not an executable" >&2; exit 1; }
export MSGD_BIN
exec python3 scripts/bench_hygiene.py "$@"
