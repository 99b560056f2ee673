#!/usr/bin/env python3
"""Large-mailbox IMAP benchmark (issue 12): one server, one mailbox of N messages.

    scripts/bench_imap_large.py --name msgd --host 127.0.0.1 --port 1143 \
        --user bench1@example.test --password bench-pw-1 [--messages 100000] \
        [--mailbox large] [--seed 12] [--batch 500] [--reuse] [--rounds 3]

Fills a fresh mailbox (deleted and created again; with --reuse an existing
mailbox that already holds exactly N messages is kept) with N messages by
MULTIAPPEND (RFC 3502) in batches, then times each operation `--rounds`
times and prints one line per operation:

    large <server> <op> best <s> median <s> result <count>

The messages come from a fixed seed, so two servers get the same ones:
varied From/To/Subject (with Re:/Fwd: prefixes), Message-ID / In-Reply-To /
References chains (real threads for THREAD), Date and internal date spread
over two years, about 30% without \\Seen, bodies of a few hundred bytes to a
few KiB drawn from a vocabulary, and the word `SEARCH_WORD` in about 1% of
the bodies (and nowhere else, not even as part of another word).

The answers are checked: EXISTS = N, FETCH count = N, SEARCH UNSEEN and
SEARCH TEXT equal to the counts known from generation, SORT returns N
numbers; THREAD prints the number of threads (top-level trees) so the
results of two servers can be compared. A failed check exits 1.

Only the Python standard library (imaplib); plain IMAP, meant for loopback.
The timed commands are read with a lean line reader on imaplib's socket so
that Python's parsing of 100,000 response lines does not dominate.
"""

from __future__ import annotations

import argparse
import imaplib
import random
import re
import socket
import statistics
import sys
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

SEARCH_WORD = "quokkaberry"

FIRST = (
    "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert "
    "sybil trent victor walter yvonne zoe adam bella chris diana emil fiona"
).split()
LAST = "smith jones brown taylor wilson davies evans thomas roberts walker wright green hall wood".split()
DOMAINS = "example.com example.org example.net corp.example lists.example".split()
TOPICS = (
    "quarterly report,meeting notes,server migration,budget review,holiday plans,release schedule,"
    "build failure,design document,customer feedback,contract renewal,security audit,team lunch,"
    "performance numbers,hiring update,office move,backup policy,travel booking,invoice 4411,"
    "conference talk,database upgrade,code review,mailing list rules,new laptop,training session"
).split(",")
# Body words: none contains SEARCH_WORD, none is part of it.
VOCAB = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but "
    "have an they you were her she there been one all we their has would when if so no will more can "
    "said who up about into than them only other time new some could these two may first then do any "
    "like my now over such our man me even most made after also did many before must through back "
    "years where much your way well down should because each just those people how too little state "
    "good very make world still own see men work long get here between both life being under never "
    "day same another know while last might us great old year off come since against go came right "
    "used take three server mailbox message folder index thread search flag cache disk network latency "
    "throughput release build test deploy rollback config schedule budget invoice customer contract "
    "report meeting agenda minutes review design draft proposal estimate deadline milestone ticket"
).split()


def generate(n: int, seed: int):
    """Yield (flags, internal_date_str, message_bytes) for n messages; also
    returns the expected UNSEEN and TEXT counts through `expected`."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    span = 2 * 365 * 24 * 3600
    ids: list[str] = []
    refs: list[list[str]] = []
    subjects: list[str] = []
    expected = {"unseen": 0, "text": 0}
    out = []
    for i in range(n):
        fn, ln, dom = rng.choice(FIRST), rng.choice(LAST), rng.choice(DOMAINS)
        frm = f"{fn.title()} {ln.title()} <{fn}.{ln}@{dom}>"
        tn = rng.choice(FIRST)
        to = f"{tn}@{rng.choice(DOMAINS)}"
        mid = f"<{i}.{seed}.{rng.randrange(1 << 30):x}@bench.example>"
        headers_extra = ""
        r = rng.random()
        if i > 0 and r < 0.45:
            # A reply (or forward) to a recent message: threads of many sizes.
            j = rng.randrange(max(0, i - 3000), i)
            parent_refs = (refs[j] + [ids[j]])[-10:]
            base = subjects[j]
            subj = ("Fwd: " if rng.random() < 0.1 else "Re: ") + base
            headers_extra = f"In-Reply-To: {ids[j]}\r\nReferences: {' '.join(parent_refs)}\r\n"
            my_refs = parent_refs
        else:
            base = f"{rng.choice(TOPICS)} {rng.randrange(1000)}".capitalize()
            subj = base
            my_refs = []
        ids.append(mid)
        refs.append(my_refs)
        subjects.append(base)
        when = start + timedelta(seconds=rng.randrange(span))
        nwords = rng.randrange(60, 700)
        words = [rng.choice(VOCAB) for _ in range(nwords)]
        if rng.random() < 0.01:
            words.insert(rng.randrange(len(words) + 1), SEARCH_WORD)
            expected["text"] += 1
        lines, line = [], []
        for w in words:
            line.append(w)
            if len(line) >= 12:
                lines.append(" ".join(line))
                line = []
        if line:
            lines.append(" ".join(line))
        body = "\r\n".join(lines) + "\r\n"
        msg = (
            f"From: {frm}\r\nTo: {to}\r\nSubject: {subj}\r\nDate: {format_datetime(when)}\r\n"
            f"Message-ID: {mid}\r\n{headers_extra}MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}"
        ).encode()
        seen = rng.random() < 0.7
        if not seen:
            expected["unseen"] += 1
        idate = when.strftime("%d-%b-%Y %H:%M:%S +0000")
        out.append(("(\\Seen)" if seen else "()", idate, msg))
    return out, expected


def connect(a) -> imaplib.IMAP4:
    m = imaplib.IMAP4(a.host, a.port, timeout=600)
    m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    m.login(a.user, a.password)
    return m


def raw(m: imaplib.IMAP4, command: str) -> tuple[list[bytes], bytes]:
    """Send one command; return (untagged lines, tagged line). No literals
    are expected in the answers read this way."""
    tag = m._new_tag()
    m.send(tag + b" " + command.encode() + b"\r\n")
    lines = []
    while True:
        line = m.readline()
        if not line:
            raise RuntimeError(f"connection closed during {command}")
        if line.startswith(tag + b" "):
            if not line[len(tag) + 1 :].upper().startswith(b"OK"):
                raise RuntimeError(f"{command}: {line!r}")
            return lines, line
        if line.startswith(b"+"):
            raise RuntimeError(f"{command}: unexpected continuation {line!r}")
        lines.append(line)


def multiappend(m: imaplib.IMAP4, mailbox: str, batch) -> None:
    """One APPEND with several messages (RFC 3502). With LITERAL+ (RFC
    7888) the whole command goes out at once; otherwise each literal waits
    for its continuation, and a message goes out together with the next
    literal's announcement (with Nagle's algorithm off: a small write
    after a large one would otherwise wait for the delayed ACK)."""
    tag = m._new_tag()
    plus = "LITERAL+" in m.capabilities
    parts = []
    for k, (flags, idate, msg) in enumerate(batch):
        parts.append((b"APPEND " + quote(mailbox).encode() if k == 0 else b"")
                     + f' {flags} "{idate}" {{{len(msg)}{"+" if plus else ""}}}\r\n'.encode())
        parts.append(msg)
    parts.append(b"\r\n")
    if plus:
        m.send(tag + b" " + b"".join(parts))
    else:
        pending = tag + b" "
        for k in range(0, len(parts) - 1, 2):
            m.send(pending + parts[k])
            line = m.readline()
            if not line.startswith(b"+"):
                raise RuntimeError(f"APPEND: no continuation: {line!r}")
            pending = parts[k + 1]
        m.send(pending + parts[-1])
    while True:
        line = m.readline()
        if not line:
            raise RuntimeError("connection closed during APPEND")
        if line.startswith(tag + b" "):
            if not line[len(tag) + 1 :].upper().startswith(b"OK"):
                raise RuntimeError(f"APPEND: {line!r}")
            return


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exists_of(lines: list[bytes]) -> int:
    for line in lines:
        mm = re.match(rb"\* (\d+) EXISTS", line)
        if mm:
            return int(mm.group(1))
    return -1


def fill(a, msgs) -> None:
    m = connect(a)
    try:
        if a.reuse:
            typ, data = m.status(quote(a.mailbox), "(MESSAGES)")
            if typ == "OK":
                mm = re.search(rb"MESSAGES (\d+)", data[0] or b"")
                if mm and int(mm.group(1)) == len(msgs):
                    print(f"# {a.name}: reusing {a.mailbox} with {len(msgs)} messages", file=sys.stderr)
                    return
        m.delete(quote(a.mailbox))  # may fail: it did not exist
        typ, data = m.create(quote(a.mailbox))
        if typ != "OK":
            raise RuntimeError(f"CREATE {a.mailbox}: {data}")
        t0 = time.monotonic()
        for k in range(0, len(msgs), a.batch):
            multiappend(m, a.mailbox, msgs[k : k + a.batch])
        dt = time.monotonic() - t0
        print(f"# {a.name}: appended {len(msgs)} messages in {dt:.1f} s", file=sys.stderr)
    finally:
        m.logout()


def timed(rounds: int, fn):
    times, result = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = fn()
        times.append(time.perf_counter() - t0)
        if result is not None and r != result:
            raise RuntimeError(f"result changed between rounds: {result} then {r}")
        result = r
    return min(times), statistics.median(times), result


def numbers(lines: list[bytes], keyword: bytes) -> int:
    count = 0
    for line in lines:
        if line.upper().startswith(b"* " + keyword):
            count += len(line.split()) - 2
    return count


def threads(lines: list[bytes]) -> int:
    """Number of top-level trees in a THREAD answer."""
    total = 0
    for line in lines:
        if not line.upper().startswith(b"* THREAD"):
            continue
        depth = 0
        for c in line[len(b"* THREAD") :]:
            if c == ord("("):
                if depth == 0:
                    total += 1
                depth += 1
            elif c == ord(")"):
                depth -= 1
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="server", help="label printed on every line")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--mailbox", default="large")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--batch", type=int, default=500, help="messages per MULTIAPPEND")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reuse", action="store_true", help="keep the mailbox if it holds N messages")
    a = p.parse_args()
    n = a.messages

    msgs, expected = generate(n, a.seed)
    fill(a, msgs)
    del msgs

    failures = []

    def check(op: str, got: int, want: int) -> None:
        if got != want:
            failures.append(f"{op}: got {got}, expected {want}")

    def report(op: str, best: float, median: float, result) -> None:
        print(f"large {a.name} {op} best {best:.4f} median {median:.4f} result {result}", flush=True)

    # SELECT: a fresh connection each round, only the SELECT is timed.
    sel_times, sel_exists = [], -1
    for _ in range(a.rounds):
        m = connect(a)
        t0 = time.perf_counter()
        lines, _ = raw(m, f"SELECT {quote(a.mailbox)}")
        sel_times.append(time.perf_counter() - t0)
        sel_exists = exists_of(lines)
        m.logout()
    check("SELECT EXISTS", sel_exists, n)
    report("select", min(sel_times), statistics.median(sel_times), sel_exists)

    m = connect(a)
    raw(m, f"SELECT {quote(a.mailbox)}")
    ops = [
        ("uid_fetch_flags", "UID FETCH 1:* (FLAGS)", lambda ls: sum(1 for x in ls if b" FETCH " in x), n),
        ("search_unseen", "SEARCH UNSEEN", lambda ls: numbers(ls, b"SEARCH"), expected["unseen"]),
        ("search_text", f"SEARCH TEXT {SEARCH_WORD}", lambda ls: numbers(ls, b"SEARCH"), expected["text"]),
        ("sort_date", "SORT (DATE) UTF-8 ALL", lambda ls: numbers(ls, b"SORT"), n),
        ("thread_references", "THREAD REFERENCES UTF-8 ALL", threads, None),
    ]
    for op, command, count, want in ops:
        best, median, result = timed(a.rounds, lambda: count(raw(m, command)[0]))
        if want is not None:
            check(op, result, want)
        report(op, best, median, result)
    m.logout()

    for f in failures:
        print(f"large {a.name} CHECK FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
