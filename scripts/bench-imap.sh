#!/usr/bin/env bash
# IMAP benchmark of msgd (release build) on loopback, optionally side by side
# with Dovecot from Debian on the same machine:
#   1. `msgd stress` random workload (APPEND/FETCH/STORE/COPY/MOVE/EXPUNGE/
#      IDLE/SEARCH/NOOP on shared mailboxes, every response checked),
#   2. `msgd stress --workload sessions` (login, select, fetch headers,
#      fetch bodies, store flags, append, expunge, logout), the issue's
#      "mixed stress load": --session-clients clients (20) over
#      --session-users users (100), a login every cycle,
#   3. memory per idle logged-in connection: N connections, LOGIN + SELECT + IDLE
#      each, server RSS (and PSS, summed over all server processes) before
#      and while they are open; the time to open the N logged-in
#      connections (as `msgd stress --idle-conns` reports it) per server and
#      msgd/Dovecot ratio at the end,
#   4. POP3 RETR (--pop3 SECONDS, 0 = skip): scripts/bench_pop3.py fills the
#      INBOX of one user per client with the same 100 messages (IMAP APPEND),
#      then each client loops USER/PASS, RETR all 100, QUIT; messages/s,
#      MB/s and messages per server CPU-second, and the ratios at the end,
#   5. with --large N: a mailbox of N messages, filled by MULTIAPPEND with
#      the same generated messages on both servers, then SELECT, UID FETCH
#      1:* (FLAGS), SEARCH UNSEEN, SEARCH TEXT, SORT (DATE) and THREAD
#      REFERENCES, each timed three times (scripts/bench_imap_large.py);
#      the msgd/Dovecot ratio of the best times is printed per operation.
# Commands per second and p50/p99 per command come from `msgd stress`;
# commands per server CPU-second from the server's CPU time over each phase
# (every process of the server's tree, plus what its root reaped from
# children that exited: Dovecot's imap processes end with their sessions).
#
# --scheme argon2id (default) gives both servers the same Argon2id hashes
# (msgd's default, m=19456,t=2,p=1); --scheme ssha512 gives both the same
# {SSHA512} hashes, which makes a login cheap on both sides and compares the
# rest of the work.
#
#   scripts/bench-imap.sh [--duration SECS] [--clients N] [--idle N]
#                         [--pop3 SECS] [--no-dovecot] [--no-build] [--out FILE]
#                         [--large N] [--large-only] [--no-dovecot-cache]
#                         [--session-clients N] [--session-users N]
#                         [--scheme argon2id|ssha512]
#
# --large N (default 0: skipped) runs phase 5 with N messages (the issue
# asks for 100000) after the other phases; --large-only skips phases 1-4.
#
# MSGD_BIN overrides the binary (default target/release/msgd, built here);
# MSGD_ENV adds environment variables for the msgd server process only.
# Everything listens on 127.0.0.1 on free ports in a temporary directory;
# every step is bounded in time; the script stops what it started.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"

DURATION=20
CLIENTS=8
IDLE=10000
POP3=20
POP3_MESSAGES=100
DOVECOT=1
DV_CACHE=1
BUILD=1
OUT=""
LARGE=0
LARGE_ONLY=0
SESSION_CLIENTS=20
SESSION_USERS=100
SCHEME=argon2id
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --idle) IDLE="$2"; shift 2 ;;
        --pop3) POP3="$2"; shift 2 ;;
        --no-dovecot) DOVECOT=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --large) LARGE="$2"; shift 2 ;;
        --large-only) LARGE_ONLY=1; shift ;;
        --no-dovecot-cache) DV_CACHE=0; shift ;;
        --session-clients) SESSION_CLIENTS="$2"; shift 2 ;;
        --session-users) SESSION_USERS="$2"; shift 2 ;;
        --scheme) SCHEME="$2"; shift 2 ;;
        -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
        *) echo "bench-imap: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ "$LARGE_ONLY" = 1 ] && [ "$LARGE" -le 0 ]; then
    echo "bench-imap: --large-only needs --large N" >&2
    exit 2
fi

case "$SCHEME" in
    argon2id|ssha512) ;;
    *) echo "bench-imap: --scheme is argon2id or ssha512" >&2; exit 2 ;;
esac

# Many connections need many descriptors, in this shell and its children
# (root may raise its hard limit).
ulimit -Hn 65536 2>/dev/null || true
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard"
if [ "$(ulimit -n)" -lt $((IDLE * 2 + 100)) ]; then
    echo "bench-imap: ulimit -n is $(ulimit -n), too low for $IDLE idle connections" >&2
    exit 1
fi

if [ -n "${MSGD_BIN:-}" ]; then
    MSGD="$MSGD_BIN"
else
    MSGD="$root/target/release/msgd"
    if [ "$BUILD" = 1 ]; then
        cargo build --release
    fi
fi
[ -x "$MSGD" ] || { echo "bench-imap: $MSGD is not an executable" >&2; exit 1; }

WORK="$(mktemp -d /tmp/bench-imap.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ -f "$WORK/dovecot/run/master.pid" ]; then
        kill "$(cat "$WORK/dovecot/run/master.pid")" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port, seconds
    local i
    for i in $(seq 1 $(($2 * 10))); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.5)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench-imap: nothing listens on port $1 after $2 s" >&2
    return 1
}

# Sum of VmRSS and of Pss (kB) over the given PIDs.
mem_of() {
    local p rss pss
    rss="$(for p in "$@"; do cat "/proc/$p/status" 2>/dev/null; done | awk '/^VmRSS:/ {s += $2} END {print s + 0}')"
    pss="$(for p in "$@"; do cat "/proc/$p/smaps_rollup" 2>/dev/null; done | awk '/^Pss:/ {s += $2} END {print s + 0}')"
    echo "$rss $pss"
}

# A process and all its descendants (one ps listing: with a thousand
# processes, a pgrep per process would take longer than the measurement).
tree_of() {
    ps -e -o pid= -o ppid= | awk -v root="$1" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            for (i = 1; i <= NR; i++) {
                p = pids[i]
                for (n = 0; p != "" && p != 0 && n < 64; n++) {
                    if (p == root) { print pids[i]; break }
                    p = parent[p]
                }
            }
        }'
}

report() { echo "$@" | tee -a "$WORK/summary"; }

# CPU seconds used so far by a server: user + system time of every live
# process of its tree, plus the children its root process has reaped
# (Dovecot's imap processes exit with their sessions; their time lands in
# the master's cutime/cstime).
cpu_of() { # root pid
    local p t=0
    for p in $(tree_of "$1"); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    t=$((t + $(awk '{print $16 + $17}' "/proc/$1/stat" 2>/dev/null || echo 0)))
    awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# "commands per server CPU-second" of a stress output and a CPU interval.
per_cpu() { # stress.txt cpu_before cpu_after
    local n
    n="$(sed -n 's/^stress: \([0-9]*\) commands in .*/\1/p' "$1" | head -1)"
    awk -v n="${n:-0}" -v a="$2" -v b="$3" 'BEGIN { d = b - a; if (d > 0 && n > 0) printf "%.0f", n / d; else print 0 }'
}

# "commands/s" of a stress output.
cmds_per_s() {
    local v
    v="$(sed -n 's/^stress: [0-9]* commands in .* = \([0-9.]*\) commands\/s.*/\1/p' "$1" | head -1)"
    echo "${v:-0}"
}

USERS_ARG="bench1@example.test:bench-pw-1,bench2@example.test:bench-pw-2"
# The session workload's users: sess1..sessN, a login every cycle.
SESSION_NAMES=()
for n in $(seq 1 "$SESSION_USERS"); do SESSION_NAMES+=("sess$n"); done
SESSION_ARG="$(for u in "${SESSION_NAMES[@]}"; do printf '%s@example.test:%s-pw,' "$u" "$u"; done)"
SESSION_ARG="${SESSION_ARG%,}"
# POP3: one user per client (a POP3 server may lock a maildrop per user).
POP3_USERS=()
for n in $(seq 1 "$CLIENTS"); do POP3_USERS+=("pop$n"); done
POP3_USERS_ARG="$(for u in "${POP3_USERS[@]}"; do printf '%s@example.test:%s-pw,' "$u" "$u"; done)"
POP3_USERS_ARG="${POP3_USERS_ARG%,}"

# Seconds `msgd stress --idle-conns` took to open its connections (0 if it
# printed nothing).
open_time() {
    local t
    t="$(sed -n 's/^idle: [0-9]* connections logged in.* in \([0-9.]*\) s .*/\1/p' "$1" 2>/dev/null | head -1)"
    echo "${t:-0}"
}

# run_pop3 NAME IMAP_PORT POP3_PORT SERVER_PID: the POP3 RETR phase.
run_pop3() {
    local name="$1" out="$WORK/$1"
    [ "$POP3" != 0 ] || return 0
    mkdir -p "$out"
    report ""
    report "=== $name: POP3 RETR, ${#POP3_USERS[@]} clients (one user each), $POP3_MESSAGES messages per session, $POP3 s"
    timeout $((POP3 + 600)) python3 "$root/scripts/bench_pop3.py" --name "$name" --imap-port "$2" --pop3-port "$3" \
        --users "$POP3_USERS_ARG" --messages "$POP3_MESSAGES" --duration "$POP3" --server-pid "$4" \
        --json "$out/pop3.json" >"$out/pop3.txt" 2>"$out/pop3.err" || true
    tee -a "$WORK/summary" <"$out/pop3.txt"
    tail -3 "$out/pop3.err" | tee -a "$WORK/summary"
}

# run_large NAME PORT: phase 4, the large mailbox (bench1's "large").
run_large() {
    local name="$1" port="$2" out="$WORK/$1"
    mkdir -p "$out"
    report ""
    report "=== $name: large mailbox, $LARGE messages"
    # Bounded: filling is the slow part (Dovecot fsyncs every message).
    timeout $((LARGE / 10 + 600)) python3 "$root/scripts/bench_imap_large.py" --name "$name" \
        --port "$port" --user bench1@example.test --password bench-pw-1 \
        --messages "$LARGE" >"$out/large.txt" 2>"$out/large.err" || \
        report "$name large: the script failed (exit $?): $(tail -3 "$out/large.err" | tr '\n' ' ')"
    grep '^#' "$out/large.err" | tee -a "$WORK/summary" || true
    grep -v '^#' "$out/large.err" | grep 'CHECK FAILED' | tee -a "$WORK/summary" || true
    tee -a "$WORK/summary" <"$out/large.txt"
}

# large_ratios: msgd/Dovecot per operation, from the best times (above 1:
# msgd is slower), with both results so that they can be compared.
large_ratios() {
    [ -s "$WORK/msgd/large.txt" ] && [ -s "$WORK/dovecot/large.txt" ] || return 0
    report ""
    report "=== large mailbox ($LARGE messages): msgd/Dovecot, best of 3 (below 1: msgd faster)"
    awk '
        FNR == NR { best[$3] = $5; res[$3] = $9; next }
        ($3 in best) {
            r = ($5 > 0) ? sprintf("%.2f", best[$3] / $5) : "n/a"
            printf "large ratio %s msgd %s s dovecot %s s ratio %s results %s %s%s\n", $3, best[$3], $5, r, res[$3], $9, (res[$3] == $9) ? "" : " DIFFER"
        }' "$WORK/msgd/large.txt" "$WORK/dovecot/large.txt" | tee -a "$WORK/summary"
}

# run_server NAME PORT PIDFN ROOTFN: the three measurements against one
# server (PIDFN lists its processes, ROOTFN prints its root process), then
# the large mailbox (--large).
run_server() {
    local name="$1" port="$2" pidfn="$3" rootfn="$4" out
    out="$WORK/$name"
    mkdir -p "$out"
    if [ "$LARGE_ONLY" = 1 ]; then
        run_large "$name" "$port"
        return 0
    fi
    report ""
    report "=== $name: stress workload, $CLIENTS clients, $DURATION s"
    local c0 c1
    c0="$(cpu_of "$($rootfn)")"
    timeout $((DURATION + 120)) "$MSGD" stress --port "$port" --users "$USERS_ARG" \
        --clients "$CLIENTS" --duration "$DURATION" --seed 1 >"$out/stress.txt" 2>"$out/stress.err" || true
    c1="$(cpu_of "$($rootfn)")"
    grep -v '^    [CS]: ' "$out/stress.txt" | tee -a "$WORK/summary"
    echo "$(per_cpu "$out/stress.txt" "$c0" "$c1")" >"$out/stress.percpu"
    report "$name stress: server CPU $(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b - a}') s, $(cat "$out/stress.percpu") commands per server CPU-second"

    report ""
    report "=== $name: session workload (login, select, fetch headers, fetch bodies, store, append, expunge, logout), $SESSION_CLIENTS clients over $SESSION_USERS users, $DURATION s"
    c0="$(cpu_of "$($rootfn)")"
    timeout $((DURATION + 120)) "$MSGD" stress --port "$port" --users "$SESSION_ARG" --workload sessions \
        --clients "$SESSION_CLIENTS" --duration "$DURATION" --seed 2 >"$out/sessions.txt" 2>"$out/sessions.err" || true
    c1="$(cpu_of "$($rootfn)")"
    grep -v '^    [CS]: ' "$out/sessions.txt" | tee -a "$WORK/summary"
    echo "$(per_cpu "$out/sessions.txt" "$c0" "$c1")" >"$out/sessions.percpu"
    report "$name sessions: server CPU $(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b - a}') s, $(cat "$out/sessions.percpu") commands per server CPU-second"

    report ""
    report "=== $name: $IDLE idle connections (LOGIN + SELECT INBOX + IDLE each)"
    local before after first hold=$((IDLE / 20 + 30))
    sleep 1
    # shellcheck disable=SC2046
    first="$(mem_of $($pidfn))"
    # A first round brings the allocator to its steady state (password
    # hashing's buffers, thread pools); the second round is measured.
    timeout $((IDLE / 2 + 600)) "$MSGD" stress --port "$port" --users "$USERS_ARG" --idle-conns "$IDLE" \
        --duration 1 >"$out/idle-warmup.txt" 2>"$out/idle-warmup.err" || true
    sed 's/^/warm-up /' "$out/idle-warmup.txt" | tee -a "$WORK/summary"
    # msgd gives freed memory back at most every 10 s (src/memory.rs).
    sleep 12
    # shellcheck disable=SC2046
    before="$(mem_of $($pidfn))"
    read -r rssw pssw <<<"$first"
    read -r rssb pssb <<<"$before"
    report "$name memory: before the warm-up RSS ${rssw} kB PSS ${pssw} kB; after it (all closed) RSS ${rssb} kB PSS ${pssb} kB"
    timeout $((IDLE / 2 + hold + 600)) "$MSGD" stress --port "$port" --users "$USERS_ARG" --idle-conns "$IDLE" \
        --duration "$hold" >"$out/idle.txt" 2>"$out/idle.err" &
    local sp=$!
    PIDS+=("$sp")
    local i
    # Until all are open (the client holds them `hold` seconds from then)
    # or the client gave up.
    while kill -0 "$sp" 2>/dev/null; do
        grep -q '^idle: .* logged in' "$out/idle.txt" 2>/dev/null && break
        sleep 0.1
    done
    sleep 2
    local pids nproc
    pids="$($pidfn)"
    # shellcheck disable=SC2086
    after="$(mem_of $pids)"
    nproc="$(echo "$pids" | wc -l)"
    kill "$sp" 2>/dev/null || true
    wait "$sp" 2>/dev/null || true
    sleep 12
    local closed
    # shellcheck disable=SC2046
    closed="$(mem_of $($pidfn))"
    cat "$out/idle.txt" | tee -a "$WORK/summary"
    local opened
    opened="$(sed -n 's/^idle: \([0-9]*\) connections logged in.*/\1/p' "$out/idle.txt")"
    opened="${opened:-0}"
    read -r rss0 pss0 <<<"$before"
    read -r rss1 pss1 <<<"$after"
    report "$name memory: with $opened idle connections RSS ${rss1} kB PSS ${pss1} kB ($nproc processes)"
    read -r rss2 pss2 <<<"$closed"
    report "$name memory: 12 s after they closed RSS ${rss2} kB PSS ${pss2} kB"
    report "$name open $IDLE logged-in connections (LOGIN + SELECT + IDLE): $(open_time "$out/idle-warmup.txt") s first round, $(open_time "$out/idle.txt") s second round"
    if [ "$opened" -gt 0 ]; then
        # Steady state: what the measured round added. From the fresh
        # server: an upper bound that includes the allocator's growth.
        report "$name per idle connection: steady state RSS $(( (rss1 - rss0) / opened )) kB, PSS $(( (pss1 - pss0) / opened )) kB; from the fresh server RSS $(( (rss1 - rssw) / opened )) kB, PSS $(( (pss1 - pssw) / opened )) kB"
    fi
    if [ "$LARGE" -gt 0 ]; then
        run_large "$name" "$port"
    fi
}

# ---------------------------------------------------------------- msgd
cfg="$WORK/msgd.toml"
{
    echo "[server]"
    echo "hostname = \"mail.example.test\""
    echo "data_dir = \"$WORK/msgd-data\""
    echo "domain = \"example.test\""
    echo
    echo "[log]"
    echo "level = \"warn\""
    echo
    echo "[limits]"
    echo "max_connections = 20000"
    echo "max_connections_per_ip = 20000"
    for l in lmtp imap imaps pop3 pop3s http; do
        echo
        echo "[listener.$l]"
        echo "bind = [\"127.0.0.1:$(free_port)\"]"
    done
} >"$cfg"
MSGD_PORT="$(sed -n '/^\[listener.imap\]/{n;s/.*:\([0-9]*\)".*/\1/p}' "$cfg")"
MSGD_POP3_PORT="$(sed -n '/^\[listener.pop3\]/{n;s/.*:\([0-9]*\)".*/\1/p}' "$cfg")"
for u in bench1 bench2; do
    n="${u#bench}"
    echo "bench-pw-$n" | "$MSGD" --config "$cfg" --role store user add "$u@example.test" >/dev/null
done
if [ "$POP3" != 0 ]; then
    for u in "${POP3_USERS[@]}"; do
        echo "$u-pw" | "$MSGD" --config "$cfg" --role store user add "$u@example.test" >/dev/null
    done
fi
for u in "${SESSION_NAMES[@]}"; do
    echo "$u-pw" | "$MSGD" --config "$cfg" --role store user add "$u@example.test" >/dev/null
done
if [ "$SCHEME" = ssha512 ]; then
    # The same {SSHA512} hashes for both servers (msgd verifies the
    # schemes other directories hold, for migration).
    python3 - "$WORK/msgd-data/directory.json" <<'PY'
import base64, hashlib, json, os, sys
path = sys.argv[1]
d = json.load(open(path))
for addr, u in d["users"].items():
    local = addr.split("@")[0]
    pw = ("bench-pw-" + local[5:]) if local.startswith("bench") else local + "-pw"
    salt = os.urandom(8)
    u["password"] = "{SSHA512}" + base64.b64encode(hashlib.sha512(pw.encode() + salt).digest() + salt).decode()
json.dump(d, open(path + ".tmp", "w"))
os.replace(path + ".tmp", path)
PY
fi
# MSGD_ENV: extra environment for the server only (e.g.
# MALLOC_MMAP_THRESHOLD_=131072 to see memory without glibc's retention).
# shellcheck disable=SC2086
env ${MSGD_ENV:-} "$MSGD" --config "$cfg" --role store >"$WORK/msgd.out" 2>"$WORK/msgd.err" &
MSGD_PID=$!
PIDS+=("$MSGD_PID")
wait_port "$MSGD_PORT" 30
msgd_pids() { echo "$MSGD_PID"; }

{
    echo "bench-imap: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr)"
    echo "bench-imap: msgd $("$MSGD" --version | awk '{print $2}') ($MSGD), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "bench-imap: ${MSGD_ENV:+MSGD_ENV=\"$MSGD_ENV\" }$0 --duration $DURATION --clients $CLIENTS --idle $IDLE --pop3 $POP3 --session-clients $SESSION_CLIENTS --session-users $SESSION_USERS --scheme $SCHEME$([ "$DV_CACHE" = 1 ] || echo ' --no-dovecot-cache')$([ "$DOVECOT" = 1 ] || echo ' --no-dovecot')$([ "$LARGE" = 0 ] || echo " --large $LARGE")$([ "$LARGE_ONLY" = 0 ] || echo ' --large-only')"
} | tee "$WORK/summary"

run_server msgd "$MSGD_PORT" msgd_pids msgd_pids
run_pop3 msgd "$MSGD_PORT" "$MSGD_POP3_PORT" "$MSGD_PID"
kill "$MSGD_PID" 2>/dev/null || true
wait "$MSGD_PID" 2>/dev/null || true

# ---------------------------------------------------------------- Dovecot
if [ "$DOVECOT" = 1 ]; then
    pkgs=dovecot-imapd
    [ "$POP3" = 0 ] || pkgs="$pkgs dovecot-pop3d"
    # shellcheck disable=SC2086
    if ! command -v dovecot >/dev/null 2>&1 || ! dpkg -s $pkgs >/dev/null 2>&1; then
        echo "bench-imap: installing $pkgs" >&2
        export DEBIAN_FRONTEND=noninteractive
        # shellcheck disable=SC2086
        apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
        # The package's own instance is not needed: ours is private.
        systemctl stop dovecot 2>/dev/null || service dovecot stop 2>/dev/null || true
    fi
    d="$WORK/dovecot"
    mkdir -p "$d/run" "$d/state" "$d/home"
    chmod 755 "$WORK" "$d"
    DV_PORT="$(free_port)"
    DV_POP3_PORT="$(free_port)"
    mail_user="$(id -u nobody):$(id -g nobody)"
    # The same Argon2id hashes msgd verifies (same cost per LOGIN).
    for u in bench1 bench2 $([ "$POP3" = 0 ] || echo "${POP3_USERS[@]}") "${SESSION_NAMES[@]}"; do
        hash="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["users"][sys.argv[2]]["password"])' \
            "$WORK/msgd-data/directory.json" "$u@example.test" 2>/dev/null || true)"
        case "$hash" in
            '$argon2id$'*) hash="{ARGON2ID}$hash" ;;
            '{SSHA512}'*) ;;
            *)
                case "$u" in
                    bench*) hash="{PLAIN}bench-pw-${u#bench}" ;;
                    *) hash="{PLAIN}$u-pw" ;;
                esac
                echo "bench-imap: Dovecot uses a PLAIN password for $u" >&2 ;;
        esac
        echo "$u@example.test:$hash:${mail_user}::$d/home/$u" >>"$d/passwd"
    done
    chown -R "$mail_user" "$d/home"
    # passwd lines as a file dict for the cached passdb (keys under shared/).
    python3 - "$d/passwd" "$d/auth.dict" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        f = line.rstrip("\n").split(":")
        if len(f) < 6:
            continue
        out.write("shared/passdb/%s\n%s\n" % (f[0], json.dumps({"password": f[1]})))
PY
    cat >"$d/dict-auth.conf" <<EOF
uri = file:$d/auth.dict
password_key = passdb/%u
value_format = json
EOF
    cat >"$d/dovecot.conf" <<EOF
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap$([ "$POP3" = 0 ] || echo ' pop3')
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 100
# Dovecot's auth cache, as msgd's credential cache is on by default (after
# a verified login it remembers a fast hash of the password); --no-dovecot-cache
# turns it off.
auth_cache_size = $([ "$DV_CACHE" = 1 ] && echo 10M || echo 0)
auth_cache_ttl = 300 s
# strong hashes verified by the auth workers, on every core (Dovecot's
# advice for Argon2/bcrypt; the auth master alone would use one)
auth_cache_verify_password_with_worker = yes
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:~/Maildir
# the same durability msgd gives: fsync before OK
mail_fsync = always
default_process_limit = $((IDLE + 200))
# imap and pop3 have their own built-in process_limit (1024), which
# default_process_limit does not raise
service imap {
  process_limit = $((IDLE + 200))
}
service pop3 {
  process_limit = $((IDLE + 200))
}
default_client_limit = $((IDLE * 2 + 400))
service anvil {
  client_limit = $((IDLE * 4 + 1000))
}
# every login service (imap, imap-urlauth, pop3) may hold its process limit
# of auth connections
service auth {
  client_limit = $((IDLE * 3 + 1000))
}
# every process keeps a connection to the stats writer
service stats {
  client_limit = $((IDLE * 3 + 1000))
}
$(if [ "$DV_CACHE" = 1 ]; then cat <<DICT
# The same users through a dict passdb: passwd-file lookups never enter
# Dovecot's auth cache (that driver sets no cache key), dict lookups do.
passdb {
  driver = dict
  args = $d/dict-auth.conf
}
DICT
else cat <<PWF
passdb {
  driver = passwd-file
  args = username_format=%u $d/passwd
}
PWF
fi)
protocol imap {
  mail_max_userip_connections = $((IDLE + 100))
}
userdb {
  driver = passwd-file
  args = username_format=%u $d/passwd
}
protocol pop3 {
  mail_max_userip_connections = $((CLIENTS + 10))
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $([ "$POP3" = 0 ] && echo 0 || echo "$DV_POP3_PORT")
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DV_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
namespace inbox {
  inbox = yes
}
EOF
    dovecot -c "$d/dovecot.conf"
    wait_port "$DV_PORT" 30
    dv_pids() { tree_of "$(cat "$d/run/master.pid")"; }
    report ""
    report "bench-imap: Dovecot $(dovecot --version), maildir, mail_fsync=always, one imap process per connection, the same $SCHEME password hashes as msgd, auth cache $([ "$DV_CACHE" = 1 ] && echo on || echo off)"
    dv_root() { cat "$d/run/master.pid"; }
    run_server dovecot "$DV_PORT" dv_pids dv_root
    run_pop3 dovecot "$DV_PORT" "$DV_POP3_PORT" "$(cat "$d/run/master.pid")"
    kill "$(cat "$d/run/master.pid")" 2>/dev/null || true
fi

# ---------------------------------------------------------------- side by side
ratio() { # a b: a/b with two decimals, "n/a" when either is 0
    awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else print "n/a" }'
}
if [ "$DOVECOT" = 1 ]; then
    report ""
    report "=== msgd / Dovecot"
    for ph in stress sessions; do
        if [ -s "$WORK/msgd/$ph.txt" ] && [ -s "$WORK/dovecot/$ph.txt" ]; then
            report "$ph workload: commands/s msgd $(cmds_per_s "$WORK/msgd/$ph.txt") Dovecot $(cmds_per_s "$WORK/dovecot/$ph.txt") ratio $(ratio "$(cmds_per_s "$WORK/msgd/$ph.txt")" "$(cmds_per_s "$WORK/dovecot/$ph.txt")"); per server CPU-second msgd $(cat "$WORK/msgd/$ph.percpu") Dovecot $(cat "$WORK/dovecot/$ph.percpu") ratio $(ratio "$(cat "$WORK/msgd/$ph.percpu")" "$(cat "$WORK/dovecot/$ph.percpu")")"
        fi
    done
    for round in idle-warmup idle; do
        m="$(open_time "$WORK/msgd/$round.txt")"
        v="$(open_time "$WORK/dovecot/$round.txt")"
        report "open $IDLE logged-in IMAP connections ($([ "$round" = idle ] && echo second || echo first) round): msgd $m s, Dovecot $v s; Dovecot's time / msgd's $(ratio "$v" "$m") (above 1: msgd faster)"
    done
    if [ "$POP3" != 0 ] && [ -f "$WORK/msgd/pop3.json" ] && [ -f "$WORK/dovecot/pop3.json" ]; then
        python3 "$root/scripts/bench_pop3.py" --compare "$WORK/msgd/pop3.json" "$WORK/dovecot/pop3.json" | tee -a "$WORK/summary"
    fi
fi

if [ "$LARGE" -gt 0 ]; then
    large_ratios
fi

if [ -n "$OUT" ]; then
    cp "$WORK/summary" "$OUT"
    echo "bench-imap: summary written to $OUT"
fi
