#!/usr/bin/env bash
# Backup and restore throughput (issue 14, Performance): messages/s and MB/s
# of `msgd restore` and `msgd backup` for one user of 100,000 messages, an
# incremental backup with nothing new, and the time of `msgd reconstruct`
# for that user.
#
# How to run (no build here: point MSGD_BIN at a release binary, or let the
# script use target/release/msgd):
#
#   MSGD_BIN=target/release/msgd scripts/bench-backup.sh [--messages 100000] [--keep]
#
# A smoke run (seconds, debug binary):
#   MSGD_BIN=target/debug/msgd scripts/bench-backup.sh --messages 200
#
# What it does, in a temporary folder (removed at the end unless --keep):
# 1. writes a backup folder by hand from docs/backup.md (one user, INBOX,
#    N messages of 2-12 kB, every other one \Seen) — the fastest way to get
#    a large mailbox into a store;
# 2. `msgd restore` it into an empty store (no server: the CLI opens the
#    store itself) — restore throughput;
# 3. `msgd backup` the user into a new folder — full backup throughput
#    (every message read, hashed and written);
# 4. `msgd backup` again — incremental with nothing new (index and manifest
#    only);
# 5. `msgd reconstruct USER` — rebuild of the user's index from the files.
# Each step has a deadline (timeout 3600).
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"
messages=100000
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) messages="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--messages N] [--keep]" >&2; exit 2 ;;
    esac
done

MSGD_BIN="${MSGD_BIN:-$root/target/release/msgd}"
[ -x "$MSGD_BIN" ] || { echo "bench-backup: $MSGD_BIN is not an executable (build with cargo build --release)" >&2; exit 1; }

work="$(mktemp -d /tmp/bench-backup.XXXXXX)"
cleanup() { if [ "$keep" = 1 ]; then echo "bench-backup: kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

user="bench@example.test"
cat >"$work/msgd.toml" <<EOF
[server]
hostname = "mail.example.test"
data_dir = "$work/data"
domain = "example.test"

[log]
level = "warn"
EOF

# msgd reads MSGD_* variables as configuration: run it without them.
msgd() { env -u MSGD_BIN timeout 3600 "$MSGD_BIN" --config "$work/msgd.toml" "$@"; }
now() { date +%s.%N; }

echo "bench-backup: writing a backup folder of $messages messages" >&2
bytes="$(python3 - "$work/src" "$user" "$messages" <<'PY'
import hashlib, json, os, sys
dest, user, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
enc = "".join(c if c.isalnum() or c in "_-@+" else f"%{ord(c):02X}" for c in user)
udir = os.path.join(dest, "users", enc)
os.makedirs(udir, exist_ok=True)
with open(os.path.join(dest, "msgd-backup.json"), "w") as f:
    json.dump({"format": "msgd-backup", "version": 1}, f)
line = "The quick brown fox jumps over the lazy dog, again and again.\r\n"
msgs, total = [], 0
for i in range(n):
    body = line * (30 + (i * 37) % 170)
    data = (f"From: Sender {i % 97} <s{i % 97}@remote.example>\r\nTo: <{user}>\r\n"
            f"Subject: bench message {i}\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            f"Message-ID: <bench.{i}@remote.example>\r\n\r\n{body}").encode()
    sha = hashlib.sha256(data).hexdigest()
    d = os.path.join(udir, "blobs", sha[:2])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, sha), "wb") as f:
        f.write(data)
    msgs.append({"uid": i + 1, "flags": ["\\Seen"] if i % 2 else [], "internal_date": 1704067200 + i,
                 "tz_offset_min": 0, "modseq": 1, "size": len(data), "sha256": sha,
                 "blob": f"blobs/{sha[:2]}/{sha}"})
    total += len(data)
man = {"format": "msgd-backup", "version": 1, "user": user, "run": "001704067200-000000000",
       "created": "2024-01-01T00:00:00+00:00", "previous": None, "subscriptions": ["INBOX"],
       "mailboxes": [{"name": "INBOX", "uidvalidity": 1704067200, "uidnext": n + 1, "highestmodseq": 2,
                      "special_use": None, "subscribed": True, "messages": msgs}],
       "totals": {"messages": n, "bytes": total, "new_blobs": n, "new_bytes": total, "vanished": 0}}
with open(os.path.join(udir, "manifest-001704067200-000000000.json"), "w") as f:
    json.dump(man, f)
print(total)
PY
)"

rate() { # label seconds
    python3 -c "import sys; n,b,s=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]); print(f'{sys.argv[4]:<32} {s:9.2f} s {n/s:10.0f} msg/s {b/s/1e6:8.1f} MB/s')" \
        "$messages" "$bytes" "$2" "$1"
}

t0="$(now)"; msgd restore "$work/src" >/dev/null; t1="$(now)"
restore_s="$(python3 -c "print($t1-$t0)")"
t0="$(now)"; msgd backup "$user" "$work/dest" >/dev/null; t1="$(now)"
backup_s="$(python3 -c "print($t1-$t0)")"
t0="$(now)"; msgd backup "$user" "$work/dest" >/dev/null; t1="$(now)"
incr_s="$(python3 -c "print($t1-$t0)")"
t0="$(now)"
if msgd reconstruct "$user" >"$work/reconstruct.out" 2>&1; then
    t1="$(now)"; recon="$(python3 -c "print(f'{$t1-$t0:.2f} s')")"
else
    recon="failed: $(tail -1 "$work/reconstruct.out")"
fi

echo
echo "bench-backup: one user, $messages messages, $((bytes / 1000000)) MB, binary $MSGD_BIN"
rate "restore (empty store)" "$restore_s"
rate "backup (full)" "$backup_s"
rate "backup (incremental, none new)" "$incr_s"
echo "reconstruct $user: $recon"
