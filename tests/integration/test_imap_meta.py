"""THREADID (RFC 8474, from the store's thread index), METADATA (RFC 5464)
and PREVIEW (RFC 8970) against the real msgd binary, over raw IMAP
(imaplib knows none of them). docs/imap.md maps each to its tests."""

import re

from conftest import DOMAIN, LineClient, build_message, imap_raw_login, unique

TH = f"x-thread@{DOMAIN}"
MD = f"x-meta@{DOMAIN}"
MD2 = f"x-meta2@{DOMAIN}"
PV = f"x-preview@{DOMAIN}"
USERS = [TH, MD, MD2, PV]


def ok(c: LineClient, tag: str, command) -> list[bytes]:
    """Runs a command that must succeed; its untagged lines, CRLF removed."""
    tagged, others = c.imap_cmd(tag, command)
    assert tagged.startswith(tag.encode() + b" OK"), f"{command!r}: {tagged!r} {others!r}"
    return [l.rstrip(b"\r\n") for l in others]


def status(c: LineClient, tag: str, command) -> bytes:
    tagged, _ = c.imap_cmd(tag, command)
    return tagged


def append(c: LineClient, mailbox: str, data: bytes, tag: str = "AP") -> None:
    c.send(f"{tag} APPEND {mailbox} {{{len(data)}}}\r\n".encode())
    cont = c.imap_response()
    assert cont.startswith(b"+"), f"APPEND continuation {cont!r}"
    c.send(data + b"\r\n")
    tagged, others = c.imap_until_tagged(tag)
    assert tagged.startswith(tag.encode() + b" OK"), f"APPEND: {tagged!r} {others!r}"


def caps(c: LineClient) -> list[bytes]:
    return b" ".join(ok(c, "CA", "CAPABILITY")).upper().split()


def thread_ids(lines) -> dict[int, bytes]:
    out = {}
    for line in lines:
        mo = re.match(rb"\* (\d+) FETCH .*THREADID (\(([^)]*)\)|NIL)", line)
        if mo:
            out[int(mo.group(1))] = mo.group(3) or b"NIL"
    return out


def test_rfc8474_5_2_threadid_at_append_and_delivery(server):
    c = imap_raw_login(server, TH)
    assert b"OBJECTID" in caps(c)
    root_id = unique("root")
    append(c, "INBOX", build_message(TH, "Plans", "first\r\n", msgid=root_id))
    # A reply delivered over SMTP joins the thread of the message it replies to.
    reply = build_message(TH, "Re: Plans", "second\r\n",
                          extra_headers=[f"In-Reply-To: <{root_id}@remote.example>"])
    server.send(TH, reply)
    server.wait_count(TH, 2)
    append(c, "INBOX", build_message(TH, "Unrelated", "third\r\n"))
    ok(c, "SE", "SELECT INBOX")
    t = thread_ids(ok(c, "F1", "FETCH 1:3 (THREADID)"))
    assert t[1] != b"NIL" and t[1] == t[2] and t[3] != t[1], t
    found = ok(c, "S1", f"SEARCH THREADID {t[1].decode()}")
    assert any(l.strip() == b"* SEARCH 1 2" for l in found), found
    # COPY keeps it.
    ok(c, "CP", "COPY 2 Trash")
    ok(c, "S2", "SELECT Trash")
    t2 = thread_ids(ok(c, "F2", "FETCH 1 (THREADID)"))
    assert t2[1] == t[1], (t, t2)


def test_rfc5464_metadata_get_set_limits_and_acl(server):
    c = imap_raw_login(server, MD)
    assert b"METADATA" in caps(c)
    ok(c, "S1", 'SETMETADATA INBOX (/shared/comment "team inbox" /private/comment "mine")')
    got = ok(c, "G1", "GETMETADATA INBOX (/shared/comment /private/comment)")
    assert got == [b'* METADATA "INBOX" (/shared/comment "team inbox" /private/comment "mine")'], got
    ok(c, "S2", 'SETMETADATA "" (/private/vendor/test/a "1" /private/vendor/test/b/c "123456")')
    got = ok(c, "G2", 'GETMETADATA (DEPTH infinity) "" /private/vendor/test')
    assert b'/private/vendor/test/a "1"' in got[0] and b'/private/vendor/test/b/c "123456"' in got[0], got
    tagged, got = c.imap_cmd("G4", 'GETMETADATA (MAXSIZE 3 DEPTH infinity) "" /private/vendor/test')
    assert tagged.startswith(b"G4 OK [METADATA LONGENTRIES 6]"), (tagged, got)
    # Limits: a value over 64 KiB is refused, nothing stored.
    big = b"v" * (64 * 1024 + 1)
    c.send(b"S3 SETMETADATA INBOX (/private/big {" + str(len(big)).encode() + b"+}\r\n" + big + b")\r\n")
    tagged, _ = c.imap_until_tagged("S3")
    assert tagged.startswith(b"S3 NO [METADATA MAXSIZE 65536]"), tagged
    assert status(c, "S4", 'SETMETADATA "" (/shared/motd "hi")').startswith(b"S4 NO [NOPERM]")
    assert status(c, "S5", 'SETMETADATA INBOX (/vendor/x "1")').startswith(b"S5 BAD")
    # ACL: lr reads shared entries and keeps its own private ones; w is needed for shared.
    box = "Team" + unique("")
    ok(c, "C1", f"CREATE {box}")
    ok(c, "S6", f'SETMETADATA {box} (/shared/comment "for the team")')
    ok(c, "A1", f"SETACL {box} {MD2} lr")
    d = imap_raw_login(server, MD2)
    shared = f'"Other Users/{MD}/{box}"'
    got = ok(d, "G1", f"GETMETADATA {shared} /shared/comment")
    assert b'"for the team"' in got[0], got
    ok(d, "S1", f'SETMETADATA {shared} (/private/comment "note")')
    assert status(d, "S2", f'SETMETADATA {shared} (/shared/comment "x")').startswith(b"S2 NO [NOPERM]")
    # Removed with the mailbox.
    ok(c, "D1", f"DELETE {box}")
    ok(c, "C2", f"CREATE {box}")
    got = ok(c, "G5", f"GETMETADATA {box} /shared/comment")
    assert got[0].endswith(b"(/shared/comment NIL)"), got


def test_rfc8970_preview_and_lazy(server):
    c = imap_raw_login(server, PV)
    assert b"PREVIEW" in caps(c)
    append(c, "INBOX", build_message(PV, "preview", "Hello   there,\r\n\r\n  this is   the text.\r\n" + "z" * 400))
    html = (b"Subject: html\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            b"<html><body><p>Gr\xc3\xbc\xc3\x9fe <b>aus</b> K\xc3\xb6ln</p></body></html>\r\n")
    append(c, "INBOX", html)
    ok(c, "SE", "SELECT INBOX")
    got = ok(c, "F1", "FETCH 1:2 (PREVIEW)")
    joined = b"\n".join(got)
    first = re.search(rb'\* 1 FETCH \(PREVIEW "([^"]*)"\)', joined)
    assert first, got
    text = first.group(1).decode()
    assert text.startswith("Hello there, this is the text. zzz") and len(text) == 256, text
    assert "Grüße aus Köln".encode() in joined, got
    # Cached now: LAZY answers with the text, not NIL.
    got = ok(c, "F2", "FETCH 1 (PREVIEW (LAZY))")
    assert b"PREVIEW NIL" not in b"".join(got) and b"Hello there" in b"".join(got), got
    # PREVIEW does not set \Seen.
    got = ok(c, "F3", "FETCH 1:2 (FLAGS)")
    assert b"\\Seen" not in b"".join(got), got


def test_rfc8970_preview_of_hostile_messages_is_bounded(server):
    """Deep MIME nesting (issue 9's cap applies) and a huge HTML part: the
    FETCH answers, and the session goes on."""
    c = imap_raw_login(server, PV)
    box = "Hostile" + unique("")
    ok(c, "CR", f"CREATE {box}")
    deep = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(20000))
    append(c, box, b"Subject: deep\r\n" + deep + b"Content-Type: text/plain\r\n\r\ndeep text\r\n")
    huge = b"<p>" + b"<b>x</b> " * 200000 + b"</p>"
    append(c, box, b"Subject: big\r\nContent-Type: text/html\r\n\r\n" + huge + b"\r\n")
    ok(c, "SE", f"SELECT {box}")
    got = ok(c, "F1", "FETCH 1:2 (PREVIEW)")
    previews = [re.search(rb'PREVIEW "([^"]*)"', l) for l in got]
    assert len(got) == 2 and all(previews), got
    assert len(previews[1].group(1)) <= 256 and previews[1].group(1).startswith(b"x x x"), got
    ok(c, "NO", "NOOP")
