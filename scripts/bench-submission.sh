#!/usr/bin/env bash
# Benchmark of the mta-out role (not a test: it prints figures).
#
#   scripts/bench-submission.sh [MESSAGES] [CLIENTS]
#
# 1. Submission: CLIENTS concurrent authenticated clients (implicit TLS on
#    the submissions port, one AUTH PLAIN per connection, then messages
#    back to back) submit MESSAGES messages of 4 KiB to a remote domain
#    while the remote MTA is down, so every message stays in the queue:
#    this measures "accepted and durably queued" per second.
# 2. Queue drain: Postfix's smtp-sink starts as the remote domain's MX
#    (dnsmasq on a loopback port answers the MX lookup) and
#    `msgd queue flush` releases the queue; the time until the queue is
#    empty gives messages delivered per second.
#
# Everything runs on 127.0.0.1. MSGD_BIN overrides the binary (default:
# target/release/msgd, built if missing). Needs dnsmasq and smtp-sink
# (apt-get install -y dnsmasq-base postfix; this script installs them).
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"
MESSAGES="${1:-2000}"
CLIENTS="${2:-10}"

export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/sbin/smtp-sink ] || [ ! -x /usr/sbin/dnsmasq ]; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postfix dnsmasq-base >/dev/null
fi

BIN="${MSGD_BIN:-$root/target/release/msgd}"
if [ ! -x "$BIN" ]; then
    cargo build --release
fi

work="$(mktemp -d /tmp/msgd-bench.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
dns_port=$(free_port); sink_port=$(free_port); sub_port=$(free_port)
subs_port=$(free_port); smtp_port=$(free_port); imap_port=$(free_port); lmtp_port=$(free_port)

/usr/sbin/dnsmasq --keep-in-foreground --conf-file=/dev/null --port="$dns_port" --no-resolv --no-hosts \
    --listen-address=127.0.0.1 --bind-interfaces --local=/test/ --pid-file= --user=root --group=root \
    --mx-host=sink.test,mx.sink.test,10 --host-record=mx.sink.test,127.0.0.1 2>"$work/dnsmasq.log" &
pids+=($!)

cat >"$work/msgd.toml" <<EOF
[server]
hostname = "bench.example.test"
data_dir = "$work/data"
domain = "example.test"
[log]
level = "warn"
[queue]
retry_base = 3600
concurrency = 20
[mta]
smtp_port = $sink_port
[dns]
nameservers = ["127.0.0.1:$dns_port"]
[listener.submission]
bind = ["127.0.0.1:$sub_port"]
[listener.submissions]
bind = ["127.0.0.1:$subs_port"]
[listener.smtp]
bind = ["127.0.0.1:$smtp_port"]
[listener.imap]
bind = ["127.0.0.1:$imap_port"]
[listener.lmtp]
bind = ["127.0.0.1:$lmtp_port"]
[listener.imaps]
enabled = false
[listener.pop3]
enabled = false
[listener.pop3s]
enabled = false
[listener.http]
enabled = false
EOF
echo "bench-password" | "$BIN" --config "$work/msgd.toml" user add alice@example.test >/dev/null
env -u MSGD_BIN "$BIN" --config "$work/msgd.toml" >"$work/msgd.out" 2>"$work/msgd.err" &
pids+=($!)
for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$subs_port") 2>/dev/null && break
    sleep 0.1
done

echo "== submission: $MESSAGES messages of 4 KiB, $CLIENTS clients, implicit TLS + AUTH PLAIN"
python3 - "$subs_port" "$MESSAGES" "$CLIENTS" <<'EOF'
import smtplib, ssl, sys, threading, time
port, total, clients = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
body = ("x" * 76 + "\r\n") * 52  # ~4 KiB
msg = ("From: alice@example.test\r\nTo: bob@sink.test\r\nSubject: bench\r\n\r\n" + body).encode()
per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
errors = []
def run(n):
    try:
        with smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=60) as s:
            s.login("alice@example.test", "bench-password")
            for _ in range(n):
                s.sendmail("alice@example.test", ["bob@sink.test"], msg)
    except Exception as e:
        errors.append(repr(e))
t0 = time.monotonic()
ts = [threading.Thread(target=run, args=(n,)) for n in per]
for t in ts: t.start()
for t in ts: t.join()
dt = time.monotonic() - t0
print(f"accepted {total - 0} messages in {dt:.2f} s: {total / dt:.0f} messages/s" + (f" (errors: {errors[:3]})" if errors else ""))
EOF

queued=$("$BIN" --config "$work/msgd.toml" queue list | tail -1 | awk '{print $1}')
echo "queued: $queued"

echo "== queue drain to smtp-sink (127.0.0.1:$sink_port)"
/usr/sbin/smtp-sink -u nobody 127.0.0.1:"$sink_port" 256 >"$work/sink.log" 2>&1 &
pids+=($!)
sleep 0.3
start=$(date +%s.%N)
"$BIN" --config "$work/msgd.toml" queue flush >/dev/null
while :; do
    left=$("$BIN" --config "$work/msgd.toml" queue list | tail -1 | awk '{print $1}')
    [ "$left" = "0" ] && break
    sleep 0.2
done
end=$(date +%s.%N)
python3 -c "import sys; q,a,b=int(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]); print(f'drained {q} messages in {b-a:.2f} s: {q/(b-a):.0f} messages/s')" "$queued" "$start" "$end"
