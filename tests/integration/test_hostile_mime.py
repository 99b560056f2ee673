"""Hostile stored messages and hostile IMAP commands against the real msgd
binary (issue 9). Each hostile message is delivered over SMTP like mail
from a stranger, then read over IMAP with a raw socket. Every test asserts
the server's answer, that another client still logs in and reads its INBOX,
and that the server's RSS stays under RSS_BOUND.

The caps proved here (see src/imap/mime.rs and src/imap/command.rs):
- MIME nesting deeper than 64 levels: the message is one opaque part;
- at most the last 64 ids of a References header are used by THREAD;
- search keys nested deeper than 64: BAD;
- sequence sets are merged before they are expanded;
- at most 64 distinct body sections per FETCH, repeated items sent once.
"""

from __future__ import annotations

import base64
import re
import time

from conftest import DOMAIN, LineClient, imap_raw_login

VICTIM = f"victim@{DOMAIN}"
BYSTANDER = f"bystander@{DOMAIN}"
BULK = f"bulk@{DOMAIN}"
USERS = [VICTIM, BYSTANDER, BULK]

# A debug build serving this module sits at about 35 MiB; parsing a 4 MB
# hostile message or answering a FETCH over 2,000 messages must not take it
# beyond 128 MiB.
RSS_BOUND_KIB = 128 * 1024
DEPTH = 50_000


def rss_kib(server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_rss_bounded(server) -> None:
    rss = rss_kib(server)
    print(f"msgd RSS {rss} KiB")
    assert rss < RSS_BOUND_KIB, f"msgd RSS {rss} KiB exceeds {RSS_BOUND_KIB} KiB"


def crlf(s: str) -> bytes:
    return s.replace("\n", "\r\n").encode()


def header(subject: str, to: str = VICTIM) -> str:
    return f"From: stranger@remote.example\nTo: {to}\nSubject: {subject}\nMessage-ID: <{subject}@remote.example>\n"


def nested_rfc822(depth: int, subject: str) -> bytes:
    m = header(subject)
    m += "Content-Type: message/rfc822\n\nSubject: inner\n" * depth
    return crlf(m + "\nneedle-rfc822\n")


def nested_multipart(depth: int, subject: str) -> bytes:
    m = header(subject)
    m += "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth))
    m += "Content-Type: text/plain\n\nneedle-multipart\n"
    m += "".join(f"--b{i}--\n" for i in reversed(range(depth)))
    return crlf(m)


def encoded_nested(depth: int, subject: str) -> bytes:
    inner = nested_rfc822(depth, "inner")
    b64 = base64.encodebytes(inner).decode()
    m = header(subject)
    m += "Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: message/rfc822\n"
    m += "Content-Transfer-Encoding: base64\n\n" + b64 + "--zz--\n"
    return crlf(m)


def huge_references(count: int, subject: str) -> bytes:
    refs = "".join(f"\n <r{i}@remote.example>" for i in range(count))
    return crlf(header(subject) + f"References:{refs}\n\nneedle-refs\n")


def reference_loop(subject: str) -> bytes:
    me = f"<{subject}@remote.example>"
    # Names itself as the oldest ancestor, then big-refs as its parent:
    # the self-link is refused, the parent link kept.
    return crlf(header(subject) + f"References: {me} <big-refs@remote.example>\n\nloop\n")


def bystander_still_served(server) -> None:
    """Another user logs in and reads its INBOX."""
    c = imap_raw_login(server, BYSTANDER)
    try:
        tagged, others = c.imap_cmd("b1", "SELECT INBOX")
        assert tagged.startswith(b"b1 OK"), tagged
        tagged, others = c.imap_cmd("b2", "FETCH 1:* (FLAGS ENVELOPE)")
        assert tagged.startswith(b"b2 OK"), tagged
        assert len(others) == 1, others
    finally:
        c.close()


def test_setup_bystander_mail(server):
    server.send(BYSTANDER, crlf(header("hello", BYSTANDER) + "\nordinary mail\n"))
    server.wait_count(BYSTANDER, 1)


def test_deeply_nested_messages_are_accepted_and_served(server):
    messages = [
        nested_rfc822(DEPTH, "deep-rfc822"),
        nested_multipart(DEPTH, "deep-multipart"),
        encoded_nested(20_000, "deep-encoded"),
        huge_references(50_000, "big-refs"),
        reference_loop("ref-loop"),
    ]
    for m in messages:
        server.send(VICTIM, m)
    server.wait_count(VICTIM, len(messages))
    c = imap_raw_login(server, VICTIM)
    try:
        tagged, _ = c.imap_cmd("s", "SELECT INBOX")
        assert tagged.startswith(b"s OK"), tagged
        tagged, others = c.imap_cmd(
            "f", "FETCH 1:* (ENVELOPE BODY BODYSTRUCTURE BODY.PEEK[1.1.1] BINARY.PEEK[1] BINARY.SIZE[1])"
        )
        assert tagged.startswith(b"f OK"), tagged
        assert len(others) == len(messages), [o[:80] for o in others]
        # The three deep ones are each one opaque part; the others are text.
        opaque = [o for o in others if b'BODYSTRUCTURE ("APPLICATION" "OCTET-STREAM"' in o]
        assert len(opaque) == 3, [o[:200] for o in others]
        assert b'"deep-rfc822"' in others[0]
        # BODY[1] of an opaque message is its whole body.
        tagged, others = c.imap_cmd("g", "FETCH 2 (BODY.PEEK[1]<0.40>)")
        assert tagged.startswith(b"g OK"), tagged
        assert b"Content-Type: multipart/mixed" in others[0], others[0][:200]
        deep_path = ".".join(["1"] * 2000)
        tagged, _ = c.imap_cmd("p", f"FETCH 1:3 (BODY.PEEK[{deep_path}] BINARY.PEEK[{deep_path}])")
        assert tagged.startswith(b"p OK"), tagged

        tagged, others = c.imap_cmd("t1", "SEARCH TEXT needle-multipart")
        assert tagged.startswith(b"t1 OK"), tagged
        assert others == [b"* SEARCH 2\r\n"], others
        tagged, others = c.imap_cmd("t2", "SEARCH BODY needle-rfc822")
        assert tagged.startswith(b"t2 OK") and others == [b"* SEARCH 1\r\n"], (tagged, others)
        tagged, others = c.imap_cmd("o", "SORT (SUBJECT REVERSE DATE) UTF-8 ALL")
        assert tagged.startswith(b"o OK") and others[0].startswith(b"* SORT "), (tagged, others)
        tagged, others = c.imap_cmd("r", "THREAD REFERENCES UTF-8 ALL")
        assert tagged.startswith(b"r OK"), tagged
        # The loop message names big-refs: both end up in one thread.
        assert re.search(rb"\(4 5\)", others[0]), others
        tagged, others = c.imap_cmd("q", "THREAD ORDEREDSUBJECT UTF-8 ALL")
        assert tagged.startswith(b"q OK"), tagged
        tagged, _ = c.imap_cmd("n", "NOOP")
        assert tagged.startswith(b"n OK"), tagged
    finally:
        c.close()
    # Again, now from the summary cache.
    c = imap_raw_login(server, VICTIM)
    try:
        c.imap_cmd("s", "SELECT INBOX")
        tagged, others = c.imap_cmd("f", "FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
        assert tagged.startswith(b"f OK") and len(others) == 5, tagged
    finally:
        c.close()
    assert server.running
    bystander_still_served(server)
    assert_rss_bounded(server)


def test_deeply_nested_search_keys_are_bad_and_the_session_continues(server):
    c = imap_raw_login(server, VICTIM)
    try:
        c.imap_cmd("s", "SELECT INBOX")
        n = 1500
        for tag, keys in [
            ("a", "NOT " * n + "ALL"),
            ("b", "(" * n + "ALL" + ")" * n),
            ("c", "OR " * n + " ".join(["ALL"] * (n + 1))),
        ]:
            tagged, _ = c.imap_cmd(tag, f"SEARCH {keys}")
            assert tagged.startswith(f"{tag} BAD".encode()), tagged
        tagged, others = c.imap_cmd("d", "SEARCH " + "NOT NOT " * 32 + "ALL")
        assert tagged.startswith(b"d OK") and others[0].startswith(b"* SEARCH 1 2 3 4 5"), others
        tagged, _ = c.imap_cmd("l", 'LIST "" "' + "*%" * 1500 + 'x"')
        assert tagged.startswith(b"l OK"), tagged
    finally:
        c.close()
    bystander_still_served(server)
    assert_rss_bounded(server)


def append_many(server, address: str, count: int) -> None:
    """`count` small messages by pipelined APPENDs with LITERAL+ on one
    connection."""
    c = imap_raw_login(server, address)
    try:
        batch = 200
        for start in range(0, count, batch):
            n = min(batch, count - start)
            out = bytearray()
            for i in range(start, start + n):
                msg = crlf(header(f"bulk-{i}", address) + f"\nmessage {i}\n")
                out += f"A{i} APPEND INBOX {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n"
            c.send(bytes(out))
            for i in range(start, start + n):
                tagged, _ = c.imap_until_tagged(f"A{i}")
                assert tagged.startswith(f"A{i} OK".encode()), tagged
    finally:
        c.close()


def test_huge_sequence_sets_cost_the_mailbox_once(server):
    count = 2000
    append_many(server, BULK, count)
    c = imap_raw_login(server, BULK)
    try:
        tagged, _ = c.imap_cmd("s", "SELECT INBOX")
        assert tagged.startswith(b"s OK"), tagged
        before = rss_kib(server)
        many = ",".join(["1:*"] * 2000)
        tagged, others = c.imap_cmd("f", f"FETCH {many} (FLAGS)")
        assert tagged.startswith(b"f OK"), tagged
        seqs = [int(o.split()[1]) for o in others]
        assert seqs == list(range(1, count + 1))
        tagged, others = c.imap_cmd("u", f"UID FETCH 4294967295:1,{','.join(['1:*'] * 1900)} (UID)")
        assert tagged.startswith(b"u OK") and len(others) == count, tagged
        ones = ",".join(["1"] * 4000)
        tagged, others = c.imap_cmd("t", f"STORE {ones} +FLAGS (\\Seen)")
        assert tagged.startswith(b"t OK") and len(others) == 1, (tagged, others)
        tagged, others = c.imap_cmd("r", f"STORE {many} +FLAGS.SILENT (\\Flagged)")
        assert tagged.startswith(b"r OK"), tagged
        tagged, others = c.imap_cmd("k", f"SEARCH {many}")
        assert tagged.startswith(b"k OK") and len(others[0].split()) == count + 2, tagged
        # FETCH items: repeats answered once, too many sections refused.
        same = " ".join(["BODY.PEEK[HEADER]"] * 400)
        tagged, others = c.imap_cmd("d", f"FETCH 1:10 ({same})")
        assert tagged.startswith(b"d OK") and len(others) == 10, tagged
        assert others[0].count(b"BODY[HEADER]") == 1
        distinct = " ".join(f"BODY.PEEK[]<{i}.9>" for i in range(65))
        tagged, _ = c.imap_cmd("e", f"FETCH 1 ({distinct})")
        assert tagged.startswith(b"e BAD"), tagged
        after = rss_kib(server)
        # The merged set is the mailbox once: no growth in proportion to
        # ranges x messages (4,000,000 indexes would be 32 MiB at least).
        assert after - before < 16 * 1024, f"RSS grew from {before} to {after} KiB"
    finally:
        c.close()
    bystander_still_served(server)
    assert_rss_bounded(server)
