#!/usr/bin/env bash
# Hostile load against one all-in-one msgd (not a timed test; a benchmark).
#
#   scripts/bench-hostile.sh [--slowloris 5000] [--senders 200] [--body-mb 10]
#                            [--duration 60] [--abort] [--keep]
#
# Builds msgd with --release (or uses $MSGD_BIN), raises `ulimit -n`, then
# scripts/bench_hostile.py starts msgd on free loopback ports with its default
# limits and, at the same time:
#   - holds N slowloris connections (IMAP, SMTP, POP3 in turn), each sending
#     one byte of an unfinished command every few seconds; the clients come
#     from 127.0.x.y source addresses, 50 per address, so the default
#     per-client cap (200) is not what stops them;
#   - runs M clients that each send one 10 MB body with SMTP DATA (to the
#     user's INBOX; --abort drops each before the final dot instead, so the
#     disk is spared);
#   - measures a normal client's command latency (IMAP NOOP / FETCH on a
#     logged-in session, an SMTP EHLO..RSET on a fresh connection), p50/p99;
#   - samples msgd's RSS (VmRSS) every 0.5 s.
# It prints the figures and the command line. Self-stopping: at most
# --duration seconds of attack plus a minute of start/stop; loopback only.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"

want=65536
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

if [ -z "${MSGD_BIN:-}" ]; then
    cargo build --release --quiet
    export MSGD_BIN="$root/target/release/msgd"
fi
exec timeout --kill-after=30 "${BENCH_TIMEOUT:-900}" python3 scripts/bench_hostile.py "$@"
