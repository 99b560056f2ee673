#!/usr/bin/env bash
# The cost of the mmp: an IMAP workload through `msgd --role mmp` versus
# straight at the store, logins per second, and resident memory per idle
# proxied connection (10,000 logged-in connections by default).
#
#   scripts/bench-mmp.sh [--clients N] [--duration S] [--login-clients N] [--mmp-cpus LIST] [--haproxy]
#                        [--login-duration S] [--idle N] [--messages N] [--keep]
#
# Builds msgd with --release, then scripts/bench_mmp.py starts a private
# slapd (tests/ldap), one store and one mmp on free loopback ports and runs
# the phases (see its docstring). Raises the open-files limit as far as the
# hard limit allows (the mmp needs two descriptors per proxied connection).
# Bounded: every phase has a duration or a count. Loopback only.
# Needs: slapd, ldap-utils (scripts/install-test-deps.sh), python3 with pytest
# (the test helpers it reuses import it).
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"

if ! command -v slapd >/dev/null 2>&1 && [ ! -x /usr/sbin/slapd ]; then
    echo "bench-mmp: slapd is missing; install it with scripts/install-test-deps.sh" >&2
    exit 1
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --quiet
export MSGD_BIN="${MSGD_BIN:-$root/target/release/msgd}"
exec timeout 900 python3 scripts/bench_mmp.py "$@"
