#!/usr/bin/env bash
# JMAP performance (issue 13): Email/query + Email/get on a large mailbox and
# blob download, directly on the store and through the mem (requests/s, p99,
# mem/direct ratio, with wrk), and PSS per idle EventSource connection.
#
# How to run (no build here: point MSGD_BIN at a release binary, or let the
# script use target/release/msgd):
#
#   MSGD_BIN=target/release/msgd scripts/bench-jmap.sh [--messages 10000]
#       [--duration 20] [--connections 16] [--threads 4] [--eventsource 1000]
#       [--hold 5] [--batch 500] [--keep]
#
# A tiny run (seconds): scripts/bench-jmap.sh --messages 500 --duration 3 --eventsource 50
#
# scripts/bench_jmap.py does the work (see its docstring): one store with an
# embedded directory and one user, its INBOX filled by IMAP MULTIAPPEND, one
# `msgd --role mem` in front of it sharing the token key, everything on free
# loopback ports in a temporary folder, stopped and removed at the end.
# Every wrk run has a duration, every wait a deadline. Installs wrk (Debian
# package `wrk`) with apt-get when it is missing, as bench-imap does Dovecot.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"

if ! command -v wrk >/dev/null 2>&1; then
    echo "bench-jmap: installing wrk" >&2
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
    else
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
    fi
fi

export MSGD_BIN="${MSGD_BIN:-$root/target/release/msgd}"
[ -x "$MSGD_BIN" ] || { echo "bench-jmap: $MSGD_BIN is not an executable (build with cargo build --release)" >&2; exit 1; }

# the event-source phase needs descriptors (root may raise the hard limit)
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec timeout 1800 python3 scripts/bench_jmap.py "$@"
