#!/usr/bin/env python3
"""POP3 RETR throughput of one server (called by scripts/bench-imap.sh for
msgd and for Dovecot, side by side).

  fill:  IMAP APPEND the same MESSAGES messages (seeded sizes and bodies)
         to the INBOX of every user, unless it already holds them;
  run:   one client process per user (POP3 servers may lock a maildrop per
         user), each looping for DURATION seconds: connect, USER/PASS, STAT,
         RETR 1..MESSAGES, QUIT; every response is checked (size of the body
         against the octets LIST gave, terminator, no -ERR);
  print: messages/s, MB/s (message octets), sessions, errors, and the
         server's messages per CPU-second (utime + stime of the process tree
         under --server-pid, exited children included through the parent's
         cutime/cstime); with --json, the same as JSON for --compare.

  bench_pop3.py --name msgd --imap-port P --pop3-port Q --users u1:pw1,u2:pw2 \
      [--messages 100] [--duration 20] [--server-pid PID] [--json FILE]
  bench_pop3.py --compare msgd.json dovecot.json

The client reads raw sockets with one buffer per session (not poplib's
line-at-a-time reads) so that on a shared machine the client costs less CPU
than the servers it measures.
"""

import argparse
import imaplib
import json
import multiprocessing
import os
import random
import socket
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def message(i: int, user: str) -> bytes:
    """Message i of a user: sizes mostly small with a long tail (70% under
    8 KiB, 25% up to 64 KiB, 5% up to 1 MiB), some lines starting with '.'
    so dot-stuffing is exercised. The same for every server."""
    rnd = random.Random(i)
    r = rnd.random()
    if r < 0.70:
        size = rnd.randrange(1024, 8 * 1024)
    elif r < 0.95:
        size = rnd.randrange(8 * 1024, 64 * 1024)
    else:
        size = rnd.randrange(64 * 1024, 1024 * 1024)
    head = (
        f"From: Bench <bench@remote.example>\r\n"
        f"To: <{user}>\r\n"
        f"Subject: pop3 bench message {i}\r\n"
        f"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\n"
        f"Message-ID: <pop3-bench-{i}@remote.example>\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    body = bytearray()
    n = 0
    while len(head) + len(body) < size:
        if n % 17 == 0:
            body += b".a line that starts with a dot\r\n"
        else:
            body += b"%06d the quick brown fox jumps over the lazy dog 0123456789\r\n" % n
        n += 1
    return head + bytes(body)


def parse_users(s: str) -> list[tuple[str, str]]:
    out = []
    for item in s.split(","):
        user, _, pw = item.partition(":")
        out.append((user, pw))
    return out


def fill(port: int, users, messages: int) -> None:
    for user, pw in users:
        m = imaplib.IMAP4("127.0.0.1", port, timeout=120)
        try:
            m.login(user, pw)
            typ, data = m.select("INBOX")
            have = int(data[0])
            if have == messages:
                continue
            if have != 0:
                sys.exit(f"bench_pop3: {user} INBOX holds {have} messages, want 0 or {messages}")
            for i in range(messages):
                typ, data = m.append("INBOX", None, None, message(i, user))
                if typ != "OK":
                    sys.exit(f"bench_pop3: APPEND for {user} failed: {data}")
        finally:
            try:
                m.logout()
            except Exception:
                pass


class Pop3:
    """A minimal POP3 client over one socket and one receive buffer."""

    def __init__(self, port: int):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = bytearray()
        self.line()  # greeting

    def _recv(self) -> None:
        chunk = self.s.recv(1 << 18)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                if line.startswith(b"-ERR"):
                    raise RuntimeError(line.decode(errors="replace"))
                return line
            self._recv()

    def cmd(self, c: str) -> bytes:
        self.s.sendall(c.encode() + b"\r\n")
        return self.line()

    def multiline(self) -> bytes:
        """The body of a multi-line reply (still dot-stuffed), its status
        line already read."""
        start = 0
        while True:
            # ".\r\n" right at the start (empty body) or after a CRLF.
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return b""
            i = self.buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                body = bytes(self.buf[: i + 2])
                del self.buf[: i + 5]
                return body
            start = max(0, len(self.buf) - 4)
            self._recv()

    def close(self) -> None:
        try:
            self.s.close()
        except OSError:
            pass


def unstuffed_len(body: bytes) -> int:
    """Octets of the message a dot-stuffed body stands for."""
    return len(body) - body.count(b"\r\n..") - (1 if body.startswith(b"..") else 0)


def client(args) -> dict:
    port, user, pw, messages, deadline = args
    msgs = octets = sessions = errors = 0
    first_error = ""
    while time.monotonic() < deadline:
        p = None
        try:
            p = Pop3(port)
            p.cmd(f"USER {user}")
            p.cmd(f"PASS {pw}")
            stat = p.cmd("STAT").split()
            if int(stat[1]) != messages:
                raise RuntimeError(f"STAT says {stat[1]} messages, want {messages}")
            p.cmd("LIST")
            sizes = [int(l.split()[1]) for l in p.multiline().split(b"\r\n") if l]
            for n in range(1, messages + 1):
                ok = p.cmd(f"RETR {n}")
                body = p.multiline()
                got = unstuffed_len(body)
                if got != sizes[n - 1]:
                    raise RuntimeError(f"RETR {n}: {got} octets, LIST said {sizes[n - 1]} ({ok!r})")
                msgs += 1
                octets += got
                if time.monotonic() >= deadline:
                    break
            p.cmd("QUIT")
            sessions += 1
        except Exception as e:  # counted and reported, the loop goes on
            errors += 1
            if not first_error:
                first_error = f"{user}: {e}"
            time.sleep(0.05)
        finally:
            if p is not None:
                p.close()
    return {"messages": msgs, "octets": octets, "sessions": sessions, "errors": errors, "first_error": first_error}


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system, own and reaped children's) of `root` and
    its descendants."""
    parent, times = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2 :].split()
        parent[int(d)] = int(fields[1])
        times[int(d)] = sum(int(x) for x in fields[11:15])
    total = 0
    for pid, t in times.items():
        p, hops = pid, 0
        while p and hops < 64:
            if p == root:
                total += t
                break
            p, hops = parent.get(p, 0), hops + 1
    return total / CLK_TCK


def run(a) -> dict:
    users = parse_users(a.users)
    fill(a.imap_port, users, a.messages)
    cpu0 = tree_cpu(a.server_pid) if a.server_pid else None
    started = time.monotonic()
    deadline = started + a.duration
    with multiprocessing.Pool(len(users)) as pool:
        results = pool.map(client, [(a.pop3_port, u, pw, a.messages, deadline) for u, pw in users])
    elapsed = time.monotonic() - started
    cpu = tree_cpu(a.server_pid) - cpu0 if a.server_pid else None
    r = {k: sum(x[k] for x in results) for k in ("messages", "octets", "sessions", "errors")}
    r.update(
        name=a.name,
        clients=len(users),
        seconds=elapsed,
        messages_per_s=r["messages"] / elapsed,
        mb_per_s=r["octets"] / elapsed / 1e6,
        server_cpu_s=cpu,
        messages_per_cpu_s=(r["messages"] / cpu) if cpu else None,
        first_error=next((x["first_error"] for x in results if x["first_error"]), ""),
    )
    line = (
        f"pop3 {a.name}: {r['messages_per_s']:.0f} messages/s, {r['mb_per_s']:.1f} MB/s "
        f"({r['messages']} messages in {r['sessions']} sessions of {a.messages}, {len(users)} clients, "
        f"{elapsed:.1f} s, {r['errors']} errors)"
    )
    if cpu:
        line += f"; server CPU {cpu:.1f} s, {r['messages_per_cpu_s']:.0f} messages per CPU-second"
    print(line)
    if r["first_error"]:
        print(f"pop3 {a.name}: first error: {r['first_error']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f)
    return r


def compare(a_path: str, b_path: str) -> None:
    a, b = (json.load(open(p)) for p in (a_path, b_path))

    def ratio(k):
        return f"{a[k] / b[k]:.2f}x" if a.get(k) and b.get(k) else "n/a"

    print(
        f"pop3 {a['name']} / {b['name']}: messages/s {ratio('messages_per_s')}, MB/s {ratio('mb_per_s')}, "
        f"messages per CPU-second {ratio('messages_per_cpu_s')} "
        f"(errors {a['errors']} / {b['errors']})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="server")
    ap.add_argument("--imap-port", type=int)
    ap.add_argument("--pop3-port", type=int)
    ap.add_argument("--users", help="user:password,... (one client process per user)")
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--compare", nargs=2, metavar=("A_JSON", "B_JSON"))
    a = ap.parse_args()
    if a.compare:
        compare(*a.compare)
        return
    if not (a.imap_port and a.pop3_port and a.users):
        ap.error("--imap-port, --pop3-port and --users are needed")
    r = run(a)
    sys.exit(1 if r["errors"] or not r["messages"] else 0)


if __name__ == "__main__":
    main()
