"""Large-mailbox paths (issue 12) against the real msgd binary.

- scripts/bench_imap_large.py itself, on a few hundred messages: it fills a
  mailbox by MULTIAPPEND (RFC 3502) and checks EXISTS, the FETCH count and
  the SEARCH UNSEEN / SEARCH TEXT counts it knows from generation.
- SEARCH TEXT/BODY (RFC 9051 6.4.4) find a word the same way whether the
  message is plain ASCII text (searched as stored) or needs MIME decoding
  (base64, quoted-printable, multipart, UTF-8, encoded-words).
- SORT (DATE) (RFC 5256 3) in Date: order with ties by sequence number, and
  THREAD REFERENCES merging many same-subject threads (step 5)."""

from __future__ import annotations

import base64
import imaplib
import re
import subprocess
import sys

from conftest import DOMAIN, REPO_ROOT

BENCH = f"x-bench@{DOMAIN}"
WORDS = f"x-words@{DOMAIN}"
ORDER = f"x-order@{DOMAIN}"
USERS = [BENCH, WORDS, ORDER]


def login(server, user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    m.login(user, server.passwords[user])
    return m


def numbers(data) -> list[int]:
    return [int(x) for x in (data[0] or b"").split()]


def test_bench_imap_large_script_checks_its_answers(server):
    r = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "bench_imap_large.py"), "--name", "t",
         "--port", str(server.ports["imap"]), "--user", BENCH, "--password", server.passwords[BENCH],
         "--messages", "400", "--batch", "150", "--rounds", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(re.findall(r"^large t (\S+) best \S+ median \S+ result (\d+)$", r.stdout, re.M))
    assert set(lines) == {"select", "uid_fetch_flags", "search_unseen", "search_text",
                          "sort_date", "thread_references"}, r.stdout
    assert lines["select"] == "400" and lines["uid_fetch_flags"] == "400" and lines["sort_date"] == "400"
    assert 0 < int(lines["search_unseen"]) < 400
    assert 0 < int(lines["thread_references"]) < 400
    # A second run with --reuse keeps the mailbox and gets the same answers.
    r2 = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "bench_imap_large.py"), "--name", "t",
         "--port", str(server.ports["imap"]), "--user", BENCH, "--password", server.passwords[BENCH],
         "--messages", "400", "--rounds", "1", "--reuse"],
        capture_output=True, text=True, timeout=120,
    )
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "reusing" in r2.stderr
    assert dict(re.findall(r"^large t (\S+) best \S+ median \S+ result (\d+)$", r2.stdout, re.M)) == lines


def message(headers: str, body: bytes) -> bytes:
    return f"From: a@example.com\r\nTo: b@example.com\r\n{headers}\r\n".encode() + body


def test_rfc9051_6_4_4_text_matches_plain_and_decoded_bodies_alike(server):
    m = login(server, WORDS)
    word = "Zebrafinch"
    b64 = base64.encodebytes(f"some {word} here\r\n".encode()).replace(b"\n", b"\r\n")
    msgs = [
        # 1: plain ASCII, searched as stored (any case)
        message("Subject: one\r\n", f"a line\r\nwith {word.upper()} inside\r\n".encode()),
        # 2: plain ASCII without the word
        message("Subject: two\r\nContent-Type: text/plain; charset=us-ascii\r\n", b"nothing\r\n"),
        # 3: base64
        message("Subject: three\r\nContent-Transfer-Encoding: base64\r\n", b64),
        # 4: quoted-printable, the word split by a soft line break
        message("Subject: four\r\nContent-Transfer-Encoding: quoted-printable\r\n",
                b"x zebra=\r\nfinch y\r\n"),
        # 5: multipart, the word in the second part
        message("Subject: five\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=bb\r\n",
                f"--bb\r\n\r\nfirst\r\n--bb\r\nContent-Type: text/plain\r\n\r\n{word}\r\n--bb--\r\n".encode()),
        # 6: UTF-8 8bit body (not ASCII: decoded), the word next to non-ASCII text
        message("Subject: six\r\nContent-Type: text/plain; charset=utf-8\r\n",
                f"gr\u00fc\u00dfe {word.lower()}\r\n".encode()),
        # 7: the word only in an encoded-word subject (TEXT covers headers)
        message("Subject: =?utf-8?q?a_Zebrafinch_b?=\r\n", b"plain\r\n"),
        # 8: the word in a plain body's raw base64-looking text is still text
        message("Subject: eight\r\n", b"WmVicmFmaW5jaA==\r\n"),
        # 9: plain ASCII, the word broken by a line end: no match
        message("Subject: nine\r\n", b"zebra\r\nfinch\r\n"),
    ]
    for raw in msgs:
        typ, data = m.append("INBOX", None, None, raw)
        assert typ == "OK", data
    m.select("INBOX")
    typ, data = m.search(None, "TEXT", word)
    assert typ == "OK"
    assert numbers(data) == [1, 3, 4, 5, 6, 7]
    typ, data = m.search(None, "BODY", word.lower())
    assert numbers(data) == [1, 3, 4, 5, 6]
    typ, data = m.search(None, "NOT", "BODY", word)
    assert numbers(data) == [2, 7, 8, 9]
    typ, data = m.search(None, "TEXT", "ONE")
    assert numbers(data) == [1]
    m.literal = "GR\u00dc\u00dfE".encode()
    typ, data = m.search("UTF-8", "BODY")
    assert typ == "OK" and numbers(data) == [6]
    m.logout()


def test_rfc5256_sort_date_and_thread_references_merge_same_subjects(server):
    m = login(server, ORDER)
    # 60 messages: 30 subjects, each used by two unrelated messages, Date:
    # headers out of arrival order and some equal.
    raws, dates = [], []
    for i in range(60):
        day = 1 + (i * 7) % 28
        dates.append(day)
        raws.append(message(
            f"Subject: topic {i % 30}\r\nDate: Mon, {day:02d} Jan 2024 10:00:00 +0000\r\n"
            f"Message-ID: <m{i}@x>\r\n", b"x\r\n"))
    tag = m._new_tag()
    cmd = tag + b" APPEND INBOX"
    for raw in raws:
        cmd += b" {%d+}\r\n" % len(raw) + raw
    m.send(cmd + b"\r\n")
    while True:
        line = m.readline()
        if line.startswith(tag):
            assert line.split()[1] == b"OK", line
            break
    m.select("INBOX")
    typ, data = m.sort("(DATE)", "UTF-8", "ALL")
    assert typ == "OK"
    expected = sorted(range(1, 61), key=lambda s: (dates[s - 1], s))
    assert numbers(data) == expected
    typ, data = m.thread("REFERENCES", "UTF-8", "ALL")
    assert typ == "OK"
    text = data[0].decode()
    # Each subject: a dummy parent over its two messages, e.g. ((1)(31)).
    pairs = re.findall(r"\(\((\d+)\)\((\d+)\)\)", text)
    assert len(pairs) == 30, text
    assert {tuple(sorted(int(x) for x in p)) for p in pairs} == {(i, i + 30) for i in range(1, 31)}
    m.logout()
